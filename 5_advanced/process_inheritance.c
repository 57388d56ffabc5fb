/* 5_advanced/process_inheritance.c -- what a child gets under fork and under
 * exec, checked row by row; and the mutex a thread held at fork
 *
 * Python:  start methods decide what a child inherits: "fork" copies the
 *          whole process, "spawn" (and "forkserver") exec a fresh
 *          interpreter that gets only what is passed.  Forking a process that
 *          has threads is where it hurts: a lock held by another thread stays
 *          locked in the child, whose copy has no thread left to release it.
 *          logging re-initialises its locks with os.register_at_fork
 *          (Lib/logging/__init__.py); since 3.12 os.fork() warns "This
 *          process (pid=N) is multi-threaded, use of fork() may lead to
 *          deadlocks in the child." (a DeprecationWarning, Modules/
 *          posixmodule.c, warn_about_fork_with_threads), and 3.14 makes
 *          forkserver the default start method on Linux
 *          (Lib/multiprocessing/context.py, gh-84559).
 * C:       fork; posix_spawn of /proc/self/exe (a hidden --child mode);
 *          O_CLOEXEC, close_range(CLOSE_RANGE_CLOEXEC), sigaction,
 *          sigprocmask, sigpending, flock vs fcntl(F_SETLK), getrusage
 *          (page faults), pthread_mutex_timedlock, pthread_atfork.
 * Usage:   process_inheritance [--mib N (32, 1..1024)]
 *                              [--hold-ms N (100, 10..10000)]
 * Output:  (long lines wrapped)
 *  [parent 22656 +13.5ms] set up: fds 20 (plain, offset 3), 21 (O_CLOEXEC),
 *                         22-23 (close_range CLOEXEC); SIGUSR1 caught,
 *                         SIGUSR2 ignored, SIGALRM blocked and pending; env,
 *                         cwd, umask 027, RLIMIT_NOFILE 777;
 *                         flock + fcntl lock; marker=42; 32 MiB;
 *                         a second thread
 *                                    fork                posix_spawn
 *    fd without O_CLOEXEC            open                open                ok
 *      its offset (shared)           at 3, ours ->4      at 4, ours ->5      ok
 *    fd with O_CLOEXEC               open                closed              ok
 *    ...
 *    flock (per open file)           held (shared)       held (shared)       ok
 *    fcntl lock (per process)        parent's, not ours  parent's, not ours  ok
 *    memory                          marker=42           marker=1 (new)      ok
 *      copy-on-write on write        8193/8192 faults    -                   ok
 *    threads                         1 (ours: 2)         1                   ok
 *  [parent 22656 +40.8ms] copy-on-write: reading 8192 pages faulted 0 times,
 *                         writing them 8193 times, 2.10 us per page copied
 *  [parent 22656 +40.8ms] a thread takes a mutex for 100 ms at a time;
 *                         fork while it holds it, the child tries for 300 ms
 *  [parent 22656 +342.9ms] the child's pthread_mutex_timedlock: ETIMEDOUT (the
 *                          copy of the mutex is locked, and its holder is
 *                          not in the child)
 *  [parent 22656 +422.5ms] posix_spawn instead: 0; fork with pthread_atfork: 0
 *                          (fork waited 78.0 ms for the holder).  Fork before
 *                          threads start is the third fix (a forkserver)
 *  [parent 22656 +422.6ms] Python: logging does Fix 2 (os.register_at_fork);
 *                          3.12 warns when os.fork() runs with threads;
 *                          3.14 starts processes with forkserver by default
 *                          on Linux (gh-84559)
 *  result: rows=18/18 deadlock=ETIMEDOUT spawn=0 atfork=0 OK
 * Try this: dup2() instead of dup3(.., O_CLOEXEC) for fd 21 (its row flips);
 *          delete the pthread_atfork() line (that child times out too);
 *          --mib 512 (the copy is paid by the writer, page by page).
 */
#define _GNU_SOURCE
#include "mp.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>

