/* 2_communication/queues_and_pipes/queues_basic.c -- a queue between
 * processes, built by hand, then lib/mp_queue, and how fast each one is
 *
 * Python:  q = multiprocessing.Queue(64); Process(target=producer, args=(q,))
 *          q.put(item); item = q.get(); a None sentinel per consumer to stop;
 *          q.qsize(), q.empty().  CPython (Lib/multiprocessing/queues.py)
 *          builds Queue from a Pipe(duplex=False), a feeder thread that
 *          pickles put() items into it, a BoundedSemaphore(maxsize) for the
 *          bound (put acquires it, get releases it) and two Locks (one for
 *          readers, one for writers).  Its feeder thread waits on a
 *          threading.Condition with "if not buffer: nwait()" -- an if, safe
 *          there only because it is the buffer's one consumer and catches
 *          the IndexError of an empty deque (Queue._feed).
 * C:       1. the textbook bounded buffer: a ring in MAP_SHARED memory, one
 *          process-shared mutex, two condition variables (not_full,
 *          not_empty), waits in while loops;  2. a semaphore on a futex
 *          word (syscall(SYS_futex, FUTEX_WAIT / FUTEX_WAKE)) and a ring for
 *          one producer and one consumer built from two of them;
 *          3. lib/mp_queue, the fast version: no lock, slots with sequence
 *          numbers claimed by compare-and-swap, a futex only when empty or
 *          full.  mp_queue_put/get(_timeout), put/get_many, close,
 *          try_put/try_get, qsize/empty/full.
 * Usage:   queues_basic [--producers N (3, 1..16)] [--consumers N (2, 1..16)]
 *            [--per-producer N (20000, 1..10^6)] [--items N (200000,
 *            1..4*10^9)] [--repeat N (1, 1..101)] [--python-items N (20000,
 *            0..10^8; 0 skips Python)] [--csv] [--plot [FILE.svg|png]]
 * Output:  (2 CPUs shared with other jobs, load 4.2; long lines cut at |)
 *   [parent 20459 +0.0ms] 3 producers x 20000 items -> 2 consumers, |
 *     capacity 64; every wait gives up after 3 s
 *   [parent 20459 +48.7ms] condvar buffer, 3 -> 2, STOP sentinels: 60000 |
 *     items, 1.32 M items/s; exactly once, in order: yes
 *   [parent 20459 +59.3ms] mp_queue, 3 -> 2, STOP sentinels: 60000 items, |
 *     5.96 M items/s; exactly once, in order: yes
 *   [parent 20459 +71.4ms] mp_queue, 3 -> 2, close(): 60000 items, 5.26 M |
 *     items/s; exactly once, in order: yes
 *   [parent 20459 +71.5ms] 3 -> 2: mp_queue 4.5x the condvar buffer
 *   ...
 *   [parent 20459 +377.0ms] condvar buffer, 1 -> 1, on 2 CPUs, run 1: |
 *     200000 items, 1.01 M items/s; exactly once, in order: yes
 *   ...
 *   [parent 20459 +586.0ms] futex ring: 400002 posts, 6255 FUTEX_WAKE |
 *     calls (only posts that found the waiters flag set), 6255 |
 *     FUTEX_WAITs: it sleeps as soon as the ring is empty or full, where |
 *     mp_queue first spins a little
 *   [parent 20459 +586.0ms] 1 -> 1, 200000 items: condvar 1.01, futex ring |
 *     0.99, mp_queue 37.75, mp_queue_many 223.28 M items/s
 *   [python 20533] multiprocessing.Queue(64), 20000 ints, 1 producer -> 1 |
 *     consumer, in order: 0.103671 s, 0.19 M items/s
 *   [parent 20459 +726.7ms] 1 -> 1, items per second: mp_queue 196x, the |
 *     condvar buffer 5x Python's Queue (which ran 20000 items, not 200000)
 *   result: exactly once and in order: condvar yes, futex ring yes, |
 *     mp_queue yes, mp_queue_many yes; qsize OK OK
 * How mp_queue differs from the condvar buffer (lib/mp_queue.c, after
 *          Dmitry Vyukov's bounded MPMC queue): no lock; each slot has a
 *          sequence number that says whose turn it is; a producer claims a
 *          ticket by compare-and-swap on the tail and publishes its item by
 *          storing the slot's sequence number (a consumer likewise on the
 *          head); a caller that finds the queue empty or full spins a
 *          little, then sleeps on a futex word, and a put or get makes the
 *          FUTEX_WAKE call only when a sleeper is counted.  So the common
 *          case is a few atomic instructions and no system call, where the
 *          condvar buffer takes a lock (and, under contention, sleeps and
 *          wakes in the kernel) for every item.  1 -> 1 runs pin producer
 *          and consumer to two CPUs (when we may use two), as queue
 *          benchmarks do: left to the scheduler, the two often share one
 *          CPU and the figures swing tenfold from run to run.  With more
 *          processes than CPUs (3 -> 2 on 2 CPUs) the P x C ratio swings
 *          either way: a waiter that spins burns the CPU that the process
 *          it waits for needs.
 * Verdict: for every engine and run, every item arrived exactly once, and
 *          each producer's items in the order it put them (with several
 *          consumers: in order within each consumer), and no wait ran out.
 *          Every wait is bounded (WAIT_S, 3 s), so a broken buffer ends
 *          in MISMATCH; it never hangs (mp_queue_put_many/get_many alone
 *          have no timeout in lib/).  Speeds are printed, not judged: on a
 *          shared machine they swing with the others' load.
 * Try this: in bbuf_get, turn the while into an if (a woken consumer finds
 *          the ring emptied by another: duplicates), signal not_full instead
 *          of not_empty (consumers sleep until their wait runs out), or
 *          drop the mutex calls (EPERM: the mutex checks its owner); in
 *          fsem_post, skip the waiters test (a FUTEX_WAKE per post, slower)
 *          or the wake (the consumer's wait runs out); --consumers 16
 *          --producers 1; --csv for the figures alone.
 */
