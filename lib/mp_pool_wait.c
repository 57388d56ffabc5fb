/* lib/mp_pool_wait.c -- the parent: bookkeeping, and waiting for work
 *
 * mpp_progress() is what the parent does whenever it enters the pool:
 * audit suspect jobs, deliver and retire finished ones
 * (mp_pool_collect.c), fork a worker for every empty slot
 * (mp_pool_recovery.c), and give up when it must.  mpp_wait_until() runs
 * it in a loop until a condition holds: it spins briefly, then sleeps in
 * ppoll() on the eventfd (workers write it when parent_waiting is set) and
 * on every worker's pidfd (readable when one dies).  At the end, the
 * descriptor of mp_pool_fd() is armed for the caller's event loop.
 *
 * Below: mp_pool_collect.c, mp_pool_recovery.c.  Above: mp_pool_submit.c
 * (a submission may wait for room), the public calls.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <poll.h>
#include <sched.h>
#include <sys/timerfd.h>

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
				mp_cpu_relax();
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
		 * a job (deferred), a worker that could not be forked, and
		 * the audits after a death (a worker that only ran items
		 * already done does not wake the parent when it leaves). */
		if ((p->deferred || p->nlive < p->workers || p->suspects) &&
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
