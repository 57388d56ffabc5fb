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
 *              it holds, counters.  After a death the parent reads the dead
 *              worker's slot to know what it was doing; the item it was
 *              running is the first one of that chunk without a flag.
 *
 * Completion without deaths: each worker adds the items it finished in a job
 * to job.done_items when it leaves the job; done_items == n means done.
 * After any death every outstanding job is "suspect" and is audited instead:
 * once its chunks are all claimed and no live worker holds it, the parent
 * scans its flags; missing items (the dead worker's unfinished chunk) are run
 * again by reopening the same job (next rewound, workers skip items already
 * flagged).  The item a worker was running when it died is blamed; after
 * `retries` further deaths on it, it is given up: flag 2, error EOWNERDEAD.
 *
 * Protocol between parent and workers on a descriptor (Dekker-style, every
 * access seq_cst): a worker first stores slot.job = j, then reads job.seq;
 * the parent, before it audits or recycles job j, stores job.seq = j|AUDIT
 * (or RETIRED), then reads every slot.job.  Either the worker sees the mark
 * and backs off, or the parent sees the worker and waits for it.
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
#define NONE UINT64_MAX                   /* no job / no item */
#define AUDIT_BIT (UINT64_C(1) << 62)     /* job.seq while being audited */
#define RETIRED (UINT64_C(1) << 63)       /* job.seq once finished */
#define NO_ERR UINT64_MAX                 /* job.err_key: no failure */
#define CODE_BITS 12                      /* error codes 1..4095 */
#define CODE_MASK ((UINT64_C(1) << CODE_BITS) - 1)
#define DEFAULT_ARENA ((size_t)128 << 20)
#define DEFAULT_HEAP ((size_t)256 << 20)
#define HEAP_MAGIC UINT64_C(0x6d70706f6f6c6862)  /* a block's header */
#define MIN_ARENA ((size_t)1 << 20)
#define WINDOW_CAP ((size_t)2 << 20)      /* bytes per map window, ideally */
#define MAX_PASSES 64                     /* re-runs of one job, at most */
#define SPIN_NS 20000                     /* spin this long before sleeping */

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
	/* written by the parent before publication, read by workers */
	alignas(LINE) _Atomic uint64_t seq;
	mp_pool_fn fn;
	uint64_t n, chunk;
	/* Absolute addresses: the arena and the heap are mapped before the
	 * first fork, so they are at the same address in every worker. */
	const char *in;
	char *out;
	uint8_t *flags;
	uint16_t *errs;
	uint64_t item_size, result_size;
	bool stream;                          /* imap: publish every chunk */
	_Atomic uint64_t end_unit;            /* chunks [next, end_unit) */
	_Atomic uint32_t pass;                /* > 0: a re-run after deaths */
};

struct slot {
	alignas(2 * LINE) _Atomic uint64_t job;  /* job held, or NONE */
	_Atomic uint64_t chunk;                  /* chunk running, or NONE */
	_Atomic uint64_t tasks;                  /* task calls finished */
	_Atomic uint64_t claims;                 /* chunks claimed */
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
	_Atomic uint64_t events;                  /* voluntary exits */
	struct slot slots[MP_POOL_MAX_WORKERS];
	struct job ring[RING];
};

/* ---- the parent's private bookkeeping ----------------------------- */

struct death { uint64_t chunk; int signal; pid_t pid; };

struct pjob {                       /* one per ring entry */
	struct mp_pool_async *call;
	uint64_t seq;
	size_t base, n;                 /* items [base, base + n) of the call */
	size_t arena_begin;
	bool complete, suspect;
	int passes;
	int last_signal;
	pid_t last_pid;
	struct death *deaths;
	size_t ndeaths, capdeaths;
	size_t pulled, frontier;        /* imap: what was copied out */
};

struct blame { size_t index; int tries, signal; pid_t pid; bool gaveup; };