#define _GNU_SOURCE /* syscall, pthread_mutex_clocklock, sched_setaffinity */
#include "mp.h"

#include <math.h>

#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>

enum { CAPACITY = 64, MAX_PROCS = 16, BATCH = 64, BUSY_ITEMS = 20000 };
enum { WAIT_S = 3 };     /* the bound on every wait, in seconds */
#define STOP UINT32_MAX  /* the sentinel's producer number */

struct job { uint32_t producer, seq; };  /* 8 bytes: every queue's item */

/* ---- 1. The textbook bounded buffer ----------------------------------- */

struct bbuf {
	pthread_mutex_t lock;      /* guards everything below */
	pthread_cond_t not_full;   /* producers wait here for room */
	pthread_cond_t not_empty;  /* consumers wait here for an item */
	size_t head, count;        /* the oldest item; how many there are */
	struct job ring[CAPACITY];
};

static void bbuf_init(struct bbuf *b)
{
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;

	MP_CHECK_PT(pthread_mutexattr_init(&ma));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	/* ERRORCHECK: a wait or unlock without the lock held fails (EPERM)
	 * instead of corrupting the mutex. */
	MP_CHECK_PT(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
	MP_CHECK_PT(pthread_mutex_init(&b->lock, &ma));
	MP_CHECK_PT(pthread_mutexattr_destroy(&ma));
	MP_CHECK_PT(pthread_condattr_init(&ca));
	MP_CHECK_PT(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
	/* Timed waits count on CLOCK_MONOTONIC, not the settable wall clock. */
	MP_CHECK_PT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
	MP_CHECK_PT(pthread_cond_init(&b->not_full, &ca));
	MP_CHECK_PT(pthread_cond_init(&b->not_empty, &ca));
	MP_CHECK_PT(pthread_condattr_destroy(&ca));
	b->head = b->count = 0;
}

static struct timespec deadline_in(int seconds)
{
	return mp_deadline(CLOCK_MONOTONIC, seconds);
}

/* Returns 0, or the error number of the wait that ran out (ETIMEDOUT) or
 * failed.  The while loops are the point: pthread_cond_signal wakes a
 * waiter, but another process may take the lock first and fill (or empty)
 * the ring again, and a wait may also return with no signal at all, so a
 * woken waiter checks its condition again before it goes on. */
static int bbuf_put(struct bbuf *b, const struct job *j)
{
	struct timespec until = deadline_in(WAIT_S);
	int err = pthread_mutex_clocklock(&b->lock, CLOCK_MONOTONIC, &until);

	if (err != 0)
		return err;
	while (b->count == CAPACITY && err == 0)
		err = pthread_cond_timedwait(&b->not_full, &b->lock, &until);
	if (err == 0) {
		b->ring[(b->head + b->count) % CAPACITY] = *j;
		b->count++;
		err = pthread_cond_signal(&b->not_empty);  /* one consumer */
	}
	int unlock_err = pthread_mutex_unlock(&b->lock);

	return err != 0 ? err : unlock_err;
}

static int bbuf_get(struct bbuf *b, struct job *j)
{
	struct timespec until = deadline_in(WAIT_S);
	int err = pthread_mutex_clocklock(&b->lock, CLOCK_MONOTONIC, &until);

	if (err != 0)
		return err;
	while (b->count == 0 && err == 0)
		err = pthread_cond_timedwait(&b->not_empty, &b->lock, &until);
	if (err == 0) {
		*j = b->ring[b->head];
		b->head = (b->head + 1) % CAPACITY;
		b->count--;
		err = pthread_cond_signal(&b->not_full);  /* one producer */
	}
	int unlock_err = pthread_mutex_unlock(&b->lock);

	return err != 0 ? err : unlock_err;
}

/* ---- 2. A semaphore on a futex word, and a ring built from two ------- */

/* One 32-bit futex word: the count times 2, plus bit 0, the waiters flag
 * ("someone may sleep here"), set only while the count is 0.  A waiter that
 * finds no count sets the flag, then FUTEX_WAIT(word, 1): the kernel puts it
 * to sleep only if the word still reads 1 when it looks (under its own
 * lock), so a post that came in between is never slept through: the call
 * returns EAGAIN.  A post adds 2 and clears the flag in one atomic step and
 * makes the FUTEX_WAKE system call only if the flag was set: while nobody
 * sleeps, nobody enters the kernel, and each sleep costs one wake-up.  The
 * flag lives in the count's word so that a post learns "someone sleeps" in
 * the same step as it adds: kept apart, a post whose count was already
 * taken could clear the flag of a later sleep before that sleeper is in the
 * kernel, and that sleeper would wait for nothing.  Every sleeper is woken
 * (INT_MAX): each takes a count or sets the flag again and sleeps on. */
struct fsem { _Atomic uint32_t word; };

struct calls { long posts, waits, wakes; };  /* one process's futex use */

static int fsem_wait(struct fsem *s, struct calls *n)
{
	uint32_t w = atomic_load(&s->word);
	int64_t deadline_ns = 0;  /* set when we first have to sleep */

	for (;;) {
		if (w >= 2) {  /* take one; a failed CAS reloads w */
			if (atomic_compare_exchange_weak(&s->word, &w, w - 2))
				return 0;
			continue;
		}
		if (w == 0 && !atomic_compare_exchange_weak(&s->word, &w, 1))
			continue;  /* the word moved: look again */
		int64_t now = mp_now_ns(), left;

		if (deadline_ns == 0)
			deadline_ns = now + WAIT_S * INT64_C(1000000000);
		if ((left = deadline_ns - now) <= 0)
			return ETIMEDOUT;
		struct timespec ts = { left / 1000000000, left % 1000000000 };
		/* Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
		 * The timeout is relative (on CLOCK_MONOTONIC). */
		long r = syscall(SYS_futex, &s->word, FUTEX_WAIT, 1, &ts, NULL,
				 0);

		n->waits++;
		/* EAGAIN: the word was no longer 1.  A wait that runs out
		 * fails, even if a count came meanwhile: its wake-up was lost,
		 * and that is the bug to show. */
		if (r == -1 && errno != EAGAIN && errno != EINTR)
			return errno;
		w = atomic_load(&s->word);
	}
}

static int fsem_post(struct fsem *s, struct calls *n)
{
	uint32_t old = atomic_load(&s->word);

	while (!atomic_compare_exchange_weak(&s->word, &old, (old + 2) & ~1u))
		;
	n->posts++;
	if (!(old & 1))
		return 0;  /* nobody sleeps: no system call */
	n->wakes++;
	return syscall(SYS_futex, &s->word, FUTEX_WAKE, INT_MAX, NULL, NULL,
		       0) == -1 ? errno : 0;
}

/* Dijkstra's bounded buffer: `spaces` counts free slots, `items` full
 * ones.  With one producer and one consumer each side owns its index, so
 * no lock is needed; the semaphores' seq_cst operations also publish the
 * slot's contents to the other side. */
struct fring {
	struct fsem spaces, items;
	struct job ring[CAPACITY];
};

/* ---- 3. The engines side by side --------------------------------------- */

enum engine { COND, FUTEX, MPQ, MPQ_MANY };
static const char *const engine_name[] = { "condvar buffer", "futex ring",
					   "mp_queue", "mp_queue_many" };

struct shared {
	struct bbuf bb;
	struct fring fr;
	_Atomic long got, bad_order, dups, dead, posts, waits, wakes;
	_Atomic int err;         /* the first failed call's error number */
	_Atomic int64_t t0, t1;  /* first put, last get (CLOCK_MONOTONIC) */
	_Atomic long stale[2], looks;  /* step 3 */
};

/* One process's end of a queue of any engine. */
struct chan {
	enum engine e;
	struct shared *sh;
	struct mp_queue *q;
	uint64_t pos;  /* futex ring: this side's next slot */
	struct calls n;
};

/* Put n jobs; 0 or an error number. */
static int chan_put(struct chan *c, const struct job *j, size_t n)
{
	struct fring *f = &c->sh->fr;
	int err = 0;

	if (c->e == MPQ_MANY)
		return mp_queue_put_many(c->q, j, n) == (ssize_t)n ? 0 : errno;
	for (size_t i = 0; i < n && err == 0; i++) {
		if (c->e == COND) {
			err = bbuf_put(&c->sh->bb, &j[i]);
		} else if (c->e == MPQ) {  /* no clock read unless full */
			if (mp_queue_try_put(c->q, &j[i]) == -1 &&
			    (errno != EAGAIN ||
			     mp_queue_put_timeout(c->q, &j[i], WAIT_S) == -1))
				err = errno;
		} else if ((err = fsem_wait(&f->spaces, &c->n)) == 0) {
			f->ring[c->pos++ % CAPACITY] = j[i];
			err = fsem_post(&f->items, &c->n);
		}
	}
	return err;
}

/* Get up to max jobs (1 unless MPQ_MANY): how many, 0 at the end of an
 * mp_queue that was closed, or minus an error number. */
static long chan_get(struct chan *c, struct job *j, size_t max)
{
	struct fring *f = &c->sh->fr;
	ssize_t k;
	int err;

	switch (c->e) {
	case COND:
		return (err = bbuf_get(&c->sh->bb, j)) != 0 ? -err : 1;
	case FUTEX:
		if ((err = fsem_wait(&f->items, &c->n)) != 0)
			return -err;
		*j = f->ring[c->pos++ % CAPACITY];
		return (err = fsem_post(&f->spaces, &c->n)) != 0 ? -err : 1;
	case MPQ:
		if ((k = mp_queue_try_get(c->q, j)) == -1 && errno == EAGAIN)
			k = mp_queue_get_timeout(c->q, j, WAIT_S);
		break;
	default:
		k = mp_queue_get_many(c->q, j, max);
	}
	return k == -1 ? -errno : k;
}

static void note_error(struct shared *sh, int err)
{
	int none = 0;

	atomic_compare_exchange_strong(&sh->err, &none, err);
}

static void note_time(_Atomic int64_t *t, bool later)
{
	int64_t now = mp_now_ns(), seen = atomic_load(t);

	while ((seen == 0 || (later ? now > seen : now < seen)) &&
	       !atomic_compare_exchange_weak(t, &seen, now))
		;
}

static void producer(struct chan *c, uint32_t p, long per, bool sends_stop)
{
	struct job buf[BATCH];
	size_t batch = c->e == MPQ_MANY ? BATCH : 1, k;
	int err = 0;

	note_time(&c->sh->t0, false);
	for (long i = 0; i < per && err == 0; i += (long)k) {
		k = (size_t)(per - i) < batch ? (size_t)(per - i) : batch;
		for (size_t m = 0; m < k; m++)
			buf[m] = (struct job){ p, (uint32_t)(i + (long)m) };
		err = chan_put(c, buf, k);
	}
	if (err == 0 && sends_stop)
		err = chan_put(c, &(struct job){ STOP, 0 }, 1);
	if (err != 0)
		note_error(c->sh, err);
	c->sh->posts += c->n.posts;
	c->sh->waits += c->n.waits;
	c->sh->wakes += c->n.wakes;
	_exit(0);
}

/* Take jobs until a STOP (or the end of a closed mp_queue) and check them:
 * seq only grows per producer; alone, it also has no gaps; with others,
 * seen[] (one counter per job, shared) catches a job taken twice. */
static void consumer(struct chan *c, long nprod, long per, bool alone,
		     _Atomic unsigned char *seen)
{
	uint32_t next[MAX_PROCS] = { 0 };
	long got = 0, bad = 0, dups = 0, k;
	struct job buf[BATCH];
	bool stop = false;

	while (!stop && (k = chan_get(c, buf, BATCH)) > 0) {
		for (long m = 0; m < k && !stop; m++) {
			struct job j = buf[m];

			if ((stop = j.producer == STOP))
				break;
			if (j.producer >= nprod || j.seq >= per ||
			    j.seq < next[j.producer] ||
			    (alone && j.seq != next[j.producer])) {
				bad++;
				continue;
			}
			next[j.producer] = j.seq + 1;
			if (seen && atomic_fetch_add_explicit(
					    &seen[j.producer * per + j.seq], 1,
					    memory_order_relaxed) != 0)
				dups++;
			got++;
		}
	}
	if (!stop && k < 0)
		note_error(c->sh, (int)-k);
	note_time(&c->sh->t1, true);
	c->sh->got += got;
	c->sh->bad_order += bad;
	c->sh->dups += dups;
	c->sh->posts += c->n.posts;
	c->sh->waits += c->n.waits;
	c->sh->wakes += c->n.wakes;
	_exit(0);
}

/* The first two CPUs we may use, for a 1 -> 1 run (-1: fewer than two).
 * Pinned apart, producer and consumer each have a CPU of their own, as in
 * any benchmark of a queue: left to the scheduler, the woken side is often
 * put on the waker's CPU, and the figures then measure the scheduler. */
static void two_cpus(int cpu[2])
{
	cpu_set_t set;
	int k = 0;

	cpu[0] = cpu[1] = -1;
	MP_CHECK(sched_getaffinity(0, sizeof set, &set));
	for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
		if (CPU_ISSET(i, &set))
			cpu[k++] = i;
	if (k < 2)
		cpu[0] = -1;
}

static void pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	MP_CHECK(sched_setaffinity(0, sizeof set, &set));
}

static void reap(struct shared *sh, pid_t pid)
{
	if (mp_waitpid(pid) != 0)
		sh->dead++;
}

/* One run: ncons consumers, nprod producers of per jobs each, then the end
 * (a STOP per consumer, or close()).  True if every job arrived exactly
 * once and in order, with no error; *rate: jobs per second from the first
 * put to the last get. */
static bool run_round(struct shared *sh, enum engine e, long nprod,
		      long ncons, long per, bool by_close, double *rate)
{
	struct chan c = { .e = e, .sh = sh };
	pid_t cons[MAX_PROCS], prod[MAX_PROCS];
	int cpu[2] = { -1, -1 };
	long total = nprod * per;
	_Atomic unsigned char *seen = NULL;

	if (ncons > 1 && !(seen = mp_shm_alloc((size_t)total)))
		mp_die("mp_shm_alloc");
	if (e == COND)
		bbuf_init(&sh->bb);
	sh->fr = (struct fring){ .spaces.word = 2 * CAPACITY };
	if (e >= MPQ && !(c.q = mp_queue_create(sizeof(struct job), CAPACITY)))
		mp_die("mp_queue_create");
	sh->got = sh->bad_order = sh->dups = sh->dead = 0;
	sh->posts = sh->waits = sh->wakes = sh->err = sh->t0 = sh->t1 = 0;

	if (nprod == 1 && ncons == 1)
		two_cpus(cpu);
	/* The futex ring has one writer: its producer sends the STOP. */
	for (long i = 0; i < ncons; i++)
		if ((cons[i] = mp_fork()) == 0) {
			pin_to(cpu[0]);
			consumer(&c, nprod, per, ncons == 1, seen);
		}
	for (long p = 0; p < nprod; p++)
		if ((prod[p] = mp_fork()) == 0) {
			pin_to(cpu[1]);
			producer(&c, (uint32_t)p, per, e == FUTEX);
		}
	for (long p = 0; p < nprod; p++)
		reap(sh, prod[p]);
	if (by_close)
		MP_CHECK(mp_queue_close(c.q));  /* consumers drain, then 0 */
	for (long i = 0; i < ncons && e != FUTEX && !by_close; i++) {
		int err = chan_put(&c, &(struct job){ STOP, 0 }, 1);

		if (err != 0) {  /* the consumers are gone: stop here */
			note_error(sh, err);
			break;
		}
	}
	for (long i = 0; i < ncons; i++)
		reap(sh, cons[i]);
	if (c.q)
		MP_CHECK(mp_queue_destroy(c.q));
	if (e == COND) {  /* EBUSY if someone still held or waited */
		int err = pthread_mutex_destroy(&sh->bb.lock);

		err = err ? err : pthread_cond_destroy(&sh->bb.not_full);
		err = err ? err : pthread_cond_destroy(&sh->bb.not_empty);
		if (err != 0)
			note_error(sh, err);
	}
	if (seen)
		MP_CHECK(mp_shm_free((void *)seen, (size_t)total));
	*rate = sh->got > 0 && sh->t1 > sh->t0 ? (double)sh->got /
		((double)(sh->t1 - sh->t0) / 1e9) : 0;
	return sh->got == total && sh->bad_order == 0 && sh->dups == 0 &&
	       sh->err == 0 && sh->dead == 0;
}

/* The verdict of one run, told (with --csv, only a failure, on stderr). */
static bool report(struct shared *sh, enum engine e, long nprod, long ncons,
		   const char *how, bool ok, double rate, bool csv)
{
	if (csv) {
		if (!ok)
			fprintf(stderr, "queues_basic: %s, %ld -> %ld, %s: %ld "
				"items, %ld out of order, %ld twice, %ld "
				"failed, error %s\n", engine_name[e], nprod,
				ncons, how, (long)sh->got, (long)sh->bad_order,
				(long)sh->dups, (long)sh->dead,
				mp_errname(sh->err));
		return ok;
	}
	mp_say("parent", "%s, %ld -> %ld, %s: %ld items, %.2f M items/s; "
	       "exactly once, in order: %s%s%s", engine_name[e], nprod, ncons,
	       how, (long)sh->got, rate / 1e6, ok ? "yes" : "NO",
	       sh->err ? ", a call failed: " : "",
	       sh->err ? mp_errname(sh->err) : "");
	if (sh->bad_order || sh->dups || sh->dead)
		mp_say("parent", "  %ld out of order or unknown, %ld twice, "
		       "%ld processes failed", (long)sh->bad_order,
		       (long)sh->dups, (long)sh->dead);
	return ok;
}

/* ---- 4. What qsize() and empty() promise ------------------------------ */

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
	sh->got += got;
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

	mp_say("parent", "quiet queue: qsize()=%zu after 5 puts, %zu more "
	       "until EAGAIN, full()=%s; 50 ms timeouts: put %s, get %s", five,
	       more, full ? "true" : "false", mp_errname(put_err),
	       mp_errname(get_err));
	sh->got = 0;
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
	       sh->got == BUSY_ITEMS;
}

