/* lib/mp_queue.c -- see mp_queue.h
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue.  Slot i carries a sequence
 * number seq, and the holder of ticket pos uses slot pos % capacity:
 *   seq == 2*pos              free for the producer holding ticket pos
 *   seq == 2*pos + 1          holds that producer's item, ready for the
 *                             consumer holding ticket pos
 *   seq == 2*(pos + capacity) after that consumer: free for the next lap
 * (Vyukov's original counts pos, pos + 1, pos + capacity, which cannot tell
 * "full" from "free" when capacity is 1; doubling keeps the two apart.)
 * Tickets are 64-bit and only grow: 2^63 of them (bit 63 is taken, below)
 * last about 300 years at a billion a second.  Bit 63 of the tail is the
 * "closed" flag: a producer's compare-and-swap on the tail fails once it is
 * set, so every put either happened before close() or fails with EPIPE, and
 * the tail at close time is the exact end of the queue.
 *
 * Sleeping is an "event count" per direction: a 32-bit futex word that a
 * waker increments before FUTEX_WAKE, and a count of sleepers.  A waiter
 * reads the word, counts itself, checks the ring once more and sleeps only
 * if the word has not moved.  A publisher stores the slot's sequence number,
 * then (after a full fence) reads the sleeper count.  The two fences make it
 * impossible for both to miss each other (the store-buffer pattern of
 * Dekker's algorithm): either the waiter's last look sees the item, or the
 * publisher sees the sleeper and moves the word, which the kernel compares
 * under its own lock in FUTEX_WAIT.  So no wake-up is lost and no call pays
 * for a system call while nobody sleeps.  A third word, `woken`, keeps a
 * burst of puts from making one FUTEX_WAKE each while the woken consumer
 * waits for a CPU (see event_signal()).  The word may wrap; a waiter would
 * miss a wake-up only if exactly 2^32 of them came between its reading the
 * word and its FUTEX_WAIT, which is not a practical worry.
 */
#define _GNU_SOURCE
#include "mp_queue.h"
#include "mp_util.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define CLOSED_BIT (UINT64_C(1) << 63)
/* Polls of the ring before a waiter goes to sleep: a few microseconds, long
 * enough to ride out the other side's next put or get without a system
 * call, short enough not to waste a core shared with others. */
#define SPIN_LIMIT 256

/* One direction's sleeping place: the futex word, how many sleep on it, and
 * whether a wake-up was sent since the last one went to sleep. */
struct event {
	_Atomic uint32_t word;
	_Atomic uint32_t sleepers;
	_Atomic uint32_t woken;
};

struct mp_queue {
	/* Set at creation, read-only afterwards. */
	size_t item_size, slot_size, capacity, map_size;
	uint64_t mask;  /* capacity - 1 when capacity is a power of 2, else 0 */
	/* Set once by close(), after the tail's closed bit: consumers poll this
	 * read-mostly flag instead of the producers' busy tail line. */
	_Atomic uint32_t closed;
	/* producers' next ticket */
	_Alignas(CACHE_LINE) _Atomic uint64_t tail;
	/* consumers' next ticket */
	_Alignas(CACHE_LINE) _Atomic uint64_t head;
	_Alignas(CACHE_LINE) struct event not_empty;  /* consumers sleep here */
	_Alignas(CACHE_LINE) struct event not_full;   /* producers sleep here */
	_Alignas(CACHE_LINE) unsigned char slots[];
};

struct slot {
	_Atomic uint64_t seq;
	unsigned char data[];
};

static inline struct slot *slot_at(const struct mp_queue *q, uint64_t pos)
{
	uint64_t i = q->mask ? pos & q->mask : pos % q->capacity;

	return (struct slot *)(q->slots + i * q->slot_size);
}

static inline void copy_item(const struct mp_queue *q, void *dst,
			     const void *src)
{
	if (q->item_size == 8)  /* the common case, copied inline */
		memcpy(dst, src, 8);
	else
		memcpy(dst, src, q->item_size);
}

/* ---- sleeping and waking ---------------------------------------------- */

