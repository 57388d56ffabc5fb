/* lib/mp_pool.c -- see mp_pool.h
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
 *  flags[]     one byte per item in the arena, set when its result is
 *              written: the authoritative record of what is done (imap
 *              reads it to stream results, recovery reads it after a death).
 *  slots[]     one per worker, on its own cache lines: which job and chunk
 *              it holds.  When a worker dies the parent reads its slot: the
 *              item it was running is the first one of that chunk without
 *              a flag (items run in order, and no other worker runs that
 *              chunk).  That item is blamed for the death; after `retries`
 *              more deaths it is given up (flag 2, error EOWNERDEAD).
 *
 * Completion without deaths: each worker adds the items it finished in a job
 * to job.done_items when it leaves the job; done_items == n means done.  A
 * dead worker's count is lost, so after a death every outstanding job is
 * "suspect" and is audited instead: once its chunks are all claimed and no
 * live worker holds it, the parent scans its flags; the missing items (the
 * rest of the dead worker's chunk) are run again by reopening the same job
 * (next rewound; workers skip items already flagged).
 *
 * Protocol between parent and workers on a descriptor (Dekker-style, every
 * access seq_cst): a worker first stores slot.job = j, then reads job.seq;
 * the parent, before it audits or recycles job j, stores job.seq = j|AUDIT
 * (or RETIRED), then reads every slot.job.  Either the worker sees the mark
 * and backs off, or the parent sees the worker and waits for it.  Sleeping
 * uses the same pattern twice: a worker counts itself in `sleepers` before
 * its last look for work, the parent publishes work before it reads
 * `sleepers`; the parent sets `parent_waiting` before its last look at the
 * jobs, a worker finishes a job before it reads `parent_waiting`.
 */
#define _GNU_SOURCE
#include "mp_pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { LINE = 64 };
#define RING 4096u                        /* job descriptors in flight */
#define NONE UINT64_MAX                   /* no job / no chunk */
#define AUDIT_BIT (UINT64_C(1) << 62)     /* job.seq while being audited */
#define RETIRED (UINT64_C(1) << 63)       /* job.seq once finished */
#define NO_ERR UINT64_MAX                 /* job.err_key: no failure */
#define CODE_BITS 12                      /* error codes 1..4095 */
#define CODE_MASK ((UINT64_C(1) << CODE_BITS) - 1)
#define DEFAULT_ARENA ((size_t)128 << 20)
#define DEFAULT_HEAP ((size_t)256 << 20)
#define HEAP_MAGIC UINT64_C(0x6d70706f6f6c6862)  /* a used block */
#define HEAP_FREE UINT64_C(0x6d70706f6f6c6666)   /* a freed one */
#define MIN_ARENA ((size_t)1 << 20)
#define WINDOW_CAP ((size_t)2 << 20)      /* bytes per map window, ideally */
#define SPIN_NS 20000                     /* spin this long before sleeping */
#define RECHECK_NS 1000000                /* poll timeout while waiting on
					   * something that sends no wake-up */

/* slot.state; RETIRING: leaves after maxtasksperchild, LEAVING: at join */
enum { S_FREE, S_STARTING, S_READY, S_RETIRING, S_LEAVING };
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
	mp_pool_fn fn;
	uint64_t n, chunk, item_size, result_size;
	/* Absolute addresses: the arena and the heap are mapped before the
	 * first fork, so they are at the same address in every worker. */
	const char *in;
	char *out;
	uint8_t *flags;
	uint16_t *errs;                       /* imap: each item's code */
	bool stream;                          /* imap: publish every chunk */
};

struct slot {
	alignas(2 * LINE) _Atomic uint64_t job;  /* job held, or NONE */
	_Atomic uint64_t chunk;                  /* chunk running, or NONE */
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
	char *heap;                     /* mp_pool_alloc()'s shared blocks */
	size_t heap_bytes;
	size_t heap_top, heap_last;     /* first free byte; top block (or
					 * SIZE_MAX) */
};

