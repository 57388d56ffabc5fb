/* 0_basics/creating_process.c -- Process(target, args, name) in C:
 *                                start, join, pid, exitcode
 *
 * Python:  p = Process(target=greet, args=("world",), name="greeter")
 *          p.start(); p.pid; p.join(); p.exitcode
 *          With the "fork" start method (Linux's default before 3.14),
 *          Popen in Lib/multiprocessing/popen_fork.py flushes sys.stdout and
 *          sys.stderr, calls os.fork(), and the child runs
 *          process_obj._bootstrap() (run(), then flush the std streams) and
 *          leaves with os._exit(code) from a finally: block.  Since 3.13
 *          the child first clears the atexit handlers it inherited, and runs
 *          its own ones (atexit._run_exitfuncs()) just before os._exit
 *          (gh-83856): the parent's handlers never run twice, the child's
 *          do run -- what exit() does in C, without exit()'s second flush
 *          of stdio buffers copied from the parent (step 4).  join() ends in
 *          os.waitpid(); exitcode is WEXITSTATUS, or -WTERMSIG when a signal
 *          killed the child (-9 for SIGKILL).  Process.name is an attribute
 *          of the object only ("Process-1" by default): the kernel never hears
 *          of it, so ps lists each child under its parent's name (python3);
 *          the stdlib has no call for that (third-party setproctitle does).
 * C:       struct process below: fork, getpid/getppid, prctl(PR_SET_NAME),
 *          _exit (vs exit), waitpid, WIFEXITED/WEXITSTATUS/WIFSIGNALED/WTERMSIG
 * Usage:   creating_process [--name S (greeter)] [--who S (world)]
 *            [--nap MS (0, 0..600000): how long greet() works]
 * Output:  (long lines folded)
 *   [parent 998 +0.0ms] Process(target=greet, args=('world',),
 *                       name='greeter').start()
 *   [parent 998 +0.1ms] <Process name='greeter' pid=1000 parent=998 started>
 *   [child 1000 +0.2ms] hello world: pid 1000, parent 998, kernel name
 *                       'greeter'
 *   [parent 998 +0.2ms] <Process name='greeter' pid=1000 parent=998 stopped
 *                       exitcode=0>
 *   [parent 998 +0.4ms] <Process name='exit-263' pid=1001 parent=998 stopped
 *                       exitcode=7>
 *   [parent 998 +0.5ms] waitpid(WNOHANG) returned 0 -> exitcode None
 *   [parent 998 +0.5ms] <Process name='sleeper' pid=1002 parent=998 started>
 *   [parent 998 +0.6ms] <Process name='sleeper' pid=1002 parent=998 stopped
 *                       exitcode=-SIGKILL>
 *   [parent 998 +1.0ms] child called exit(): the line arrived 2 times;
 *                       _exit(): 1 time
 *   result: greeter 0, return 263 -> 7, SIGKILL -> -9, exit() 2x, _exit() 1x OK
 * Try this: --name a-very-long-process-name (the kernel keeps 15 bytes);
 *   --nap 30000 and run "ps -o pid,ppid,comm" in another terminal; delete
 *   the join of step 1: exitcode stays None and the verdict says MISMATCH;
 *   delete the kill() of step 3: SIGALRM ends the sleeper after 2 s, -14.
 */
#define _GNU_SOURCE  /* sigabbrev_np(): "KILL" for 9, as Python's repr shows */
#include "mp.h"

#include <sys/prctl.h>

struct process {
	const char *name;                             /* Process(name=)   */
	int (*target)(const struct process *self);    /* Process(target=) */
	const char *args;                             /* Process(args=)   */
	long nap_ms;                                  /* greet()'s work   */
	pid_t parent_pid;  /* who made it (Python: self._parent_pid) */
	pid_t pid;         /* .pid: 0 until start() */
	bool done;         /* .exitcode is None until done */
	int exitcode;
};

