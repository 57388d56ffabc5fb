/* tests/test_shared_memory.c -- chapter 2's shared memory: anonymous,
 * named and nameless (memfd) segments across real processes, and lib/mp_shm
 * (including its error paths: a failed create leaves no name behind).
 *
 * Children write or check data and report through their exit status or a
 * pipe, then _exit; every assertion is made by the parent after reaping
 * them.  Every child is bounded by alarm(), so a broken primitive fails a
 * test instead of hanging it.  Data is compared byte for byte (memcmp) and
 * by an FNV-1a checksum over MiBs.  Each test unlinks its named segments,
 * and a teardown unlinks them again in case an assertion cut a test short.
 */
#define _GNU_SOURCE /* memfd_create */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "mp.h"

enum { BOUND_S = 10, MIB = 1 << 20, PAGE = 4096 };

/* The named segments this file makes ("/mpp-test_shared_memory-<what>-pid"). */
static const char *const whats[] = { "attach", "grow", "cow", "taken",
				     "zero", "lib", "fail", "empty" };

/* ---- helpers ---------------------------------------------------------- */

static void name_of(char *buf, size_t size, const char *what)
{
	mp_ipc_name(buf, size, what);
}

static int unlink_all(void **state)
{
	char name[96];

	(void)state;
	for (size_t i = 0; i < sizeof whats / sizeof whats[0]; i++) {
		name_of(name, sizeof name, whats[i]);
		shm_unlink(name); /* best effort: normally gone already */
	}
	return 0;
}

static void fill(unsigned char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i += 8) { /* xorshift64 */
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		memcpy(p + i, &seed, n - i < 8 ? n - i : 8);
	}
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

/* What fill(seed) would write, in private memory (the caller frees it). */
static unsigned char *expected(size_t n, uint64_t seed)
{
	unsigned char *e = malloc(n);

	assert_non_null(e);
	fill(e, n, seed);
	return e;
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Is there an entry called name (without its '/') in /dev/shm? */
static bool in_dev_shm(const char *name)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	bool found = false;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		found |= strcmp(e->d_name, name + 1) == 0;
	assert_int_equal(closedir(d), 0);
	return found;
}

/* Fork a child bounded by alarm() that runs fn(arg) and exits with what it
 * returns; wait for it and return the raw status. */
static int in_child(int (*fn)(void *), void *arg)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		alarm(BOUND_S);
		_exit(fn(arg));
	}
	return mp_waitpid(pid);
}

static void assert_exit0(int status)
{
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* Map an existing named segment's first size bytes, shared (NULL if any
 * step fails: the caller asserts). */
static unsigned char *map_name(const char *name, size_t size, int prot)
{
	int fd = shm_open(name, O_RDWR, 0);

	if (fd == -1)
		return NULL;
	void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);

	if (close(fd) == -1 && p != MAP_FAILED) {
		munmap(p, size);
		return NULL;
	}
	return p == MAP_FAILED ? NULL : p;
}

/* ---- anonymous shared memory across fork ------------------------------ */

struct region { unsigned char *p; size_t n; uint64_t seed; int fd; };

static int child_fills(void *arg)
{
	struct region *r = arg;

	fill(r->p, r->n, r->seed);
	return 0;
}

static void test_child_writes_are_seen_by_parent_byte_for_byte(void **state)
{
	struct region r = { mp_shm_alloc(8 * MIB), 8 * MIB, 1234, -1 };
	unsigned char *want = expected(r.n, r.seed);

	(void)state;
	assert_non_null(r.p);
	assert_true(all_zero(r.p, r.n)); /* mp_shm_alloc: zero-filled */
	assert_exit0(in_child(child_fills, &r));
	assert_int_equal(fnv1a(r.p, r.n), fnv1a(want, r.n));
	assert_int_equal(memcmp(r.p, want, r.n), 0);
	free(want);
	assert_int_equal(mp_shm_free(r.p, r.n), 0);
}

/* ---- named segments ---------------------------------------------------- */

struct attach_args { const char *name; size_t n; int pipe_w; };

