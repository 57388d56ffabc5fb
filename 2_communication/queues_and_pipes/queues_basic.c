/* 2_communication/queues_and_pipes/queues_basic.c -- producers and consumers
 * through one queue shared by processes, and how fast it is
 *
 * Python:  q = multiprocessing.Queue(64); Process(target=producer, args=(q,))
 *          q.put(item); item = q.get(); a None sentinel per consumer to stop;
 *          q.qsize(), q.empty().  CPython (Lib/multiprocessing/queues.py)
 *          builds Queue from a Pipe(duplex=False), a feeder thread that
 *          pickles put() items into it, a BoundedSemaphore(maxsize) for the
 *          bound and two Locks (one for readers, one for writers).
 * C:       lib/mp_queue: one MAP_SHARED mapping holding a ring of fixed-size
 *          slots with atomic tickets; a caller sleeps on a futex only when
 *          the queue is empty or full.  mp_queue_create, put, get, close,
 *          try_put/try_get, put/get_timeout, qsize/empty/full, put/get_many.
 * Usage:   queues_basic [--producers N (3, 1..16)] [--consumers N (2, 1..16)]
 *            [--per-producer N (20000, 1..10^8)] [--items N (10^6, 1..10^11)]
 *            [--repeat N (1, 1..101)] [--python-items N (20000, 0..10^8;
 *            0 skips Python)] [--csv]
 * Output:  [parent 18094 +0.0ms] 3 producers x 20000 items, 2 consumers, capacity 64
 *          [parent 18094 +1.7ms] close(): consumers drained, then got the end of queue: 60000 items (sum and order OK)
 *          [parent 18094 +3.4ms] sentinels: one STOP per consumer, after the last producer ended: 60000 items (sum and order OK)
 *          [parent 18094 +103.7ms] quiet queue: qsize()=5 after 5 puts, 59 more until EAGAIN, full()=true; 50 ms timeouts: put ETIMEDOUT, get ETIMEDOUT
 *          [parent 18094 +108.3ms] busy queue: empty() was stale 7501 times in 621110 looks (said empty, item there: 61; said not empty, nothing there: 7440)
 *          [parent 18094 +123.9ms] mp_queue: 1000000 items of 8 bytes, 1 producer -> 1 consumer: 0.011 s, 92.3 M items/s
 *          [parent 18094 +123.9ms] mp_queue_many: batches of 64: 0.004 s, 240.9 M items/s
 *          [parent 18094 +250.6ms] python: multiprocessing.Queue, 20000 ints: 0.089 s, 0.22 M items/s (mp_queue: 410x)
 *          result: close OK, sentinel OK, qsize OK, bench 1000000 in order OK
 * Benchmark (Release build; the goal: 10 M items/s, 8-byte items, 1 -> 1):
 *          queues_basic --items 20000000 --repeat 5 --python-items 200000 --csv
 *          On 2 vCPUs (AMD EPYC under KVM) shared with other jobs, medians
 *          of 5: mp_queue 85-96 M items/s when the machine was quiet (36-91 M
 *          while busy), mp_queue_many 217-251 M, Python's Queue 0.22 M.
 * Try this: --consumers 16 --producers 1 (consumers outnumber work: most
 *          sleep in the kernel, none spins); --csv for the benchmark alone.
 */
#include "mp.h"

enum { CAPACITY = 64, MAX_PROCS = 16, BATCH = 64, BUSY_ITEMS = 20000 };
#define STOP UINT32_MAX  /* the sentinel's producer number */

struct job { uint32_t producer, seq; };  /* 8 bytes: the queue's item */

struct shared {
	_Atomic long count, sum, bad, looks, stale[2];
	_Atomic int64_t t0, t1;  /* first put, last get (CLOCK_MONOTONIC) */
};

/* Take jobs until the end of the queue (close) or a STOP sentinel; each
 * producer's jobs must arrive in the order it put them. */
static void consumer(struct mp_queue *q, struct shared *sh)
{
	uint64_t next[MAX_PROCS] = { 0 };  /* lowest seq still possible */
	long n = 0, sum = 0, bad = 0;
	struct job j;
	int rc;

	while ((rc = mp_queue_get(q, &j)) == 1 && j.producer != STOP) {
		if (j.producer >= MAX_PROCS || j.seq < next[j.producer])
			bad++;
		else
			next[j.producer] = j.seq + 1;
		n++;
		sum += j.seq;
	}
	if (rc == -1)
		mp_die("mp_queue_get");
	sh->count += n;
	sh->sum += sum;
	sh->bad += bad;
	_exit(0);
}

/* Consumers, producers, then the shutdown: close(), or one STOP sentinel per
 * consumer.  Either only once every producer has finished: a sentinel put
 * earlier stops a consumer while items are still to come, and a put after
 * close() fails. */
