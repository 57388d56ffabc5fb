/* 0_basics/join_terminate.c -- join with a timeout, is_alive, terminate vs
 * kill, a zombie, and the exit codes of children killed by a signal
 *
 * Python:  p.join(timeout=0.2); p.is_alive(); p.terminate(); p.kill();
 *          p.exitcode  (-15 after terminate, -9 after kill)
 * CPython: Lib/multiprocessing/popen_fork.py.  join(timeout) waits on the
 *          "sentinel", a pipe whose write end only the child holds (EOF =
 *          the child is gone), then reaps it with os.waitpid(); is_alive()
 *          is os.waitpid(pid, WNOHANG).  terminate() and kill() are
 *          os.kill() with SIGTERM and SIGKILL, and exitcode is
 *          os.waitstatus_to_exitcode(): -N for "killed by signal N".
 * C:       pidfd_open + poll (join with a timeout), waitpid(WNOHANG)
 *          (is_alive), pidfd_send_signal (terminate, kill), sigwaitinfo
 *          (a child that handles SIGTERM), /proc/PID/stat (a zombie's 'Z'),
 *          WIFSIGNALED / WTERMSIG.
 * Usage:   join_terminate [--timeout S (0.2, 0.01..60)] [--code N (7, 0..255)]
 * Output:  (trimmed, long lines folded)
 *   [parent 12593 +0.2ms] 1. sleeper 12595 started; join(timeout=0.20)
 *   [parent 12593 +204.1ms] join returned after 203.9 ms, is_alive()=1,
 *                           exitcode=None
 *   [parent 12593 +204.4ms] terminate(): SIGTERM -> killed by SIGTERM,
 *                           exitcode=-15 (a shell shows 143)
 *   ...
 *   [parent 12593 +405.1ms] kill(): SIGKILL -> killed by SIGKILL, exitcode=-9
 *   [parent 12593 +405.4ms] 3. quick 12666 has exited, not reaped:
 *                           /proc/12666/stat state 'Z' (zombie)
 *   ...
 *   result: exitcodes -15 -9 7 (expected -15 -9 7), SIGTERM survived,
 *           zombie Z then gone OK
 * Try this: in stubborn(), drop the sigprocmask(): terminate() now ends it
 *          and the verdict says MISMATCH.  Run with --timeout 30 and, in
 *          another terminal, `ps -o pid,stat,wchan,cmd --ppid <parent pid>`.
 */
#define _GNU_SOURCE
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/pidfd.h>

enum {
	MAX_KIDS = 3,
	BOUND_S = 5,      /* no wait that must end lasts longer */
	LIFETIME_S = 120, /* no child outlives this, whatever happens */
};

/* The children a Ctrl-C must stop.  A signal handler sees only globals;
 * lock-free atomics are safe to read in one (C17 7.14.1.1). */
static _Atomic pid_t kids[MAX_KIDS];

/* multiprocessing.Process, cut down to what this lesson needs. */
struct proc {
	pid_t pid;
	int pidfd;    /* a handle on this process: poll()able, signal()able */
	int slot;     /* its entry in kids[] */
	bool reaped;
	int status;   /* from waitpid(), once reaped */
};

/* Ctrl-C: a stubborn child shrugs off SIGTERM, so stop with SIGKILL. */
static void on_stop(int sig)
{
	if (!mp_is_main_process())
		_exit(128 + sig);  /* never in a child: blocked until reset */
	for (int i = 0; i < MAX_KIDS; i++) {
		pid_t pid = atomic_load(&kids[i]);

		if (pid > 0)
			kill(pid, SIGKILL);
	}
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	_exit(128 + sig);
}

/* Ctrl-C, kill, the terminal closed, Ctrl-\, stdout piped into a `head`
 * that has exited: each of them stops the lesson through on_stop(). */
static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
				    SIGPIPE };
#define NSTOP (sizeof stop_signals / sizeof stop_signals[0])

