/* 6_performance/profiling_mp_programs.c -- find the bottleneck of a
 * multi-process program from its counters, fix it, measure again
 *
 * Python:  cProfile.Profile() in each worker (runcall, then pstats): the
 *          twin profiling_mp_programs.py profiles the same planted program
 *          per process.  cProfile times functions with time.perf_counter by
 *          default (Lib/cProfile.py, Modules/_lsprof.c): wall time, so a
 *          worker that waits on a Lock shows it as time inside acquire().
 * C:       the same program: N workers, each task takes a process-shared
 *          mutex and computes *inside* it (the hot lock), and worker 0 owns
 *          three times the share of the others (the straggler).  Measured
 *          from outside, per worker, while it is a zombie -- waitid(WEXITED
 *          | WNOWAIT) keeps it until we have read it: /proc/PID/status
 *          (voluntary and involuntary context switches),
 *          /proc/PID/schedstat (run-queue wait); then wait4() for user
 *          and system CPU, max RSS and minor faults.  From inside: time
 *          spent waiting for the lock.  Then the fix (compute outside the
 *          lock and add once per worker; take tasks from a shared atomic
 *          counter) and the same table again.  And perf, when this machine
 *          lets us run it.
 * Usage:   profiling_mp_programs [--workers N (4, 2..64)] [--tasks N (4000,
 *            1..10^7)] [--work N (40000, LCG steps a task)] [--full]
 *            [--no-python] [--csv] [--plot [FILE.svg|png]]
 * Output:  (default build, 2 CPUs shared with other jobs; trimmed)
 *   planted worker  tasks  user s  sys s lock wait  vol cs  inv cs  runq s ...
 *   planted      0   2002   0.077  0.000     0.032       9      24   0.067
 *   planted      1    666   0.026  0.000     0.041      12      10   0.069
 *     wall 0.169 s; the first worker to run out of tasks waited 0.067 s for
 *     the last, which did 1722 more meanwhile.  Worker 0 used 3.0x the CPU
 *     of the others: a straggler.  Computing or waiting for the lock, they
 *     waited 50% of the time (47 voluntary context switches: asleep on
 *     it): a hot lock.
 *   fixed        0   1024   0.040  0.000     0.000       1      44   0.108
 *   fixed        1   1008   0.039  0.000     0.000       1      44   0.107
 *     wall 0.148 s; the first worker to run out of tasks waited 0.001 s for
 *     the last, which did 17 more meanwhile.  Worker 0 used 1.0x [...] 0%
 *   fixed / planted wall time: 0.88
 *   perf: software events work here, hardware counters do not (a VM?); try:
 *     perf stat -e task-clock,context-switches,cpu-migrations,page-faults ...
 *   python planted 0:  202 tasks, 0.065 s profiled: crunch() 0.032 s,
 *     acquire() x202 0.012 s (18%)
 *   python fixed   0:  120 tasks, 0.061 s profiled: crunch() 0.061 s,
 *     acquire() x49 0.000 s (0%)      (those acquires: the task counter's)
 *   result: 4000 tasks x2 exact; planted: worker 0 at 3.0x, lock wait 50%,
 *     1722 tasks after the first ran out; fixed: lock wait 0%, 17 <= 24;
 *     python: acquire() 25% -> 0% OK
 *   On 2 CPUs the fix gains little wall time (0.88 here): 4 workers share
 *   2 CPUs either way, and runq s shows them waiting for one.  The wall
 *   times are printed, not judged: on a busy machine they swing.
 * Try this: --workers 2 (the lock costs less, the straggler more);
 *   run the perf commands it prints; make the fixed version keep the
 *   static split and see which line of the verdict changes.
 */
#include "mp.h"

#include <sched.h>
#include <sys/resource.h>

enum { MAXW = 64, CHUNK = 8 };

struct shared {
	pthread_mutex_t lock;  /* process-shared */
	uint64_t total;        /* guarded by lock */
	_Atomic long next;     /* the fixed version's next task */
	_Atomic bool go;       /* the start gate: all workers start at once */
	_Atomic bool out;      /* a worker has run out of tasks ... */
	_Atomic long after;    /* ... and the others did this many more */
	struct { long tasks; int64_t wait_ns, end_ns; } w[MAXW];
};

/* One row of the profile: one worker, seen from outside and inside. */
struct prof {
	long tasks, vcs, ivcs, maxrss, minflt;
	double user, sys, runq, wait;  /* s; wait: for the lock */
};