/* Another process: opens the segment by its name only (not through the
 * parent's mapping), learns the size from fstat, sends back the checksum it
 * reads, then marks the last byte. */
static int child_attaches(void *arg)
{
	struct attach_args *a = arg;
	struct stat st;
	int fd = shm_open(a->name, O_RDWR, 0);

	if (fd == -1 || fstat(fd, &st) == -1 || (size_t)st.st_size != a->n)
		return 1;
	unsigned char *q = mmap(NULL, a->n, PROT_READ | PROT_WRITE, MAP_SHARED,
				fd, 0);

	if (q == MAP_FAILED || close(fd) == -1)
		return 2;
	uint64_t sum = fnv1a(q, a->n);

	if (write(a->pipe_w, &sum, sizeof sum) != (ssize_t)sizeof sum)
		return 3;
	q[a->n - 1] ^= 0xff;
	return munmap(q, a->n) == 0 ? 0 : 4;
}

static void
test_named_segment_attaches_by_name_and_unlink_removes_it(void **state)
{
	char name[96];
	size_t n = 2 * MIB;
	int fds[2];
	uint64_t got;

	(void)state;
	name_of(name, sizeof name, "attach");
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);

	assert_int_not_equal(fd, -1);
	assert_true(in_dev_shm(name));
	assert_int_equal(ftruncate(fd, (off_t)n), 0);
	unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED,
				fd, 0);

	assert_ptr_not_equal(p, MAP_FAILED);
	assert_int_equal(close(fd), 0);
	fill(p, n, 99);
	uint64_t sum = fnv1a(p, n);
	unsigned char last = p[n - 1];

	assert_int_equal(pipe(fds), 0);
	struct attach_args a = { name, n, fds[1] };

	assert_exit0(in_child(child_attaches, &a));
	assert_int_equal(close(fds[1]), 0);
	assert_int_equal(read(fds[0], &got, sizeof got), sizeof got);
	assert_int_equal(close(fds[0]), 0);
	assert_int_equal(got, sum);                     /* it read our bytes */
	assert_int_equal(p[n - 1], last ^ 0xff);        /* we see its write */

	/* Unlink: the name goes at once, from shm_open and from /dev/shm ... */
	assert_int_equal(shm_unlink(name), 0);
	assert_false(in_dev_shm(name));
	errno = 0;
	assert_int_equal(shm_open(name, O_RDWR, 0), -1);
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_int_equal(shm_unlink(name), -1);
	assert_int_equal(errno, ENOENT);
	/* ... while the memory stays mapped until munmap. */
	p[n - 1] = last;
	assert_int_equal(fnv1a(p, n), sum);
	assert_int_equal(munmap(p, n), 0);
}

static int child_touches_past_the_end(void *arg)
{
	volatile unsigned char *q = arg;

	/* Sanitizers catch SIGBUS to report it: take the default action. */
	if (signal(SIGBUS, SIG_DFL) == SIG_ERR)
		return 12;
	return q[PAGE] == 0 ? 10 : 11; /* should never get to return */
}

static void test_ftruncate_sets_the_size_and_growth_keeps_data(void **state)
{
	char name[96];
	struct stat st;
	size_t got = 0;

	(void)state;
	name_of(name, sizeof name, "grow");
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);

	assert_int_not_equal(fd, -1);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 0);          /* a new object is empty */
	assert_int_equal(ftruncate(fd, PAGE), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, PAGE);
	unsigned char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
				MAP_SHARED, fd, 0);

	assert_ptr_not_equal(p, MAP_FAILED);
	memset(p, 0xab, PAGE);

	/* Grow to 3 pages + 1 byte: the size is exact, old bytes stay, new
	 * bytes read as zero (through a fresh attach, as another process). */
	assert_int_equal(ftruncate(fd, 3 * PAGE + 1), 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 3 * PAGE + 1);
	unsigned char *q = mp_shm_attach(name, &got);

	assert_non_null(q);
	assert_int_equal(got, 3 * PAGE + 1);
	for (size_t i = 0; i < PAGE; i++)
		assert_int_equal(q[i], 0xab);
	assert_true(all_zero(q + PAGE, 2 * PAGE + 1));
	assert_int_equal(mp_shm_free(q, got), 0);

	/* Shrink to one page: our 2-page mapping stays, but touching its
	 * second page now raises SIGBUS (no memory behind it). */
	assert_int_equal(ftruncate(fd, PAGE), 0);
	int status = in_child(child_touches_past_the_end, p);

	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGBUS);
	assert_int_equal(p[0], 0xab);
	assert_int_equal(munmap(p, 2 * PAGE), 0);
	assert_int_equal(close(fd), 0);
	assert_int_equal(shm_unlink(name), 0);
}

