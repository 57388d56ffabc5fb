/* 2_communication/shared_memory/shm_basics.c -- a named segment that another
 * program image attaches to by name, and memfd_create, its nameless cousin
 *
 * Python:  shm = shared_memory.SharedMemory(create=True, size=n)  # creator
 *          other = SharedMemory(name=shm.name)   # any process, by name
 *          other.close(); shm.close(); shm.unlink()  # unlink: creator, once
 *          Lib/multiprocessing/shared_memory.py: shm_open(O_CREAT | O_EXCL |
 *          O_RDWR, 0600) on a random "/psm_<hex>" name, ftruncate, then fstat
 *          (how an attacher learns the size) and mmap.  Every SharedMemory,
 *          the creator's and each attacher's, registers its name with its
 *          program's resource_tracker, a helper process reading REGISTER and
 *          UNREGISTER lines from a pipe; at EOF (every process of the
 *          program has exited) it warns "There appear to be N leaked
 *          shared_memory objects to clean up at shutdown" and
 *          shm_unlinks them -- even a segment another program created and
 *          still uses (gh-82300; 3.13 added SharedMemory(track=False)).
 *          C has no tracker: whoever creates the name unlinks it, on every
 *          path (here: in plain sight, and through mp_atcleanup() on an
 *          error exit or Ctrl-C); after a SIGKILL it stays in /dev/shm.
 * C:       shm_open, ftruncate, mmap, fstat, munmap, shm_unlink; posix_spawn
 *          of /proc/self/exe (a fresh image: nothing inherited but fds and
 *          the name); memfd_create, its fd passed through exec.
 * Usage:   shm_basics [--size N (1048576, 4096..2^30)]
 *                     [--passes N (1, 1..10^6)]
 * Output:  [parent 4317 +0.0ms] shm_open made /dev/shm/mpp-shm_basics-seg-4317:
 *                               1048664 bytes, mode 0600
 *          [parent 4317 +2.1ms] filled 1048576 bytes, fnv1a=cac41b6939a77cb4;
 *                               posix_spawn /proc/self/exe
 *                               --attach /mpp-shm_basics-seg-4317
 *          [spawned 4318 +0.0ms] attached /mpp-shm_basics-seg-4317:
 *                                fstat says 1048664 bytes
 *          [parent 4317 +4.4ms] spawned image read fnv1a=cac41b6939a77cb4 and
 *                               wrote "hello from pid 4318, checksum ok"
 *          [parent 4317 +5.5ms] shm_unlink: the name is gone
 *                               (shm_open: ENOENT) but our mapping still
 *                               reads fnv1a=cac41b6939a77cb4
 *          [parent 4317 +7.8ms] memfd_create: /proc/self/fd/3 ->
 *                               /memfd:mpp-shm_basics (deleted),
 *                               nothing in /dev/shm
 *          ...
 *          result: named fnv1a=cac41b6939a77cb4 seen,
 *                  memfd fnv1a=fb105b1a53085893 seen by another image,
 *                  name gone OK
 *          (the spawned image's clock starts at its own exec: +0.0ms)
 * Try this: comment out the shm_unlink() of step 3: the verdict says STILL
 *          THERE, and ls /dev/shm shows what a crashed program leaves
 *          behind, until you rm it.
 */
#define _GNU_SOURCE /* memfd_create, environ */
#include "mp.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>

#define CHILD_FD 3 /* where the spawned image finds the memfd */

/* The segment: a small header, then the data both sides check. */
struct seg {
	uint64_t size;     /* bytes of data[] */
	uint64_t sum;      /* FNV-1a of data[], by the creator */
	uint64_t seen;     /* FNV-1a of data[], by the attacher */
	char note[64];     /* the attacher's reply */
	unsigned char data[];
};

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

static void fill(struct seg *s, size_t size, uint64_t seed)
{
	for (size_t i = 0; i < size; i += sizeof seed) { /* xorshift64 */
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		memcpy(s->data + i, &seed, size - i < 8 ? size - i : 8);
	}
	s->size = size;
	s->sum = fnv1a(s->data, size);
	s->seen = 0;
}

/* The spawned image: map the segment from an fd, as SharedMemory(name=...)
 * does (the size comes from fstat, not from the creator), check it, reply. */
