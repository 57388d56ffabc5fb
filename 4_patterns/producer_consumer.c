/* 4_patterns/producer_consumer.c -- P producers, C consumers, one bounded
 * queue: every item consumed exactly once, backpressure counted, and two
 * ways to say "no more"
 *
 * Python:  q = multiprocessing.Queue(maxsize); producers q.put((pid, seq)),
 *          consumers "for item in iter(q.get, None)", the parent puts one
 *          None per consumer after joining the producers.  CPython
 *          (Lib/multiprocessing/queues.py): put() waits on a
 *          BoundedSemaphore(maxsize), appends to a per-process buffer and a
 *          feeder thread pickles it into a pipe; get() reads the pipe under
 *          a lock.  Queue has no shared "no more items": close() only stops
 *          this process's feeder, so sentinels are the idiom.
 * C:       lib/mp_queue (a shared ring, futex waits): mp_queue_try_put, then
 *          mp_queue_put_timeout when it is full (counted: backpressure);
 *          mp_queue_get_timeout; mp_queue_close (every consumer drains, then
 *          gets 0) or STOP sentinels; every wait bounded, so a broken run
 *          ends with MISMATCH instead of hanging.  The table's 1x1:
 *          sched_getaffinity, sched_setaffinity (one CPU each side).
 * Usage:   producer_consumer [--producers N (3, 1..16)] [--consumers N (2,
 *            1..16)] [--items N (20000 per producer, 1..10^6)] [--capacity N
 *            (64, 1..65536)] [--stop close|sentinel] [--slow-us N (100,
 *            1..10000)] [--fault none|drop|twice|lifo] [--table-items N
 *            (500000, 0..10^9)] [--repeat N (3, 1..101)] [--python-items N
 *            (20000, 0 skips)] [--csv]
 * Output:  (release build, 2 CPUs shared with other jobs, load 1.0; trimmed)
 *   [parent 9964 +0.0ms] 3 producers x 20000 items -> 2 consumers,
 *     capacity 64, stop by close
 *   [parent 9964 +10.8ms] 60000 items: 0 lost, 0 twice, 0 out of producer
 *     order; producers found the queue full 8371 times
 *   [parent 9964 +199.3ms] backpressure, slow consumer (100 us an item):
 *     full on 936 of 1000 puts (93.6%), waited 166.5 ms; at most 65 items
 *     ahead (bound: capacity + consumers = 65)
 *   [parent 9964 +199.6ms] join before drain: a producer put 64 items and
 *     exited; waitpid() returned, 64 items still queued
 *   [parent 9964 +500.3ms] sentinels, 2 STOPs for 3 consumers: 2 stopped,
 *     1 still waiting after 300 ms (without a timeout: forever, and so
 *     would join())
 *   [parent 9964 +501.4ms] sentinels, a consumer killed holding item 15:
 *     29 of 30 done, 1 STOP left in the queue; a consumer started next
 *     takes it first: 0 of 5 new items done
 *   engine   shape     items   seconds      items/s  / python
 *   mp_queue  1x1*    500000  0.011920     41947723    196.3x
 *   mp_queue   2x2    500000  0.014937     33474596    106.4x
 *   mp_queue   1x2    500000  0.042953     11640764     54.4x
 *   mp_queue   3x1    500000  0.036477     13707343     73.7x
 *   python    1x1*     20000  0.093579       213723
 *   ...
 *   * mp_queue 1x1: consumer alone on CPU 0, producer alone on CPU 1
 *   * python 1x1: consumer alone on CPU 0, producer alone on CPU 1
 *   python: a producer that put 20000 items into a Queue() was still alive
 *     after join(timeout=0.5), gone once the parent drained the queue
 *   result: 60000 items, 0 lost/twice/out of order; 64 ahead beyond
 *     consumers' hands (capacity 64); join before drain fine; sentinel
 *     pitfalls 4/4; table sums exact OK                        (one line)
 *   With --csv: "engine,shape,items,seconds,items_per_s,consumer_cpu,
 *   producer_cpu,x_python", one row per engine and shape (C: the median
 *   of --repeat runs; Python: one run of --python-items; x_python: the C
 *   row's items/s over the Python row's of the same shape, this run).
 *   The full counts and the rates are measured, not judged (they depend
 *   on the scheduler and on whoever else uses the CPUs: three --csv runs
 *   in a row, release build, load 1.3, gave 1x1 at 32, 41 and 37 M
 *   items/s, 124x, 151x and 140x Python; in slower minutes of the same
 *   2-CPU VM 1x1 ran at 22-26 M items/s, about 90-100x); the bound, the
 *   counts, the order and the sums are exact.
 * The table: capacity 1024 on both sides, one 8-byte item per put()/get()
 *          (Python: an int, pickled), the clock from the first put to the
 *          last consumer's end.  1x1 pins the consumer and the producer to
 *          the first two CPUs we may use, one each (both engines, when two
 *          are allowed), as any benchmark of a queue does: left to the
 *          scheduler, the side that waited is woken on whichever CPU,
 *          often the other's, and a cross-CPU wake-up costs 15-30 us on a
 *          VM; the figure then measures the scheduler.  The children report
 *          where they were allowed to run, and the table marks (*) only
 *          what they reported.  The other shapes have more processes than
 *          two CPUs and run where the scheduler puts them.  500000 items: at
 *          200000 the start and the end (a consumer asleep on its futex,
 *          the producer's exit) were a fifth of the time and 1x1 swung from
 *          28 to 44 M items/s.  Python runs 20000: pinned or not, its
 *          rate was no higher with 200000 or 500000 (0.22-0.23 M items/s
 *          against 0.23-0.28 with 20000, measured), so the shorter run
 *          does not flatter the C side.
 * Try this: --fault drop, --fault twice, --fault lifo: MISMATCH.
 *          Drop the sched_setaffinity() in pin_to(): the mp_queue 1x1
 *          row loses its * ("not pinned apart (the pinning did not
 *          hold)"), and its rate may swing.
 *          --producers 7 --consumers 3 --capacity 1 --items 997;
 *          --stop sentinel.  In run_round(), drop the mp_queue_close() (a
 *          consumer waits 2 s in vain) or put one STOP too few (the same
 *          in the backpressure rounds, which stop by STOP) or one too many
 *          (it is left in the queue): MISMATCH within a few seconds.
 *          In Python, join a producer before the parent has drained the
 *          queue: a process that put() items waits at exit for its feeder
 *          thread (Queue._finalize_join, registered by Queue._start_thread,
 *          run by util._exit_function as the child ends) to push them into
 *          the pipe, which stays full until someone reads -- the deadlock
 *          the docs warn of under "Joining processes that use queues".
 *          mp_queue cannot do that: put() has copied the item into shared
 *          memory before it returns; no buffer or thread is left behind
 *          (the twin shows both).
 */
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#include "mp.h"


