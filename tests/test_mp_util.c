/* tests/test_mp_util.c -- lib/mp_util: errors, narration, options, reaping,
 * IPC names and the clean stop on signals.
 *
 * Anything that exits (a bad option, mp_die, a signal stop) runs in a forked
 * child; the parent collects its exit status and what it printed, and makes
 * every assertion itself.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "mp.h"

#include <sys/signalfd.h>

/* ---- running a function in a child and capturing what it says --------- */

struct outcome {
	int status;       /* raw waitpid status */
	char out[4096];   /* its stdout */
	char err[4096];   /* its stderr */
};

/* Read fd to EOF into buf (NUL-terminated, truncated to size). */
static void slurp(int fd, char *buf, size_t size)
{
	size_t len = 0;
	ssize_t n;

	while ((n = read(fd, buf + len, size - 1 - len)) > 0 ||
	       (n == -1 && errno == EINTR))
		if (n > 0)
			len += (size_t)n;
	buf[len] = '\0';
	assert_int_equal(close(fd), 0);
}

/* Run fn(arg) in a child whose stdout and stderr are pipes; fn must not
 * return normally (if it does, the child exits 99).  alarm(10) bounds it. */
static void run_child(void (*fn)(void *), void *arg, struct outcome *r)
{
	int out[2], err[2];

	assert_int_equal(pipe(out), 0);
	assert_int_equal(pipe(err), 0);
	pid_t pid = mp_fork();

	if (pid == 0) {
		alarm(10);
		if (dup2(out[1], STDOUT_FILENO) == -1 ||
		    dup2(err[1], STDERR_FILENO) == -1)
			_exit(98);
		close(out[0]);
		close(err[0]);
		close(out[1]);
		close(err[1]);
		fn(arg);
		_exit(99);
	}
	assert_int_equal(close(out[1]), 0);
	assert_int_equal(close(err[1]), 0);
	/* Small outputs: a pipe holds 64 KiB, so reading one after the other
	 * cannot deadlock. */
	slurp(out[0], r->out, sizeof r->out);
	slurp(err[0], r->err, sizeof r->err);
	r->status = mp_waitpid(pid);
}

static void assert_exited(const struct outcome *r, int code)
{
	assert_true(WIFEXITED(r->status));
	assert_int_equal(WEXITSTATUS(r->status), code);
}

/* ---- options ---------------------------------------------------------- */

struct cli {
	long procs;
	double ratio;
	bool csv;
	const char *name;
};

static void parse(struct cli *c, int argc, char **argv)
{
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &c->procs, 1, 64, "worker processes"),
		MP_OPT_D("ratio", &c->ratio, 0, 1, "a fraction"),
		MP_OPT_F("csv", &c->csv, "print CSV"),
		MP_OPT_S("name", &c->name, "a label"),
		MP_OPT_L("secret", &c->procs, 0, 1, NULL),
	};

	mp_parse_options(argc, argv, "A test program.", opts,
			 sizeof opts / sizeof opts[0]);
}

static void test_options_set_values_in_both_spellings(void **state)
{
	(void)state;
	struct cli c = { 4, 0.25, false, NULL };
	char *argv[] = { "prog", "--procs", "8", "--ratio=0.5", "--csv",
			 "--name", "x y", NULL };

	parse(&c, 7, argv);
	assert_int_equal(c.procs, 8);
	assert_true(c.ratio == 0.5);
	assert_true(c.csv);
	assert_string_equal(c.name, "x y");
}

static void test_options_keep_defaults_when_absent(void **state)
{
	(void)state;
	struct cli c = { 4, 0.25, false, "dflt" };
	char *argv[] = { "prog", NULL };

	parse(&c, 1, argv);
	assert_int_equal(c.procs, 4);
	assert_true(c.ratio == 0.25);
	assert_false(c.csv);
	assert_string_equal(c.name, "dflt");
}

/* argv for parse_in_child, NULL-terminated */
static void parse_in_child(void *arg)
{
	char **argv = arg;
	int argc = 0;
	struct cli c = { 4, 0.25, false, NULL };

	while (argv[argc])
		argc++;
	parse(&c, argc, argv);
	_exit(0);
}

static void expect_usage_error(char **argv, const char *first_line)
{
	struct outcome r;
	char want[512];

	run_child(parse_in_child, argv, &r);
	assert_exited(&r, 2);
	snprintf(want, sizeof want,
		 "test_mp_util: %s\nTry 'test_mp_util --help' for more "
		 "information.\n", first_line);
	assert_string_equal(r.err, want);
	assert_string_equal(r.out, "");
}

