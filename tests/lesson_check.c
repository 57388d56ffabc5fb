/* tests/lesson_check.c -- the lesson harness: runs one lesson and checks the
 * command-line contract of DESIGN.md
 *
 * Usage: lesson_check MODE [--verdict] [--timeout S] [--after S]
 *                     -- PROGRAM [ARGS...]
 *   run     exit status 0; with --verdict, at least one "result: ... OK" line
 *           on stdout and no "result:" line that does not end in OK
 *   help    PROGRAM --help: exit 0 and "Usage:" on stdout
 *   badopt  PROGRAM --no-such-option: exit 2, stderr names the option
 *   sigint  waits until the program has a child process (or --after S
 *           seconds), sends it SIGINT, and wants exit status 130 (128+SIGINT)
 *           from a clean exit, not death by the signal
 *   head    reads the program's first line and closes the pipe, as
 *           `program | head -1` does; the next write must end the program
 *           quietly (SIGPIPE, handled) with exit 141 (128+SIGPIPE), or 0
 *           if it had nothing more to say: never a death by the signal,
 *           which would skip the clean-up, and nothing on stderr
 *   tsan    runs PROGRAM built with ThreadSanitizer and fails on any race
 *           (or other report) it prints; like memcheck, the program must
 *           run to its verdict, which is not judged (timings and memory
 *           figures mean nothing under TSan's shadow memory)
 *   memcheck  runs PROGRAM under valgrind's memcheck (--valgrind PATH,
 *           --suppressions FILE), forked children and exec'd programs too
 *           (not python3 or mpirun), and fails on any error it reports in
 *           any of them: invalid reads and writes, uninitialised bytes,
 *           bad frees.  Not leaks: a forked child that _exit()s holds its
 *           parent's allocations, which memcheck would call lost; the asan
 *           preset's LeakSanitizer checks the main process's leaks.  The
 *           program must run to its verdict (exit 0, or exit 1 with a
 *           "result:" line), but the verdict is not judged: under valgrind
 *           a program runs 20-50 times slower, so its timings (and a
 *           verdict that judges one) mean nothing there
 * In every mode, afterwards: no process started by the run is left (they are
 * found by a marker in their environment), and no new entry in /dev/shm or
 * /dev/mqueue and no new SysV IPC object (see leftovers()).  Exits 0 when all
 * checks pass, 1 otherwise, printing what failed.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TAG_VAR "MPP_LESSON_CHECK_TAG"

static int failures;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("lesson_check: FAIL: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static _Noreturn void die(const char *what)
{
	fprintf(stderr, "lesson_check: %s: %s\n", what, strerror(errno));
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		die("clock_gettime");
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- a snapshot of named IPC ---------------------------------------- */

enum { MAX_NAMES = 4096 };
struct names { int n; char *v[MAX_NAMES]; };

static void add_name(struct names *s, const char *name)
{
	if (s->n < MAX_NAMES && (s->v[s->n] = strdup(name)) != NULL)
		s->n++;
}

static void list_dir(struct names *s, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;  /* /dev/mqueue may not be mounted: nothing to see */
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			char full[512];

			snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
			add_name(s, full);
		}
	closedir(d);
}

/* SysV objects: "/proc/sysvipc/shm key=... id=..." per line after the
 * header, so a new object shows up as a new line key+id. */
static void list_sysv(struct names *s, const char *file)
{
	FILE *f = fopen(file, "r");
	char line[512];

	if (!f)
		return;
	if (fgets(line, sizeof line, f))  /* header */
		while (fgets(line, sizeof line, f)) {
			char key[32], id[32], entry[600];

			if (sscanf(line, "%31s %31s", key, id) == 2) {
				snprintf(entry, sizeof entry, "%s key=%s id=%s",
					 file, key, id);
				add_name(s, entry);
			}
		}
	fclose(f);
}