/* ---- small helpers ------------------------------------------------ */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static size_t al(size_t n)
{
	return (n + LINE - 1) & ~(size_t)(LINE - 1);
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* Does [ptr, ptr + len) lie in the pool's shared heap? */
static bool in_heap(const struct mp_pool *p, const void *ptr, size_t len)
{
	uintptr_t a = (uintptr_t)ptr, h = (uintptr_t)p->heap;

	return ptr && a >= h && a - h <= p->heap_bytes &&
	       len <= p->heap_bytes - (a - h);
}

/* FUTEX_WAIT / FUTEX_WAKE without _PRIVATE: the word is in a mapping shared
 * between processes, so the kernel must key it by the page, not the mm. */
static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
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

static struct job *ring_job(const struct mp_pool *p, uint64_t seq)
{
	return &p->sh->ring[seq % RING];
}

static struct pjob *ring_pjob(const struct mp_pool *p, uint64_t seq)
{
	return &p->pj[seq % RING];
}

/* Record item i's failure in the job (for imap also at its place); the
 * job keeps the lowest failing index. */
static void note_error(struct job *jb, uint64_t i, int code)
{
	uint64_t key = (i << CODE_BITS) | (uint64_t)code;
	uint64_t cur = atomic_load(&jb->err_key);

	if (jb->stream)
		jb->errs[i] = (uint16_t)code;
	while (key < cur && !atomic_compare_exchange_weak(&jb->err_key, &cur,
							  key))
		;
}

static void set_last(struct mp_pool *p, int code, bool task, size_t index,
		     int sig, pid_t pid)
{
	if (p)
		p->last = (struct mp_pool_error){ code, task, index, sig, pid };
	errno = code;
}

/* ---- the worker --------------------------------------------------- */

/* Wake the parent if it sleeps in poll() waiting for progress. */
static void wake_parent(const struct mp_pool *p)
{
	static const uint64_t one = 1;

	if (atomic_load(&p->sh->parent_waiting) &&
	    atomic_exchange(&p->sh->parent_waiting, 0)) {
		ssize_t r = write(p->efd, &one, sizeof one);

		(void)r;  /* EAGAIN: the counter is already non-zero */
	}
}

static bool has_work(const struct shared *sh)
{
	return atomic_load(&sh->first_open) < atomic_load(&sh->tail);
}

/* Nothing to do: spin a little (the next task often comes within
 * microseconds), then sleep in the kernel.  Returns true on shutdown. */
static bool worker_idle(const struct mp_pool *p)
{
	struct shared *sh = p->sh;
	int64_t until = now_ns() + SPIN_NS;

	/* Spin, but yield the CPU at each turn: with more processes than
	 * cores, a pure spin would steal the time the parent needs to submit
	 * the next task. */
	do {
		for (int i = 0; i < 16; i++) {
			if (has_work(sh))
				return false;
			cpu_relax();
		}
		if (atomic_load(&sh->shutdown))
			return true;
		sched_yield();
	} while (now_ns() < until);

	/* Read the futex word before the last look: a wake-up that comes
	 * after it changes the word, and FUTEX_WAIT then returns at once. */
	uint32_t seq = atomic_load(&sh->wake_seq);

	atomic_fetch_add(&sh->sleepers, 1);
	atomic_store(&sh->wake_pending, 0);  /* this sleeper needs a new one */
	if (!has_work(sh) && !atomic_load(&sh->shutdown)) {
		futex_wait(&sh->wake_seq, seq);  /* EINTR, EAGAIN: look again */
		atomic_store(&sh->wake_pending, 0);  /* let the next one come */
	}
	atomic_fetch_sub(&sh->sleepers, 1);
	return !has_work(sh) && atomic_load(&sh->shutdown);
}

struct held { uint64_t job, mine; };

/* Stop holding a job: publish what was done in it, then clear the slot,
 * then wake the parent (it may be waiting for this job or for the slot). */
static void leave(const struct mp_pool *p, struct slot *me, struct held *h)
{
	if (h->job == NONE)
		return;
	if (h->mine)
		atomic_fetch_add(&ring_job(p, h->job)->done_items, h->mine);
	h->mine = 0;
	atomic_store(&me->chunk, NONE);
	atomic_store(&me->job, NONE);
	h->job = NONE;
	wake_parent(p);
}

/* Run the items of chunk k that have no flag yet (all of them, unless the
 * chunk is run again after a death); returns how many it ran. */
static uint64_t run_chunk(struct slot *me, struct job *jb, uint64_t k)
{
	uint64_t start = k * jb->chunk;
	uint64_t cnt = jb->n - start < jb->chunk ? jb->n - start : jb->chunk;
	size_t isz = jb->item_size, rsz = jb->result_size;
	const char *a = jb->in + start * isz;
	char *r = jb->out + start * rsz;
	uint8_t *f = jb->flags + start, *end = f + cnt;
	mp_pool_fn fn = jb->fn;  /* a local: stays in a register */
	uint64_t ran = 0;

	/* The chunk, not the item, is recorded: if this worker dies, the
	 * item it was running is the chunk's first one without a flag. */
	atomic_store_explicit(&me->chunk, k, memory_order_relaxed);
	for (; f < end; f++, a += isz, r += rsz) {
		if (flag_load(f))
			continue;
		int rc = fn(a, r);

		if (rc)
			note_error(jb, (uint64_t)(f - jb->flags),
				   rc >= 1 && rc <= (int)CODE_MASK ? rc : ERANGE);
		flag_store(f, 1);
		ran++;
	}
	atomic_store_explicit(&me->tasks,
			      atomic_load_explicit(&me->tasks,
						   memory_order_relaxed) + ran,
			      memory_order_relaxed);
	return ran;
}

/* The worker's life: claim chunks of the oldest open job until there is
 * none, sleep, repeat.  Returns false on shutdown, true after
 * maxtasksperchild. */
static bool worker_loop(const struct mp_pool *p, struct slot *me)
{
	struct shared *sh = p->sh;
	struct held h = { NONE, 0 };
	long done_chunks = 0;
	uint64_t tail = 0;  /* last value read: the line is the parent's */

	for (;;) {
		uint64_t j = atomic_load(&sh->first_open);

		if (j >= tail)
			tail = atomic_load(&sh->tail);
		if (j >= tail) {
			leave(p, me, &h);
			if (worker_idle(p))
				return false;
			continue;
		}
		struct job *jb = ring_job(p, j);

		if (h.job != j) {
			leave(p, me, &h);
			atomic_store(&me->job, j);
			h.job = j;
		}
		uint64_t s = atomic_load(&jb->seq);

		if (s != j) {
			/* Being audited: wait.  Retired (or already reused):
			 * it is finished, so move first_open past it. */
			leave(p, me, &h);
			if (s == (j | AUDIT_BIT))
				sched_yield();
			else
				atomic_compare_exchange_strong(&sh->first_open,
							       &j, j + 1);
			continue;
		}
		uint64_t k = atomic_fetch_add(&jb->next, 1);
		uint64_t end = atomic_load(&jb->end_unit);

		if (k >= end) {
			/* Exhausted: advance first_open while still holding
			 * j, so that an audit cannot rewind it in between. */
			atomic_compare_exchange_strong(&sh->first_open, &j,
						       j + 1);
			leave(p, me, &h);
			continue;
		}
		h.mine += run_chunk(me, jb, k);
		done_chunks++;
		if (k + 1 == end) {  /* took the last chunk: nothing left */
			atomic_compare_exchange_strong(&sh->first_open, &j,
						       j + 1);
			leave(p, me, &h);
		} else if (jb->stream && h.mine) {
			atomic_fetch_add(&jb->done_items, h.mine);
			h.mine = 0;
			wake_parent(p);
		}
		if (p->maxtasks && done_chunks >= p->maxtasks) {
			leave(p, me, &h);
			return true;
		}
	}
}

static _Noreturn void worker_main(const struct mp_pool *p, int i)
{
	struct slot *me = &p->sh->slots[i];

	/* Die with the parent: a worker never outlives a crashed caller. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != p->parent)
		_exit(127);
	for (int k = 0; k < p->workers; k++)
		if (p->w[k].pid > 0)
			close(p->w[k].pidfd);  /* the siblings' pidfds */
	if (p->init)
		p->init(p->initargs);
	atomic_store(&me->state, S_READY);
	wake_parent(p);
	bool retiring = worker_loop(p, me);

	if (p->fin)
		p->fin(p->finargs);
	fflush(stdout);  /* what the tasks printed; the parent's was flushed
			  * before fork, so nothing is printed twice */
	fflush(stderr);
	atomic_store(&me->state, retiring ? S_RETIRING : S_LEAVING);
	_exit(0);  /* the parent learns it from the worker's pidfd */
}

/* ---- the parent: workers ------------------------------------------ */

static int spawn(struct mp_pool *p, int i)
{
	struct slot *s = &p->sh->slots[i];

	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->tasks, 0);
	atomic_store(&s->state, S_STARTING);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();

	if (pid == -1) {
		atomic_store(&s->state, S_FREE);
		return -1;
	}
	if (pid == 0)
		worker_main(p, i);
	int fd = pidfd_open(pid, 0);

	if (fd == -1) {
		int e = errno;

		kill(pid, SIGKILL);  /* not reaped yet: the pid is still ours */
		while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
			;
		atomic_store(&s->state, S_FREE);
		errno = e;
		return -1;
	}
	p->w[i] = (struct worker){ pid, fd };
	p->nlive++;
	p->st.workers_started++;
	return 0;
}

/* Wake sleeping workers for a job of `chunks` chunks.  One chunk needs one
 * worker: while an earlier wake-up is still on its way to one (it will run
 * this job too), skip the system call -- apply_async submits in a loop. */
static void wake_workers(struct mp_pool *p, uint64_t chunks)
{
	struct shared *sh = p->sh;

	if (!atomic_load(&sh->sleepers) ||
	    (chunks == 1 && atomic_load(&sh->wake_pending)))
		return;
	atomic_store(&sh->wake_pending, 1);
	atomic_fetch_add(&sh->wake_seq, 1);
	futex_wake(&sh->wake_seq, chunks > INT_MAX ? INT_MAX : (int)chunks);
}

static void cancel_all(struct mp_pool *p, int code);

static struct blame *find_blame(struct mp_pool_async *c, size_t index)
{
	for (size_t i = 0; i < c->nblames; i++)
		if (c->blames[i].index == index)
			return &c->blames[i];
	if (c->nblames == c->capblames) {
		size_t cap = c->capblames ? 2 * c->capblames : 4;
		struct blame *b = realloc(c->blames, cap * sizeof *b);

		if (!b)
			return NULL;
		c->blames = b;
		c->capblames = cap;
	}
	c->blames[c->nblames] = (struct blame){ index, 0, 0, 0 };
	return &c->blames[c->nblames++];
}

