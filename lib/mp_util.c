/* lib/mp_util.c -- see mp_util.h */
#define _GNU_SOURCE
#include "mp_util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <mqueue.h>
#include <semaphore.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t main_pid;
static int64_t start_ns;

/* Runs before main(): the program's own pid and the narration clock's
 * origin.  Forked children inherit both, which is what lets them tell that
 * they are children and print times on the parent's scale. */
__attribute__((constructor)) static void mp_util_init(void)
{
	main_pid = getpid();
	start_ns = mp_now_ns();
	/* Started with stdin, stdout or stderr closed (`lesson >&-`), the
	 * first descriptor the program opens would become 1, and the
	 * narration would go into a pipe, an eventfd or a queue.  Fill the
	 * gaps with /dev/null first. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF &&
		    open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) != fd)
			_exit(EXIT_FAILURE);  /* cannot happen: fd was free */
}

bool mp_is_main_process(void)
{
	return getpid() == main_pid;
}

/* ---- errors ----------------------------------------------------------- */

static void stop_children_and_clean_up(void);

/* err 0: a failure that no call reported, printed without an errno. */
static _Noreturn void die_msg(int err, const char *msg)
{
	if (err)
		fprintf(stderr, "%s: %s: %s (%s)\n",
			program_invocation_short_name, msg, mp_errname(err),
			strerror(err));
	else
		fprintf(stderr, "%s: %s\n", program_invocation_short_name,
			msg);
	/* An error exit leaves nothing behind either: no child, no name. */
	stop_children_and_clean_up();
	if (mp_is_main_process())
		exit(EXIT_FAILURE);
	fflush(stdout);  /* the child's own lines; never the parent's */
	_exit(EXIT_FAILURE);
}

void mp_die(const char *fmt, ...)
{
	int err = errno;  /* before vsnprintf can change it */
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	die_msg(err, msg);
}

void mp_die_en(int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	die_msg(err, msg);
}

void mp_fail(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	die_msg(0, msg);
}

const char *mp_errname(int err)
{
	const char *name = err ? strerrorname_np(err) : "0";

	return name ? name : "?";
}

/* ---- narration -------------------------------------------------------- */

static void stop_and_exit(int status);

/* Writing to stdout failed.  EPIPE: the reader went away (`lesson | head`,
 * in a program that ignores SIGPIPE): end quietly, as the SIGPIPE handler
 * of mp_stop_on_signals() would.  Anything else is an error to report. */
static void stdout_failed(void)
{
	if (errno == EPIPE)
		stop_and_exit(128 + SIGPIPE);
	mp_die("writing to stdout");
}

int64_t mp_now_ns(void)
{
	struct timespec ts;

	/* Cannot fail with a valid clock id and pointer; checked anyway. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		mp_die("clock_gettime");
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double mp_elapsed_s(int64_t since_ns)
{
	return (double)(mp_now_ns() - since_ns) / 1e9;
}

/* ---- waiting and CPU-bound work --------------------------------------- */

struct timespec mp_deadline(clockid_t clock, double seconds)
{
	struct timespec t;

	MP_CHECK(clock_gettime(clock, &t));
	int64_t ns = t.tv_nsec + (int64_t)(seconds * 1e9);

	t.tv_sec += ns / 1000000000;
	t.tv_nsec = ns % 1000000000;
	if (t.tv_nsec < 0) {  /* a negative `seconds`: a deadline passed */
		t.tv_nsec += 1000000000;
		t.tv_sec--;
	}
	return t;
}

bool mp_mutex_destroy(pthread_mutex_t *m)
{
	int err = pthread_mutex_destroy(m);

	if (err != 0 && err != EBUSY)
		mp_die_en(err, "pthread_mutex_destroy");
	if (err == EBUSY)
		mp_say("parent", "pthread_mutex_destroy: EBUSY, still locked");
	return err == 0;
}

uint64_t mp_lcg(uint64_t x, uint64_t n)
{
	for (uint64_t k = 0; k < n; k++)
		x = x * MP_LCG_A + MP_LCG_C;
	return x;
}

uint64_t mp_lcg_jump(uint64_t x, uint64_t n)
{
	/* (a, c) is the step x -> a x + c applied so far; (sa, sc) the step
	 * applied 2^k times, squared at each bit of n. */
	uint64_t a = 1, c = 0, sa = MP_LCG_A, sc = MP_LCG_C;

	for (; n; n >>= 1) {
		if (n & 1) {
			a *= sa;
			c = sa * c + sc;
		}
		sc = sa * sc + sc;
		sa *= sa;
	}
	return a * x + c;
}

void mp_say(const char *role, const char *fmt, ...)
{
	char line[1024];
	double ms = (double)(mp_now_ns() - start_ns) / 1e6;
	int len = snprintf(line, sizeof line, "[%s %jd +%.1fms] ", role,
			   (intmax_t)getpid(), ms);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
	va_end(ap);
	/* One fputs of the whole line: several processes share this stdout. */
	if (fputs(line, stdout) == EOF || fputc('\n', stdout) == EOF ||
	    fflush(stdout) == EOF)
		stdout_failed();
}

/* ---- options ---------------------------------------------------------- */

static _Noreturn void usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_invocation_short_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help' for more information.\n",
		program_invocation_short_name);
	exit(2);
}

