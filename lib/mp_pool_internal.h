/* lib/mp_pool_internal.h -- the pool's shared layout and tiny helpers
 *
 * Not a public header: only lib/mp_pool*.c include it.  The pool is eight
 * files in layers; each includes this one and calls only the layers below:
 *
 *   mp_pool.c, mp_pool_iter.c,  the public calls (mp_pool.h): create and
 *   mp_pool_heap.c              stop, map/apply/async handles, the event
 *                               loop's fd and poll; imap; the shared heap
 *             |
 *   mp_pool_submit.c            the parent: calls -> jobs in the ring
 *             |
 *   mp_pool_wait.c              the parent: bookkeeping, waiting (ppoll),
 *                               the event loop's descriptor
 *             |
 *   mp_pool_collect.c           the parent: finished jobs -> their calls,
 *                               retiring, imap copies, cancelling
 *             |
 *   mp_pool_recovery.c          the parent: worker processes -- fork, reap,
 *                               blame the item a dead worker ran, audit
 *             |  fork(), then mpp_worker_main(): the only crossing
 *             v
 *   mp_pool_worker.c            the worker: claim chunks, run them, sleep
 *
 *   mp_pool_internal.h          (this file) the shared layout, the parent's
 *                               bookkeeping, inline helpers
 *
 * The shared memory, mapped MAP_SHARED | MAP_ANONYMOUS before the first
 * fork, so every worker (replacements included) sees it at the same
 * address.  W = written by, R = read by; P = parent, w = workers.
 *
 *   struct shared (one mapping)
 *   +-----------------------------------------------------------------+
 *   | tail          P:W w:R   jobs published (ring[0..tail) exist)    |
 *   | first_open    w:W P:W   oldest job that may have unclaimed work |
 *   | wake_seq      P,w:W     futex word idle workers sleep on        |
 *   | sleepers      w:W P:R   how many sleep (or are about to)        |
 *   | wake_pending  P,w:W     a wake-up is on its way to a sleeper    |
 *   | shutdown      P:W w:R   leave at join()                         |
 *   | parent_waiting P:W w:RW parent asleep (or an event loop's fd    |
 *   |                         armed): the next worker to finish a job |
 *   |                         clears it and writes the eventfd        |
 *   +-----------------------------------------------------------------+
 *   | slots[MP_POOL_MAX_WORKERS]  one per worker, own cache lines     |
 *   |   job, chunk  w:W P:R   what the worker holds / runs            |
 *   |   item        w:W P:R   the item it runs (read after a death)   |
 *   |   tasks       w:W P:R   task calls finished (statistics)        |
 *   |   state       w,P:W     STARTING, INIT, READY, RETIRING/LEAVING |
 *   +-----------------------------------------------------------------+
 *   | ring[RING]    job j in ring[j % RING]                           |
 *   |   next        w:W (atomic add: claim chunk k = next++) P:W audit|
 *   |   done_items  w:W P:R   items finished, added on leaving a job  |
 *   |   err_key     w:W P:R   lowest failing index << 12 | code       |
 *   |   seq         P:W w:R   j while open; AUDIT / RETIRED marks     |
 *   |   end_unit, fn, n, chunk, sizes, in, out, flags   P:W w:R       |
 *   +-----------------------------------------------------------------+
 *   | nsegs, segs[] P:W w:R   the heap's mappings (address, length)   |
 *   +-----------------------------------------------------------------+
 *
 *   arena (a second mapping, used as a ring of byte ranges, one per job)
 *   +--------------------------------------------------------------+
 *   | job j: items (P:W w:R) | results (w:W P:R) | flags (w:W P:R) |
 *   |        imap: + errs[] (w:W P:R)                               |
 *   +--------------------------------------------------------------+
 *   a_head ... a_tail: the bytes of jobs not yet retired (parent only)
 *
 *   heap (a memfd, mapped in segments as it grows; workers map a segment
 *   made after their fork at the same address: mp_pool_heap.c)
 *   +----------------+--------------------------------+-------- - -
 *   | segment 0      | segment 1 (>= all before it)   | ...
 *   | blocks: P:W    | a map whose items or results lie in a block skips
 *   |  (items), w:W  | the copy: jb->in / jb->out point into the heap
 *   |  (results)     |                                |
 *   +----------------+--------------------------------+-------- - -
 *
 * The moving parts, all in one MAP_SHARED | MAP_ANONYMOUS mapping made before
 * the first fork (so every worker, replacements included, sees it at the
 * same address) plus an arena mapping for the bytes of items and results:
 *
 *  ring[]      job descriptors, numbered by a sequence number `seq` that only
 *              grows; job j lives in ring[j % RING].  The parent fills one,
 *              then publishes it by storing tail = j + 1.  A job is a window
 *              of a map (up to a quarter of the arena) or one apply task.
 *  first_open  the oldest job that may still have unclaimed chunks; workers
 *              move it forward when they find a job exhausted.
 *  job.next    the claim counter: a worker takes chunk k = next++ (one
 *              atomic add, as OpenMP's dynamic schedule).
 *  flags[]     one byte per item in the arena, set for a whole chunk once
 *              the worker has run it (not item by item: two workers would
 *              bounce a cache line of flags between them at every item):
 *              the authoritative record of what is done (imap reads it to
 *              stream results, recovery reads it after a death).
 *  slots[]     one per worker, on its own cache lines: which job, chunk and
 *              item it holds.  When a worker dies the parent reads its
 *              slot: the chunk's items before `item` are done (items run in
 *              order, and no other worker runs that chunk), so the parent
 *              flags them; `item` is blamed for the death; after `retries`
 *              more deaths it is given up (flag 2, error EOWNERDEAD).
 *
 * Completion without deaths: each worker adds the items it finished in a job
 * to job.done_items when it leaves the job; done_items == n means done.  A
 * dead worker's count is lost, so after a death every outstanding job is
 * "suspect" and is audited instead: once its chunks are all claimed and no
 * live worker holds it, the parent scans its flags; the missing items (the
 * rest of the dead worker's chunk) are run again by reopening the same job
 * (next rewound, job.rerun set: workers skip items already flagged).
 *
 * Protocol between parent and workers on a descriptor (Dekker-style, every
 * access seq_cst): a worker first stores slot.job = j, then reads job.seq;
 * the parent, before it audits or recycles job j, stores job.seq = j|AUDIT
 * (or RETIRED), then reads every slot.job.  Either the worker sees the mark
 * and backs off, or the parent sees the worker and waits for it.  Sleeping
 * uses the same pattern twice: a worker counts itself in `sleepers` before
 * its last look for work, the parent publishes work before it reads
 * `sleepers`; the parent sets `parent_waiting` before its last look at the
 * jobs, a worker finishes a job before it reads `parent_waiting`.  And once
 * more for the wake-up chain: a woken worker clears `wake_pending` before
 * it reads `tail`, the parent stores `tail` before it reads `wake_pending`
 * (so either the parent wakes a sleeper itself or the worker passes the
 * wake-up on: mp_pool_worker.c).
 *
 * Where a map's time goes (2 million 8-byte squares on 2 CPUs, chunksize
 * 1024, about 2 ms): the parent publishes one job and wakes one worker,
 * which wakes the other (the chain: workers woken together from the
 * parent's CPU often shared one CPU); each worker claims chunks, runs
 * them storing the item it is at in its slot (the price of knowing what
 * a death cut short: 7-9% of the time on a task this small), and flags each
 * chunk once it is done; the last one out writes the eventfd.  With the
 * caller's own arrays the parent also copies every window in before it
 * publishes it, and out when it completes -- between two submissions,
 * while the workers run the next window -- with stores that bypass the
 * cache (copy_window() below).  Those two copies are what separates
 * mp_pool from mp_pool_alloc()'d arrays: the parent's copying is the
 * longest path of a big map, and on 2 CPUs it takes turns with a worker.
 */