static void snapshot(struct names *s)
{
	s->n = 0;
	list_dir(s, "/dev/shm");
	list_dir(s, "/dev/mqueue");
	list_sysv(s, "/proc/sysvipc/shm");
	list_sysv(s, "/proc/sysvipc/sem");
	list_sysv(s, "/proc/sysvipc/msg");
}

static bool has_name(const struct names *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->v[i], name) == 0)
			return true;
	return false;
}

/* Is the entry still there?  (A SysV line or a file.) */
static bool still_there(const char *e)
{
	struct names now;
	bool there;

	snapshot(&now);
	there = has_name(&now, e);
	for (int i = 0; i < now.n; i++)
		free(now.v[i]);
	return there;
}

/* What a run leaves behind.  Under ctest -j other programs of the course run
 * at the same time, and each names its objects "mpp-<program>-...".  So a
 * new entry counts against this program when it carries this program's
 * name, or when it does not follow the naming rule at all -- and is still
 * there half a second later: other tests' Python twins make objects that
 * live for a moment (multiprocessing's /dev/shm/sem.mp-*, unlinked right
 * after it is made, and glibc's sem.XXXXXX on the way to it).  SysV
 * objects are not named; the course makes none. */
static void leftovers(const struct names *before, const char *prog)
{
	struct names after;
	char mine[300];
	bool waited = false;

	snprintf(mine, sizeof mine, "mpp-%s-", prog);
	snapshot(&after);
	for (int i = 0; i < after.n; i++) {
		const char *e = after.v[i];

		if (has_name(before, e))
			;
		else if (strstr(e, mine))
			fail("left behind: %s", e);
		else if (!strstr(e, "mpp-")) {
			if (!waited) {
				nanosleep(&(struct timespec){ 0, 500000000 },
					  NULL);
				waited = true;
			}
			if (still_there(e))
				fail("left behind: %s", e);
		}
		free(after.v[i]);
	}
}

/* ---- processes of the run --------------------------------------------- */

/* Does /proc/PID/environ hold TAG_VAR=tag?  Children inherit the
 * environment, through fork and exec, so the tag marks the whole tree. */
static bool tagged(const char *pid, const char *tag)
{
	char path[300], buf[65536];
	char want[128];
	int fd;
	ssize_t len;

	snprintf(path, sizeof path, "/proc/%s/environ", pid);
	snprintf(want, sizeof want, TAG_VAR "=%s", tag);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return false;
	len = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (len <= 0)
		return false;  /* gone, a zombie, or not ours to read */
	buf[len] = '\0';
	for (ssize_t off = 0; off < len; off += (ssize_t)strlen(buf + off) + 1)
		if (strcmp(buf + off, want) == 0)
			return true;
	return false;
}

/* Count (and with kill_them, SIGKILL) the processes that carry the tag. */
static int tagged_processes(const char *tag, bool kill_them, bool report)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;

	if (!d)
		die("opendir /proc");
	while ((e = readdir(d)) != NULL) {
		pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);

		if (!isdigit((unsigned char)e->d_name[0]) || pid == getpid() ||
		    !tagged(e->d_name, tag))
			continue;
		found++;
		if (report) {
			char path[300], comm[64] = "?";
			FILE *f;

			snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
			if ((f = fopen(path, "r"))) {
				if (fgets(comm, sizeof comm, f))
					comm[strcspn(comm, "\n")] = '\0';
				fclose(f);
			}
			fail("process %s (%s) of the run is still running",
			     e->d_name, comm);
		}
		if (kill_them)
			kill(pid, SIGKILL);
	}
	closedir(d);
	return found;
}

/* ---- running the program ---------------------------------------------- */

struct run {
	pid_t pid;
	int out, err;              /* read ends of its stdout and stderr */
	char *outbuf, *errbuf;     /* everything it printed */
	size_t outlen, errlen;
	int status;
};

