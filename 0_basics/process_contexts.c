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
 *          command line.  forkserver.py: ensure_running() spawns a server
 *          listening on an AF_UNIX socket; each start connects, sends fds
 *          with SCM_RIGHTS (reduction.sendfds), the server forks, the child
 *          reads the pickled Process from a pipe, and the server writes back
 *          the child's pid and later its exit code.  Python 3.14 made
 *          forkserver the default on Linux (gh-84559) because of step 4.
 * C:       fork; posix_spawn of /proc/self/exe (posix_spawnattr_setsigmask,
 *          a hidden --child-fd option); socketpair(AF_UNIX, SOCK_SEQPACKET),
 *          sendmsg/recvmsg with SCM_RIGHTS; memfd_create with and without
 *          MFD_CLOEXEC; pthread_mutex_clocklock (on CLOCK_MONOTONIC) in a
 *          child forked while another thread held the mutex.
 * Usage:   process_contexts [--starts N (10, 1..100000)]
 *                           [--lock-timeout S (0.2, 0.01..60)]
 * Output:  (trimmed, long lines folded)
 *   [parent 31955 +0.1ms]    (marker: the global as the child sees it,
 *                            42 since step 2, 1 as compiled; env: ...)
 *   [parent 31955 +0.1ms]    method     marker env fd:plain cloexec us/start
 *   [parent 31955 +4.4ms]    fork           42 yes yes      yes          406
 *   [parent 31955 +15.5ms]    spawn           1 yes yes      no          1072
 *   [parent 31955 +20.0ms]    forkserver      1 no  no       no           433
 *   [parent 31955 +20.3ms] 4. a thread holds the lock; each child tries it
 *                          for 0.20 s:
 *   [parent 31955 +220.9ms]    fork       timed out: locked, by a thread
 *                              that was not copied (waits for good without a
 *                              timeout)
 *   [parent 31955 +221.9ms]    spawn      took it: a fresh image has a
 *                              fresh, unlocked lock
 *   ...
 *   result: reports 30/30 as expected, lock: fork timed out, spawn took it,
 *           forkserver took it, all reaped OK
 * Try this: in child_main(), use pthread_mutex_lock(): the fork child waits
 *          for good; the parent kills it after --lock-timeout + 2 s and the
 *          verdict says MISMATCH.  Start the forkserver after step 2: its
 *          children inherit the marker, the env and both fds, and the
 *          verdict says MISMATCH.
 */
#define _GNU_SOURCE
#include "mp.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>

enum method { FORK, SPAWN, FORKSERVER, NMETHODS };
static const char *const method_name[] = { "fork", "spawn", "forkserver" };

enum { LOCK_TIMED_OUT = 3 };  /* a child's exit status: the lock never came */
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

/* ---- what every child does, however it was started -------------------- */

/* Write a report into fd (unless fd is -1), then try demo_lock for
 * timeout_s.  Returns the exit status: 0, or LOCK_TIMED_OUT. */
static int child_main(int fd, double timeout_s)
{
	static const char plain[] = "/memfd:mpp-plain ",
			  cloexec[] = "/memfd:mpp-cloexec ";
	struct report r = { .marker = (int32_t)marker,
			    .env = getenv(DEMO_ENV) != NULL };
	struct dirent *e;
	DIR *d;

	if (fd != -1) {
		if (!(d = opendir("/proc/self/fd")))
			mp_die("opendir /proc/self/fd");
		while ((e = readdir(d)) != NULL) {
			char to[256];
			ssize_t n = readlinkat(dirfd(d), e->d_name, to,
					       sizeof to - 1);

			if (n == -1)
				continue;  /* "." and ".." */
			to[n] = '\0';
			r.plain |= strncmp(to, plain, sizeof plain - 1) == 0;
			r.cloexec |= !strncmp(to, cloexec, sizeof cloexec - 1);
		}
		MP_CHECK(closedir(d));
		/* Up to PIPE_BUF bytes reach a pipe whole, in one write. */
		MP_CHECK(write(fd, &r, sizeof r));
	}
	int64_t until_ns = mp_now_ns() + (int64_t)(timeout_s * 1e9);
	struct timespec until = { .tv_sec = until_ns / 1000000000,
				  .tv_nsec = until_ns % 1000000000 };
	int err = pthread_mutex_clocklock(&demo_lock, CLOCK_MONOTONIC, &until);

	if (err == ETIMEDOUT)
		return LOCK_TIMED_OUT;
	MP_CHECK_PT(err);
	MP_CHECK_PT(pthread_mutex_unlock(&demo_lock));
	return 0;
}

