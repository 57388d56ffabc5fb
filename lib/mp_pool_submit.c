/* lib/mp_pool_submit.c -- the parent: calls into jobs
 *
 * A call (struct mp_pool_async) is checked and made here, then cut into
 * jobs: one for apply, one per window for map and imap (a window is whole
 * chunks, about WINDOW_CAP bytes of items and results, so that copying the
 * next window in overlaps with running this one).  mpp_submit() takes
 * room in the arena (a ring of byte ranges) and a descriptor of the ring,
 * copies the items in, fills the descriptor and publishes it by storing
 * tail; then it wakes sleeping workers.  When there is no room it waits
 * (mp_pool_wait.c), collecting finished work meanwhile.
 *
 * Below: mp_pool_wait.c, mp_pool_collect.c, mp_pool_recovery.c.  Above:
 * the public calls (mp_pool.c, mp_pool_iter.c).
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <stdlib.h>
#include <string.h>

/* Room for a job of need arena bytes: a free descriptor and space in the
 * arena (a ring: used from a_head to a_tail, possibly wrapped)?  With
 * off, also take it. */
static bool arena_alloc(struct mp_pool *p, size_t need, size_t *off)
{
	size_t at;

	if (p->tail - p->head >= RING ||
	    (p->tail >= RING && !mpp_entry_reusable(p, p->tail - RING)))
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
		copy_window(a, items, n * isz);
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
	atomic_store_explicit(&jb->rerun, false, memory_order_relaxed);
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

/* ---- calls -------------------------------------------------------- */

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
		mpp_finish_call(c);
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
		/* Between two windows, deliver the ones that have finished:
		 * their results are copied out while the workers run the
		 * next, not all at the end while the workers wait. */
		if (mpp_submit(p, c, base, min_sz(n - base, win),
			       items + base * c->item_size) == 0) {
			mpp_progress(p);
			continue;
		}
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