/* A worker died running chunk k of job j.  The item it was running is the
 * chunk's first one without a flag: count the death against it, and after
 * `retries` re-runs give it up (flag 2, EOWNERDEAD) instead of running it
 * again.  The rest of the chunk is re-run by the job's audit. */
static void blame(struct mp_pool *p, uint64_t j, uint64_t k, int sig,
		  pid_t pid)
{
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);
	uint64_t i = k * jb->chunk, end = min_sz(i + jb->chunk, jb->n);

	while (i < end && flag_load(&jb->flags[i]))
		i++;
	if (i >= end)
		return;  /* it died between two items: nobody to blame */
	struct blame *b = find_blame(pj->call, pj->base + i);

	if (!b)
		return;  /* ENOMEM: the item is simply run again */
	b->signal = sig;
	b->pid = pid;
	if (++b->tries > p->retries) {
		note_error(jb, i, EOWNERDEAD);
		flag_store(&jb->flags[i], 2);
	}
}

/* A worker's pidfd became readable: it has exited.  Reap it and learn
 * from its slot what it was doing. */
static void handle_exit(struct mp_pool *p, int i)
{
	struct slot *s = &p->sh->slots[i];
	pid_t pid = p->w[i].pid;
	int status = 0;
	pid_t r;

	while ((r = waitpid(pid, &status, 0)) == -1 && errno == EINTR)
		;
	close(p->w[i].pidfd);
	p->w[i] = (struct worker){ 0, -1 };
	p->nlive--;
	p->st.tasks += atomic_load(&s->tasks);

	int state = atomic_load(&s->state);
	bool normal = (state == S_LEAVING || state == S_RETIRING) &&
		(r == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0));

	if (normal) {
		if (state == S_RETIRING)
			p->st.workers_retired++;
	} else {
		uint64_t j = atomic_load(&s->job), k = atomic_load(&s->chunk);

		p->st.workers_died++;
		p->init_deaths = state == S_STARTING ? p->init_deaths + 1 : 0;
		if (j >= p->head && j < p->tail && k != NONE &&
		    !ring_pjob(p, j)->complete)
			blame(p, j, k, r == pid && WIFSIGNALED(status) ?
				WTERMSIG(status) : 0, pid);
		/* Every job in flight may now miss a chunk: audit them. */
		for (uint64_t q = p->head; q < p->tail; q++) {
			struct pjob *pj = ring_pjob(p, q);

			if (!pj->complete && !pj->suspect) {
				pj->suspect = true;
				p->suspects++;
			}
		}
		/* It may have taken a wake-up meant for the others with it. */
		atomic_store(&p->sh->wake_pending, 0);
		wake_workers(p, (uint64_t)p->workers);
	}
	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->state, S_FREE);

	/* progress() forks the replacement, unless the replacements keep
	 * dying in their initializer: then give up rather than fork forever. */
	if (!normal && state == S_STARTING && !p->creating &&
	    p->init_deaths > p->retries + 1)
		cancel_all(p, ECHILD);
}

/* ---- the parent: jobs --------------------------------------------- */

static void finish_call(struct mp_pool_async *c);
static void release_call(struct mp_pool_async *c);
static void pull_window(struct mp_pool *p, struct mp_pool_async *c,
			struct pjob *pj, bool all);

/* A suspect job (a worker died while it was in flight): once its chunks
 * are all claimed and no live worker holds it, find what is missing and
 * either declare it complete or reopen it for the missing items. */
static bool audit(struct mp_pool *p, uint64_t j)
{
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);

	if (atomic_load(&jb->next) < atomic_load(&jb->end_unit))
		return false;  /* live workers still have chunks to take */
	atomic_store(&jb->seq, j | AUDIT_BIT);
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0 &&
		    atomic_load(&p->sh->slots[i].job) == j) {
			atomic_store(&jb->seq, j);
			p->deferred = true;  /* it lets go in a moment */
			return false;
		}

	/* Nobody touches job j now. */
	size_t lo = SIZE_MAX, hi = 0, missing = 0;

	for (size_t i = 0; i < pj->n; i++)
		if (!flag_load(&jb->flags[i])) {
			if (lo == SIZE_MAX)
				lo = i;
			hi = i + 1;
			missing++;
		}
	if (!missing) {
		atomic_store(&jb->seq, j);
		return true;
	}
	p->st.retried_items += missing;
	atomic_store(&jb->end_unit, (hi - 1) / jb->chunk + 1);
	atomic_store(&jb->next, lo / jb->chunk);
	atomic_store(&jb->seq, j);
	uint64_t cur = atomic_load(&p->sh->first_open);

	while (cur > j &&
	       !atomic_compare_exchange_weak(&p->sh->first_open, &cur, j))
		;
	wake_workers(p, (hi - 1) / jb->chunk + 1 - lo / jb->chunk);
	return false;
}

static bool job_complete(struct mp_pool *p, uint64_t j)
{
	struct pjob *pj = ring_pjob(p, j);

	if (pj->complete)
		return true;
	if (atomic_load(&ring_job(p, j)->done_items) >= pj->n)
		return true;
	return pj->suspect && audit(p, j);
}

/* The error of item index (or the pool's own), for a call's report. */
static struct mp_pool_error item_error(const struct mp_pool_async *c,
				       size_t index, int code, bool task)
{
	struct mp_pool_error e = { code, task, index, 0, 0 };

	for (size_t i = 0; code == EOWNERDEAD && i < c->nblames; i++)
		if (c->blames[i].index == index) {
			e.signal = c->blames[i].signal;
			e.pid = c->blames[i].pid;
		}
	return e;
}

/* Job j is complete: hand its results to its call. */
static void complete_job(struct mp_pool *p, uint64_t j)
{
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);
	struct mp_pool_async *c = pj->call;

	pj->complete = true;
	if (pj->suspect) {
		pj->suspect = false;
		p->suspects--;
	}
	if (c->kind == K_MAP && c->result_size && !c->shared_out)
		memcpy((char *)c->results + pj->base * c->result_size,
		       jb->out, pj->n * c->result_size);
	else if (c->kind == K_APPLY && c->result_size)
		memcpy(c->results, jb->out, c->result_size);
	uint64_t key = atomic_load(&jb->err_key);
	size_t index = pj->base + (key >> CODE_BITS);

	/* Keep the lowest failing index, unless the call was cancelled. */
	if (key != NO_ERR && c->kind <= K_MAP &&
	    (!c->err.code || (c->err.task && index < c->err.index)))
		c->err = item_error(c, index, (int)(key & CODE_MASK), true);
	if (++c->jobs_done == c->njobs && c->submitted)
		finish_call(c);
}

/* Job j is over: mark its descriptor retired (a worker that still looks
 * at it backs off; entry_reusable() makes sure none does before the
 * descriptor is filled again) and release the arena it used. */
static void retire(struct mp_pool *p, uint64_t j)
{
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);

	/* Ordered before entry_reusable()'s look at the slots by its fence. */
	atomic_store_explicit(&jb->seq, RETIRED, memory_order_release);
	if (pj->call->kind >= K_IMAP && !pj->call->user_freed)
		pull_window(p, pj->call, pj, true);
	if (pj->suspect) {
		pj->suspect = false;
		p->suspects--;
	}
	release_call(pj->call);
	pj->call = NULL;
	p->head++;
	if (p->head == p->tail)
		p->a_head = p->a_tail = 0;  /* empty: reuse the warm pages */
	else
		p->a_head = ring_pjob(p, p->head)->arena_begin;
}

