/* 6_performance/cpu_vs_io_bound.c -- CPU-bound work stops scaling at the
 * core count; I/O-bound work keeps scaling; C threads have no GIL
 *
 * Python:  Pool(n).map(crunch, tasks) vs ThreadPool(n).map(wait_io, tasks):
 *          "processes for CPU-bound work, threads for I/O-bound work".  The
 *          reason is the GIL: one thread at a time runs bytecode, and a
 *          thread that wants it asks the holder to drop it after
 *          sys.getswitchinterval() = 5 ms (DEFAULT_INTERVAL 5000 us in
 *          Python/ceval_gil.c, ceval_gil.h before 3.12).  A blocking call
 *          such as select() releases it (Py_BEGIN_ALLOW_THREADS), so waiting
 *          threads overlap.  The free-threaded build of 3.13 (PEP 703,
 *          python3.13t) has no GIL.  cpu_vs_io_bound.py measures it.
 * C:       no GIL: threads run CPU-bound code on every core, like processes.
 *          fork / pthread_create; the I/O task blocks in read() on a
 *          timerfd (a file descriptor that becomes readable at a set time,
 *          as a socket does when its reply comes); wait4() for each child's
 *          user+sys CPU, CLOCK_THREAD_CPUTIME_ID for a thread's;
 *          /proc/thread-self/schedstat: time spent waiting in the run
 *          queue for a CPU.
 * Usage:   cpu_vs_io_bound [--tasks N (16)] [--work N (2000000, LCG steps a
 *            CPU task)] [--io-ms N (4)] [--max-workers N (16)] [--repeat N
 *            (3, the best counts)] [--full] [--no-python] [--csv]
 *            [--plot [FILE.svg|png]]
 * Output:  (2 CPUs shared with other jobs, load 2.9; trimmed)
 *   kind engine     workers   wall s  speedup   cpu s  runq s
 *   cpu  processes        1    0.032     1.00   0.032   0.000
 *   cpu  processes        2    0.016     1.98   0.032   0.000
 *   cpu  processes       16    0.020     1.57   0.036   0.119
 *   cpu  threads          2    0.025     1.30   0.032   0.011
 *   io   processes       16    0.006    10.49   0.004   0.003
 *   io   threads         16    0.005    13.45   0.001   0.004
 *   python (8 tasks of 100000 steps, gil=1) cpu threads x2: speedup 1.59,
 *     0.99 CPUs busy; processes x2: speedup 0.92, 0.70 CPUs; io threads x2:
 *     speedup 1.93
 *   result: 960 tasks exact; io x16 10.49 >= 4.0; cpu scaling not judged
 *     (other programs kept the CPUs: our workers waited up to 23% of their
 *     time); python threads x2 kept 0.99 CPUs busy <= 1.2 (the GIL) OK
 *   On free CPUs the CPU part is judged too: "cpu x16 1.58 <= 3.0, C
 *   threads x2 1.94 >= 1.3".  cpu s is user+sys; runq s the time the
 *   workers waited for a CPU: at 16 workers on 2 CPUs, most of it.
 *   Python's speedups jump with the load; its "CPUs busy" does not.
 * What it means for the Python advice: in C, threads are as good as
 *   processes for CPU-bound work (and cheaper, see memory_overhead_benchmark);
 *   "processes for CPU" is advice about CPython's GIL, not about the OS.
 * Try this: --max-workers 64 --tasks 64 (I/O keeps going; CPU stays at the
 *   core count while runq s grows); taskset -c 0 cpu_vs_io_bound (one CPU);
 *   --full --plot speedup.svg; put a global mutex around work() in the
 *   threads (a GIL of your own) and watch the verdict.
 */
#define _GNU_SOURCE  /* sched_getaffinity, CPU_COUNT */
#include "mp.h"

#include <math.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/timerfd.h>

enum { CPU, IO, PROC = 0, THREAD = 1, MAXTASK = 256, NW = 9 };
static const char *const kinds[] = { "cpu", "io" };
static const char *const engines[] = { "processes", "threads" };

struct cfg { long tasks, work, io_ms; };