static int attach_and_check(int fd, const char *what, long passes)
{
	struct stat st;

	MP_CHECK(fstat(fd, &st));
	if ((size_t)st.st_size < sizeof(struct seg))
		mp_die_en(EINVAL, "%s: %jd bytes is no segment of ours", what,
			  (intmax_t)st.st_size);
	struct seg *s = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE,
			     MAP_SHARED, fd, 0);

	if (s == MAP_FAILED)
		mp_die("mmap %s", what);
	MP_CHECK(close(fd)); /* the mapping keeps the memory */
	mp_say("spawned", "attached %s: fstat says %jd bytes", what,
	       (intmax_t)st.st_size);
	if (s->size != (size_t)st.st_size - sizeof *s)
		mp_die_en(EINVAL, "header says %ju data bytes",
			  (uintmax_t)s->size);
	for (long i = 0; i < passes; i++)
		s->seen = fnv1a(s->data, s->size);
	snprintf(s->note, sizeof s->note, "hello from pid %jd, %s",
		 (intmax_t)getpid(), s->seen == s->sum ? "checksum ok" : "BAD");
	bool ok = s->seen == s->sum;

	MP_CHECK(munmap(s, (size_t)st.st_size)); /* close(); never unlink() */
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Start this program again as a new image (no fork: nothing is inherited
 * but what exec keeps) with argv; pass fd as CHILD_FD when fd >= 0. */
static bool spawn_and_wait(char *argv[], int fd)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;

	MP_CHECK_PT(posix_spawn_file_actions_init(&fa));
	if (fd >= 0) /* dup2 clears FD_CLOEXEC on the copy (even if fd == 3) */
		MP_CHECK_PT(posix_spawn_file_actions_adddup2(&fa, fd,
							     CHILD_FD));
	MP_CHECK_PT(posix_spawn(&pid, mp_self_exe(), &fa, NULL, argv,
				environ));
	MP_CHECK_PT(posix_spawn_file_actions_destroy(&fa));
	int st = mp_waitpid(pid);

	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static bool report(const struct seg *s, bool exited_ok)
{
	mp_say("parent", "spawned image read fnv1a=%016" PRIx64
	       " and wrote \"%s\"", s->seen, s->note);
	return exited_ok && s->seen == s->sum;
}

