/* 5_advanced/daemon_process.c -- Python's daemon=True, children that must not
 * outlive their parent, and a real Unix daemon
 *
 * Python:  p = Process(target=f, daemon=True).  "daemon" is no OS notion: at
 *          a normal exit, util._exit_function (atexit.register'ed when
 *          Lib/multiprocessing/util.py is imported; in a child, called at
 *          the end of Process._bootstrap, or since 3.13 registered again by
 *          popen_fork.py) calls terminate() (SIGTERM) on daemonic children
 *          and join() on the others.  If the parent is SIGKILLed
 *          no handler runs and every child runs on as an orphan.  A daemonic
 *          process may not start children (Lib/multiprocessing/process.py:
 *          "daemonic processes are not allowed to have children"): the
 *          SIGTERM would orphan them.
 * C:       atexit(3); prctl(PR_SET_PDEATHSIG) with its race closed;
 *          pidfd_open(2) + poll(2); prctl(PR_SET_CHILD_SUBREAPER); fork,
 *          setsid, fork, umask, chdir("/"), stdio to /dev/null, a pid file
 *          held with flock(2), a UNIX socket, kill(pid, SIGTERM).
 * Usage:   daemon_process [--daemons N (1, 0..16)] [--workers N (1, 0..16)]
 *                         [--serve-ms N (0, 0..60000)] [--daemon-only]
 * Output:  [parent 5652 +0.2ms] subreaper=1: orphans below us come to us,
 *                               not to init
 *          [leader 5653 +103.7ms] exit(): terminated 1 daemonic, joined 1
 *          [parent 5652 +106.2ms] 1 daemonic terminated (SIGTERM),
 *                                 1 joined (exit 0), 1 grandchildren of
 *                                 daemonic children orphaned and adopted by us
 *          [parent 5652 +108.7ms] leader SIGKILLed, nothing ran:
 *                                 2 orphans adopted by us;
 *                                 PDEATHSIG child killed: 1 (its setting: KILL,
 *                                 in its own fork()ed child: 0);
 *                                 pidfd child noticed and left: 1;
 *                                 late child caught the race: 1
 *          [parent 5652 +111.2ms] the thread that forked it ended: child
 *                                 killed by SIGKILL (our process lives on)
 *          [parent 5652 +228.4ms]   [python 5672] a daemonic process starts a
 *                                   child: AssertionError: daemonic processes
 *                                   are not allowed to have children
 *          ...
 *          [parent 5652 +487.1ms] daemon says: pid=5717 ppid=5652 sid=5716
 *                                 pgid=5716 cwd=/ umask=027 stdio=/dev/null
 *                                 fds=6
 *          [parent 5652 +488.4ms] 1/1 replies; pid file
 *                                 /tmp/mpp-daemon_process-HMdDWc/daemon.pid
 *                                 (mode 640, locked: yes); SIGTERM by pidfd:
 *                                 exited 0; pid file, socket, directory removed
 *          result: orphans=3/3 pdeath-killed=2/2 race=1 pidfd=1 terminated=1/1
 *                  joined=1/1 daemon=ok python=ok OK
 * Try this: delete the getppid() check in pdeath_guard() (the late child
 *          lives on as an orphan); drop PR_SET_CHILD_SUBREAPER (orphans go to
 *          init: we can still kill them by pid, but not reap them);
 *          --daemons 16 --workers 16; --daemon-only --serve-ms 5000 and
 *          Ctrl-C: the daemon is our child (subreaper), so it is stopped.
 *          Outside this lesson a daemon's parent is init or the session's
 *          subreaper (systemd --user), and the caveats of PDEATHSIG: it
 *          follows the forking *thread*, is cleared in a fork()ed child
 *          (and on exec of a set-user-ID program).
 */
#define _GNU_SOURCE
#include "mp.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

enum { MAXC = 16, LINGER_MS = 5000, PARENT_GONE = 3, PIDFD_SAW = 10 };

