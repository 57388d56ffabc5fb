/* 1_synchronization/semaphores.c -- at most K of N processes inside at once
 *
 * Python:  slots = multiprocessing.Semaphore(K)  ...  with slots: download()
 *          Semaphore(K) and BoundedSemaphore(K) are SemLocks of kind
 *          SEMAPHORE with maxvalue SEM_VALUE_MAX and K (Lib/multiprocessing/
 *          synchronize.py): sem_open(name, O_CREAT | O_EXCL, 0600, K) in
 *          Modules/_multiprocessing/semaphore.c; a spawned child reopens it
 *          with sem_open(name, 0).  acquire(timeout=t) is sem_timedwait on a
 *          gettimeofday() deadline.  A bounded release() reads sem_getvalue
 *          and raises ValueError("semaphore or lock released too many times")
 *          at maxvalue: "not an absolute guarantee", says the source.
 * C:       sem_init(pshared=1) in MAP_SHARED memory; sem_open(O_CREAT|O_EXCL)
 *          in the parent, sem_open(name, 0) in each child, sem_close,
 *          sem_unlink; sem_wait/sem_post/sem_trywait/sem_timedwait/
 *          sem_getvalue; a bounded post made exact with a process-shared
 *          mutex, refusing with EOVERFLOW (our choice: C has no bounded
 *          semaphore; sem_post gives EOVERFLOW past SEM_VALUE_MAX).
 * Usage:   semaphores [--procs N (6, 1..64)] [--slots K (2, 1..64)]
 *                     [--rounds N (20, 1..10^9)] [--work-us N (1000, 0..10^6)]
 *                     [--no-limit]
 * Output:  [parent 24370 +0.1ms] sem_open made
 *                                /dev/shm/sem.mpp-semaphores-slots-24370
 *          [parent 24370 +67.1ms] sem_init: 6 workers x 20 rounds,
 *                                 at most 2 inside at once (slots 2),
 *                                 0 releases refused
 *          [parent 24370 +135.1ms] sem_open by name in each child:
 *                                  at most 2 inside at once (slots 2);
 *                                  sem_unlink
 *          [parent 24370 +235.2ms] sem_timedwait: ETIMEDOUT after 100.1 ms
 *                                  (acquire(timeout=0.1) is False)
 *          [parent 24370 +235.5ms] one release too many: plain sem_post 2 -> 3;
 *                                  bounded post EOVERFLOW ("released too many
 *                                  times"), value 2
 *          result: max inside 2,2 (K=2), entries 240/240, ETIMEDOUT,
 *                  bounded post refused, value 2, name gone OK
 * Try this: --no-limit (no semaphore: watch the maximum pass K and the
 *          verdict say MISMATCH); --slots 1 (a semaphore as a lock); drop
 *          a sem_post or make sem_init's pshared 0: waiters give up after
 *          their bound (2 s and up), the entries come out short: MISMATCH.
 */
#define _GNU_SOURCE /* sem_clockwait, pthread_mutex_clocklock */
#include "mp.h"

#include <fcntl.h>
#include <semaphore.h>

enum { TIMEOUT_MS = 100 };

struct shared {
	sem_t slots;               /* unnamed, pshared: lives in this page */
	pthread_mutex_t post_lock; /* serializes bounded_post() */
	_Atomic int inside, max_inside;
	_Atomic long entries, refused;
	_Atomic long gave_up;      /* waits that ran out, names not found */
	/* a child's extra releases: plain, bounded */
	int after_post, post_err;
};

/* An absolute CLOCK_MONOTONIC deadline s seconds from now.  Every wait of
 * the lesson is bounded: a lost post (or a semaphore that is not shared)
 * ends in MISMATCH, never in a hang. */
static struct timespec deadline_in(double s)
{
	return mp_deadline(CLOCK_MONOTONIC, s);
}