static bool run_round(struct shared *sh, long nprod, long ncons, long per,
		      bool sentinel)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct job), CAPACITY);
	pid_t prod[MAX_PROCS];

	if (!q)
		mp_die("mp_queue_create");
	sh->count = sh->sum = sh->bad = 0;
	for (long c = 0; c < ncons; c++)
		if (mp_fork() == 0)
			consumer(q, sh);
	for (long p = 0; p < nprod; p++) {
		if ((prod[p] = mp_fork()) != 0)
			continue;
		for (uint32_t i = 0; i < (uint32_t)per; i++) {
			struct job j = { (uint32_t)p, i };

			if (mp_queue_put(q, &j) == -1)
				mp_die("mp_queue_put");
		}
		_exit(0);
	}
	for (long p = 0; p < nprod; p++) {
		int st = mp_waitpid(prod[p]);

		if (st != 0) {  /* mp_die also stops and reaps the others */
			errno = ECHILD;
			mp_die("producer %ld %s %d", p, WIFSIGNALED(st) ?
			       "was killed by signal" : "exited with status",
			       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
		}
	}
	for (long c = 0; sentinel && c < ncons; c++)
		MP_CHECK(mp_queue_put(q, &(struct job){ STOP, 0 }));
	if (!sentinel)
		MP_CHECK(mp_queue_close(q));  /* consumers drain, then get 0 */
	mp_wait_all();
	MP_CHECK(mp_queue_destroy(q));
	bool ok = sh->count == nprod * per && sh->bad == 0 &&
		  sh->sum == nprod * (per * (per - 1) / 2);

	mp_say("parent", "%s: %ld items (sum and order %s)", sentinel ?
	       "sentinels: one STOP per consumer, after the last producer ended"
	       : "close(): consumers drained, then got the end of queue",
	       (long)sh->count, ok ? "OK" : "MISMATCH");
	return ok;
}

/* Two consumers ask empty(), then try_get(), until the end of the queue. */
static void looker(struct mp_queue *q, struct shared *sh)
{
	long looks = 0, got = 0, stale[2] = { 0, 0 };
	struct job j;
	int rc;

	do {
		bool said_empty = mp_queue_empty(q);

		if ((rc = mp_queue_try_get(q, &j)) == -1 && errno != EAGAIN)
			mp_die("mp_queue_try_get");
		looks++;
		got += rc == 1;
		stale[0] += said_empty && rc == 1;   /* an item came since */
		stale[1] += !said_empty && rc == -1; /* or went elsewhere */
	} while (rc != 0);
	sh->count += got;
	sh->looks += looks;
	sh->stale[0] += stale[0];
	sh->stale[1] += stale[1];
	_exit(0);
}

/* qsize()/empty()/full(): exact while nobody else uses the queue, stale on
 * arrival while others do.  True if the quiet answers were exact, both
 * timeouts expired and the lookers got every busy item. */
static bool qsize_promises(struct shared *sh)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct job), CAPACITY);
	struct job j = { 0, 0 };
	size_t more = 0;

	if (!q)
		mp_die("mp_queue_create");
	for (int i = 0; i < 5; i++)
		MP_CHECK(mp_queue_put(q, &j));
	size_t five = mp_queue_qsize(q);

	while (mp_queue_try_put(q, &j) == 0)
		more++;
	if (errno != EAGAIN)
		mp_die("mp_queue_try_put");
	bool full = mp_queue_full(q);
	/* Python: put(x, timeout=0.05) raises queue.Full, get() queue.Empty. */
	int put_err = mp_queue_put_timeout(q, &j, 0.05) == -1 ? errno : 0;

	while (mp_queue_try_get(q, &j) == 1)
		;
	int get_err = mp_queue_get_timeout(q, &j, 0.05) == -1 ? errno : 0;

	mp_say("parent", "quiet queue: qsize()=%zu after 5 puts, %zu more until "
	       "EAGAIN, full()=%s; 50 ms timeouts: put %s, get %s", five, more,
	       full ? "true" : "false", mp_errname(put_err),
	       mp_errname(get_err));
	sh->count = 0;
	for (int c = 0; c < 2; c++)
		if (mp_fork() == 0)
			looker(q, sh);
	for (int i = 0; i < BUSY_ITEMS; i++)
		MP_CHECK(mp_queue_put(q, &j));
	MP_CHECK(mp_queue_close(q));
	mp_wait_all();
	MP_CHECK(mp_queue_destroy(q));
	mp_say("parent", "busy queue: empty() was stale %ld times in %ld looks "
	       "(said empty, item there: %ld; said not empty, nothing there: "
	       "%ld)", (long)(sh->stale[0] + sh->stale[1]), (long)sh->looks,
	       (long)sh->stale[0], (long)sh->stale[1]);
	return five == 5 && 5 + more == CAPACITY && full &&
	       put_err == ETIMEDOUT && get_err == ETIMEDOUT &&
	       sh->count == BUSY_ITEMS;
}

/* One producer, one consumer, 8-byte items 0..n-1, one at a time or in
 * batches; the consumer checks every value.  Returns items per second. */