/* Read one record of exactly len bytes (a pipe write of up to PIPE_BUF
 * bytes, or one SEQPACKET message); false at end of file. */
static bool read_msg(int fd, void *buf, size_t len)
{
	ssize_t n;

	MP_CHECK(n = read(fd, buf, len));
	if (n != 0 && (size_t)n != len) {
		errno = EPROTO;
		mp_die("read: a short message");
	}
	return n != 0;
}

/* waitpid(), but a child still running after bound_s gets SIGKILL first:
 * a child stuck for good (a lock that nobody will ever unlock) must not
 * hang the lesson.  Its status then says "killed by SIGKILL". */
static int wait_bounded(pid_t pid, double bound_s)
{
	int pfd = mp_pidfd_open(pid), n;

	MP_CHECK(pfd);
	struct pollfd p = { .fd = pfd, .events = POLLIN };

	while ((n = poll(&p, 1, (int)(bound_s * 1e3))) == -1 && errno == EINTR)
		;
	MP_CHECK(n);
	if (n == 0)
		MP_CHECK(mp_pidfd_send_signal(pfd, pid, SIGKILL));
	MP_CHECK(close(pfd));
	return mp_waitpid(pid);
}

/* ---- the forkserver --------------------------------------------------- */

/* A request (the lock timeout), plus fd (if not -1) as SCM_RIGHTS: the
 * kernel installs a duplicate of fd in the receiver, under whatever number
 * is free there. */
static void send_request(int sock, double lock_timeout, int fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { &lock_timeout, sizeof lock_timeout };
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
	/* MSG_NOSIGNAL: a dead server gives EPIPE, not a SIGPIPE death. */
	MP_CHECK(sendmsg(sock, &msg, MSG_NOSIGNAL));
}

/* The server's side: one request, and its fd in *fd (-1 if none).  False
 * at end of file: the parent has closed its end. */
static bool recv_request(int sock, double *lock_timeout, int *fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { lock_timeout, sizeof *lock_timeout };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.b,
			      .msg_controllen = sizeof ctl.b };
	ssize_t n;

	MP_CHECK(n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC));
	if (n == 0)
		return false;
	if ((size_t)n != sizeof *lock_timeout || (msg.msg_flags & MSG_CTRUNC)) {
		errno = EPROTO;
		mp_die("recvmsg: a malformed request");
	}
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	*fd = -1;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof *fd);
	return true;
}

/* The server: fork one child per request, send back its pid, then its
 * waitpid() status; stop at end of file, when the parent closes its end.
 * (Python's accepts one connection per start, serves many at once and reaps
 * on SIGCHLD; ours serves one at a time.)  On Ctrl-C, the handler it
 * inherited (mp_stop_on_signals()) stops its children first. */
static _Noreturn void serve(int sock)
{
	double lock_timeout;
	int fd;

	while (recv_request(sock, &lock_timeout, &fd)) {
		pid_t pid = mp_fork();

		if (pid == 0) {
			MP_CHECK(close(sock));
			_exit(child_main(fd, lock_timeout));
		}
		if (fd != -1)
			MP_CHECK(close(fd));
		MP_CHECK(send(sock, &pid, sizeof pid, MSG_NOSIGNAL));
		int status = wait_bounded(pid, lock_timeout + 2);
		MP_CHECK(send(sock, &status, sizeof status, MSG_NOSIGNAL));
	}
	_exit(EXIT_SUCCESS);
}

/* ---- the three ways to start a child ---------------------------------- */

/* "spawn": a fresh image of this program, told its fd on the command line
 * as Python's spawn_main(pipe_handle=N) is.  Only fds without close-on-exec
 * survive exec, so the pipe's write end loses FD_CLOEXEC first (safe here:
 * no other thread is starting programs; Python's passfds does it in the
 * child, between fork and exec). */
static pid_t start_spawn(const char *argv0, int fd, double lock_timeout)
{
	char fdtext[16], lt[32];
	char *args[] = { (char *)argv0, "--child-fd", fdtext,
			 "--lock-timeout", lt, NULL };
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
	/* mp_self_exe(): readlink("/proc/self/exe"), our own path (the link
	 * itself would name valgrind under valgrind). */
	MP_CHECK_PT(posix_spawn(&pid, mp_self_exe(), NULL, &attr, args,
				environ));
	MP_CHECK_PT(posix_spawnattr_destroy(&attr));
	return pid;
}

/* Start a child with method m, wait for it, return its waitpid() status.
 * With r, the child also reports what it found in itself into *r. */
