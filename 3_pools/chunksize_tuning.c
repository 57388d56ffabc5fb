/* 3_pools/chunksize_tuning.c -- what one chunk costs: mp_pool, OpenMP and
 * Python's Pool.map over the same items, chunksize by chunksize
 *
 * Python:  pool.map(square, range(n), chunksize=c), c = 1, 4 ... 1024, None.
 *          CPython (Lib/multiprocessing/pool.py) cuts the items into chunks
 *          (None: ceil(n / (4 * processes))), pickles each chunk as one task
 *          into a SimpleQueue (a pipe plus two locks, _rlock for readers
 *          and _wlock for writers: Lib/multiprocessing/queues.py); a worker
 *          unpickles it,
 *          runs mapstar() and pickles the list of results back, and the
 *          parent's _result_handler thread stores them: a round trip through
 *          two pipes and three threads per chunk.
 * C:       mp_pool_map(): the items are copied into shared memory, each
 *          worker takes the next chunk with one atomic add, the results are
 *          copied back -- no pickling, no pipe, no thread, no system call
 *          per chunk.  mp_pool_shm: the same call on arrays from
 *          mp_pool_alloc() (the pool's shared heap), so nothing is copied.
 *          OpenMP: #pragma omp parallel for schedule(dynamic, c), the same
 *          atomic add but threads, so no copies either.  All three call
 *          square() through the same function pointer: equal work per item.
 *          At big chunks the two copies (16 MB for 10^6 items) are most of
 *          mp_pool's time: that is the price of separate address spaces.
 * The cost model: time = n * t_item / W + (n / c) * t_chunk / W + tail.
 *   t_chunk, the price of handing out one chunk, is a cache line moving
 *   between cores in C (tens of ns) and pickling plus pipe wake-ups in
 *   Python (tens of us): 1000x more, so Python's curve falls steeply with c
 *   and C's is nearly flat.  The tail: when the last chunks run, the other
 *   workers wait; a bigger c makes it longer (up to c * t_item), and with
 *   uneven tasks it unbalances the load.  Python's rule, n / (4 W), keeps
 *   4 chunks per worker: few dispatches, and a tail of at most one chunk,
 *   1 / (4 W) of the work.
 * Calls:   mp_pool_create, mp_pool_map, mp_pool_alloc/free,
 *          mp_pool_apply_async, mp_pool_get, mp_pool_pids, mp_pool_stats,
 *          mp_pool_auto_chunksize; omp parallel for; fork + exec of python3
 *          with a pipe; /proc/PID/smaps_rollup
 * Usage:   chunksize_tuning [--tasks N (200000)] [--workers N (0 = CPUs)]
 *            [--repeat N (3)] [--apply-async N (20000)] [--python-tasks N
 *            (2000)] [--python] [--csv] [--plot [FILE.svg|png]]
 *          The real benchmark: --tasks 1000000 --apply-async 1000000 --python
 *          The engines take turns run by run; OpenMP runs with
 *          OMP_WAIT_POLICY=passive unless you set it yourself.
 * Output:  (Release build, 2 cores, nothing else running; trimmed)
 *   $ chunksize_tuning --tasks 1000000 --apply-async 1000000 --python
 *   [parent 20198 +7.7ms] 1000000 items, 2 workers, median of 3 runs; auto
 *                         chunksize = ceil(n / (4 * workers)) = 125000
 *   engine      chunksize      tasks    seconds        tasks/s   / openmp
 *   mp_pool             1    1000000   0.020634       48463210      1.20x
 *   mp_pool          1024    1000000   0.001643      608787976      1.84x
 *   mp_pool_shm      1024    1000000   0.001157      864417797      1.29x
 *   openmp              1    1000000   0.017256       57950576      1.00x
 *   openmp           1024    1000000   0.000894     1118150490      1.00x
 *   python              1    1000000  13.946183          71704    808.19x
 *   python           1024    1000000   0.113123        8839935    126.49x
 *   mp_pool     one chunk costs a worker about 0.0386 us more than its task
 *   python      one chunk costs a worker about 27.7 us more than its task
 *   mp_pool is 676x faster than python per item at chunksize 1
 *   apply_async: 1000000 tasks submitted and completed: 9175328 tasks/s
 *     (python: 48544)
 *   idle worker USS (Private_Clean + Private_Dirty): 52 KiB;
 *     python fork worker: 3096 KiB
 *   result: 45000000 tasks by mp_pool, every result of every engine exact OK
 *   With --csv: "engine,chunksize,tasks,seconds,tasks_per_s", then one row
 *   per engine and chunksize (chunksize "auto" for Python's rule).
 * Try this: --workers 1 (no contention: chunksize 1 gets faster per worker);
 *   --python --tasks 100000 (watch Python's column fall 100x from c=1 to
 *   c=1024); --workers 8 on 2 cores (more processes than cores).
 */
