/* 0_basics/process_vs_thread.c -- the same work in processes and in threads
 *
 * Python:  threading.Thread(target=f) vs multiprocessing.Process(target=f).
 *          CPython's threads are real pthreads (Python/thread_pthread.h), but
 *          in the default build only the thread holding the GIL runs
 *          bytecode, so CPU-bound Python code needs processes to use a second
 *          core.  (3.13 added an optional free-threaded build, PEP 703.)
 * C:       fork() + waitpid() vs pthread_create() + pthread_join().  C threads
 *          run in parallel -- there is no GIL -- so in C you pick processes
 *          for isolation (a child writes to its own copy of memory) and crash
 *          containment (a child's SIGSEGV ends the child, not you), and pay a
 *          higher start-up cost for them.
 * Calls:   fork, waitpid, WIFSIGNALED/WTERMSIG, pthread_create, pthread_join,
 *          mmap(MAP_SHARED | MAP_ANONYMOUS) to get results back from children
 * Usage:   process_vs_thread [--workers N (online CPUs up to 8, 1..64)]
 *            [--iters N (20000000)] [--repeat N (2)] [--spawns N (100)]
 *            [--py-iters N (200000)]
 * Output:  (trimmed; RelWithDebInfo, 2 cores shared with other jobs)
 *   [child 24926 +0.1ms] value=2 at 0x7ffdae271b20 (my copy)
 *   [parent 24925 +0.3ms] after the child: value=1 at 0x7ffdae271b20 -> its
 *                         write is invisible here
 *   [parent 24925 +0.3ms] after the thread: value=3 -> its write is visible
 *                         here
 *   [parent 24925 +0.6ms] child 24928 was killed by signal 11 (Segmentation
 *                         fault); the parent runs on
 *   [parent 24925 +17.3ms] create+wait, median of 100: process 134.2 us,
 *                          thread 18.7 us (7.2x)
 *   [parent 24925 +55.0ms] workers     processes            threads
 *   [parent 24925 +131.0ms]       1      19.0 ms  0.99x      18.4 ms  1.02x
 *   [parent 24925 +168.8ms]       2       9.5 ms  1.98x       9.2 ms  2.03x
 *       python: workers  threads            processes
 *       python:       1     66.2 ms  1.10x    124.6 ms  0.59x
 *       python:       2     68.5 ms  1.07x     38.5 ms  1.90x
 *   result: child write private, thread write shared, child SIGSEGV
 *           contained, sums 2/2 rows, python matches OK
 * Try this: --workers 8 on 2 cores (past the core count nothing gets faster);
 *   pass `local` instead of `shared` to with_processes() (the sums are lost);
 *   malloc and touch 1 GiB before step 3 (fork copies page tables, so it
 *   slows down; pthread_create does not).
 */
#include "mp.h"

#include <sys/prctl.h>

enum { MAX_WORKERS = 64 };

struct slice {
	uint64_t lo, hi;  /* this worker's share: i in [lo, hi) */
	uint64_t sum;     /* and its result */
};

/* splitmix64's mixer: cheap, and its sum has no closed form, so the compiler
 * cannot skip the loop.  Unsigned arithmetic wraps (no undefined behaviour):
 * the total is the same modulo 2^64 however the range is split. */
static uint64_t work(uint64_t lo, uint64_t hi)
{
	uint64_t s = 0;

	for (uint64_t x = lo; x < hi; x++) {
		uint64_t z = x + 0x9E3779B97F4A7C15u;

		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
		s += z ^ (z >> 31);
	}
	return s;
}

static void split(struct slice *sl, int k, uint64_t iters)
{
	for (uint64_t i = 0; i < (uint64_t)k; i++)
		sl[i] = (struct slice){ .lo = iters * i / (uint64_t)k,
					.hi = iters * (i + 1) / (uint64_t)k };
}

static void expect_exit0(pid_t pid, int status)
{
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		errno = ECHILD;
		mp_die("child %jd did not exit 0 (status 0x%x)", (intmax_t)pid,
		       (unsigned)status);
	}
}

