/* 0_basics/process_contexts.c -- Python's three start methods, fork, spawn
 * and forkserver, built in C: what a child inherits, what a start costs, and
 * why fork() in a process with threads can deadlock
 *
 * Python:  mp.get_context("fork" | "spawn" | "forkserver").Process(...)
 * CPython: Lib/multiprocessing/popen_fork.py: os.fork(); the child runs the
 *          target and leaves with os._exit().  popen_spawn_posix.py: pickles
 *          the Process, starts a fresh "python -c 'from multiprocessing.spawn
 *          import spawn_main; spawn_main(...)' --multiprocessing-fork" with
 *          util.spawnv_passfds() (fork+exec in C, keeping only listed fds),
 *          and writes the pickle into a pipe whose fd number is on that
 *          command line.  forkserver.py: ensure_running() spawns a server on
 *          an AF_UNIX socket; each start connects, sends fds with SCM_RIGHTS
 *          (reduction.sendfds), the server forks, the child reads the pickled
 *          Process from a pipe, and the server writes back the child's pid
 *          and later its exit code.  Python 3.14 made forkserver the default
 *          on Linux (gh-84559) because of step 4 below.
 * C:       fork; posix_spawn of /proc/self/exe (posix_spawnattr_setsigmask,
 *          a hidden --child-mode option); socketpair(AF_UNIX, SOCK_SEQPACKET),
 *          sendmsg/recvmsg with SCM_RIGHTS; memfd_create with and without
 *          MFD_CLOEXEC; pthread_mutex_timedlock in a child forked while
 *          another thread held the mutex.
 * Usage:   process_contexts [--starts N (10, 1..100000)]
 *                           [--lock-timeout S (0.2, 0.01..60)]
 * Output:  [parent 2952 +0.1ms] 1. forkserver 2953 started
 *          [parent 2952 +0.2ms] 2. set marker=42, MPP_CONTEXT_DEMO, opened a plain and an O_CLOEXEC fd
 *          ...
 *          [parent 2952 +4.6ms]    fork       marker=42 env=yes plain fd=yes cloexec fd=yes     328 us/start (median)
 *          [parent 2952 +17.3ms]    spawn      marker=1  env=yes plain fd=yes cloexec fd=no     1077 us/start (median)
 *          [parent 2952 +25.2ms]    forkserver marker=1  env=no  plain fd=no  cloexec fd=no      343 us/start (median)
 *          [parent 2952 +25.3ms] 4. a thread holds a lock; each child tries it for 0.20 s:
 *          [parent 2952 +225.9ms]    fork       TIMED OUT: locked, and its owner was not copied (without a timeout: hung for good)
 *          [parent 2952 +228.7ms]    spawn      took the lock: a fresh image has a fresh, unlocked lock
 *          [parent 2952 +229.2ms]    forkserver took the lock: the server was forked before the thread took it
 *          [parent 2952 +229.5ms] 5. forkserver exited with 0; children left: none
 *          result: reports 30/30 as expected, lock: fork timed out, spawn took it, forkserver took it, all reaped OK
 * Try this: in child_lock(), use pthread_mutex_lock(): the fork child hangs
 *          for good (Ctrl-C still ends the run).  Start the forkserver after
 *          step 2: its children inherit the marker, the env and both fds, and
 *          the verdict says MISMATCH.
 */
#define _GNU_SOURCE
#include "mp.h"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>

enum method { FORK, SPAWN, FORKSERVER, NMETHODS };
static const char *const method_name[NMETHODS] = { "fork", "spawn", "forkserver" };

enum job { JOB_REPORT, JOB_LOCK };
enum { LOCK_TIMED_OUT = 3 };  /* exit status: the lock never came */

#define DEMO_ENV "MPP_CONTEXT_DEMO"

/* The two globals are what the lesson is about: a value the parent sets at
 * run time, and a lock a library might keep (think of logging's lock). */
static long marker = 1;  /* 1 as compiled; main() sets 42 */
static pthread_mutex_t demo_lock = PTHREAD_MUTEX_INITIALIZER;