struct shared {
	_Atomic pid_t grandkid[MAXC];          /* step 1: a daemonic child's */
	int daemonic_st[MAXC], worker_st[MAXC]; /* as exit_function saw them */
	pid_t kid[2 * MAXC + 3];               /* step 2 */
	_Atomic int nkid;
	_Atomic int ready;        /* step 2's children set up */
	_Atomic int leader_gone;  /* step 2: lets the late child go on */
	int sig_self, sig_forked; /* PR_GET_PDEATHSIG in a child, its child */
};

/* A child that does nothing for a while, with SIGTERM's default action, as a
 * Python child has (exitcode -15 when terminated).  LINGER_MS bounds it:
 * even an orphan that escaped us ends by itself. */

/* fork() without the library's safety net: mp_fork() asks for SIGTERM when
 * the parent dies (PR_SET_PDEATHSIG), and what happens to children whose
 * parent dies is what this lesson shows.  A stop (Ctrl-C) still finds them
 * all: this process is their subreaper, and mp_stop_on_signals() reads the
 * kernel's list of children. */
static pid_t plain_fork(void)
{
	if (fflush(stdout) == EOF)
		mp_die("fflush(stdout)");
	pid_t pid = fork();

	if (pid == -1)
		mp_die("fork");
	return pid;
}
static _Noreturn void linger(void)
{
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	for (int ms = 0; ms < LINGER_MS; ms += 10)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	_exit(0);
}

/* Die with the parent -- without the race: if the parent died between
 * fork() and prctl(), no signal will ever come, and getppid() has changed
 * (to the subreaper or init).  parent was saved before fork(). */
static void pdeath_guard(pid_t parent)
{
	MP_CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL));
	if (getppid() != parent)
		_exit(PARENT_GONE);
}

/* Wait up to ms for child pid (-1: any): 1 it ended (*st set), 0 it still
 * runs (it is ours: an adopted orphan), -1 it is not our child at all. */
static int wait_for(pid_t pid, int ms, int *st)
{
	for (int t = 0;; t++) {
		pid_t r = waitpid(pid, st, WNOHANG);

		if (r > 0)
			return 1;
		if (r == -1 && errno != EINTR)
			return -1;
		if (t >= ms)
			return 0;
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	}
}

/* Stop and reap a child we adopted or started; kill by pid works even if it
 * escaped to init. */
static void stop(pid_t pid)
{
	int st;

	if (pid > 0 && kill(pid, SIGKILL) == 0)
		wait_for(pid, 1000, &st);
}

/* ---- step 1: Python's daemon flag, in the leader process ---------------- */

/* Python's process._children: what the exit function walks. */
struct child { pid_t pid; bool daemon; int *st; };
static struct child kids[2 * MAXC];
static int nkids;

/* Lib/multiprocessing/util.py _exit_function: terminate() the daemonic
 * children, then join() every child. */
static void exit_function(void)
{
	int d = 0, w = 0;

	for (int i = 0; i < nkids; i++)
		if (kids[i].daemon && kill(kids[i].pid, SIGTERM) == 0)
			d++;
	for (int i = 0; i < nkids; i++) {
		*kids[i].st = mp_waitpid(kids[i].pid);
		w += !kids[i].daemon;
	}
	mp_say("leader", "exit(): terminated %d daemonic, joined %d", d, w);
}

static _Noreturn void leader_exits(struct shared *sh, long nd, long nw)
{
	if (atexit(exit_function) != 0)
		mp_die("atexit");
	for (long i = 0; i < nd + nw; i++) {
		bool daemonic = i < nd;
		pid_t pid = plain_fork();

		if (pid == 0 && daemonic) {
			/* SIGTERM's default action before anyone may send
			 * it; then what Python forbids: a child of its own. */
			signal(SIGTERM, SIG_DFL);
			pid_t g = plain_fork();

			if (g == 0)
				linger();
			atomic_store(&sh->grandkid[i], g);
			linger();
		}
		if (pid == 0) {  /* a worker: some work, then a normal exit */
			nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
			_exit(0);
		}
		int *st = daemonic ? &sh->daemonic_st[i]
				   : &sh->worker_st[i - nd];

		kids[nkids++] = (struct child){ pid, daemonic, st };
	}
	for (int t = 0; t < 2000; t++) {  /* grandchildren started? */
		long n = 0;

		for (long i = 0; i < nd; i++)
			n += atomic_load(&sh->grandkid[i]) != 0;
		if (n == nd)
			break;
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	}
	exit(0);  /* runs exit_function, as returning from Python's main does */
}