/* A task's work, named as in the Python twin so that both profiles read
 * alike: n steps of an LCG (mp_lcg); mp_lcg_jump() checks it. */
static uint64_t crunch(uint64_t x, long n)
{
	return mp_lcg(x, (uint64_t)n);
}

static void lock(struct shared *sh, int w)
{
	int64_t t0 = mp_now_ns();

	MP_CHECK_PT(pthread_mutex_lock(&sh->lock));
	sh->w[w].wait_ns += mp_now_ns() - t0;
}

/* The planted program: a static split that gives worker 0 three shares
 * of the tasks and the others one each, and the whole task computed
 * while holding the lock. */
static void slow_worker(struct shared *sh, int w, int nw, long tasks,
			long work)
{
	long per = tasks / (nw + 2), big = tasks - per * (nw - 1);
	long lo = w == 0 ? 0 : big + (w - 1) * per;
	long hi = w == 0 ? big : lo + per;

	for (long i = lo; i < hi; i++) {
		lock(sh, w);
		sh->total += crunch((uint64_t)i + 1, work);
		MP_CHECK_PT(pthread_mutex_unlock(&sh->lock));
		sh->w[w].tasks++;
		if (atomic_load(&sh->out))  /* the others sit idle meanwhile */
			atomic_fetch_add(&sh->after, 1);
	}
	atomic_store(&sh->out, true);
}

/* The fix: tasks from a shared counter, CHUNK at a time (whoever is free
 * takes the next), computed outside the lock, added once at the end. */
static void fixed_worker(struct shared *sh, int w, long tasks, long work)
{
	uint64_t mine = 0;

	for (;;) {
		long lo = atomic_fetch_add(&sh->next, CHUNK);

		if (lo >= tasks)
			break;
		for (long i = lo; i < lo + CHUNK && i < tasks; i++) {
			mine += crunch((uint64_t)i + 1, work);
			sh->w[w].tasks++;
			if (atomic_load(&sh->out))
				atomic_fetch_add(&sh->after, 1);
		}
	}
	atomic_store(&sh->out, true);
	lock(sh, w);
	sh->total += mine;
	MP_CHECK_PT(pthread_mutex_unlock(&sh->lock));
}

/* "name:   value" from /proc/PID/status. */
static long status_field(pid_t pid, const char *name)
{
	char path[64], line[256];
	long v = -1;
	size_t len = strlen(name);

	snprintf(path, sizeof path, "/proc/%jd/status", (intmax_t)pid);
	FILE *f = fopen(path, "r");

	if (!f)
		mp_die("fopen %s", path);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, name, len) == 0 && line[len] == ':')
			v = strtol(line + len + 1, NULL, 10);
	MP_CHECK(fclose(f) == EOF ? -1 : 0);
	return v;
}

static double runq_s(pid_t pid, double *on_cpu)
{
	char path[64];
	unsigned long long on, wait;

	snprintf(path, sizeof path, "/proc/%jd/schedstat", (intmax_t)pid);
	FILE *f = fopen(path, "r");

	if (!f || fscanf(f, "%llu %llu", &on, &wait) != 2)
		mp_die("%s", path);
	MP_CHECK(fclose(f) == EOF ? -1 : 0);
	if (on_cpu)
		*on_cpu = (double)on / 1e9;
	return (double)wait / 1e9;
}

static double tv(struct timeval t)
{
	return (double)t.tv_sec + (double)t.tv_usec / 1e6;
}

/* Wait for pid to exit, 30 s at most, without reaping it: a zombie keeps
 * its counters in /proc until wait4() takes them.  Then take them.  (run()
 * calls it once every worker has exited.) */
static struct prof profile(pid_t pid)
{
	siginfo_t si;
	struct prof p = { 0 };
	struct rusage ru;
	int st;