static int run(enum method m, int server, const char *argv0,
	       double lock_timeout, struct report *r)
{
	int fds[2] = { -1, -1 }, status;
	pid_t pid;

	if (r)
		MP_CHECK(pipe2(fds, O_CLOEXEC));
	if (m == FORK) {
		if ((pid = mp_fork()) == 0)
			_exit(child_main(fds[1], lock_timeout));
	} else if (m == SPAWN) {
		pid = start_spawn(argv0, fds[1], lock_timeout);
	} else {
		send_request(server, lock_timeout, fds[1]);
		if (!read_msg(server, &pid, sizeof pid))
			mp_die("the forkserver went away");
	}
	if (r) {  /* now only the child holds the write end */
		MP_CHECK(close(fds[1]));
		if (!read_msg(fds[0], r, sizeof *r)) {
			errno = EPROTO;
			mp_die("%s child %jd sent no report", method_name[m],
			       (intmax_t)pid);
		}
		MP_CHECK(close(fds[0]));
	}
	if (m != FORKSERVER)
		return wait_bounded(pid, lock_timeout + 2);
	if (!read_msg(server, &status, sizeof status))
		mp_die("the forkserver sent no exit status");
	return status;
}

/* ---- a thread that holds the lock ------------------------------------- */

static void barrier_wait(pthread_barrier_t *b)
{
	int err = pthread_barrier_wait(b);

	if (err != PTHREAD_BARRIER_SERIAL_THREAD)
		MP_CHECK_PT(err);
}

/* Lock, meet main at the barrier (main may fork now), meet it again (main
 * is done forking), unlock.  A barrier can be used over and over. */