/* sem_wait, giving up at the bound: true when we got a slot. */
static bool sem_wait_bounded(struct shared *sh, sem_t *sem, double bound)
{
	struct timespec t = deadline_in(bound);
	int rc;

	while ((rc = sem_clockwait(sem, CLOCK_MONOTONIC, &t)) == -1 &&
	       errno == EINTR)
		;
	if (rc == -1 && errno != ETIMEDOUT)
		mp_die("sem_clockwait");
	if (rc == -1)
		atomic_fetch_add(&sh->gave_up, 1);
	return rc == 0;
}

/* BoundedSemaphore.release() in C: refuse to go past max.  Python reads the
 * value and posts without a lock, so two releasers can both see max - 1.
 * Here releasers take turns; waiters only lower the value meanwhile, so the
 * check stays true.  (Another way: count the holders in shared memory under
 * the same lock and refuse a release when none is held.) */
static int bounded_post(struct shared *sh, sem_t *sem, int max)
{
	int v, rc = 0;
	struct timespec t = deadline_in(2);
	int err = pthread_mutex_clocklock(&sh->post_lock, CLOCK_MONOTONIC, &t);

	if (err == ETIMEDOUT) { /* a lock that is not shared loses wake-ups */
		atomic_fetch_add(&sh->gave_up, 1);
		errno = ETIMEDOUT;
		return -1;
	}
	if (err != 0)
		mp_die_en(err, "pthread_mutex_clocklock");
	MP_CHECK(sem_getvalue(sem, &v));
	if (v >= max) {
		rc = -1;
		/* Our own choice of error number: the one sem_post gives past
		 * SEM_VALUE_MAX.  Python raises ValueError here instead. */
		errno = EOVERFLOW;
	} else {
		MP_CHECK(sem_post(sem));
	}
	MP_CHECK_PT(pthread_mutex_unlock(&sh->post_lock));
	return rc;
}

/* The section we limit: count who is inside, remember the maximum. */
static void occupy(struct shared *sh, long work_us)
{
	int now = atomic_fetch_add(&sh->inside, 1) + 1;
	int max = atomic_load(&sh->max_inside);

	while (now > max &&
	       !atomic_compare_exchange_weak(&sh->max_inside, &max, now))
		; /* max now holds the fresh value: try again */
	struct timespec t = { work_us / 1000000, work_us % 1000000 * 1000 };

	MP_CHECK(nanosleep(&t, NULL)); /* a download, holding its slot */
	atomic_fetch_sub(&sh->inside, 1);
	atomic_fetch_add(&sh->entries, 1);
}

/* N workers, each entering rounds times.  With a name, each child opens
 * the semaphore itself, as a spawned Python child does. */
static int run(struct shared *sh, const char *name, long procs, long slots,
	       long rounds, long work_us, bool limit)
{
	atomic_store(&sh->max_inside, 0);
	/* The parent holds post_lock while the workers start, so the first
	 * releasers queue on it: its unlock must wake sleepers in other
	 * processes (a mutex that is not process-shared would lose that
	 * wake-up, and they would give up after 2 s). */
	struct timespec t = deadline_in(2);
	int held = pthread_mutex_clocklock(&sh->post_lock, CLOCK_MONOTONIC, &t);

	if (held != 0 && held != ETIMEDOUT) /* ETIMEDOUT: a broken unlock */
		mp_die_en(held, "pthread_mutex_clocklock");
	for (long p = 0; p < procs; p++) {
		if (mp_fork() != 0)
			continue;
		sem_t *sem = name ? sem_open(name, 0) : &sh->slots;

		if (sem == SEM_FAILED && errno == ENOENT) { /* unlinked early */
			mp_say("child", "sem_open(%s): ENOENT", name);
			atomic_fetch_add(&sh->gave_up, 1);
			_exit(EXIT_SUCCESS); /* the entries come out short */
		}
		if (sem == SEM_FAILED)
			mp_die("sem_open(%s)", name);
		/* A slot frees every work_us; waits longer than this bound
		 * mean a lost post. */
		double bound = 2 + 2.0 * (double)procs * (double)work_us / 1e6;

		for (long i = 0; i < rounds; i++) {
			if (limit && !sem_wait_bounded(sh, sem, bound))
				break; /* entries come out short: MISMATCH */
			occupy(sh, work_us);
			if (!limit)
				continue;
			if (name) {
				MP_CHECK(sem_post(sem));
				continue;
			}
			if (bounded_post(sh, sem, (int)slots) == 0)
				continue;
			if (errno == ETIMEDOUT)
				break; /* no post_lock: counted in gave_up */
			atomic_fetch_add(&sh->refused, 1);
		}
		if (name)
			MP_CHECK(sem_close(sem));
		_exit(EXIT_SUCCESS);
	}
	MP_CHECK(nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL));
	if (held == 0)
		MP_CHECK_PT(pthread_mutex_unlock(&sh->post_lock));
	else
		atomic_fetch_add(&sh->gave_up, 1);
	mp_wait_all();
	return atomic_load(&sh->max_inside);
}