static void print_usage(const char *summary, const struct mp_opt *opts,
			size_t n)
{
	printf("Usage: %s [options]\n%s\n\nOptions:\n",
	       program_invocation_short_name, summary);
	for (size_t i = 0; i < n; i++) {
		const struct mp_opt *o = &opts[i];
		char left[64];

		if (!o->help)
			continue;
		switch (o->kind) {
		case MP_OPT_LONG:
			snprintf(left, sizeof left, "--%s N", o->name);
			printf("  %-22s %s (default %ld, range %.0f..%.0f)\n",
			       left, o->help, *(long *)o->value, o->min,
			       o->max);
			break;
		case MP_OPT_DOUBLE:
			snprintf(left, sizeof left, "--%s X", o->name);
			printf("  %-22s %s (default %g, range %g..%g)\n", left,
			       o->help, *(double *)o->value, o->min, o->max);
			break;
		case MP_OPT_FLAG:
			snprintf(left, sizeof left, "--%s", o->name);
			printf("  %-22s %s\n", left, o->help);
			break;
		case MP_OPT_STRING: {
			const char *def = *(const char **)o->value;

			snprintf(left, sizeof left, "--%s S", o->name);
			printf("  %-22s %s (default %s)\n", left, o->help,
			       def ? def : "none");
			break;
		}
		}
	}
	printf("  %-22s %s\n", "-h, --help", "print this help and exit");
	if (fflush(stdout) == EOF)
		mp_die("writing to stdout");
}

static void set_value(const struct mp_opt *o, const char *text)
{
	char *end;

	errno = 0;
	if (o->kind == MP_OPT_STRING) {
		*(const char **)o->value = text;
		return;
	}
	/* strtol and strtod skip leading blanks: ' 5' would pass. */
	bool blank = isspace((unsigned char)text[0]);

	if (o->kind == MP_OPT_LONG) {
		long v = strtol(text, &end, 10);

		if (blank || end == text || *end != '\0' || errno == ERANGE)
			usage_error("--%s: '%s' is not a whole number",
				    o->name, text);
		if ((double)v < o->min || (double)v > o->max)
			usage_error("--%s: %ld is out of range %.0f..%.0f",
				    o->name, v, o->min, o->max);
		*(long *)o->value = v;
		return;
	}
	double v = strtod(text, &end);

	if (blank || end == text || *end != '\0' || errno == ERANGE ||
	    !isfinite(v))
		usage_error("--%s: '%s' is not a number", o->name, text);
	if (v < o->min || v > o->max)
		usage_error("--%s: %g is out of range %g..%g", o->name, v,
			    o->min, o->max);
	*(double *)o->value = v;
}

void mp_parse_options(int argc, char *argv[], const char *summary,
		      const struct mp_opt *opts, size_t n)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			print_usage(summary, opts, n);
			exit(EXIT_SUCCESS);
		}
		if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
			usage_error("unexpected argument '%s'", arg);

		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct mp_opt *o = NULL;

		for (size_t k = 0; k < n && !o; k++)
			if (strlen(opts[k].name) == len &&
			    strncmp(opts[k].name, name, len) == 0)
				o = &opts[k];
		if (!o)
			usage_error("unknown option '%s'", arg);
		if (o->kind == MP_OPT_FLAG) {
			if (eq)
				usage_error("--%s takes no value", o->name);
			*(bool *)o->value = true;
		} else if (eq) {
			set_value(o, eq + 1);
		} else if (i + 1 < argc) {
			set_value(o, argv[++i]);
		} else {
			usage_error("--%s needs a value", o->name);
		}
	}
}