enum { PLAIN_FD = 20, CLOEXEC_FD = 21, RANGE_FD = 22, OUT_FD = 30 };
enum { BLOCKED = SIGALRM };  /* blocked and pending in the parent */

extern char **environ;
static long marker = 1;  /* the parent sets 42: a fork child sees 42 */

/* What one child saw, written to OUT_FD by the child itself. */
struct obs {
	int fd_open[4];       /* PLAIN_FD, CLOEXEC_FD, RANGE_FD, RANGE_FD+1 */
	off_t offset;         /* PLAIN_FD's offset as the child found it */
	int usr1, usr2;       /* 0 default, 1 ignored, 2 caught */
	int blocked, pending; /* BLOCKED in its mask, pending */
	char env[32], cwd[128];
	unsigned umask;
	long nofile;          /* RLIMIT_NOFILE soft */
	int flock_fd, flock_own;  /* LOCK_NB via the inherited fd, own open */
	int fcntl_holder;     /* F_GETLK: 1 another process holds it */
	long marker, threads;
	long read_faults, write_faults, pages;
	double copy_us;       /* per page written */
};

static void on_usr1(int sig)
{
	(void)sig;
}

static long minflt(void)
{
	struct rusage ru;

	MP_CHECK(getrusage(RUSAGE_SELF, &ru));
	return ru.ru_minflt;
}

static long threads_now(void)
{
	char line[256];
	long n = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		mp_die("/proc/self/status");
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Threads: %ld", &n) == 1)
			break;
	if (fclose(f) == EOF)
		mp_die("fclose");
	return n;
}

/* The child's side: look at everything, report, leave.  buf is NULL after
 * exec (the parent's heap is not there). */