enum { MAX_PROCS = 16, TABLE_CAP = 1024, DEMO_ITEMS = 30, BP_ITEMS = 1000 };
enum { EXIT_STUCK = 3 };  /* a child that waited WAIT_S for nothing */
enum fault { NONE, DROP, TWICE, LIFO };
#define WAIT_S 2.0   /* no put or get waits longer: a broken run still ends */
#define STUCK_S 0.3  /* the demo's consumers wait this long for a STOP */
#define STOP UINT32_MAX

struct item { uint32_t producer, seq; };  /* 8 bytes, copied into the ring */

struct run {
	long producers, consumers, total, slow_us, die_at;
	bool pinned;  /* 1x1 in the table: consumer on cpu[0], producer */
	int cpu[2];   /* on cpu[1] */
	bool sentinel, check;  /* check: record every item, count ahead */
	enum fault fault;
	double wait_s;
};

struct shared {
	_Atomic long put, got, max_ahead;  /* the bound, while check is on */
	_Atomic long full, waited_us;      /* backpressure felt by producers */
	_Atomic long taken, order_bad, stuck, stopped, count;
	_Atomic uint64_t sum;
	_Atomic int64_t t0, t1;            /* first put, last get */
	_Atomic int alone_on[2];  /* consumer's, producer's CPU + 1 if it may
				     run on that one alone (0: on several) */
	_Atomic unsigned char seen[];      /* per item: times consumed */
};

/* Sleep us microseconds (< 1 s), whole even if a signal interrupts. */
static void sleep_us(long us)
{
	struct timespec t = { 0, us * 1000 };

	while (nanosleep(&t, &t) == -1)
		if (errno != EINTR)
			mp_die("nanosleep");
}

/* Producer p's share of total items, and where its items start in seen[]:
 * the first total % P producers put one more. */
static long share(long total, long np, long p)
{
	return total / np + (p < total % np);
}

static long base(long total, long np, long p)
{
	return p * (total / np) + (p < total % np ? p : total % np);
}

static void store_min(_Atomic int64_t *x, int64_t v)
{
	int64_t old = atomic_load(x);

	while ((old == 0 || v < old) &&
	       !atomic_compare_exchange_weak(x, &old, v))
		;
}