static void *thread_main(void *arg)
{
	struct slice *s = arg;

	s->sum = work(s->lo, s->hi);
	return NULL;
}

static void *set_to_3(void *arg) { *(long *)arg = 3; return NULL; }
static void *noop(void *arg) { return arg; }

/* k children; sl[] must be MAP_SHARED: a child's plain writes stay in its
 * own copy of memory (step 1), so results come back through shared pages. */
static uint64_t with_processes(struct slice *sl, int k, uint64_t iters)
{
	pid_t pids[MAX_WORKERS];
	uint64_t total = 0;

	split(sl, k, iters);
	for (int i = 0; i < k; i++)
		if ((pids[i] = mp_fork()) == 0) {  /* fflush(stdout) + fork() */
			sl[i].sum = work(sl[i].lo, sl[i].hi);
			_exit(0);
		}
	for (int i = 0; i < k; i++) {
		expect_exit0(pids[i], mp_waitpid(pids[i]));
		total += sl[i].sum;
	}
	return total;
}

/* k threads; sl[] can be any memory: threads share the whole address space. */
static uint64_t with_threads(struct slice *sl, int k, uint64_t iters)
{
	pthread_t t[MAX_WORKERS];
	uint64_t total = 0;

	split(sl, k, iters);
	for (int i = 0; i < k; i++)
		MP_CHECK_PT(pthread_create(&t[i], NULL, thread_main, &sl[i]));
	for (int i = 0; i < k; i++) {
		MP_CHECK_PT(pthread_join(t[i], NULL));
		total += sl[i].sum;
	}
	return total;
}

static uint64_t serial(struct slice *sl, int k, uint64_t iters)
{
	(void)sl, (void)k;
	return work(0, iters);
}

/* Best of `repeat` runs (the least disturbed by other programs), and
 * whether every run gave the same total. */
struct timing { double ms; uint64_t sum; bool same; };

static struct timing best_of(long repeat, struct slice *sl, int k,
			     uint64_t iters,
			     uint64_t (*run)(struct slice *, int, uint64_t))
{
	struct timing t = { .ms = -1, .same = true };

	for (long r = 0; r < repeat; r++) {
		int64_t t0 = mp_now_ns();
		uint64_t sum = run(sl, k, iters);
		double ms = (double)(mp_now_ns() - t0) / 1e6;

		if (r == 0)
			t.sum = sum;
		t.same = t.same && sum == t.sum;
		if (t.ms < 0 || ms < t.ms)
			t.ms = ms;
	}
	return t;
}

/* A child that dies the way buggy C dies: a store to a page it may not
 * touch. */