/* ---- step 2: the leader is SIGKILLed: no exit function runs ------------- */

static _Noreturn void leader_killed(struct shared *sh, long n)
{
	pid_t me = getpid();  /* saved before fork: the race check needs it */
	pid_t pid[2 * MAXC + 3];

	for (long i = 0; i < n + 3; i++) {
		if ((pid[i] = plain_fork()) != 0)
			continue;
		if (i < n)  /* daemonic or not: nothing protects them */
			linger();
		if (i == n) {  /* PR_SET_PDEATHSIG, and a child of its own */
			int s = -1;

			pdeath_guard(me);
			pid_t g = plain_fork();

			if (g == 0) {
				MP_CHECK(prctl(PR_GET_PDEATHSIG, &s));
				sh->sig_forked = s;
				_exit(0);
			}
			if (!WIFEXITED(mp_waitpid(g)))
				mp_die("grandchild");
			MP_CHECK(prctl(PR_GET_PDEATHSIG, &s));
			sh->sig_self = s;
			atomic_fetch_add(&sh->ready, 1);
			linger();
		}
		if (i == n + 1) {  /* a pidfd on the parent: notice, clean up */
			int fd = pidfd_open(me, 0);
			struct pollfd p = { fd, POLLIN, 0 };

			if (fd == -1 || getppid() != me)  /* the same race */
				_exit(PARENT_GONE);
			atomic_fetch_add(&sh->ready, 1);
			_exit(poll(&p, 1, LINGER_MS) == 1 ? PIDFD_SAW : 0);
		}
		/* The late child: its parent dies before it gets to prctl(). */
		for (int t = 0; t < 2000 && !atomic_load(&sh->leader_gone); t++)
			nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
		pdeath_guard(me);
		linger();  /* only without the getppid() check */
	}
	memcpy(sh->kid, pid, sizeof pid);
	atomic_store(&sh->nkid, (int)n + 3);
	for (int ms = 0; ms < LINGER_MS; ms += 10)  /* until the SIGKILL */
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	_exit(1);
}

/* ---- step 3: PR_SET_PDEATHSIG follows the parent *thread* --------------- */

static void *fork_from_thread(void *arg)
{
	struct shared *sh = arg;
	pid_t me = getpid();
	pid_t pid = plain_fork();

	if (pid == 0) {
		pdeath_guard(me);
		atomic_store(&sh->ready, 1);
		linger();
	}
	for (int t = 0; t < 2000 && !atomic_load(&sh->ready); t++)
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	sh->kid[0] = pid;
	return NULL;  /* the thread ends; the process goes on */
}

/* ---- step 4: the same in Python ----------------------------------------- */

struct twin { int refused, terminated, joined, orphans; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;

	if (sscanf(line, "python: refused=%d terminated=%d joined=%d "
		   "orphans=%d", &t->refused, &t->terminated, &t->joined,
		   &t->orphans) != 4)
		mp_say("parent", "  %s", line);
}

/* ---- step 5: a real daemon ---------------------------------------------- */

struct paths { char dir[64], pidfile[108], sock[108]; };

static void remove_files(void *arg)  /* async-signal-safe: a cleanup */
{
	struct paths *p = arg;

	unlink(p->sock);
	unlink(p->pidfile);
	rmdir(p->dir);
}

static volatile sig_atomic_t term;
static void on_term(int sig)
{
	(void)sig;
	term = 1;
}

/* Before it is ready the daemon has no stderr: it reports on the pipe. */
static _Noreturn void dfail(int ready, const char *what)
{
	dprintf(ready, "%s: %s", what, mp_errname(errno));
	_exit(1);
}