static void test_options_refuse_bad_input_with_exit_2(void **state)
{
	(void)state;
	char *unknown[] = { "p", "--nope", NULL };
	char *range[] = { "p", "--procs", "0", NULL };
	char *range_hi[] = { "p", "--procs=65", NULL };
	char *word[] = { "p", "--procs", "12x", NULL };
	char *empty[] = { "p", "--procs=", NULL };
	char *dbl[] = { "p", "--ratio", "1.5", NULL };
	char *nan[] = { "p", "--ratio", "nan", NULL };
	char *missing[] = { "p", "--procs", NULL };
	char *stray[] = { "p", "extra", NULL };
	char *flagval[] = { "p", "--csv=1", NULL };

	expect_usage_error(unknown, "unknown option '--nope'");
	expect_usage_error(range, "--procs: 0 is out of range 1..64");
	expect_usage_error(range_hi, "--procs: 65 is out of range 1..64");
	expect_usage_error(word, "--procs: '12x' is not a whole number");
	expect_usage_error(empty, "--procs: '' is not a whole number");
	expect_usage_error(dbl, "--ratio: 1.5 is out of range 0..1");
	expect_usage_error(nan, "--ratio: 'nan' is not a number");
	expect_usage_error(missing, "--procs needs a value");
	expect_usage_error(stray, "unexpected argument 'extra'");
	expect_usage_error(flagval, "--csv takes no value");
}

static void test_help_prints_usage_and_exits_0(void **state)
{
	(void)state;
	char *argv[] = { "p", "--procs", "9", "--help", NULL };
	struct outcome r;

	run_child(parse_in_child, argv, &r);
	assert_exited(&r, 0);
	assert_string_equal(r.err, "");
	assert_string_equal(r.out,
		"Usage: test_mp_util [options]\n"
		"A test program.\n"
		"\n"
		"Options:\n"
		"  --procs N              worker processes "
		"(default 9, range 1..64)\n"
		"  --ratio X              a fraction "
		"(default 0.25, range 0..1)\n"
		"  --csv                  print CSV\n"
		"  --name S               a label (default none)\n"
		"  -h, --help             print this help and exit\n");
}

/* ---- errors ----------------------------------------------------------- */

static void die_enoent(void *arg)
{
	(void)arg;
	printf("before");  /* a child's own buffered line: flushed by mp_die */
	errno = ENOENT;
	mp_die("open %s", "x.txt");
}

static void die_pthread_style(void *arg)
{
	(void)arg;
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

	MP_CHECK_PT(pthread_mutex_lock(&m));
	MP_CHECK_PT(pthread_mutex_trylock(&m));  /* EBUSY, as a return value */
	_exit(0);
}

static void test_die_names_errno_and_exits_1_in_a_child(void **state)
{
	(void)state;
	struct outcome r;

	run_child(die_enoent, NULL, &r);
	assert_exited(&r, 1);
	assert_string_equal(r.err, "test_mp_util: open x.txt: ENOENT "
				   "(No such file or directory)\n");
	assert_string_equal(r.out, "before");

	run_child(die_pthread_style, NULL, &r);
	assert_exited(&r, 1);
	assert_non_null(strstr(r.err, "pthread_mutex_trylock(&m): EBUSY "
				      "(Device or resource busy)\n"));
}

static void report_main_process(void *arg)
{
	(void)arg;
	_exit(mp_is_main_process() ? 1 : 0);
}

static void test_is_main_process_only_in_the_parent(void **state)
{
	(void)state;
	struct outcome r;

	assert_true(mp_is_main_process());
	run_child(report_main_process, NULL, &r);
	assert_exited(&r, 0);
}

/* ---- narration and clock ---------------------------------------------- */

static void say_something(void *arg)
{
	(void)arg;
	mp_say("worker", "n=%d", 5);
	_exit(0);
}

static void test_say_prefixes_role_pid_and_time(void **state)
{
	(void)state;
	struct outcome r;
	char role[16], text[16];
	long pid = 0;
	double ms = -1;

	run_child(say_something, NULL, &r);
	assert_exited(&r, 0);
	assert_int_equal(sscanf(r.out, "[%15s %ld +%lfms] %15s", role, &pid,
				&ms, text), 4);
	assert_string_equal(role, "worker");
	assert_true(pid > 0 && pid != getpid());
	assert_true(ms >= 0);
	assert_string_equal(text, "n=5");
	assert_int_equal(r.out[strlen(r.out) - 1], '\n');
}

