/* 2_communication/queues_and_pipes/queues_basic.c -- producers and consumers
 * through one queue shared by processes, and how fast it is
 *
 * Python:  q = multiprocessing.Queue(64); Process(target=producer, args=(q,))
 *          q.put(item); item = q.get(); a None sentinel per consumer to stop;
 *          q.qsize(), q.empty().  CPython builds Queue (Lib/multiprocessing/
 *          queues.py) from a Pipe(duplex=False), a feeder thread that pickles
 *          put() items into the pipe, a BoundedSemaphore(maxsize) for the
 *          bound and two Locks (one for readers, one for writers).
 * C:       lib/mp_queue: one MAP_SHARED mapping holding a ring of fixed-size
 *          slots with atomic tickets; a caller sleeps on a futex only when
 *          the queue is empty or full.  mp_queue_create, put, get, close,
 *          qsize, empty, try_get, put_many/get_many.
 * Usage:   queues_basic [--producers N (3, 1..16)] [--consumers N (2, 1..16)]
 *            [--per-producer N (20000)] [--items N (1000000)] [--repeat N (1)]
 *            [--python-items N (20000, 0 skips Python)] [--csv]
 *          The benchmark (Release build): queues_basic --items 20000000
 *            --repeat 5 --python-items 200000 --csv
 * Output:  [parent 7849 +1.9ms] close(): consumers drained, then got the end of queue: 60000 items (sum and order OK)
 *          [parent 7849 +3.6ms] sentinels: one STOP item per consumer after the producers ended: 60000 items (sum and order OK)
 *          [parent 7849 +3.7ms] quiet queue: put 5, qsize()=5 (exact: nobody else was using it); try_put until EAGAIN: 59 more, full()=true, capacity()=64 items of item_size()=8 bytes
 *          [parent 7849 +104.0ms] 50 ms timeouts: put on the full queue: ETIMEDOUT, get on the empty one: ETIMEDOUT
 *          [parent 7849 +105.4ms] busy queue: empty() was stale 19 times in 114885 looks (said empty, item there: 9; said not empty, nothing there: 10)
 *          [parent 7849 +129.6ms] mp_queue: 1000000 items of 8 bytes, 1 producer -> 1 consumer: 0.019 s, 53.0 M items/s
 *          [parent 7849 +129.6ms] mp_queue_many: batches of 64: 0.004 s, 222.4 M items/s
 *          [parent 7849 +313.9ms] python: multiprocessing.Queue, 20000 ints: 0.144 s, 0.14 M items/s (mp_queue: 382x)
 *          result: close OK, sentinel OK, qsize OK, bench 1000000 in order OK
 * Measured: the benchmark command above, Release build, 2 vCPUs (AMD EPYC
 *          under KVM) shared with other jobs, 5 runs, medians: mp_queue
 *          78.8 M items/s, mp_queue_many 224 M, Python's Queue 0.22 M (the
 *          target was 10 M).  Busier moments gave 26-78 M and 0.14 M.
 * Try this: --consumers 16 --producers 1 (consumers outnumber work: most
 *          sleep in the kernel, none spins); --csv for the benchmark alone.
 */
#include "mp.h"

enum { CAPACITY = 64, MAX_PROCS = 16, BATCH = 64 };
#define STOP UINT32_MAX  /* the sentinel's producer number */

struct job { uint32_t producer, seq; };  /* 8 bytes: the queue's item */

struct shared {
	_Atomic long count, sum, out_of_order, looks, looked_wrong[2];
	_Atomic int64_t t0, t1;  /* first put, last get (CLOCK_MONOTONIC) */
	_Atomic bool bench_ok;
};

static void producer(struct mp_queue *q, uint32_t p, long per)
{
	for (uint32_t i = 0; i < (uint32_t)per; i++)
		if (mp_queue_put(q, &(struct job){ p, i }) == -1)
			mp_die("mp_queue_put");
	_exit(0);
}

/* Take jobs until the end of the queue (close) or a STOP sentinel; check
 * that each producer's jobs arrive in the order it put them. */
