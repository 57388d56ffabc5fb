/* lib/mp_pool_dispatch.c -- the parent side of the pool: calls into jobs
 *
 * A call (struct mp_pool_async) becomes one job or several (a map larger
 * than a window is cut into windows of whole chunks); mpp_submit() copies a
 * job's items into the arena and publishes its descriptor in the ring.
 * Then the parent collects: a job is complete when its done_items reach n
 * (or, after a death, when its audit finds every flag set); complete jobs
 * hand their results to their call, in ring order, and are retired, which
 * frees their arena bytes and, once no worker can still look at it, their
 * descriptor.  mpp_progress() is that bookkeeping, run whenever the parent
 * enters the pool; mpp_wait_until() runs it in a loop until a condition
 * holds, sleeping in ppoll() on the eventfd and the workers' pidfds.
 *
 * Below: mp_pool_recovery.c (forks workers, reaps the dead, audits jobs).
 * Above: mp_pool.c and mp_pool_iter.c, the public calls.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>

/* ---- jobs: completion, delivery, retirement ----------------------- */

static void finish_call(struct mp_pool_async *c);

bool mpp_job_complete(struct mp_pool *p, uint64_t j)
{
	struct pjob *pj = ring_pjob(p, j);

	if (pj->complete)
		return true;
	if (atomic_load(&ring_job(p, j)->done_items) >= pj->n)
		return true;
	return pj->suspect && mpp_audit(p, j);
}

/* The error of item index (or the pool's own), for a call's report. */
struct mp_pool_error mpp_item_error(const struct mp_pool_async *c,
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
void mpp_complete_job(struct mp_pool *p, uint64_t j)
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
		c->err = mpp_item_error(c, index, (int)(key & CODE_MASK), true);
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
		mpp_pull_window(p, pj->call, pj, true);
	if (pj->suspect) {
		pj->suspect = false;
		p->suspects--;
	}
	mpp_release_call(pj->call);
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
void mpp_collect(struct mp_pool *p)
{
	while (p->head != p->tail) {
		uint64_t j = p->head;

		if (!ring_pjob(p, j)->complete) {
			if (!mpp_job_complete(p, j))
				break;
			mpp_complete_job(p, j);
		}
		retire(p, j);
	}
}

/* Everything the parent does whenever it enters the pool: audit, deliver
 * and retire jobs, and fork a worker for every empty slot. */
void mpp_progress(struct mp_pool *p)
{
	if (p->give_up) {  /* recovery gave up on the workers */
		int code = p->give_up;

		p->give_up = 0;
		mpp_cancel_all(p, code);
		return;
	}
	if (p->suspects)
		for (uint64_t q = p->head; q < p->tail; q++) {
			struct pjob *pj = ring_pjob(p, q);

			if (pj->suspect && !pj->complete && mpp_audit(p, q))
				mpp_complete_job(p, q);
		}
	mpp_collect(p);
	if (p->nlive < p->workers && !p->shutdown_sent && !p->creating &&
	    (p->state == P_RUNNING || p->state == P_CLOSED))
		for (int i = 0; i < p->workers; i++)
			if (p->w[i].pid <= 0 && mpp_spawn(p, i) == -1) {
				p->fork_err = errno;
				break;
			}
	if (p->nlive || p->head == p->tail) {
		p->fork_fail_since = 0;
		return;
	}
	/* No worker, none can be forked (EAGAIN: RLIMIT_NPROC, ENOMEM), and
	 * calls wait: keep trying for FORK_GRACE_NS (the limit may be
	 * passing), then fail them with fork()'s error instead of waiting
	 * for ever.  The pool stays usable: the next call tries again. */
	int64_t now = now_ns();

	if (!p->fork_fail_since)
		p->fork_fail_since = now;
	else if (now - p->fork_fail_since >= FORK_GRACE_NS) {
		p->fork_fail_since = 0;
		mpp_fail_outstanding(p, p->fork_err ? p->fork_err : EAGAIN);
	}
}

/* Sleep in ppoll() on the eventfd and every worker's pidfd for at most
 * wait ns (negative: no limit), then reap the workers that exited. */
int mpp_sleep_once(struct mp_pool *p, int64_t wait)
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
			mpp_handle_exit(p, slot[k]);
	if (pfd[0].revents) {
		uint64_t v;
		ssize_t rr = read(p->efd, &v, sizeof v);

		(void)rr;  /* EAGAIN: someone drained it */
	}
	return 0;
}

/* Wait until cond() holds, running mpp_progress() meanwhile: spin briefly,
 * then sleep in ppoll().  deadline is in now_ns() time, or negative for
 * none.  Even a deadline already past gets one look at the pidfds, so a
 * caller that polls (ready(), get() with timeout 0) sees dead workers
 * replaced and their items run again.  0, or -1 with ETIMEDOUT. */
int mpp_wait_until(struct mp_pool *p, mpp_cond cond, void *arg,
		   int64_t deadline)
{
	int64_t spin_until = now_ns() + SPIN_NS;
	bool armed = false, polled = false;
	int rc = 0;

	for (;;) {
		mpp_progress(p);
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
		if (mpp_sleep_once(p, wait) == -1) {
			rc = -1;
			break;
		}
		polled = true;
	}
	atomic_store(&p->sh->parent_waiting, 0);
	mpp_fd_arm(p);  /* the caller's event loop waits on after this */
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
int mpp_submit(struct mp_pool *p, struct mp_pool_async *c, size_t base,
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
		if (mpp_wait_until(p, cond_room, &need, -1) == -1)
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
	mpp_wake_workers(p, (n + chunk - 1) / chunk);
	return 0;
}

/* ---- calls ---------------------------------------------------------- */

void mpp_release_call(struct mp_pool_async *c)
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
	if (c->pool)
		c->pool->finished++;
	if (!c->cb)
		return;
	c->refs++;  /* the callback may free the handle */
	if (c->err.code)
		c->cb(c->cb_arg, NULL, &c->err);
	else
		c->cb(c->cb_arg, c->results, NULL);
	mpp_release_call(c);
}