/* What a child finds in itself.  int32_t only: no padding bytes to send. */
struct report {
	int32_t marker;   /* the global, as the child sees it */
	int32_t env;      /* DEMO_ENV is in its environment */
	int32_t plain;    /* the memfd made without close-on-exec is open */
	int32_t cloexec;  /* the memfd made with MFD_CLOEXEC is open */
};

struct request { int64_t job; double lock_timeout; };  /* to the server */
struct reply { pid_t pid; int32_t done; int32_t status; };  /* from it */

/* ---- what a child does ----------------------------------------------- */

static void child_report(int fd)
{
	struct report r = { .marker = (int32_t)marker, .env = getenv(DEMO_ENV) != NULL };
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		mp_die("opendir /proc/self/fd");
	while ((e = readdir(d)) != NULL) {
		char target[256];
		ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);

		if (n == -1)
			continue;  /* "." and ".." */
		target[n] = '\0';
		r.plain |= strncmp(target, "/memfd:mpp-plain ", 17) == 0;
		r.cloexec |= strncmp(target, "/memfd:mpp-cloexec ", 19) == 0;
	}
	MP_CHECK(closedir(d));
	/* Up to PIPE_BUF bytes reach a pipe whole, in one write. */
	MP_CHECK(write(fd, &r, sizeof r));
}

/* Take demo_lock within timeout_s; LOCK_TIMED_OUT if it never comes. */
static int child_lock(double timeout_s)
{
	struct timespec until;

	MP_CHECK(clock_gettime(CLOCK_REALTIME, &until));  /* timedlock's clock */
	double t = (double)until.tv_sec + (double)until.tv_nsec / 1e9 + timeout_s;

	until.tv_sec = (time_t)t;
	until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
	int err = pthread_mutex_timedlock(&demo_lock, &until);

	if (err == ETIMEDOUT)
		return LOCK_TIMED_OUT;
	MP_CHECK_PT(err);
	MP_CHECK_PT(pthread_mutex_unlock(&demo_lock));
	return 0;
}

static int run_job(enum job job, int fd, double lock_timeout)
{
	if (job == JOB_LOCK)
		return child_lock(lock_timeout);
	child_report(fd);
	return 0;
}

/* ---- the forkserver ----------------------------------------------------- */

/* One message, plus fd (if not -1) as SCM_RIGHTS: the kernel installs a
 * duplicate of it in the receiver, under whatever number is free there. */
static void send_msg(int sock, const void *buf, size_t len, int fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd != -1) {
		memset(&ctl, 0, sizeof ctl);
		msg.msg_control = ctl.b;
		msg.msg_controllen = sizeof ctl.b;
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	MP_CHECK(sendmsg(sock, &msg, MSG_NOSIGNAL));  /* MSG_NOSIGNAL: EPIPE, not SIGPIPE */
}

/* Receive one message of exactly len bytes (and an fd into *fd, if sent).
 * Returns false at end of file: the other side has closed its end. */
static bool recv_msg(int sock, void *buf, size_t len, int *fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
	ssize_t n;

	MP_CHECK(n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC));
	if (n == 0)
		return false;
	if ((size_t)n != len || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		errno = EPROTO;
		mp_die("recvmsg: a malformed message");
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	if (fd)
		*fd = -1;
	if (fd && c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof *fd);
	return true;
}

/* The server: fork one child per request, report its pid, then its exit
 * status.  (Python's listens on a named AF_UNIX socket, one connection per
 * start, and serves many at once, reaping on SIGCHLD; ours has one socketpair
 * and serves one at a time.)  It stops at end of file, when the parent
 * closes its end.  On SIGTERM from the
 * parent's Ctrl-C handler (mp_stop_on_signals(), inherited) it stops its own
 * children first. */
static _Noreturn void serve(int sock)
{
	struct request rq;
	int fd;

	while (recv_msg(sock, &rq, sizeof rq, &fd)) {
		pid_t pid = mp_fork();

		if (pid == 0) {
			MP_CHECK(close(sock));
			_exit(run_job(rq.job, fd, rq.lock_timeout));
		}
		if (fd != -1)
			MP_CHECK(close(fd));
		send_msg(sock, &(struct reply){ pid, 0, 0 }, sizeof(struct reply), -1);
		int status = mp_waitpid(pid);
		send_msg(sock, &(struct reply){ pid, 1, status }, sizeof(struct reply), -1);
	}
	_exit(EXIT_SUCCESS);
}