struct mp_pool_async {              /* a call: apply, map or imap */
	struct mp_pool *pool;           /* NULL once the pool is destroyed */
	struct mp_pool_async *prev, *next;
	int kind, refs;                 /* refs: the user + each live job */
	mp_pool_fn fn;
	bool user_freed, finished, submitted;
	bool shared_in, shared_out;     /* in the pool's heap: no copy */
	size_t n, item_size, result_size, chunk;
	void *results;                  /* map: caller's; apply: ours */
	mp_pool_callback cb;
	void *cb_arg;
	uint64_t first_seq;
	size_t njobs, jobs_done;
	struct mp_pool_error err;
	struct blame *blames;
	size_t nblames, capblames;
	/* iterators */
	char *ires;
	uint16_t *icode;
	uint8_t *iready;
	size_t *fifo;
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
	uint64_t seen_events;
	int suspects;
	struct mp_pool_stats st;        /* of reaped workers + parent's */
	struct mp_pool_error last;
	struct mp_pool_async *calls;    /* every live call */
	char *heap;                     /* mp_pool_alloc()'s shared blocks */
	size_t heap_bytes;
	struct extent { size_t off, len; } *holes;  /* free, by offset */
	size_t nholes, capholes;
	struct pollfd *pfd;
	int *pfd_slot;
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

/* Flags and codes in the arena are plain bytes; these give them atomic
 * access without declaring the whole arena _Atomic. */
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

static void err_min(struct job *jb, uint64_t index, int code)
{
	uint64_t key = (index << CODE_BITS) | (uint64_t)code;
	uint64_t cur = atomic_load(&jb->err_key);

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

	uint32_t seq = atomic_load(&sh->wake_seq);

	atomic_fetch_add(&sh->sleepers, 1);
	atomic_store(&sh->wake_pending, 0);  /* this sleeper needs a new one */
	if (!has_work(sh) && !atomic_load(&sh->shutdown)) {
		futex_wait(&sh->wake_seq, seq);
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

/* Run the items of chunk k; returns how many task calls it made. */
static void note_error(struct job *jb, uint64_t i, int rc)
{
	int code = rc >= 1 && rc <= (int)CODE_MASK ? rc : ERANGE;

	if (jb->stream)
		jb->errs[i] = (uint16_t)code;
	err_min(jb, i, code);
}

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
	if (!atomic_load_explicit(&jb->pass, memory_order_relaxed)) {
		for (; f < end; f++, a += isz, r += rsz) {
			int rc = fn(a, r);

			if (rc)
				note_error(jb, (uint64_t)(f - jb->flags), rc);
			flag_store(f, 1);
		}
		ran = cnt;
	} else {  /* a re-run after a death: skip what was done */
		for (; f < end; f++, a += isz, r += rsz) {
			if (flag_load(f))
				continue;
			int rc = fn(a, r);

			if (rc)
				note_error(jb, (uint64_t)(f - jb->flags), rc);
			flag_store(f, 1);
			ran++;
		}
	}
	atomic_store_explicit(&me->tasks,
			      atomic_load_explicit(&me->tasks,
						   memory_order_relaxed) + ran,
			      memory_order_relaxed);
	atomic_store_explicit(&me->claims,
			      atomic_load_explicit(&me->claims,
						   memory_order_relaxed) + 1,
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
	for (int k = 0; k < MP_POOL_MAX_WORKERS; k++)
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
	atomic_fetch_add(&p->sh->events, 1);
	wake_parent(p);
	_exit(0);
}

/* ---- the parent: workers ------------------------------------------ */

static int spawn(struct mp_pool *p, int i)
{
	struct slot *s = &p->sh->slots[i];

	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->tasks, 0);
	atomic_store(&s->claims, 0);
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

		kill(pid, SIGKILL);
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

static void wake_workers(struct mp_pool *p, uint64_t n)
{
	struct shared *sh = p->sh;

	/* One FUTEX_WAKE per batch of sleepers: until one of them runs
	 * again, further wake-ups would only cost system calls. */
	if (atomic_load(&sh->sleepers) && !atomic_load(&sh->wake_pending)) {
		atomic_store(&sh->wake_pending, 1);
		atomic_fetch_add(&sh->wake_seq, 1);
		futex_wake(&sh->wake_seq, n > INT_MAX ? INT_MAX : (int)n);
	}
}

static void cancel_all(struct mp_pool *p, int code);

/* Remember what a dead worker was running, for the audit of its job. */
static void record_death(struct pjob *pj, uint64_t chunk, int sig, pid_t pid)
{
	if (pj->ndeaths == pj->capdeaths) {
		size_t cap = pj->capdeaths ? 2 * pj->capdeaths : 4;
		struct death *d = realloc(pj->deaths, cap * sizeof *d);

		if (d) {
			pj->deaths = d;
			pj->capdeaths = cap;
		}
	}
	if (pj->ndeaths < pj->capdeaths)  /* else: audited as anonymous */
		pj->deaths[pj->ndeaths++] = (struct death){ chunk, sig, pid };
	pj->last_signal = sig;
	pj->last_pid = pid;
}

/* A worker's pidfd became readable: it has exited.  Reap it, learn from
 * its slot what it was doing, and start a replacement. */
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

	int state = atomic_load(&s->state);
	bool normal = (state == S_LEAVING || state == S_RETIRING) &&
		(r == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0));

	p->st.tasks += atomic_load(&s->tasks);
	p->st.chunks += atomic_load(&s->claims);
	if (normal) {
		if (state == S_RETIRING)
			p->st.workers_retired++;
	} else {
		int sig = r == pid && WIFSIGNALED(status) ?
			WTERMSIG(status) : 0;
		uint64_t j = atomic_load(&s->job);

		p->st.workers_died++;
		if (state == S_STARTING)
			p->init_deaths++;
		else
			p->init_deaths = 0;
		if (j != NONE && j >= p->head && j < p->tail &&
		    !ring_pjob(p, j)->complete)
			record_death(ring_pjob(p, j), atomic_load(&s->chunk),
				     sig, pid);
		/* Every job in flight may now miss a chunk: audit them. */
		for (uint64_t q = p->head; q < p->tail; q++) {
			struct pjob *pj = ring_pjob(p, q);

			if (!pj->complete && !pj->suspect) {
				pj->suspect = true;
				p->suspects++;
			}
		}
	}
	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->state, S_FREE);