static _Noreturn void daemon_main(const struct paths *p, int ready)
{
	struct sigaction sa = { .sa_handler = on_term };  /* no SA_RESTART */

	/* Keep no fd of the starter's (a shell's pipe would wait for us). */
	if (dup2(ready, 3) == -1 || close_range(4, ~0U, 0) == -1)
		dfail(ready, "close_range");
	ready = 3;
	int null = open("/dev/null", O_RDWR);

	umask(027);  /* files it makes: not world-readable */
	if (chdir("/") == -1)  /* hold no directory busy (unmount) */
		dfail(ready, "chdir");
	if (null == -1 || dup2(null, 0) == -1 || dup2(null, 1) == -1 ||
	    dup2(null, 2) == -1 || close(null) == -1)
		dfail(ready, "stdio");
	int pf = open(p->pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0666);

	if (pf == -1 || flock(pf, LOCK_EX | LOCK_NB) == -1)  /* one instance */
		dfail(ready, "pid file");
	if (ftruncate(pf, 0) == -1 ||
	    dprintf(pf, "%jd\n", (intmax_t)getpid()) < 0)
		dfail(ready, "pid file");
	if (sigaction(SIGTERM, &sa, NULL) == -1 ||
	    signal(SIGINT, SIG_DFL) == SIG_ERR)
		dfail(ready, "sigaction");
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memcpy(a.sun_path, p->sock, sizeof p->sock);
	if (ls == -1 || bind(ls, (struct sockaddr *)&a, sizeof a) == -1 ||
	    listen(ls, 8) == -1)
		dfail(ready, "socket");
	if (write(ready, "R", 1) != 1 || close(ready) == -1)
		_exit(1);
	while (!term) {
		struct pollfd pf_ = { ls, POLLIN, 0 };
		char buf[64], out[256], cwd[64] = "?", fd0[3][32] = { "" };

		if (poll(&pf_, 1, 100) != 1)
			continue;  /* a timeout, or EINTR from SIGTERM */
		int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);

		if (c == -1)
			continue;
		mode_t m = umask(0);

		umask(m);
		if (!getcwd(cwd, sizeof cwd))
			strcpy(cwd, "?");
		for (int k = 0; k < 3; k++) {
			char l[32];

			snprintf(l, sizeof l, "/proc/self/fd/%d", k);
			ssize_t n = readlink(l, fd0[k], sizeof fd0[k] - 1);

			fd0[k][n > 0 ? n : 0] = '\0';
		}
		/* Open fds: 0-2, the pid file, the socket, this connection;
		 * any other was kept from the starter. */
		int nfd = -1;
		DIR *dp = opendir("/proc/self/fd");

		for (struct dirent *e; dp && (e = readdir(dp));)
			nfd += e->d_name[0] != '.';
		if (dp)
			closedir(dp);
		bool null3 = !strcmp(fd0[0], "/dev/null") &&
			     !strcmp(fd0[1], "/dev/null") &&
			     !strcmp(fd0[2], "/dev/null");
		int len = snprintf(out, sizeof out, "pid=%jd ppid=%jd sid=%jd "
				   "pgid=%jd cwd=%s umask=%03o stdio=%s "
				   "fds=%d\n",
				   (intmax_t)getpid(), (intmax_t)getppid(),
				   (intmax_t)getsid(0), (intmax_t)getpgid(0),
				   cwd, (unsigned)m, null3 ? "/dev/null" : "?",
				   nfd);

		if (read(c, buf, sizeof buf) > 0)
			(void)!write(c, out, (size_t)len);
		close(c);
	}
	/* SIGTERM: remove what we made, then leave (the lock goes with pf). */
	_exit(unlink(p->sock) == 0 && unlink(p->pidfile) == 0 &&
	      close(ls) == 0 && close(pf) == 0 ? 0 : 1);
}

/* fork, setsid, fork: the daemon is no session leader, so it can never
 * acquire a controlling terminal; its first parent exits at once. */