static pid_t start_forkserver(int *sock)
{
	int sv[2];

	/* SEQPACKET: messages keep their boundaries, and EOF is seen. */
	MP_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	pid_t pid = mp_fork();

	if (pid == 0) {
		MP_CHECK(close(sv[0]));
		serve(sv[1]);
	}
	MP_CHECK(close(sv[1]));
	*sock = sv[0];
	return pid;
}

/* ---- the three ways to start a child ------------------------------------ */

/* "spawn": a fresh image of this program, told its job on the command line
 * as Python's spawn_main(pipe_handle=N) is.  Only fds without close-on-exec
 * survive exec, so the pipe's write end loses FD_CLOEXEC first (safe here:
 * no other thread is starting programs; Python's passfds does it in the
 * child, between fork and exec). */
static pid_t start_spawn(const char *argv0, enum job job, int fd, double lock_timeout)
{
	char fdtext[16], lt[32];
	char *args[] = { (char *)argv0, "--child-mode", job == JOB_LOCK ? "lock" : "report",
			 "--pipe-fd", fdtext, "--lock-timeout", lt, NULL };
	posix_spawnattr_t attr;
	sigset_t none;
	pid_t pid;

	snprintf(fdtext, sizeof fdtext, "%d", fd);
	snprintf(lt, sizeof lt, "%.17g", lock_timeout);
	if (fd != -1)
		MP_CHECK(fcntl(fd, F_SETFD, 0));
	/* Whatever our mask is now, the child starts with nothing blocked, so
	 * a SIGTERM from Ctrl-C handling always ends it. */
	MP_CHECK(sigemptyset(&none));
	MP_CHECK_PT(posix_spawnattr_init(&attr));
	MP_CHECK_PT(posix_spawnattr_setsigmask(&attr, &none));
	MP_CHECK_PT(posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK));
	MP_CHECK_PT(posix_spawn(&pid, "/proc/self/exe", NULL, &attr, args, environ));
	MP_CHECK_PT(posix_spawnattr_destroy(&attr));
	return pid;
}

/* Start a child with method m, wait for it, return its waitpid() status.
 * For JOB_REPORT, *r gets what the child found in itself. */
static int run(enum method m, int server, const char *argv0, enum job job,
	       double lock_timeout, struct report *r)
{
	int fds[2] = { -1, -1 };
	struct reply rp = { 0 };
	pid_t pid = -1;

	if (job == JOB_REPORT)
		MP_CHECK(pipe2(fds, O_CLOEXEC));
	if (m == FORK) {
		pid = mp_fork();
		if (pid == 0)
			_exit(run_job(job, fds[1], lock_timeout));
	} else if (m == SPAWN) {
		pid = start_spawn(argv0, job, fds[1], lock_timeout);
	} else {
		struct request rq = { job, lock_timeout };

		send_msg(server, &rq, sizeof rq, fds[1]);
		if (!recv_msg(server, &rp, sizeof rp, NULL))
			mp_die("the forkserver went away");
		pid = rp.pid;
	}
	if (fds[1] != -1) {  /* now only the child holds the write end */
		MP_CHECK(close(fds[1]));
		ssize_t n = read(fds[0], r, sizeof *r);

		MP_CHECK(n);
		if (n != (ssize_t)sizeof *r) {
			errno = EPROTO;
			mp_die("%s child %jd sent no report", method_name[m], (intmax_t)pid);
		}
		MP_CHECK(close(fds[0]));
	}
	if (m != FORKSERVER)
		return mp_waitpid(pid);
	if (!recv_msg(server, &rp, sizeof rp, NULL) || !rp.done || rp.pid != pid)
		mp_die("the forkserver sent no exit status");
	return rp.status;
}

/* ---- a thread that holds the lock --------------------------------------- */

struct holder {
	pthread_barrier_t held, release;
};

