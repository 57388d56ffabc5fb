/* lib/mp_pool.c -- the public calls of the pool (see mp_pool.h)
 *
 * The top layer: creating and stopping a pool, the descriptor for event
 * loops (mp_pool_fd, mp_pool_poll), the blocking calls, apply and map with
 * their async handles, and inspection.  imap is in mp_pool_iter.c, the
 * shared heap (mp_pool_alloc) in mp_pool_heap.c.  Everything here goes
 * through the parent's layers below (mp_pool_submit.c, mp_pool_wait.c,
 * mp_pool_collect.c) and, at create and join, the worker processes
 * (mp_pool_recovery.c).
 * mp_pool_internal.h has the picture of the shared memory and of how the
 * files are layered.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

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

/* Unmap and close everything, and free the pool: 0, or -1 with the errno
 * of the first failure (of this teardown, or of an earlier close()). */
static int unmap_pool(struct mp_pool *p)
{
	int err = 0;

	if (p->sh && munmap(p->sh, sizeof *p->sh) == -1)
		err = errno;
	if (p->arena && munmap(p->arena, p->arena_bytes) == -1 && !err)
		err = errno;
	if (mpp_heap_release(p) == -1 && !err)
		err = errno;
	mpp_close_fd(p, &p->tfd);
	mpp_close_fd(p, &p->epfd);
	mpp_close_fd(p, &p->efd);
	if (!err)
		err = p->close_err;
	free(p->pj);
	free(p);
	errno = err;
	return err ? -1 : 0;
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
	p->efd = p->epfd = p->tfd = p->hfd = -1;
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
	p->heap_max = o.heap_bytes;
	p->last.index = MP_POOL_NO_INDEX;
	for (int i = 0; i < MP_POOL_MAX_WORKERS; i++)
		p->w[i] = (struct worker){ 0, -1 };

	p->sh = map_shared(sizeof *p->sh);
	p->arena = map_shared(p->arena_bytes);
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	/* Made now, empty, so that every worker inherits it (the heap grows
	 * in it later: mp_pool_heap.c). */
	p->hfd = memfd_create("mp_pool_heap", MFD_CLOEXEC);
	p->pj = calloc(RING, sizeof *p->pj);
	if (!p->sh || !p->arena || p->efd == -1 || p->hfd == -1 || !p->pj ||
	    (p->heap_max && mpp_heap_grow(p, p->heap_max) == -1)) {
		int e = errno ? errno : ENOMEM;

		(void)unmap_pool(p);  /* the first error is the one to report */
		errno = e;
		return NULL;
	}
	/* Fork the workers and wait until each has run its initializer. */
	p->creating = true;
	int err = 0;

	for (int i = 0; i < p->workers && !err; i++)
		if (mpp_spawn(p, i) == -1)
			err = errno;
	if (!err && (mpp_wait_until(p, cond_ready_or_dead, NULL, -1) == -1 ||
		     !all_ready(p)))
		err = p->nlive < p->workers ? ECHILD : errno;
	p->creating = false;
	if (err) {
		mpp_cancel_all(p, ECHILD);
		(void)unmap_pool(p);  /* the first error is the one to report */
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
		mpp_wait_until(p, cond_idle, NULL, -1);
	if (p->state != P_CLOSED) {  /* terminated (maybe while waiting) */
		p->state = P_JOINED;
		return 0;
	}
	uint64_t died = p->st.workers_died;

	p->shutdown_sent = true;
	atomic_store(&p->sh->shutdown, 1);
	atomic_fetch_add(&p->sh->wake_seq, 1);
	futex_wake(&p->sh->wake_seq, INT_MAX);
	mpp_wait_until(p, cond_no_workers, NULL, -1);
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
		mpp_cancel_all(p, ECANCELED);
	return 0;
}

int mp_pool_destroy(struct mp_pool *p)
{
	if (!p)
		return 0;
	if (p->state != P_JOINED && p->state != P_TERMINATED)
		mpp_cancel_all(p, ECANCELED);
	for (struct mp_pool_async *c = p->calls; c; c = c->next)
		c->pool = NULL;
	return unmap_pool(p);
}

/* ---- event loops ------------------------------------------------- */

int mp_pool_fd(struct mp_pool *p)
{
	if (!p) {
		errno = EINVAL;
		return -1;
	}
	if (p->epfd >= 0)
		return p->epfd;
	struct epoll_event ev = { .events = EPOLLIN };
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	int err = ep == -1 || tfd == -1 ? errno : 0;

	if (!err && (epoll_ctl(ep, EPOLL_CTL_ADD, p->efd, &ev) == -1 ||
		     epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == -1))
		err = errno;
	for (int i = 0; !err && i < p->workers; i++)
		if (p->w[i].pid > 0 &&
		    epoll_ctl(ep, EPOLL_CTL_ADD, p->w[i].pidfd, &ev) == -1)
			err = errno;
	if (err) {
		mpp_close_fd(p, &tfd);
		mpp_close_fd(p, &ep);
		set_last(p, err, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	p->epfd = ep;
	p->tfd = tfd;
	mpp_fd_arm(p);
	return ep;
}

int mp_pool_poll(struct mp_pool *p)
{
	uint64_t tick, before = p ? p->finished : 0;

	if (!p) {
		errno = EINVAL;
		return -1;
	}
	if (p->tfd >= 0 && read(p->tfd, &tick, sizeof tick) == sizeof tick)
		p->timer_armed = false;  /* it fired: arm it again if need be */
	/* Drain the eventfd and reap the workers that exited (no wait). */
	if (mpp_sleep_once(p, 0) == -1) {
		set_last(p, errno, false, MP_POOL_NO_INDEX, 0, 0);
		return -1;
	}
	mpp_progress(p);        /* audits, replacements, in-order delivery */
	mpp_complete_ready(p);  /* the calls finished out of order */
	mpp_collect(p);         /* retire: arena and descriptors back */
	mpp_fd_arm(p);
	uint64_t n = p->finished - before;

	return n > INT_MAX ? INT_MAX : (int)n;
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
	if (!mpp_usable(p))
		return NULL;
	struct mp_pool_async *c = mpp_new_call(p, K_APPLY, fn, 1, arg_size,
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
		mpp_collect(p);  /* now and then: callbacks, arena, slots */
	if (mpp_submit(p, c, 0, 1, arg) == -1) {
		c->err = (struct mp_pool_error){ errno, false,
						 MP_POOL_NO_INDEX, 0, 0 };
		c->njobs = 0;
	}
	mpp_mark_submitted(c);
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
	if (!mpp_check_map(p, fn, items, n, item_size, results, result_size,
			   false))
		return NULL;
	size_t chunk = chunksize ? chunksize : mp_pool_auto_chunksize(p, n);
	struct mp_pool_async *c = mpp_map_call(p, K_MAP, fn, items, n,
					       item_size, results, result_size,
					       chunk, sizeof *c);

	if (!c)
		return NULL;
	c->cb = cb;
	c->cb_arg = cb_arg;
	mpp_submit_windows(p, c, items);
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

		if (pj->call == c && !pj->complete && mpp_job_complete(p, s))
			mpp_complete_job(p, s);
	}
	return c->finished;
}

bool mp_pool_ready(struct mp_pool_async *h)
{
	if (!h)
		return false;
	if (!h->finished && h->pool) {
		int e = errno;

		/* A zero wait: it also reaps and replaces dead workers. */
		mpp_wait_until(h->pool, cond_finished, h, now_ns());
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
	if (mpp_wait_until(h->pool, cond_finished, h, deadline_of(timeout_s)) ==
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
	mpp_release_call(h);
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
	for (int i = 0; p && i < p->workers; i++) {
		if (p->w[i].pid <= 0)
			continue;
		st->tasks += atomic_load(&p->sh->slots[i].tasks);
		/* Stopped?  WNOWAIT: look, leave the report for others. */
		siginfo_t si = { 0 };

		if (waitid(P_PID, (id_t)p->w[i].pid, &si,
			   WSTOPPED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == p->w[i].pid && si.si_code == CLD_STOPPED)
			st->workers_stopped++;
	}
}