/* May the descriptor of retired job old be filled again?  Every job below
 * head is marked RETIRED, so only a worker that still holds one (read
 * first_open before the mark) could touch it: look at the slots, and
 * remember the answer for every job below the lowest one held. */
static bool entry_reusable(struct mp_pool *p, uint64_t old)
{
	if (old < p->safe_upto)
		return true;
	uint64_t lowest = p->head;

	atomic_thread_fence(memory_order_seq_cst);  /* RETIRED marks first */
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0) {
			uint64_t v = atomic_load(&p->sh->slots[i].job);

			if (v < lowest)
				lowest = v;
		}
	p->safe_upto = lowest;
	if (old < lowest)
		return true;
	p->deferred = true;  /* it lets go in a moment: poll again soon */
	return false;
}

/* Deliver finished jobs in order and retire them. */
static void collect(struct mp_pool *p)
{
	while (p->head != p->tail) {
		uint64_t j = p->head;

		if (!ring_pjob(p, j)->complete) {
			if (!job_complete(p, j))
				break;
			complete_job(p, j);
		}
		retire(p, j);
	}
}

/* Everything the parent does whenever it enters the pool: audit, deliver
 * and retire jobs, and fork a worker for every empty slot. */
static void progress(struct mp_pool *p)
{
	if (p->suspects)
		for (uint64_t q = p->head; q < p->tail; q++) {
			struct pjob *pj = ring_pjob(p, q);

			if (pj->suspect && !pj->complete && audit(p, q))
				complete_job(p, q);
		}
	collect(p);
	if (p->nlive < p->workers && !p->shutdown_sent && !p->creating &&
	    (p->state == P_RUNNING || p->state == P_CLOSED))
		for (int i = 0; i < p->workers; i++)
			if (p->w[i].pid <= 0 && spawn(p, i) == -1)
				break;
}

/* Sleep in ppoll() on the eventfd and every worker's pidfd for at most
 * wait ns (negative: no limit), then reap the workers that exited. */
static int sleep_once(struct mp_pool *p, int64_t wait)
{
	struct pollfd pfd[MP_POOL_MAX_WORKERS + 1];
	int slot[MP_POOL_MAX_WORKERS + 1], n = 0;

	pfd[n++] = (struct pollfd){ .fd = p->efd, .events = POLLIN };
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0) {
			slot[n] = i;
			pfd[n++] = (struct pollfd){ .fd = p->w[i].pidfd,
						    .events = POLLIN };
		}
	struct timespec ts = { wait / 1000000000, wait % 1000000000 };
	int r = ppoll(pfd, (nfds_t)n, wait < 0 ? NULL : &ts, NULL);

	if (r == -1)
		return errno == EINTR ? 0 : -1;  /* a handler ran: look again */
	for (int k = 1; k < n && r > 0; k++)
		if (pfd[k].revents && p->w[slot[k]].pid > 0)
			handle_exit(p, slot[k]);
	if (pfd[0].revents) {
		uint64_t v;
		ssize_t rr = read(p->efd, &v, sizeof v);

		(void)rr;  /* EAGAIN: someone drained it */
	}
	return 0;
}

/* Wait until cond() holds, running progress() meanwhile: spin briefly,
 * then sleep in ppoll().  deadline is in now_ns() time, or negative for
 * none.  Even a deadline already past gets one look at the pidfds, so a
 * caller that polls (ready(), get() with timeout 0) sees dead workers
 * replaced and their items run again.  0, or -1 with ETIMEDOUT. */
static int wait_until(struct mp_pool *p,
		      bool (*cond)(struct mp_pool *, void *), void *arg,
		      int64_t deadline)
{
	int64_t spin_until = now_ns() + SPIN_NS;
	bool armed = false, polled = false;
	int rc = 0;

	for (;;) {
		progress(p);
		if (cond(p, arg))
			break;
		int64_t now = now_ns();
		bool late = deadline >= 0 && now >= deadline;

		if (late && polled) {
			errno = ETIMEDOUT;
			rc = -1;
			break;
		}
		if (!late && now < spin_until && !p->deferred) {
			for (int i = 0; i < 64; i++)
				cpu_relax();
			sched_yield();  /* a worker may need this CPU */
			continue;
		}
		if (!armed) {
			/* Ask for a wake-up, then look once more: a worker
			 * that finished in between has seen the request. */
			atomic_store(&p->sh->parent_waiting, 1);
			armed = true;
			continue;
		}
		armed = false;

		int64_t wait = deadline < 0 ? -1 : late ? 0 : deadline - now;

		/* Things that send no wake-up: a worker about to let go of
		 * a job (deferred), a worker that could not be forked. */
		if ((p->deferred || p->nlive < p->workers) &&
		    (wait < 0 || wait > RECHECK_NS))
			wait = RECHECK_NS;
		p->deferred = false;
		if (sleep_once(p, wait) == -1) {
			rc = -1;
			break;
		}
		polled = true;
	}
	atomic_store(&p->sh->parent_waiting, 0);
	return rc;
}

/* Room for a job of need arena bytes: a free descriptor and space in the
 * arena (a ring: used from a_head to a_tail, possibly wrapped)?  With
 * off, also take it. */
static bool arena_alloc(struct mp_pool *p, size_t need, size_t *off)
{
	size_t at;

	if (p->tail - p->head >= RING ||
	    (p->tail >= RING && !entry_reusable(p, p->tail - RING)))
		return false;
	if (p->head == p->tail)
		p->a_head = p->a_tail = 0;
	if (p->a_tail >= p->a_head) {
		if (p->arena_bytes - p->a_tail >= need)
			at = p->a_tail;
		else if (p->a_head > need)
			at = 0;
		else
			return false;
	} else if (p->a_head - p->a_tail > need) {
		at = p->a_tail;
	} else {
		return false;
	}
	if (off) {
		*off = at;
		p->a_tail = at + need;
	}
	return true;
}

static bool cond_room(struct mp_pool *p, void *arg)
{
	return p->broken || p->state == P_TERMINATED ||
	       arena_alloc(p, *(size_t *)arg, NULL);
}