/* Sleep while ev->word == seen, until an absolute CLOCK_MONOTONIC deadline
 * (NULL: no deadline).  Returns 0 when woken or the word moved, ETIMEDOUT
 * when the deadline passed.  FUTEX_WAIT_BITSET takes an absolute time, so
 * retrying after EINTR does not stretch the timeout.  Not FUTEX_PRIVATE: the
 * word lives in a mapping shared between processes. */
static int event_wait(struct event *ev, uint32_t seen,
		      const struct timespec *deadline)
{
	long r = syscall(SYS_futex, &ev->word, FUTEX_WAIT_BITSET, seen,
			 deadline, NULL, FUTEX_BITSET_MATCH_ANY);

	if (r == -1 && errno == ETIMEDOUT)
		return ETIMEDOUT;
	return 0;  /* woken, EAGAIN (word moved) or EINTR: look again */
}

/* After publishing (or freeing) slots: wake the sleepers, if any.  The fence
 * orders the caller's sequence-number stores before the sleeper count is
 * read; wait_for() fences the other way.  Every sleeper is woken, and only
 * the first publisher after a sleeper went to sleep makes the system call:
 * while the woken ones wait for a CPU, later puts see `woken` set and go on
 * without one (on a busy machine that is the difference between one system
 * call per item and one per sleep).  A sleeper clears `woken` before its
 * fence and last look at the ring, so for a publish it did not see, the
 * publisher's exchange reads that 0 or a later value: either it wakes, or an
 * exchange after the sleeper's clear already took the job, and that one
 * moves the word after the sleeper read it. */