#include "mp.h"

#include <math.h>

#ifdef MP_HAVE_OPENMP
#include <omp.h>
#endif

enum { NCHUNK = 7, NENGINE = 4, OMP = 2, PY = 3 };
static const size_t chunks[NCHUNK] = { 1, 4, 16, 64, 256, 1024, 0 };
static const char *const engines[NENGINE] = { "mp_pool", "mp_pool_shm",
					       "openmp", "python" };

struct row { double s; size_t tasks; bool done; };

static int square(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	*(int64_t *)result = x * x;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Every result exact?  Also clears out for the next run. */
static bool exact(int64_t *out, size_t n)
{
	bool ok = true;

	for (size_t i = 0; i < n; i++) {
		ok &= out[i] == (int64_t)i * (int64_t)i;
		out[i] = -1;
	}
	return ok;
}

#ifdef MP_HAVE_OPENMP
#ifdef __clang__
#define NOT_INLINED __attribute__((noinline))
#else
#define NOT_INLINED __attribute__((noipa))
#endif
/* Not inlined: square() stays a call through a pointer, as in a worker. */
NOT_INLINED static void omp_map(mp_pool_fn fn, const int64_t *in,
					   int64_t *out, long n, long chunk,
					   int workers)
{
#pragma omp parallel for schedule(dynamic, chunk) num_threads(workers)
	for (long i = 0; i < n; i++)
		fn(&in[i], &out[i]);
}
#endif

/* Seconds of one run of one engine at one chunksize.  The two mp_pool
 * engines are the same call: given arrays from mp_pool_alloc()
 * (mp_pool_shm), the pool skips copying them in and out. */
static double timed(int engine, struct mp_pool *pool, const int64_t *in,
		    int64_t *out, size_t n, size_t chunk, bool *ok)
{
	int64_t t0 = mp_now_ns();

	if (engine < OMP && mp_pool_map(pool, square, in, n, sizeof *in, out,
					sizeof *out, chunk) == -1)
		mp_die("mp_pool_map");
#ifdef MP_HAVE_OPENMP
	if (engine == OMP)
		omp_map(square, in, out, (long)n, (long)chunk,
			mp_pool_workers(pool));
#endif
	double s = mp_elapsed_s(t0);

	*ok &= exact(out, n);
	return s;
}

/* The median of `repeat` runs of each engine at one chunksize.  The
 * engines take turns, run by run, so that a moment when the machine is
 * busy slows all of them alike and the ratios stay fair. */
static void timed_round(struct mp_pool *pool, int64_t *const arr[4],
			size_t n, size_t chunk, long repeat,
			struct row row[OMP + 1], bool *ok)
{
	double t[OMP + 1][101];
	int nengine = 2;

#ifdef MP_HAVE_OPENMP
	nengine = 3;
#endif
	for (long r = 0; r < repeat; r++)
		for (int e = 0; e < nengine; e++)
			t[e][r] = timed(e, pool, arr[e == 1 ? 2 : 0],
					arr[e == 1 ? 3 : 1], n, chunk, ok);
	for (int e = 0; e < nengine; e++) {
		qsort(t[e], (size_t)repeat, sizeof t[e][0], cmp_double);
		row[e] = (struct row){ t[e][repeat / 2], n, true };
	}
}

/* What the Python twin reports, line by line (see chunksize_tuning.py). */
struct twin {
	struct row *py;          /* its row per chunksize */
	uint64_t want;           /* sum of x*x mod 2^64 over its items */
	double apply_rate;       /* its apply_async tasks/s */
	long uss;                /* its idle worker's USS, KiB */
	bool ok;                 /* every checksum right */
};

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	char c[16];
	double s, rate;
	unsigned long long n, sum;

	/* python,<c>,<tasks>,<s>,<rate>,<checksum> */
	if (sscanf(line, "python,%15[^,],%llu,%lf,%lf,%llu", c, &n, &s, &rate,
		   &sum) == 5) {
		size_t want_c = strcmp(c, "auto") ? strtoul(c, NULL, 10) : 0;

		for (int k = 0; k < NCHUNK; k++)
			if (chunks[k] == want_c)
				t->py[k] = (struct row){ s, n, true };
		t->ok &= sum == t->want;
	} else if (sscanf(line, "python-apply_async,1,%llu,%lf,%lf,%llu", &n,
			  &s, &rate, &sum) == 4) {
		uint64_t w = 0;

		for (unsigned long long x = 0; x < n; x++)
			w += (uint64_t)x * (uint64_t)x;
		t->apply_rate = rate;
		t->ok &= sum == w;
	} else if (sscanf(line, "python-uss,%ld", &t->uss) != 1) {
		fprintf(stderr, "python: %s\n", line);
	}
}