static void test_now_ns_is_monotonic_and_counts_sleep(void **state)
{
	(void)state;
	int64_t a = mp_now_ns();
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	assert_int_equal(nanosleep(&ts, NULL), 0);
	int64_t b = mp_now_ns();

	/* A sleep lasts at least what was asked; no upper bound asserted. */
	assert_true(b - a >= 20 * 1000 * 1000);
	assert_true(mp_elapsed_s(a) >= 0.020);
}

/* A deadline is `seconds` after now on the clock asked for, normalized
 * (0 <= tv_nsec < 10^9), also for a fraction that carries into tv_sec and
 * for a deadline already past. */
static void test_deadline_is_now_plus_seconds_normalized(void **state)
{
	(void)state;
	const double secs[] = { 0.999999999, 1.5, 2, -0.25 };

	for (int c = 0; c < 2; c++) {
		clockid_t clock = c ? CLOCK_REALTIME : CLOCK_MONOTONIC;

		for (size_t k = 0; k < sizeof secs / sizeof *secs; k++) {
			struct timespec before, after;

			assert_int_equal(clock_gettime(clock, &before), 0);
			struct timespec d = mp_deadline(clock, secs[k]);

			assert_int_equal(clock_gettime(clock, &after), 0);
			double t = (double)d.tv_sec + d.tv_nsec / 1e9;

			assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000);
			assert_true(t >= before.tv_sec + before.tv_nsec / 1e9 +
					 secs[k] - 1e-6);
			assert_true(t <= after.tv_sec + after.tv_nsec / 1e9 +
					 secs[k] + 1e-6);
		}
	}
}

/* A locked mutex is not destroyed: false, and a line says why; then,
 * unlocked, it is: true. */
static void destroy_locked_then_unlocked(void *arg)
{
	pthread_mutex_t m;

	(void)arg;
	MP_CHECK_PT(pthread_mutex_init(&m, NULL));
	MP_CHECK_PT(pthread_mutex_lock(&m));
	bool first = mp_mutex_destroy(&m);

	MP_CHECK_PT(pthread_mutex_unlock(&m));
	bool second = mp_mutex_destroy(&m);

	_exit(!first && second ? 0 : 1);
}

static void test_mutex_destroy_reports_a_locked_mutex(void **state)
{
	(void)state;
	struct outcome r;

	run_child(destroy_locked_then_unlocked, NULL, &r);
	assert_exited(&r, 0);
	assert_non_null(strstr(r.out, "pthread_mutex_destroy: EBUSY, still "
				      "locked\n"));
}

/* The LCG: one step is A x + C; mp_lcg_jump() gives mp_lcg()'s value for
 * every n tried, including 0 and a power of two, from several seeds. */
static void test_lcg_jump_equals_the_steps(void **state)
{
	(void)state;
	const uint64_t seeds[] = { 0, 1, 7, UINT64_MAX };
	const uint64_t ns[] = { 0, 1, 2, 3, 64, 1000, 4097 };

	assert_true(mp_lcg(0, 1) == MP_LCG_C);
	assert_true(mp_lcg(1, 1) == MP_LCG_A + MP_LCG_C);
	for (size_t s = 0; s < sizeof seeds / sizeof *seeds; s++)
		for (size_t k = 0; k < sizeof ns / sizeof *ns; k++)
			assert_true(mp_lcg_jump(seeds[s], ns[k]) ==
				    mp_lcg(seeds[s], ns[k]));
}

/* mp_stop_signalfd(): SIGTERM sent to the process does not kill it but
 * arrives on the descriptor; SIGPIPE is ignored (a write to a closed pipe
 * fails with EPIPE).  Exit 0 when all of that held. */
static void signalfd_catches_sigterm(void *arg)
{
	sigset_t set;
	struct signalfd_siginfo si;
	int p[2];

	(void)arg;
	int fd = mp_stop_signalfd(&set);

	if (!sigismember(&set, SIGINT) || !sigismember(&set, SIGQUIT) ||
	    sigismember(&set, SIGPIPE))
		_exit(2);
	if (kill(getpid(), SIGTERM) == -1 ||
	    read(fd, &si, sizeof si) != (ssize_t)sizeof si ||
	    si.ssi_signo != SIGTERM)
		_exit(3);
	if (pipe(p) == -1 || close(p[0]) == -1 ||
	    write(p[1], "x", 1) != -1 || errno != EPIPE)
		_exit(4);
	_exit(0);
}