static void barrier_wait(pthread_barrier_t *b)
{
	int err = pthread_barrier_wait(b);

	if (err != PTHREAD_BARRIER_SERIAL_THREAD)
		MP_CHECK_PT(err);
}

static void *hold_lock(void *arg)
{
	struct holder *h = arg;

	MP_CHECK_PT(pthread_mutex_lock(&demo_lock));
	barrier_wait(&h->held);     /* main may fork now */
	barrier_wait(&h->release);  /* main is done forking */
	MP_CHECK_PT(pthread_mutex_unlock(&demo_lock));
	return NULL;
}

static bool timed_out(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == LOCK_TIMED_OUT;
}

/* What became of a child that tried the lock. */
static const char *lock_outcome(int status)
{
	return status == 0 ? "took it" : timed_out(status) ? "timed out" : "FAILED";
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* A spawned child: do the job named on the command line and exit. */
static int spawned_child(const char *mode, long fd, double lock_timeout)
{
	bool lock = strcmp(mode, "lock") == 0;

	if (!lock && (strcmp(mode, "report") != 0 || fd < 0)) {
		fprintf(stderr, "%s: --child-mode: want 'lock', or 'report' with --pipe-fd\n",
			program_invocation_short_name);
		return 2;
	}
	return run_job(lock ? JOB_LOCK : JOB_REPORT, (int)fd, lock_timeout);
}

int main(int argc, char *argv[])
{
	long starts = 10, pipe_fd = -1;
	double lock_timeout = 0.2;
	const char *child_mode = NULL;
	const struct mp_opt opts[] = {
		MP_OPT_L("starts", &starts, 1, 100000, "timed starts per start method"),
		MP_OPT_D("lock-timeout", &lock_timeout, 0.01, 60,
			 "seconds a child waits for a lock that was held when it was forked"),
		MP_OPT_S("child-mode", &child_mode, NULL),  /* hidden: spawned children only */
		MP_OPT_L("pipe-fd", &pipe_fd, -1, 1 << 20, NULL),
	};

	mp_parse_options(argc, argv,
			 "fork, spawn and forkserver: what a child inherits, what a start costs.",
			 opts, sizeof opts / sizeof opts[0]);
	if (child_mode)
		return spawned_child(child_mode, pipe_fd, lock_timeout);

	/* 1. The forkserver starts first, while this process is still small and
	 *    has one thread: every child it forks is a copy of that moment. */
	int server;

	mp_stop_on_signals();
	pid_t server_pid = start_forkserver(&server);
	mp_say("parent", "1. forkserver %jd started", (intmax_t)server_pid);

	/* 2. State the parent picks up afterwards. */
	int plain, cloexec;

	marker = 42;
	MP_CHECK(setenv(DEMO_ENV, "set after the forkserver started", 1));
	MP_CHECK(plain = memfd_create("mpp-plain", 0));
	MP_CHECK(cloexec = memfd_create("mpp-cloexec", MFD_CLOEXEC));
	mp_say("parent", "2. set marker=42, %s, opened a plain and an O_CLOEXEC fd", DEMO_ENV);

	/* 3. Each method: what its children see, and what a start costs (start,
	 *    the child's report read, its exit status collected). */
	static const struct report expect[NMETHODS] = {
		[FORK] = { 42, 1, 1, 1 },       /* a copy of everything */
		[SPAWN] = { 1, 1, 1, 0 },       /* fresh memory; env and plain fds */
		[FORKSERVER] = { 1, 0, 0, 0 },  /* a copy of the early process */
	};
	int64_t *ns = malloc((size_t)starts * sizeof *ns);
	long good = 0;

	if (!ns)
		mp_die("malloc");
	mp_say("parent", "3. spawn runs '%s --child-mode report --pipe-fd N' (hidden options, as",
	       argv[0]);
	mp_say("parent", "   Python's runs '--multiprocessing-fork'); %ld starts per method:",
	       starts);
	for (int m = 0; m < NMETHODS; m++) {
		struct report r, first = { 0 };

		for (long i = 0; i < starts; i++) {
			int64_t t0 = mp_now_ns();
			int status = run(m, server, argv[0], JOB_REPORT, lock_timeout, &r);

			ns[i] = mp_now_ns() - t0;
			if (i == 0)
				first = r;
			good += WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
				memcmp(&r, &expect[m], sizeof r) == 0;
		}
		qsort(ns, (size_t)starts, sizeof *ns, cmp_i64);
		mp_say("parent", "   %-10s marker=%-2d env=%-3s plain fd=%-3s cloexec fd=%-3s "
		       "%7.0f us/start (median)", method_name[m], first.marker,
		       first.env ? "yes" : "no", first.plain ? "yes" : "no",
		       first.cloexec ? "yes" : "no", (double)ns[starts / 2] / 1e3);
	}
	free(ns);

	/* 4. fork() while another thread holds a lock: the child gets the lock
	 *    in its locked state, and no thread that will ever unlock it.  So
	 *    POSIX lets such a child call only async-signal-safe functions until
	 *    it execs: malloc, printf or a library's lock may be held by a
	 *    thread that was not copied.  Here the lock is held on purpose; in
	 *    real programs only sometimes, which makes the hang rare and random. */
	struct holder h;
	pthread_t tid;
	sigset_t stop, old;

	MP_CHECK_PT(pthread_barrier_init(&h.held, NULL, 2));
	MP_CHECK_PT(pthread_barrier_init(&h.release, NULL, 2));
	MP_CHECK(sigemptyset(&stop));
	MP_CHECK(sigaddset(&stop, SIGINT));
	MP_CHECK(sigaddset(&stop, SIGTERM));
	MP_CHECK_PT(pthread_sigmask(SIG_BLOCK, &stop, &old));  /* Ctrl-C: main thread */
	MP_CHECK_PT(pthread_create(&tid, NULL, hold_lock, &h));
	MP_CHECK_PT(pthread_sigmask(SIG_SETMASK, &old, NULL));
	barrier_wait(&h.held);
	mp_say("parent", "4. a thread holds a lock; each child tries it for %.2f s:", lock_timeout);

	static const char *const took[NMETHODS] = {
		[FORK] = "took the lock (was the thread too late?)",
		[SPAWN] = "took the lock: a fresh image has a fresh, unlocked lock",
		[FORKSERVER] = "took the lock: the server was forked before the thread took it",
	};
	int lock_status[NMETHODS];

	for (int m = 0; m < NMETHODS; m++) {
		lock_status[m] = run(m, server, argv[0], JOB_LOCK, lock_timeout, NULL);
		mp_say("parent", "   %-10s %s", method_name[m], !timed_out(lock_status[m]) ?
		       took[m] : "TIMED OUT: locked, and its owner was not copied "
		       "(without a timeout: hung for good)");
	}
	barrier_wait(&h.release);
	MP_CHECK_PT(pthread_join(tid, NULL));
	MP_CHECK_PT(pthread_barrier_destroy(&h.held));
	MP_CHECK_PT(pthread_barrier_destroy(&h.release));

	/* 5. Stop the forkserver (end of file on its socket), reap it, and
	 *    check that no child of ours is left. */
	MP_CHECK(close(server));
	int server_status = mp_waitpid(server_pid);
	bool none_left = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	MP_CHECK(close(plain));
	MP_CHECK(close(cloexec));
	mp_say("parent", "5. forkserver exited with %d; children left: %s",
	       WIFEXITED(server_status) ? WEXITSTATUS(server_status) : -1,
	       none_left ? "none" : "some");

	/* 6. The verdict: every report as expected, only fork's child stuck. */
	bool ok = good == NMETHODS * starts && timed_out(lock_status[FORK]) &&
		  lock_status[SPAWN] == 0 && lock_status[FORKSERVER] == 0 &&
		  server_status == 0 && none_left;

	printf("result: reports %ld/%ld as expected, lock: fork %s, spawn %s, forkserver %s, "
	       "all reaped %s\n", good, NMETHODS * starts, lock_outcome(lock_status[FORK]),
	       lock_outcome(lock_status[SPAWN]), lock_outcome(lock_status[FORKSERVER]),
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