/* Publish one job: items [base, base + n) of call c. */
static int submit(struct mp_pool *p, struct mp_pool_async *c, size_t base,
		  size_t n, const char *items)
{
	size_t isz = c->item_size, rsz = c->result_size;
	bool stream = c->kind >= K_IMAP;
	size_t in = c->shared_in ? 0 : al(n * isz);
	size_t out = c->shared_out ? 0 : al(n * rsz), fl = al(n);
	size_t need = in + out + fl + (stream ? al(2 * n) : 0);
	size_t off;

	for (;;) {
		/* Checked before each try: a wait for room may end with the
		 * pool terminated, its ring empty, and no worker left. */
		if (p->broken || p->state == P_TERMINATED) {
			errno = p->broken ? p->broken : ECANCELED;
			return -1;
		}
		if (arena_alloc(p, need, &off))
			break;
		if (wait_until(p, cond_room, &need, -1) == -1)
			return -1;
	}
	uint64_t j = p->tail;
	struct job *jb = ring_job(p, j);
	size_t chunk = min_sz(c->chunk, n);
	char *a = p->arena + off;

	if (!c->shared_in && n && isz)
		memcpy(a, items, n * isz);
	memset(a + in + out, 0, stream ? fl + 2 * n : n);
	jb->fn = c->fn;
	jb->n = n;
	jb->chunk = chunk;
	jb->in = c->shared_in ? items : a;
	jb->out = c->shared_out ? (char *)c->results + base * rsz : a + in;
	jb->flags = (uint8_t *)(a + in + out);
	jb->errs = (uint16_t *)(a + in + out + fl);
	jb->item_size = isz;
	jb->result_size = rsz;
	jb->stream = stream;
	atomic_store_explicit(&jb->end_unit, (n + chunk - 1) / chunk,
			      memory_order_relaxed);
	atomic_store_explicit(&jb->next, 0, memory_order_relaxed);
	atomic_store_explicit(&jb->done_items, 0, memory_order_relaxed);
	atomic_store_explicit(&jb->err_key, NO_ERR, memory_order_relaxed);
	atomic_store(&jb->seq, j);  /* publishes the fields above */
	*ring_pjob(p, j) = (struct pjob){ .call = c, .seq = j, .base = base,
					  .n = n, .arena_begin = off };
	c->refs++;
	if (p->head == p->tail)
		p->a_head = off;
	p->tail = j + 1;
	atomic_store(&p->sh->tail, j + 1);
	wake_workers(p, (n + chunk - 1) / chunk);
	return 0;
}

/* ---- calls -------------------------------------------------------- */

static void release_call(struct mp_pool_async *c)
{
	if (--c->refs)
		return;
	if (c->pool) {
		if (c->prev)
			c->prev->next = c->next;
		else
			c->pool->calls = c->next;
		if (c->next)
			c->next->prev = c->prev;
	}
	free(c->blames);
	free(c->ires);
	free(c->icode);
	free(c->iready);
	free(c->fifo);
	free(c);
}

static void finish_call(struct mp_pool_async *c)
{
	c->finished = true;
	if (!c->cb)
		return;
	c->refs++;  /* the callback may free the handle */
	if (c->err.code)
		c->cb(c->cb_arg, NULL, &c->err);
	else
		c->cb(c->cb_arg, c->results, NULL);
	release_call(c);
}

/* size: bytes to allocate, at least sizeof *c (apply's result buffer
 * comes after it). */
static struct mp_pool_async *new_call(struct mp_pool *p, int kind,
				      mp_pool_fn fn, size_t n, size_t isz,
				      size_t rsz, size_t chunk, size_t size)
{
	struct mp_pool_async *c = calloc(1, size);

	if (!c) {
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	c->pool = p;
	c->kind = kind;
	c->refs = 1;
	c->fn = fn;
	c->n = n;
	c->item_size = isz;
	c->result_size = rsz;
	c->chunk = chunk;
	c->first_seq = p->tail;
	c->err.index = MP_POOL_NO_INDEX;
	c->next = p->calls;
	if (p->calls)
		p->calls->prev = c;
	p->calls = c;
	return c;
}

static void mark_submitted(struct mp_pool_async *c)
{
	c->submitted = true;
	if (c->jobs_done == c->njobs && !c->finished)
		finish_call(c);
}

/* May the pool take new work?  (Sets EINVAL or its fatal error if not.) */
static bool usable(struct mp_pool *p)
{
	if (p->broken || p->state != P_RUNNING) {
		set_last(p, p->broken ? p->broken : EINVAL, false,
			 MP_POOL_NO_INDEX, 0, 0);
		return false;
	}
	return true;
}

/* Checks common to map and imap; false after setting EINVAL.  Items per
 * window: at least one chunk, about WINDOW_CAP bytes (so that copying the
 * next window in overlaps with running this one), never more than a
 * quarter of the arena.  May shrink *chunk to fit. */
static bool check_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
		      size_t n, size_t isz, const void *results, size_t rsz,
		      bool stream)
{
	size_t per = isz + rsz + 1 + (stream ? 2 : 0);

	if (!fn || isz == 0 || (n && !items) ||
	    (n && rsz && !results && !stream) ||
	    isz > p->arena_bytes || rsz > p->arena_bytes ||
	    per + 4 * LINE > p->arena_bytes / 16 ||
	    (n && n > SIZE_MAX / per)) {
		set_last(p, EINVAL, false, MP_POOL_NO_INDEX, 0, 0);
		return false;
	}
	return usable(p);
}

/* A map or imap call, not yet submitted.  A map larger than WINDOW_CAP
 * bytes runs as several jobs ("windows") of whole chunks, so that copying
 * the next window in overlaps with running this one; a window never takes
 * more than a quarter of the arena (chunk shrinks to fit if need be). */
static struct mp_pool_async *map_call(struct mp_pool *p, int kind,
				      mp_pool_fn fn, const void *items,
				      size_t n, size_t isz, void *results,
				      size_t rsz, size_t chunk, size_t size)
{
	bool sin = n && in_heap(p, items, n * isz);
	bool sout = n && rsz && kind == K_MAP && in_heap(p, results, n * rsz);
	size_t per = (sin ? 0 : isz) + (sout ? 0 : rsz) + 1 +
		(kind >= K_IMAP ? 2 : 0);
	size_t max = (p->arena_bytes / 4) / per, win = WINDOW_CAP / per;

	chunk = min_sz(chunk, max);
	win = win > chunk ? win - win % chunk : chunk;
	if (win > max)
		win = max - max % chunk;

	struct mp_pool_async *c = new_call(p, kind, fn, n, isz, rsz, chunk,
					   size);

	if (!c)
		return NULL;
	c->shared_in = sin;
	c->shared_out = sout;
	c->results = results;
	c->win = win;
	c->njobs = (n + win - 1) / win;
	return c;
}

/* Submit a map or imap call's windows, then let it finish.  If the pool
 * breaks or is terminated meanwhile, the rest of the call fails. */
static void submit_windows(struct mp_pool *p, struct mp_pool_async *c,
			   const char *items)
{
	size_t n = c->n, win = c->win;

	progress(p);
	for (size_t base = 0, w = 0; w < c->njobs; w++, base += win) {
		if (submit(p, c, base, min_sz(n - base, win),
			   items + base * c->item_size) == 0)
			continue;
		c->njobs = w;
		if (c->kind == K_MAP)
			c->err = (struct mp_pool_error){ errno, false,
				MP_POOL_NO_INDEX, 0, 0 };
		for (size_t i = base; c->kind >= K_IMAP && i < n; i++) {
			c->icode[i] = (uint16_t)errno;
			c->iready[i] = 1;
			if (c->fifo)
				c->fifo[c->fifo_tail++] = i;
		}
		break;
	}
	mark_submitted(c);
}

/* ---- imap: copying results out of the arena ----------------------- */

static void take(struct mp_pool_async *c, struct pjob *pj, struct job *jb,
		 size_t i)
{
	size_t g = pj->base + i;

	if (flag_load(&jb->flags[i])) {
		if (c->result_size)
			memcpy(c->ires + g * c->result_size,
			       jb->out + i * c->result_size, c->result_size);
		c->icode[g] = jb->errs[i];
	} else {
		c->icode[g] = ECANCELED;  /* retired unfinished: terminate */
	}
	c->iready[g] = 1;
	if (c->kind == K_IMAP_UNORDERED)
		c->fifo[c->fifo_tail++] = g;
}