#ifndef MP_POOL_INTERNAL_H
#define MP_POOL_INTERNAL_H

#include "mp_pool.h"
#include "mp_util.h"

#include <errno.h>
#include <linux/futex.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { LINE = 64 };
#define RING 4096u                        /* job descriptors in flight */
#define NONE UINT64_MAX                   /* no job / no chunk */
#define AUDIT_BIT (UINT64_C(1) << 62)     /* job.seq while being audited */
#define RETIRED (UINT64_C(1) << 63)       /* job.seq once finished */
#define NO_ERR UINT64_MAX                 /* job.err_key: no failure */
#define CODE_BITS 12                      /* error codes 1..4095 */
#define CODE_MASK ((UINT64_C(1) << CODE_BITS) - 1)
#define DEFAULT_ARENA ((size_t)32 << 20)
#define MIN_SEGMENT ((size_t)4 << 20)     /* the heap's first mapping */
#define MAX_SEGMENTS 40                   /* heap mappings (each at least
					   * the size of all before it) */
#define FORK_GRACE_NS 1000000000          /* keep trying to fork this long
					   * with no worker left, then fail
					   * the calls waiting for one */
#define HEAP_MAGIC UINT64_C(0x6d70706f6f6c6862)  /* a used block */
#define HEAP_FREE UINT64_C(0x6d70706f6f6c6666)   /* a freed one */
#define MIN_ARENA ((size_t)1 << 20)
#define WINDOW_CAP ((size_t)2 << 20)      /* bytes per map window, ideally */
#define SPIN_NS 20000                     /* spin this long before sleeping */
#define RECHECK_NS 1000000                /* poll timeout while waiting on
					   * something that sends no wake-up */

