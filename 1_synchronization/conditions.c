/* 1_synchronization/conditions.c -- a condition variable shared by
 * processes: the predicate loop, signal against broadcast, a timed wait
 *
 * Python:  cond = multiprocessing.Condition()
 *          with cond: cond.wait_for(lambda: tickets.value > 0, timeout)
 *          with cond: cond.notify()  /  cond.notify_all()
 *          Lib/multiprocessing/synchronize.py builds Condition from a lock
 *          (an RLock unless one is passed) and three Semaphore(0):
 *          _sleeping_count, _woken_count and _wait_semaphore.  wait() posts
 *          _sleeping_count, releases the lock, and blocks on _wait_semaphore;
 *          notify(n) posts _wait_semaphore once per sleeper it wakes and then
 *          blocks on _woken_count until each of them has woken.  wait_for()
 *          loops on the predicate with a time.monotonic() deadline, but the
 *          semaphore's own timed wait (sem_timedwait in Modules/
 *          _multiprocessing/semaphore.c) gets a gettimeofday() deadline:
 *          the wall clock, which jumps when the date is set.
 * C:       pthread_cond_t + pthread_mutex_t in MAP_SHARED memory, both
 *          PTHREAD_PROCESS_SHARED; pthread_condattr_setclock(CLOCK_MONOTONIC)
 *          for pthread_cond_timedwait; pthread_cond_signal (at least one
 *          waiter) against pthread_cond_broadcast (every waiter), which
 *          return at once: unlike notify(), they do not wait for the woken.
 *          glibc's signal wakes exactly one waiter when there are any; the
 *          lesson counts every wake-up for 0.1 s after it to show that.
 * Usage:   conditions [--waiters N (4, 2..64)] [--timeout S (0.2, 0.01..600)]
 * Output:  [parent 24395 +0.8ms] 4 waiters asleep in wait_for(tickets > 0)
 *          [parent 24395 +1.0ms] 1 ticket + signal: 1 wake-up, 1 ticket taken,
 *                                3 still asleep
 *          [parent 24395 +1.1ms] 1 ticket + broadcast: 3 wake-ups,
 *                                1 ticket taken, 2 went back to sleep
 *                                (the while loop)
 *          [parent 24395 +1.2ms] 2 tickets + broadcast: every waiter has its
 *                                ticket
 *          [parent 24395 +201.7ms] wait_for(tickets > 0, timeout=0.2) in a
 *                                  child: False (ETIMEDOUT) after 200.1 ms
 *          result: taken=4/4 signal=1 wake broadcast=3/3 wakes
 *                  timed out=200.1 ms OK
 * Try this: --waiters 64; in round_of() swap pthread_cond_signal for
 *          pthread_cond_broadcast: one ticket then wakes every waiter, the
 *          signal round counts N wake-ups and the verdict says MISMATCH.
 *          Swap the broadcast for a signal: two waiters wait out their
 *          3 s and MISMATCH.  Drop the mutex's setpshared: wake-ups are
 *          lost between processes, and the watchdog ends the run.
 */
#include "mp.h"

enum { WAITER_S = 3 }; /* a waiter's bound: the rounds take milliseconds */

struct shared {
	pthread_mutex_t lock;    /* guards everything below */
	pthread_cond_t cv;       /* waiters sleep here until tickets > 0 */
	pthread_cond_t changed;  /* the parent sleeps here: a count changed */
	int tickets, taken, asleep, wakes;
	int want_taken, want_asleep, want_wakes; /* what the parent waits for */
	int64_t waited_ns;       /* the timed-out child's wait */
	bool timed_out;
};

static bool has_ticket(const struct shared *sh)
{
	return sh->tickets > 0;
}

static bool more_wakes(const struct shared *sh)
{
	return sh->wakes >= sh->want_wakes;
}

static bool counts_reached(const struct shared *sh)
{
	return sh->taken == sh->want_taken && sh->asleep == sh->want_asleep &&
	       sh->wakes >= sh->want_wakes;
}