/* ---- children --------------------------------------------------------- */

int mp_waitpid(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			mp_die("waitpid(%jd)", (intmax_t)pid);
	return status;
}

int mp_wait_all(void)
{
	int reaped = 0, bad = 0, status;
	pid_t pid;

	for (;;) {
		pid = waitpid(-1, &status, 0);
		if (pid == -1) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				break;
			mp_die("waitpid(-1)");
		}
		reaped++;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			continue;
		bad++;
		if (WIFEXITED(status))
			fprintf(stderr, "%s: child %jd exited with status %d\n",
				program_invocation_short_name, (intmax_t)pid,
				WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			fprintf(stderr, "%s: child %jd was killed by %s\n",
				program_invocation_short_name, (intmax_t)pid,
				sigabbrev_np(WTERMSIG(status)) ?
				sigabbrev_np(WTERMSIG(status)) : "a signal");
	}
	if (bad)
		mp_fail("%d of %d children failed", bad, reaped);
	return reaped;
}

/* The children this process made with mp_fork(), so that a stop can find
 * them without opening a file (with no descriptor left, EMFILE) and on a
 * kernel without /proc/PID/task/TID/children.  A slot holds a pid until the
 * stop handler finds it reaped; a full table falls back on /proc. */
enum { MAX_TRACKED = 1024 };
static pid_t tracked[MAX_TRACKED];
static _Atomic int ntracked;
static _Atomic pid_t twin_group;  /* a running Python twin's group, or 0 */

static void track_child(pid_t pid)
{
	int n = atomic_load(&ntracked);

	for (int i = 0; i < n; i++) {  /* reuse the slot of a reaped child */
		siginfo_t si;

		/* WNOWAIT: look, never reap; a zombie stays for the lesson. */
		if (waitid(P_PID, (id_t)tracked[i], &si,
			   WEXITED | WNOHANG | WNOWAIT) == -1 &&
		    errno == ECHILD) {
			tracked[i] = pid;
			return;
		}
	}
	if (n < MAX_TRACKED) {
		tracked[n] = pid;
		atomic_store(&ntracked, n + 1);  /* after the slot is written */
	}
}