static double bench(struct shared *sh, long n, bool batches)
{
	struct mp_queue *q = mp_queue_create(sizeof(uint64_t), 1024);
	uint64_t buf[BATCH], un = (uint64_t)n;

	if (!q)
		mp_die("mp_queue_create");
	if (mp_fork() == 0) {
		sh->t0 = mp_now_ns();
		for (uint64_t i = 0; !batches && i < un; i++)
			if (mp_queue_put(q, &i) == -1)
				mp_die("mp_queue_put");
		for (uint64_t i = 0, k; batches && i < un; i += k) {
			k = un - i < BATCH ? un - i : BATCH;
			for (uint64_t m = 0; m < k; m++)
				buf[m] = i + m;
			if (mp_queue_put_many(q, buf, k) != (ssize_t)k)
				mp_die("mp_queue_put_many");
		}
		_exit(0);
	}
	if (mp_fork() == 0) {
		long bad = 0;

		for (uint64_t want = 0; want < un;) {
			ssize_t k = batches ? mp_queue_get_many(q, buf, BATCH)
					    : mp_queue_get(q, buf);

			if (k <= 0)
				mp_die("mp_queue_get: %zd", k);
			for (ssize_t m = 0; m < k; m++)
				bad += buf[m] != want++;
		}
		sh->t1 = mp_now_ns();
		sh->bad += bad;
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

/* The Python twin prints one line, "python,<items>,<seconds>,<items/s>". */
struct twin { long items; double secs, rate; bool got; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	long n;

	if (sscanf(line, "python,%ld,%lf,%lf", &n, &t->secs, &t->rate) == 3)
		t->got = n == t->items;
	else
		fprintf(stderr, "python: %s\n", line);
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
	bool by_close = true, by_sentinel = true, quiet = true;

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv) {
		/* 1. close(): "no more puts", seen by every process.  2. The
		 *    Python way: a sentinel per consumer after the real items.
		 * 3. qsize()/empty(): exact when quiet, stale when busy. */
		mp_say("parent", "%ld producers x %ld items, %ld consumers, "
		       "capacity %d", nprod, per, ncons, CAPACITY);
		by_close = run_round(sh, nprod, ncons, per, false);
		by_sentinel = run_round(sh, nprod, ncons, per, true);
		quiet = qsize_promises(sh);
	}

	/* 4. The benchmark: 8-byte items, 1 producer -> 1 consumer; the
	 *    median of repeat runs, one item per call and in batches. */
	double rate[2][101];

	sh->bad = 0;
	for (int b = 0; b < 2; b++) {
		for (long r = 0; r < repeat; r++)
			rate[b][r] = bench(sh, items, b == 1);
		qsort(rate[b], (size_t)repeat, sizeof(double), cmp_double);
	}
	double one = rate[0][repeat / 2], many = rate[1][repeat / 2];
	bool in_order = sh->bad == 0;

	if (csv) {
		printf("engine,items,seconds,items_per_s\n");
		printf("mp_queue,%ld,%.6f,%.0f\n", items, items / one, one);
		printf("mp_queue_many,%ld,%.6f,%.0f\n", items, items / many,
		       many);
	} else {
		mp_say("parent", "mp_queue: %ld items of 8 bytes, 1 producer -> "
		       "1 consumer: %.3f s, %.1f M items/s%s", items,
		       items / one, one / 1e6, repeat > 1 ? " (median)" : "");
		mp_say("parent", "mp_queue_many: batches of %d: %.3f s, %.1f M "
		       "items/s", BATCH, items / many, many / 1e6);
	}

	/* 5. The same workload through Python's multiprocessing.Queue. */
	struct twin t = { .items = py_items };
	char arg[32];
	bool py_ok = true;

	snprintf(arg, sizeof arg, "%ld", py_items);
	if (py_items > 0 && mp_python3()) {
		int st = mp_run_twin(MP_LESSON_DIR "/queues_basic.py",
				     (char *[]){ "--items", arg, NULL },
				     60 + (double)py_items / 1e4, twin_line, &t);

		if (st == -1)
			fprintf(stderr, "queues_basic: python twin: %s\n",
				strerror(errno));
		py_ok = t.got && st != -1 && WIFEXITED(st) &&
			WEXITSTATUS(st) == 0;
		if (py_ok && csv)
			printf("python,%ld,%.6f,%.0f\n", py_items, t.secs,
			       t.rate);
		else if (py_ok)
			mp_say("parent", "python: multiprocessing.Queue, %ld "
			       "ints: %.3f s, %.2f M items/s (mp_queue: %.0fx)",
			       py_items, t.secs, t.rate / 1e6, one / t.rate);
	} else if (py_items > 0 && !csv) {
		mp_say("parent", "python: skipped, python3 was not found at "
		       "configure time");
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	bool ok = by_close && by_sentinel && quiet && in_order && py_ok;

	if (!csv)
		printf("result: close %s, sentinel %s, qsize %s, bench %ld %s%s "
		       "%s\n", by_close ? "OK" : "LOST ITEMS", by_sentinel ?
		       "OK" : "LOST ITEMS", quiet ? "OK" : "WRONG", items,
		       in_order ? "in order" : "OUT OF ORDER",
		       py_ok ? "" : ", python FAILED", ok ? "OK" : "MISMATCH");
	else if (!ok)
		fprintf(stderr, "queues_basic: benchmark MISMATCH\n");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