static bool start_daemon(const struct paths *p)
{
	int fd[2];
	char msg[128] = "";

	MP_CHECK(pipe2(fd, O_CLOEXEC));
	pid_t first = plain_fork();

	if (first == 0) {
		MP_CHECK(close(fd[0]));
		MP_CHECK(setsid());  /* new session, no terminal */
		if (plain_fork() == 0)
			daemon_main(p, fd[1]);
		_exit(0);
	}
	MP_CHECK(close(fd[1]));
	struct pollfd pfd = { fd[0], POLLIN, 0 };
	ssize_t n = poll(&pfd, 1, 2000) == 1 ? read(fd[0], msg, sizeof msg - 1)
					     : -1;
	int st = 0;
	/* Bounded: without the second fork the first child is the daemon. */
	bool detached = wait_for(first, 2000, &st) == 1;

	MP_CHECK(close(fd[0]));
	if ((detached && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) || n != 1 ||
	    msg[0] != 'R') {
		errno = EPROTO;
		mp_die("daemon did not start: %s", n > 0 ? msg : "no word");
	}
	return detached;
}

/* One request on the daemon's socket; reply in out. */
static bool ask(const struct paths *p, char *out, size_t size)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct pollfd pfd = { s, POLLIN, 0 };
	ssize_t n = -1;

	memcpy(a.sun_path, p->sock, sizeof p->sock);
	MP_CHECK(s);
	if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 &&
	    write(s, "ping\n", 5) == 5 && poll(&pfd, 1, 1000) == 1)
		n = read(s, out, size - 1);
	MP_CHECK(close(s));
	out[n > 0 ? n : 0] = '\0';
	return n > 0;
}