static void block_stop_signals(int how)
{
	sigset_t set;

	MP_CHECK(sigemptyset(&set));
	for (size_t i = 0; i < NSTOP; i++)
		MP_CHECK(sigaddset(&set, stop_signals[i]));
	MP_CHECK(sigprocmask(how, &set, NULL));
}

/* Process.start(): fork, then a pidfd for the child.  Signals are blocked
 * until the pid is in kids[], so a Ctrl-C never misses a child. */
static void proc_start(struct proc *p, int slot, void (*body)(int), int arg)
{
	block_stop_signals(SIG_BLOCK);
	pid_t pid = mp_fork();

	if (pid == 0) {
		/* Undo main()'s handler.  A Python child's SIGTERM is SIG_DFL
		 * too, which is why terminate() ends it. */
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		for (size_t i = 0; i < NSTOP; i++)
			MP_CHECK(sigaction(stop_signals[i], &dfl, NULL));
		block_stop_signals(SIG_UNBLOCK);
		/* Should the parent die on an error before it stops us,
		 * SIGALRM (default action: terminate) still ends us. */
		alarm(LIFETIME_S);
		body(arg);
		_exit(EXIT_FAILURE);  /* bodies do not return */
	}
	*p = (struct proc){ .pid = pid, .slot = slot };
	atomic_store(&kids[slot], pid);
	block_stop_signals(SIG_UNBLOCK);
	/* Our own unreaped child: its pid cannot be reused under us. */
	p->pidfd = pidfd_open(pid, 0);
	if (p->pidfd == -1 && errno == ENOSYS)  /* Linux < 5.3, valgrind */
		p->pidfd = mp_exit_fd(pid);     /* a stand-in: see mp_util.h */
	MP_CHECK(p->pidfd);
}

/* Wait until the child has exited, without reaping it: a pidfd polls
 * readable once the process is a zombie.  timeout_s < 0 waits forever. */
static bool proc_wait_exit(struct proc *p, double timeout_s)
{
	struct pollfd pfd = { .fd = p->pidfd, .events = POLLIN };
	int n;

	MP_CHECK(n = poll(&pfd, 1,
			  timeout_s < 0 ? -1 : (int)(timeout_s * 1e3 + 0.5)));
	return n == 1;
}

/* waitpid() and clear the child's kids[] entry with signals blocked: once
 * reaped, its pid is free for the kernel to give to someone else. */
static void proc_reap(struct proc *p, int flags)
{
	pid_t w;

	block_stop_signals(SIG_BLOCK);
	MP_CHECK(w = waitpid(p->pid, &p->status, flags));
	if (w == p->pid) {
		p->reaped = true;
		atomic_store(&kids[p->slot], 0);
	}
	block_stop_signals(SIG_UNBLOCK);
}

/* Process.join(timeout): true if the child has ended (and is reaped). */
static bool proc_join(struct proc *p, double timeout_s)
{
	if (!p->reaped && proc_wait_exit(p, timeout_s))
		proc_reap(p, 0);  /* it has exited: this does not block */
	return p->reaped;
}

/* Process.is_alive(): waitpid(WNOHANG) reaps the child if it has ended. */
static bool proc_is_alive(struct proc *p)
{
	if (!p->reaped)
		proc_reap(p, WNOHANG);
	return !p->reaped;
}

/* terminate() and kill().  Through the pidfd, never a recycled pid; like
 * Python, a child already gone is not an error. */
static void proc_signal(struct proc *p, int sig)
{
	if (!p->reaped && mp_pidfd_send_signal(p->pidfd, p->pid, sig) == -1 &&
	    errno != ESRCH)
		mp_die("pidfd_send_signal(%jd)", (intmax_t)p->pid);
}

/* Send sig, then join() for at most BOUND_S.  Should the child survive
 * that, SIGKILL it (which nothing can catch, block or ignore, so the last
 * join ends) and let the exit code tell.  Then drop the pidfd. */
static void proc_end(struct proc *p, int sig)
{
	proc_signal(p, sig);
	if (!proc_join(p, BOUND_S)) {
		proc_signal(p, SIGKILL);
		proc_join(p, -1);
	}
	MP_CHECK(close(p->pidfd));
}