static void test_stop_signalfd_turns_signals_into_reads(void **state)
{
	(void)state;
	struct outcome r;

	run_child(signalfd_catches_sigterm, NULL, &r);
	assert_exited(&r, 0);
}

/* ---- children --------------------------------------------------------- */

static void test_wait_all_reaps_every_child(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++)
		if (mp_fork() == 0)
			_exit(0);
	assert_int_equal(mp_wait_all(), 5);
	assert_int_equal(mp_wait_all(), 0);  /* none left */
}

static void wait_for_failing_children(void *arg)
{
	(void)arg;
	if (mp_fork() == 0)
		_exit(0);
	pid_t bad = mp_fork();

	if (bad == 0)
		_exit(3);
	printf("%jd", (intmax_t)bad);
	fflush(stdout);
	mp_wait_all();  /* must die: one child exited 3 */
	_exit(0);
}

static void test_wait_all_dies_on_a_failed_child(void **state)
{
	(void)state;
	struct outcome r;
	char want[sizeof r.out + 256];

	run_child(wait_for_failing_children, NULL, &r);
	assert_exited(&r, 1);
	snprintf(want, sizeof want,
		 "test_mp_util: child %s exited with status 3\n"
		 "test_mp_util: 1 of 2 children failed\n", r.out);
	assert_string_equal(r.err, want);
}

static void test_waitpid_returns_the_raw_status(void **state)
{
	(void)state;
	pid_t pid = mp_fork();

	if (pid == 0)
		_exit(7);
	int status = mp_waitpid(pid);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 7);

	pid = mp_fork();
	if (pid == 0) {
		raise(SIGKILL);
		_exit(0);
	}
	status = mp_waitpid(pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* With stdout fully buffered, print, mp_fork, and let the grandchild leave
 * with exit() (which flushes its copy of the buffer).  If mp_fork flushed
 * first, the text appears once; otherwise twice. */
static void fork_with_pending_output(void *arg)
{
	(void)arg;
	static char buf[BUFSIZ];

	if (setvbuf(stdout, buf, _IOFBF, sizeof buf) != 0)
		_exit(98);
	printf("pending;");
	pid_t pid = mp_fork();

	if (pid == 0)
		exit(0);
	int status = mp_waitpid(pid);

	fflush(stdout);
	_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 97);
}

static void test_fork_flushes_stdout_first(void **state)
{
	(void)state;
	struct outcome r;

	run_child(fork_with_pending_output, NULL, &r);
	assert_exited(&r, 0);
	assert_string_equal(r.out, "pending;");
}

/* ---- IPC names and the clean stop ------------------------------------- */

static void test_ipc_name_carries_program_what_and_pid(void **state)
{
	(void)state;
	char name[64], want[64];

	char other[64];
	size_t len;

	mp_ipc_name(name, sizeof name, "seg");
	mp_ipc_name(other, sizeof other, "seg");
	len = (size_t)snprintf(want, sizeof want, "/mpp-test_mp_util-seg-%jd-",
			       (intmax_t)getpid());
	assert_memory_equal(name, want, len);
	/* then 8 random hex digits, different each time */
	assert_int_equal(strlen(name), len + 8);
	assert_int_equal(strspn(name + len, "0123456789abcdef"), 8);
	assert_string_not_equal(name, other);
	mp_ipc_name(name, 10, "seg");  /* truncated, still terminated */
	assert_string_equal(name, "/mpp-test");
}

/* How the grandchild of a stop test makes the stop harder. */
enum stop_mode {
	PLAIN,       /* sleeps in pause() */
	NO_FD,       /* made by a raw fork(), and its parent has no free fd */
	STOPPED,     /* stopped by SIGSTOP: SIGTERM alone stays pending */
	DEAF,        /* ignores SIGTERM: only SIGKILL ends it */
};

struct stop_case {
	char kept[64], dropped[64];  /* two shm names the child creates */
	int sig;
	enum stop_mode mode;
};

/* Install the stop handler, create two named segments, register cleanups
 * for both and cancel one, start a grandchild (made hard to stop as
 * c->mode says), then report "<grandchild pid> <kept> <dropped>\n" and wait
 * for the signal. */