static _Noreturn void probe(const char *path, char *buf, long pages)
{
	struct obs o = { .pages = pages };
	struct sigaction sa;
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	struct rlimit rl;
	sigset_t set;
	char one;

	for (int i = 0; i < 4; i++)
		o.fd_open[i] = fcntl(PLAIN_FD + i, F_GETFD) != -1;
	o.offset = lseek(PLAIN_FD, 0, SEEK_CUR);
	if (o.fd_open[0] && read(PLAIN_FD, &one, 1) != 1)  /* moves it */
		mp_die("read");
	MP_CHECK(sigaction(SIGUSR1, NULL, &sa));
	o.usr1 = sa.sa_handler == SIG_DFL ? 0 : sa.sa_handler == SIG_IGN ? 1
									 : 2;
	MP_CHECK(sigaction(SIGUSR2, NULL, &sa));
	o.usr2 = sa.sa_handler == SIG_DFL ? 0 : sa.sa_handler == SIG_IGN ? 1
									 : 2;
	MP_CHECK(sigprocmask(SIG_SETMASK, NULL, &set));
	o.blocked = sigismember(&set, BLOCKED);
	MP_CHECK(sigpending(&set));
	o.pending = sigismember(&set, BLOCKED);
	snprintf(o.env, sizeof o.env, "%s",
		 getenv("MPP_INHERIT") ? getenv("MPP_INHERIT") : "(unset)");
	if (!getcwd(o.cwd, sizeof o.cwd))
		mp_die("getcwd");
	o.umask = umask(0);
	MP_CHECK(getrlimit(RLIMIT_NOFILE, &rl));
	o.nofile = (long)rl.rlim_cur;
	/* flock belongs to the open file description: the inherited fd holds
	 * the parent's lock already; a fresh open of the same file does not.
	 * The fresh one asks first: had nobody locked the file, taking it on
	 * the inherited fd would make it look held. */
	int own = open(path, O_RDWR | O_CLOEXEC);

	MP_CHECK(own);
	o.flock_own = flock(own, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
	o.flock_fd = flock(PLAIN_FD, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
	/* fcntl locks belong to a process: ours would not conflict with us. */
	MP_CHECK(fcntl(own, F_GETLK, &fl));
	o.fcntl_holder = fl.l_type != F_UNLCK && fl.l_pid != getpid();
	MP_CHECK(close(own));
	o.marker = marker;
	o.threads = threads_now();
	if (buf) {  /* copy-on-write: reading copies nothing, writing does */
		long sum = 0, f0 = minflt();

		for (long p = 0; p < pages; p++)
			sum += buf[p * 4096];  /* sum is used below */
		long f1 = minflt();
		int64_t t0 = mp_now_ns();

		for (long p = 0; p < pages; p++)
			buf[p * 4096] = (char)sum;
		o.copy_us = (double)(mp_now_ns() - t0) / 1e3 / (double)pages;
		o.read_faults = f1 - f0;
		o.write_faults = minflt() - f1;
	}
	if (write(OUT_FD, &o, sizeof o) != (ssize_t)sizeof o)
		mp_die("write");
	_exit(0);
}

/* ---- step 3: a mutex held by another thread at fork --------------------- */

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool use_atfork;

struct holder { _Atomic bool stop, held; long hold_ms; };

/* Like a logging handler: takes the lock now and then, for a while. */
static void *hold_now_and_then(void *arg)
{
	struct holder *h = arg;

	while (!atomic_load(&h->stop)) {
		MP_CHECK_PT(pthread_mutex_lock(&m));
		atomic_store(&h->held, true);
		nanosleep(&(struct timespec){ h->hold_ms / 1000,
					      h->hold_ms % 1000 * 1000000 },
			  NULL);
		atomic_store(&h->held, false);
		MP_CHECK_PT(pthread_mutex_unlock(&m));
		nanosleep(&(struct timespec){ 0, 2 * 1000 * 1000 }, NULL);
	}
	return NULL;
}

/* pthread_atfork: take the lock before fork (waiting for the holder), give
 * it back on both sides after, so the child gets it unlocked. */
static void before_fork(void)
{
	if (atomic_load(&use_atfork))
		MP_CHECK_PT(pthread_mutex_lock(&m));
}

static void after_fork(void)
{
	if (atomic_load(&use_atfork))
		MP_CHECK_PT(pthread_mutex_unlock(&m));
}

/* Try m with a deadline far past the holder's hold time; exit with 0 (got
 * it) or the error number.  100: m was not held at fork, try again. */
static _Noreturn void try_lock(long wait_ms, bool check_held,
			       const struct holder *h)
{
	struct timespec ts;

	if (check_held && !atomic_load(&h->held))
		_exit(100);
	MP_CHECK(clock_gettime(CLOCK_REALTIME, &ts));  /* timedlock's clock */
	ts.tv_sec += wait_ms / 1000;
	ts.tv_nsec += wait_ms % 1000 * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	_exit(pthread_mutex_timedlock(&m, &ts));
}

/* posix_spawn(/proc/self/exe): this program again, a fresh image, with
 * only what exec keeps -- Python's "spawn" (it execs python). */
static pid_t spawn_self(char *const argv[], int out)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;

	MP_CHECK_PT(posix_spawn_file_actions_init(&fa));
	MP_CHECK_PT(posix_spawn_file_actions_adddup2(&fa, out, OUT_FD));
	MP_CHECK(fflush(stdout));
	MP_CHECK_PT(posix_spawn(&pid, mp_self_exe(), &fa, NULL, argv,
				environ));
	MP_CHECK_PT(posix_spawn_file_actions_destroy(&fa));
	return pid;
}

/* Read one child's report (bounded) and reap it. */
/* Is BLOCKED in our signal mask? */
static bool blocked_here(void)
{
	sigset_t now;

	MP_CHECK(sigprocmask(SIG_SETMASK, NULL, &now));
	return sigismember(&now, BLOCKED) == 1;
}

static struct obs collect(int in, pid_t pid)
{
	struct obs o;
	struct pollfd p = { in, POLLIN, 0 };
	int st;

	if (poll(&p, 1, 30000) != 1 || read(in, &o, sizeof o) != sizeof o)
		mp_die("no report from child %jd", (intmax_t)pid);
	st = mp_waitpid(pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		mp_die("child %jd failed", (intmax_t)pid);
	return o;
}

static int row(const char *what, const char *f, const char *e, bool ok)
{
	printf("  %-31s %-19s %-19s %s\n", what, f, e, ok ? "ok" : "MISMATCH");
	return ok;
}

struct paths { char dir[64], file[96]; };

static void remove_files(void *arg)  /* async-signal-safe: a cleanup */
{
	struct paths *p = arg;

	unlink(p->file);
	rmdir(p->dir);
}

int main(int argc, char *argv[])
{
	long mib = 32, hold_ms = 100;
	const char *child = NULL;
	bool child_lock = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("mib", &mib, 1, 1024,
			 "MiB of memory for copy-on-write"),
		MP_OPT_L("hold-ms", &hold_ms, 10, 10000,
			 "how long a thread holds the mutex each time"),
		MP_OPT_S("child", &child, NULL),  /* hidden: the probe */
		MP_OPT_F("child-lock", &child_lock, NULL),  /* and step 3's */
	};

	mp_parse_options(argc, argv, "What a child inherits under fork and "
			 "under exec, and the mutex a thread held at fork.",
			 opts, sizeof opts / sizeof opts[0]);
	if (child)  /* we are the exec'd child: nothing set up, only kept */
		probe(child, NULL, 0);
	if (child_lock)
		try_lock(2 * hold_ms + 100, false, NULL);
	mp_stop_on_signals();

	/* 1. Set up everything a child might inherit. */
	struct paths p = { .dir = "/tmp/mpp-process_inheritance-XXXXXX" };
	int fd, pp[2];

	if (!mkdtemp(p.dir))
		mp_die("mkdtemp");
	snprintf(p.file, sizeof p.file, "%s/file", p.dir);
	MP_CHECK(mp_atcleanup(remove_files, &p));
	MP_CHECK(fd = open(p.file, O_RDWR | O_CREAT | O_EXCL, 0600));
	MP_CHECK(dup2(fd, PLAIN_FD));
	MP_CHECK(close(fd));
	if (write(PLAIN_FD, "0123456789", 10) != 10)
		mp_die("write");
	MP_CHECK(lseek(PLAIN_FD, 3, SEEK_SET));
	MP_CHECK(fd = open(p.file, O_RDONLY | O_CLOEXEC));
	MP_CHECK(dup3(fd, CLOEXEC_FD, O_CLOEXEC));
	MP_CHECK(close(fd));
	for (int k = 0; k < 2; k++) {  /* plain fds, marked below */
		MP_CHECK(fd = open(p.file, O_RDONLY));
		MP_CHECK(dup2(fd, RANGE_FD + k));
		MP_CHECK(close(fd));
	}
	MP_CHECK(close_range(RANGE_FD, RANGE_FD + 1, CLOSE_RANGE_CLOEXEC));
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t blk, oldmask;

	MP_CHECK(sigaction(SIGUSR1, &sa, NULL));
	if (signal(SIGUSR2, SIG_IGN) == SIG_ERR)
		mp_die("signal");
	MP_CHECK(sigemptyset(&blk));
	MP_CHECK(sigaddset(&blk, BLOCKED));
	MP_CHECK(sigprocmask(SIG_BLOCK, &blk, &oldmask));
	if (blocked_here())  /* unblocked, it would kill us: the row tells */
		MP_CHECK(raise(BLOCKED) == 0 ? 0 : -1);  /* now pending */
	MP_CHECK(setenv("MPP_INHERIT", "from-parent", 1));
	char oldcwd[256];

	if (!getcwd(oldcwd, sizeof oldcwd))
		mp_die("getcwd");
	MP_CHECK(chdir(p.dir));
	mode_t oldumask = umask(027);
	struct rlimit rl, oldrl;

	MP_CHECK(getrlimit(RLIMIT_NOFILE, &oldrl));
	rl = oldrl;
	rl.rlim_cur = oldrl.rlim_max < 777 ? oldrl.rlim_max : 777;
	MP_CHECK(setrlimit(RLIMIT_NOFILE, &rl));
	MP_CHECK(flock(PLAIN_FD, LOCK_EX));
	MP_CHECK(fcntl(PLAIN_FD, F_SETLK, &(struct flock){
		.l_type = F_WRLCK, .l_whence = SEEK_SET }));
	marker = 42;
	long pages = mib * 256;
	char *buf = mmap(NULL, (size_t)pages * 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (buf == MAP_FAILED)
		mp_die("mmap");
	MP_CHECK(madvise(buf, (size_t)pages * 4096, MADV_NOHUGEPAGE));
	memset(buf, 1, (size_t)pages * 4096);  /* our pages, present */
	struct holder h = { .hold_ms = hold_ms };
	pthread_t th;

	MP_CHECK_PT(pthread_create(&th, NULL, hold_now_and_then, &h));
	MP_CHECK(pipe2(pp, O_CLOEXEC));
	MP_CHECK(dup3(pp[1], OUT_FD, O_CLOEXEC));
	mp_say("parent", "set up: fds %d (plain, offset 3), %d (O_CLOEXEC), "
	       "%d-%d (close_range CLOEXEC); SIGUSR1 caught, SIGUSR2 "
	       "ignored, SIGALRM blocked and pending; env, cwd, umask 027, "
	       "RLIMIT_NOFILE %ld; flock + fcntl lock; marker=42; %ld MiB; "
	       "a second thread", PLAIN_FD, CLOEXEC_FD, RANGE_FD,
	       RANGE_FD + 1, (long)rl.rlim_cur, mib);

	/* 2. Three children report what they see: fork, posix_spawn, and a
	 *    fork that raises SIGALRM itself and then execs. */
	off_t off[4] = { lseek(PLAIN_FD, 0, SEEK_CUR) };
	pid_t pid = mp_fork();

	if (pid == 0)
		probe(p.file, buf, pages);
	struct obs f = collect(pp[0], pid);

	off[1] = lseek(PLAIN_FD, 0, SEEK_CUR);
	pid = spawn_self((char *[]){ "process_inheritance", "--child", p.file,
				     NULL }, pp[1]);
	struct obs e = collect(pp[0], pid);

	off[2] = lseek(PLAIN_FD, 0, SEEK_CUR);
	if ((pid = mp_fork()) == 0) {
		if (blocked_here())
			MP_CHECK(raise(BLOCKED) == 0 ? 0 : -1);
		MP_CHECK(dup2(pp[1], OUT_FD));
		execv(mp_self_exe(), (char *[]){ "process_inheritance",
			"--child", p.file, NULL });
		mp_die("execv");
	}
	struct obs x = collect(pp[0], pid);

	off[3] = lseek(PLAIN_FD, 0, SEEK_CUR);
	long threads = threads_now();
	char a[64], b[64];
	int ok = 0;
	const char *how[] = { "default", "ignored", "caught" };

	printf("  %-31s %-19s %-19s\n", "", "fork", "posix_spawn");
#define OC(v) ((v) ? "open" : "closed")
	ok += row("fd without O_CLOEXEC", OC(f.fd_open[0]), OC(e.fd_open[0]),
		  f.fd_open[0] && e.fd_open[0]);
	snprintf(a, sizeof a, "at %jd, ours ->%jd", (intmax_t)f.offset,
		 (intmax_t)off[1]);
	snprintf(b, sizeof b, "at %jd, ours ->%jd", (intmax_t)e.offset,
		 (intmax_t)off[2]);
	ok += row("  its offset (shared)", a, b, f.offset == off[0] &&
		  off[1] == off[0] + 1 && e.offset == off[1] &&
		  off[2] == off[1] + 1);
	ok += row("fd with O_CLOEXEC", OC(f.fd_open[1]), OC(e.fd_open[1]),
		  f.fd_open[1] && !e.fd_open[1]);
	ok += row("fds marked by close_range", OC(f.fd_open[2] && f.fd_open[3]),
		  OC(e.fd_open[2] || e.fd_open[3]), f.fd_open[2] &&
		  f.fd_open[3] && !e.fd_open[2] && !e.fd_open[3]);
	ok += row("SIGUSR1 handler", how[f.usr1], how[e.usr1],
		  f.usr1 == 2 && e.usr1 == 0);
	ok += row("SIGUSR2 SIG_IGN", how[f.usr2], how[e.usr2],
		  f.usr2 == 1 && e.usr2 == 1);
	ok += row("signal mask (SIGALRM)", f.blocked ? "blocked" : "open",
		  e.blocked ? "blocked" : "open", f.blocked && e.blocked);
	ok += row("pending SIGALRM", f.pending ? "pending" : "cleared",
		  e.pending ? "pending" : "cleared", !f.pending && !e.pending);
	ok += row("  pending, across execve itself", "-",
		  x.pending ? "kept" : "lost", x.pending && x.blocked);
	ok += row("environment", f.env, e.env, !strcmp(f.env, "from-parent") &&
		  !strcmp(e.env, "from-parent"));
	ok += row("cwd", strcmp(f.cwd, p.dir) ? f.cwd : "same",
		  strcmp(e.cwd, p.dir) ? e.cwd : "same",
		  !strcmp(f.cwd, p.dir) && !strcmp(e.cwd, p.dir));
	snprintf(a, sizeof a, "%03o", f.umask);
	snprintf(b, sizeof b, "%03o", e.umask);
	ok += row("umask", a, b, f.umask == 027 && e.umask == 027);
	snprintf(a, sizeof a, "%ld", f.nofile);
	snprintf(b, sizeof b, "%ld", e.nofile);
	ok += row("RLIMIT_NOFILE", a, b, f.nofile == (long)rl.rlim_cur &&
		  e.nofile == (long)rl.rlim_cur);
#define FL(o) ((o).flock_fd == 0 && (o).flock_own == EWOULDBLOCK ? \
	       "held (shared)" : "not held")
	ok += row("flock (per open file)", FL(f), FL(e),
		  !strcmp(FL(f), "held (shared)") &&
		  !strcmp(FL(e), "held (shared)"));
#define FC(o) ((o).fcntl_holder ? "parent's, not ours" : "ours")
	ok += row("fcntl lock (per process)", FC(f), FC(e),
		  f.fcntl_holder && e.fcntl_holder);
	snprintf(a, sizeof a, "marker=%ld", f.marker);
	snprintf(b, sizeof b, "marker=%ld (new)", e.marker);
	ok += row("memory", a, b, f.marker == 42 && e.marker == 1);
	snprintf(a, sizeof a, "%ld/%ld faults", f.write_faults, pages);
	ok += row("  copy-on-write on write", a, "-",
		  f.write_faults >= pages * 9 / 10 &&
		  f.read_faults <= pages / 4);
	snprintf(a, sizeof a, "%ld (ours: %ld)", f.threads, threads);
	snprintf(b, sizeof b, "%ld", e.threads);
	ok += row("threads", a, b, f.threads == 1 && e.threads == 1 &&
		  threads == 2);
	mp_say("parent", "copy-on-write: reading %ld pages faulted %ld times, "
	       "writing them %ld times, %.2f us per page copied", pages,
	       f.read_faults, f.write_faults, f.copy_us);

	/* 3. A thread holds m now and then.  Fork while it does: the child's
	 *    copy of m is locked, by a thread the child does not have. */
	long wait_ms = 2 * hold_ms + 100;
	int dead = 100, spawned = -1, atfork = -1, st;
	char hms[24];

	MP_CHECK_PT(pthread_atfork(before_fork, after_fork, after_fork));
	mp_say("parent", "a thread takes a mutex for %ld ms at a time; fork "
	       "while it holds it, the child tries for %ld ms", hold_ms,
	       wait_ms);
	for (int t = 0; t < 5 && dead == 100; t++) {
		while (!atomic_load(&h.held))
			nanosleep(&(struct timespec){ 0, 100000 }, NULL);
		if ((pid = mp_fork()) == 0)
			try_lock(wait_ms, true, &h);
		st = mp_waitpid(pid);
		dead = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	}
	mp_say("parent", "the child's pthread_mutex_timedlock: %s (the copy "
	       "of the mutex is locked, and its holder is not in the child)",
	       mp_errname(dead));

	/*    Fix 1: exec at once -- a fresh image has a fresh mutex. */
	while (!atomic_load(&h.held))
		nanosleep(&(struct timespec){ 0, 100000 }, NULL);
	snprintf(hms, sizeof hms, "%ld", hold_ms);
	pid = spawn_self((char *[]){ "process_inheritance", "--child-lock",
				     "--hold-ms", hms, NULL }, pp[1]);
	st = mp_waitpid(pid);
	spawned = WIFEXITED(st) ? WEXITSTATUS(st) : -1;

	/*    Fix 2: pthread_atfork takes the mutex before fork (waiting for
	 *    the holder) and releases it on both sides. */
	atomic_store(&use_atfork, true);
	while (!atomic_load(&h.held))
		nanosleep(&(struct timespec){ 0, 100000 }, NULL);
	int64_t t0 = mp_now_ns();

	if ((pid = mp_fork()) == 0)
		try_lock(wait_ms, false, &h);
	double fork_ms = (double)(mp_now_ns() - t0) / 1e6;

	atomic_store(&use_atfork, false);
	st = mp_waitpid(pid);
	atfork = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	mp_say("parent", "posix_spawn instead: %s; fork with pthread_atfork: "
	       "%s (fork waited %.1f ms for the holder).  Fork before "
	       "threads start is the third fix (a forkserver)",
	       mp_errname(spawned), mp_errname(atfork), fork_ms);
	mp_say("parent", "Python: logging does Fix 2 (os.register_at_fork); "
	       "3.12 warns when os.fork() runs with threads; 3.14 starts "
	       "processes with forkserver by default on Linux (gh-84559)");

	/* 4. Verdict, and put everything back.  The join is bounded: a
	 *    handler that kept m locked in the parent blocks the holder. */
	struct timespec jt;

	atomic_store(&h.stop, true);
	MP_CHECK(clock_gettime(CLOCK_REALTIME, &jt));  /* timedjoin's clock */
	jt.tv_sec += hold_ms / 1000 + 2;
	int jerr = pthread_timedjoin_np(th, NULL, &jt);

	if (jerr != 0 && jerr != ETIMEDOUT)
		mp_die_en(jerr, "pthread_timedjoin_np");
	if (jerr != 0)
		mp_say("parent", "the holder thread is stuck on the mutex: "
		       "the parent's copy was left locked");
	bool good = ok == 18 && dead == ETIMEDOUT && spawned == 0 &&
		    atfork == 0 && jerr == 0;

	printf("result: rows=%d/18 deadlock=%s spawn=%s atfork=%s %s\n", ok,
	       mp_errname(dead), mp_errname(spawned), mp_errname(atfork),
	       good ? "OK" : "MISMATCH");
	if (sigtimedwait(&blk, NULL, &(struct timespec){ 0, 0 }) != BLOCKED)
		mp_die("sigtimedwait");  /* consume the pending SIGALRM */
	MP_CHECK(sigprocmask(SIG_SETMASK, &oldmask, NULL));
	MP_CHECK(setrlimit(RLIMIT_NOFILE, &oldrl));
	umask(oldumask);
	MP_CHECK(chdir(oldcwd));
	MP_CHECK(unsetenv("MPP_INHERIT"));
	MP_CHECK(close_range(PLAIN_FD, RANGE_FD + 1, 0));
	MP_CHECK(close(OUT_FD));
	MP_CHECK(close(pp[0]));
	MP_CHECK(close(pp[1]));
	MP_CHECK(munmap(buf, (size_t)pages * 4096));
	MP_CHECK(unlink(p.file));
	MP_CHECK(rmdir(p.dir));
	MP_CHECK(mp_cancel_cleanup(remove_files, &p));
	return good ? EXIT_SUCCESS : EXIT_FAILURE;
}
