/* lib/mp_pool_worker.c -- the worker side of the pool
 *
 * What a worker process does after fork(), and nothing else: the parent
 * enters this file through one call, mpp_worker_main(), in the child it
 * has just forked, and never calls anything else here.  Everything the
 * worker knows, it reads from the shared mapping (mp_pool_internal.h has
 * the picture); everything it tells the parent, it writes there, plus a
 * write to the eventfd when the parent sleeps in poll().
 *
 * The loop: look at first_open, the oldest job that may have work; claim
 * its next chunk with one atomic add on job.next; run the chunk's items,
 * then flag them all; when the job has no chunk left,
 * move first_open forward and go on with the next job; when there is no
 * job at all, spin for SPIN_NS, then sleep on the futex word wake_seq.
 * Three things ride along: a worker woken from that sleep passes the
 * wake-up on when more work waits (pass_wakeup_on); before it joins a job
 * it maps the heap segments made since its fork (map_heap); and it fills
 * its page table ahead for a job's pages (warm_job).
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>

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
 * microseconds), then sleep in the kernel.  Returns true on shutdown;
 * *slept says whether it slept (then it may have to pass the wake-up on). */
static bool worker_idle(const struct mp_pool *p, bool *slept)
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
			mp_cpu_relax();
		}
		if (atomic_load(&sh->shutdown))
			return true;
		sched_yield();
	} while (now_ns() < until);

	/* Read the futex word before the last look: a wake-up that comes
	 * after it changes the word, and FUTEX_WAIT then returns at once. */
	uint32_t seq = atomic_load(&sh->wake_seq);

	*slept = true;
	atomic_fetch_add(&sh->sleepers, 1);
	atomic_store(&sh->wake_pending, 0);  /* this sleeper needs a new one */
	if (!has_work(sh) && !atomic_load(&sh->shutdown)) {
		futex_wait(&sh->wake_seq, seq);  /* EINTR, EAGAIN: look again */
		atomic_store(&sh->wake_pending, 0);  /* let the next one come */
	}
	atomic_fetch_sub(&sh->sleepers, 1);
	return !has_work(sh) && atomic_load(&sh->shutdown);
}

/* The wake-up chain.  The parent saves system calls: a one-chunk job
 * (apply_async) published while a wake-up is still on its way to a sleeper
 * (wake_pending) wakes nobody, since that sleeper will find it.  So a
 * sleeper that wakes and claims work, and sees more unclaimed work behind
 * it (more chunks, or more jobs) while others still sleep, wakes one more
 * (two, if two more chunks wait): N queued jobs reach up to N sleepers,
 * one futex call each, made by the workers in parallel.  A map is started
 * the same way: the parent wakes one worker, the chain the rest.  Why
 * nothing is lost: the woken worker clears wake_pending before it reads
 * tail, and the parent stores tail before it reads wake_pending (both
 * seq_cst), so either the parent sees no wake-up pending and makes the
 * call itself, or the worker sees the new job. */
static void pass_wakeup_on(struct shared *sh, uint64_t j, uint64_t k,
			   uint64_t end)
{
	uint32_t sleepers = atomic_load(&sh->sleepers);

	if ((k + 1 < end || atomic_load(&sh->tail) > j + 1) && sleepers) {
		atomic_store(&sh->wake_pending, 1);
		atomic_fetch_add(&sh->wake_seq, 1);
		/* Two when there is work for two: the chain doubles, so W
		 * workers are all up after about log2(W) steps. */
		futex_wake(&sh->wake_seq, end - k > 2 && sleepers > 1 ? 2 : 1);
	}
}

/* Map the heap segments the parent made since this worker was forked, at
 * the parent's addresses (mp_pool_heap.c).  false if one cannot be: the
 * worker then retires, and its replacement inherits the mapping. */
static bool map_heap(const struct mp_pool *p, uint32_t *seen)
{
	uint32_t n = atomic_load_explicit(&p->sh->nsegs, memory_order_acquire);

	for (; *seen < n; (*seen)++) {
		const struct segment *s = &p->sh->segs[*seen];
		void *m = mmap((void *)(uintptr_t)s->addr, s->len,
			       PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_FIXED_NOREPLACE, p->hfd,
			       (off_t)s->off);

		if (m == MAP_FAILED)
			return false;
		if (m != (void *)(uintptr_t)s->addr) {  /* an old kernel */
			munmap(m, s->len);
			return false;
		}
	}
	return true;
}

/* First touches.  fork() copies no page table entries of a MAP_SHARED
 * mapping, so a worker takes a page fault on the first touch of every page
 * of the arena and the heap, even pages the parent (or another worker)
 * has long since written -- and a map's chunks land on a different worker
 * each time, so the faults go on for many calls.  Instead, a worker fills
 * its page table ahead (MADV_POPULATE_WRITE: one system call for a run of
 * pages, no fault per page) for the pages of each job it joins, the first
 * time it meets them: a bitmap per mapping (the arena, each heap segment)
 * says which it has met.  Only pages that jobs use are touched, so nothing
 * is allocated for nothing.  An old kernel (EINVAL) simply keeps
 * faulting; without memory for a bitmap, that mapping is not warmed. */