static void consumer(struct mp_queue *q, struct shared *sh)
{
	int64_t last[MAX_PROCS];
	long n = 0, sum = 0, bad = 0;
	struct job j;
	int rc;

	for (int p = 0; p < MAX_PROCS; p++)
		last[p] = -1;
	while ((rc = mp_queue_get(q, &j)) == 1 && j.producer != STOP) {
		if (j.producer >= MAX_PROCS || j.seq <= last[j.producer])
			bad++;
		else
			last[j.producer] = j.seq;
		n++;
		sum += j.seq;
	}
	if (rc == -1)
		mp_die("mp_queue_get");
	sh->count += n;
	sh->sum += sum;
	sh->out_of_order += bad;
	_exit(0);
}

/* One round: consumers, producers, then the shutdown: close() or one STOP
 * sentinel per consumer, put only once every producer has finished. */
static bool run_round(struct shared *sh, long nprod, long ncons, long per,
		      bool sentinel)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct job), CAPACITY);
	pid_t prod[MAX_PROCS];

	if (!q)
		mp_die("mp_queue_create");
	sh->count = sh->sum = sh->out_of_order = 0;
	for (long c = 0; c < ncons; c++)
		if (mp_fork() == 0)
			consumer(q, sh);
	for (long p = 0; p < nprod; p++)
		if ((prod[p] = mp_fork()) == 0)
			producer(q, (uint32_t)p, per);
	for (long p = 0; p < nprod; p++)
		if (mp_waitpid(prod[p]) != 0)
			mp_die("producer %ld failed", p);
	for (long c = 0; sentinel && c < ncons; c++)
		MP_CHECK(mp_queue_put(q, &(struct job){ STOP, 0 }));
	if (!sentinel)
		MP_CHECK(mp_queue_close(q));  /* consumers drain, then get 0 */
	bool closed = mp_queue_closed(q);  /* seen by every process */

	mp_wait_all();
	MP_CHECK(mp_queue_destroy(q));

	long want = nprod * per, want_sum = nprod * (per * (per - 1) / 2);
	bool ok = sh->count == want && sh->sum == want_sum &&
		  sh->out_of_order == 0 && closed == !sentinel;

	mp_say("parent", "%s: %ld items (sum and order %s)", sentinel ?
	       "sentinels: one STOP item per consumer after the producers ended"
	       : "close(): consumers drained, then got the end of queue",
	       (long)sh->count, ok ? "OK" : "MISMATCH");
	return ok;
}

/* Exact when quiet; stale on arrival when busy: two consumers check empty()
 * and then try_get(), and between the two calls the others move on.  True
 * if the quiet answers were exact, the timeouts expired and the consumers
 * got all 2000 items. */
static bool qsize_promises(struct shared *sh)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct job), CAPACITY);
	struct job j = { 0, 0 };
	size_t more = 0;

	if (!q)
		mp_die("mp_queue_create");
	for (int i = 0; i < 5; i++)
		MP_CHECK(mp_queue_put(q, &j));
	size_t quiet = mp_queue_qsize(q);

	while (mp_queue_try_put(q, &j) == 0)
		more++;
	if (errno != EAGAIN)
		mp_die("mp_queue_try_put");
	bool full = mp_queue_full(q);

	mp_say("parent", "quiet queue: put 5, qsize()=%zu (exact: nobody else "
	       "was using it); try_put until EAGAIN: %zu more, full()=%s, "
	       "capacity()=%zu items of item_size()=%zu bytes", quiet, more,
	       full ? "true" : "false", mp_queue_capacity(q),
	       mp_queue_item_size(q));
	/* Python: q.put(x, timeout=0.05) raises queue.Full, q.get(timeout=
	 * 0.05) raises queue.Empty. */
	int put_err = mp_queue_put_timeout(q, &j, 0.05) == -1 ? errno : 0;

	while (mp_queue_try_get(q, &j) == 1)
		;
	int get_err = mp_queue_get_timeout(q, &j, 0.05) == -1 ? errno : 0;

	mp_say("parent", "50 ms timeouts: put on the full queue: %s, get on "
	       "the empty one: %s", mp_errname(put_err), mp_errname(get_err));
	bool exact = quiet == 5 && 5 + more == CAPACITY && full &&
		     put_err == ETIMEDOUT && get_err == ETIMEDOUT;

	sh->count = 0;
	for (int c = 0; c < 2; c++) {
		if (mp_fork() != 0)
			continue;
		long looks = 0, got = 0, wrong[2] = { 0, 0 };
		int rc;

		do {
			bool said_empty = mp_queue_empty(q);

			rc = mp_queue_try_get(q, &j);
			if (rc == -1 && errno != EAGAIN)
				mp_die("mp_queue_try_get");
			looks++;
			got += rc == 1;
			wrong[0] += said_empty && rc == 1;
			wrong[1] += !said_empty && rc == -1;
		} while (rc != 0);
		sh->count += got;
		sh->looks += looks;
		sh->looked_wrong[0] += wrong[0];
		sh->looked_wrong[1] += wrong[1];
		_exit(0);
	}
	for (int i = 0; i < 2000; i++)
		MP_CHECK(mp_queue_put(q, &j));
	MP_CHECK(mp_queue_close(q));
	mp_wait_all();
	MP_CHECK(mp_queue_destroy(q));
	mp_say("parent", "busy queue: empty() was stale %ld times in %ld looks "
	       "(said empty, item there: %ld; said not empty, nothing there: "
	       "%ld)", (long)(sh->looked_wrong[0] + sh->looked_wrong[1]),
	       (long)sh->looks, (long)sh->looked_wrong[0],
	       (long)sh->looked_wrong[1]);
	return exact && sh->count == 2000;
}