/* slot.state; RETIRING: leaves after maxtasksperchild, LEAVING: at join */
/* STARTING: forked, not yet in the initializer; INIT: in it (a death
 * there is the initializer's failure; one before it is not). */
enum { S_FREE, S_STARTING, S_INIT, S_READY, S_RETIRING, S_LEAVING };
enum { K_APPLY, K_MAP, K_IMAP, K_IMAP_UNORDERED };  /* call kinds */
enum { P_RUNNING, P_CLOSED, P_TERMINATED, P_JOINED };

/* ---- shared memory ------------------------------------------------ */

struct job {
	/* written by workers: claims (the contended word), completion */
	alignas(LINE) _Atomic uint64_t next;
	_Atomic uint64_t done_items;          /* added when leaving the job */
	_Atomic uint64_t err_key;             /* min of index << 12 | code */
	/* written by the parent (at submission and audits), read by workers */
	alignas(LINE) _Atomic uint64_t seq;
	_Atomic uint64_t end_unit;            /* chunks [next, end_unit) */
	_Atomic bool rerun;                   /* reopened by an audit: skip
					       * the items already flagged */
	mp_pool_fn fn;
	uint64_t n, chunk, item_size, result_size;
	/* Absolute addresses: the arena is mapped before the first fork,
	 * and a heap segment at the same address in every worker. */
	const char *in;
	char *out;
	uint8_t *flags;
	uint16_t *errs;                       /* imap: each item's code */
	bool stream;                          /* imap: publish every chunk */
};

struct slot {
	alignas(2 * LINE) _Atomic uint64_t job;  /* job held, or NONE */
	_Atomic uint64_t chunk;                  /* chunk running, or NONE */
	_Atomic uint64_t item;                   /* item running (index in
						  * the job), or NONE */
	_Atomic uint64_t tasks;                  /* task calls finished */
	_Atomic int state;
};