static void *hold_lock(void *barrier)
{
	MP_CHECK_PT(pthread_mutex_lock(&demo_lock));
	barrier_wait(barrier);
	barrier_wait(barrier);
	MP_CHECK_PT(pthread_mutex_unlock(&demo_lock));
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int main(int argc, char *argv[])
{
	long starts = 10, child_fd = -2;
	double lock_timeout = 0.2;
	const struct mp_opt opts[] = {
		MP_OPT_L("starts", &starts, 1, 100000,
			 "timed starts per start method"),
		MP_OPT_D("lock-timeout", &lock_timeout, 0.01, 60,
			 "seconds a child waits for a lock that was held when "
			 "it was forked"),
		/* hidden (no help text): how a spawned child learns it is
		 * one, and its pipe (-1: none) */
		MP_OPT_L("child-fd", &child_fd, -1, 1 << 20, NULL),
	};

	mp_parse_options(argc, argv, "fork, spawn and forkserver: what a "
			 "child inherits, what a start costs.",
			 opts, sizeof opts / sizeof opts[0]);
	if (child_fd != -2)
		return child_main((int)child_fd, lock_timeout);

	/* 1. The forkserver starts first, while this process is still small and
	 *    has one thread: every child it forks is a copy of that moment.
	 *    SEQPACKET: messages keep their boundaries, and EOF is seen. */
	int sv[2];

	mp_stop_on_signals();
	MP_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	pid_t server_pid = mp_fork();

	if (server_pid == 0) {
		MP_CHECK(close(sv[0]));
		serve(sv[1]);
	}
	MP_CHECK(close(sv[1]));
	int server = sv[0];
	mp_say("parent", "1. forkserver %jd started", (intmax_t)server_pid);

	/* 2. State the parent picks up afterwards. */
	int plain, cloexec;

	marker = 42;
	MP_CHECK(setenv(DEMO_ENV, "set after the forkserver started", 1));
	MP_CHECK(plain = memfd_create("mpp-plain", 0));
	MP_CHECK(cloexec = memfd_create("mpp-cloexec", MFD_CLOEXEC));
	mp_say("parent", "2. set marker=42, %s, opened a plain and an "
	       "O_CLOEXEC fd", DEMO_ENV);

	/* 3. Each method: what its children see, and what a start costs (start,
	 *    the child's report read, its exit status collected). */
	static const struct report expect[NMETHODS] = {
		[FORK] = { 42, 1, 1, 1 },       /* a copy of everything */
		[SPAWN] = { 1, 1, 1, 0 },       /* new memory; env, plain fd */
		[FORKSERVER] = { 1, 0, 0, 0 },  /* copy of the early process */
	};
	int64_t *ns = malloc((size_t)starts * sizeof *ns);
	long good = 0;

	if (!ns)
		mp_die("malloc");
	/* spawn's hidden option plays the part of Python's
	 * '--multiprocessing-fork': it tells the new image it is a child. */
	mp_say("parent", "3. %ld starts per method, median cost; spawn runs "
	       "'%s --child-fd N'", starts, argv[0]);
	mp_say("parent", "   (marker: the global as the child sees it, 42 "
	       "since step 2, 1 as compiled; env: %s is set; fd:plain, "
	       "cloexec: the memfd made without, with MFD_CLOEXEC is open; "
	       "us/start: median microseconds from start to exit status)",
	       DEMO_ENV);
	mp_say("parent", "   method     marker env fd:plain cloexec us/start");
	for (int m = 0; m < NMETHODS; m++) {
		struct report r, first = { 0 };

		for (long i = 0; i < starts; i++) {
			int64_t t0 = mp_now_ns();
			int status = run(m, server, argv[0], lock_timeout, &r);

			ns[i] = mp_now_ns() - t0;
			if (i == 0)
				first = r;
			good += status == 0 &&
				memcmp(&r, &expect[m], sizeof r) == 0;
		}
		qsort(ns, (size_t)starts, sizeof *ns, cmp_i64);
		mp_say("parent", "   %-10s %6d %-3s %-8s %-7s %8.0f",
		       method_name[m], first.marker, first.env ? "yes" : "no",
		       first.plain ? "yes" : "no",
		       first.cloexec ? "yes" : "no",
		       (double)ns[starts / 2] / 1e3);
	}
	free(ns);

	/* 4. fork() while another thread holds a lock: the child gets the lock
	 *    in its locked state, and no thread that will ever unlock it.  So
	 *    POSIX lets such a child call only async-signal-safe functions
	 *    until it execs: malloc, printf or a library's lock may be held by
	 *    a thread that was not copied (which is why these children skip
	 *    the report).  Here the lock is held on purpose; in real programs
	 *    only sometimes, which makes the hang rare and random. */
	pthread_barrier_t barrier;
	pthread_t tid;

	MP_CHECK_PT(pthread_barrier_init(&barrier, NULL, 2));
	MP_CHECK_PT(pthread_create(&tid, NULL, hold_lock, &barrier));
	barrier_wait(&barrier);  /* the thread holds demo_lock now */
	mp_say("parent", "4. a thread holds the lock; each child tries it for "
	       "%.2f s:", lock_timeout);

	static const char *const want[NMETHODS] = { "timed out", "took it",
						    "took it" };
	static const char *const why[NMETHODS] = {
		[FORK] = "locked, by a thread that was not copied (waits "
			 "for good without a timeout)",
		[SPAWN] = "a fresh image has a fresh, unlocked lock",
		[FORKSERVER] = "its server was forked before the lock was "
			       "taken",
	};
	const char *lock[NMETHODS];
	int locks_ok = 0;

	for (int m = 0; m < NMETHODS; m++) {
		int st = run(m, server, argv[0], lock_timeout, NULL);

		lock[m] = st == 0 ? "took it" :
			  WIFEXITED(st) && WEXITSTATUS(st) == LOCK_TIMED_OUT ?
			  "timed out" : "FAILED";
		bool as_expected = strcmp(lock[m], want[m]) == 0;

		locks_ok += as_expected;
		mp_say("parent", "   %-10s %s: %s", method_name[m], lock[m],
		       as_expected ? why[m] : "NOT AS EXPECTED");
	}
	barrier_wait(&barrier);  /* let the thread unlock and return */
	MP_CHECK_PT(pthread_join(tid, NULL));
	MP_CHECK_PT(pthread_barrier_destroy(&barrier));

	/* 5. Stop the forkserver (end of file on its socket), reap it, and
	 *    check that no child of ours is left.  A copy of our end left open
	 *    anywhere (a close forgotten) means no EOF: it gets SIGKILL after
	 *    2 s, and the verdict says so. */
	MP_CHECK(close(server));
	int server_status = wait_bounded(server_pid, 2); /* EOF: it ends */
	bool none_left = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	MP_CHECK(close(plain));
	MP_CHECK(close(cloexec));
	mp_say("parent", "5. forkserver exited with %d; children left: %s",
	       WIFEXITED(server_status) ? WEXITSTATUS(server_status) : -1,
	       none_left ? "none" : "some");

	/* 6. The verdict: every report as expected, only fork's child stuck. */
	bool ok = good == NMETHODS * starts && locks_ok == NMETHODS &&
		  server_status == 0 && none_left;

	printf("result: reports %ld/%ld as expected, lock: fork %s, spawn %s, "
	       "forkserver %s, %s %s\n", good, NMETHODS * starts,
	       lock[FORK], lock[SPAWN], lock[FORKSERVER],
	       server_status == 0 && none_left ? "all reaped"
					       : "server NOT ended by EOF",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