struct shared {
	uint64_t result[MAXTASK];  /* one per task */
	_Atomic int runs[MAXTASK]; /* how many times each task ran */
	struct { double cpu_s, runq_s; } w[MAXTASK]; /* per worker */
};

/* CPU-bound: n steps of a 64-bit LCG, mp_lcg() (each step depends on the
 * one before, so nothing can skip it); the parent checks every task with
 * mp_lcg_jump(), the same value in log2(n) steps. */
static uint64_t crunch(uint64_t x, long n)
{
	return mp_lcg(x, (uint64_t)n);
}

/* I/O-bound: block until a timer fires, as a thread waits for a reply.
 * The read returns the number of expirations: 1. */
static uint64_t wait_io(long ms, long task)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec it = { .it_value = { ms / 1000,
					       ms % 1000 * 1000000 } };
	uint64_t fired = 0;

	MP_CHECK(fd);
	MP_CHECK(timerfd_settime(fd, 0, &it, NULL));
	while (read(fd, &fired, sizeof fired) == -1)
		if (errno != EINTR)
			mp_die("read timerfd");
	MP_CHECK(close(fd));
	return (uint64_t)task + fired;
}

/* /proc/thread-self/schedstat: ns on a CPU, ns waiting in the run queue
 * for one, time slices.  The first is only brought up to date when the
 * thread leaves the CPU, so a thread's own CPU time comes from
 * CLOCK_THREAD_CPUTIME_ID instead (and a child's from wait4). */
static double runq_s(void)
{
	unsigned long long on, wait;
	FILE *f = fopen("/proc/thread-self/schedstat", "r");

	if (!f || fscanf(f, "%llu %llu", &on, &wait) != 2)
		mp_die("/proc/thread-self/schedstat");
	MP_CHECK(fclose(f) == EOF ? -1 : 0);
	return (double)wait / 1e9;
}

struct job { struct shared *sh; const struct cfg *c; int kind, engine, w, nw; };

/* Worker w of nw takes tasks w, w + nw, ...  The same code runs as a
 * process and as a thread. */
static void *work(void *arg)
{
	struct job *j = arg;

	for (long i = j->w; i < j->c->tasks; i += j->nw) {
		j->sh->result[i] = j->kind == CPU ?
			crunch((uint64_t)i + 1, j->c->work) :
			wait_io(j->c->io_ms, i);
		atomic_fetch_add(&j->sh->runs[i], 1);
	}
	struct timespec ts;

	j->sh->w[j->w].runq_s = runq_s();
	MP_CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts));
	if (j->engine == THREAD)  /* wait4 gives a child's user+sys */
		j->sh->w[j->w].cpu_s = (double)ts.tv_sec +
				       (double)ts.tv_nsec / 1e9;
	return NULL;
}

struct row { int kind, engine, workers; double wall, speedup, cpu, runq; };

static double tv_s(struct timeval a, struct timeval b)
{
	return (double)(a.tv_sec + b.tv_sec) +
	       (double)(a.tv_usec + b.tv_usec) / 1e6;
}

/* One run: nw workers of one engine on one kind of task.  Every task must
 * have run once with the right result. */
static struct row run(struct shared *sh, const struct cfg *c, int kind,
		      int engine, int nw, bool *ok)
{
	struct job jobs[MAXTASK];
	pthread_t tid[MAXTASK];
	pid_t pid[MAXTASK];
	struct row r = { kind, engine, nw, 0, 1, 0, 0 };

	memset(sh, 0, sizeof *sh);
	int64_t t0 = mp_now_ns();

	for (int w = 0; w < nw; w++) {
		jobs[w] = (struct job){ sh, c, kind, engine, w, nw };
		if (engine == THREAD)
			MP_CHECK_PT(pthread_create(&tid[w], NULL, work,
						   &jobs[w]));
		else if ((pid[w] = mp_fork()) == 0) {
			work(&jobs[w]);
			_exit(EXIT_SUCCESS);
		}
	}
	for (int w = 0; w < nw; w++) {
		struct rusage ru;
		int st;

		if (engine == THREAD) {
			MP_CHECK_PT(pthread_join(tid[w], NULL));
			continue;
		}
		while (wait4(pid[w], &st, 0, &ru) == -1)
			if (errno != EINTR)
				mp_die("wait4");
		*ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
		sh->w[w].cpu_s = tv_s(ru.ru_utime, ru.ru_stime);
	}
	r.wall = mp_elapsed_s(t0);
	for (int w = 0; w < nw; w++) {
		r.cpu += sh->w[w].cpu_s;
		r.runq += sh->w[w].runq_s;
	}
	for (long i = 0; i < c->tasks; i++) {
		uint64_t x = (uint64_t)i + 1;
		uint64_t want = kind == CPU ?
			mp_lcg_jump(x, (uint64_t)c->work) : x;

		*ok &= atomic_load(&sh->runs[i]) == 1 && sh->result[i] == want;
	}
	return r;
}