/* size: bytes to allocate, at least sizeof *c (apply's result buffer
 * comes after it). */
struct mp_pool_async *mpp_new_call(struct mp_pool *p, int kind,
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

void mpp_mark_submitted(struct mp_pool_async *c)
{
	c->submitted = true;
	if (c->jobs_done == c->njobs && !c->finished)
		finish_call(c);
}

/* May the pool take new work?  (Sets EINVAL or its fatal error if not.) */
bool mpp_usable(struct mp_pool *p)
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
bool mpp_check_map(struct mp_pool *p, mp_pool_fn fn, const void *items,
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
	return mpp_usable(p);
}

/* A map or imap call, not yet submitted.  A map larger than WINDOW_CAP
 * bytes runs as several jobs ("windows") of whole chunks, so that copying
 * the next window in overlaps with running this one; a window never takes
 * more than a quarter of the arena (chunk shrinks to fit if need be). */
struct mp_pool_async *mpp_map_call(struct mp_pool *p, int kind,
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

	struct mp_pool_async *c = mpp_new_call(p, kind, fn, n, isz, rsz, chunk,
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
void mpp_submit_windows(struct mp_pool *p, struct mp_pool_async *c,
			const char *items)
{
	size_t n = c->n, win = c->win;

	mpp_progress(p);
	for (size_t base = 0, w = 0; w < c->njobs; w++, base += win) {
		if (mpp_submit(p, c, base, min_sz(n - base, win),
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
	mpp_mark_submitted(c);
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
void mpp_pull_window(struct mp_pool *p, struct mp_pool_async *c,
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

/* ---- cancelling ----------------------------------------------------- */

/* Kill every worker and fail everything outstanding with code (terminate:
 * ECANCELED; a pool whose workers die at start: ECHILD). */
void mpp_cancel_all(struct mp_pool *p, int code)
{
	mpp_kill_workers(p);
	p->state = P_TERMINATED;
	if (code != ECANCELED)
		p->broken = code;
	mpp_fail_outstanding(p, code);
}

/* Fail every job in flight with code (those already done are delivered).
 * Only with no live worker: nobody holds a job then. */
void mpp_fail_outstanding(struct mp_pool *p, int code)
{
	while (p->head != p->tail) {
		uint64_t j = p->head;
		struct pjob *pj = ring_pjob(p, j);
		struct mp_pool_async *c = pj->call;

		if (!pj->complete &&
		    atomic_load(&ring_job(p, j)->done_items) >= pj->n) {
			mpp_complete_job(p, j);
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

/* ---- event loops: mp_pool_fd() ---------------------------------------
 *
 * The caller's loop waits on an epoll set holding the eventfd and every
 * worker's pidfd (and a timer).  A pidfd is readable once its worker has
 * exited, until the pool reaps it.  The eventfd is written by a worker
 * that leaves a job while parent_waiting is set, and only by the one that
 * clears the flag; so after each mp_pool_poll() the pool sets the flag
 * again (one write per round, however many jobs finish).  Then it looks
 * once more: a job that finished before the flag was set sent nothing, so
 * the pool writes the eventfd itself, and the fd stays readable until a
 * poll has collected it (level-triggered, as epoll expects).  What sends
 * no wake-up at all -- a worker about to let go of a job that must be
 * audited, a worker that could not be forked -- arms the timer. */

/* Complete every job that has finished, in any order (collect() delivers
 * in ring order only, and a long job must not hold back the callbacks of
 * the short ones behind it). */
void mpp_complete_ready(struct mp_pool *p)
{
	if (p->scan < p->head)
		p->scan = p->head;
	for (uint64_t q = p->scan; q < p->tail; q++) {
		struct pjob *pj = ring_pjob(p, q);

		if (!pj->complete && mpp_job_complete(p, q))
			mpp_complete_job(p, q);
		if (pj->complete && q == p->scan)
			p->scan++;
	}
}

/* Is there something for mp_pool_poll() to do right now? */
static bool due(struct mp_pool *p)
{
	if (p->give_up)
		return true;
	for (uint64_t q = p->scan > p->head ? p->scan : p->head; q < p->tail;
	     q++) {
		struct pjob *pj = ring_pjob(p, q);

		if (!pj->complete &&
		    atomic_load(&ring_job(p, q)->done_items) >= pj->n)
			return true;
	}
	return false;
}

void mpp_fd_arm(struct mp_pool *p)
{
	static const uint64_t one = 1;

	if (p->epfd < 0)
		return;
	atomic_store(&p->sh->parent_waiting, 1);
	if (due(p) && write(p->efd, &one, sizeof one) == -1 &&
	    errno != EAGAIN && !p->close_err)
		p->close_err = errno;  /* cannot happen: an eventfd */
	bool recheck = p->head != p->tail &&
		(p->deferred || p->suspects ||
		 (p->nlive < p->workers && !p->shutdown_sent &&
		  (p->state == P_RUNNING || p->state == P_CLOSED)));

	if (recheck != p->timer_armed) {
		struct itimerspec its = { .it_value = { 0, recheck ?
							RECHECK_NS : 0 } };

		if (timerfd_settime(p->tfd, 0, &its, NULL) == 0)
			p->timer_armed = recheck;
	}
}