/* ---- MAP_PRIVATE: copy on write ---------------------------------------- */

struct cow { unsigned char *priv, *shared; int pipe_w; };

static int child_writes_both(void *arg)
{
	struct cow *c = arg;
	unsigned char seen[2];

	c->priv[0] = 2;
	c->shared[0] = 2;
	seen[0] = c->priv[0], seen[1] = c->shared[0];
	return write(c->pipe_w, seen, 2) == 2 ? 0 : 1;
}

static void test_map_private_writes_stay_private(void **state)
{
	char name[96];
	unsigned char seen[2];
	int fds[2];

	(void)state;
	/* 1. Anonymous memory across fork: a child's write to a MAP_PRIVATE
	 *    page gets it a copy; the same write to MAP_SHARED is seen. */
	struct cow c = {
		mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
		mp_shm_alloc(PAGE), -1,
	};

	assert_ptr_not_equal(c.priv, MAP_FAILED);
	assert_non_null(c.shared);
	c.priv[0] = 1, c.shared[0] = 1;
	assert_int_equal(pipe(fds), 0);
	c.pipe_w = fds[1];
	assert_exit0(in_child(child_writes_both, &c));
	assert_int_equal(close(fds[1]), 0);
	assert_int_equal(read(fds[0], seen, 2), 2);
	assert_int_equal(close(fds[0]), 0);
	assert_int_equal(seen[0], 2);      /* the child saw its own write */
	assert_int_equal(seen[1], 2);
	assert_int_equal(c.priv[0], 1);    /* private: the parent did not */
	assert_int_equal(c.shared[0], 2);  /* shared: the parent did */
	assert_int_equal(munmap(c.priv, PAGE), 0);
	assert_int_equal(mp_shm_free(c.shared, PAGE), 0);

	/* 2. A named segment mapped MAP_PRIVATE: writes never reach the
	 *    segment, neither a MAP_SHARED view of it nor a later attach. */
	name_of(name, sizeof name, "cow");
	unsigned char *s = mp_shm_create(name, 2 * PAGE);

	assert_non_null(s);
	memset(s, 0x11, 2 * PAGE);
	int fd = shm_open(name, O_RDWR, 0);

	assert_int_not_equal(fd, -1);
	unsigned char *p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
				MAP_PRIVATE, fd, 0);

	assert_ptr_not_equal(p, MAP_FAILED);
	assert_int_equal(close(fd), 0);
	assert_int_equal(p[PAGE], 0x11);   /* reads come from the segment */
	memset(p, 0x22, 2 * PAGE);
	assert_int_equal(s[0], 0x11);
	assert_int_equal(s[2 * PAGE - 1], 0x11);
	unsigned char *again = map_name(name, 2 * PAGE, PROT_READ);

	assert_non_null(again);
	assert_int_equal(again[0], 0x11);
	assert_int_equal(p[0], 0x22);
	assert_int_equal(munmap(again, 2 * PAGE), 0);
	assert_int_equal(munmap(p, 2 * PAGE), 0);
	assert_int_equal(mp_shm_free(s, 2 * PAGE), 0);
	assert_int_equal(mp_shm_unlink(name), 0);
}

/* ---- memfd: shared memory with no name ---------------------------------- */