int main(int argc, char *argv[])
{
	long size = 1 << 20, passes = 1, memfd_arg = -1;
	const char *attach = NULL;
	const struct mp_opt opts[] = {
		MP_OPT_L("size", &size, 4096, 1L << 30,
			 "data bytes in the segment"),
		MP_OPT_L("passes", &passes, 1, 1000000,
			 "checksum passes by the attacher"),
		/* these two are for the spawned image */
		MP_OPT_S("attach", &attach, NULL),
		MP_OPT_L("memfd", &memfd_arg, 0, 1024, NULL),
	};

	mp_parse_options(argc, argv, "A named shm segment attached by another "
			 "program image, unlinked by its creator; then a "
			 "memfd.", opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 0. In the spawned image: attach by name, or by the inherited fd. */
	if (attach) {
		int fd = shm_open(attach, O_RDWR, 0); /* no O_CREAT */

		if (fd == -1)
			mp_die("shm_open(%s)", attach);
		return attach_and_check(fd, attach, passes);
	}
	if (memfd_arg >= 0)
		return attach_and_check((int)memfd_arg, "the fd inherited "
					"through exec", passes);

	/* 1. Create: a name under /dev/shm (tmpfs), sized with ftruncate.
	 *    From here on every way out must unlink it. */
	char name[64], path[96], passes_s[24], fd_s[24];
	size_t total = sizeof(struct seg) + (size_t)size;
	struct stat st;

	mp_ipc_name(name, sizeof name, "seg");
	/* On Ctrl-C or an error exit (mp_die), the name is unlinked for us. */
	MP_CHECK(mp_atcleanup(mp_cleanup_shm, name));
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);

	if (fd == -1)
		mp_die("shm_open(%s)", name);
	MP_CHECK(ftruncate(fd, (off_t)total)); /* a new object has size 0 */
	/* ftruncate only sets the size; tmpfs finds pages at first touch, and
	 * on a full /dev/shm that touch dies of SIGBUS.  Reserving them now
	 * turns it into ENOSPC, here.  (Python's SharedMemory only calls
	 * os.ftruncate: Lib/multiprocessing/shared_memory.py.) */
	int err = posix_fallocate(fd, 0, (off_t)total);

	if (err)
		mp_die_en(err, "posix_fallocate(%s, %zu bytes)", name, total);
	struct seg *s = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED,
			     fd, 0);

	if (s == MAP_FAILED)
		mp_die("mmap");
	MP_CHECK(close(fd)); /* the mapping keeps the segment */
	snprintf(path, sizeof path, "/dev/shm%s", name); /* glibc's choice */
	MP_CHECK(stat(path, &st));
	mp_say("parent", "shm_open made %s: %jd bytes, mode %04o", path,
	       (intmax_t)st.st_size, (unsigned)(st.st_mode & 07777));

	/* 2. Fill it, then start a program image that knows only the name. */
	fill(s, (size_t)size, 42);
	snprintf(passes_s, sizeof passes_s, "%ld", passes);
	snprintf(fd_s, sizeof fd_s, "%d", CHILD_FD);
	mp_say("parent", "filled %ld bytes, fnv1a=%016" PRIx64 "; posix_spawn "
	       "/proc/self/exe --attach %s", size, s->sum, name);
	bool named_ok = report(s, spawn_and_wait((char *[]){ argv[0],
		"--attach", name, "--passes", passes_s, NULL }, -1));
	uint64_t named_sum = s->sum;

	/* 3. Unlink: only the name goes; mapped memory lives until munmap. */
	MP_CHECK(shm_unlink(name));
	MP_CHECK(mp_cancel_cleanup(mp_cleanup_shm, name));
	int again = shm_open(name, O_RDWR, 0);
	int again_err = errno;

	if (again != -1)
		MP_CHECK(close(again));
	bool gone = again == -1 && again_err == ENOENT &&
		    access(path, F_OK) == -1 && errno == ENOENT;
	uint64_t still = fnv1a(s->data, s->size);

	mp_say("parent", "shm_unlink: the name is gone (shm_open: %s) but our "
	       "mapping still reads fnv1a=%016" PRIx64,
	       strerrorname_np(again_err), still);
	MP_CHECK(munmap(s, total));

	/* 4. memfd_create: the same tmpfs memory with no name at all.  Only a
	 *    process given the fd (fork, exec, SCM_RIGHTS) can map it, and
	 *    it is freed when the last fd and mapping go: nothing to unlink. */
	int mfd = memfd_create("mpp-shm_basics", MFD_CLOEXEC);
	char link[128] = "?", fdpath[64];

	if (mfd == -1)
		mp_die("memfd_create");
	MP_CHECK(ftruncate(mfd, (off_t)total));
	if ((err = posix_fallocate(mfd, 0, (off_t)total)) != 0)
		mp_die_en(err, "posix_fallocate(memfd, %zu bytes)", total);
	s = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (s == MAP_FAILED)
		mp_die("mmap memfd");
	fill(s, (size_t)size, 4711);
	snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", mfd);
	ssize_t ln = readlink(fdpath, link, sizeof link - 1);

	MP_CHECK(ln);
	link[ln] = '\0';
	mp_say("parent", "memfd_create: %s -> %s, nothing in /dev/shm", fdpath,
	       link);
	bool memfd_ok = report(s, spawn_and_wait((char *[]){ argv[0],
		"--memfd", fd_s, "--passes", passes_s, NULL }, mfd));
	uint64_t memfd_sum = s->sum;

	MP_CHECK(close(mfd));
	MP_CHECK(munmap(s, total));

	/* 5. The verdict. */
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = named_ok && memfd_ok && gone && still == named_sum && reaped;

	printf("result: named fnv1a=%016" PRIx64 " %s, memfd fnv1a=%016" PRIx64
	       " %s by another image, name %s %s\n", named_sum,
	       named_ok ? "seen" : "NOT SEEN", memfd_sum,
	       memfd_ok ? "seen" : "NOT SEEN", gone ? "gone" : "STILL THERE",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