static _Noreturn void crash(void)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	long page = sysconf(_SC_PAGESIZE);

	/* ASan installs a SIGSEGV handler that reports and exits 1: restore
	 * the default action (death by the signal) of a plain build.  And no
	 * core file for a crash made on purpose. */
	MP_CHECK(sigemptyset(&dfl.sa_mask));
	MP_CHECK(sigaction(SIGSEGV, &dfl, NULL));
	MP_CHECK(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
	MP_CHECK(page);
	int *p = mmap(NULL, (size_t)page, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		mp_die("mmap");
	mp_say("child", "storing to a PROT_NONE page at %p", (void *)p);
	*(volatile int *)p = 42;  /* the MMU refuses; the kernel: SIGSEGV */
	_exit(0);                 /* not reached */
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double median_us(int64_t *ns, long n)
{
	qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
	return (double)ns[n / 2] / 1e3;
}

/* The Python twin, its stdout on a pipe: echo its lines and compare its
 * checksum with ours.  1 = match, 0 = mismatch or failure, -1 = skipped. */
static int run_twin(long iters, long workers, long repeat, uint64_t want)
{
	const char *py = mp_python3();
	char script[4096], a_iters[32], a_workers[32], a_repeat[32];
	char out[16384];
	size_t len = 0;
	int fd[2];

	if (!py || iters == 0) {
		mp_say("parent", "Python twin skipped (%s)",
		       py ? "--py-iters 0" :
			    "python3 was not found at configure time");
		return -1;
	}
	mp_say("parent", "the Python twin: threading.Thread takes turns under "
	       "the GIL, multiprocessing.Process does not");
	snprintf(script, sizeof script, "%s/process_vs_thread.py",
		 MP_LESSON_DIR);
	snprintf(a_iters, sizeof a_iters, "%ld", iters);
	snprintf(a_workers, sizeof a_workers, "%ld", workers);
	snprintf(a_repeat, sizeof a_repeat, "%ld", repeat);
	MP_CHECK(pipe(fd));
	pid_t pid = mp_fork();
	if (pid == 0) {
		MP_CHECK(dup2(fd[1], STDOUT_FILENO));
		MP_CHECK(close(fd[0]));
		MP_CHECK(close(fd[1]));
		execl(py, py, script, "--iters", a_iters, "--workers",
		      a_workers, "--repeat", a_repeat, (char *)NULL);
		mp_die("exec %s", py);
	}
	MP_CHECK(close(fd[1]));
	/* A few lines.  Were there more than fit, closing our end would give
	 * it EPIPE: the check below fails instead of hanging. */
	while (len < sizeof out - 1) {
		ssize_t n = read(fd[0], out + len, sizeof out - 1 - len);

		if (n == 0)
			break;
		if (n == -1 && errno != EINTR)
			mp_die("read from python3");
		if (n > 0)
			len += (size_t)n;
	}
	MP_CHECK(close(fd[0]));
	out[len] = '\0';
	int status = mp_waitpid(pid);

	/* Parse before printing: strtok() cuts the buffer into lines. */
	const char *cs = strstr(out, "checksum 0x");
	uint64_t got = cs ? strtoull(cs + strlen("checksum "), NULL, 16) : 0;
	bool agree = cs && strstr(cs, "rows agree");

	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
		printf("    python: %s\n", line);
	if (fflush(stdout) == EOF)
		mp_die("fflush");
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 && agree &&
	       got == want;
}

int main(int argc, char *argv[])
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	long workers = ncpu < 1 ? 1 : ncpu > 8 ? 8 : ncpu;
	long iters = 20000000, repeat = 2, spawns = 100, py_iters = 200000;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 1, MAX_WORKERS,
			 "speedup table rows 1..N workers"),
		MP_OPT_L("iters", &iters, 1000, 100000000000,
			 "CPU-bound work, split over the workers"),
		MP_OPT_L("repeat", &repeat, 1, 1000,
			 "runs per table cell; the best one counts"),
		MP_OPT_L("spawns", &spawns, 1, 1000000,
			 "create+wait cycles timed per kind"),
		MP_OPT_L("py-iters", &py_iters, 0, 100000000,
			 "work of the Python twin (0: skip it)"),
	};

	mp_parse_options(argc, argv, "The same work in forked processes and in "
			 "pthreads: isolation, crashes, cost, speedup.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();  /* Ctrl-C: stop, reap the children, exit 130 */

	/* 1. Memory isolation.  After fork() the child has a copy of every
	 * page (copy-on-write: shared until someone writes), at the same
	 * addresses.  A thread works on the very same memory. */
	long value = 1;
	pid_t pid = mp_fork();

	if (pid == 0) {
		value = 2;
		mp_say("child", "value=%ld at %p (my copy)", value,
		       (void *)&value);
		_exit(0);
	}
	expect_exit0(pid, mp_waitpid(pid));
	bool proc_private = value == 1;
	mp_say("parent", "after the child: value=%ld at %p -> its write is %s",
	       value, (void *)&value,
	       proc_private ? "invisible here" : "HERE?!");
	pthread_t t;
	MP_CHECK_PT(pthread_create(&t, NULL, set_to_3, &value));
	MP_CHECK_PT(pthread_join(t, NULL));  /* its write happens-before */
	bool thread_shared = value == 3;
	mp_say("parent", "after the thread: value=%ld -> its write is %s",
	       value, thread_shared ? "visible here" : "LOST?!");

	/* 2. Crash containment.  The child's bad store kills the child; we
	 * read its death from waitpid().  The same store in a thread would
	 * end the whole process: SIGSEGV's default action kills every thread
	 * (so it is not tried here).  Python: Process.exitcode == -11. */
	pid = mp_fork();
	if (pid == 0)
		crash();
	int status = mp_waitpid(pid);
	bool contained = WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
	if (WIFSIGNALED(status))
		mp_say("parent", "child %jd was killed by signal %d (%s); the "
		       "parent runs on", (intmax_t)pid, WTERMSIG(status),
		       strsignal(WTERMSIG(status)));
	else
		mp_say("parent", "child %jd was NOT killed (status 0x%x)",
		       (intmax_t)pid, (unsigned)status);

	/* 3. Creation cost: create + wait, many times, median.  fork() copies
	 * the page tables and much of the process's kernel state;
	 * pthread_create() takes a stack (glibc caches them) and calls clone()
	 * with CLONE_VM | CLONE_FILES | ...: it shares all that instead. */
	int64_t *ns = malloc(sizeof *ns * (size_t)spawns);

	if (!ns)
		mp_die("malloc");
	for (long i = 0; i < spawns; i++) {
		int64_t t0 = mp_now_ns();

		if ((pid = mp_fork()) == 0)
			_exit(0);
		expect_exit0(pid, mp_waitpid(pid));
		ns[i] = mp_now_ns() - t0;
	}
	double fork_us = median_us(ns, spawns);
	for (long i = 0; i < spawns; i++) {
		int64_t t0 = mp_now_ns();

		MP_CHECK_PT(pthread_create(&t, NULL, noop, NULL));
		MP_CHECK_PT(pthread_join(t, NULL));
		ns[i] = mp_now_ns() - t0;
	}
	double thread_us = median_us(ns, spawns);
	free(ns);
	mp_say("parent", "create+wait, median of %ld: process %.1f us, thread "
	       "%.1f us (%.1fx)", spawns, fork_us, thread_us,
	       fork_us / thread_us);

	/* 4. Speedup: the same work on 1..N workers of each kind, every total
	 * checked against the serial sum so that no run can cheat. */
	size_t shsize = sizeof(struct slice) * MAX_WORKERS;
	struct slice *shared = mp_shm_alloc(shsize);  /* for the children */
	struct slice local[MAX_WORKERS];               /* for the threads */

	if (!shared)
		mp_die("mp_shm_alloc");
	struct timing ser = best_of(repeat, NULL, 1, (uint64_t)iters, serial);
	int rows_ok = 0;

	mp_say("parent", "%ld iterations on %ld online CPUs, best of %ld: "
	       "serial %.1f ms, sum 0x%016" PRIx64, iters, ncpu, repeat, ser.ms,
	       ser.sum);
	mp_say("parent", "workers     processes            threads");
	for (int k = 1; k <= workers; k++) {
		struct timing pr = best_of(repeat, shared, k, (uint64_t)iters,
					   with_processes);
		struct timing th = best_of(repeat, local, k, (uint64_t)iters,
					   with_threads);
		bool same = ser.same && pr.same && th.same &&
			    pr.sum == ser.sum && th.sum == ser.sum;

		rows_ok += same;
		mp_say("parent", "%7d  %8.1f ms %5.2fx  %8.1f ms %5.2fx%s", k,
		       pr.ms, ser.ms / pr.ms, th.ms, ser.ms / th.ms,
		       same ? "" : "  sum MISMATCH");
	}
	MP_CHECK(mp_shm_free(shared, shsize));
	mp_say("parent", "C threads run in parallel (no GIL): both columns "
	       "grow alike, up to the number of cores");

	/* 5. The Python twin: the same table, threading vs multiprocessing. */
	int twin = run_twin(py_iters, workers, repeat,
			    work(0, (uint64_t)py_iters));

	bool ok = proc_private && thread_shared && contained &&
		  rows_ok == workers && twin != 0;
	printf("result: child write %s, thread write %s, child SIGSEGV %s, "
	       "sums %d/%ld rows, python %s %s\n",
	       proc_private ? "private" : "LEAKED",
	       thread_shared ? "shared" : "LOST",
	       contained ? "contained" : "NOT SEEN", rows_ok, workers,
	       twin > 0 ? "matches" : twin < 0 ? "skipped" : "FAILED",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