static void stop_victim(void *arg)
{
	struct stop_case *c = arg;

	mp_stop_on_signals();
	mp_ipc_name(c->kept, sizeof c->kept, "kept");
	mp_ipc_name(c->dropped, sizeof c->dropped, "dropped");
	if (!mp_shm_create(c->kept, 4096) || !mp_shm_create(c->dropped, 4096))
		mp_die("mp_shm_create");
	if (mp_atcleanup(mp_cleanup_shm, c->kept) == -1 ||
	    mp_atcleanup(mp_cleanup_shm, c->dropped) == -1 ||
	    mp_cancel_cleanup(mp_cleanup_shm, c->kept) == -1)
		mp_die("mp_atcleanup");
	if (fflush(stdout) == EOF)
		_exit(96);
	pid_t grandchild = c->mode == NO_FD ? fork() : mp_fork();

	if (grandchild == -1)
		_exit(95);
	if (grandchild == 0) {
		close(STDOUT_FILENO);  /* the parent reads the pipe to EOF */
		if (c->mode == DEAF && signal(SIGTERM, SIG_IGN) == SIG_ERR)
			_exit(94);
		if (c->mode == STOPPED)
			raise(SIGSTOP);
		for (;;)
			pause();
	}
	if (c->mode == STOPPED) {  /* report only once it is stopped */
		int st;

		if (waitpid(grandchild, &st, WUNTRACED) != grandchild ||
		    !WIFSTOPPED(st))
			_exit(93);
	}
	if (c->mode == DEAF)  /* give it time to ignore SIGTERM */
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	printf("%jd %s %s\n", (intmax_t)grandchild, c->kept, c->dropped);
	fclose(stdout);  /* EOF for the parent: now it may send the signal */
	if (c->mode == NO_FD)  /* use up every descriptor */
		while (open("/dev/null", O_RDONLY) != -1)
			;
	for (;;)
		pause();
}

static void check_stop(int sig, enum stop_mode mode)
{
	struct stop_case c = { .sig = sig, .mode = mode };
	int out[2];

	assert_int_equal(pipe(out), 0);
	pid_t pid = mp_fork();

	if (pid == 0) {
		alarm(10);
		if (dup2(out[1], STDOUT_FILENO) == -1)
			_exit(98);
		close(out[0]);
		close(out[1]);
		stop_victim(&c);
	}
	assert_int_equal(close(out[1]), 0);
	char line[256], kept[64], dropped[64];
	long grandchild = 0;

	slurp(out[0], line, sizeof line);
	assert_int_equal(sscanf(line, "%ld %63s %63s", &grandchild, kept,
				dropped), 3);
	assert_true(grandchild > 0);
	if (mode == NO_FD)  /* let it reach EMFILE */
		nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
	assert_int_equal(kill(pid, sig), 0);
	int status = mp_waitpid(pid);

	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 128 + sig);
	/* The grandchild was stopped and reaped by its parent: gone. */
	assert_int_equal(kill((pid_t)grandchild, 0), -1);
	assert_int_equal(errno, ESRCH);

	assert_int_equal(shm_open(dropped, O_RDONLY, 0), -1);  /* cleaned up */
	assert_int_equal(errno, ENOENT);
	/* its cleanup was cancelled */
	assert_int_equal(mp_shm_unlink(kept), 0);
}

static void test_stop_on_sigterm_reaps_children_and_runs_cleanups(void **state)
{
	(void)state;
	check_stop(SIGTERM, PLAIN);
}

static void test_stop_on_sigint_exits_130(void **state)
{
	(void)state;
	check_stop(SIGINT, PLAIN);
}

static void test_stop_on_sighup_and_sigquit_too(void **state)
{
	(void)state;
	check_stop(SIGHUP, PLAIN);
	check_stop(SIGQUIT, PLAIN);
}

static void test_stop_finds_children_with_no_free_descriptor(void **state)
{
	(void)state;
	check_stop(SIGINT, NO_FD);
}

static void test_stop_continues_a_stopped_child(void **state)
{
	(void)state;
	check_stop(SIGINT, STOPPED);
}

static void test_stop_kills_a_child_that_ignores_sigterm(void **state)
{
	(void)state;
	check_stop(SIGTERM, DEAF);
}

/* stdout is a pipe nobody reads: the next line narrated ends the program
 * (through SIGPIPE, or EPIPE where SIGPIPE is ignored), quietly, with the
 * grandchild stopped and the name unlinked.  Reports "<pid> <name>" on the
 * pipe given as arg before that. */