/* Copy what is ready in one window into the iterator's own arrays (all of
 * it when the window is retired). */
static void pull_window(struct mp_pool *p, struct mp_pool_async *c,
			struct pjob *pj, bool all)
{
	struct job *jb = ring_job(p, pj->seq);
	const uint8_t *flag = jb->flags;

	if (all) {
		for (size_t i = 0; i < pj->n; i++)
			if (!c->iready[pj->base + i])
				take(c, pj, jb, i);
		pj->pulled = pj->n;
		return;
	}
	if (c->kind == K_IMAP) {
		while (pj->pulled < pj->n && flag_load(&flag[pj->pulled]))
			take(c, pj, jb, pj->pulled++);
		return;
	}
	/* Unordered: scan what has been claimed so far. */
	uint64_t claimed = atomic_load(&jb->next) * jb->chunk;

	pj->frontier = min_sz(pj->n, claimed > pj->frontier ? claimed :
			      pj->frontier);
	for (size_t i = pj->pulled; i < pj->frontier; i++)
		if (!c->iready[pj->base + i] && flag_load(&flag[i]))
			take(c, pj, jb, i);
	while (pj->pulled < pj->n && c->iready[pj->base + pj->pulled])
		pj->pulled++;
}

static bool iter_ready(const struct mp_pool_async *c)
{
	if (c->kind == K_IMAP)
		return c->cursor < c->n && c->iready[c->cursor];
	return c->fifo_head < c->fifo_tail;
}

static bool cond_iter(struct mp_pool *p, void *arg)
{
	struct mp_pool_async *c = arg;
	uint64_t end = c->first_seq + c->njobs;

	for (uint64_t s = c->first_seq > p->head ? c->first_seq : p->head;
	     s < end && s < p->tail; s++) {
		struct pjob *pj = ring_pjob(p, s);

		if (pj->call != c)
			continue;
		pull_window(p, c, pj, false);
		if (c->kind == K_IMAP && pj->pulled < pj->n)
			break;  /* in order: later windows can wait */
	}
	return iter_ready(c);
}

/* ---- cancelling --------------------------------------------------- */

/* Kill every worker and fail everything outstanding with code (terminate:
 * ECANCELED; a pool whose workers die at start: ECHILD). */
static void cancel_all(struct mp_pool *p, int code)
{
	/* Through the pidfd: the signal cannot reach a recycled pid. */
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0)
			pidfd_send_signal(p->w[i].pidfd, SIGKILL, NULL, 0);
	for (int i = 0; i < p->workers; i++) {
		if (p->w[i].pid <= 0)
			continue;
		struct slot *s = &p->sh->slots[i];

		while (waitpid(p->w[i].pid, NULL, 0) == -1 && errno == EINTR)
			;
		close(p->w[i].pidfd);
		p->w[i] = (struct worker){ 0, -1 };
		p->st.tasks += atomic_load(&s->tasks);
		atomic_store(&s->job, NONE);
		atomic_store(&s->state, S_FREE);
	}
	p->nlive = 0;
	p->state = P_TERMINATED;
	if (code != ECANCELED)
		p->broken = code;
	while (p->head != p->tail) {
		uint64_t j = p->head;
		struct pjob *pj = ring_pjob(p, j);
		struct mp_pool_async *c = pj->call;

		if (!pj->complete &&
		    atomic_load(&ring_job(p, j)->done_items) >= pj->n) {
			complete_job(p, j);
		} else if (!pj->complete) {
			pj->complete = true;
			if (c->kind <= K_MAP)
				c->err = (struct mp_pool_error){ code, false,
					MP_POOL_NO_INDEX, 0, 0 };
			if (++c->jobs_done == c->njobs && c->submitted)
				finish_call(c);
		}
		retire(p, j);
	}
}

/* ---- create and stop ---------------------------------------------- */

static bool all_ready(struct mp_pool *p)
{
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid <= 0 ||
		    atomic_load(&p->sh->slots[i].state) != S_READY)
			return false;
	return true;
}

static bool cond_ready_or_dead(struct mp_pool *p, void *arg)
{
	(void)arg;
	return all_ready(p) || p->nlive < p->workers;
}

static int cpus_available(void)
{
	cpu_set_t set;

	long n = sched_getaffinity(0, sizeof set, &set) == 0 ?
		CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);

	if (n > MP_POOL_MAX_WORKERS)
		n = MP_POOL_MAX_WORKERS;
	return n < 1 ? 1 : (int)n;
}

static void unmap_pool(struct mp_pool *p)
{
	if (p->sh)
		munmap(p->sh, sizeof *p->sh);
	if (p->arena)
		munmap(p->arena, p->arena_bytes);
	if (p->heap)
		munmap(p->heap, p->heap_bytes);
	if (p->efd >= 0)
		close(p->efd);
	free(p->pj);
	free(p);
}

/* A shared mapping of address space only: pages count once touched. */
static void *map_shared(size_t size)
{
	void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return m == MAP_FAILED ? NULL : m;
}

struct mp_pool *mp_pool_create(const struct mp_pool_options *opts)
{
	struct mp_pool_options o = opts ? *opts : (struct mp_pool_options){ 0 };

	if (o.workers < 0 || o.workers > MP_POOL_MAX_WORKERS ||
	    o.maxtasksperchild < 0 ||
	    (o.arena_bytes && o.arena_bytes < MIN_ARENA)) {
		errno = EINVAL;
		return NULL;
	}
	struct mp_pool *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->workers = o.workers ? o.workers : cpus_available();
	p->retries = o.retries == 0 ? MP_POOL_DEFAULT_RETRIES :
		o.retries < 0 ? 0 : o.retries;
	p->maxtasks = o.maxtasksperchild;
	p->init = o.initializer;
	p->initargs = o.initargs;
	p->fin = o.finalizer;
	p->finargs = o.finargs;
	p->parent = getpid();
	p->arena_bytes = o.arena_bytes ? al(o.arena_bytes) : DEFAULT_ARENA;
	p->heap_bytes = o.heap_bytes ? al(o.heap_bytes) : DEFAULT_HEAP;
	p->last.index = MP_POOL_NO_INDEX;
	for (int i = 0; i < MP_POOL_MAX_WORKERS; i++)
		p->w[i] = (struct worker){ 0, -1 };

	p->sh = map_shared(sizeof *p->sh);
	p->arena = map_shared(p->arena_bytes);
	p->heap = map_shared(p->heap_bytes);
	p->heap_last = SIZE_MAX;
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	p->pj = calloc(RING, sizeof *p->pj);
	if (!p->sh || !p->arena || !p->heap || p->efd == -1 || !p->pj) {
		int e = errno ? errno : ENOMEM;

		unmap_pool(p);
		errno = e;
		return NULL;
	}
	/* Fork the workers and wait until each has run its initializer. */
	p->creating = true;
	int err = 0;

	for (int i = 0; i < p->workers && !err; i++)
		if (spawn(p, i) == -1)
			err = errno;
	if (!err && (wait_until(p, cond_ready_or_dead, NULL, -1) == -1 ||
		     !all_ready(p)))
		err = p->nlive < p->workers ? ECHILD : errno;
	p->creating = false;
	if (err) {
		cancel_all(p, ECHILD);
		unmap_pool(p);
		errno = err;
		return NULL;
	}
	return p;
}