/* The child maps the inherited fd itself (no mapping was inherited). */
static int child_maps_memfd(void *arg)
{
	struct region *r = arg;
	unsigned char *q = mmap(NULL, r->n, PROT_READ | PROT_WRITE, MAP_SHARED,
				r->fd, 0);

	if (q == MAP_FAILED)
		return 1;
	fill(q, r->n, r->seed);
	return munmap(q, r->n) == 0 ? 0 : 2;
}

static void test_memfd_is_shared_across_fork_without_a_name(void **state)
{
	struct region r = { NULL, 4 * MIB, 7, -1 };
	char link[128], path[64];
	unsigned char *want = expected(r.n, r.seed);

	(void)state;
	r.fd = memfd_create("mpp-test_shared_memory-memfd", MFD_CLOEXEC);
	assert_int_not_equal(r.fd, -1);
	assert_int_equal(ftruncate(r.fd, (off_t)r.n), 0);
	assert_exit0(in_child(child_maps_memfd, &r));
	r.p = mmap(NULL, r.n, PROT_READ, MAP_SHARED, r.fd, 0);
	assert_ptr_not_equal(r.p, MAP_FAILED);
	assert_int_equal(fnv1a(r.p, r.n), fnv1a(want, r.n));
	assert_int_equal(memcmp(r.p, want, r.n), 0);

	/* Nameless: the fd is the only way in; nothing appears in /dev/shm. */
	snprintf(path, sizeof path, "/proc/self/fd/%d", r.fd);
	ssize_t len = readlink(path, link, sizeof link - 1);

	assert_true(len > 0);
	link[len] = '\0';
	assert_string_equal(link,
			    "/memfd:mpp-test_shared_memory-memfd (deleted)");
	assert_false(in_dev_shm("/mpp-test_shared_memory-memfd"));
	assert_int_equal(munmap(r.p, r.n), 0);
	assert_int_equal(close(r.fd), 0);
	free(want);
}

/* ---- lib/mp_shm -------------------------------------------------------- */

static void test_mp_shm_refuses_size_zero_with_einval(void **state)
{
	char name[96];

	(void)state;
	errno = 0;
	assert_null(mp_shm_alloc(0));
	assert_int_equal(errno, EINVAL);

	name_of(name, sizeof name, "zero");
	errno = 0;
	assert_null(mp_shm_create(name, 0));
	assert_int_equal(errno, EINVAL);
	assert_false(in_dev_shm(name)); /* and made nothing */
}

static void test_mp_shm_create_refuses_a_taken_name_with_eexist(void **state)
{
	char name[96];

	(void)state;
	name_of(name, sizeof name, "taken");
	unsigned char *p = mp_shm_create(name, PAGE);

	assert_non_null(p);
	assert_true(all_zero(p, PAGE));
	memset(p, 0x5a, PAGE);
	errno = 0;
	assert_null(mp_shm_create(name, 2 * PAGE));
	assert_int_equal(errno, EEXIST);
	/* The failed create neither truncated, resized nor unlinked it. */
	assert_true(in_dev_shm(name));
	size_t size = 0;
	unsigned char *q = mp_shm_attach(name, &size);

	assert_non_null(q);
	assert_int_equal(size, PAGE);
	assert_int_equal(q[0], 0x5a);
	assert_int_equal(q[PAGE - 1], 0x5a);
	assert_int_equal(mp_shm_free(q, size), 0);
	assert_int_equal(mp_shm_free(p, PAGE), 0);
	assert_int_equal(mp_shm_unlink(name), 0);
}

struct lib_args { const char *name; size_t n; uint64_t sum; };

static int child_attaches_with_lib(void *arg)
{
	struct lib_args *a = arg;
	size_t size = 0;
	unsigned char *q = mp_shm_attach(a->name, &size);

	if (!q)
		return 1;
	if (size != a->n)
		return 2;
	if (fnv1a(q, size) != a->sum)
		return 3;
	fill(q, size, a->sum); /* reply: a pattern seeded by what it saw */
	return mp_shm_free(q, size) == 0 ? 0 : 4;
}

