/* lib/mp_pool_iter.c -- imap and imap_unordered: results as they come
 *
 * An iterator is a map call whose windows stream: a worker publishes its
 * done_items after every chunk, not only when it leaves the job, so the
 * parent can copy results out of the arena (mpp_pull_window(), in
 * mp_pool_collect.c) while later chunks still run.  The iterator keeps its
 * own copy of every result, so a window can be retired whether or not it
 * has been read.  Only the public calls are here; it uses the layers
 * below it (mpp_map_call, mpp_submit_windows, mpp_wait_until).
 */
#include "mp_pool_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
		mpp_pull_window(p, c, pj, false);
		if (c->kind == K_IMAP && pj->pulled < pj->n)
			break;  /* in order: later windows can wait */
	}
	return iter_ready(c);
}
static struct mp_pool_iter *imap(struct mp_pool *p, int kind, mp_pool_fn fn,
				 const void *items, size_t n, size_t isz,
				 size_t rsz, size_t chunksize)
{
	if (!p) {
		errno = EINVAL;
		return NULL;
	}
	if (!mpp_check_map(p, fn, items, n, isz, NULL, rsz, true))
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
		c = mpp_map_call(p, kind, fn, items, n, isz, NULL, rsz,
				 chunksize ? chunksize : 1,  /* as Python */
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
	mpp_submit_windows(p, c, items);
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
	if (c->pool && mpp_wait_until(c->pool, cond_iter, c,
				      deadline_of(timeout_s)) == -1) {
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
		int code = c->icode[g];
		struct mp_pool_error e = mpp_item_error(c, g, code,
							code != ECANCELED);

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