struct shared {
	alignas(2 * LINE) _Atomic uint64_t tail;  /* jobs published */
	alignas(2 * LINE) _Atomic uint64_t first_open;
	alignas(2 * LINE) _Atomic uint32_t wake_seq;  /* futex word */
	_Atomic uint32_t sleepers;
	_Atomic int wake_pending;                 /* a wake-up is on its way */
	_Atomic int shutdown;
	alignas(2 * LINE) _Atomic int parent_waiting;
	/* The heap's mappings, published by the parent as it grows: a worker
	 * forked before one was made maps it at the same address. */
	alignas(2 * LINE) _Atomic uint32_t nsegs;
	struct segment { uint64_t addr, len, off; } segs[MAX_SEGMENTS];
	struct slot slots[MP_POOL_MAX_WORKERS];
	struct job ring[RING];
};

/* ---- the parent's private bookkeeping ----------------------------- */

struct pjob {                       /* one per ring entry */
	struct mp_pool_async *call;
	uint64_t seq;
	size_t base, n;                 /* items [base, base + n) of the call */
	size_t arena_begin;
	bool complete, suspect;
	size_t pulled, frontier;        /* imap: what was copied out */
};

/* An item that killed a worker: how often, and the last death's details. */
struct blame { size_t index; int tries, signal; pid_t pid; };

struct mp_pool_async {              /* a call: apply, map or imap */
	struct mp_pool *pool;           /* NULL once the pool is destroyed */
	struct mp_pool_async *prev, *next;
	int kind, refs;                 /* refs: the user + each live job */
	mp_pool_fn fn;
	bool user_freed, finished, submitted;
	bool shared_in, shared_out;     /* in the pool's heap: no copy */
	size_t n, item_size, result_size, chunk, win;
	void *results;                  /* map: caller's; apply: ours */
	mp_pool_callback cb;
	void *cb_arg;
	uint64_t first_seq;
	size_t njobs, jobs_done;
	struct mp_pool_error err;
	struct blame *blames;
	size_t nblames, capblames;
	/* iterators: their own copy of every result, and its code */
	char *ires;
	uint16_t *icode;
	uint8_t *iready;
	size_t *fifo;                   /* imap_unordered: completion order */
	size_t fifo_head, fifo_tail, cursor, delivered;
};

struct mp_pool_iter { struct mp_pool_async c; };

struct worker { pid_t pid; int pidfd; };

struct mp_pool {
	struct shared *sh;
	char *arena;
	size_t arena_bytes;
	int efd;                        /* workers -> parent wake-ups */
	int workers, retries;
	long maxtasks;
	void (*init)(void *);
	void *initargs;
	void (*fin)(void *);
	void *finargs;
	pid_t parent;
	struct worker w[MP_POOL_MAX_WORKERS];
	int nlive;
	int state;
	int broken;                     /* errno code once unusable, or 0 */
	int give_up;                    /* recovery asks mpp_progress() to
					 * cancel everything with this code */
	bool shutdown_sent, deferred, creating;
	int init_deaths;
	uint64_t head, tail;            /* jobs [head, tail) not retired */
	uint64_t safe_upto;             /* descriptors below: free to reuse */
	size_t a_head, a_tail;          /* arena ring, byte offsets */
	struct pjob *pj;
	int suspects;
	struct mp_pool_stats st;        /* of reaped workers + parent's */
	struct mp_pool_error last;
	struct mp_pool_async *calls;    /* every live call */
	/* mp_pool_alloc()'s heap: a memfd mapped in segments (a copy of
	 * sh->segs), a stack of blocks over them. */
	int hfd;
	uint32_t nsegs, cur;            /* segments; the one holding top */
	struct segment segs[MAX_SEGMENTS];
	size_t heap_max, heap_mapped;   /* cap (0: none); bytes mapped */
	uintptr_t heap_top, heap_last;  /* first free byte; top block (0:
					 * none) */
	int fork_err;                   /* why the last fork failed */
	int64_t fork_fail_since;        /* no worker and no fork since */
	/* mp_pool_fd(): an epoll set of efd, every worker's pidfd and a
	 * timer for what sends no wake-up; -1 until asked for. */
	int epfd, tfd;
	bool timer_armed;
	uint64_t finished;              /* calls finished so far */
	uint64_t scan;                  /* jobs below: known complete */
	int close_err;                  /* first failed close(), or 0 */
};