/* start(): what popen_fork.py does, in C. */
static void process_start(struct process *p)
{
	p->parent_pid = getpid();
	/* Flush first, or the child inherits our unwritten output and writes
	 * it a second time (step 4 shows it happen). */
	if (fflush(stdout) == EOF || fflush(stderr) == EOF)
		mp_die("fflush");
	p->pid = fork();
	if (p->pid == -1)
		mp_die("fork");
	if (p->pid == 0) {
		/* The kernel's name for this process: ps, top, /proc/PID/comm.
		 * At most 15 bytes; longer names are cut. */
		MP_CHECK(prctl(PR_SET_NAME, p->name, 0, 0, 0));
		int code = p->target(p);

		/* _bootstrap() ends with util._flush_std_streams() */
		if (fflush(stdout) == EOF)
			code = 1;
		_exit(code);  /* never return into the parent's main() */
	}
}

/* join() (flags 0) or a poll (WNOHANG): decode the status as Popen.poll(). */
static bool process_wait(struct process *p, int flags)
{
	int status;
	pid_t r;

	while ((r = waitpid(p->pid, &status, flags)) == -1 && errno == EINTR)
		;
	if (r == -1)
		mp_die("waitpid(%jd)", (intmax_t)p->pid);
	if (r == 0)
		return false;  /* still running: exitcode None */
	if (WIFEXITED(status))
		p->exitcode = WEXITSTATUS(status);  /* low 8 bits of _exit() */
	else if (WIFSIGNALED(status))
		p->exitcode = -WTERMSIG(status);    /* Python's negative code */
	p->done = true;
	return true;
}

/* Process.exitcode: a number once reaped, else None. */
static const char *exitcode(const struct process *p, char buf[16])
{
	if (!p->done)
		return "None";
	snprintf(buf, 16, "%d", p->exitcode);
	return buf;
}

/* Process.__repr__, close enough. */
static void show(const struct process *p)
{
	char code[32] = "";

	if (p->done && p->exitcode < 0 && sigabbrev_np(-p->exitcode))
		snprintf(code, sizeof code, " exitcode=-SIG%s",
			 sigabbrev_np(-p->exitcode));
	else if (p->done)
		snprintf(code, sizeof code, " exitcode=%d", p->exitcode);
	mp_say("parent", "<Process name='%s' pid=%jd parent=%jd %s%s>", p->name,
	       (intmax_t)p->pid, (intmax_t)p->parent_pid,
	       p->done ? "stopped" : "started", code);
}

/* The targets.  Python's target gets *args; this one gets the whole object,
 * as current_process() gives it in a Python child. */
static int greet(const struct process *self)
{
	char comm[16] = "";  /* the kernel's limit: 15 bytes and a NUL */

	MP_CHECK(prctl(PR_GET_NAME, comm, 0, 0, 0));
	mp_say("child", "hello %s: pid %jd, parent %jd, kernel name '%s'",
	       self->args, (intmax_t)getpid(), (intmax_t)getppid(), comm);
	struct timespec nap = { .tv_sec = self->nap_ms / 1000,
				.tv_nsec = self->nap_ms % 1000 * 1000000 };

	if (self->nap_ms > 0)
		MP_CHECK(nanosleep(&nap, NULL));
	/* The checks travel back in the exit code, all that join() sees. */
	return getppid() == self->parent_pid &&
	       strncmp(comm, self->name, sizeof comm - 1) == 0 ? 0 : 1;
}

static int exit_263(const struct process *self)
{
	(void)self;
	return 263;  /* sys.exit(263): only 263 & 0xff = 7 reaches the parent */
}

static int sleep_forever(const struct process *self)
{
	(void)self;
	alarm(2);   /* a bound: SIGALRM (-14) ends it if no SIGKILL comes */
	pause();    /* returns only after a handled signal: none here */
	return 1;
}

/* Write one line into a fully buffered stdio stream on a pipe, leave it
 * unflushed, fork, and let the child leave with exit() or _exit().  Returns
 * how many times the line came out of the pipe (-1 if the child failed). */