static void test_mp_shm_attach_unlink_and_free(void **state)
{
	char name[96];
	size_t n = 3 * MIB + 5; /* not a multiple of the page size */

	(void)state;
	name_of(name, sizeof name, "lib");
	unsigned char *p = mp_shm_create(name, n);

	assert_non_null(p);
	assert_true(in_dev_shm(name));
	fill(p, n, 31);
	struct lib_args a = { name, n, fnv1a(p, n) };
	unsigned char *want = expected(n, a.sum);

	assert_exit0(in_child(child_attaches_with_lib, &a));
	assert_int_equal(memcmp(p, want, n), 0);
	free(want);

	assert_int_equal(mp_shm_unlink(name), 0);
	assert_false(in_dev_shm(name));
	size_t size = 1;

	errno = 0;
	assert_null(mp_shm_attach(name, &size));
	assert_int_equal(errno, ENOENT);
	assert_int_equal(size, 1);               /* untouched on failure */
	errno = 0;
	assert_int_equal(mp_shm_unlink(name), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(mp_shm_free(p, n), 0);
}

/* A create that fails after shm_open must unlink what it made: otherwise
 * every failed call would leave a name in /dev/shm. */
static void test_mp_shm_create_leaves_no_name_when_it_fails(void **state)
{
	char name[96];

	(void)state;
	name_of(name, sizeof name, "fail");
	errno = 0;                              /* ftruncate(fd, -1) fails */
	assert_null(mp_shm_create(name, SIZE_MAX));
	assert_int_equal(errno, EINVAL);
	assert_false(in_dev_shm(name));
	errno = 0;  /* ftruncate works (sparse), no room to reserve 4 EiB */
	assert_null(mp_shm_create(name, (size_t)1 << 62));
	assert_int_equal(errno, ENOSPC);
	assert_false(in_dev_shm(name));
}

/* A name whose creator has not sized it yet (size 0) is no segment to map. */
/* In a child with a mount namespace of its own, /dev/shm becomes a 64 KiB
 * tmpfs; creating a 1 MiB segment there must fail with ENOSPC at once
 * (reserved with posix_fallocate), not die of SIGBUS at the first touch,
 * and leave no name.  Exit 0: as expected; 77: no permission to mount. */
static void full_dev_shm(void)
{
	char name[64];

	if (unshare(CLONE_NEWNS) == -1)
		_exit(77);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
	    mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=64k") == -1)
		_exit(77);
	mp_ipc_name(name, sizeof name, "full");
	char *p = mp_shm_create(name, 1 << 20);

	if (p) {
		memset(p, 1, 1 << 20);  /* SIGBUS here without the reserve */
		_exit(1);
	}
	if (errno != ENOSPC)
		_exit(2);
	_exit(shm_open(name, O_RDONLY, 0) == -1 && errno == ENOENT ? 0 : 3);
}

static void test_mp_shm_create_reports_enospc_on_a_full_dev_shm(void **state)
{
	(void)state;
	pid_t pid = mp_fork();

	if (pid == 0)
		full_dev_shm();
	int st = mp_waitpid(pid);

	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();  /* not root: cannot mount a small /dev/shm */
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_mp_shm_attach_refuses_an_empty_segment(void **state)
{
	char name[96];
	size_t size = 7;

	(void)state;
	name_of(name, sizeof name, "empty");
	int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);

	assert_int_not_equal(fd, -1);
	errno = 0;
	assert_null(mp_shm_attach(name, &size));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(size, 7);               /* untouched on failure */
	assert_int_equal(close(fd), 0);
	assert_int_equal(shm_unlink(name), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(
		    test_child_writes_are_seen_by_parent_byte_for_byte,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_named_segment_attaches_by_name_and_unlink_removes_it,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_ftruncate_sets_the_size_and_growth_keeps_data,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_map_private_writes_stay_private,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_memfd_is_shared_across_fork_without_a_name,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_refuses_size_zero_with_einval,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_create_refuses_a_taken_name_with_eexist,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_attach_unlink_and_free,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_create_leaves_no_name_when_it_fails,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_attach_refuses_an_empty_segment,
		    unlink_all),
		cmocka_unit_test_teardown(
		    test_mp_shm_create_reports_enospc_on_a_full_dev_shm,
		    unlink_all),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