/* Run the Python twin; fill its rows; return its idle worker USS (KiB),
 * -1 if it did not run.  apply_rate gets its apply_async tasks/s. */
static long run_python(long tasks, long workers, long repeat, long apply,
		       struct row py[NCHUNK], double *apply_rate, bool *ok)
{
	char a[4][32];
	struct twin t = { .py = py, .uss = -1, .ok = true };

	if (!mp_python3())
		return -1;
	snprintf(a[0], sizeof a[0], "%ld", tasks);
	snprintf(a[1], sizeof a[1], "%ld", workers);
	snprintf(a[2], sizeof a[2], "%ld", repeat);
	snprintf(a[3], sizeof a[3], "%ld", apply);
	for (long x = 0; x < tasks; x++)
		t.want += (uint64_t)x * (uint64_t)x;
	/* Generous: Python needs ~20 s a pass at chunksize 1 over 10^6. */
	int st = mp_run_twin(MP_LESSON_DIR "/chunksize_tuning.py",
			     (char *[]){ "--tasks", a[0], "--workers", a[1],
					 "--repeat", a[2], "--apply", a[3],
					 NULL },
			     60 + (double)tasks * (double)repeat * 1e-4,
			     twin_line, &t);

	if (st == -1)
		mp_say("parent", "python twin: %s", strerror(errno));
	*ok &= t.ok && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	*apply_rate = t.apply_rate;
	return t.uss;
}

/* apply_async: n tasks submitted and completed, at most 1024 in flight
 * (a handle each); every result checked.  Tasks per second. */
static double apply_rate(struct mp_pool *pool, long n, bool *ok)
{
	enum { WIN = 1024 };
	struct mp_pool_async *h[WIN];
	int64_t x[WIN], v;
	int64_t t0 = mp_now_ns();

	for (long i = 0; i < n + WIN; i++) {
		long k = i % WIN;

		if (i >= WIN) {
			if (mp_pool_get(h[k], &v, MP_POOL_FOREVER) == -1)
				mp_die("mp_pool_get");
			*ok &= v == x[k] * x[k];
			mp_pool_async_free(h[k]);
		}
		if (i < n) {
			x[k] = i;
			h[k] = mp_pool_apply_async(pool, square, &x[k],
						   sizeof x[k], sizeof v,
						   NULL, NULL);
			if (!h[k])
				mp_die("mp_pool_apply_async");
		}
	}
	return (double)n / mp_elapsed_s(t0);
}