/* Condition.wait_for(predicate, timeout), called with sh->lock held: the
 * predicate's value once it holds or the timeout passed.  The loop is the
 * point: a wake-up says "look again", never "it is true now" (another
 * process may have been first, and POSIX allows spurious wake-ups).
 * counted: keep sh->asleep and sh->wakes, for the parent to watch. */
static bool wait_for(struct shared *sh, pthread_cond_t *cv,
		     bool (*pred)(const struct shared *), double timeout_s,
		     bool counted)
{
	/* on the condition variable's clock */
	struct timespec deadline = mp_deadline(CLOCK_MONOTONIC, timeout_s);
	int rc = 0;

	while (!pred(sh) && rc == 0) {
		if (counted) { /* a waiter: tell the parent it sleeps */
			sh->asleep++;
			MP_CHECK_PT(pthread_cond_broadcast(&sh->changed));
		}
		rc = pthread_cond_timedwait(cv, &sh->lock, &deadline);
		if (counted) {
			sh->asleep--;
			sh->wakes++;
		}
	}
	if (rc != 0 && rc != ETIMEDOUT)
		mp_die_en(rc, "pthread_cond_timedwait");
	return pred(sh);
}

/* A waiter: sleep until a ticket is there, take it, leave. */
static void waiter(struct shared *sh, double bound)
{
	MP_CHECK_PT(pthread_mutex_lock(&sh->lock));
	if (wait_for(sh, &sh->cv, has_ticket, bound, true)) {
		sh->tickets--;
		sh->taken++;
	}
	MP_CHECK_PT(pthread_cond_broadcast(&sh->changed));
	MP_CHECK_PT(pthread_mutex_unlock(&sh->lock));
}

/* Give out tickets, wake with signal or broadcast, then wait (bounded) until
 * the counts settle where they must.  Called with sh->lock held. */
static bool round_of(struct shared *sh, int tickets, bool all, int taken,
		     int asleep, int wakes)
{
	sh->tickets += tickets;
	if (tickets > 0 && all)
		MP_CHECK_PT(pthread_cond_broadcast(&sh->cv));
	else if (tickets > 0)
		MP_CHECK_PT(pthread_cond_signal(&sh->cv));
	sh->want_taken = taken;
	sh->want_asleep = asleep;
	sh->want_wakes = wakes;
	return wait_for(sh, &sh->changed, counts_reached, 2, false);
}

static void init_sync(struct shared *sh)
{
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;

	MP_CHECK_PT(pthread_mutexattr_init(&ma));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&sh->lock, &ma));
	MP_CHECK_PT(pthread_mutexattr_destroy(&ma));
	MP_CHECK_PT(pthread_condattr_init(&ca));
	MP_CHECK_PT(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
	MP_CHECK_PT(pthread_cond_init(&sh->cv, &ca));
	MP_CHECK_PT(pthread_cond_init(&sh->changed, &ca));
	MP_CHECK_PT(pthread_condattr_destroy(&ca));
}