	if (!normal && state == S_STARTING && !p->creating &&
	    p->init_deaths > (p->retries < 0 ? 0 : p->retries) + 1) {
		/* Replacements die in their initializer: give up rather
		 * than fork forever. */
		cancel_all(p, ECHILD);
		return;
	}
	if ((p->state == P_RUNNING || p->state == P_CLOSED) &&
	    !p->shutdown_sent && !p->creating)
		spawn(p, i);  /* on failure progress() tries again */
}

/* Reap every worker that has exited, without waiting. */
static void check_exits(struct mp_pool *p)
{
	for (int i = 0; i < p->workers; i++) {
		if (p->w[i].pid <= 0)
			continue;
		struct pollfd pf = { .fd = p->w[i].pidfd, .events = POLLIN };

		if (poll(&pf, 1, 0) == 1)
			handle_exit(p, i);
	}
}

/* ---- the parent: jobs --------------------------------------------- */

static void finish_call(struct mp_pool *p, struct mp_pool_async *c);
static void release_call(struct mp_pool_async *c);
static void pull_window(struct mp_pool *p, struct mp_pool_async *c,
			struct pjob *pj, bool all);

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
	c->blames[c->nblames] = (struct blame){ index, 0, 0, 0, false };
	return &c->blames[c->nblames++];
}

static int allowed_retries(const struct mp_pool *p)
{
	return p->retries < 0 ? 0 : p->retries;
}

/* Give up item i (local to job j): it killed its worker too often. */
static void give_up(struct job *jb, struct pjob *pj,
		    uint64_t i, int sig, pid_t pid)
{
	uint8_t *flag = jb->flags;
	struct blame *b = find_blame(pj->call, pj->base + i);

	if (b) {
		b->gaveup = true;
		b->signal = sig;
		b->pid = pid;
	}
	if (jb->stream)
		jb->errs[i] = EOWNERDEAD;
	err_min(jb, i, EOWNERDEAD);
	flag_store(&flag[i], 2);
}

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
			p->deferred = true;
			return false;
		}

	/* Nobody touches job j now. */
	uint8_t *flag = jb->flags;

	for (size_t d = 0; d < pj->ndeaths; d++) {
		struct death *dd = &pj->deaths[d];
		uint64_t units = (pj->n + jb->chunk - 1) / jb->chunk;
		uint64_t i = dd->chunk < units ? dd->chunk * jb->chunk : pj->n;
		uint64_t end = i + jb->chunk < pj->n ? i + jb->chunk : pj->n;

		while (i < end && flag_load(&flag[i]))
			i++;  /* the items of its chunk it finished */
		if (i >= end)
			continue;  /* died between chunks: nobody to blame */
		struct blame *b = find_blame(pj->call, pj->base + i);

		if (!b)
			continue;
		b->tries++;
		b->signal = dd->signal;
		b->pid = dd->pid;
		if (b->tries > allowed_retries(p))
			give_up(jb, pj, i, dd->signal, dd->pid);
	}
	pj->ndeaths = 0;

	size_t lo = SIZE_MAX, hi = 0, missing = 0;

	for (size_t i = 0; i < pj->n; i++)
		if (!flag_load(&flag[i])) {
			if (lo == SIZE_MAX)
				lo = i;
			hi = i + 1;
			missing++;
		}
	if (!missing) {
		atomic_store(&jb->seq, j);
		return true;
	}
	if (++pj->passes > MAX_PASSES) {
		for (size_t i = lo; i < hi; i++)
			if (!flag_load(&flag[i]))
				give_up(jb, pj, i, pj->last_signal,
					pj->last_pid);
		atomic_store(&jb->seq, j);
		return true;
	}
	p->st.retried_items += missing;
	atomic_store(&jb->pass, (uint32_t)pj->passes);
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