pid_t mp_fork(void)
{
	pid_t parent = getpid();

	if (fflush(stdout) == EOF)
		mp_die("fflush(stdout)");
	pid_t pid = fork();

	if (pid == -1)
		mp_die("fork");
	if (pid > 0) {
		track_child(pid);
		return pid;
	}
	/* The child: its parent's children are not its own. */
	atomic_store(&ntracked, 0);
	atomic_store(&twin_group, 0);
	/* If the parent dies without stopping us (SIGKILL), we get SIGTERM
	 * and stop too, instead of running on as an orphan.  The parent may
	 * have died between fork() and prctl(): then getppid() is no longer
	 * the pid saved before fork(), and no signal would ever come. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		mp_die("prctl(PR_SET_PDEATHSIG)");
	if (getppid() != parent)
		_exit(128 + SIGTERM);
	return 0;
}

const char *mp_self_exe(void)
{
	static char path[4096];

	if (path[0] == '\0') {
		ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);

		if (n <= 0 || (size_t)n == sizeof path - 1)
			mp_die("readlink /proc/self/exe");
		path[n] = '\0';
	}
	return path;
}

void mp_reexec_with_env(char *argv[], const char *name, const char *value)
{
	if (getenv(name))
		return;
	MP_CHECK(setenv(name, value, 1));
	execv(mp_self_exe(), argv);
	mp_die("execv %s", mp_self_exe());
}

/* ---- a descriptor for a child's end ------------------------------------ */

struct exit_watch { pid_t pid; int efd; };

static void *watch_exit(void *arg)
{
	struct exit_watch w = *(struct exit_watch *)arg;
	siginfo_t si;
	uint64_t one = 1;

	free(arg);
	/* Blocks until the child ends; ECHILD if it is (already) reaped. */
	while (waitid(P_PID, (id_t)w.pid, &si, WEXITED | WNOWAIT) == -1 &&
	       errno == EINTR)
		;
	/* Readable from now on, like a pidfd.  (Not a pipe's EOF: a copy
	 * of the write end in a process forked later would hold it off.)
	 * The thread has its own descriptor for it: the caller may have
	 * closed its one already, and its number may now be another file. */
	if (write(w.efd, &one, sizeof one) == -1) {
		/* cannot fail: the counter is far from its limit */
	}
	close(w.efd);
	return NULL;
}

int mp_exit_fd(pid_t pid)
{
	struct exit_watch *w = malloc(sizeof *w);
	pthread_t t;
	pthread_attr_t a;
	sigset_t all, old;
	int efd;

	if (!w)
		return -1;
	if ((efd = eventfd(0, EFD_CLOEXEC)) == -1) {
		free(w);
		return -1;
	}
	*w = (struct exit_watch){ pid, fcntl(efd, F_DUPFD_CLOEXEC, 0) };
	if (w->efd == -1) {
		close(efd);
		free(w);
		return -1;
	}
	/* The thread takes no signal: they stay with the lesson's thread. */
	int err = sigfillset(&all) == -1 ? errno
		  : pthread_sigmask(SIG_SETMASK, &all, &old);

	if (!err && !(err = pthread_attr_init(&a))) {
		err = pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (!err)
			err = pthread_create(&t, &a, watch_exit, w);
		pthread_attr_destroy(&a);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (err) {
		close(w->efd);
		close(efd);
		free(w);
		errno = err;
		return -1;
	}
	return efd;
}

int mp_pidfd_open(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	return fd == -1 && errno == ENOSYS ? mp_exit_fd(pid) : fd;
}

int mp_pidfd_send_signal(int pidfd, pid_t pid, int sig)
{
	if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0)
		return 0;
	return errno == ENOSYS ? kill(pid, sig) : -1;
}

/* ---- IPC names and a clean stop --------------------------------------- */

void mp_ipc_name(char *buf, size_t size, const char *what)
{
	/* The pid tells whose object it is; the random part makes the name
	 * impossible to guess, so nobody can create it first and make our
	 * O_EXCL open fail (Python's names carry random characters too:
	 * "/psm_" + token_hex in shared_memory.py, "/mp-" + random in
	 * synchronize.py). */
	uint32_t r;

	if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
		mp_die("getrandom");
	snprintf(buf, size, "/mpp-%s-%s-%jd-%08" PRIx32,
		 program_invocation_short_name, what, (intmax_t)getpid(), r);
}

enum { MAX_CLEANUPS = 16 };

static struct cleanup {
	void (*fn)(void *);
	void *arg;
	pid_t owner;  /* the process that registered it; children inherit the
			 table but must not unlink their parent's objects */
} cleanups[MAX_CLEANUPS];
/* A lock-free atomic: the handler reads it at any moment, and sees an
 * entry only after every field of it was written (C11 7.17.4: sequentially
 * consistent stores are not reordered, and a lock-free atomic is
 * async-signal-safe). */
static _Atomic int ncleanups;

int mp_atcleanup(void (*fn)(void *), void *arg)
{
	int n = atomic_load(&ncleanups);

	if (n == MAX_CLEANUPS) {
		errno = ENOMEM;
		return -1;
	}
	cleanups[n] = (struct cleanup){ fn, arg, getpid() };
	atomic_store(&ncleanups, n + 1);  /* now the handler may run it */
	return 0;
}

int mp_cancel_cleanup(void (*fn)(void *), void *arg)
{
	for (int i = atomic_load(&ncleanups) - 1; i >= 0; i--) {
		if (cleanups[i].fn != fn || cleanups[i].arg != arg ||
		    cleanups[i].owner != getpid())
			continue;
		cleanups[i].fn = NULL;  /* a hole: skipped by the handler */
		while (atomic_load(&ncleanups) > 0 &&
		       cleanups[atomic_load(&ncleanups) - 1].fn == NULL)
			atomic_fetch_sub(&ncleanups, 1);
		return 0;
	}
	errno = ENOENT;
	return -1;
}

/* shm_unlink, sem_unlink and mq_unlink are not on POSIX's list of
 * async-signal-safe functions (signal-safety(7)).  In glibc each is an
 * unlink(2) of a file under /dev/shm (or the mq_unlink(2) system call),
 * with no lock and no allocation, so they are safe there in practice: we
 * rely on that, and say so. */
void mp_cleanup_shm(void *name)
{
	shm_unlink(name);  /* best effort: it may be gone already */
}

void mp_cleanup_sem(void *name)
{
	sem_unlink(name);
}

void mp_cleanup_mq(void *name)
{
	mq_unlink(name);
}

/* Two descriptors kept open for the stop handler, which closes them before
 * it reads /proc: with every other descriptor in use (EMFILE), it can still
 * find children that mp_fork() did not make. */
static int reserve_fd[2] = { -1, -1 };

/* Digits of a non-negative number, for the signal handler below, where
 * snprintf() is not allowed (it is not async-signal-safe). */
static long parse_pid(const char **p)
{
	long v = -1;

	while (**p == ' ' || **p == '\n')
		(*p)++;
	for (; **p >= '0' && **p <= '9'; (*p)++)
		v = (v < 0 ? 0 : v * 10) + (**p - '0');
	return v;
}

/* Send sig to one child, and SIGCONT after it: a stopped process (SIGSTOP,
 * Ctrl-Z) keeps a SIGTERM pending until it is continued.  A child that
 * leads its own process group (a Python twin, see mp_run_twin) gets both
 * group-wide, so its own workers stop too. */
static void signal_child(pid_t pid, int sig)
{
	pid_t target = getpgid(pid) == pid ? -pid : pid;

	kill(target, sig);
	if (sig != SIGKILL)
		kill(target, SIGCONT);
}

/* Send sig to every child of every thread of this process: those mp_fork()
 * made, from the table, and any other, from /proc/self/task/TID/children.
 * Only async-signal-safe calls here: waitpid, kill, open, read, close and
 * the raw getdents64 (opendir() may allocate). */
static void signal_children(int sig)
{
	char buf[4096];

	for (int i = 0; i < atomic_load(&ntracked); i++)
		/* Still our child?  Then its pid cannot have been reused. */
		if (tracked[i] != 0 && waitpid(tracked[i], NULL, WNOHANG) == 0)
			signal_child(tracked[i], sig);
	for (int i = 0; i < 2; i++)
		if (reserve_fd[i] != -1) {
			close(reserve_fd[i]);
			reserve_fd[i] = -1;
		}
	int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd == -1)
		return;
	for (;;) {
		long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);

		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			char path[300], list[4096];
			size_t k = strlen(d->d_name);

			off += d->d_reclen;
			if (d->d_name[0] == '.')
				continue;
			memcpy(path, d->d_name, k);
			memcpy(path + k, "/children", sizeof "/children");
			int fd = openat(dfd, path, O_RDONLY | O_CLOEXEC);

			if (fd == -1)
				continue;
			ssize_t len = read(fd, list, sizeof list - 1);

			close(fd);
			if (len <= 0)
				continue;
			list[len] = '\0';
			const char *p = list;

			for (long pid; (pid = parse_pid(&p)) > 0;)
				signal_child((pid_t)pid, sig);
		}
	}
	close(dfd);
}