static void narrate_into_a_closed_pipe(void *arg)
{
	int report = *(int *)arg;
	static char name[64];
	int dead[2];

	mp_stop_on_signals();
	if (report < 0 && signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		_exit(97);
	report = abs(report);
	mp_ipc_name(name, sizeof name, "piped");
	if (!mp_shm_create(name, 4096) ||
	    mp_atcleanup(mp_cleanup_shm, name) == -1)
		mp_die("mp_shm_create");
	pid_t grandchild = mp_fork();

	if (grandchild == 0) {
		close(report);
		for (;;)
			pause();
	}
	if (dprintf(report, "%jd %s", (intmax_t)grandchild, name) < 0 ||
	    close(report) == -1 || pipe(dead) == -1 ||
	    dup2(dead[1], STDOUT_FILENO) == -1 || close(dead[0]) == -1 ||
	    close(dead[1]) == -1)
		_exit(96);
	mp_say("child", "nobody reads this");
	_exit(95);
}

static void check_closed_stdout(bool ignore_sigpipe)
{
	int rep[2];
	struct outcome r;
	long grandchild = 0;
	char line[128], name[64];

	assert_int_equal(pipe(rep), 0);
	int arg = ignore_sigpipe ? -rep[1] : rep[1];

	run_child(narrate_into_a_closed_pipe, &arg, &r);
	assert_int_equal(close(rep[1]), 0);
	slurp(rep[0], line, sizeof line);
	assert_exited(&r, 128 + SIGPIPE);
	assert_string_equal(r.err, "");  /* quietly */
	assert_int_equal(sscanf(line, "%ld %63s", &grandchild, name), 2);
	assert_int_equal(kill((pid_t)grandchild, 0), -1);
	assert_int_equal(errno, ESRCH);
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_closed_stdout_ends_quietly_and_cleans_up(void **state)
{
	(void)state;
	check_closed_stdout(false);  /* SIGPIPE, handled */
	check_closed_stdout(true);   /* SIGPIPE ignored: EPIPE */
}

/* A subreaper (it adopts its orphaned descendants) makes a child with
 * mp_fork(), which makes a grandchild with mp_fork(); the child is killed
 * with SIGKILL, so it cannot stop anyone.  The grandchild must die of the
 * SIGTERM that PR_SET_PDEATHSIG asked for, and come back to the subreaper
 * to be reaped: exit 0 when it did, within the alarm. */
static void orphan_gets_sigterm(void *arg)
{
	(void)arg;
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) == -1)
		_exit(90);
	int ready[2];

	if (pipe(ready) == -1)
		_exit(91);
	pid_t child = mp_fork();

	if (child == 0) {
		if (mp_fork() == 0) {
			close(ready[1]);
			for (;;)
				pause();
		}
		close(ready[1]);  /* the grandchild holds it: EOF = it's gone */
		for (;;)
			pause();
	}
	close(ready[1]);
	/* Both hold the write end; wait until the child is running. */
	nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	if (kill(child, SIGKILL) == -1)
		_exit(92);
	int st;
	pid_t got = waitpid(child, &st, 0);

	if (got != child || !WIFSIGNALED(st))
		_exit(93);
	got = waitpid(-1, &st, 0);  /* the grandchild, adopted */
	_exit(got > 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM ? 0 : 94);
}

static void test_fork_child_stops_when_its_parent_is_killed(void **state)
{
	(void)state;
	struct outcome r;

	run_child(orphan_gets_sigterm, NULL, &r);
	assert_exited(&r, 0);
}

/* A watchdog gives the verdict a stuck program cannot: after its bound it
 * prints the MISMATCH line, stops the grandchild, unlinks the name and
 * exits 1.  The child reports "<grandchild> <name>" first, on stderr's
 * pipe, since stdout carries the verdict. */
static void stuck_under_a_watchdog(void *arg)
{
	static char name[64];

	(void)arg;
	mp_stop_on_signals();
	mp_ipc_name(name, sizeof name, "watched");
	if (!mp_shm_create(name, 4096) ||
	    mp_atcleanup(mp_cleanup_shm, name) == -1)
		mp_die("mp_shm_create");
	pid_t grandchild = mp_fork();

	if (grandchild == 0)
		for (;;)
			pause();
	fprintf(stderr, "%jd %s\n", (intmax_t)grandchild, name);
	fflush(stderr);
	if (mp_watchdog(0.2, NULL, "a test") != 0)
		_exit(97);
	for (;;)
		pause();  /* stuck, as a lost wake-up would leave us */
}