static void call_fail(struct mp_pool_async *c, size_t index, int code)
{
	if (c->err.code && (c->err.index <= index || !c->err.task))
		return;  /* a lower index failed, or the call was cancelled */
	c->err = (struct mp_pool_error){ code, true, index, 0, 0 };
	for (size_t i = 0; i < c->nblames; i++)
		if (c->blames[i].index == index && c->blames[i].gaveup &&
		    code == EOWNERDEAD) {
			c->err.signal = c->blames[i].signal;
			c->err.pid = c->blames[i].pid;
		}
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

	if (key != NO_ERR && c->kind <= K_MAP)
		call_fail(c, pj->base + (key >> CODE_BITS),
			  (int)(key & CODE_MASK));
	if (++c->jobs_done == c->njobs && c->submitted)
		finish_call(p, c);
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
	free(pj->deaths);
	pj->deaths = NULL;
	pj->ndeaths = pj->capdeaths = 0;
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

/* Everything the parent does whenever it enters the pool. */
static void progress(struct mp_pool *p)
{
	uint64_t ev = atomic_load(&p->sh->events);

	if (ev != p->seen_events) {
		p->seen_events = ev;
		check_exits(p);
	}
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

/* Wait until cond() holds, running progress() meanwhile: spin briefly,
 * then sleep in poll() on the eventfd and every worker's pidfd.  deadline
 * is in now_ns() time, or negative for none.  0, or -1 with ETIMEDOUT. */
static int wait_until(struct mp_pool *p,
		      bool (*cond)(struct mp_pool *, void *), void *arg,
		      int64_t deadline)
{
	struct shared *sh = p->sh;
	int64_t spin_until = now_ns() + SPIN_NS;
	bool armed = false;

	for (;;) {
		progress(p);
		if (cond(p, arg)) {
			atomic_store(&sh->parent_waiting, 0);
			return 0;
		}
		int64_t now = now_ns();

		if (deadline >= 0 && now >= deadline) {
			atomic_store(&sh->parent_waiting, 0);
			errno = ETIMEDOUT;
			return -1;
		}
		if (now < spin_until && !p->deferred) {
			for (int i = 0; i < 64; i++)
				cpu_relax();
			sched_yield();  /* a worker may need this CPU */
			continue;
		}
		if (!armed) {
			/* Ask for a wake-up, then look once more: a worker
			 * that finished in between has seen the request. */
			atomic_store(&sh->parent_waiting, 1);
			armed = true;
			continue;
		}
		armed = false;

		int64_t wait = deadline >= 0 ? deadline - now : -1;

		if (p->deferred || p->nlive < p->workers)
			if (wait < 0 || wait > 1000000)
				wait = 1000000;  /* re-check in 1 ms */
		p->deferred = false;

		int n = 0;

		p->pfd[n++] = (struct pollfd){ .fd = p->efd, .events = POLLIN };
		for (int i = 0; i < p->workers; i++)
			if (p->w[i].pid > 0) {
				p->pfd_slot[n] = i;
				p->pfd[n++] = (struct pollfd){
					.fd = p->w[i].pidfd, .events = POLLIN };
			}
		struct timespec ts = { wait / 1000000000, wait % 1000000000 };
		int r = ppoll(p->pfd, (nfds_t)n, wait < 0 ? NULL : &ts, NULL);

		if (r == -1 && errno != EINTR) {
			atomic_store(&sh->parent_waiting, 0);
			return -1;
		}
		if (r <= 0)
			continue;
		for (int k = 1; k < n; k++)
			if (p->pfd[k].revents && p->w[p->pfd_slot[k]].pid > 0)
				handle_exit(p, p->pfd_slot[k]);
		if (p->pfd[0].revents) {
			uint64_t v;
			ssize_t rr = read(p->efd, &v, sizeof v);

			(void)rr;  /* EAGAIN: someone drained it */
		}
	}
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

	while (!arena_alloc(p, need, &off)) {
		if (p->broken || p->state == P_TERMINATED) {
			errno = p->broken ? p->broken : ECANCELED;
			return -1;
		}
		if (wait_until(p, cond_room, &need, -1) == -1)
			return -1;
	}
	uint64_t j = p->tail;
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);
	size_t chunk = c->chunk < n ? c->chunk : n;

	char *a = p->arena + off;

	if (!c->shared_in && n && isz)
		memcpy(a, items, n * isz);
	memset(a + in + out, 0, n);
	if (stream)
		memset(a + in + out + fl, 0, 2 * n);
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
	atomic_store_explicit(&jb->pass, 0, memory_order_relaxed);
	atomic_store_explicit(&jb->next, 0, memory_order_relaxed);
	atomic_store_explicit(&jb->done_items, 0, memory_order_relaxed);
	atomic_store_explicit(&jb->err_key, NO_ERR, memory_order_relaxed);
	atomic_store(&jb->seq, j);
	*pj = (struct pjob){ .call = c, .seq = j, .base = base, .n = n,
			     .arena_begin = off };
	c->refs++;
	if (p->head == p->tail)
		p->a_head = off;
	p->tail = j + 1;
	atomic_store(&p->sh->tail, j + 1);
	wake_workers(p, (n + chunk - 1) / chunk);
	return 0;
}

/* ---- calls -------------------------------------------------------- */

static void free_call(struct mp_pool_async *c)
{
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

static void release_call(struct mp_pool_async *c)
{
	if (--c->refs == 0)
		free_call(c);
}

static void finish_call(struct mp_pool *p, struct mp_pool_async *c)
{
	(void)p;
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

/* size: bytes to allocate, at least sizeof *c (iterators and apply's result
 * buffer come after it). */
static struct mp_pool_async *new_call(struct mp_pool *p, int kind,
				      mp_pool_fn fn, size_t n, size_t isz,
				      size_t rsz, size_t chunk, size_t size)
{
	struct mp_pool_async *c = calloc(1, size);

	if (!c)
		return NULL;
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

/* Items per window: at least one chunk, about WINDOW_CAP bytes (so that
 * copying the next window in overlaps with running this one), never more
 * than a quarter of the arena.  May shrink *chunk to fit. */
static size_t window_items(const struct mp_pool *p, size_t per_item,
			   size_t *chunk)
{
	size_t max = (p->arena_bytes / 4) / per_item;
	size_t cap = WINDOW_CAP / per_item;

	if (*chunk > max)
		*chunk = max;
	size_t w = cap > *chunk ? cap - cap % *chunk : *chunk;

	return w > max ? max - max % *chunk : w;
}

static bool usable(struct mp_pool *p)
{
	if (p->broken) {
		set_last(p, p->broken, false, MP_POOL_NO_INDEX, 0, 0);
		return false;
	}
	if (p->state != P_RUNNING) {
		set_last(p, EINVAL, false, MP_POOL_NO_INDEX, 0, 0);
		return false;
	}
	return true;
}

/* Common checks of map-like calls; returns the bytes an item needs in the
 * arena, or 0 after setting EINVAL. */
static size_t check_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
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
		return 0;
	}
	return per;
}

static struct mp_pool_async *submit_map(struct mp_pool *p, int kind,
					mp_pool_fn fn, const char *items,
					size_t n, size_t isz, void *results,
					size_t rsz, size_t chunk, size_t size)
{
	bool sin = n && in_heap(p, items, n * isz);
	bool sout = n && rsz && in_heap(p, results, n * rsz);
	size_t per = (sin ? 0 : isz) + (sout ? 0 : rsz) + 1;
	size_t win = n ? window_items(p, per, &chunk) : 1;
	struct mp_pool_async *c = new_call(p, kind, fn, n, isz, rsz, chunk,
					   size);

	if (!c) {
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	c->shared_in = sin;
	c->shared_out = sout;
	c->results = results;
	c->njobs = (n + win - 1) / win;
	progress(p);
	for (size_t base = 0, w = 0; w < c->njobs; w++, base += win) {
		size_t cnt = n - base < win ? n - base : win;

		if (submit(p, c, base, cnt, items + base * isz) == -1) {
			/* The pool broke or was cancelled while we waited
			 * for room: fail the call, keep what is in flight. */
			c->err = (struct mp_pool_error){ errno, false,
				MP_POOL_NO_INDEX, 0, 0 };
			c->njobs = w;
			break;
		}
	}
	return c;
}

static void mark_submitted(struct mp_pool *p, struct mp_pool_async *c)
{
	c->submitted = true;
	if (c->jobs_done == c->njobs && !c->finished)
		finish_call(p, c);
}

/* ---- imap: copying results out of the arena ----------------------- */

static void take(struct mp_pool *p, struct mp_pool_async *c,
		 struct pjob *pj, struct job *jb, size_t i, bool cancelled)
{
	size_t g = pj->base + i;
	(void)p;
	if (flag_load(&jb->flags[i])) {
		if (c->result_size)
			memcpy(c->ires + g * c->result_size,
			       jb->out + i * c->result_size, c->result_size);
		c->icode[g] = jb->errs[i];
	} else {
		c->icode[g] = cancelled ? ECANCELED : ECHILD;
	}
	c->iready[g] = 1;
	if (c->kind == K_IMAP_UNORDERED)
		c->fifo[c->fifo_tail++] = g;
}

/* Copy what is ready in one window into the iterator's own arrays (all of
 * it when the window is retired or cancelled). */
static void pull_window(struct mp_pool *p, struct mp_pool_async *c,
			struct pjob *pj, bool all)
{
	struct job *jb = ring_job(p, pj->seq);
	const uint8_t *flag = jb->flags;

	if (all) {
		for (size_t i = 0; i < pj->n; i++)
			if (!c->iready[pj->base + i])
				take(p, c, pj, jb, i, true);
		pj->pulled = pj->n;
		return;
	}
	if (c->kind == K_IMAP) {
		while (pj->pulled < pj->n && flag_load(&flag[pj->pulled]))
			take(p, c, pj, jb, pj->pulled++, false);
		return;
	}
	/* Unordered: scan what has been claimed so far. */
	uint64_t claimed = atomic_load(&jb->next) * jb->chunk;

	if (claimed > pj->n)
		claimed = pj->n;
	if (claimed > pj->frontier)
		pj->frontier = claimed;
	for (size_t i = pj->pulled; i < pj->frontier; i++)
		if (!c->iready[pj->base + i] && flag_load(&flag[i]))
			take(p, c, pj, jb, i, false);
	while (pj->pulled < pj->n && c->iready[pj->base + pj->pulled])
		pj->pulled++;
}

static void pull(struct mp_pool *p, struct mp_pool_async *c)
{
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
}

static bool iter_has_next(const struct mp_pool_async *c)
{
	if (c->kind == K_IMAP)
		return c->cursor < c->n && c->iready[c->cursor];
	return c->fifo_head < c->fifo_tail;
}

static bool cond_iter(struct mp_pool *p, void *arg)
{
	struct mp_pool_async *c = arg;

	pull(p, c);
	return iter_has_next(c);
}

/* ---- cancelling --------------------------------------------------- */

/* Kill every worker and fail everything outstanding with code (terminate:
 * ECANCELED; a pool whose workers die at start: ECHILD). */
static void cancel_all(struct mp_pool *p, int code)
{
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0)
			kill(p->w[i].pid, SIGKILL);
	for (int i = 0; i < p->workers; i++) {
		if (p->w[i].pid <= 0)
			continue;
		struct slot *s = &p->sh->slots[i];

		while (waitpid(p->w[i].pid, NULL, 0) == -1 && errno == EINTR)
			;
		close(p->w[i].pidfd);
		p->w[i] = (struct worker){ 0, -1 };
		p->st.tasks += atomic_load(&s->tasks);
		p->st.chunks += atomic_load(&s->claims);
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

		if (!pj->complete && job_complete(p, j)) {
			complete_job(p, j);
		} else if (!pj->complete) {
			pj->complete = true;
			if (c->kind <= K_MAP)
				c->err = (struct mp_pool_error){ code, false,
					MP_POOL_NO_INDEX, 0, 0 };
			if (++c->jobs_done == c->njobs && c->submitted)
				finish_call(p, c);
		}
		retire(p, j);
	}
	p->suspects = 0;
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
	free(p->holes);
	if (p->efd >= 0)
		close(p->efd);
	free(p->pj);
	free(p->pfd);
	free(p->pfd_slot);
	free(p);
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
	p->efd = -1;
	p->workers = o.workers ? o.workers : cpus_available();
	p->retries = o.retries == 0 ? MP_POOL_DEFAULT_RETRIES :
		o.retries < 0 ? -1 : o.retries;
	p->maxtasks = o.maxtasksperchild;
	p->init = o.initializer;
	p->initargs = o.initargs;
	p->fin = o.finalizer;
	p->finargs = o.finargs;
	p->parent = getpid();
	p->arena_bytes = o.arena_bytes ? al(o.arena_bytes) : DEFAULT_ARENA;
	p->last.index = MP_POOL_NO_INDEX;
	for (int i = 0; i < MP_POOL_MAX_WORKERS; i++)
		p->w[i] = (struct worker){ 0, -1 };

	p->sh = mmap(NULL, sizeof *p->sh, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p->sh == MAP_FAILED)
		p->sh = NULL;
	/* Address space only: pages are touched (and count) as used. */
	p->arena = mmap(NULL, p->arena_bytes, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p->arena == MAP_FAILED)
		p->arena = NULL;
	p->heap_bytes = o.heap_bytes ? al(o.heap_bytes) : DEFAULT_HEAP;
	p->heap = mmap(NULL, p->heap_bytes, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p->heap == MAP_FAILED)
		p->heap = NULL;
	p->holes = malloc(sizeof *p->holes);
	if (p->holes) {
		p->holes[0] = (struct extent){ 0, p->heap_bytes };
		p->nholes = p->capholes = 1;
	}
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	p->pj = calloc(RING, sizeof *p->pj);
	p->pfd = calloc((size_t)p->workers + 1, sizeof *p->pfd);
	p->pfd_slot = calloc((size_t)p->workers + 1, sizeof *p->pfd_slot);
	if (!p->sh || !p->arena || !p->heap || !p->holes || p->efd == -1 ||
	    !p->pj || !p->pfd || !p->pfd_slot) {
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
		err = errno == ETIMEDOUT || p->nlive < p->workers ?
			ECHILD : errno;
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
	if (p->state == P_TERMINATED || p->state == P_JOINED) {
		p->state = P_JOINED;
		return 0;
	}
	wait_until(p, cond_idle, NULL, -1);
	if (p->state == P_TERMINATED) {  /* broke while waiting */
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

int mp_pool_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
		size_t n, size_t item_size, void *results, size_t result_size,
		size_t chunksize)
{
	struct mp_pool_async *h = mp_pool_map_async(p, fn, items, n,
						    item_size, results,
						    result_size, chunksize,
						    NULL, NULL);

	if (!h)
		return -1;
	int r = mp_pool_get(h, NULL, MP_POOL_FOREVER);
	int e = errno;

	mp_pool_async_free(h);
	errno = e;
	return r;
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
	struct mp_pool_async *h = mp_pool_apply_async(p, fn, arg, arg_size,
						      result_size, NULL, NULL);

	if (!h)
		return -1;
	int r = mp_pool_get(h, result, MP_POOL_FOREVER);
	int e = errno;

	mp_pool_async_free(h);
	errno = e;
	return r;
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

	if (!c) {
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
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
	mark_submitted(p, c);
	return c;
}

static struct mp_pool_async *map_async(struct mp_pool *p, mp_pool_fn fn,
				       const void *items, size_t n,
				       size_t isz, void *results, size_t rsz,
				       size_t chunksize, mp_pool_callback cb,
				       void *cb_arg)
{
	if (!p) {
		errno = EINVAL;
		return NULL;
	}
	size_t per = check_map(p, fn, items, n, isz, results, rsz, false);

	if (!per || !usable(p))
		return NULL;
	size_t chunk = chunksize ? chunksize : mp_pool_auto_chunksize(p, n);
	struct mp_pool_async *c = submit_map(p, K_MAP, fn, items, n, isz,
					     results, rsz, chunk, sizeof *c);

	if (!c)
		return NULL;
	c->cb = cb;
	c->cb_arg = cb_arg;
	mark_submitted(p, c);
	return c;
}

struct mp_pool_async *mp_pool_map_async(struct mp_pool *p, mp_pool_fn fn,
					const void *items, size_t n,
					size_t item_size, void *results,
					size_t result_size, size_t chunksize,
					mp_pool_callback cb, void *cb_arg)
{
	return map_async(p, fn, items, n, item_size, results, result_size,
			 chunksize, cb, cb_arg);
}

struct mp_pool_async *mp_pool_starmap_async(struct mp_pool *p,
					    mp_pool_fn fn, const void *args,
					    size_t n, size_t args_size,
					    void *results, size_t result_size,
					    size_t chunksize,
					    mp_pool_callback cb, void *cb_arg)
{
	return map_async(p, fn, args, n, args_size, results, result_size,
			 chunksize, cb, cb_arg);
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

bool mp_pool_ready(struct mp_pool_async *h)
{
	if (!h)
		return false;
	if (!h->finished && h->pool) {
		progress(h->pool);
		cond_finished(h->pool, h);
	}
	return h->finished;
}

static int64_t deadline_of(double timeout_s)
{
	if (timeout_s < 0)
		return -1;
	if (timeout_s > 1e9)
		timeout_s = 1e9;
	return now_ns() + (int64_t)(timeout_s * 1e9);
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
	size_t per = check_map(p, fn, items, n, isz, NULL, rsz, true);

	if (!per || !usable(p))
		return NULL;
	/* The iterator keeps its own copy of every result, so that a window
	 * can be retired (and its arena reused) whether or not it has been
	 * read yet: an unread iterator never blocks the pool. */
	char *ires = n && rsz ? malloc(n * rsz) : NULL;
	uint16_t *icode = calloc(n ? n : 1, sizeof *icode);
	uint8_t *iready = calloc(n ? n : 1, 1);
	size_t *fifo = kind == K_IMAP_UNORDERED ?
		malloc((n ? n : 1) * sizeof *fifo) : NULL;

	if ((n && rsz && !ires) || !icode || !iready ||
	    (kind == K_IMAP_UNORDERED && !fifo)) {
		free(ires);
		free(icode);
		free(iready);
		free(fifo);
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	/* Allocate the call first: submission may already copy results. */
	size_t chunk = chunksize ? chunksize : 1;  /* Python's imap default */
	bool sin = n && in_heap(p, items, n * isz);
	size_t win = n ? window_items(p, per - (sin ? isz : 0), &chunk) : 1;
	struct mp_pool_async *c = new_call(p, kind, fn, n, isz, rsz, chunk,
					   sizeof(struct mp_pool_iter));

	if (!c) {
		free(ires);
		free(icode);
		free(iready);
		free(fifo);
		set_last(p, ENOMEM, false, MP_POOL_NO_INDEX, 0, 0);
		return NULL;
	}
	c->shared_in = sin;
	c->ires = ires;
	c->icode = icode;
	c->iready = iready;
	c->fifo = fifo;
	c->njobs = (n + win - 1) / win;
	progress(p);
	for (size_t base = 0, w = 0; w < c->njobs; w++, base += win) {
		size_t cnt = n - base < win ? n - base : win;

		if (submit(p, c, base, cnt, (const char *)items + base * isz) ==
		    -1) {
			/* Items never submitted are reported as cancelled. */
			for (size_t i = base; i < n; i++) {
				c->icode[i] = (uint16_t)errno;
				c->iready[i] = 1;
				if (fifo)
					c->fifo[c->fifo_tail++] = i;
			}
			c->njobs = w;
			break;
		}
	}
	mark_submitted(p, c);
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
	if (!iter_has_next(c) && c->pool &&
	    wait_until(c->pool, cond_iter, c, deadline_of(timeout_s)) == -1) {
		set_last(c->pool, errno, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	if (!iter_has_next(c)) {  /* cannot happen: every item is pulled */
		set_last(c->pool, ECHILD, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	size_t g = c->kind == K_IMAP ? c->cursor++ : c->fifo[c->fifo_head++];

	c->delivered++;
	if (index)
		*index = g;
	if (c->icode[g]) {
		int code = c->icode[g];
		int sig = 0;
		pid_t pid = 0;

		for (size_t i = 0; i < c->nblames; i++)
			if (c->blames[i].index == g && c->blames[i].gaveup &&
			    code == EOWNERDEAD) {
				sig = c->blames[i].signal;
				pid = c->blames[i].pid;
			}
		set_last(c->pool, code, code != ECANCELED, g, sig, pid);
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
 * First fit over a sorted array of holes, in the parent's private memory.
 * Each block starts with a 64-byte header (magic, length) just before the
 * pointer handed out; workers never allocate. */

void *mp_pool_alloc(struct mp_pool *p, size_t size)
{
	if (!p || size == 0 || size > p->heap_bytes) {
		errno = EINVAL;
		return NULL;
	}
	size_t len = al(size) + LINE;

	for (size_t i = 0; i < p->nholes; i++) {
		struct extent *h = &p->holes[i];

		if (h->len < len)
			continue;
		uint64_t *hdr = (uint64_t *)(p->heap + h->off);

		hdr[0] = HEAP_MAGIC;
		hdr[1] = len;
		h->off += len;
		h->len -= len;
		if (h->len == 0) {
			memmove(h, h + 1, (p->nholes - i - 1) * sizeof *h);
			p->nholes--;
		}
		return hdr + LINE / sizeof *hdr;
	}
	errno = ENOMEM;
	return NULL;
}

int mp_pool_free(struct mp_pool *p, void *ptr)
{
	if (!ptr)
		return 0;
	uint64_t *hdr = (uint64_t *)ptr - LINE / sizeof(uint64_t);

	if (!p || !in_heap(p, hdr, LINE) || ((char *)hdr - p->heap) % LINE ||
	    hdr[0] != HEAP_MAGIC) {
		errno = EINVAL;
		return -1;
	}
	size_t off = (size_t)((char *)hdr - p->heap), len = hdr[1], i = 0;

	hdr[0] = 0;
	while (i < p->nholes && p->holes[i].off < off)
		i++;
	bool join_prev = i > 0 &&
		p->holes[i - 1].off + p->holes[i - 1].len == off;
	bool join_next = i < p->nholes && off + len == p->holes[i].off;

	if (join_prev && join_next) {
		p->holes[i - 1].len += len + p->holes[i].len;
		memmove(&p->holes[i], &p->holes[i + 1],
			(p->nholes - i - 1) * sizeof *p->holes);
		p->nholes--;
	} else if (join_prev) {
		p->holes[i - 1].len += len;
	} else if (join_next) {
		p->holes[i].off = off;
		p->holes[i].len += len;
	} else {
		if (p->nholes == p->capholes) {
			struct extent *h = realloc(p->holes, 2 * p->capholes *
						   sizeof *h);

			if (!h)
				return -1;  /* ENOMEM: the block stays used */
			p->holes = h;
			p->capholes *= 2;
		}
		memmove(&p->holes[i + 1], &p->holes[i],
			(p->nholes - i) * sizeof *p->holes);
		p->holes[i] = (struct extent){ off, len };
		p->nholes++;
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

	if (!p)
		return 0;
	for (int i = 0; i < p->workers; i++)
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
	*st = (struct mp_pool_stats){ 0 };
	if (!p)
		return;
	*st = p->st;
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0) {
			st->tasks += atomic_load(&p->sh->slots[i].tasks);
			st->chunks += atomic_load(&p->sh->slots[i].claims);
		}
}
