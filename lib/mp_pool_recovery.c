/* lib/mp_pool_recovery.c -- the parent's side of the worker processes
 *
 * Starting a worker (fork, then mpp_worker_main() in the child: the one
 * call that crosses to mp_pool_worker.c), waking sleeping workers, and
 * what happens when one exits: reap it, read its slot to learn which job
 * and chunk it held, blame the item it was running, mark every job in
 * flight "suspect", and later audit each suspect job (scan its flags,
 * reopen it for the items that never finished).
 *
 * Called by the layers above: mp_pool_wait.c reaps through
 * mpp_handle_exit() and forks through mpp_spawn(), mp_pool_collect.c
 * audits through mpp_audit() and kills through mpp_kill_workers(),
 * mp_pool.c at create and join.  It calls nothing above it: when the pool
 * must give up (replacement workers keep dying in their initializer) it
 * sets p->give_up, and mpp_progress() cancels the outstanding work on its
 * next round.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"
#include "mp_util.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/wait.h>

/* close() a descriptor of the pool and mark it closed; the first failure
 * is kept for mp_pool_destroy() to report (EBADF: someone closed it). */
void mpp_close_fd(struct mp_pool *p, int *fd)
{
	if (*fd < 0)
		return;
	if (p->epfd >= 0 && *fd != p->epfd)  /* no error if it is not in */
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, *fd, NULL);
	if (close(*fd) == -1 && !p->close_err)
		p->close_err = errno;
	*fd = -1;
}

int mpp_spawn(struct mp_pool *p, int i)
{
	struct slot *s = &p->sh->slots[i];

	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->item, NONE);
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
		mpp_worker_main(p, i);
	int fd = mp_pidfd_open(pid);  /* a stand-in without pidfd_open */

	struct epoll_event ev = { .events = EPOLLIN };

	if (fd != -1 && p->epfd >= 0 &&
	    epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
		int e = errno;

		if (close(fd) == -1 && !p->close_err)
			p->close_err = errno;
		errno = e;
		fd = -1;
	}
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

/* Wake sleeping workers for a job of `chunks` chunks: one, and the
 * wake-up chain brings the others (mp_pool_worker.c: a woken worker that
 * sees more chunks wakes more sleepers).  Waking them all at once was
 * slower: woken together from the parent's CPU, two workers often landed
 * on the same CPU and shared it for milliseconds (a map of 2 million items
 * at chunksize 1024 on 2 CPUs: 2.30 ms median, 2.00-2.06 ms through the
 * chain).  One chunk needs one worker: while an earlier wake-up is still
 * on its way to one (it will run this job too), skip the system call --
 * apply_async submits in a loop. */
void mpp_wake_workers(struct mp_pool *p, uint64_t chunks)
{
	struct shared *sh = p->sh;

	if (!atomic_load(&sh->sleepers) ||
	    (chunks == 1 && atomic_load(&sh->wake_pending)))
		return;
	atomic_store(&sh->wake_pending, 1);
	atomic_fetch_add(&sh->wake_seq, 1);
	futex_wake(&sh->wake_seq, 1);
}

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

/* A worker died running item `item` of chunk k of job j (item: NONE if it
 * had not started one).  The chunk's items before it are done -- their
 * results are written, only their flags were still to come -- so flag
 * them.  Then count the death against the item, and after `retries`
 * re-runs give it up (flag 2, EOWNERDEAD) instead of running it again.
 * The rest of the chunk is re-run by the job's audit. */
static void blame(struct mp_pool *p, uint64_t j, uint64_t k, uint64_t item,
		  int sig, pid_t pid)
{
	struct job *jb = ring_job(p, j);
	struct pjob *pj = ring_pjob(p, j);
	uint64_t i = k * jb->chunk, end = min_sz(i + jb->chunk, jb->n);

	if (item == NONE || item < i || item >= end ||
	    flag_load(&jb->flags[item]))
		return;  /* it died between two chunks: nobody to blame */
	for (; i < item; i++)
		if (!flag_load(&jb->flags[i]))
			flag_store(&jb->flags[i], 1);
	struct blame *b = find_blame(pj->call, pj->base + item);

	if (!b)
		return;  /* ENOMEM: the item is simply run again */
	b->signal = sig;
	b->pid = pid;
	if (++b->tries > p->retries) {
		note_error(jb, item, EOWNERDEAD);
		flag_store(&jb->flags[item], 2);
	}
}

/* A worker's pidfd became readable: it has exited.  Reap it and learn
 * from its slot what it was doing. */
void mpp_handle_exit(struct mp_pool *p, int i)
{
	struct slot *s = &p->sh->slots[i];
	pid_t pid = p->w[i].pid;
	int status = 0;
	pid_t r;

	while ((r = waitpid(pid, &status, 0)) == -1 && errno == EINTR)
		;
	mpp_close_fd(p, &p->w[i].pidfd);
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
		uint64_t item = atomic_load(&s->item);

		p->st.workers_died++;
		/* Dying in the initializer counts; being killed before it
		 * (a kill at start-up) neither counts nor clears the count. */
		if (state == S_INIT)
			p->init_deaths++;
		else if (state != S_STARTING)
			p->init_deaths = 0;
		if (j >= p->head && j < p->tail && k != NONE &&
		    !ring_pjob(p, j)->complete)
			blame(p, j, k, item, r == pid && WIFSIGNALED(status) ?
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
		mpp_wake_workers(p, (uint64_t)p->workers);
	}
	atomic_store(&s->job, NONE);
	atomic_store(&s->chunk, NONE);
	atomic_store(&s->state, S_FREE);

	/* mpp_progress() forks the replacement, unless the replacements keep
	 * dying in their initializer: then give up rather than fork forever
	 * (mpp_progress() cancels everything with ECHILD). */
	if (!normal && state == S_INIT && !p->creating &&
	    p->init_deaths > p->retries + 1)
		p->give_up = ECHILD;
}

/* A suspect job (a worker died while it was in flight): once its chunks
 * are all claimed and no live worker holds it, find what is missing and
 * either declare it complete or reopen it for the missing items. */
bool mpp_audit(struct mp_pool *p, uint64_t j)
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
	atomic_store(&jb->rerun, true);  /* skip what is flagged */
	atomic_store(&jb->seq, j);
	uint64_t cur = atomic_load(&p->sh->first_open);

	while (cur > j &&
	       !atomic_compare_exchange_weak(&p->sh->first_open, &cur, j))
		;
	mpp_wake_workers(p, (hi - 1) / jb->chunk + 1 - lo / jb->chunk);
	return false;
}

/* SIGKILL every worker and reap it (terminate, or giving up).  The jobs
 * they held are mp_pool_collect.c's to fail. */
void mpp_kill_workers(struct mp_pool *p)
{
	/* Through the pidfd: the signal cannot reach a recycled pid. */
	for (int i = 0; i < p->workers; i++)
		if (p->w[i].pid > 0)
			mp_pidfd_send_signal(p->w[i].pidfd, p->w[i].pid,
					     SIGKILL);
	for (int i = 0; i < p->workers; i++) {
		if (p->w[i].pid <= 0)
			continue;
		struct slot *s = &p->sh->slots[i];

		while (waitpid(p->w[i].pid, NULL, 0) == -1 && errno == EINTR)
			;
		mpp_close_fd(p, &p->w[i].pidfd);
		p->w[i] = (struct worker){ 0, -1 };
		p->st.tasks += atomic_load(&s->tasks);
		atomic_store(&s->job, NONE);
		atomic_store(&s->state, S_FREE);
	}
	p->nlive = 0;
}