static void test_watchdog_ends_a_stuck_run_with_mismatch(void **state)
{
	(void)state;
	struct outcome r;
	long grandchild = 0;
	char name[64] = "";

	run_child(stuck_under_a_watchdog, NULL, &r);
	assert_exited(&r, 1);
	assert_string_equal(r.out,
			    "result: no verdict within 0.2 s (a test) "
			    "MISMATCH\n");
	assert_int_equal(sscanf(r.err, "%ld %63s", &grandchild, name), 2);
	assert_int_equal(kill((pid_t)grandchild, 0), -1);
	assert_int_equal(errno, ESRCH);
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_options_refuse_leading_blanks(void **state)
{
	(void)state;
	char *lng[] = { "p", "--procs", " 5", NULL };
	char *dbl[] = { "p", "--ratio", " 0.5", NULL };

	expect_usage_error(lng, "--procs: ' 5' is not a whole number");
	expect_usage_error(dbl, "--ratio: ' 0.5' is not a number");
}

/* Like stop_victim, but fails instead of waiting for a signal. */
static void die_with_a_child_and_a_name(void *arg)
{
	static char name[64];

	(void)arg;
	mp_ipc_name(name, sizeof name, "orphan");
	if (!mp_shm_create(name, 4096) ||
	    mp_atcleanup(mp_cleanup_shm, name) == -1)
		mp_die("mp_shm_create");
	pid_t grandchild = mp_fork();

	if (grandchild == 0) {
		close(STDOUT_FILENO);
		close(STDERR_FILENO);
		pause();
		_exit(0);
	}
	printf("%jd %s", (intmax_t)grandchild, name);
	errno = EIO;
	mp_die("giving up");
}

static void test_die_stops_children_and_runs_cleanups(void **state)
{
	(void)state;
	struct outcome r;
	long grandchild = 0;
	char name[64] = "";

	run_child(die_with_a_child_and_a_name, NULL, &r);
	assert_exited(&r, 1);
	assert_non_null(strstr(r.err, "giving up: EIO"));
	assert_int_equal(sscanf(r.out, "%ld %63s", &grandchild, name), 2);
	assert_true(grandchild > 0);
	assert_int_equal(kill((pid_t)grandchild, 0), -1);  /* reaped: gone */
	assert_int_equal(errno, ESRCH);
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1);  /* unlinked */
	assert_int_equal(errno, ENOENT);
}

static void fill_cleanups(void *arg)
{
	(void)arg;
	int n = 0;

	while (mp_atcleanup(mp_cleanup_sem, "/x") == 0)
		n++;
	int full = errno == ENOMEM;

	if (mp_cancel_cleanup(mp_cleanup_mq, "/x") == 0 || errno != ENOENT)
		_exit(97);
	printf("%d %d", n, full);
	fflush(stdout);
	_exit(0);
}

static void test_atcleanup_holds_16_then_enomem(void **state)
{
	(void)state;
	struct outcome r;

	run_child(fill_cleanups, NULL, &r);
	assert_exited(&r, 0);
	assert_string_equal(r.out, "16 1");
}

static void test_python3_is_what_configure_found(void **state)
{
	(void)state;
	const char *py = mp_python3();

	/* MP_EXPECT_PYTHON3 is CMake's find_program() result ("" if none). */
	if (MP_EXPECT_PYTHON3[0] == '\0') {
		assert_null(py);
	} else {
		assert_non_null(py);
		assert_string_equal(py, MP_EXPECT_PYTHON3);
		assert_int_equal(access(py, X_OK), 0);
	}
}

/* ---- Python twins ------------------------------------------------------ */

struct lines { int n; char v[8][64]; };

static void keep_line(const char *line, void *arg)
{
	struct lines *l = arg;

	if (l->n < 8)
		snprintf(l->v[l->n++], sizeof l->v[0], "%s", line);
}

/* Write a throwaway script; the caller unlinks path. */
static void write_script(char *path, const char *text)
{
	int fd = mkstemps(path, 3);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(close(fd), 0);
}

static void test_run_twin_hands_over_lines_and_status(void **state)
{
	(void)state;
	char path[] = "/tmp/mpp-test-twin-XXXXXX.py";
	char *args[] = { "x y", NULL };
	struct lines got = { 0 };

	if (!mp_python3()) {
		assert_int_equal(mp_run_twin("/nonexistent.py", NULL, 1,
					     keep_line, &got), -1);
		assert_int_equal(errno, ENOENT);
		return;
	}
	write_script(path, "import sys\nprint('first')\nprint(sys.argv[1])\n"
			   "sys.stdout.write('no newline')\nsys.exit(3)\n");
	int status = mp_run_twin(path, args, 30, keep_line, &got);

	assert_int_equal(unlink(path), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 3);
	assert_int_equal(got.n, 3);
	assert_string_equal(got.v[0], "first");
	assert_string_equal(got.v[1], "x y");
	assert_string_equal(got.v[2], "no newline");
}