/* ---- small helpers ------------------------------------------------ */

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline size_t al(size_t n)
{
	return (n + LINE - 1) & ~(size_t)(LINE - 1);
}

static inline size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* Which heap segment holds [ptr, ptr + len)?  -1 if none does. */
static inline int heap_segment(const struct mp_pool *p, const void *ptr,
			       size_t len)
{
	uintptr_t a = (uintptr_t)ptr;

	for (uint32_t k = 0; ptr && k < p->nsegs; k++) {
		uintptr_t h = (uintptr_t)p->segs[k].addr;
		size_t n = p->segs[k].len;

		if (a >= h && a - h <= n && len <= n - (a - h))
			return (int)k;
	}
	return -1;
}

/* Does [ptr, ptr + len) lie in the pool's shared heap? */
static inline bool in_heap(const struct mp_pool *p, const void *ptr,
			   size_t len)
{
	return heap_segment(p, ptr, len) >= 0;
}

/* FUTEX_WAIT / FUTEX_WAKE without _PRIVATE: the word is in a mapping shared
 * between processes, so the kernel must key it by the page, not the mm. */
static inline void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT, val, NULL, NULL, 0);
}

static inline void futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* Flags in the arena are plain bytes; these give them atomic access
 * without declaring the whole arena _Atomic. */
static inline uint8_t flag_load(const uint8_t *f)
{
	return __atomic_load_n(f, __ATOMIC_ACQUIRE);
}

static inline void flag_store(uint8_t *f, uint8_t v)
{
	__atomic_store_n(f, v, __ATOMIC_RELEASE);
}

static inline struct job *ring_job(const struct mp_pool *p, uint64_t seq)
{
	return &p->sh->ring[seq % RING];
}

static inline struct pjob *ring_pjob(const struct mp_pool *p, uint64_t seq)
{
	return &p->pj[seq % RING];
}

/* Record item i's failure in the job (for imap also at its place); the
 * job keeps the lowest failing index. */
static inline void note_error(struct job *jb, uint64_t i, int code)
{
	uint64_t key = (i << CODE_BITS) | (uint64_t)code;
	uint64_t cur = atomic_load(&jb->err_key);

	if (jb->stream)
		jb->errs[i] = (uint16_t)code;
	while (key < cur && !atomic_compare_exchange_weak(&jb->err_key, &cur,
							  key))
		;
}

static inline void set_last(struct mp_pool *p, int code, bool task,
			    size_t index, int sig, pid_t pid)
{
	if (p)
		p->last = (struct mp_pool_error){ code, task, index, sig, pid };
	errno = code;
}

static inline int64_t deadline_of(double timeout_s)
{
	if (timeout_s < 0)
		return -1;
	if (timeout_s > 1e9)
		timeout_s = 1e9;
	return now_ns() + (int64_t)(timeout_s * 1e9);
}

/* Copy a window's items into the arena, or its results out to the caller.
 * Large copies bypass the cache (non-temporal stores): a copy the parent
 * makes runs while the workers wait for it, and a plain store first reads
 * every destination line in, only for the line to be evicted unread --
 * streaming them took a map of 2 million items with private arrays from
 * 0.32-0.44x OpenMP's speed to 0.52-0.59x at chunksize 250000.  (The data
 * goes to memory, where the worker or the caller reads it next anyway.)
 * Other machines, and small copies, use memcpy. */