/* Unique set size: the pages only this process has (smaps_rollup). */
static long uss_kib(pid_t pid)
{
	char path[64], line[256];
	long total = 0, kb;

	snprintf(path, sizeof path, "/proc/%jd/smaps_rollup", (intmax_t)pid);
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Private_Clean: %ld", &kb) == 1 ||
		    sscanf(line, "Private_Dirty: %ld", &kb) == 1)
			total += kb;
	if (fclose(f) == EOF)
		mp_die("fclose %s", path);
	return total;
}

static void print_rows(struct row r[NENGINE][NCHUNK], bool csv,
		       const struct mp_pool *pool)
{
	if (csv)
		printf("engine,chunksize,tasks,seconds,tasks_per_s\n");
	else
		printf("%-11s %9s %10s %10s %14s %10s\n", "engine", "chunksize",
		       "tasks", "seconds", "tasks/s", "/ openmp");
	for (int e = 0; e < NENGINE; e++)
		for (int k = 0; k < NCHUNK; k++) {
			struct row *x = &r[e][k], *o = &r[OMP][k];
			char c[32];

			if (!x->done)
				continue;
			if (chunks[k])
				snprintf(c, sizeof c, "%zu", chunks[k]);
			else  /* Python's rule for that engine's own n */
				snprintf(c, sizeof c, csv ? "auto" : "auto=%zu",
					 mp_pool_auto_chunksize(pool,
								x->tasks));
			printf(csv ? "%s,%s,%zu,%.6f,%.0f" :
			       "%-11s %9s %10zu %10.6f %14.0f", engines[e], c,
			       x->tasks, x->s, (double)x->tasks / x->s);
			if (!csv && o->done)  /* time per task vs OpenMP's */
				printf(" %9.2fx", (x->s / (double)x->tasks) /
				       (o->s / (double)o->tasks));
			printf("\n");
		}
}

/* --plot: tasks/s by chunksize, one line per engine, both axes log.  The
 * "auto" row sits at the chunksize Python's rule gave mp_pool's n. */
static void plot_rows(struct row r[NENGINE][NCHUNK], const char *out,
		      const struct mp_pool *pool)
{
	char cols[128] = "chunksize";
	int ne = 0, used[NENGINE];

	for (int e = 0; e < NENGINE; e++)  /* only engines that ran */
		if (r[e][0].done) {
			used[ne++] = e;
			strcat(strcat(cols, ","), engines[e]);
		}
	struct mp_table *t = mp_table_new("map x*x: tasks/s by chunksize",
					  "tasks/s", cols);

	if (!t)
		mp_die("mp_table_new");
	t->logx = t->logy = true;
	for (int k = 0; k < NCHUNK; k++) {
		double row[1 + NENGINE];

		row[0] = (double)(chunks[k] ? chunks[k] :
				  mp_pool_auto_chunksize(pool, r[0][k].tasks));
		for (int i = 0; i < ne; i++) {
			int e = used[i];

			row[1 + i] = r[e][k].done ? (double)r[e][k].tasks /
							    r[e][k].s
						  : NAN;
		}
		MP_CHECK(mp_table_add(t, row));
	}
	if (mp_plot(t, out) == -1 && errno != ENOENT)
		mp_die("plot");
	mp_table_free(t);
}

/* The cost model, measured: going from chunksize 1 to auto removes
 * (n - n / auto) chunk dispatches; the time saved, times W, over that
 * count is what one dispatch costs a worker. */