static void producer(struct mp_queue *q, struct shared *sh,
		     const struct run *r, uint32_t p)
{
	long n = share(r->total, r->producers, p), full = 0;
	int64_t waited = 0;

	store_min(&sh->t0, mp_now_ns());
	for (uint32_t s = 0; s < (uint32_t)n; s++) {
		struct item it = { p, s };

		if (mp_queue_try_put(q, &it) == -1) {
			if (errno != EAGAIN)
				mp_die("mp_queue_try_put");
			int64_t t = mp_now_ns();  /* full: wait for room */

			full++;
			if (mp_queue_put_timeout(q, &it, WAIT_S) == -1)
				_exit(errno == ETIMEDOUT ? EXIT_STUCK : 1);
			waited += mp_now_ns() - t;
		}
		if (r->check) {  /* how far ahead of the consumers are we? */
			long a = atomic_fetch_add(&sh->put, 1) + 1 -
				 atomic_load(&sh->got);
			long m = atomic_load(&sh->max_ahead);

			while (a > m && !atomic_compare_exchange_weak(
						&sh->max_ahead, &m, a))
				;
		}
	}
	sh->full += full;
	sh->waited_us += waited / 1000;
	_exit(0);
}

/* Count one item: exactly once overall, in order per producer here. */
static void record(struct shared *sh, const struct run *r, struct item it,
		   long last[])
{
	long n = share(r->total, r->producers, it.producer);

	if (it.producer >= (uint32_t)r->producers || it.seq >= (uint32_t)n) {
		sh->order_bad++;  /* an item nobody put */
		return;
	}
	atomic_fetch_add(&sh->seen[base(r->total, r->producers, it.producer)
				   + it.seq], 1);
	if ((long)it.seq <= last[it.producer])
		sh->order_bad++;
	else
		last[it.producer] = it.seq;
}

static void consumer(struct mp_queue *q, struct shared *sh,
		     const struct run *r)
{
	long last[MAX_PROCS], n = 0;
	uint64_t sum = 0;
	struct item it, held = { STOP, 0 };  /* --fault lifo: one held back */
	int rc;

	for (int i = 0; i < MAX_PROCS; i++)
		last[i] = -1;
	for (;;) {
		if ((rc = mp_queue_try_get(q, &it)) == -1 && errno == EAGAIN)
			rc = mp_queue_get_timeout(q, &it, r->wait_s);
		if (rc == -1 && errno == ETIMEDOUT) {
			sh->stuck++;  /* no item, no STOP, no end of queue */
			_exit(EXIT_STUCK);
		}
		if (rc == -1)
			mp_die("mp_queue_get");
		if (rc == 0 || it.producer == STOP)
			break;  /* end of queue (close) or our sentinel */
		/* Which item overall, for --fault and the death demo; the
		 * table's runs (no check, nobody dies) skip this shared
		 * counter, which would cost the hot loop a locked add. */
		long k = r->check || r->die_at >= 0 ?
			 atomic_fetch_add(&sh->taken, 1) : 0;

		if (k == r->die_at)  /* dies holding item k, never counted */
			MP_CHECK(kill(getpid(), SIGKILL));
		n++;
		sum += (uint64_t)it.producer << 32 | it.seq;
		if (!r->check)
			continue;
		sh->got++;
		if (r->fault == LIFO && held.producer == STOP) {
			held = it;  /* the next one goes first */
			continue;
		}
		if (!(r->fault == DROP && k == r->total / 2))
			record(sh, r, it, last);
		if (r->fault == TWICE && k == r->total / 2)
			record(sh, r, it, last);
		if (r->fault == LIFO) {
			record(sh, r, held, last);
			held.producer = STOP;
		}
		if (r->slow_us)
			sleep_us(r->slow_us);
	}
	if (held.producer != STOP)
		record(sh, r, held, last);
	sh->stopped++;
	sh->count += n;
	sh->sum += sum;
	for (int64_t t = mp_now_ns(), old = atomic_load(&sh->t1);
	     t > old && !atomic_compare_exchange_weak(&sh->t1, &old, t);)
		;
	_exit(0);
}

/* The first two CPUs we may use (false: fewer than two).  Pinned apart,
 * a 1x1 producer and consumer each have a CPU of their own, as in any
 * benchmark of a queue: left to the scheduler, the side that waited is
 * woken on whichever CPU, often the other's (a cross-CPU wake-up costs
 * 15-30 us on a VM), and the figures then measure the scheduler. */
static bool two_cpus(int cpu[2])
{
	cpu_set_t set;
	int k = 0;

	MP_CHECK(sched_getaffinity(0, sizeof set, &set));
	for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
		if (CPU_ISSET(i, &set))
			cpu[k++] = i;
	return k == 2;
}

/* A child of a pinned run goes to its CPU (side 0: consumer, 1:
 * producer).  Every child then reports where it may run, so the table
 * shows the placement it got, not the one it asked for. */
static void pin_to(struct shared *sh, const struct run *r, int side)
{
	cpu_set_t set;
	int alone = -1;

	if (r->pinned) {
		CPU_ZERO(&set);
		CPU_SET(r->cpu[side], &set);
		MP_CHECK(sched_setaffinity(0, sizeof set, &set));
	}
	MP_CHECK(sched_getaffinity(0, sizeof set, &set));
	for (int i = 0; CPU_COUNT(&set) == 1 && i < CPU_SETSIZE; i++)
		alone = CPU_ISSET(i, &set) ? i : alone;
	sh->alone_on[side] = alone + 1;
}