/* ---- 5. Python's multiprocessing.Queue on the same 1 -> 1 work -------- */

/* The twin prints "[python <pid>] multiprocessing.Queue(64), <n> ints,
 * 1 producer -> 1 consumer, in order: <s> s, <r> M items/s". */
struct twin { long items; double secs; bool got; bool csv; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	const char *ints = strstr(line, "), ");
	long n;
	double rate;

	if (ints && sscanf(ints, "), %ld ints, 1 producer -> 1 consumer, in "
			   "order: %lf s, %lf", &n, &t->secs, &rate) == 3)
		t->got = n == t->items && t->secs > 0;
	if (!t->csv && (printf("%s\n", line) < 0 || fflush(stdout) == EOF))
		mp_die("stdout");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char *argv[])
{
	long nprod = 3, ncons = 2, per = 20000, items = 200000, repeat = 1;
	long py_items = 20000;
	bool csv = false, plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("producers", &nprod, 1, MAX_PROCS,
			 "producer processes"),
		MP_OPT_L("consumers", &ncons, 1, MAX_PROCS,
			 "consumer processes"),
		MP_OPT_L("per-producer", &per, 1, 1000000,
			 "items each producer puts"),
		MP_OPT_L("items", &items, 1, 4000000000,
			 "items of the 1 producer -> 1 consumer runs"),
		MP_OPT_L("repeat", &repeat, 1, 101,
			 "1 -> 1 runs per engine (the median is printed)"),
		MP_OPT_L("python-items", &py_items, 0, 100000000,
			 "items for Python's Queue (0 skips Python)"),
		MP_OPT_F("csv", &csv, "the figures alone, as CSV"),
		MP_OPT_F("plot", &plot_flag, "draw items/s by processes, one "
			 "line per engine; --plot FILE.svg|.png: into a file"),
	};

	mp_parse_options(argc, argv, "A bounded buffer between processes, "
			 "built with a mutex and two condition variables, with "
			 "futexes, and lib/mp_queue; their speed beside "
			 "Python's multiprocessing.Queue.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	double pxc[2], rate[4][101];
	bool ok = true;

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv)
		mp_say("parent", "%ld producers x %ld items -> %ld consumers, "
		       "capacity %d; every wait gives up after %d s", nprod,
		       per, ncons, CAPACITY, WAIT_S);

	/* 1. The textbook bounded buffer, P producers -> C consumers, ended
	 *    the Python way: one STOP per consumer after the last producer. */
	bool cond_ok = run_round(sh, COND, nprod, ncons, per, false, &pxc[0]);

	report(sh, COND, nprod, ncons, "STOP sentinels", cond_ok, pxc[0], csv);

	/* 2. lib/mp_queue on the same work, ended by sentinels and by
	 *    close(): "no more puts", seen by every process. */
	double r_close;
	bool mpq_ok = run_round(sh, MPQ, nprod, ncons, per, false, &pxc[1]);

	report(sh, MPQ, nprod, ncons, "STOP sentinels", mpq_ok, pxc[1], csv);
	bool close_ok = run_round(sh, MPQ, nprod, ncons, per, true, &r_close);

	report(sh, MPQ, nprod, ncons, "close()", close_ok, r_close, csv);

	if (!csv)
		mp_say("parent", "%ld -> %ld: mp_queue %.1fx the condvar "
		       "buffer", nprod, ncons, pxc[1] / pxc[0]);

	/* 3. qsize()/empty(): exact when quiet, stale when busy. */
	bool quiet = csv || qsize_promises(sh);

	/* 4. 1 producer -> 1 consumer, every engine, the median of repeat
	 *    runs; the futex ring counts its system calls. */
	long calls[3] = { 0, 0, 0 };
	int cpu[2];

	two_cpus(cpu);
	bool pinned = cpu[0] >= 0;
	bool eng_ok[4] = { cond_ok, true, mpq_ok && close_ok, true };

	long runs[4] = { 0, 0, 0, 0 };

	for (int e = COND; e <= MPQ_MANY; e++) {
		/* A broken engine would only time out once more. */
		for (long r = 0; r < repeat && eng_ok[e]; r++, runs[e]++) {
			bool good = run_round(sh, (enum engine)e, 1, 1, items,
					      false, &rate[e][r]);

			if (!good || r == 0)
				report(sh, (enum engine)e, 1, 1, pinned ?
				       "on 2 CPUs, run 1" : "run 1", good,
				       rate[e][r], csv);
			eng_ok[e] = good;
			if (e == FUTEX && r == 0) {
				calls[0] = sh->posts;
				calls[1] = sh->waits;
				calls[2] = sh->wakes;
			}
		}
		qsort(rate[e], (size_t)runs[e], sizeof(double), cmp_double);
	}
	double med[4];

	for (int e = COND; e <= MPQ_MANY; e++)
		med[e] = eng_ok[e] ? rate[e][runs[e] / 2] : 0;
	if (!csv) {
		mp_say("parent", "futex ring: %ld posts, %ld FUTEX_WAKE calls "
		       "(only posts that found the waiters flag set), %ld "
		       "FUTEX_WAITs: it sleeps as soon as the ring is empty or "
		       "full, where mp_queue first spins a little",
		       calls[0], calls[2], calls[1]);
		mp_say("parent", "1 -> 1, %ld items%s: condvar %.2f, futex "
		       "ring %.2f, mp_queue %.2f, mp_queue_many %.2f M "
		       "items/s", items, repeat > 1 ? ", medians" : "",
		       med[COND] / 1e6, med[FUTEX] / 1e6, med[MPQ] / 1e6,
		       med[MPQ_MANY] / 1e6);
	}

	/* 5. The same 1 -> 1 work through Python's multiprocessing.Queue. */
	struct twin t = { .items = py_items, .csv = csv };
	char arg[32];
	bool py_ok = true;

	snprintf(arg, sizeof arg, "%ld", py_items);
	if (py_items > 0 && mp_python3()) {
		int st = mp_run_twin(MP_LESSON_DIR "/queues_basic.py",
				     (char *[]){ "--items", arg, NULL },
				     60 + (double)py_items / 1e4, twin_line,
				     &t);

		if (st == -1)
			mp_say("parent", "python twin: %s", strerror(errno));
		py_ok = t.got && st != -1 && WIFEXITED(st) &&
			WEXITSTATUS(st) == 0;
		if (py_ok && !csv)
			mp_say("parent", "1 -> 1, items per second: mp_queue "
			       "%.0fx, the condvar buffer %.0fx Python's Queue "
			       "(which ran %ld items, not %ld)", med[MPQ] *
			       t.secs / (double)py_items, med[COND] * t.secs /
			       (double)py_items, py_items, items);
	} else if (py_items > 0 && !csv) {
		mp_say("parent", "python: skipped, python3 was not found at "
		       "configure time");
	}
	if (csv) {
		const char *names[] = { "condvar", "futex_ring", "mp_queue",
					"mp_queue_many" };

		printf("engine,producers,consumers,items,seconds,"
		       "items_per_s\n");
		for (int e = COND; e <= MPQ_MANY; e++)
			printf("%s,1,1,%ld,%.6f,%.0f\n", names[e], items,
			       (double)items / med[e], med[e]);
		for (int e = 0; e < 2; e++)
			printf("%s,%ld,%ld,%ld,%.6f,%.0f\n",
			       names[e ? MPQ : COND], nprod, ncons, nprod * per,
			       (double)(nprod * per) / pxc[e], pxc[e]);
		if (py_ok && t.got)
			printf("python,1,1,%ld,%.6f,%.0f\n", py_items, t.secs,
			       (double)py_items / t.secs);
	}
	if (plot) {  /* x: processes in the run (1 -> 1, then P x C) */
		bool py = py_ok && t.got;  /* a line for Python if it ran */
		struct mp_table *pt = mp_table_new("a queue between "
			"processes: items/s", "items/s", py ? "processes,"
			"condvar,futex_ring,mp_queue,mp_queue_many,python" :
			"processes,condvar,futex_ring,mp_queue,mp_queue_many");

		if (!pt)
			mp_die("mp_table_new");
		pt->logy = true;
		MP_CHECK(mp_table_add(pt, (double[]){ 2, med[COND],
			med[FUTEX], med[MPQ], med[MPQ_MANY], py ?
			(double)py_items / t.secs : NAN }));
		MP_CHECK(mp_table_add(pt, (double[]){ (double)(nprod + ncons),
			pxc[0], NAN, pxc[1], NAN, NAN }));
		if (mp_plot(pt, plot) == -1 && errno != ENOENT)
			mp_die("plot");
		mp_table_free(pt);
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	ok = eng_ok[COND] && eng_ok[FUTEX] && eng_ok[MPQ] && eng_ok[MPQ_MANY] &&
	     quiet && py_ok;
	if (!csv)
		printf("result: exactly once and in order: condvar %s, futex "
		       "ring %s, mp_queue %s, mp_queue_many %s; qsize %s%s "
		       "%s\n", eng_ok[COND] ? "yes" : "NO",
		       eng_ok[FUTEX] ? "yes" : "NO", eng_ok[MPQ] ? "yes" : "NO",
		       eng_ok[MPQ_MANY] ? "yes" : "NO", quiet ? "OK" : "WRONG",
		       py_ok ? "" : ", python FAILED", ok ? "OK" : "MISMATCH");
	else if (!ok)
		fprintf(stderr, "queues_basic: MISMATCH\n");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