	for (int64_t end = mp_now_ns() + 30000000000;;) {
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT |
			   WNOHANG) == -1 && errno != EINTR)
			mp_die("waitid %jd", (intmax_t)pid);
		if (si.si_pid == pid)
			break;
		if (mp_now_ns() > end)
			mp_die("worker %jd still running after 30 s",
			       (intmax_t)pid);
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
	p.vcs = status_field(pid, "voluntary_ctxt_switches");
	p.ivcs = status_field(pid, "nonvoluntary_ctxt_switches");
	p.runq = runq_s(pid, NULL);
	while (wait4(pid, &st, 0, &ru) == -1)
		if (errno != EINTR)
			mp_die("wait4");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		mp_die("worker %jd failed", (intmax_t)pid);
	p.user = tv(ru.ru_utime);
	p.sys = tv(ru.ru_stime);
	p.maxrss = ru.ru_maxrss;
	p.minflt = ru.ru_minflt;
	return p;
}

/* One run of the program, planted or fixed; its profile in p[]; in
 * *tail how long the first worker to finish waited for the last one, and
 * in *after how many tasks the others did meanwhile. */
static double run(struct shared *sh, bool fix, int nw, long tasks, long work,
		  struct prof p[], double *tail, long *after, bool *ok)
{
	int64_t first = INT64_MAX, last = 0;

	pid_t pid[MAXW];
	uint64_t want = 0;
	long done = 0;

	sh->total = 0;
	atomic_store(&sh->next, 0);
	atomic_store(&sh->go, false);
	atomic_store(&sh->out, false);
	atomic_store(&sh->after, 0);
	memset(sh->w, 0, sizeof sh->w);
	for (int w = 0; w < nw; w++)
		if ((pid[w] = mp_fork()) == 0) {
			/* Wait at the gate (10 s at most): forking 16 takes
			 * long enough to make the first ones end first. */
			for (int64_t end = mp_now_ns() + 10000000000;
			     !atomic_load(&sh->go);)
				if (sched_yield() == -1 || mp_now_ns() > end)
					_exit(EXIT_FAILURE);
			if (fix)
				fixed_worker(sh, w, tasks, work);
			else
				slow_worker(sh, w, nw, tasks, work);
			sh->w[w].end_ns = mp_now_ns();
			_exit(EXIT_SUCCESS);
		}
	int64_t t0 = mp_now_ns();

	atomic_store(&sh->go, true);
	/* Until all have exited (zombies, not reaped): while any runs, its
	 * CPU time must grow.  Workers asleep for 3 s are stuck -- a wake-up
	 * lost on a lock that is not process-shared -- and are stopped. */
	double cpu_then = -1;

	for (int64_t moved = mp_now_ns();;) {
		double cpu = 0;
		int running = 0;

		for (int w = 0; w < nw; w++) {
			siginfo_t si = { .si_pid = 0 };
			double on;

			if (waitid(P_PID, (id_t)pid[w], &si, WEXITED |
				   WNOWAIT | WNOHANG) == -1 && errno != EINTR)
				mp_die("waitid %jd", (intmax_t)pid[w]);
			if (si.si_pid == pid[w])
				continue;
			running++;
			runq_s(pid[w], &on);
			cpu += on;
		}
		if (running == 0)
			break;
		if (cpu != cpu_then)
			moved = mp_now_ns();
		cpu_then = cpu;
		if (mp_now_ns() - moved > 3000000000) {
			mp_say("parent", "%d workers used no CPU for 3 s: "
			       "stuck (a lock that is not process-shared?); "
			       "stopped", running);
			for (int w = 0; w < nw; w++) {
				MP_CHECK(kill(pid[w], SIGKILL));
				mp_waitpid(pid[w]);
			}
			memset(p, 0, sizeof *p * (size_t)nw);
			*tail = 0;
			*after = 0;
			*ok = false;
			return mp_elapsed_s(t0);
		}
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
	for (int w = 0; w < nw; w++) {
		p[w] = profile(pid[w]);
		p[w].tasks = sh->w[w].tasks;
		p[w].wait = (double)sh->w[w].wait_ns / 1e9;
		done += p[w].tasks;
		first = sh->w[w].end_ns < first ? sh->w[w].end_ns : first;
		last = sh->w[w].end_ns > last ? sh->w[w].end_ns : last;
	}
	double wall = mp_elapsed_s(t0);

	*tail = (double)(last - first) / 1e9;
	*after = atomic_load(&sh->after);

	for (long i = 0; i < tasks; i++)
		want += mp_lcg_jump((uint64_t)i + 1, (uint64_t)work);
	*ok &= sh->total == want && done == tasks;
	return wall;
}

/* What the table points at: the worker with the most CPU time against the
 * mean of the others, and of the time the workers spent computing or
 * waiting for the lock, the share of waiting.  (Not a share of wall time:
 * on a busy machine they also wait for a CPU, which says nothing about
 * the lock -- that is runq s.) */
struct diag { int top; double skew, waiting, cpu; long vcs; };

static struct diag diagnose(const struct prof p[], int nw)
{
	struct diag d = { 0, 0, 0, 0, 0 };
	double others = 0, wait = 0, cpu = 0;