static void event_signal(struct event *ev)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&ev->sleepers, memory_order_relaxed) == 0 ||
	    atomic_exchange_explicit(&ev->woken, 1, memory_order_seq_cst))
		return;
	atomic_fetch_add_explicit(&ev->word, 1, memory_order_seq_cst);
	syscall(SYS_futex, &ev->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void event_broadcast(struct event *ev)
{
	atomic_fetch_add_explicit(&ev->word, 1, memory_order_seq_cst);
	syscall(SYS_futex, &ev->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- the lock-free core ----------------------------------------------- */

/* Internal results besides a count of items moved (0 = none right now). */
enum { NONE = -1, SHUT = -2, END = -3 };

/* Claim up to n consecutive free slots at the tail.  Returns how many (0 if
 * the queue is full) and their first ticket in *first, or SHUT if closed. */
static long claim_put(struct mp_queue *q, size_t n, uint64_t *first)
{
	uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);

	for (;;) {
		if (pos & CLOSED_BIT)
			return SHUT;
		size_t k = 0;

		while (k < n) {
			uint64_t seq = atomic_load_explicit(
				&slot_at(q, pos + k)->seq,
				memory_order_acquire);

			if (seq != 2 * (pos + k))
				break;
			k++;
		}
		if (k == 0) {
			uint64_t seq = atomic_load_explicit(
				&slot_at(q, pos)->seq, memory_order_acquire);
			uint64_t now = atomic_load_explicit(
				&q->tail, memory_order_relaxed);

			/* seq < 2*pos: the slot still holds an item of the
			 * previous lap, the queue is full.  Otherwise our view
			 * of the tail was stale (another producer moved on). */
			if ((int64_t)(seq - 2 * pos) < 0 && now == pos)
				return 0;
			pos = now;
			continue;
		}
		if (atomic_compare_exchange_weak_explicit(
			    &q->tail, &pos, pos + k, memory_order_relaxed,
			    memory_order_relaxed)) {
			*first = pos;
			return (long)k;
		}
	}
}

/* Claim up to n consecutive ready slots at the head: how many (0 if none is
 * ready), or END once the queue is closed and every ticket was taken. */
static long claim_get(struct mp_queue *q, size_t n, uint64_t *first)
{
	uint64_t pos = atomic_load_explicit(&q->head, memory_order_relaxed);

	for (;;) {
		size_t k = 0;

		while (k < n) {
			uint64_t seq = atomic_load_explicit(
				&slot_at(q, pos + k)->seq,
				memory_order_acquire);

			if (seq != 2 * (pos + k) + 1)
				break;
			k++;
		}
		if (k == 0) {
			uint64_t now = atomic_load_explicit(
				&q->head, memory_order_relaxed);

			if (now != pos) {  /* stale view: another consumer */
				pos = now;
				continue;
			}
			if (!atomic_load_explicit(&q->closed,
						  memory_order_acquire))
				return 0;
			uint64_t tail = atomic_load_explicit(
				&q->tail, memory_order_acquire);

			/* Closed, and no ticket beyond ours was handed out: the
			 * end.  A ticket handed out but not yet published is an
			 * item on its way: wait for it. */
			return (tail & ~CLOSED_BIT) == pos ? END : 0;
		}
		if (atomic_compare_exchange_weak_explicit(
			    &q->head, &pos, pos + k, memory_order_relaxed,
			    memory_order_relaxed)) {
			*first = pos;
			return (long)k;
		}
	}
}

/* Put up to n items without waiting: how many went in, or SHUT. */
static long put_some(struct mp_queue *q, const unsigned char *items, size_t n)
{
	uint64_t pos;
	long k = claim_put(q, n, &pos);

	for (long i = 0; i < k; i++) {
		struct slot *s = slot_at(q, pos + (uint64_t)i);

		copy_item(q, s->data, items + (size_t)i * q->item_size);
		atomic_store_explicit(&s->seq, 2 * (pos + (uint64_t)i) + 1,
				      memory_order_release);
	}
	if (k > 0)
		event_signal(&q->not_empty);
	return k;
}

/* Get up to n items without waiting: how many, or END. */
static long get_some(struct mp_queue *q, unsigned char *items, size_t n)
{
	uint64_t pos;
	long k = claim_get(q, n, &pos);

	for (long i = 0; i < k; i++) {
		struct slot *s = slot_at(q, pos + (uint64_t)i);

		copy_item(q, items + (size_t)i * q->item_size, s->data);
		atomic_store_explicit(&s->seq,
				      2 * (pos + (uint64_t)i + q->capacity),
				      memory_order_release);
	}
	if (k > 0)
		event_signal(&q->not_full);
	return k;
}

/* ---- waiting ---------------------------------------------------------- */

/* How long to wait: not at all (try_only: fail at once with err), until an
 * absolute CLOCK_MONOTONIC deadline, or forever (deadline NULL). */
struct wait_mode {
	bool try_only;
	int err;  /* errno when try_only finds nothing: EAGAIN or ETIMEDOUT */
	const struct timespec *deadline;
};

/* tests/test_queue.c compiles this file into itself with this defined, to
 * stop a waiter exactly where a lost wake-up would strike: after its last
 * look found nothing, before it counts itself as a sleeper. */
#ifndef MP_QUEUE_BEFORE_SLEEP
#define MP_QUEUE_BEFORE_SLEEP() ((void)0)
#endif

static bool past(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec &&
		now.tv_nsec >= deadline->tv_nsec);
}

/* Run op (put_some or get_some on n items) until it moves at least one item
 * or reports an end, spinning a little, then sleeping on ev.  Returns op's
 * result, or NONE with *err set (EAGAIN or ETIMEDOUT). */
static long wait_for(struct mp_queue *q, struct event *ev,
		     long (*op)(struct mp_queue *, void *, size_t),
		     void *items, size_t n, struct wait_mode m, int *err)
{
	for (;;) {
		long r = op(q, items, n);

		for (int spin = 0; r == 0 && !m.try_only && spin < SPIN_LIMIT;
		     spin++) {
			mp_cpu_relax();
			r = op(q, items, n);
		}
		if (r != 0)
			return r;
		if (m.try_only) {
			*err = m.err;
			return NONE;
		}
		if (m.deadline && past(m.deadline)) {
			*err = ETIMEDOUT;
			return NONE;
		}
		MP_QUEUE_BEFORE_SLEEP();
		/* Count ourselves as a sleeper and ask for a wake-up, then look
		 * once more: a publish before our count is seen here, one after
		 * it sees the count and moves the word before waking.  Without
		 * this last look, an item put since the look above (by someone
		 * who saw no sleeper, so woke nobody) would be slept
		 * through. */
		uint32_t seen = atomic_load_explicit(&ev->word,
						     memory_order_seq_cst);

		atomic_fetch_add_explicit(&ev->sleepers, 1,
					  memory_order_seq_cst);
		atomic_store_explicit(&ev->woken, 0, memory_order_seq_cst);
		atomic_thread_fence(memory_order_seq_cst);
		r = op(q, items, n);
		int w = r == 0 ? event_wait(ev, seen, m.deadline) : 0;

		atomic_fetch_sub_explicit(&ev->sleepers, 1,
					  memory_order_relaxed);
		if (r != 0)
			return r;
		if (w == ETIMEDOUT) {
			/* One last look, so that a timeout never hides an item
			 * that arrived just at the deadline. */
			r = op(q, items, n);
			if (r != 0)
				return r;
			*err = ETIMEDOUT;
			return NONE;
		}
	}
}

static long put_op(struct mp_queue *q, void *items, size_t n)
{
	return put_some(q, items, n);
}

static long get_op(struct mp_queue *q, void *items, size_t n)
{
	return get_some(q, items, n);
}

/* The wait mode for a timeout: 0 tries once, more than FOREVER_S (about
 * 31 years, INFINITY too) waits without a deadline, anything else ends at
 * now + timeout_s on CLOCK_MONOTONIC, which no clock setting moves. */
#define FOREVER_S 1e9
static int timeout_mode(double timeout_s, struct timespec *deadline,
			struct wait_mode *m)
{
	if (!(timeout_s >= 0)) {  /* negative, or NaN */
		errno = EINVAL;
		return -1;
	}
	*m = (struct wait_mode){ timeout_s == 0, ETIMEDOUT, NULL };
	if (timeout_s == 0 || timeout_s > FOREVER_S)
		return 0;
	if (clock_gettime(CLOCK_MONOTONIC, deadline) == -1)
		return -1;
	time_t whole = (time_t)timeout_s;  /* in range, not negative: floor */
	long ns = deadline->tv_nsec + (long)((timeout_s - (double)whole) * 1e9);

	deadline->tv_sec += whole + ns / 1000000000;
	deadline->tv_nsec = ns % 1000000000;
	m->deadline = deadline;
	return 0;
}

/* One item in or out, in any wait mode, with the public return values. */
static int put_one(struct mp_queue *q, const void *item, struct wait_mode m)
{
	int err = 0;

	if (!q || !item) {
		errno = EINVAL;
		return -1;
	}
	long r = wait_for(q, &q->not_full, put_op, (void *)item, 1, m, &err);

	if (r == 1)
		return 0;
	errno = r == SHUT ? EPIPE : err;
	return -1;
}

static int get_one(struct mp_queue *q, void *item, struct wait_mode m)
{
	int err = 0;

	if (!q || !item) {
		errno = EINVAL;
		return -1;
	}
	long r = wait_for(q, &q->not_empty, get_op, item, 1, m, &err);

	if (r == 1)
		return 1;
	if (r == END)
		return 0;
	errno = err;
	return -1;
}

/* ---- the public calls ------------------------------------------------- */

struct mp_queue *mp_queue_create(size_t item_size, size_t capacity)
{
	if (item_size == 0 || capacity == 0) {
		errno = EINVAL;
		return NULL;
	}
	size_t slot_size = (sizeof(struct slot) + item_size + 7) & ~(size_t)7;

	if (slot_size < item_size ||
	    capacity > (SIZE_MAX - sizeof(struct mp_queue)) / slot_size ||
	    capacity > (UINT64_C(1) << 62)) {
		errno = ENOMEM;
		return NULL;
	}
	size_t map_size = sizeof(struct mp_queue) + capacity * slot_size;
	struct mp_queue *q = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (q == MAP_FAILED)
		return NULL;
	/* The mapping is zero-filled: head, tail and the events start at 0. */
	q->item_size = item_size;
	q->slot_size = slot_size;
	q->capacity = capacity;
	q->map_size = map_size;
	q->mask = (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0;
	if (capacity == 1)
		q->mask = 0;  /* pos % 1 == 0; a mask of 0 means "use %" */
	for (size_t i = 0; i < capacity; i++)
		atomic_init(&slot_at(q, i)->seq, 2 * (uint64_t)i);
	return q;
}

int mp_queue_destroy(struct mp_queue *q)
{
	if (!q) {
		errno = EINVAL;
		return -1;
	}
	return munmap(q, q->map_size);
}

int mp_queue_put(struct mp_queue *q, const void *item)
{
	return put_one(q, item, (struct wait_mode){ false, 0, NULL });
}

int mp_queue_try_put(struct mp_queue *q, const void *item)
{
	return put_one(q, item, (struct wait_mode){ true, EAGAIN, NULL });
}

int mp_queue_put_timeout(struct mp_queue *q, const void *item,
			 double timeout_s)
{
	struct timespec deadline;
	struct wait_mode m;

	if (timeout_mode(timeout_s, &deadline, &m) == -1)
		return -1;
	return put_one(q, item, m);
}

int mp_queue_get(struct mp_queue *q, void *item)
{
	return get_one(q, item, (struct wait_mode){ false, 0, NULL });
}

int mp_queue_try_get(struct mp_queue *q, void *item)
{
	return get_one(q, item, (struct wait_mode){ true, EAGAIN, NULL });
}

int mp_queue_get_timeout(struct mp_queue *q, void *item, double timeout_s)
{
	struct timespec deadline;
	struct wait_mode m;

	if (timeout_mode(timeout_s, &deadline, &m) == -1)
		return -1;
	return get_one(q, item, m);
}

ssize_t mp_queue_put_many(struct mp_queue *q, const void *items, size_t n)
{
	const unsigned char *p = items;
	size_t done = 0;
	int err = 0;

	if (!q || !items || n > SSIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	while (done < n) {
		long r = wait_for(q, &q->not_full, put_op,
				  (void *)(p + done * q->item_size), n - done,
				  (struct wait_mode){ false, 0, NULL }, &err);

		if (r == SHUT) {
			if (done > 0)
				break;
			errno = EPIPE;
			return -1;
		}
		done += (size_t)r;
	}
	return (ssize_t)done;
}

ssize_t mp_queue_get_many(struct mp_queue *q, void *items, size_t max)
{
	int err = 0;

	if (!q || !items || max == 0 || max > SSIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	long r = wait_for(q, &q->not_empty, get_op, items, max,
			  (struct wait_mode){ false, 0, NULL }, &err);

	if (r > 0)
		return r;
	if (r == END)
		return 0;
	errno = err;
	return -1;
}

int mp_queue_close(struct mp_queue *q)
{
	if (!q) {
		errno = EINVAL;
		return -1;
	}
	atomic_fetch_or_explicit(&q->tail, CLOSED_BIT, memory_order_seq_cst);
	atomic_store_explicit(&q->closed, 1, memory_order_seq_cst);
	event_broadcast(&q->not_empty);
	event_broadcast(&q->not_full);
	return 0;
}

size_t mp_queue_qsize(const struct mp_queue *q)
{
	if (!q)
		return 0;
	/* Head first: it never passes the tail, so read in this order the
	 * difference is not negative, only stale (claimed tickets count, done
	 * or not).  Clamped all the same: the two reads are not one snapshot,
	 * and the memory model does not promise this order between them. */
	uint64_t head = atomic_load_explicit(&q->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&q->tail, memory_order_acquire) &
			~CLOSED_BIT;
	int64_t n = (int64_t)(tail - head);

	return n < 0 ? 0 : (uint64_t)n > q->capacity ? q->capacity : (size_t)n;
}

bool mp_queue_empty(const struct mp_queue *q)
{
	return mp_queue_qsize(q) == 0;
}

bool mp_queue_full(const struct mp_queue *q)
{
	return q && mp_queue_qsize(q) == q->capacity;
}

bool mp_queue_closed(const struct mp_queue *q)
{
	return !q || atomic_load_explicit(&q->closed, memory_order_acquire);
}

size_t mp_queue_item_size(const struct mp_queue *q)
{
	return q ? q->item_size : 0;
}

size_t mp_queue_capacity(const struct mp_queue *q)
{
	return q ? q->capacity : 0;
}