/* Python's exitcode: the exit status, or -N when signal N killed it.  And
 * in how[], "exited with 3" or "killed by SIGTERM", for the narration. */
static int exitcode(const struct proc *p, char how[static 32])
{
	int sig = WTERMSIG(p->status);
	const char *name = sigabbrev_np(sig);

	if (!WIFSIGNALED(p->status)) {
		snprintf(how, 32, "exited with %d", WEXITSTATUS(p->status));
		return WEXITSTATUS(p->status);
	}
	snprintf(how, 32, "killed by SIG%s", name ? name : "?");
	return -sig;
}

/* The state letter in /proc/PID/stat (R, S, Z...), or 0 if there is no such
 * process.  The field follows "(comm)", and comm may hold ')' itself. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];

	snprintf(path, sizeof path, "/proc/%jd/stat", (intmax_t)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd == -1 && errno == ENOENT)
		return 0;
	MP_CHECK(fd);
	ssize_t n = read(fd, buf, sizeof buf - 1);

	MP_CHECK(n);
	MP_CHECK(close(fd));
	buf[n] = '\0';
	char *paren = strrchr(buf, ')');

	return paren && paren[1] == ' ' ? paren[2] : '?';
}

/* ---- the children ------------------------------------------------------ */

static void sleeper(int unused)
{
	(void)unused;
	for (;;)
		pause();  /* time.sleep(forever): only a signal ends it */
}

/* Handles SIGTERM: blocked, then fetched with sigwaitinfo(), which also says
 * who sent it.  Python: signal.signal(SIGTERM, handler) or SIG_IGN. */
static void stubborn(int fd)
{
	sigset_t term;
	siginfo_t info;

	MP_CHECK(sigemptyset(&term));
	MP_CHECK(sigaddset(&term, SIGTERM));
	MP_CHECK(sigprocmask(SIG_BLOCK, &term, NULL));
	pid_t ready = 0;  /* 0 = "ready"; then the pid of each sender */

	MP_CHECK(write(fd, &ready, sizeof ready));
	for (;;) {
		MP_CHECK(sigwaitinfo(&term, &info));
		MP_CHECK(write(fd, &info.si_pid, sizeof info.si_pid));
	}
}

static void quick(int code)
{
	_exit(code);
}

/* Read one pid_t from the stubborn child; -1 if it died instead, -2 if it
 * said nothing for 2 s (it answers in microseconds; no SIGTERM came, and a
 * lesson must not hang). */
static pid_t read_pid(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	pid_t v;
	ssize_t n;
	int r;

	MP_CHECK(r = poll(&pfd, 1, 2000));
	if (r == 0)
		return -2;
	MP_CHECK(n = read(fd, &v, sizeof v));
	return n == (ssize_t)sizeof v ? v : -1;
}