/* The twin prints "python,<kind>,<engine>,<workers>,<s>,<checksum>,<cpu s>"
 * and "python-gil,<1|0>" (see cpu_vs_io_bound.py). */
struct twin {
	double s[2][2][NW], cpu[2][2][NW];  /* [kind][engine][log2 workers] */
	long work, tasks;
	int gil;
	bool ok, say;
};

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	char kind[8], eng[16];
	int w;
	double s, cpu;
	unsigned long long sum, want = 0;

	if (sscanf(line, "python-gil,%d", &t->gil) == 1)
		return;
	if (sscanf(line, "python,%7[^,],%15[^,],%d,%lf,%llu,%lf", kind, eng,
		   &w, &s, &sum, &cpu) != 6 || w < 1 || w > 256 ||
	    (w & (w - 1))) {
		fprintf(stderr, "python: %s\n", line);
		t->ok = false;
		return;
	}
	int k = strcmp(kind, "cpu") != 0, e = strcmp(eng, "processes") != 0;

	for (long i = 0; i < t->tasks; i++)
		want += k == CPU ?
			mp_lcg_jump((uint64_t)i + 1, (uint64_t)t->work) :
			(uint64_t)i + 1;
	t->ok &= sum == want;
	t->s[k][e][__builtin_ctz((unsigned)w)] = s;
	t->cpu[k][e][__builtin_ctz((unsigned)w)] = cpu;
	if (t->say)
		mp_say("python", "%s", line);
}

/* The same two kinds of task in Python, fewer and smaller (its LCG step
 * is a big-int multiply, about 100x slower than C's). */