int main(int argc, char *argv[])
{
	long nd = 1, nw = 1, serve_ms = 0;
	bool daemon_only = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("daemons", &nd, 0, MAXC, "daemonic children"),
		MP_OPT_L("workers", &nw, 0, MAXC, "non-daemonic children"),
		MP_OPT_L("serve-ms", &serve_ms, 0, 60000,
			 "how long the lesson keeps talking to the daemon"),
		MP_OPT_F("daemon-only", &daemon_only,
			 "only the real daemon (step 5)"),
	};

	mp_parse_options(argc, argv, "Python's daemon=True, PR_SET_PDEATHSIG, "
			 "pidfd, a subreaper, and a real Unix daemon.", opts,
			 sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 0. Become a subreaper: an orphan anywhere below us is re-parented to
	 *    us, not to init, so we can count it, stop it and reap it. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	int sub = 0, st, orphans = 0, pdeath = 0, race = 0, pidfd = 0;
	int terminated = 0, joined = 0;

	if (!sh)
		mp_die("mp_shm_alloc");
	MP_CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1));
	MP_CHECK(prctl(PR_GET_CHILD_SUBREAPER, &sub));
	mp_say("parent", "subreaper=%d: orphans below us come to us, not to "
	       "init", sub);
	if (daemon_only)
		nd = nw = 0;

	/* 1. Python's daemon flag at a normal exit: the leader's exit handler
	 *    SIGTERMs daemonic children and joins the rest. */
	pid_t leader = daemon_only ? 0 : plain_fork();

	if (leader == 0 && !daemon_only)
		leader_exits(sh, nd, nw);
	if (leader > 0 && (!WIFEXITED(mp_waitpid(leader))))
		mp_die("leader");
	for (long i = 0; i < nd; i++) {
		pid_t g = atomic_load(&sh->grandkid[i]);

		terminated += WIFSIGNALED(sh->daemonic_st[i]) &&
			      WTERMSIG(sh->daemonic_st[i]) == SIGTERM;
		orphans += g > 0 && wait_for(g, 0, &st) == 0;
		stop(g);
	}
	for (long i = 0; i < nw; i++)
		joined += WIFEXITED(sh->worker_st[i]) &&
			  WEXITSTATUS(sh->worker_st[i]) == 0;
	if (!daemon_only)
		mp_say("parent", "%d daemonic terminated (SIGTERM), %d joined "
		       "(exit 0), %d grandchildren of daemonic children "
		       "orphaned and adopted by us", terminated, joined,
		       orphans);

	/* 2. The leader is SIGKILLed: no handler runs.  Its children are
	 *    re-parented to us; only the ones that asked notice. */
	long n = nd + nw;

	if (!daemon_only && (leader = plain_fork()) == 0)
		leader_killed(sh, n);
	for (int t = 0; !daemon_only; t++) {
		if (atomic_load(&sh->ready) == 2 && atomic_load(&sh->nkid))
			break;
		if (t == 2000)
			mp_die("step 2 children not ready");
		nanosleep(&(struct timespec){ 0, 1000 * 1000 }, NULL);
	}
	if (!daemon_only) {
		MP_CHECK(kill(leader, SIGKILL));
		mp_waitpid(leader);
		atomic_store(&sh->leader_gone, 1);
	}
	for (long i = 0; !daemon_only && i < n + 3; i++) {
		pid_t k = sh->kid[i];
		int r = wait_for(k, i < n ? 0 : 1000, &st);

		if (r == 0)
			orphans++;
		else if (i == n)
			pdeath += WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
		else if (i == n + 1)
			pidfd += WIFEXITED(st) && WEXITSTATUS(st) == PIDFD_SAW;
		else if (i == n + 2)
			race += WIFEXITED(st) && WEXITSTATUS(st) == PARENT_GONE;
		stop(k);
	}
	if (!daemon_only)
		mp_say("parent", "leader SIGKILLed, nothing ran: %ld orphans "
		       "adopted by us; PDEATHSIG child killed: %d (its "
		       "setting: %s, in its own fork()ed child: %d); pidfd "
		       "child noticed and left: %d; late child caught the "
		       "race: %d", orphans - nd, pdeath,
		       sigabbrev_np(sh->sig_self) ? sigabbrev_np(sh->sig_self)
						  : "none",
		       sh->sig_forked, pidfd, race);

	/* 3. PR_SET_PDEATHSIG fires when the *thread* that forked ends. */
	pthread_t th;

	atomic_store(&sh->ready, 0);
	if (!daemon_only) {
		MP_CHECK_PT(pthread_create(&th, NULL, fork_from_thread, sh));
		MP_CHECK_PT(pthread_join(th, NULL));
		bool killed = wait_for(sh->kid[0], 1000, &st) == 1 &&
			      WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;

		pdeath += killed;
		stop(sh->kid[0]);
		mp_say("parent", "the thread that forked it ended: child %s "
		       "(our process lives on)", killed ? "killed by SIGKILL"
							: "still alive");
	}

	/* 4. Python's own daemon flag, seen from outside (the twin). */
	struct twin py = { -1, -1, -1, -1 };
	bool py_ok = true;

	if (!daemon_only && !mp_python3()) {
		mp_say("parent", "python3 was not found at configure time: "
		       "no Python side by side");
	} else if (!daemon_only) {
		mp_say("parent", "the same in Python (daemon_process.py):");
		st = mp_run_twin(MP_LESSON_DIR "/daemon_process.py", NULL, 30,
				 twin_line, &py);
		if (st == -1)
			mp_die("python twin");
		if (st != 0)  /* its traceback is on our stderr */
			mp_say("parent", "the twin failed: status %#x", st);
		while (wait_for(-1, 1000, &st) == 1)
			;  /* the orphans it killed were re-parented to us */
		py_ok = py.refused == 1 && py.terminated == 1 &&
			py.joined == 1 && py.orphans == 2;
		mp_say("parent", "Python: start() in a daemonic process "
		       "refused: %d; at exit daemonic terminated %d, joined "
		       "%d; after SIGKILL %d orphans", py.refused,
		       py.terminated, py.joined, py.orphans);
	}

	/* 5. A real daemon: start it, talk to it, stop it via its pid file. */
	struct paths p = { .dir = "/tmp/mpp-daemon_process-XXXXXX" };
	char reply[256], cwd[64] = "", stdio[64] = "", line[32] = "";
	intmax_t dpid = 0, ppid = 0, sid = 0, pgid = 0;
	unsigned mask = 0;
	struct stat sb, gone_sb;
	int pings = 0, good = 0, nfds = 0;

	if (!mkdtemp(p.dir))
		mp_die("mkdtemp");
	snprintf(p.pidfile, sizeof p.pidfile, "%s/daemon.pid", p.dir);
	snprintf(p.sock, sizeof p.sock, "%s/daemon.sock", p.dir);
	MP_CHECK(mp_atcleanup(remove_files, &p));
	bool detached = start_daemon(&p);
	int64_t until = mp_now_ns() + serve_ms * 1000000;

	do {  /* at least one request, more with --serve-ms */
		good += ask(&p, reply, sizeof reply) &&
			sscanf(reply, "pid=%jd ppid=%jd sid=%jd pgid=%jd "
			       "cwd=%63s umask=%o stdio=%63s fds=%d", &dpid,
			       &ppid, &sid, &pgid, cwd, &mask, stdio,
			       &nfds) == 8;
		if (++pings % 50 == 0)  /* about once a second */
			mp_say("parent", "  %d replies so far", good);
		if (pings == 1)
			mp_say("parent", "daemon says: %.*s",
			       (int)strcspn(reply, "\n"),
			       reply);
		else
			nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 },
				  NULL);
	} while (mp_now_ns() < until);
	int fd = open(p.pidfile, O_RDONLY | O_CLOEXEC);
	ssize_t len;

	MP_CHECK(fd);
	MP_CHECK(len = read(fd, line, sizeof line - 1));
	MP_CHECK(fstat(fd, &sb));
	bool locked = flock(fd, LOCK_EX | LOCK_NB) == -1 &&
		      errno == EWOULDBLOCK;  /* a second instance would stop */
	MP_CHECK(close(fd));
	char *end;
	pid_t pid = (pid_t)strtol(line, &end, 10);

	/* A pidfd names the process itself: no kill() of a recycled pid. */
	int pfd = pid > 0 && *end == '\n' ? pidfd_open(pid, 0) : -1;
	struct pollfd pp = { pfd, POLLIN, 0 };

	MP_CHECK(pfd);
	MP_CHECK(pidfd_send_signal(pfd, SIGTERM, NULL, 0));
	bool gone = poll(&pp, 1, 2000) == 1 && wait_for(pid, 0, &st) == 1 &&
		    WIFEXITED(st) && WEXITSTATUS(st) == 0;

	MP_CHECK(close(pfd));
	bool clean = stat(p.pidfile, &gone_sb) == -1 &&
		     stat(p.sock, &gone_sb) == -1 &&
		     rmdir(p.dir) == 0;

	MP_CHECK(mp_cancel_cleanup(remove_files, &p));
	bool dok = good == pings && dpid == pid && ppid == getpid() &&
		   sid != dpid && sid == pgid && !strcmp(cwd, "/") &&
		   mask == 027 && !strcmp(stdio, "/dev/null") && nfds == 6 &&
		   detached &&
		   (sb.st_mode & 0777) == 0640 && locked && gone && clean;
	mp_say("parent", "%d/%d replies; pid file %s (mode %03o, locked: %s);"
	       " SIGTERM by pidfd: %s; pid file, socket, directory %s",
	       good, pings, p.pidfile, (unsigned)(sb.st_mode & 0777),
	       locked ? "yes" : "no", gone ? "exited 0" : "NOT GONE",
	       clean ? "removed" : "LEFT");
	remove_files(&p);  /* in case it failed to */

	/* 6. Verdict: counted exactly. */
	bool ok = orphans == 2 * nd + nw && pdeath == (daemon_only ? 0 : 2) &&
		  race == !daemon_only && pidfd == !daemon_only &&
		  terminated == nd && joined == nw && dok &&
		  sh->sig_forked == 0 && sub == 1 && py_ok;

	printf("result: orphans=%d/%ld pdeath-killed=%d/%d race=%d pidfd=%d "
	       "terminated=%d/%ld joined=%d/%ld daemon=%s python=%s %s\n",
	       orphans, 2 * nd + nw, pdeath, daemon_only ? 0 : 2, race,
	       pidfd, terminated, nd, joined, nw, dok ? "ok" : "BAD",
	       py.refused == -1 ? "skipped" : py_ok ? "ok" : "BAD",
	       ok ? "OK" : "MISMATCH");
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