/* Reap one child; print what happened unless it exited 0.  Children end
 * on their own within WAIT_S, so this wait is bounded too. */
static bool reaped_ok(pid_t pid, const char *role, bool quiet)
{
	int st = mp_waitpid(pid);

	if (!quiet && WIFEXITED(st) && WEXITSTATUS(st) != 0)
		mp_say("parent", "%s %jd exited with %d%s", role,
		       (intmax_t)pid, WEXITSTATUS(st),
		       WEXITSTATUS(st) == EXIT_STUCK ? " (waited in vain)" :
		       "");
	else if (!quiet && WIFSIGNALED(st))
		mp_say("parent", "%s %jd killed by signal %d", role,
		       (intmax_t)pid, WTERMSIG(st));
	return st == 0;
}

/* A long run says every second how far it has got, until the producers
 * are done or have made no progress for longer than any wait of theirs. */
static void progress(struct shared *sh, const struct run *r)
{
	int64_t now = mp_now_ns(), next = now + 1000000000, moved = now;
	long last = 0;

	while (r->check && sh->put < r->total &&
	       now - moved < (int64_t)((WAIT_S + 1) * 1e9)) {
		sleep_us(10000);
		now = mp_now_ns();
		if (sh->put != last) {
			last = sh->put;
			moved = now;
		}
		if (now >= next) {
			mp_say("parent", "%ld of %ld items put, %ld taken",
			       last, r->total, (long)sh->got);
			next += 1000000000;
		}
	}
}

/* One round: consumers, producers, then "no more" -- close(), or one STOP
 * per consumer once every producer is done (a STOP put earlier would stop a
 * consumer while items are still coming).  True if every child exited 0. */
static bool run_round(struct shared *sh, const struct run *r, size_t cap)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct item), cap);
	pid_t pid[2 * MAX_PROCS];
	bool ok = true;

	if (!q)
		mp_die("mp_queue_create");
	/* Queue(maxsize) keeps its maxsize (_maxsize); ours its both sizes. */
	ok &= mp_queue_capacity(q) == cap &&
	      mp_queue_item_size(q) == sizeof(struct item);
	memset(sh, 0, sizeof *sh + (r->check ? (size_t)r->total : 0));
	for (long c = 0; c < r->consumers; c++)
		if ((pid[c] = mp_fork()) == 0) {
			pin_to(sh, r, 0);
			consumer(q, sh, r);
		}
	for (long p = 0; p < r->producers; p++)
		if ((pid[r->consumers + p] = mp_fork()) == 0) {
			pin_to(sh, r, 1);
			producer(q, sh, r, (uint32_t)p);
		}
	progress(sh, r);
	for (long p = 0; p < r->producers; p++)
		ok &= reaped_ok(pid[r->consumers + p], "producer", false);
	for (long c = 0; r->sentinel && c < r->consumers; c++)
		if (mp_queue_put_timeout(q, &(struct item){ STOP, 0 },
					 WAIT_S) == -1)
			ok = false;  /* nobody takes them */
	if (!r->sentinel)
		MP_CHECK(mp_queue_close(q));  /* consumers drain, then get 0 */
	for (long c = 0; c < r->consumers; c++)
		ok &= reaped_ok(pid[c], "consumer", false);
	ok &= mp_queue_qsize(q) == 0;  /* a STOP too many would wait here */
	ok &= mp_queue_closed(q) == !r->sentinel;
	MP_CHECK(mp_queue_destroy(q));
	return ok;
}

/* The main run's check: every item seen exactly once, and each consumer
 * saw each producer's items in increasing order.  Returns the faults. */
static long conserved(struct shared *sh, const struct run *r)
{
	long lost = 0, twice = 0;

	for (long i = 0; i < r->total; i++) {
		lost += sh->seen[i] == 0;
		twice += sh->seen[i] > 1;
	}
	mp_say("parent", "%ld items: %ld lost, %ld twice, %ld out of producer "
	       "order; producers found the queue full %ld times", r->total,
	       lost, twice, (long)sh->order_bad, (long)sh->full);
	return lost + twice + sh->order_bad + (sh->count != r->total);
}

/* 1 -> 1 with a fast consumer, then with one that takes slow_us an item:
 * how often the producer finds the queue full, how long it waits, and how
 * far ahead it gets (*ahead: the most, beyond the consumer's hand). */