struct warm {
	size_t page;
	uint64_t *arena;                  /* one bit per page */
	uint64_t *seg[MAX_SEGMENTS];      /* allocated when first used */
};

static void warm_pages(uint64_t *bits, char *base, size_t off, size_t len,
		       size_t page)
{
	size_t pg = off / page, last = (off + len - 1) / page;

	while (pg <= last) {
		if (bits[pg / 64] & (UINT64_C(1) << (pg % 64))) {
			pg++;
			continue;
		}
		size_t run = pg;

		for (; run <= last &&
		       !(bits[run / 64] & (UINT64_C(1) << (run % 64))); run++)
			bits[run / 64] |= UINT64_C(1) << (run % 64);
		(void)madvise(base + pg * page, (run - pg) * page,
			      MADV_POPULATE_WRITE);
		pg = run;
	}
}

/* Warm [ptr, ptr + len): in the arena, or in a heap segment this worker
 * has mapped (segs of them). */
static void warm_range(const struct mp_pool *p, struct warm *w, uint32_t segs,
		       const void *ptr, size_t len)
{
	uintptr_t a = (uintptr_t)ptr, base = (uintptr_t)p->arena;

	if (!len)
		return;
	if (a >= base && a - base < p->arena_bytes) {
		if (w->arena)
			warm_pages(w->arena, p->arena, a - base, len, w->page);
		return;
	}
	for (uint32_t k = 0; k < segs; k++) {
		const struct segment *s = &p->sh->segs[k];

		if (a < s->addr || a - s->addr >= s->len)
			continue;
		if (!w->seg[k])
			w->seg[k] = calloc((s->len / w->page + 63) / 64,
					   sizeof(uint64_t));
		if (w->seg[k])
			warm_pages(w->seg[k], (char *)(uintptr_t)s->addr,
				   a - s->addr, len, w->page);
		return;
	}
}

static void warm_job(const struct mp_pool *p, struct warm *w, uint32_t segs,
		     const struct job *jb)
{
	warm_range(p, w, segs, jb->in, jb->n * jb->item_size);
	warm_range(p, w, segs, jb->out, jb->n * jb->result_size);
	warm_range(p, w, segs, jb->flags, jb->n);
	if (jb->stream)
		warm_range(p, w, segs, jb->errs, 2 * jb->n);
}

struct held { uint64_t job, mine; };

/* Stop holding a job: publish what was done in it, then clear the slot,
 * then, if it finished items, wake the parent (it may be waiting for this
 * job).  A worker that only found the job exhausted has nothing to tell:
 * waking for it would be a spurious wake-up of an event loop.  (A parent
 * that waits for a slot to be let go -- an audit, a descriptor to reuse --
 * rechecks every RECHECK_NS instead.) */
static void leave(const struct mp_pool *p, struct slot *me, struct held *h)
{
	if (h->job == NONE)
		return;
	bool news = h->mine != 0;

	if (news)
		atomic_fetch_add(&ring_job(p, h->job)->done_items, h->mine);
	h->mine = 0;
	atomic_store(&me->chunk, NONE);
	atomic_store(&me->job, NONE);
	h->job = NONE;
	if (news)
		wake_parent(p);
}

/* Set n flags to 1, eight at a time where they are aligned (relaxed:
 * the caller's release fence orders the results before them). */
static void flags_fill(uint8_t *f, uint64_t n)
{
	uint8_t *end = f + n;

	for (; f < end && ((uintptr_t)f & 7); f++)
		__atomic_store_n(f, 1, __ATOMIC_RELAXED);
	for (; end - f >= 8; f += 8)
		__atomic_store_n((uint64_t *)(void *)f,
				 UINT64_C(0x0101010101010101),
				 __ATOMIC_RELAXED);
	for (; f < end; f++)
		__atomic_store_n(f, 1, __ATOMIC_RELAXED);
}

/* Run the items of chunk k (those without a flag, if an audit reopened the
 * job after a death); returns how many it ran.  The flags are written once
 * the chunk is over, not item by item: neighbouring chunks' flags share a
 * cache line, and two workers flagging items in it by turns would bounce
 * that line between their CPUs at every item (a map of 2 million squares
 * at chunksize 16 took 5.0-5.2 ms on 2 CPUs that way, 3.2-3.4 ms now).
 * What a death
 * needs to know -- which item was running -- goes instead into the
 * worker's own slot, a line no one else writes. */
/* A failed task: record its code in the job (not inlined: the loops
 * below stay small enough to keep their variables in registers). */
__attribute__((noinline)) static void task_failed(struct job *jb,
						  uint64_t i, int rc)
{
	note_error(jb, i, rc >= 1 && rc <= (int)CODE_MASK ? rc : ERANGE);
}