static void append(char **buf, size_t *len, const char *data, size_t n)
{
	char *p = realloc(*buf, *len + n + 1);

	if (!p)
		die("realloc");
	memcpy(p + *len, data, n);
	*len += n;
	p[*len] = '\0';
	*buf = p;
}

static void start(struct run *r, char **argv, const char *tag)
{
	int o[2], e[2];

	if (pipe2(o, O_CLOEXEC) == -1 || pipe2(e, O_CLOEXEC) == -1)
		die("pipe2");
	if (setenv(TAG_VAR, tag, 1) == -1)
		die("setenv");
	fflush(stdout);
	r->pid = fork();
	if (r->pid == -1)
		die("fork");
	if (r->pid == 0) {
		if (dup2(o[1], STDOUT_FILENO) == -1 ||
		    dup2(e[1], STDERR_FILENO) == -1)
			_exit(127);
		execvp(argv[0], argv);
		dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	if (close(o[1]) == -1 || close(e[1]) == -1)
		die("close");
	r->out = o[0];
	r->err = e[0];
}

/* Collect the program's output and its exit status.  Output is read until
 * both pipes close, or for at most 1 s after the program exited (an orphaned
 * grandchild may hold a pipe open: the leftover check reports it).  Returns
 * false if the program is still running at the deadline. */
static bool finish(struct run *r, double deadline, bool exited)
{
	char buf[65536];
	double stop = deadline;

	while (r->out != -1 || r->err != -1) {
		if (!exited) {
			pid_t w = waitpid(r->pid, &r->status, WNOHANG);

			if (w == -1 && errno != EINTR)
				die("waitpid");
			if (w == r->pid) {
				exited = true;
				stop = now_s() + 1.0;
			}
		}
		struct pollfd p[2] = { { r->out, POLLIN, 0 },
				       { r->err, POLLIN, 0 } };
		double left = stop - now_s();

		if (left <= 0)
			break;
		int n = poll(p, 2, left > 0.1 ? 100 : (int)(left * 1000) + 1);

		if (n == -1 && errno != EINTR)
			die("poll");
		for (int i = 0; i < 2 && n > 0; i++) {
			if (!p[i].revents)
				continue;
			ssize_t len = read(p[i].fd, buf, sizeof buf);
			int *fd = i == 0 ? &r->out : &r->err;

			if (len > 0 && i == 0)
				append(&r->outbuf, &r->outlen, buf,
				       (size_t)len);
			else if (len > 0)
				append(&r->errbuf, &r->errlen, buf,
				       (size_t)len);
			else {
				/* a read end at EOF: nothing to lose */
				close(*fd);
				*fd = -1;
			}
		}
	}
	while (!exited && now_s() < deadline) {
		pid_t w = waitpid(r->pid, &r->status, WNOHANG);

		if (w == r->pid)
			exited = true;
		else if (w == -1 && errno != EINTR)
			die("waitpid");
		else
			nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	}
	return exited;
}

static bool has_child(pid_t pid)
{
	char path[64], buf[64];
	int fd;
	ssize_t len;

	snprintf(path, sizeof path, "/proc/%jd/task/%jd/children",
		 (intmax_t)pid, (intmax_t)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return false;
	len = read(fd, buf, sizeof buf);
	close(fd);
	return len > 0;
}

static void check_verdict(const char *out)
{
	int ok = 0;

	for (const char *line = out; line && *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);

		if (strncmp(line, "result: ", 8) == 0) {
			if (len >= 3 && strncmp(line + len - 3, " OK", 3) == 0)
				ok++;
			else
				fail("verdict line is not OK: %.*s", (int)len,
				     line);
		}
		line = end ? end + 1 : NULL;
	}
	if (!ok)
		fail("no 'result: ... OK' line on stdout");
}

static void describe(const char *what, int status)
{
	if (WIFEXITED(status))
		fprintf(stderr, "lesson_check: %s exited with status %d\n",
			what, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fprintf(stderr, "lesson_check: %s was killed by %s\n", what,
			sigabbrev_np(WTERMSIG(status)));
}

int main(int argc, char *argv[])
{
	const char *mode = argc > 1 ? argv[1] : "";
	bool verdict = false;
	double timeout = 120, after = 2.0;
	const char *valgrind = NULL, *supp = NULL;
	int i = 2;

	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--verdict") == 0)
			verdict = true;
		else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--after") == 0 && i + 1 < argc)
			after = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--valgrind") == 0 && i + 1 < argc)
			valgrind = argv[++i];
		else if (strcmp(argv[i], "--suppressions") == 0 &&
			 i + 1 < argc)
			supp = argv[++i];
		else
			break;
	}
	if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc ||
	    timeout <= 0) {
		fprintf(stderr, "usage: lesson_check run|help|badopt|sigint|"
				"memcheck [--verdict] [--timeout S] "
				"[--after S] [--valgrind PATH] -- PROGRAM "
				"[ARGS...]\n");
		return 2;
	}

	/* The program's arguments, with the mode's own added. */
	static char *const vg_args[] = {
		"--quiet", "--error-exitcode=99", "--leak-check=no",
		"--error-markers=MEMCHECK-ERROR,MEMCHECK-END",
		"--trace-children=yes", "--child-silent-after-fork=no",
		"--trace-children-skip=*python*,*mpirun,*orterun,*prterun",
		"--fair-sched=yes", "--vgdb=no",
	};
	char supp_arg[600];
	size_t nvg = sizeof vg_args / sizeof vg_args[0];
	char **prog = calloc((size_t)(argc - i) + 4 + nvg, sizeof *prog);
	int np = 0;

	if (!prog)
		die("calloc");
	if (strcmp(mode, "memcheck") == 0) {
		if (!valgrind) {
			fprintf(stderr, "lesson_check: memcheck needs "
					"--valgrind PATH\n");
			return 2;
		}
		prog[np++] = (char *)valgrind;
		for (size_t k = 0; k < nvg; k++)
			prog[np++] = vg_args[k];
		if (supp) {
			snprintf(supp_arg, sizeof supp_arg, "--suppressions=%s",
				 supp);
			prog[np++] = supp_arg;
		}
	}
	int first = np;  /* the program itself */

	for (int k = i + 1; k < argc; k++)
		prog[np++] = argv[k];
	if (strcmp(mode, "help") == 0)
		prog[np++] = "--help";
	else if (strcmp(mode, "badopt") == 0)
		prog[np++] = "--no-such-option";
	else if (strcmp(mode, "run") != 0 && strcmp(mode, "sigint") != 0 &&
		 strcmp(mode, "memcheck") != 0 && strcmp(mode, "head") != 0 &&
		 strcmp(mode, "tsan") != 0) {
		fprintf(stderr, "lesson_check: unknown mode '%s'\n", mode);
		return 2;
	}

	const char *base = strrchr(prog[first], '/')
				   ? strrchr(prog[first], '/') + 1
				   : prog[first];
	char tag[64];
	struct names before;
	struct run r = { 0 };

	snprintf(tag, sizeof tag, "%jd-%jd", (intmax_t)getpid(),
		 (intmax_t)time(NULL));
	snapshot(&before);
	double t0 = now_s(), deadline = t0 + timeout;

	start(&r, prog, tag);
	bool exited = false;

	if (strcmp(mode, "sigint") == 0) {
		/* Mid-run means: it has forked, or has run for --after s. */
		while (!exited && !has_child(r.pid) && now_s() < t0 + after) {
			exited = waitpid(r.pid, &r.status, WNOHANG) == r.pid;
			nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
		}
		if (!exited)
			nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
		if (exited || kill(r.pid, SIGINT) == -1)
			fail("the program ended before it could be "
			     "interrupted");
	}
	if (strcmp(mode, "head") == 0) {
		/* Like head -1: the first line, then the read end closed. */
		char c;
		ssize_t n;

		while (now_s() < deadline &&
		       ((n = read(r.out, &c, 1)) == 1 || (n == -1 &&
							  errno == EINTR)))
			if (n == 1) {
				append(&r.outbuf, &r.outlen, &c, 1);
				if (c == '\n')
					break;
			}
		if (close(r.out) == -1)
			die("close");
		r.out = -1;
	}
	if (!finish(&r, deadline, exited)) {
		fail("still running after %.0f s: killed", timeout);
		kill(r.pid, SIGKILL);
		waitpid(r.pid, &r.status, 0);
		exited = false;
	} else {
		exited = true;
	}
	double took = now_s() - t0;

	if (r.outbuf && fwrite(r.outbuf, 1, r.outlen, stdout) != r.outlen)
		die("fwrite");
	if (r.errbuf)
		fprintf(stdout, "--- stderr ---\n%s", r.errbuf);
	fflush(stdout);
	printf("--- %s: %s took %.2f s\n", mode, base, took);

	if (exited && strcmp(mode, "run") == 0) {
		if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
			describe(base, r.status);
			fail("a bare run must exit 0");
		}
		if (verdict)
			check_verdict(r.outbuf);
	} else if (exited && strcmp(mode, "help") == 0) {
		if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
			fail("--help must exit 0");
		if (!r.outbuf || !strstr(r.outbuf, "Usage:"))
			fail("--help must print 'Usage:' on stdout");
	} else if (exited && strcmp(mode, "badopt") == 0) {
		if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 2)
			fail("an unknown option must exit 2");
		if (!r.errbuf || !strstr(r.errbuf, "--no-such-option"))
			fail("stderr must name the unknown option");
	} else if (exited && strcmp(mode, "head") == 0) {
		if (!WIFEXITED(r.status) || (WEXITSTATUS(r.status) != 0 &&
					     WEXITSTATUS(r.status) != 141)) {
			describe(base, r.status);
			fail("with its stdout closed it must exit 141 (or 0)");
		}
		if (r.errbuf && r.errbuf[0])
			fail("with its stdout closed it must end quietly");
	} else if (exited && (strcmp(mode, "memcheck") == 0 ||
			      strcmp(mode, "tsan") == 0)) {
		/* Every error memcheck reports, in any process, comes
		 * between --error-markers; a child's own exit status 99 may
		 * not reach us, the marker does.  TSan's reports start with
		 * "WARNING: ThreadSanitizer" (its exit status: 66). */
		bool tsan = strcmp(mode, "tsan") == 0;
		int bad_exit = tsan ? 66 : 99;
		bool found = r.errbuf &&
			     strstr(r.errbuf, tsan ? "WARNING: ThreadSanitizer"
						   : "MEMCHECK-ERROR");
		bool verdict_line =
		    r.outbuf && (strncmp(r.outbuf, "result: ", 8) == 0 ||
				 strstr(r.outbuf, "\nresult: "));

		if (found || (WIFEXITED(r.status) &&
			      WEXITSTATUS(r.status) == bad_exit))
			fail("%s reported errors (see stderr above)", mode);
		else if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) > 1 ||
			 (WEXITSTATUS(r.status) == 1 && !verdict_line)) {
			describe(base, r.status);
			fail("under %s it must run to its verdict", mode);
		}
	} else if (exited) { /* sigint */
		if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 130) {
			describe(base, r.status);
			fail("on SIGINT it must clean up and exit 130");
		}
	}

	/* The run's processes: its children must have been reaped by it. */
	if (tagged_processes(tag, true, true) > 0)
		nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
	leftovers(&before, base);
	for (int k = 0; k < before.n; k++)
		free(before.v[k]);
	free(r.outbuf);
	free(r.errbuf);
	free(prog);
	if (failures)
		return 1;
	printf("lesson_check: %s %s: all checks passed\n", mode, base);
	return 0;
}