static void print_model(struct row r[NENGINE][NCHUNK], int e, int workers,
			const struct mp_pool *pool)
{
	double n = (double)r[e][0].tasks;
	double nauto = n / (double)mp_pool_auto_chunksize(pool, r[e][0].tasks);
	double per = (r[e][0].s - r[e][NCHUNK - 1].s) * workers / (n - nauto);

	if (!r[e][0].done || n <= nauto)
		return;
	if (per > 1e-9)
		printf("%-11s one chunk costs a worker about %.3g us more than "
		       "its task\n", engines[e], per * 1e6);
	else
		printf("%-11s the cost of a chunk is lost in the noise here\n",
		       engines[e]);
}

/* Worst time-per-task ratio of engine e to OpenMP over the chunksizes. */
static void print_worst(struct row r[NENGINE][NCHUNK], int e)
{
	double worst = 0;
	int at = 0;

	for (int k = 0; k < NCHUNK; k++) {
		double x = r[e][k].s / (double)r[e][k].tasks /
			   (r[OMP][k].s / (double)r[OMP][k].tasks);

		if (r[OMP][k].done && x > worst) {
			worst = x;
			at = k;
		}
	}
	if (worst > 0 && chunks[at])
		printf("%-11s is furthest behind openmp at chunksize %zu: "
		       "%.2fx its time per item\n", engines[e], chunks[at],
		       worst);
	else if (worst > 0)
		printf("%-11s is furthest behind openmp at chunksize auto: "
		       "%.2fx its time per item\n", engines[e], worst);
}

int main(int argc, char *argv[])
{
	long tasks = 200000, workers = 0, repeat = 3, napply = 20000;
	long pytasks = 2000;
	bool csv = false, python_full = false, ok = true, plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("tasks", &tasks, 1, 50000000, "items to map"),
		MP_OPT_L("workers", &workers, 0, 64, "workers (0 = CPUs)"),
		MP_OPT_L("repeat", &repeat, 1, 101, "runs per cell (median)"),
		MP_OPT_L("apply-async", &napply, 0, 100000000,
			 "apply_async tasks to time (0 skips)"),
		MP_OPT_L("python-tasks", &pytasks, 0, 50000000,
			 "items for Python's Pool.map (0 skips Python)"),
		MP_OPT_F("python", &python_full,
			 "give Python --tasks and --apply-async too"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw tasks/s by chunksize in the "
			 "terminal; --plot FILE.svg|.png: into a file"),
	};

#ifdef MP_HAVE_OPENMP
	/* libgomp's threads spin for some milliseconds after each loop
	 * (OMP_WAIT_POLICY unset): long enough to take a CPU from the pool's
	 * workers in the runs that follow (11-21% of their speed here),
	 * while OpenMP itself gains little from it (2 million items: 1.74 ms
	 * spinning, 1.71 ms asleep at chunksize 250000; 2.05 and 2.11 ms at
	 * 1024).  So both engines' idle workers sleep: the policy is read
	 * when libgomp loads, hence the new start.  OMP_WAIT_POLICY=active
	 * keeps it. */
	mp_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