static bool backpressure(struct shared *sh, long cap, long slow_us,
			 long *ahead)
{
	bool ok = true;

	for (int slow = 0; slow < 2 && ok; slow++) {
		struct run b = { .producers = 1, .consumers = 1,
				 .total = BP_ITEMS, .check = true,
				 .sentinel = true,
				 .slow_us = slow ? slow_us : 0, .die_at = -1,
				 .wait_s = WAIT_S };
		char what[64] = "fast consumer";

		ok &= run_round(sh, &b, (size_t)cap) && sh->count == BP_ITEMS;
		if (sh->max_ahead - 1 > *ahead)
			*ahead = sh->max_ahead - 1;
		if (slow)
			snprintf(what, sizeof what, "slow consumer (%ld us an "
				 "item)", slow_us);
		mp_say("parent", "backpressure, %s: full on %ld of %d puts "
		       "(%.1f%%), waited %.1f ms; at most %ld items ahead "
		       "(bound: capacity + consumers = %ld)", what,
		       (long)sh->full, BP_ITEMS, 100.0 * sh->full / BP_ITEMS,
		       sh->waited_us / 1e3, (long)sh->max_ahead, cap + 1);
	}
	return ok;
}

/* A producer fills the queue and exits; the parent reaps it before anyone
 * reads.  Python's producer would wait at exit for its feeder thread. */
static bool join_before_drain(long cap)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct item), (size_t)cap);

	if (!q)
		mp_die("mp_queue_create");
	pid_t pid = mp_fork();

	if (pid == 0) {
		for (uint32_t i = 0; i < (uint32_t)cap; i++)
			if (mp_queue_put_timeout(q, &(struct item){ 0, i },
						 WAIT_S) == -1)
				_exit(1);
		_exit(0);
	}
	bool ok = reaped_ok(pid, "producer", false) &&
		  mp_queue_qsize(q) == (size_t)cap;

	mp_say("parent", "join before drain: a producer put %ld items and "
	       "exited; waitpid() returned, %zu items still queued", cap,
	       mp_queue_qsize(q));
	MP_CHECK(mp_queue_destroy(q));
	return ok;
}

/* 3 consumers and DEMO_ITEMS items put before they start, then `stops`
 * STOPs (or close() when stops < 0): no timing involved.  The consumer
 * that takes item die_at is killed holding it.  Returns the queue, with
 * whatever the consumers left in it; *done: how many items were recorded. */
static struct mp_queue *pitfall(struct shared *sh, long stops, long die_at,
				long *done)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct item), 64);
	struct run r = { .producers = 1, .consumers = 3, .total = DEMO_ITEMS,
			 .die_at = die_at, .check = true, .wait_s = STUCK_S };
	pid_t pid[3];

	if (!q)
		mp_die("mp_queue_create");
	memset(sh, 0, sizeof *sh + DEMO_ITEMS);
	for (uint32_t i = 0; i < DEMO_ITEMS; i++)
		MP_CHECK(mp_queue_put(q, &(struct item){ 0, i }));
	for (long i = 0; i < stops; i++)
		MP_CHECK(mp_queue_put(q, &(struct item){ STOP, 0 }));
	if (stops < 0)
		MP_CHECK(mp_queue_close(q));
	for (int c = 0; c < 3; c++)
		if ((pid[c] = mp_fork()) == 0)
			consumer(q, sh, &r);
	for (int c = 0; c < 3; c++)
		reaped_ok(pid[c], "consumer", true);
	*done = 0;
	for (int i = 0; i < DEMO_ITEMS; i++)
		*done += sh->seen[i] == 1;
	return q;
}

/* Too few sentinels, and a consumer that dies, with STOPs and with close().
 * Returns how many of the four came out as they must (4). */