static uint64_t run_chunk(struct slot *me, struct job *jb, uint64_t k)
{
	uint64_t start = k * jb->chunk;
	uint64_t stop = jb->n - start < jb->chunk ? jb->n : start + jb->chunk;
	size_t isz = jb->item_size, rsz = jb->result_size;
	const char *a = jb->in + start * isz;
	char *r = jb->out + start * rsz;
	uint8_t *f = jb->flags;
	mp_pool_fn fn = jb->fn;  /* a local: stays in a register */
	_Atomic uint64_t *item = &me->item;
	uint64_t ran = 0;

	/* If this worker dies, the parent reads chunk and item here: the
	 * items of the chunk before `item` are done (their flags are set
	 * for them), `item` is blamed, the rest run again. */
	atomic_store_explicit(item, NONE, memory_order_relaxed);
	atomic_store_explicit(&me->chunk, k, memory_order_relaxed);
	if (!atomic_load_explicit(&jb->rerun, memory_order_relaxed)) {
		/* The usual case, kept lean: one store and one call an item. */
		for (uint64_t i = start; i < stop; i++, a += isz, r += rsz) {
			atomic_store_explicit(item, i, memory_order_relaxed);
			int rc = fn(a, r);

			if (__builtin_expect(rc != 0, 0))
				task_failed(jb, i, rc);
		}
		ran = stop - start;
		/* The results (and codes) above, then the flags that publish
		 * them: a reader that sees a flag with acquire sees its
		 * result. */
		atomic_thread_fence(memory_order_release);
		flags_fill(f + start, ran);
	} else {
		/* Reopened after a death: skip the items already flagged. */
		for (uint64_t i = start; i < stop; i++, a += isz, r += rsz) {
			if (flag_load(&f[i]))
				continue;
			atomic_store_explicit(item, i, memory_order_relaxed);
			int rc = fn(a, r);

			if (rc)
				task_failed(jb, i, rc);
			ran++;
		}
		atomic_thread_fence(memory_order_release);
		for (uint64_t i = start; i < stop; i++)
			if (!flag_load(&f[i]))
				__atomic_store_n(&f[i], 1, __ATOMIC_RELAXED);
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
static bool worker_loop(const struct mp_pool *p, struct slot *me,
			struct warm *warm)
{
	struct shared *sh = p->sh;
	struct held h = { NONE, 0 };
	long done_chunks = 0;
	uint64_t tail = 0;  /* last value read: the line is the parent's */
	bool woken = false;  /* slept since its last claim: pass it on */
	uint32_t segs = p->nsegs;  /* heap segments mapped (at fork) */
	bool joined = false;  /* a new job: warm its pages (once) */

	for (;;) {
		uint64_t j = atomic_load(&sh->first_open);

		if (j >= tail)
			tail = atomic_load(&sh->tail);
		if (j >= tail) {
			leave(p, me, &h);
			woken = false;
			if (worker_idle(p, &woken))
				return false;
			continue;
		}
		struct job *jb = ring_job(p, j);

		if (h.job != j) {
			leave(p, me, &h);
			if (!map_heap(p, &segs))
				return true;  /* retire: see map_heap() */
			atomic_store(&me->job, j);
			h.job = j;
			joined = true;
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
		if (woken) {
			woken = false;
			pass_wakeup_on(sh, j, k, end);
		}
		if (joined) {  /* holding a chunk: the fields are this job's */
			joined = false;
			warm_job(p, warm, segs, jb);
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

/* The whole life of a worker, from fork() to _exit(). */
_Noreturn void mpp_worker_main(const struct mp_pool *p, int i)
{
	struct slot *me = &p->sh->slots[i];

	/* Die with the parent: a worker never outlives a crashed caller. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != p->parent)
		_exit(127);
	for (int k = 0; k < p->workers; k++)
		if (p->w[k].pid > 0)
			close(p->w[k].pidfd);  /* the siblings' pidfds */
	if (p->epfd >= 0) {  /* the caller's event loop's, not ours */
		close(p->epfd);
		close(p->tfd);
	}
	if (p->init) {
		atomic_store(&me->state, S_INIT);
		p->init(p->initargs);
	}
	atomic_store(&me->state, S_READY);
	wake_parent(p);
	struct warm warm = { .page = (size_t)sysconf(_SC_PAGESIZE) };

	warm.arena = calloc((p->arena_bytes / warm.page + 63) / 64,
			    sizeof(uint64_t));
	bool retiring = worker_loop(p, me, &warm);

	free(warm.arena);
	for (int k = 0; k < MAX_SEGMENTS; k++)
		free(warm.seg[k]);

	if (p->fin)
		p->fin(p->finargs);
	fflush(stdout);  /* what the tasks printed; the parent's was flushed
			  * before fork, so nothing is printed twice */
	fflush(stderr);
	atomic_store(&me->state, retiring ? S_RETIRING : S_LEAVING);
	_exit(0);  /* the parent learns it from the worker's pidfd */
}