#endif
	mp_parse_options(argc, argv,
			 "Map x*x over N items with mp_pool, OpenMP and "
			 "Python's Pool.map, chunksize by chunksize.", opts,
			 sizeof opts / sizeof *opts);
	mp_stop_on_signals();
	if (python_full)
		pytasks = tasks;

	/* 1. The pool first, while this process is small: a worker's private
	 *    memory is what the parent writes after fork (copy-on-write). */
	struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers });

	if (!pool)
		mp_die("mp_pool_create");
	size_t n = (size_t)tasks;
	int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
	int64_t *sin = mp_pool_alloc(pool, n * sizeof *in);
	int64_t *sout = mp_pool_alloc(pool, n * sizeof *out);

	if (!in || !out || !sin || !sout)
		mp_die("malloc / mp_pool_alloc");
	for (size_t i = 0; i < n; i++)
		sin[i] = in[i] = (int64_t)i;
	size_t autoc = mp_pool_auto_chunksize(pool, n);

	if (!csv)
		mp_say("parent", "%zu items, %d workers, median of %ld runs; "
		       "auto chunksize = ceil(n / (4 * workers)) = %zu", n,
		       mp_pool_workers(pool), repeat, autoc);

	/* 2. mp_pool (private arrays, copied in and out as Pool.map pickles
	 *    them), mp_pool_shm (arrays in the pool's shared heap: no copy)
	 *    and OpenMP, at every chunksize, taking turns run by run; a
	 *    warm-up run first touches the shared pages once. */
	struct row r[NENGINE][NCHUNK] = { 0 };

	int64_t *const arr[4] = { in, out, sin, sout };

	timed(0, pool, in, out, n, 0, &ok);
	timed(1, pool, sin, sout, n, 0, &ok);
	for (int k = 0; k < NCHUNK; k++) {
		struct row got[OMP + 1] = { 0 };

		timed_round(pool, arr, n, chunks[k] ? chunks[k] : autoc,
			    repeat, got, &ok);
		for (int e = 0; e <= OMP; e++)
			r[e][k] = got[e];
	}

	/* 3. apply_async, idle USS, then Python on the same items. */
	double arate = napply ? apply_rate(pool, napply, &ok) : 0, pyapply = 0;
	pid_t pids[64];
	long uss = 0;
	int np = mp_pool_pids(pool, pids, 64);

	for (int i = 0; i < np && i < 64; i++) {
		long u = uss_kib(pids[i]);

		uss = u > uss ? u : uss;
	}
	long pyuss = pytasks ? run_python(pytasks, mp_pool_workers(pool),
					  repeat, python_full ? napply : 2000,
					  r[PY], &pyapply, &ok) : -1;

	/* 4. The figures. */
	print_rows(r, csv, pool);
	if (plot)
		plot_rows(r, plot, pool);
	if (!csv) {
#ifndef MP_HAVE_OPENMP
		printf("openmp: not built (OpenMP was not found at configure "
		       "time)\n");
#endif
		for (int e = 0; e < NENGINE; e++)
			print_model(r, e, mp_pool_workers(pool), pool);
		print_worst(r, 0);
		print_worst(r, 1);
		if (!mp_python3())
			printf("python: skipped (python3 was not found at "
			       "configure time)\n");
		else if (r[PY][0].done)
			printf("mp_pool is %.0fx faster than python per item "
			       "at chunksize 1%s\n",
			       (r[0][0].tasks / r[0][0].s) /
			       (r[PY][0].tasks / r[PY][0].s),
			       r[PY][0].tasks == r[0][0].tasks ? "" :
			       " (python mapped fewer items: --python gives it"
			       " as many)");
		if (napply)
			printf("apply_async: %ld tasks submitted and "
			       "completed: %.0f tasks/s (python: %.0f)\n",
			       napply, arate, pyapply);
		printf("idle worker USS (Private_Clean + Private_Dirty): %ld "
		       "KiB", uss);
		if (pyuss >= 0)
			printf("; python fork worker: %ld KiB", pyuss);
		printf("\n");
	}

	/* 5. The verdict: every result of every run exact. */
	struct mp_pool_stats st;

	mp_pool_stats(pool, &st);
	if (mp_pool_free(pool, sin) == -1 || mp_pool_free(pool, sout) == -1)
		mp_die("mp_pool_free");
	mp_pool_destroy(pool);
	free(in);
	free(out);
	if (csv) {
		if (!ok)
			fprintf(stderr, "chunksize_tuning: a result was "
				"wrong\n");
	} else {
		printf("result: %ju tasks by mp_pool, every result of every "
		       "engine exact %s\n", (uintmax_t)st.tasks,
		       ok ? "OK" : "MISMATCH");
	}
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