static int copies_written(bool child_calls_exit)
{
	static const char line[] = "written once, before fork()\n";
	char buf[512];
	size_t len = 0;
	ssize_t n;
	int fd[2], copies = 0;

	MP_CHECK(pipe(fd));
	FILE *f = fdopen(fd[1], "w");
	if (!f)
		mp_die("fdopen");
	/* Full buffering, what stdio gives every stream that is not a
	 * terminal: stdout under ctest, "| less" or "> log". */
	if (setvbuf(f, NULL, _IOFBF, BUFSIZ) != 0 || fputs(line, f) == EOF)
		mp_die("setvbuf/fputs");
	if (fflush(stdout) == EOF)  /* our narration, not f: f is the demo */
		mp_die("fflush");
	pid_t pid = fork();
	if (pid == -1)
		mp_die("fork");
	if (pid == 0) {
		if (child_calls_exit)
			exit(0);  /* flushes every stdio buffer: f's copy too */
		_exit(0);         /* leaves the buffers alone */
	}
	int status = mp_waitpid(pid);

	if (fclose(f) == EOF)  /* our own copy goes out; the write end closes */
		mp_die("fclose");
	while ((n = read(fd[0], buf + len, sizeof buf - 1 - len)) != 0) {
		if (n == -1 && errno != EINTR)
			mp_die("read");
		if (n > 0)
			len += (size_t)n;
		if (len == sizeof buf - 1)
			break;
	}
	MP_CHECK(close(fd[0]));
	buf[len] = '\0';
	for (const char *s = buf; (s = strstr(s, line)) != NULL;
	     s += strlen(line))
		copies++;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? copies : -1;
}

int main(int argc, char *argv[])
{
	const char *name = "greeter", *who = "world";
	long nap_ms = 0;
	const struct mp_opt opts[] = {
		MP_OPT_S("name", &name,
			 "the child's name, like Process(name=...)"),
		MP_OPT_S("who", &who,
			 "whom it greets, like Process(args=(...,))"),
		MP_OPT_L("nap", &nap_ms, 0, 600000,
			 "milliseconds the greeter works before it returns"),
	};

	mp_parse_options(argc, argv, "Python's Process(target, args, name), "
			 "start, join, pid and exitcode in C.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();  /* Ctrl-C: stop, reap the children, exit 130 */

	/* 1. Process(target=greet, args=(who,), name=name).start(), .join() */
	struct process greeter = { .name = name, .target = greet, .args = who,
				   .nap_ms = nap_ms };
	mp_say("parent", "Process(target=greet, args=('%s',), name='%s')"
	       ".start()", who, name);
	process_start(&greeter);
	show(&greeter);  /* .pid is known at once; exitcode is None */
	process_wait(&greeter, 0);
	show(&greeter);

	/* 2. The exit code is 8 bits: a target that returns 263 gives 7. */
	struct process big = { .name = "exit-263", .target = exit_263 };
	process_start(&big);
	process_wait(&big, 0);
	show(&big);

	/* 3. Killed by a signal: WIFSIGNALED, and exitcode -WTERMSIG. */
	struct process sleeper = { .name = "sleeper", .target = sleep_forever };
	process_start(&sleeper);
	bool was_running = !process_wait(&sleeper, WNOHANG);
	mp_say("parent", "waitpid(WNOHANG) returned %s -> exitcode %s",
	       was_running ? "0" : "its pid", was_running ? "None" : "set");
	show(&sleeper);
	MP_CHECK(kill(sleeper.pid, SIGKILL));  /* Process.kill() */
	process_wait(&sleeper, 0);
	show(&sleeper);

	/* 4. exit() vs _exit() in a child.  exit() runs the atexit handlers
	 * (the parent's, inherited) and flushes every stdio buffer: the
	 * parent's unwritten data, copied by fork(), goes out twice.  _exit()
	 * goes straight to the kernel. */
	int twice = copies_written(true), once = copies_written(false);
	mp_say("parent", "child called exit(): the line arrived %d times; "
	       "_exit(): %d time", twice, once);

	char g[16], b[16], k[16];

	/* done: join() reaped it; an exitcode nobody collected is None. */
	bool ok = greeter.done && greeter.exitcode == 0 && big.done &&
		  big.exitcode == 7 && was_running && sleeper.done &&
		  sleeper.exitcode == -SIGKILL && twice == 2 && once == 1;
	printf("result: greeter %s, return 263 -> %s, SIGKILL -> %s, "
	       "exit() %dx, _exit() %dx %s\n", exitcode(&greeter, g),
	       exitcode(&big, b), exitcode(&sleeper, k), twice, once,
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