/* Stop and reap every child (each does the same for its own), wait for a
 * Python twin's whole group, then run the cleanups this process
 * registered.  Async-signal-safe. */
static void stop_children_and_clean_up(void)
{
	/* SIGTERM (with SIGCONT) at once and every half second, as the kernel's
	 * children list may miss a child that forks or exits while it is read;
	 * SIGKILL after 2 s for a child that ignores or blocks SIGTERM.  A
	 * group leader (a shell's job) also sends SIGTERM to its whole group,
	 * which reaches children nobody could list (no /proc, no descriptor);
	 * the stop signals are blocked here, so it does not stop us. */
	bool leader = getpgrp() == getpid();

	mp_block_stop_signals(NULL);
	for (int round = 0;; round++) {
		pid_t r;

		if (round % 50 == 0 || round == 200)
			signal_children(round >= 200 ? SIGKILL : SIGTERM);
		if (leader && round % 50 == 25)
			kill(0, SIGTERM);
		while ((r = waitpid(-1, NULL, WNOHANG | __WALL)) > 0)
			;
		if (r == -1 && errno == ECHILD)
			break;
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	/* python3 is reaped, but the workers it forked may still be exiting:
	 * wait until its process group is empty. */
	pid_t group = atomic_load(&twin_group);

	for (int round = 0; group > 0 && kill(-group, 0) == 0; round++) {
		if (round % 50 == 0 || round == 200)
			kill(-group, round >= 200 ? SIGKILL : SIGTERM);
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	pid_t self = getpid();

	for (int i = atomic_load(&ncleanups) - 1; i >= 0; i--)
		if (cleanups[i].fn && cleanups[i].owner == self)
			cleanups[i].fn(cleanups[i].arg);
}

static void stop_and_exit(int status)
{
	stop_children_and_clean_up();
	_exit(status);
}

static void on_stop_signal(int sig)
{
	stop_and_exit(128 + sig);
}

/* The signals that end a lesson: Ctrl-C, kill, the terminal closed,
 * Ctrl-\, and a closed pipe on stdout (`lesson | head`). */
static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT,
				    SIGPIPE };
enum { NSTOP = sizeof stop_signals / sizeof stop_signals[0] };

int mp_block_stop_signals(sigset_t *old)
{
	sigset_t set;

	if (sigemptyset(&set) == -1)
		return -1;
	for (int i = 0; i < NSTOP; i++)
		if (sigaddset(&set, stop_signals[i]) == -1)
			return -1;
	int err = pthread_sigmask(SIG_BLOCK, &set, old);

	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

int mp_stop_signalfd(sigset_t *set)
{
	int fd;

	MP_CHECK(sigemptyset(set));
	for (int i = 0; i < NSTOP; i++)
		if (stop_signals[i] != SIGPIPE)
			MP_CHECK(sigaddset(set, stop_signals[i]));
	MP_CHECK(sigprocmask(SIG_BLOCK, set, NULL));
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		mp_die("signal(SIGPIPE)");
	MP_CHECK(fd = signalfd(-1, set, SFD_CLOEXEC));
	return fd;
}

int mp_restore_signals(const sigset_t *old)
{
	int err = pthread_sigmask(SIG_SETMASK, old, NULL);

	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

void mp_stop_on_signals(void)
{
	struct sigaction sa = { .sa_handler = on_stop_signal };

	/* Block every stop signal while one is handled, so the handler runs
	 * once. */
	MP_CHECK(sigemptyset(&sa.sa_mask));
	for (int i = 0; i < NSTOP; i++)
		MP_CHECK(sigaddset(&sa.sa_mask, stop_signals[i]));
	for (int i = 0; i < NSTOP; i++) {
		struct sigaction old;

		/* A signal ignored by whoever started us (nohup ignores SIGHUP)
		 * stays ignored, as the shell's own conventions want. */
		MP_CHECK(sigaction(stop_signals[i], NULL, &old));
		if (old.sa_handler != SIG_IGN || stop_signals[i] == SIGPIPE ||
		    stop_signals[i] == SIGINT || stop_signals[i] == SIGTERM)
			MP_CHECK(sigaction(stop_signals[i], &sa, NULL));
	}
	for (int i = 0; i < 2; i++)
		if (reserve_fd[i] == -1)
			MP_CHECK(reserve_fd[i] = open("/dev/null",
						      O_RDONLY | O_CLOEXEC));
}

/* ---- a last bound ------------------------------------------------------ */

struct watchdog { double s; _Atomic long *progress; const char *why; };

static void *watch_run(void *arg)
{
	struct watchdog w = *(struct watchdog *)arg;
	long last = w.progress ? atomic_load(w.progress) : 0;
	int64_t since = mp_now_ns();

	free(arg);
	while (mp_elapsed_s(since) < w.s) {
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
		if (w.progress && atomic_load(w.progress) != last) {
			last = atomic_load(w.progress);
			since = mp_now_ns();
		}
	}
	printf("result: %s %g s (%s) MISMATCH\n", w.progress ?
	       "no progress for" : "no verdict within", w.s, w.why);
	fflush(stdout);
	fprintf(stderr, "%s: stuck for %g s (%s)\n",
		program_invocation_short_name, w.s, w.why);
	stop_and_exit(EXIT_FAILURE);
	return NULL;
}

int mp_watchdog(double seconds, _Atomic long *progress, const char *why)
{
	struct watchdog *w = malloc(sizeof *w);
	pthread_attr_t a;
	pthread_t t;
	sigset_t all, old;
	int err;

	if (!w)
		return ENOMEM;
	*w = (struct watchdog){ seconds, progress, why };
	/* The thread takes no signal: they stay with the lesson's thread. */
	if (sigfillset(&all) == -1)
		err = errno;
	else if ((err = pthread_sigmask(SIG_SETMASK, &all, &old)) == 0) {
		if ((err = pthread_attr_init(&a)) == 0) {
			err = pthread_attr_setdetachstate(&a,
						PTHREAD_CREATE_DETACHED);
			if (!err)
				err = pthread_create(&t, &a, watch_run, w);
			pthread_attr_destroy(&a);
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (err)
		free(w);
	return err;
}

/* ---- Python twins ----------------------------------------------------- */

const char *mp_python3(void)
{
#ifdef MP_PYTHON3
	return MP_PYTHON3[0] ? MP_PYTHON3 : NULL;
#else
	return NULL;
#endif
}

/* on_line when the caller gives none: print the line, at once. */
static void echo_line(const char *line, void *arg)
{
	(void)arg;
	if (printf("%s\n", line) < 0 || fflush(stdout) == EOF)
		stdout_failed();
}

/* Hand every complete line in buf[0..*len) to on_line; keep the rest. */
static void split_lines(char *buf, size_t *len,
			void (*on_line)(const char *, void *), void *arg)
{
	char *start = buf, *nl;

	while ((nl = memchr(start, '\n', *len - (size_t)(start - buf)))) {
		*nl = '\0';
		on_line(start, arg);
		start = nl + 1;
	}
	*len -= (size_t)(start - buf);
	memmove(buf, start, *len);
}

/* Stop a process group: SIGTERM, a second to go, then SIGKILL. */
static void stop_group(pid_t pgid)
{
	kill(-pgid, SIGTERM);
	for (int i = 0; i < 100 && kill(-pgid, 0) == 0; i++)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	kill(-pgid, SIGKILL);
}

int mp_run_twin(const char *script, char *const args[], double timeout_s,
		void (*on_line)(const char *line, void *arg), void *arg)
{
	const char *py = mp_python3();
	char *argv[64] = { (char *)py, "-u", (char *)script };
	int argc = 3, fd[2], status;

	if (!py) {
		errno = ENOENT;
		return -1;
	}
	if (!on_line)
		on_line = echo_line;
	for (int i = 0; args && args[i] && argc < 63; i++)
		argv[argc++] = args[i];
	argv[argc] = NULL;
	if (pipe2(fd, O_CLOEXEC) == -1)
		return -1;
	pid_t pid = mp_fork();

	if (pid == 0) {
		/* Its own process group: a time-out can stop it whole. */
		if (setpgid(0, 0) == -1 || dup2(fd[1], STDOUT_FILENO) == -1)
			mp_die("setpgid/dup2");
		execv(py, argv);
		mp_die("execv %s", py);
	}
	setpgid(pid, pid);  /* also here: whichever runs first wins the race */
	atomic_store(&twin_group, pid);
	if (close(fd[1]) == -1)
		mp_die("close");

	/* Read lines until EOF or the deadline.  EOF comes when every process
	 * holding the pipe is gone: python3 and its workers. */
	char buf[4096];
	size_t len = 0;
	int64_t deadline = mp_now_ns() + (int64_t)(timeout_s * 1e9);
	bool timed_out = false;

	for (;;) {
		int64_t left_ms = (deadline - mp_now_ns()) / 1000000;
		struct pollfd p = { fd[0], POLLIN, 0 };

		if (left_ms <= 0) {
			timed_out = true;
			break;
		}
		int n = poll(&p, 1, left_ms > 1000 ? 1000 : (int)left_ms);

		if (n == -1 && errno != EINTR)
			mp_die("poll");
		if (n <= 0)
			continue;
		ssize_t got = read(fd[0], buf + len, sizeof buf - 1 - len);

		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1)
			mp_die("read");
		if (got == 0)
			break;
		len += (size_t)got;
		split_lines(buf, &len, on_line, arg);
		if (len == sizeof buf - 1) {  /* a line too long: pass it on */
			buf[len] = '\0';
			on_line(buf, arg);
			len = 0;
		}
	}
	if (len > 0 && !timed_out) {  /* a last line without a newline */
		buf[len] = '\0';
		on_line(buf, arg);
	}
	if (close(fd[0]) == -1)
		mp_die("close");
	if (timed_out)
		stop_group(pid);
	status = mp_waitpid(pid);
	/* Its workers may outlive python3 by a moment: wait for the group. */
	for (int i = 0; i < 200 && kill(-pid, 0) == 0; i++)
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	if (kill(-pid, 0) == 0)
		stop_group(pid);
	atomic_store(&twin_group, 0);
	if (timed_out) {
		errno = ETIMEDOUT;
		return -1;
	}
	return status;
}
