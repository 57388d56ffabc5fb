/* lib/mp_pool_collect.c -- the parent: finished jobs back to their calls
 *
 * The bottom of the parent's dispatch.  A job is complete when its
 * done_items reach n (or, after a death, when its audit -- in
 * mp_pool_recovery.c -- finds every flag set).  A complete job hands its
 * results to its call (copied out of the arena unless they were written
 * in the caller's shared heap block) and, once every job of the call is
 * in, the call finishes and its callback runs.  Jobs are then retired in
 * ring order: that frees their arena bytes and, once no worker can still
 * look at it, their descriptor.  imap windows are copied into the
 * iterator's own arrays here too, and cancelling (terminate, or giving up)
 * fails whatever is still in flight.
 *
 * Below: mp_pool_recovery.c (audits, killing workers).  Above:
 * mp_pool_wait.c (runs all this while it waits), mp_pool_submit.c.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- jobs: completion, delivery, retirement ----------------------- */

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
		copy_window((char *)c->results + pj->base * c->result_size,
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
		mpp_finish_call(c);
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
bool mpp_entry_reusable(struct mp_pool *p, uint64_t old)
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

/* ---- calls: the end of a call ------------------------------------- */

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

void mpp_finish_call(struct mp_pool_async *c)
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

/* ---- cancelling --------------------------------------------------- */

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
				mpp_finish_call(c);
		}
		retire(p, j);
	}
}