	for (int w = 0; w < nw; w++) {
		if (p[w].user + p[w].sys > p[d.top].user + p[d.top].sys)
			d.top = w;
		wait += p[w].wait;
		cpu += p[w].user + p[w].sys;
		d.vcs += p[w].vcs;
	}
	for (int w = 0; w < nw; w++)
		others += w == d.top ? 0 : p[w].user + p[w].sys;
	others /= nw - 1;
	d.skew = (p[d.top].user + p[d.top].sys) / (others > 0 ? others : 1e-9);
	d.waiting = wait / (wait + cpu > 0 ? wait + cpu : 1e-9);
	d.cpu = cpu;
	return d;
}

static void print_profile(const char *name, const struct prof p[], int nw,
			  double wall, double tail, long after, bool csv)
{
	struct diag d = diagnose(p, nw);

	if (!csv)
		printf("%-7s %6s %6s %7s %6s %9s %7s %7s %7s %7s %7s\n",
		       name, "worker", "tasks", "user s", "sys s", "lock wait",
		       "vol cs", "inv cs", "runq s", "maxrss", "minflt");
	for (int w = 0; w < nw; w++)
		printf(csv ? "%s,%d,%ld,%.4f,%.4f,%.4f,%ld,%ld,%.4f,%ld,%ld\n"
		       : "%-7s %6d %6ld %7.3f %6.3f %9.3f %7ld %7ld %7.3f %7ld "
		       "%7ld\n", name, w, p[w].tasks, p[w].user, p[w].sys,
		       p[w].wait, p[w].vcs, p[w].ivcs, p[w].runq, p[w].maxrss,
		       p[w].minflt);
	if (csv)
		return;
	printf("  wall %.3f s; the first worker to run out of tasks waited "
	       "%.3f s for the last, which did %ld more meanwhile.  Worker %d "
	       "used %.1fx the CPU of the others%s.  Computing or waiting for "
	       "the lock, they waited %.0f%% of the time (%ld voluntary "
	       "context switches: asleep on it)%s.\n", wall, tail, after,
	       d.top, d.skew, d.skew >= 2 ? ": a straggler" : "",
	       d.waiting * 100, d.vcs, d.waiting >= 0.3 ? ": a hot lock" :
	       "");
}

/* Does perf run here, and can it read hardware counters?  "perf stat -x,"
 * prints one CSV line per event on stderr; an event the machine (often a
 * VM) does not offer reads "<not supported>".  timeout(1) bounds it. */
static void check_perf(const char *self)
{
	char line[256];
	bool hw = true;

	if (fflush(stdout) == EOF)
		mp_die("fflush");
	FILE *f = popen("timeout 5 perf stat -x, -e task-clock,cycles true "
			"2>&1 >/dev/null", "r");

	if (!f)
		mp_die("popen perf");
	while (fgets(line, sizeof line, f))
		if (strstr(line, ",cycles") && line[0] == '<')
			hw = false;  /* <not supported> or <not counted> */
	int st = pclose(f);

	if (st == -1)
		mp_die("pclose");
	if (!WIFEXITED(st) || WEXITSTATUS(st) == 127)
		printf("perf: not found (Debian: linux-perf); ");
	else if (WEXITSTATUS(st) != 0)
		printf("perf: it runs but does not count here (exit %d; see "
		       "/proc/sys/kernel/perf_event_paranoid); ",
		       WEXITSTATUS(st));
	else
		printf("perf: software events work here, hardware counters "
		       "%s; ", hw ? "too" : "do not (a VM?)");
	printf("try:\n  perf stat -e task-clock,context-switches,"
	       "cpu-migrations,page-faults %s --no-python\n  perf record -e "
	       "cpu-clock -g -o /tmp/perf.data %s --no-python\n  perf report "
	       "-i /tmp/perf.data --sort comm,pid\n", self, self);
}

/* The twin's lines: python,<mode>,<worker>,<tasks>,<s>,<crunch calls>,
 * <crunch s>,<acquire calls>,<acquire s> and python-total,<mode>,<sum>. */
struct twin {
	long tasks, work;
	int nw, rows;
	bool ok, csv;
	double s[2], acq[2];  /* [planted, fixed]: profiled, in acquire() */
};

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	char mode[16];
	int w;
	long n, cc, ac;
	double s, cs, as;
	unsigned long long sum, want = 0;