static int pitfalls(struct shared *sh)
{
	int right = 0;
	long done;
	struct mp_queue *q = pitfall(sh, 2, -1, &done);

	mp_say("parent", "sentinels, 2 STOPs for 3 consumers: %ld stopped, "
	       "%ld still waiting after %.0f ms (without a timeout: forever, "
	       "and so would join())", (long)sh->stopped, (long)sh->stuck,
	       STUCK_S * 1e3);
	right += sh->stopped == 2 && sh->stuck == 1;
	MP_CHECK(mp_queue_destroy(q));
	q = pitfall(sh, -1, -1, &done);
	mp_say("parent", "close(), 3 consumers: %ld saw the end of the queue, "
	       "%ld waiting: close() counts nobody", (long)sh->stopped,
	       (long)sh->stuck);
	right += sh->stopped == 3 && sh->stuck == 0;
	MP_CHECK(mp_queue_destroy(q));

	/* A consumer killed holding item 15: its STOP is never taken.  The
	 * queue is reused for more work, as a sentinel queue can be. */
	q = pitfall(sh, 3, DEMO_ITEMS / 2, &done);
	long left = (long)mp_queue_qsize(q);
	struct run r = { .producers = 1, .consumers = 1, .total = 5,
			 .die_at = -1, .wait_s = STUCK_S };

	for (uint32_t i = 0; i < 5; i++)
		MP_CHECK(mp_queue_put(q, &(struct item){ 0, i }));
	sh->count = 0;
	pid_t pid = mp_fork();

	if (pid == 0)
		consumer(q, sh, &r);
	reaped_ok(pid, "consumer", true);
	mp_say("parent", "sentinels, a consumer killed holding item %d: %ld "
	       "of %d done, %ld STOP left in the queue; a consumer started "
	       "next takes it first: %ld of 5 new items done", DEMO_ITEMS / 2,
	       done, DEMO_ITEMS, left, (long)sh->count);
	right += done == DEMO_ITEMS - 1 && left == 1 && sh->count == 0 &&
		 mp_queue_qsize(q) == 5;
	MP_CHECK(mp_queue_destroy(q));
	q = pitfall(sh, -1, DEMO_ITEMS / 2, &done);
	mp_say("parent", "close(), the same death: %ld of %d done, %zu left in "
	       "the queue (the held item is lost either way; a closed queue "
	       "takes no next round)", done, DEMO_ITEMS, mp_queue_qsize(q));
	right += done == DEMO_ITEMS - 1 && mp_queue_qsize(q) == 0 &&
		 sh->stopped == 2;
	MP_CHECK(mp_queue_destroy(q));
	return right;
}

/* ---- the throughput table: 8-byte items, nothing recorded ------------ */

enum { NSHAPE = 4 };
/* cpu: where 1x1 asks to run (consumer, producer) if pinned; on: where
 * its processes could run, measured (-1: on more than one CPU). */
struct row {
	long p, c, items;
	double s;
	bool done, pinned;
	int cpu[2], on[2];
};