/* One producer, one consumer, 8-byte items 0..n-1, one at a time or in
 * batches; the consumer checks every value.  Items per second. */
static double bench(struct shared *sh, long n, bool batches)
{
	struct mp_queue *q = mp_queue_create(sizeof(uint64_t), 1024);
	uint64_t buf[BATCH];

	if (!q)
		mp_die("mp_queue_create");
	if (mp_fork() == 0) {
		sh->t0 = mp_now_ns();
		for (uint64_t i = 0; i < (uint64_t)n && !batches; i++)
			if (mp_queue_put(q, &i) == -1)
				mp_die("mp_queue_put");
		for (uint64_t i = 0; i < (uint64_t)n && batches;) {
			size_t k = (uint64_t)n - i < BATCH ? (size_t)(n - (long)i)
							   : BATCH;

			for (size_t m = 0; m < k; m++)
				buf[m] = i + m;
			if (mp_queue_put_many(q, buf, k) != (ssize_t)k)
				mp_die("mp_queue_put_many");
			i += k;
		}
		_exit(0);
	}
	if (mp_fork() == 0) {
		uint64_t want = 0;
		bool ok = true;

		while (want < (uint64_t)n) {
			ssize_t k = batches ? mp_queue_get_many(q, buf, BATCH)
					    : mp_queue_get(q, buf);

			if (k <= 0)
				mp_die("mp_queue_get: %zd", k);
			for (ssize_t m = 0; m < k; m++)
				ok &= buf[m] == want++;
		}
		sh->t1 = mp_now_ns();
		sh->bench_ok = ok;
		_exit(0);
	}
	mp_wait_all();
	MP_CHECK(mp_queue_destroy(q));
	return (double)n / ((double)(sh->t1 - sh->t0) / 1e9);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of repeat benchmark runs (items/s); *ok stays true only if
 * every run received every item in order. */
static double median_rate(struct shared *sh, long n, bool batches,
			  long repeat, bool *ok)
{
	double rates[101];

	for (long r = 0; r < repeat; r++) {
		rates[r] = bench(sh, n, batches);
		*ok &= sh->bench_ok;
	}
	qsort(rates, (size_t)repeat, sizeof rates[0], cmp_double);
	return rates[repeat / 2];
}

struct twin { long items; double secs, rate; bool got; };

/* Its one result line: "python,<items>,<seconds>,<items_per_s>". */
static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	long n;

	if (sscanf(line, "python,%ld,%lf,%lf", &n, &t->secs, &t->rate) == 3)
		t->got = n == t->items;
	else
		fprintf(stderr, "python: %s\n", line);
}

/* The Python twin: the same 1 -> 1 workload through multiprocessing.Queue;
 * it checks its own items. */