int main(int argc, char *argv[])
{
	long procs = 6, slots = 2, rounds = 20, work_us = 1000;
	bool no_limit = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 1, 64, "worker processes"),
		MP_OPT_L("slots", &slots, 1, 64,
			 "how many may be inside at once"),
		MP_OPT_L("rounds", &rounds, 1, 1000000000,
			 "entries per worker"),
		MP_OPT_L("work-us", &work_us, 0, 1000000,
			 "microseconds inside"),
		MP_OPT_F("no-limit", &no_limit,
			 "skip the semaphore (to see it fail)"),
	};

	mp_parse_options(argc, argv, "A counting semaphore bounding how "
			 "many processes are inside; timed waits; a bounded "
			 "release.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. An unnamed semaphore in shared memory (pshared = 1), and a named
	 *    one, under /dev/shm until sem_unlink, on every way out. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	char path[96], sem_name[64];
	pthread_mutexattr_t a;

	if (!sh)
		mp_die("mp_shm_alloc");
	MP_CHECK(sem_init(&sh->slots, 1, (unsigned)slots));
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&sh->post_lock, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
	mp_ipc_name(sem_name, sizeof sem_name, "slots");
	/* On Ctrl-C or an error exit (mp_die), the name is unlinked for us. */
	MP_CHECK(mp_atcleanup(mp_cleanup_sem, sem_name));
	/* sem_open writes a temporary /dev/shm/sem.XXXXXX first and renames
	 * it: a Ctrl-C in between would strand that file, so hold the stop
	 * signals for the call. */
	sigset_t old;

	MP_CHECK(mp_block_stop_signals(&old));
	sem_t *named = sem_open(sem_name, O_CREAT | O_EXCL, 0600,
				(unsigned)slots);

	if (named == SEM_FAILED)
		mp_die("sem_open(%s)", sem_name);
	MP_CHECK(mp_restore_signals(&old));
	/* glibc keeps a named semaphore in a file: /dev/shm/sem.<name> */
	snprintf(path, sizeof path, "/dev/shm/sem.%s", sem_name + 1);
	MP_CHECK(access(path, F_OK));
	mp_say("parent", "sem_open made %s", path);

	/* 2. The same workload through each: the maximum never passes K.
	 *    Then nobody needs the name: unlink it, our handle stays valid. */
	bool limit = !no_limit;
	int max_unnamed = run(sh, NULL, procs, slots, rounds, work_us, limit);

	mp_say("parent", "sem_init: %ld workers x %ld rounds, at most %d "
	       "inside at once (slots %ld), %ld releases refused", procs,
	       rounds, max_unnamed, slots, atomic_load(&sh->refused));
	int max_named = run(sh, sem_name, procs, slots, rounds, work_us,
			    limit);

	MP_CHECK(sem_unlink(sem_name));
	MP_CHECK(mp_cancel_cleanup(mp_cleanup_sem, sem_name));
	bool gone = access(path, F_OK) == -1 && errno == ENOENT;
	mp_say("parent", "sem_open by name in each child: at most %d inside "
	       "at once (slots %ld); sem_unlink", max_named, slots);

	/* 3. Timed waits: take every slot, then ask for one more. */
	long took = 0; /* fewer than K: a post went missing above */
	int busy = 0;

	while ((busy = sem_trywait(named) == -1 ? errno : 0) == 0 &&
	       took < slots)
		took++;
	if (busy != 0 && busy != EAGAIN)
		mp_die_en(busy, "sem_trywait");
	mp_say("parent", "took %ld of %ld slots; sem_trywait: %s (acquire("
	       "block=False) is False)", took, slots, mp_errname(busy));
	/* The deadline is absolute, on CLOCK_REALTIME (a clock that can be
	 * set); glibc's sem_clockwait() accepts CLOCK_MONOTONIC instead. */
	struct timespec dl;

	MP_CHECK(clock_gettime(CLOCK_REALTIME, &dl));
	dl.tv_nsec += TIMEOUT_MS * 1000000L;
	dl.tv_sec += dl.tv_nsec / 1000000000L;
	dl.tv_nsec %= 1000000000L;
	int64_t t0 = mp_now_ns();
	int timed = sem_timedwait(named, &dl) == -1 ? errno : 0;
	double waited_ms = mp_elapsed_s(t0) * 1e3;

	mp_say("parent", "sem_timedwait: %s after %.1f ms (acquire(timeout="
	       "%g) is False)", mp_errname(timed), waited_ms, TIMEOUT_MS / 1e3);
	for (long i = 0; i < took + (busy == 0) + (timed == 0); i++)
		MP_CHECK(sem_post(named));

	/* 4. One release too many, by a child: a plain sem_post takes the
	 *    value past K without a word; the bounded post refuses it. */
	if (mp_fork() == 0) {
		MP_CHECK(sem_post(named));
		MP_CHECK(sem_getvalue(named, &sh->after_post));
		MP_CHECK(sem_trywait(named)); /* undo it */
		sh->post_err = bounded_post(sh, named, (int)slots) ? errno : 0;
		_exit(EXIT_SUCCESS);
	}
	mp_wait_all();
	int bounded, after = sh->after_post;

	MP_CHECK(sem_getvalue(named, &bounded));
	mp_say("parent", "one release too many: plain sem_post %ld -> %d; "
	       "bounded post %s (\"released too many times\"), value %d",
	       slots, after, mp_errname(sh->post_err), bounded);

	/* 5. Clean up and check. */
	MP_CHECK(sem_close(named));
	MP_CHECK(sem_destroy(&sh->slots));
	int held_on = pthread_mutex_destroy(&sh->post_lock); /* EBUSY */

	if (held_on != 0 && held_on != EBUSY) /* EBUSY: an unlock missing */
		mp_die_en(held_on, "pthread_mutex_destroy");

	/* With work inside, K workers overlap at some point: a maximum below
	 * K means a semaphore made with less than K.  With none, they need
	 * not overlap, and only "at most K" is judged. */
	long entries = atomic_load(&sh->entries), want = 2 * procs * rounds;
	long full = procs < slots ? procs : slots;
	bool filled = work_us == 0 ||
		      (max_unnamed == full && max_named == full);
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = max_unnamed <= slots && max_named <= slots && filled &&
		  gone && atomic_load(&sh->gave_up) == 0 && took == slots &&
		  held_on == 0 &&
		  entries == want && atomic_load(&sh->refused) == 0 &&
		  busy == EAGAIN && timed == ETIMEDOUT &&
		  waited_ms >= TIMEOUT_MS - 1 &&
		  after == (int)slots + 1 && sh->post_err == EOVERFLOW &&
		  bounded == (int)slots && reaped;

	printf("result: max inside %d,%d (K=%ld), entries %ld/%ld, %s, bounded "
	       "post %s, value %d, name %s %s\n", max_unnamed, max_named,
	       slots, entries, want, mp_errname(timed),
	       sh->post_err ? "refused" : "NOT refused", bounded,
	       gone ? "gone" : "STILL THERE", ok ? "OK" : "MISMATCH");
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