int main(int argc, char *argv[])
{
	long n = 4;
	double timeout = 0.2;
	const struct mp_opt opts[] = {
		MP_OPT_L("waiters", &n, 2, 64, "waiting processes"),
		MP_OPT_D("timeout", &timeout, 0.01, 600,
			 "seconds of the timed wait that runs out"),
	};

	mp_parse_options(argc, argv, "A process-shared condition variable: "
			 "predicate loop, signal vs broadcast, timed wait.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();
	int w = (int)n;

	/* 1. Mutex and conditions in shared memory, made before fork(). */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	if (!sh)
		mp_die("mp_shm_alloc");
	init_sync(sh);

	/* 2. N waiters; the parent waits until all of them sleep.  Each round
	 *    below gives up after 2 s, a waiter after WAITER_S, the whole run
	 *    after the watchdog's bound: a broken lesson ends in MISMATCH. */
	double bound = WAITER_S + 1 + timeout;

	/* The last bound (mp_watchdog): a mutex that is not process-shared
	 * loses its wake-ups across processes, and pthread_cond_timedwait
	 * re-takes the mutex with no time limit, so no timed call bounds
	 * that. */
	MP_CHECK_PT(mp_watchdog(bound, NULL, "a lost wake-up"));
	/* The parent holds the mutex while they start, so they queue on it:
	 * its unlock must wake sleepers in other processes.  (A mutex that is
	 * not process-shared would lose that wake-up: the watchdog's case.) */
	MP_CHECK_PT(pthread_mutex_lock(&sh->lock));
	for (int i = 0; i < w; i++)
		if (mp_fork() == 0) {
			waiter(sh, WAITER_S);
			_exit(EXIT_SUCCESS);
		}
	MP_CHECK(nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL));
	bool ok = round_of(sh, 0, false, 0, w, 0);
	mp_say("parent", "%d waiters asleep in wait_for(tickets > 0)",
	       sh->asleep);

	/* 3. One ticket and a signal: one waiter wakes and takes it.  Then
	 * give any other wake-up time to show (woken processes are runnable
	 * and count themselves within microseconds): with signal none comes. */
	ok = ok && round_of(sh, 1, false, 1, w - 1, 1);
	sh->want_wakes = 2;
	wait_for(sh, &sh->changed, more_wakes, 0.1, false);
	int signal_wakes = sh->wakes;
	mp_say("parent", "1 ticket + signal: %d wake-up, %d ticket taken, %d "
	       "still asleep", signal_wakes, sh->taken, sh->asleep);

	/* 4. One ticket and a broadcast: all wake, one gets it, and the rest
	 * find the predicate false and sleep again. */
	ok = ok && round_of(sh, 1, true, 2, w - 2, signal_wakes + w - 1);
	int bcast_wakes = sh->wakes - signal_wakes;
	mp_say("parent", "1 ticket + broadcast: %d wake-ups, 1 ticket taken, "
	       "%d went back to sleep (the while loop)", bcast_wakes,
	       sh->asleep);

	/* 5. A ticket for each of the rest. */
	ok = ok && round_of(sh, w - 2, true, w, 0, 0);
	mp_say("parent", "%d tickets + broadcast: every waiter has its ticket",
	       w - 2);
	int taken = sh->taken;
	MP_CHECK_PT(pthread_mutex_unlock(&sh->lock));
	mp_wait_all();
	/* Every waiter joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a waiter was never joined (no waitpid)");

	/* 6. wait_for() with a timeout, in a child: no ticket comes. */
	if (mp_fork() == 0) {
		MP_CHECK_PT(pthread_mutex_lock(&sh->lock));
		int64_t t0 = mp_now_ns();
		sh->timed_out = !wait_for(sh, &sh->cv, has_ticket, timeout,
					  false);
		sh->waited_ns = mp_now_ns() - t0;
		MP_CHECK_PT(pthread_mutex_unlock(&sh->lock));
		_exit(EXIT_SUCCESS);
	}
	mp_wait_all();
	double waited = (double)sh->waited_ns / 1e9;
	mp_say("parent", "wait_for(tickets > 0, timeout=%g) in a child: %s "
	       "after %.1f ms", timeout,
	       sh->timed_out ? "False (ETIMEDOUT)" : "True", waited * 1e3);

	/* 7. Clean up and judge. */
	ok = ok && reaped && taken == w && signal_wakes == 1 &&
	     bcast_wakes >= w - 1 && sh->timed_out && waited >= timeout &&
	     waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
	MP_CHECK_PT(pthread_cond_destroy(&sh->cv));
	MP_CHECK_PT(pthread_cond_destroy(&sh->changed));
	ok = mp_mutex_destroy(&sh->lock) && ok;
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	printf("result: taken=%d/%d signal=%d wake broadcast=%d/%d wakes "
	       "timed out=%.1f ms %s\n", taken, w, signal_wakes, bcast_wakes,
	       w - 1, waited * 1e3, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