static void test_run_twin_stops_the_whole_group_on_timeout(void **state)
{
	(void)state;
	char path[] = "/tmp/mpp-test-twin-XXXXXX.py";
	struct lines got = { 0 };

	if (!mp_python3())
		skip();
	/* A twin that hangs, with a forked worker that hangs too and holds
	 * stdout (what a stuck Pool looks like from outside). */
	write_script(path, "import os, signal, time\n"
			   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
			   "pid = os.fork()\n"
			   "if pid == 0:\n    time.sleep(60)\n    os._exit(0)\n"
			   "print(pid, flush=True)\ntime.sleep(60)\n");
	int64_t t0 = mp_now_ns();
	int r = mp_run_twin(path, NULL, 0.5, keep_line, &got);
	double took = mp_elapsed_s(t0);

	assert_int_equal(unlink(path), 0);
	assert_int_equal(r, -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_true(took >= 0.5 && took < 10);
	assert_int_equal(got.n, 1);
	char *end;
	long worker = strtol(got.v[0], &end, 10);

	assert_true(worker > 0 && *end == '\0');
	/* The worker was in the twin's group: killed too (a zombie at most,
	 * until init reaps it, so look at its state, not its existence). */
	char stat[64], buf[256] = "";
	snprintf(stat, sizeof stat, "/proc/%ld/stat", worker);
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(stat, "r");

		if (!f)
			break;  /* gone */
		bool zombie = fgets(buf, sizeof buf, f) && strstr(buf, ") Z ");

		assert_int_equal(fclose(f), 0);
		if (zombie)
			break;
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
		buf[0] = '\0';
	}
	assert_true(buf[0] == '\0' || strstr(buf, ") Z "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options_set_values_in_both_spellings),
		cmocka_unit_test(test_options_keep_defaults_when_absent),
		cmocka_unit_test(test_options_refuse_bad_input_with_exit_2),
		cmocka_unit_test(test_help_prints_usage_and_exits_0),
		cmocka_unit_test(test_die_names_errno_and_exits_1_in_a_child),
		cmocka_unit_test(test_die_stops_children_and_runs_cleanups),
		cmocka_unit_test(test_is_main_process_only_in_the_parent),
		cmocka_unit_test(test_say_prefixes_role_pid_and_time),
		cmocka_unit_test(test_now_ns_is_monotonic_and_counts_sleep),
		cmocka_unit_test(test_deadline_is_now_plus_seconds_normalized),
		cmocka_unit_test(test_mutex_destroy_reports_a_locked_mutex),
		cmocka_unit_test(test_lcg_jump_equals_the_steps),
		cmocka_unit_test(test_stop_signalfd_turns_signals_into_reads),
		cmocka_unit_test(test_wait_all_reaps_every_child),
		cmocka_unit_test(test_wait_all_dies_on_a_failed_child),
		cmocka_unit_test(test_waitpid_returns_the_raw_status),
		cmocka_unit_test(test_fork_flushes_stdout_first),
		cmocka_unit_test(test_ipc_name_carries_program_what_and_pid),
		cmocka_unit_test(
		    test_stop_on_sigterm_reaps_children_and_runs_cleanups),
		cmocka_unit_test(test_stop_on_sigint_exits_130),
		cmocka_unit_test(test_stop_on_sighup_and_sigquit_too),
		cmocka_unit_test(
		    test_stop_finds_children_with_no_free_descriptor),
		cmocka_unit_test(test_stop_continues_a_stopped_child),
		cmocka_unit_test(test_stop_kills_a_child_that_ignores_sigterm),
		cmocka_unit_test(test_closed_stdout_ends_quietly_and_cleans_up),
		cmocka_unit_test(
		    test_fork_child_stops_when_its_parent_is_killed),
		cmocka_unit_test(test_options_refuse_leading_blanks),
		cmocka_unit_test(test_watchdog_ends_a_stuck_run_with_mismatch),
		cmocka_unit_test(test_atcleanup_holds_16_then_enomem),
		cmocka_unit_test(test_python3_is_what_configure_found),
		cmocka_unit_test(test_run_twin_hands_over_lines_and_status),
		cmocka_unit_test(
		    test_run_twin_stops_the_whole_group_on_timeout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