static inline void copy_window(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__) && defined(__SSE2__)
	enum { STREAM_MIN = 64 << 10 };

	if (n >= STREAM_MIN) {
		char *d = dst;
		const char *s = src;
		size_t head = (16 - ((uintptr_t)d & 15)) & 15;  /* to align d */

		memcpy(d, s, head);
		d += head;
		s += head;
		n -= head;
		size_t whole = n & ~(size_t)63;

		for (size_t i = 0; i < whole; i += 64)
			for (int k = 0; k < 64; k += 16)
				_mm_stream_si128(
					(__m128i *)(void *)(d + i + k),
					_mm_loadu_si128((const __m128i *)
							(const void *)
							(s + i + k)));
		memcpy(d + whole, s + whole, n - whole);
		_mm_sfence();  /* before the job is published */
		return;
	}
#endif
	memcpy(dst, src, n);
}

/* ---- what crosses between the files (see the picture above) ------- */

/* mp_pool_worker.c: the child's life after fork(); never returns. */
_Noreturn void mpp_worker_main(const struct mp_pool *p, int i);

/* mp_pool_recovery.c: worker processes, seen from the parent. */
int mpp_spawn(struct mp_pool *p, int i);
void mpp_wake_workers(struct mp_pool *p, uint64_t chunks);
void mpp_handle_exit(struct mp_pool *p, int i);
void mpp_kill_workers(struct mp_pool *p);
void mpp_close_fd(struct mp_pool *p, int *fd);
bool mpp_audit(struct mp_pool *p, uint64_t j);

/* mp_pool_collect.c: finished jobs back to their calls; cancelling. */
bool mpp_job_complete(struct mp_pool *p, uint64_t j);
void mpp_complete_job(struct mp_pool *p, uint64_t j);
void mpp_complete_ready(struct mp_pool *p);
void mpp_collect(struct mp_pool *p);
bool mpp_entry_reusable(struct mp_pool *p, uint64_t old);
struct mp_pool_error mpp_item_error(const struct mp_pool_async *c,
				    size_t index, int code, bool task);
void mpp_finish_call(struct mp_pool_async *c);
void mpp_release_call(struct mp_pool_async *c);
void mpp_pull_window(struct mp_pool *p, struct mp_pool_async *c,
		     struct pjob *pj, bool all);
void mpp_cancel_all(struct mp_pool *p, int code);
void mpp_fail_outstanding(struct mp_pool *p, int code);

/* mp_pool_wait.c: bookkeeping, waiting, the event loop's descriptor. */
typedef bool (*mpp_cond)(struct mp_pool *p, void *arg);
void mpp_progress(struct mp_pool *p);
int mpp_sleep_once(struct mp_pool *p, int64_t wait);
int mpp_wait_until(struct mp_pool *p, mpp_cond cond, void *arg,
		   int64_t deadline);
void mpp_fd_arm(struct mp_pool *p);

/* mp_pool_submit.c: calls into jobs. */
int mpp_submit(struct mp_pool *p, struct mp_pool_async *c, size_t base,
	       size_t n, const char *items);
struct mp_pool_async *mpp_new_call(struct mp_pool *p, int kind,
				   mp_pool_fn fn, size_t n, size_t isz,
				   size_t rsz, size_t chunk, size_t size);
void mpp_mark_submitted(struct mp_pool_async *c);
bool mpp_usable(struct mp_pool *p);
bool mpp_check_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
		   size_t n, size_t isz, const void *results, size_t rsz,
		   bool stream);
struct mp_pool_async *mpp_map_call(struct mp_pool *p, int kind,
				   mp_pool_fn fn, const void *items, size_t n,
				   size_t isz, void *results, size_t rsz,
				   size_t chunk, size_t size);
void mpp_submit_windows(struct mp_pool *p, struct mp_pool_async *c,
			const char *items);

/* mp_pool_heap.c (beside mp_pool.c): map a segment; unmap them all. */
int mpp_heap_grow(struct mp_pool *p, size_t need);
int mpp_heap_release(struct mp_pool *p);

#endif