int mp_pool_close(struct mp_pool *p)
{
	if (!p) {
		errno = EINVAL;
		return -1;
	}
	if (p->state == P_RUNNING)
		p->state = P_CLOSED;
	return 0;
}

static bool cond_idle(struct mp_pool *p, void *arg)
{
	(void)arg;
	return p->head == p->tail;
}

static bool cond_no_workers(struct mp_pool *p, void *arg)
{
	(void)arg;
	return p->nlive == 0;
}

int mp_pool_join(struct mp_pool *p)
{
	if (!p || p->state == P_RUNNING) {
		set_last(p, EINVAL, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	if (p->state == P_CLOSED)
		wait_until(p, cond_idle, NULL, -1);
	if (p->state != P_CLOSED) {  /* terminated (maybe while waiting) */
		p->state = P_JOINED;
		return 0;
	}
	uint64_t died = p->st.workers_died;

	p->shutdown_sent = true;
	atomic_store(&p->sh->shutdown, 1);
	atomic_fetch_add(&p->sh->wake_seq, 1);
	futex_wake(&p->sh->wake_seq, INT_MAX);
	wait_until(p, cond_no_workers, NULL, -1);
	p->state = P_JOINED;
	if (p->st.workers_died != died) {
		set_last(p, ECHILD, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	return 0;
}

int mp_pool_terminate(struct mp_pool *p)
{
	if (!p) {
		errno = EINVAL;
		return -1;
	}
	if (p->state != P_TERMINATED && p->state != P_JOINED)
		cancel_all(p, ECANCELED);
	return 0;
}

void mp_pool_destroy(struct mp_pool *p)
{
	if (!p)
		return;
	if (p->state != P_JOINED && p->state != P_TERMINATED)
		cancel_all(p, ECANCELED);
	for (struct mp_pool_async *c = p->calls; c; c = c->next)
		c->pool = NULL;
	unmap_pool(p);
}

/* ---- blocking calls ----------------------------------------------- */

/* get() on a fresh handle, then free it, keeping get()'s errno. */
static int get_and_free(struct mp_pool_async *h, void *result)
{
	if (!h)
		return -1;
	int r = mp_pool_get(h, result, MP_POOL_FOREVER);
	int e = errno;

	mp_pool_async_free(h);
	errno = e;
	return r;
}

int mp_pool_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
		size_t n, size_t item_size, void *results, size_t result_size,
		size_t chunksize)
{
	return get_and_free(mp_pool_map_async(p, fn, items, n, item_size,
					      results, result_size, chunksize,
					      NULL, NULL), NULL);
}

int mp_pool_starmap(struct mp_pool *p, mp_pool_fn fn, const void *args,
		    size_t n, size_t args_size, void *results,
		    size_t result_size, size_t chunksize)
{
	return mp_pool_map(p, fn, args, n, args_size, results, result_size,
			   chunksize);
}

int mp_pool_apply(struct mp_pool *p, mp_pool_fn fn, const void *arg,
		  size_t arg_size, void *result, size_t result_size)
{
	return get_and_free(mp_pool_apply_async(p, fn, arg, arg_size,
						result_size, NULL, NULL),
			    result);
}

size_t mp_pool_auto_chunksize(const struct mp_pool *p, size_t n)
{
	size_t w = p ? 4 * (size_t)p->workers : 4;
	size_t c = n / w + (n % w != 0);

	return c ? c : 1;
}

/* ---- asynchronous calls ------------------------------------------- */

struct mp_pool_async *mp_pool_apply_async(struct mp_pool *p, mp_pool_fn fn,
					  const void *arg, size_t arg_size,
					  size_t result_size,
					  mp_pool_callback cb, void *cb_arg)
{
	if (!p || !fn || (arg_size && !arg) ||
	    arg_size > p->arena_bytes / 16 ||
	    result_size > p->arena_bytes / 16 ||
	    arg_size + result_size + 4 * LINE > p->arena_bytes / 16) {
		set_last(p, EINVAL, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	if (!usable(p))
		return NULL;
	struct mp_pool_async *c = new_call(p, K_APPLY, fn, 1, arg_size,
					   result_size, 1,
					   sizeof *c + result_size);

	if (!c)
		return NULL;
	c->results = c + 1;
	c->shared_in = arg_size && in_heap(p, arg, arg_size);
	c->cb = cb;
	c->cb_arg = cb_arg;
	c->njobs = 1;
	if (p->tail - p->head >= 64)
		collect(p);  /* now and then: callbacks, arena, descriptors */
	if (submit(p, c, 0, 1, arg) == -1) {
		c->err = (struct mp_pool_error){ errno, false,
						 MP_POOL_NO_INDEX, 0, 0 };
		c->njobs = 0;
	}
	mark_submitted(c);
	return c;
}

struct mp_pool_async *mp_pool_map_async(struct mp_pool *p, mp_pool_fn fn,
					const void *items, size_t n,
					size_t item_size, void *results,
					size_t result_size, size_t chunksize,
					mp_pool_callback cb, void *cb_arg)
{
	if (!p) {
		errno = EINVAL;
		return NULL;
	}
	if (!check_map(p, fn, items, n, item_size, results, result_size,
		       false))
		return NULL;
	struct mp_pool_async *c = map_call(
		p, K_MAP, fn, items, n, item_size, results, result_size,
		chunksize ? chunksize : mp_pool_auto_chunksize(p, n),
		sizeof *c);

	if (!c)
		return NULL;
	c->cb = cb;
	c->cb_arg = cb_arg;
	submit_windows(p, c, items);
	return c;
}

struct mp_pool_async *mp_pool_starmap_async(struct mp_pool *p,
					    mp_pool_fn fn, const void *args,
					    size_t n, size_t args_size,
					    void *results, size_t result_size,
					    size_t chunksize,
					    mp_pool_callback cb, void *cb_arg)
{
	return mp_pool_map_async(p, fn, args, n, args_size, results,
				 result_size, chunksize, cb, cb_arg);
}

/* Try to finish h's own jobs now, out of order if need be. */
static bool cond_finished(struct mp_pool *p, void *arg)
{
	struct mp_pool_async *c = arg;
	uint64_t end = c->first_seq + c->njobs;

	for (uint64_t s = c->first_seq > p->head ? c->first_seq : p->head;
	     s < end && s < p->tail && !c->finished; s++) {
		struct pjob *pj = ring_pjob(p, s);

		if (pj->call == c && !pj->complete && job_complete(p, s))
			complete_job(p, s);
	}
	return c->finished;
}

static int64_t deadline_of(double timeout_s)
{
	if (timeout_s < 0)
		return -1;
	if (timeout_s > 1e9)
		timeout_s = 1e9;
	return now_ns() + (int64_t)(timeout_s * 1e9);
}

bool mp_pool_ready(struct mp_pool_async *h)
{
	if (!h)
		return false;
	if (!h->finished && h->pool) {
		int e = errno;

		/* A zero wait: it also reaps and replaces dead workers. */
		wait_until(h->pool, cond_finished, h, now_ns());
		errno = e;
	}
	return h->finished;
}

int mp_pool_wait(struct mp_pool_async *h, double timeout_s)
{
	if (!h || isnan(timeout_s)) {
		set_last(h ? h->pool : NULL, EINVAL, false, MP_POOL_NO_INDEX,
			 0, 0);
		return -1;
	}
	if (h->finished || !h->pool)
		return 0;
	if (wait_until(h->pool, cond_finished, h, deadline_of(timeout_s)) ==
	    -1) {
		set_last(h->pool, errno, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	return 0;
}

int mp_pool_get(struct mp_pool_async *h, void *result, double timeout_s)
{
	if (mp_pool_wait(h, timeout_s) == -1)
		return -1;
	if (h->err.code) {
		if (h->pool)
			h->pool->last = h->err;
		errno = h->err.code;
		return -1;
	}
	if (result && h->kind == K_APPLY && h->result_size)
		memcpy(result, h->results, h->result_size);
	return 0;
}

int mp_pool_successful(struct mp_pool_async *h)
{
	if (!h) {
		errno = EINVAL;
		return -1;
	}
	if (!mp_pool_ready(h)) {
		errno = EAGAIN;
		return -1;
	}
	return h->err.code == 0;
}

void mp_pool_async_free(struct mp_pool_async *h)
{
	if (!h || h->user_freed)
		return;
	h->user_freed = true;
	release_call(h);
}

/* ---- iterators ---------------------------------------------------- */

static struct mp_pool_iter *imap(struct mp_pool *p, int kind, mp_pool_fn fn,
				 const void *items, size_t n, size_t isz,
				 size_t rsz, size_t chunksize)
{
	if (!p) {
		errno = EINVAL;
		return NULL;
	}
	if (!check_map(p, fn, items, n, isz, NULL, rsz, true))
		return NULL;
	/* The iterator keeps its own copy of every result, so that a window
	 * can be retired (and its arena reused) whether or not it has been
	 * read yet: an unread iterator never blocks the pool. */
	size_t m = n ? n : 1;
	char *ires = rsz ? malloc(m * rsz) : NULL;
	uint16_t *icode = calloc(m, sizeof *icode);
	uint8_t *iready = calloc(m, 1);
	size_t *fifo = kind == K_IMAP_UNORDERED ? malloc(m * sizeof *fifo) :
		NULL;
	struct mp_pool_async *c = NULL;

	if ((!rsz || ires) && icode && iready && (kind == K_IMAP || fifo))
		c = map_call(p, kind, fn, items, n, isz, NULL, rsz,
			     chunksize ? chunksize : 1,  /* Python's default */
			     sizeof(struct mp_pool_iter));
	if (!c) {
		free(ires);
		free(icode);
		free(iready);
		free(fifo);
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	/* Before submitting: a window that retires while the next one
	 * waits for room is copied out at once. */
	c->ires = ires;
	c->icode = icode;
	c->iready = iready;
	c->fifo = fifo;
	submit_windows(p, c, items);
	return (struct mp_pool_iter *)c;
}

struct mp_pool_iter *mp_pool_imap(struct mp_pool *p, mp_pool_fn fn,
				  const void *items, size_t n,
				  size_t item_size, size_t result_size,
				  size_t chunksize)
{
	return imap(p, K_IMAP, fn, items, n, item_size, result_size,
		    chunksize);
}

struct mp_pool_iter *mp_pool_imap_unordered(struct mp_pool *p,
					    mp_pool_fn fn, const void *items,
					    size_t n, size_t item_size,
					    size_t result_size,
					    size_t chunksize)
{
	return imap(p, K_IMAP_UNORDERED, fn, items, n, item_size,
		    result_size, chunksize);
}

int mp_pool_next(struct mp_pool_iter *it, void *result, size_t *index,
		 double timeout_s)
{
	struct mp_pool_async *c = it ? &it->c : NULL;

	if (!c || isnan(timeout_s)) {
		set_last(c ? c->pool : NULL, EINVAL, false, MP_POOL_NO_INDEX,
			 0, 0);
		return -1;
	}
	if (c->delivered == c->n)
		return 0;
	if (c->pool &&
	    wait_until(c->pool, cond_iter, c, deadline_of(timeout_s)) == -1) {
		set_last(c->pool, errno, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	if (!iter_ready(c)) {  /* cannot happen: a window retires pulled */
		set_last(c->pool, ECHILD, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	size_t g = c->kind == K_IMAP ? c->cursor++ : c->fifo[c->fifo_head++];

	c->delivered++;
	if (index)
		*index = g;
	if (c->icode[g]) {
		struct mp_pool_error e = item_error(c, g, c->icode[g],
						    c->icode[g] != ECANCELED);

		if (c->pool)
			c->pool->last = e;
		errno = e.code;
		return -1;
	}
	if (result && c->result_size)
		memcpy(result, c->ires + g * c->result_size, c->result_size);
	return 1;
}

void mp_pool_iter_free(struct mp_pool_iter *it)
{
	if (it)
		mp_pool_async_free(&it->c);
}

/* ---- the shared heap -------------------------------------------------------
 *
 * A stack of blocks: mp_pool_alloc() takes the bytes at the top, and
 * mp_pool_free() marks a block free and brings the top down over every
 * free block there.  Each block starts with a 64-byte header just before
 * the pointer handed out; workers never allocate. */

struct block { uint64_t magic, len, prev; };  /* prev: the block below */

void *mp_pool_alloc(struct mp_pool *p, size_t size)
{
	if (!p || size == 0 || size > p->heap_bytes) {
		errno = EINVAL;
		return NULL;
	}
	size_t len = al(size) + LINE;

	if (len > p->heap_bytes - p->heap_top) {
		errno = ENOMEM;
		return NULL;
	}
	struct block *b = (struct block *)(p->heap + p->heap_top);

	*b = (struct block){ HEAP_MAGIC, len, p->heap_last };
	p->heap_last = p->heap_top;
	p->heap_top += len;
	return (char *)b + LINE;
}

int mp_pool_free(struct mp_pool *p, void *ptr)
{
	if (!ptr)
		return 0;
	struct block *b = (struct block *)((char *)ptr - LINE);

	if (!p || !in_heap(p, b, LINE) || ((char *)b - p->heap) % LINE ||
	    b->magic != HEAP_MAGIC) {
		errno = EINVAL;
		return -1;
	}
	b->magic = HEAP_FREE;
	while (p->heap_last != SIZE_MAX) {
		struct block *top = (struct block *)(p->heap + p->heap_last);

		if (top->magic != HEAP_FREE)
			break;
		p->heap_top = p->heap_last;
		p->heap_last = top->prev;
	}
	return 0;
}

/* ---- inspection --------------------------------------------------- */

const struct mp_pool_error *mp_pool_last_error(const struct mp_pool *p)
{
	static const struct mp_pool_error none = { 0, false, MP_POOL_NO_INDEX,
						   0, 0 };

	return p ? &p->last : &none;
}

int mp_pool_workers(const struct mp_pool *p)
{
	return p ? p->workers : 0;
}

int mp_pool_pids(const struct mp_pool *p, pid_t *pids, int max)
{
	int n = 0;

	for (int i = 0; p && i < p->workers; i++)
		if (p->w[i].pid > 0) {
			if (pids && n < max)
				pids[n] = p->w[i].pid;
			n++;
		}
	return n;
}

void mp_pool_stats(const struct mp_pool *p, struct mp_pool_stats *st)
{
	if (!st)
		return;
	*st = p ? p->st : (struct mp_pool_stats){ 0 };
	for (int i = 0; p && i < p->workers; i++)
		if (p->w[i].pid > 0)
			st->tasks += atomic_load(&p->sh->slots[i].tasks);
}