static void python_twin(struct twin *t, long io_ms, int maxw, long repeat)
{
	char a[5][32];

	snprintf(a[0], sizeof a[0], "%ld", t->tasks);
	snprintf(a[1], sizeof a[1], "%ld", t->work);
	snprintf(a[2], sizeof a[2], "%ld", io_ms);
	snprintf(a[3], sizeof a[3], "%d", maxw);
	snprintf(a[4], sizeof a[4], "%ld", repeat);
	int st = mp_run_twin(MP_LESSON_DIR "/cpu_vs_io_bound.py",
			     (char *[]){ "--tasks", a[0], "--work", a[1],
					 "--io-ms", a[2], "--max-workers",
					 a[3], "--repeat", a[4], NULL }, 600,
			     twin_line, t);

	if (st == -1)
		mp_say("parent", "python twin: %s", strerror(errno));
	t->ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void report(const struct row *rows, int n, bool csv, const char *plot)
{
	struct mp_table *t = mp_table_new("Speedup over 1 worker", "speedup",
		"workers,cpu processes,cpu threads,io processes,io threads");

	if (!t)
		mp_die("mp_table_new");
	t->logx = t->logy = true;
	printf(csv ? "kind,engine,workers,seconds,speedup,cpu_s,runq_s\n" :
	       "kind engine     workers   wall s  speedup   cpu s  runq s\n");
	for (int i = 0; i < n; i++) {
		const struct row *r = &rows[i];
		double cell[5] = { r->workers, NAN, NAN, NAN, NAN };

		printf(csv ? "%s,%s,%d,%.6f,%.3f,%.6f,%.6f\n" :
		       "%-4s %-10s %7d %8.3f %8.2f %7.3f %7.3f\n",
		       kinds[r->kind], engines[r->engine], r->workers, r->wall,
		       r->speedup, r->cpu, r->runq);
		cell[1 + r->kind * 2 + r->engine] = r->speedup;
		if (mp_table_add(t, cell) == -1)  /* a row per point */
			mp_die("mp_table_add");
	}
	if (plot && mp_plot(t, plot) == -1 && errno != ENOENT)
		mp_die("plot");
	mp_table_free(t);
}

int main(int argc, char *argv[])
{
	struct cfg c = { 16, 2000000, 4 };
	long maxw = 16, repeat = 3;
	bool full = false, nopy = false, csv = false, plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("tasks", &c.tasks, 1, MAXTASK, "tasks of each kind"),
		MP_OPT_L("work", &c.work, 1, 10000000000,
			 "LCG steps a CPU task"),
		MP_OPT_L("io-ms", &c.io_ms, 1, 10000, "ms an I/O task waits"),
		MP_OPT_L("max-workers", &maxw, 1, MAXTASK,
			 "run 1, 2, 4 ... up to this many workers"),
		MP_OPT_L("repeat", &repeat, 1, 99, "runs per cell (the best)"),
		MP_OPT_F("full", &full, "the long run: --tasks 64 --work "
			 "10000000 --io-ms 20 --max-workers 64 --repeat 3"),
		MP_OPT_F("no-python", &nopy, "skip the Python twin"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw the speedups in the "
			 "terminal; --plot FILE.svg|.png: into a file"),
	};

	mp_parse_options(argc, argv, "CPU-bound and I/O-bound tasks on 1, 2, "
			 "4 ... processes and threads: who keeps scaling.",
			 opts, sizeof opts / sizeof *opts);
	mp_stop_on_signals();
	if (full) {
		c = (struct cfg){ 64, 10000000, 20 };
		maxw = 64;
		repeat = 3;
	}

	/* 1. How many CPUs may we use?  Past that, CPU-bound work waits. */
	cpu_set_t set;

	MP_CHECK(sched_getaffinity(0, sizeof set, &set));
	int ncpu = CPU_COUNT(&set), top = 1;

	while (top * 2 <= maxw)
		top *= 2;
	struct shared *sh = mp_shm_alloc(sizeof *sh);

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv)
		mp_say("parent", "%d CPUs usable; %ld tasks of each kind: %ld "
		       "LCG steps (CPU) or a %ld ms timer (I/O); 1..%d "
		       "workers, best of %ld", ncpu, c.tasks, c.work,
		       c.io_ms, top, repeat);

	/* 2. Every kind x engine x worker count, the best of `repeat` runs
	 *    (other programs on the machine can only add time).  Noted for
	 *    the verdict: the best I/O and CPU speedups at `top` workers, C
	 *    threads' at 2, and how long runs with no more workers than CPUs
	 *    waited for one. */
	struct row rows[2 * 2 * NW];
	int n = 0;
	bool ok = true, exact = true;  /* exact: every task once, right */
	double cpu_top = 0, io_top = 0, thr2 = 0, busy = 0;

	for (int k = CPU; k <= IO; k++)
		for (int e = PROC; e <= THREAD; e++)
			for (int w = 1, base = n; w <= top; w *= 2) {
				struct row r = run(sh, &c, k, e, w, &exact);

				for (long i = 1; i < repeat; i++) {
					struct row x = run(sh, &c, k, e, w,
							   &exact);

					r = x.wall < r.wall ? x : r;
				}
				r.speedup = rows[base].wall / r.wall;
				if (w == 1)
					r.speedup = 1;  /* rows[base] is r */
				rows[n++] = r;
				if (w == top && k == CPU && r.speedup > cpu_top)
					cpu_top = r.speedup;
				if (w == top && k == IO && r.speedup > io_top)
					io_top = r.speedup;
				if (w == 2 && k == CPU && e == THREAD)
					thr2 = r.speedup;
				if (w <= ncpu && k == CPU &&
				    r.runq / (r.wall * w) > busy)
					busy = r.runq / (r.wall * w);
				if (!csv && (full || w == top))
					mp_say("parent", "%s %s x%d: %.3f s, "
					       "speedup %.2f", kinds[k],
					       engines[e], w, r.wall,
					       r.speedup);
			}

	/* 3. The table, the CSV, the picture. */
	report(rows, n, csv, plot);

	/* 4. Python on the same two kinds of task: the GIL.  CPUs busy at
	 *    once = CPU seconds / wall seconds: under the GIL, Python's
	 *    threads never pass 1, whatever the load. */
	struct twin py = { .tasks = full ? 16 : 8, .work = full ? 200000 :
			   100000, .gil = -1, .ok = true, .say = full && !csv };
	int pyw = top < 2 ? top : full ? (top < 8 ? top : 8) : 2;

	if (!nopy && mp_python3())
		python_twin(&py, c.io_ms, pyw, full ? repeat : 2);
	else if (!csv)
		printf("python: %s\n", nopy ? "skipped (--no-python)" :
		       "python3 was not found at configure time");
	double pt = py.s[CPU][THREAD][1], pp = py.s[CPU][PROC][1];
	double pthr = pt > 0 ? py.cpu[CPU][THREAD][1] / pt : 0;

	if (!csv && pt > 0 && pp > 0)
		printf("python (%ld tasks of %ld steps, gil=%d) cpu threads "
		       "x2: speedup %.2f, %.2f CPUs busy; processes x2: "
		       "speedup %.2f, %.2f CPUs; io threads x%d: speedup "
		       "%.2f\n",
		       py.tasks, py.work, py.gil, py.s[CPU][THREAD][0] / pt,
		       pthr, py.s[CPU][PROC][0] / pp, py.cpu[CPU][PROC][1] / pp,
		       pyw, py.s[IO][THREAD][0] /
		       py.s[IO][THREAD][__builtin_ctz((unsigned)pyw)]);

	/* 5. The verdict.  Exact: every task ran once with the right result.
	 *    I/O past the CPU count: a quarter of the ideal speedup at least,
	 *    by the better engine (16 forks can cost more than the wait: a
	 *    millisecond each under ASan).
	 *    CPU work only where there is enough of it (10 ms for one worker)
	 *    and where the CPUs were ours: if a run with no more workers than
	 *    CPUs waited in the run queue for more than a fifth of its time,
	 *    other programs had them, and no speedup can be read.  Otherwise:
	 *    CPU stays near the CPU count, C threads scale (1.3x on 2).
	 *    Python's threads under the GIL: 1 CPU at most. */
	int eff = top < c.tasks ? top : (int)c.tasks;
	bool io_j = eff > 4 * ncpu, cpu_j = ncpu >= 2 && eff >= 2 &&
		    rows[0].cpu >= 0.01 && busy <= 0.2, py_j = pt > 0 &&
		    py.gil == 1;

	ok &= exact && py.ok && (!io_j || io_top >= eff / 4.0) &&
	      (!cpu_j || (cpu_top <= ncpu * 1.5 && thr2 >= 1.3)) &&
	      (!py_j || pthr <= 1.2);
	if (csv) {
		if (!ok)
			fprintf(stderr, "cpu_vs_io_bound: MISMATCH\n");
	} else {
		printf("result: %ld tasks %s", (long)n * repeat * c.tasks,
		       exact ? "exact" : "NOT all run once with the right "
		       "result");
		if (io_j)
			printf("; io x%d %.2f >= %.1f", top, io_top, eff / 4.0);
		else
			printf("; io scaling not judged (%d workers x %ld "
			       "tasks on %d CPUs)", top, c.tasks, ncpu);
		if (cpu_j)
			printf("; cpu x%d %.2f <= %.1f, C threads x2 %.2f >= "
			       "1.3", top, cpu_top, ncpu * 1.5, thr2);
		else if (ncpu < 2 || eff < 2)
			printf("; cpu scaling not judged (%d CPUs, %d "
			       "workers)", ncpu, eff);
		else if (rows[0].cpu < 0.01)
			printf("; cpu scaling not judged (%.1f ms of work: "
			       "starting workers costs more)",
			       rows[0].cpu * 1e3);
		else
			printf("; cpu scaling not judged (other programs kept "
			       "the CPUs: our workers waited up to %.0f%% of "
			       "their time)", busy * 100);
		if (py_j)
			printf("; python threads x2 kept %.2f CPUs busy <= 1.2 "
			       "(the GIL)", pthr);
		printf(" %s\n", ok ? "OK" : "MISMATCH");
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
