/* lib/mp_queue.h -- a bounded queue shared by forked processes
 *
 * Python:  q = multiprocessing.Queue(maxsize); q.put(x); x = q.get()
 * C:       q = mp_queue_create(sizeof x, capacity); mp_queue_put(q, &x);
 *          mp_queue_get(q, &x)  -- made before fork(), used by any number
 *          of producer and consumer processes forked after it.
 *
 * How it is built: one MAP_SHARED | MAP_ANONYMOUS mapping holds a ring of
 * `capacity` slots, each a sequence number plus the item's bytes, and two
 * 64-bit tickets (tail for producers, head for consumers) on cache lines of
 * their own.  A producer claims a slot by compare-and-swap on the tail, copies
 * the item in and publishes it by storing the slot's sequence number; a
 * consumer does the same on the head (Dmitry Vyukov's bounded MPMC queue).
 * Nothing is locked, so the common case is a few atomic instructions and no
 * system call.  Only when the queue is empty (or full) does a caller go to
 * sleep in the kernel, on a futex, after a short bounded spin; the other side
 * makes the wake-up system call only when it sees a sleeper counted.
 *
 * How it differs from Python's multiprocessing.Queue, which CPython builds in
 * Lib/multiprocessing/queues.py from a pipe (Pipe(duplex=False)), a feeder
 * thread that pickles buffered objects into it, a BoundedSemaphore(maxsize)
 * for the bound and two Locks (one for readers, one for writers):
 *  - items have one fixed size, given at creation, and are copied byte for
 *    byte: no pickling, so no pointers (they mean nothing in another
 *    process's memory unless they point into a mapping shared before fork);
 *  - put() copies the item into shared memory before it returns: there is no
 *    feeder thread and no per-process buffer, so there is no "join a process
 *    before the queue is drained" deadlock (a Python child that put items
 *    cannot exit until its feeder thread has flushed them into the pipe).
 *    A producer still waits inside put() while the queue is full, as a
 *    Python producer does in put() on a full Queue(maxsize);
 *  - close() is shared by all processes and means "no more puts": consumers
 *    drain what is left, then get 0 (end of queue), like read(2) at EOF;
 *    producers get EPIPE.  Python's close() only closes this process's end;
 *  - a process killed while inside put() or get() can leave its slot claimed
 *    but never completed, or a wake-up claimed but never sent, and the
 *    others may then wait forever (as they would for a lock it held).
 *    Python's queue can be corrupted the same way (documented under Queue
 *    and Process.terminate()).
 *
 * qsize(), empty() and full() are approximate between processes, as in
 * Python: the answer may be stale by the time the caller acts on it.  Only
 * put/get's own return values are authoritative.
 *
 * Conventions: functions return 0 / -1 with errno set, except the get calls,
 * which return the number of items they stored, like read(2) returns bytes:
 * 1 (or up to max for get_many), 0 at end of queue, -1 with errno on error.
 * A NULL queue or item pointer, an item size or capacity of 0, a get_many
 * max of 0, or a negative or NaN timeout give EINVAL.  Timeouts are in
 * seconds on CLOCK_MONOTONIC (setting the clock does not move them); 0
 * tries once without waiting, more than 1e9 (or INFINITY) waits without
 * limit.  Calls that wait never return EINTR: after a signal handler
 * returns they wait again, for what is left of their timeout.
 */
#ifndef MP_QUEUE_H
#define MP_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct mp_queue;

/* A new, empty, open queue of up to capacity items of item_size bytes each,
 * in one shared mapping: every child forked afterwards uses the same queue.
 * EINVAL for a size or capacity of 0, ENOMEM if it does not fit in memory. */
struct mp_queue *mp_queue_create(size_t item_size, size_t capacity);

/* Unmap this process's view of the queue.  Call it once nobody else in this
 * process uses it; other processes keep their own view until they unmap it
 * or exit. */
int mp_queue_destroy(struct mp_queue *q);

/* Put a copy of item's item_size bytes.  Waits while the queue is full.
 * EPIPE if the queue is closed (also if it is closed while waiting). */
int mp_queue_put(struct mp_queue *q, const void *item);

/* The same without waiting: EAGAIN if the queue is full right now. */
int mp_queue_try_put(struct mp_queue *q, const void *item);

/* The same waiting at most timeout_s seconds: ETIMEDOUT when it expires
 * (a timeout of 0 tries once: ETIMEDOUT if the queue is full right now). */
int mp_queue_put_timeout(struct mp_queue *q, const void *item,
			 double timeout_s);

/* Take the oldest item into item (item_size bytes).  Waits while the queue
 * is empty and open.  Returns 1 with an item, 0 when the queue is closed and
 * empty (end of queue: every later call returns 0 too), -1 on error. */
int mp_queue_get(struct mp_queue *q, void *item);

/* The same without waiting: -1 with EAGAIN if no item is ready right now
 * (still 0 at end of queue). */
int mp_queue_try_get(struct mp_queue *q, void *item);

/* The same waiting at most timeout_s seconds: -1 with ETIMEDOUT. */
int mp_queue_get_timeout(struct mp_queue *q, void *item, double timeout_s);

/* Batches: one call moves many items and pays the atomic operations and the
 * wake-up check once per batch instead of once per item.
 * put_many puts all n items in order (waiting for room as needed) and
 * returns n (0 for n = 0); if the queue is closed meanwhile it returns how
 * many it put (like a short write), or -1 with EPIPE if none.
 * get_many waits until at least one item is ready, then takes up to max
 * ready items in order; returns how many, 0 at end of queue, -1 on error. */
ssize_t mp_queue_put_many(struct mp_queue *q, const void *items, size_t n);
ssize_t mp_queue_get_many(struct mp_queue *q, void *items, size_t max);

/* No more puts, from any process: waiting producers return EPIPE, waiting
 * consumers wake up, drain what is left and then get 0.  Closing twice is
 * harmless; a closed queue cannot be reopened. */
int mp_queue_close(struct mp_queue *q);

/* Approximate state, as Python's qsize()/empty()/full(): exact only while
 * no other process is using the queue.  A NULL queue reads as 0 / true. */
size_t mp_queue_qsize(const struct mp_queue *q);
bool mp_queue_empty(const struct mp_queue *q);
bool mp_queue_full(const struct mp_queue *q);
bool mp_queue_closed(const struct mp_queue *q);

/* The sizes given at creation (0 for a NULL queue). */
size_t mp_queue_item_size(const struct mp_queue *q);
size_t mp_queue_capacity(const struct mp_queue *q);

#endif