int main(int argc, char *argv[])
{
	double timeout = 0.2;
	long code = 7;
	const struct mp_opt opts[] = {
		MP_OPT_D("timeout", &timeout, 0.01, 60,
			 "seconds join(timeout) waits for a child that will "
			 "not end"),
		MP_OPT_L("code", &code, 0, 255,
			 "exit code of the child that ends by itself"),
	};
	struct sigaction sa = { .sa_handler = on_stop };
	struct proc p;
	char how[32];

	mp_parse_options(argc, argv, "join(timeout), is_alive(), terminate() "
			 "vs kill(), zombies, exit codes.",
			 opts, sizeof opts / sizeof opts[0]);
	MP_CHECK(sigfillset(&sa.sa_mask));
	for (size_t i = 0; i < NSTOP; i++)
		MP_CHECK(sigaction(stop_signals[i], &sa, NULL));

	/* 1. join(timeout) gives up on a sleeper; terminate() ends it. */
	proc_start(&p, 0, sleeper, 0);
	mp_say("parent", "1. sleeper %jd started; join(timeout=%.2f)",
	       (intmax_t)p.pid, timeout);
	int64_t t0 = mp_now_ns();
	bool ended = proc_join(&p, timeout);
	double waited_ms = (double)(mp_now_ns() - t0) / 1e6;
	bool alive1 = proc_is_alive(&p);

	mp_say("parent", "join returned after %.1f ms, is_alive()=%d, "
	       "exitcode=None", waited_ms, alive1);
	proc_end(&p, SIGTERM);
	int code1 = exitcode(&p, how);

	mp_say("parent", "terminate(): SIGTERM -> %s, exitcode=%d (a shell "
	       "shows %d)", how, code1, code1 < 0 ? 128 - code1 : code1);
	bool ok1 = !ended && alive1 && waited_ms >= timeout * 1e3 * 0.9;

	/* 2. A child that handles SIGTERM: terminate() asks, kill() insists. */
	int fds[2];

	MP_CHECK(pipe2(fds, O_CLOEXEC));
	proc_start(&p, 1, stubborn, fds[1]);
	MP_CHECK(close(fds[1]));  /* now EOF means: the child is gone */
	pid_t ready = read_pid(fds[0]);
	proc_signal(&p, SIGTERM);
	pid_t sender = read_pid(fds[0]);

	if (sender == -1)
		mp_say("parent", "2. stubborn %jd did NOT survive SIGTERM",
		       (intmax_t)p.pid);
	else if (sender == -2)
		mp_say("parent", "2. stubborn %jd reported NO SIGTERM within "
		       "2 s", (intmax_t)p.pid);
	else
		mp_say("parent", "2. stubborn %jd got SIGTERM from %jd and "
		       "carries on", (intmax_t)p.pid, (intmax_t)sender);
	ended = proc_join(&p, timeout);
	bool alive2 = proc_is_alive(&p);

	mp_say("parent", "after terminate + join(%.2f): is_alive()=%d",
	       timeout, alive2);
	proc_end(&p, SIGKILL);  /* cannot be caught, blocked or ignored */
	int code2 = exitcode(&p, how);

	mp_say("parent", "kill(): SIGKILL -> %s, exitcode=%d", how, code2);
	MP_CHECK(close(fds[0]));
	bool ok2 = ready == 0 && sender == getpid() && !ended && alive2;

	/* 3. A child that exits on its own is a zombie until it is reaped: its
	 *    pid and exit status wait for the parent.  In Python it stays one
	 *    until something calls Popen.poll() on it: join(), is_alive(),
	 *    reading exitcode, active_children(), or the next start() of any
	 *    Process, which first runs _cleanup() over all of them
	 *    (Lib/multiprocessing/process.py). */
	proc_start(&p, 2, quick, (int)code);
	bool exited = proc_wait_exit(&p, BOUND_S);  /* exited, not reaped */
	char before = proc_state(p.pid);

	mp_say("parent", "3. quick %jd has %sexited, not reaped: "
	       "/proc/%jd/stat state '%c'%s", (intmax_t)p.pid,
	       exited ? "" : "NOT ", (intmax_t)p.pid, before ? before : '-',
	       before == 'Z' ? " (zombie)" : "");
	bool alive3 = proc_is_alive(&p);  /* waitpid(WNOHANG) reaps it */
	char after = proc_state(p.pid);

	proc_end(&p, SIGKILL);  /* only if it is still there; closes pidfd */
	int code3 = exitcode(&p, how);

	mp_say("parent", "is_alive()=%d reaped it: exitcode=%d; /proc/%jd is "
	       "%s", alive3, code3, (intmax_t)p.pid,
	       after ? "still there" : "gone");
	bool ok3 = exited && before == 'Z' && !alive3 && after == 0;

	/* 4. The verdict: what we saw against what signals must do. */
	bool ok = ok1 && ok2 && ok3 && code1 == -SIGTERM &&
		  code2 == -SIGKILL && code3 == code;

	printf("result: exitcodes %d %d %d (expected %d %d %ld), SIGTERM %s, "
	       "zombie %c then %s %s\n", code1, code2, code3, -SIGTERM,
	       -SIGKILL, code, ok2 ? "survived" : "NOT survived",
	       before ? before : '-', after ? "still there" : "gone",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
