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
 *            [--iters N (20000000, 1000..10^11)] [--repeat N (2, 1..1000)]
 *            [--spawns N (100, 1..10^6)] [--py-iters N (100000, 0..10^8)]
 * Output:  (trimmed; 2 cores shared with other jobs)
 *   [child 7646 +0.1ms] value=2 at 0x7ffd7a9c1c70 (my copy)
 *   [parent 7644 +0.3ms] after the child: value=1 at 0x7ffd7a9c1c70 -> its
 *                        write is invisible here
 *   [parent 7644 +0.5ms] after the thread: value=3 -> its write is visible
 *   [parent 7644 +0.8ms] child 7648 was killed by signal 11 (Segmentation
 *                        fault); the parent runs on
 *   [parent 7644 +24.9ms] create+wait, median of 100: process 204.9 us,
 *                         thread 47.1 us (4.4x)
 *   [parent 7644 +62.1ms] workers     processes            threads
 *   [parent 7644 +162.5ms]       1      27.3 ms  0.68x      18.5 ms  1.00x
 *   [parent 7644 +213.2ms]       2      12.6 ms  1.47x      11.9 ms  1.55x
 *       python: workers  threads            processes
 *       python:       1     30.5 ms  0.94x     32.0 ms  0.90x
 *       python:       2     29.7 ms  0.96x     17.7 ms  1.62x
 *   result: child write private, thread write shared, child SIGSEGV
 *           contained, sums 2/2 rows, python matches OK
 * Try this: --workers 8 on 2 cores (past the core count nothing gets faster);
 *   give the processes `local` instead of `shared` in step 4 (sums are lost);
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

static void *set_to_3(void *arg)
{
	*(long *)arg = 3;
	return NULL;
}

/* k workers (processes or threads), each summing its slice, side by side.
 * A child's plain writes stay in its own copy of memory (step 1), so for
 * processes sl[] must be MAP_SHARED; threads share the whole address space,
 * so any memory does for them.  k == 0: all the work in this thread. */
static uint64_t run_workers(bool process, struct slice *sl, int k,
			    uint64_t iters)
{
	pid_t pid[MAX_WORKERS];
	pthread_t tid[MAX_WORKERS];
	uint64_t total = 0;

	if (k == 0)
		return work(0, iters);
	for (int i = 0; i < k; i++) {
		sl[i].lo = iters * (uint64_t)i / (uint64_t)k;
		sl[i].hi = iters * (uint64_t)(i + 1) / (uint64_t)k;
		if (!process)
			MP_CHECK_PT(pthread_create(&tid[i], NULL, thread_main,
						   &sl[i]));
		else if ((pid[i] = mp_fork()) == 0) {  /* fflush + fork */
			sl[i].sum = work(sl[i].lo, sl[i].hi);
			_exit(0);
		}
	}
	for (int i = 0; i < k; i++) {
		if (process)
			expect_exit0(pid[i], mp_waitpid(pid[i]));
		else
			MP_CHECK_PT(pthread_join(tid[i], NULL));
		total += sl[i].sum;
	}
	return total;
}

/* Best of `repeat` runs (the least disturbed by other programs), and
 * whether every run gave the same total. */
struct timing { double ms; uint64_t sum; bool same; };