static bool run_python(long items, double *secs, double *rate)
{
	char arg[32];
	struct twin t = { .items = items };

	snprintf(arg, sizeof arg, "%ld", items);
	int st = mp_run_twin(MP_LESSON_DIR "/queues_basic.py",
			     (char *[]){ "--items", arg, NULL },
			     60 + (double)items * 1e-4, twin_line, &t);

	if (st == -1)
		mp_say("parent", "python twin: %s", strerror(errno));
	*secs = t.secs;
	*rate = t.rate;
	return t.got && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char *argv[])
{
	long nprod = 3, ncons = 2, per = 20000, items = 1000000, repeat = 1;
	long py_items = 20000;
	bool csv = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("producers", &nprod, 1, MAX_PROCS, "producer processes"),
		MP_OPT_L("consumers", &ncons, 1, MAX_PROCS, "consumer processes"),
		MP_OPT_L("per-producer", &per, 1, 100000000,
			 "items each producer puts"),
		MP_OPT_L("items", &items, 1, 100000000000,
			 "benchmark items, 1 producer -> 1 consumer"),
		MP_OPT_L("repeat", &repeat, 1, 101,
			 "benchmark runs (the median is printed)"),
		MP_OPT_L("python-items", &py_items, 0, 100000000,
			 "items for Python's Queue (0 skips Python)"),
		MP_OPT_F("csv", &csv, "the benchmark alone, as CSV"),
	};

	mp_parse_options(argc, argv, "Producers and consumers through "
			 "lib/mp_queue; shutdown by close() and by sentinel; "
			 "qsize()/empty() between processes; a benchmark "
			 "against Python's multiprocessing.Queue.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	bool by_close = true, by_sentinel = true, quiet_exact = true;
	bool in_order = true;

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv) {
		/* 1. Shutdown by close(): "no more puts", from any process. */
		mp_say("parent", "%ld producers x %ld items, %ld consumers, "
		       "capacity %d", nprod, per, ncons, CAPACITY);
		by_close = run_round(sh, nprod, ncons, per, false);
		/* 2. Python's way: a sentinel per consumer, after the real
		 *    items.  Correct only once every producer is done. */
		by_sentinel = run_round(sh, nprod, ncons, per, true);
		/* 3. qsize()/empty(): exact when quiet, stale when busy. */
		quiet_exact = qsize_promises(sh);
	}

	/* 4. The benchmark: 8-byte items, 1 producer -> 1 consumer. */
	double one = median_rate(sh, items, false, repeat, &in_order);
	double many = median_rate(sh, items, true, repeat, &in_order);

	if (csv) {
		printf("engine,items,seconds,items_per_s\n");
		printf("mp_queue,%ld,%.6f,%.0f\n", items, items / one, one);
		printf("mp_queue_many,%ld,%.6f,%.0f\n", items, items / many,
		       many);
	} else {
		mp_say("parent", "mp_queue: %ld items of 8 bytes, 1 producer "
		       "-> 1 consumer: %.3f s, %.1f M items/s%s", items,
		       items / one, one / 1e6, repeat > 1 ? " (median)" : "");
		mp_say("parent", "mp_queue_many: batches of %d: %.3f s, %.1f M "
		       "items/s", BATCH, items / many, many / 1e6);
	}

	/* 5. The same workload through Python's multiprocessing.Queue. */
	double py_s = 0, py_rate = 0;
	bool py_ok = true;

	if (py_items > 0 && mp_python3()) {
		py_ok = run_python(py_items, &py_s, &py_rate);
		if (csv && py_ok)
			printf("python,%ld,%.6f,%.0f\n", py_items, py_s,
			       py_rate);
		else if (py_ok)
			mp_say("parent", "python: multiprocessing.Queue, %ld "
			       "ints: %.3f s, %.2f M items/s (mp_queue: %.0fx)",
			       py_items, py_s, py_rate / 1e6, one / py_rate);
		else
			mp_say("parent", "python: the twin FAILED");
	} else if (py_items > 0 && !csv) {
		mp_say("parent", "python: skipped, python3 was not found at "
		       "configure time");
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	bool ok = by_close && by_sentinel && quiet_exact && in_order && py_ok;

	if (!csv)
		printf("result: close %s, sentinel %s, qsize %s, bench %ld "
		       "%s%s %s\n", by_close ? "OK" : "lost items",
		       by_sentinel ? "OK" : "lost items",
		       quiet_exact ? "OK" : "WRONG", items,
		       in_order ? "in order" : "OUT OF ORDER",
		       py_ok ? "" : ", python FAILED", ok ? "OK" : "MISMATCH");
	else if (!ok)
		fprintf(stderr, "queues_basic: benchmark MISMATCH\n");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