	if (sscanf(line, "python-total,%15[^,],%llu", mode, &sum) == 2) {
		for (long i = 0; i < t->tasks; i++)
			want += mp_lcg_jump((uint64_t)i + 1, (uint64_t)t->work);
		t->ok &= sum == want;
		return;
	}
	if (sscanf(line, "python,%15[^,],%d,%ld,%lf,%ld,%lf,%ld,%lf", mode, &w,
		   &n, &s, &cc, &cs, &ac, &as) != 8) {
		fprintf(stderr, "python: %s\n", line);
		t->ok = false;
		return;
	}
	/* Exact: the planted split gives worker 0 three shares of the
	 * tasks, and every task of it one crunch() and one acquire(). */
	bool planted = strcmp(mode, "planted") == 0;
	long per = t->tasks / (t->nw + 2);

	t->ok &= cc == n && (!planted || ac == n) &&
		 (!planted || n == (w ? per : t->tasks - per * (t->nw - 1)));
	t->rows++;
	t->s[!planted] += s;
	t->acq[!planted] += as;
	if (!t->csv)
		printf("python %-7s %d: %4ld tasks, %.3f s profiled: crunch() "
		       "%.3f s, acquire() x%ld %.3f s (%.0f%%)\n", mode, w, n,
		       s, cs, ac, as, s > 0 ? as / s * 100 : 0);
}