static struct timing best_of(long repeat, bool process, struct slice *sl,
			     int k, uint64_t iters)
{
	struct timing t = { .ms = -1, .same = true };

	for (long r = 0; r < repeat; r++) {
		int64_t t0 = mp_now_ns();
		uint64_t sum = run_workers(process, sl, k, iters);
		double ms = (double)(mp_now_ns() - t0) / 1e6;

		if (r == 0)
			t.sum = sum;
		t.same = t.same && sum == t.sum;
		if (t.ms < 0 || ms < t.ms)
			t.ms = ms;
	}
	return t;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* Median of n create+wait cycles of a child that _exits at once, or of a
 * thread that returns at once, in microseconds.  ns[] holds n samples. */
static double median_start_us(bool process, int64_t *ns, long n)
{
	for (long i = 0; i < n; i++) {
		int64_t t0 = mp_now_ns();
		struct slice none = { 0 };  /* work(0, 0): returns at once */
		pthread_t t;
		pid_t pid;

		if (process) {
			if ((pid = mp_fork()) == 0)
				_exit(0);
			expect_exit0(pid, mp_waitpid(pid));
		} else {
			MP_CHECK_PT(pthread_create(&t, NULL, thread_main,
						   &none));
			MP_CHECK_PT(pthread_join(t, NULL));
		}
		ns[i] = mp_now_ns() - t0;
	}
	qsort(ns, (size_t)n, sizeof *ns, cmp_i64);
	return (double)ns[n / 2] / 1e3;
}

/* A child that dies the way buggy C dies: a store to a page it may not
 * touch. */
static _Noreturn void crash(void)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	/* ASan installs a SIGSEGV handler that reports and exits 1: restore
	 * the default action (death by the signal) of a plain build.  And no
	 * core file for a crash made on purpose. */
	MP_CHECK(sigemptyset(&dfl.sa_mask));
	MP_CHECK(sigaction(SIGSEGV, &dfl, NULL));
	MP_CHECK(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
	/* One page (mmap rounds the length up) that may not be touched. */
	int *p = mmap(NULL, 1, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		mp_die("mmap");
	mp_say("child", "storing to a PROT_NONE page at %p", (void *)p);
	*(volatile int *)p = 42;  /* the MMU refuses; the kernel: SIGSEGV */
	_exit(0);                 /* not reached */
}

struct twin { uint64_t want; bool agree; };

/* Each line of the Python twin: echo it, and check its checksum. */
static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	uint64_t got;
	int end = 0;  /* %n: set only if " rows agree" matched too */

	if (sscanf(line, "checksum %" SCNx64 " rows agree%n", &got, &end) == 1 &&
	    end > 0)
		t->agree = got == t->want;
	if (printf("    python: %s\n", line) < 0 || fflush(stdout) == EOF)
		mp_die("writing to stdout");
}

/* The Python twin, its lines echoed as they come, its checksum compared
 * with want.  1 = match, 0 = mismatch or failure, -1 = skipped. */
static int run_twin(long iters, long workers, long repeat, uint64_t want)
{
	char arg[3][24];
	struct twin t = { want, false };

	if (!mp_python3() || iters == 0) {
		mp_say("parent", "Python twin skipped (%s)",
		       mp_python3() ? "--py-iters 0" :
				      "python3 was not found at configure time");
		return -1;
	}
	mp_say("parent", "the Python twin: threading.Thread takes turns under "
	       "the GIL, multiprocessing.Process does not");
	snprintf(arg[0], sizeof arg[0], "%ld", iters);
	snprintf(arg[1], sizeof arg[1], "%ld", workers);
	snprintf(arg[2], sizeof arg[2], "%ld", repeat);
	int status = mp_run_twin(MP_LESSON_DIR "/process_vs_thread.py",
				 (char *[]){ "--iters", arg[0], "--workers",
					     arg[1], "--repeat", arg[2], NULL },
				 60 + (double)iters * (double)repeat * 1e-6,
				 twin_line, &t);

	if (status == -1)
		mp_say("parent", "python twin: %s", strerror(errno));
	return status != -1 && WIFEXITED(status) &&
	       WEXITSTATUS(status) == 0 && t.agree;
}

int main(int argc, char *argv[])
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	long workers = ncpu < 1 ? 1 : ncpu > 8 ? 8 : ncpu;
	long iters = 20000000, repeat = 2, spawns = 100, py_iters = 100000;
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
	       value, thread_shared ? "visible" : "LOST?!");

	/* 2. Crash containment.  The child's bad store kills the child; we
	 * read its death from waitpid().  The same store in a thread would
	 * end the whole process: SIGSEGV's default action kills every thread
	 * (so it is not tried here).  Python: Process.exitcode == -11. */
	if ((pid = mp_fork()) == 0)
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

	/* 3. Creation cost.  fork() copies the page tables and much of the
	 * process's kernel state; pthread_create() takes a stack (glibc
	 * caches them) and calls clone() with CLONE_VM | CLONE_FILES | ...:
	 * it shares all that instead. */
	int64_t *ns = malloc(sizeof *ns * (size_t)spawns);

	if (!ns)
		mp_die("malloc");
	double fork_us = median_start_us(true, ns, spawns);
	double thread_us = median_start_us(false, ns, spawns);
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
	struct timing ser = best_of(repeat, false, NULL, 0, (uint64_t)iters);
	int rows_ok = 0;

	mp_say("parent", "%ld iterations on %ld online CPUs, best of %ld: "
	       "serial %.1f ms, sum 0x%016" PRIx64, iters, ncpu, repeat, ser.ms,
	       ser.sum);
	mp_say("parent", "workers     processes            threads");
	for (int k = 1; k <= workers; k++) {
		struct timing pr = best_of(repeat, true, shared, k,
					   (uint64_t)iters);
		struct timing th = best_of(repeat, false, local, k,
					   (uint64_t)iters);
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