static uint64_t want_sum(long total, long np)
{
	uint64_t w = 0;

	for (long p = 0; p < np; p++) {
		uint64_t n = (uint64_t)share(total, np, p);

		w += n * ((uint64_t)p << 32) + n * (n - 1) / 2;
	}
	return w;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* One shape, `repeat` times: the median time, every sum checked. */
static void table_run(struct shared *sh, struct row *x, long repeat,
		      bool *ok)
{
	struct run r = { .producers = x->p, .consumers = x->c,
			 .total = x->items, .die_at = -1, .wait_s = WAIT_S,
			 .pinned = x->pinned, .cpu = { x->cpu[0], x->cpu[1] } };
	double t[101];

	long i;

	for (i = 0; i < repeat && *ok; i++) {
		*ok &= run_round(sh, &r, TABLE_CAP) && sh->count == x->items &&
		       sh->sum == want_sum(x->items, x->p);
		t[i] = (double)(sh->t1 - sh->t0) / 1e9;
		for (int side = 0; side < 2; side++)  /* the same each time */
			x->on[side] = i && x->on[side] != sh->alone_on[side] - 1
				      ? -1 : sh->alone_on[side] - 1;
	}
	qsort(t, (size_t)i, sizeof *t, cmp_double);
	x->s = t[i / 2];
	x->done = true;
}

/* The twin prints "python,<shape>,<items>,<seconds>,<items/s>,<checksum>,
 * <consumer's CPU>,<producer's CPU>" per shape (a CPU: the one it may run
 * on, -1 if several) and "python-join-before-drain,<items>,<alive>,<alive after
 * drain>" (see producer_consumer.py). */
struct twin { struct row *py; bool ok; long jitems, alive[2]; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	long p, c, n;
	double s, rate;
	unsigned long long sum;

	int on[2];

	if (sscanf(line, "python,%ldx%ld,%ld,%lf,%lf,%llu,%d,%d", &p, &c, &n,
		   &s, &rate, &sum, &on[0], &on[1]) == 8) {
		for (int k = 0; k < NSHAPE; k++)
			if (t->py[k].p == p && t->py[k].c == c &&
			    !t->py[k].done) {
				t->py[k].items = n;
				t->py[k].s = s;
				t->py[k].on[0] = on[0];
				t->py[k].on[1] = on[1];
				t->py[k].done = true;
			}
		t->ok &= sum == want_sum(n, p);
	} else if (sscanf(line, "python-join-before-drain,%ld,%ld,%ld",
			  &t->jitems, &t->alive[0], &t->alive[1]) != 3) {
		fprintf(stderr, "python: %s\n", line);
	}
}

static bool run_python(struct row py[NSHAPE], long items, struct twin *t)
{
	char n[32], shapes[128] = "", cpus[32] = "";

	for (int k = 0; k < NSHAPE; k++) {
		size_t at = strlen(shapes);

		snprintf(shapes + at, sizeof shapes - at, "%s%ldx%ld",
			 k ? "," : "", py[k].p, py[k].c);
	}
	snprintf(n, sizeof n, "%ld", items);
	if (py[0].pinned)  /* 1x1 pinned as ours: the same placement */
		snprintf(cpus, sizeof cpus, "%d,%d", py[0].cpu[0],
			 py[0].cpu[1]);
	*t = (struct twin){ .py = py, .ok = true };
	int st = mp_run_twin(MP_LESSON_DIR "/producer_consumer.py",
			     (char *[]){ "--items", n, "--shapes", shapes,
					 "--capacity", "1024", "--pin-1x1",
					 cpus, NULL },
			     60 + (double)items * NSHAPE * 1e-4, twin_line, t);

	if (st == -1)
		fprintf(stderr, "producer_consumer: python twin: %s\n",
			strerror(errno));
	for (int k = 0; k < NSHAPE; k++)
		t->ok &= py[k].done;
	return t->ok && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A row's processes each had one CPU of their own (told, not assumed). */
static bool apart(const struct row *x)
{
	return x->on[0] >= 0 && x->on[1] >= 0 && x->on[0] != x->on[1];
}

static void print_table(struct row c[NSHAPE], struct row py[NSHAPE],
			bool csv)
{
	printf(csv ? "engine,shape,items,seconds,items_per_s,consumer_cpu,"
	       "producer_cpu,x_python\n" : "%-8s %5s %9s %9s %12s %9s\n",
	       "engine", "shape", "items", "seconds", "items/s", "/ python");
	for (int e = 0; e < 2; e++)
		for (int k = 0; k < NSHAPE; k++) {
			struct row *x = e ? &py[k] : &c[k];
			char shape[32], cpus[32] = ",", ratio[32] = "";

			if (!x->done)
				continue;
			snprintf(shape, sizeof shape, "%ldx%ld%s", x->p, x->c,
				 apart(x) && !csv ? "*" : "");
			if (apart(x))
				snprintf(cpus, sizeof cpus, "%d,%d", x->on[0],
					 x->on[1]);
			if (!e && py[k].done)  /* the same run's Python */
				snprintf(ratio, sizeof ratio, "%.1f",
					 (double)x->items / x->s /
					 ((double)py[k].items / py[k].s));
			if (csv)
				printf("%s,%s,%ld,%.6f,%.0f,%s,%s\n", e ?
				       "python" : "mp_queue", shape, x->items,
				       x->s, (double)x->items / x->s, cpus,
				       ratio);
			else
				printf("%-8s %5s %9ld %9.6f %12.0f %8s%s\n",
				       e ? "python" : "mp_queue", shape,
				       x->items, x->s, (double)x->items / x->s,
				       ratio, *ratio ? "x" : "");
		}
	for (int e = 0; !csv && e < 2; e++) {
		struct row *x = e ? &py[0] : &c[0];  /* 1x1 */

		if (x->done && apart(x))
			printf("* %s 1x1: consumer alone on CPU %d, producer "
			       "alone on CPU %d\n", e ? "python" : "mp_queue",
			       x->on[0], x->on[1]);
		else if (x->done)
			printf("%s 1x1 not pinned apart (%s): the scheduler "
			       "places producer and consumer\n", e ? "python" :
			       "mp_queue", !x->pinned ? "fewer than 2 CPUs "
			       "allowed" : "the pinning did not hold");
	}
}

int main(int argc, char *argv[])
{
	long np = 3, nc = 2, items = 20000, cap = 64, slow_us = 100;
	long table_items = 500000, py_items = 20000, repeat = 3;
	const char *stop = "close", *fault_s = "none";
	bool csv = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("producers", &np, 1, MAX_PROCS, "producer processes"),
		MP_OPT_L("consumers", &nc, 1, MAX_PROCS, "consumer processes"),
		MP_OPT_L("items", &items, 1, 1000000, "items per producer"),
		MP_OPT_L("capacity", &cap, 1, 65536, "queue capacity (items)"),
		MP_OPT_S("stop", &stop, "close | sentinel"),
		MP_OPT_L("slow-us", &slow_us, 1, 10000,
			 "the slow consumer's time per item, microseconds"),
		MP_OPT_S("fault", &fault_s, "none | drop | twice | lifo: break "
			 "the consumers on purpose"),
		MP_OPT_L("table-items", &table_items, 0, 1000000000,
			 "items per shape in the table (0 skips it)"),
		MP_OPT_L("repeat", &repeat, 1, 101,
			 "runs per shape in the table (the median is shown)"),
		MP_OPT_L("python-items", &py_items, 0, 100000000,
			 "items per shape for Python's Queue (0 skips it)"),
		MP_OPT_F("csv", &csv, "the throughput table alone, as CSV"),
	};

	mp_parse_options(argc, argv, "P producers and C consumers through one "
			 "bounded queue: conservation, backpressure, close() "
			 "vs sentinels, throughput vs Python's Queue.",
			 opts, sizeof opts / sizeof opts[0]);
	const char *const fault_names[] = { "none", "drop", "twice", "lifo" };
	int fault = -1;

	for (int i = 0; i < 4; i++)
		fault = strcmp(fault_s, fault_names[i]) ? fault : i;
	if (fault < 0 || (strcmp(stop, "close") && strcmp(stop, "sentinel"))) {
		fprintf(stderr, "producer_consumer: %s '%s': want %s\n",
			fault < 0 ? "--fault" : "--stop", fault < 0 ? fault_s :
			stop, fault < 0 ? "none, drop, twice or lifo" :
			"close or sentinel");
		return 2;
	}
	mp_stop_on_signals();
	size_t nseen = (size_t)(np * items > BP_ITEMS ? np * items : BP_ITEMS);
	struct shared *sh = mp_shm_alloc(sizeof *sh + nseen);
	bool ok = true, joined = true;
	long faults = 0, ahead = 0;
	int right = 4;

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv) {
		/* 1. The pattern: P producers, C consumers, every item
		 *    recorded, then the run's "no more" by close or STOPs. */
		struct run r = { .producers = np, .consumers = nc,
				 .total = np * items,
				 .sentinel = !strcmp(stop, "sentinel"),
				 .check = true, .die_at = -1,
				 .fault = (enum fault)fault, .wait_s = WAIT_S };

		mp_say("parent", "%ld producers x %ld items -> %ld consumers, "
		       "capacity %ld, stop by %s", np, items, nc, cap, stop);
		ok &= run_round(sh, &r, (size_t)cap);
		faults = conserved(sh, &r);
		ahead = sh->max_ahead - nc;  /* beyond the consumers' hands */

		/* 2. Backpressure, 1 -> 1: a fast consumer, then a slow one,
		 *    each stopped by a STOP (the main run by --stop).  A
		 *    failed round ends the run: every later one would wait
		 *    out its bounds the same way.
		 * 3. Join before drain: nothing is left inside a producer. */
		if (ok)
			ok &= backpressure(sh, cap, slow_us, &ahead);
		joined = join_before_drain(cap);

		/* 4. Sentinels vs close(), where sentinels go wrong. */
		right = pitfalls(sh);
	}

	/* 5. Throughput, 8-byte items, capacity 1024: 1x1, 2x2, 1xC, Px1,
	 *    the median of `repeat` runs; then Python's multiprocessing.Queue
	 *    on the same shapes, once. */
	struct row c[NSHAPE] = { { .p = 1, .c = 1 }, { .p = 2, .c = 2 },
				 { .p = 1, .c = nc }, { .p = np, .c = 1 } };
	struct row py[NSHAPE];
	struct twin t = { .ok = true, .jitems = 0 };
	bool sums = true, py_ok = true;

	for (int k = 0; k < NSHAPE; k++)
		if (c[k].p == 1 && c[k].c == 1)
			c[k].pinned = two_cpus(c[k].cpu);
	memcpy(py, c, sizeof py);
	for (int k = 0; table_items && ok && k < NSHAPE; k++) {
		c[k].items = table_items;
		table_run(sh, &c[k], repeat, &sums);
	}
	if (table_items && py_items && ok && mp_python3())
		py_ok = run_python(py, py_items, &t);
	else if (table_items && py_items && !csv)
		mp_say("parent", "python: skipped, python3 was not found at "
		       "configure time");
	if (table_items)
		print_table(c, py, csv);
	if (t.jitems && !csv)
		printf("python: a producer that put %ld items into a Queue() "
		       "was %s after join(timeout=0.5), %s once the parent "
		       "drained the queue\n", t.jitems, t.alive[0] ? "still "
		       "alive" : "gone", t.alive[1] ? "still alive" : "gone");

	/* 6. The verdict. */
	MP_CHECK(mp_shm_free(sh, sizeof *sh + nseen));
	bool all = ok && faults == 0 && ahead <= cap && joined && right == 4 &&
		   sums && py_ok;

	if (csv && !all)
		fprintf(stderr, "producer_consumer: a sum was wrong\n");
	if (!csv)
		printf("result: %ld items, %ld lost/twice/out of order; %ld "
		       "ahead beyond consumers' hands (capacity %ld); join "
		       "before drain %s; "
		       "sentinel pitfalls %d/4; table sums %s%s%s %s\n",
		       np * items, faults, ahead, cap, joined ? "fine" :
		       "FAILED", right, sums ? "exact" : "WRONG",
		       ok ? "" : "; a round FAILED, the run stopped there",
		       py_ok ? "" : ", python FAILED", all ? "OK" : "MISMATCH");
	return all ? EXIT_SUCCESS : EXIT_FAILURE;
}