int main(int argc, char *argv[])
{
	long nw = 4, tasks = 4000, work = 40000;
	bool full = false, nopy = false, csv = false, plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &nw, 2, MAXW, "worker processes"),
		MP_OPT_L("tasks", &tasks, 1, 10000000, "tasks in all"),
		MP_OPT_L("work", &work, 1, 1000000000, "LCG steps a task"),
		MP_OPT_F("full", &full, "the long run: --tasks 40000"),
		MP_OPT_F("no-python", &nopy, "skip the Python twin"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw CPU and lock wait per "
			 "worker; --plot FILE.svg|.png: into a file"),
	};

	mp_parse_options(argc, argv, "A program with a hot lock and a "
			 "straggler, profiled per process, fixed, measured "
			 "again.", opts, sizeof opts / sizeof *opts);
	mp_stop_on_signals();
	if (full)
		tasks = 40000;

	/* 1. One process-shared mutex for every worker. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	pthread_mutexattr_t a;

	if (!sh)
		mp_die("mp_shm_alloc");
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&sh->lock, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
	if (!csv)
		mp_say("parent", "%ld workers, %ld tasks of %ld LCG steps; "
		       "planted: worker 0 owns 3 times the share of the "
		       "others, and each task is computed holding the lock",
		       nw, tasks, work);

	/* 2. The planted program, profiled from outside and inside. */
	struct prof slow[MAXW], fast[MAXW];
	bool ok = true, exact = true;  /* exact: both runs ended, right sum */

	if (csv)
		printf("run,worker,tasks,user_s,sys_s,lock_wait_s,vcs,ivcs,"
		       "runq_s,maxrss_kib,minflt\n");
	long as, af;
	double ts, tf, ws = run(sh, false, (int)nw, tasks, work, slow, &ts,
				&as, &exact);

	print_profile("planted", slow, (int)nw, ws, ts, as, csv);

	/* 3. The fix, measured the same way. */
	double wf = run(sh, true, (int)nw, tasks, work, fast, &tf, &af,
			&exact);

	print_profile("fixed", fast, (int)nw, wf, tf, af, csv);
	struct diag ds = diagnose(slow, (int)nw);
	struct diag df = diagnose(fast, (int)nw);

	if (!csv)
		printf("fixed / planted wall time: %.2f\n", wf / ws);

	/* 4. The picture: CPU and lock wait per worker, before and after. */
	struct mp_table *t = mp_table_new("Per worker: CPU and lock wait, "
		"planted and fixed", "seconds", "worker,planted CPU,"
		"planted lock wait,fixed CPU,fixed lock wait");

	if (!t)
		mp_die("mp_table_new");
	for (int w = 0; w < nw; w++)
		if (mp_table_add(t, (double[]){ w, slow[w].user + slow[w].sys,
				 slow[w].wait, fast[w].user + fast[w].sys,
				 fast[w].wait }) == -1)
			mp_die("mp_table_add");
	if (plot && mp_plot(t, plot) == -1 && errno != ENOENT)
		mp_die("plot");
	mp_table_free(t);

	/* 5. perf, and Python's cProfile on the same program. */
	if (!csv)
		check_perf(argv[0]);
	struct twin py = { .tasks = tasks / 10, .work = work / 20,
			   .nw = (int)nw, .ok = true, .csv = csv };
	char arg[3][32];

	snprintf(arg[0], sizeof arg[0], "%ld", nw);
	snprintf(arg[1], sizeof arg[1], "%ld", py.tasks);
	snprintf(arg[2], sizeof arg[2], "%ld", py.work);
	if (!nopy && mp_python3()) {
		int st = mp_run_twin(MP_LESSON_DIR "/profiling_mp_programs.py",
				     (char *[]){ "--workers", arg[0],
						 "--tasks", arg[1], "--work",
						 arg[2], NULL }, 300,
				     twin_line, &py);

		py.ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
			 py.rows == 2 * nw;
	} else if (!csv) {
		printf("python: %s\n", nopy ? "skipped (--no-python)" :
		       "python3 was not found at configure time");
	}

	/* 6. The verdict: results exact in both runs; the planted table
	 *    points at worker 0 (3x the tasks of the others: 2x their CPU or
	 *    more) and at the lock (waiting 30% of the time or more), the
	 *    fixed one at neither: half that waiting at most (a worker
	 *    preempted while it holds the lock still makes the others wait
	 *    once), and no straggler: once a worker runs out of tasks, each
	 *    other one has one chunk in hand at most, (workers - 1) * CHUNK
	 *    tasks in all -- planted, worker 0 had more than that left.  CPU
	 *    times, lock waits and task counts hold on a busy machine; the
	 *    wall times and gaps are printed, not judged.  Not judged where
	 *    the program cannot show it: below 2 tasks a worker or 20 ms of
	 *    CPU (start-up noise); the lock below 4 workers (the others are
	 *    mostly done or waiting for a CPU while worker 0 holds it) or
	 *    10000 steps a task (then taking the lock costs more than the
	 *    work under it).  cProfile the same: acquire() takes 5% of the
	 *    planted workers' time or more (its share swings with the load),
	 *    a fifth of that at most once fixed. */
	bool skew = tasks >= 2 * nw && ds.cpu >= 0.02;
	bool hot = skew && nw >= 4 && work >= 10000;
	bool pyran = !nopy && mp_python3();
	long bound = (nw - 1) * CHUNK;

	ok &= exact;
	ok &= !skew || (ds.top == 0 && ds.skew >= 2 && as > bound);
	ok &= !hot || (ds.waiting >= 0.3 && df.waiting < ds.waiting / 2);
	ok &= af <= bound;
	double pa = py.s[0] > 0 ? py.acq[0] / py.s[0] : 0;
	double pf = py.s[1] > 0 ? py.acq[1] / py.s[1] : 0;

	if (pyran && py.tasks >= 2 * nw && py.work >= 200)
		py.ok &= pa >= 0.05 && pf < pa / 5;
	ok &= py.ok;
	if (csv) {
		if (!ok)
			fprintf(stderr, "profiling_mp_programs: MISMATCH\n");
	} else {
		printf("result: %ld tasks x2 %s; planted: worker %d at "
		       "%.1fx, lock wait %.0f%%, %ld tasks after the first "
		       "ran out; fixed: lock wait %.0f%%, %ld <= %ld", tasks,
		       exact ? "exact" : "NOT exact",
		       ds.top, ds.skew, ds.waiting * 100, as, df.waiting * 100,
		       af, bound);
		if (!skew || !hot)
			printf(" (not judged:%s%s)", skew ? "" :
			       " the planted straggler",
			       hot ? "" : " the lock");
		if (pyran)
			printf("; python: acquire() %.0f%% -> %.0f%%", pa * 100,
			       pf * 100);
		printf(" %s\n", ok ? "OK" : "MISMATCH");
	}
	MP_CHECK_PT(pthread_mutex_destroy(&sh->lock));
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
