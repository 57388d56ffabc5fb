/* 1_synchronization/events.c -- Python's Event between processes: a flag
 * behind a mutex and a condition variable, then the same signal as an eventfd
 *
 * Python:  ev = multiprocessing.Event(); ev.set(); ev.clear(); ev.is_set();
 *          ev.wait(timeout) -> True once set, False after the timeout.
 *          Lib/multiprocessing/synchronize.py builds it from a
 *          Condition(Lock()) and a Semaphore(0) as the flag: set() raises the
 *          flag and calls notify_all(); wait() does one cond.wait(timeout)
 *          unless the flag is up, then returns the flag.  With Condition's
 *          three semaphores, one Event is five SemLocks (sem_open,
 *          Modules/_multiprocessing/semaphore.c).
 * C:       a mutex, a condition (timed on CLOCK_MONOTONIC) and a flag, all
 *          PTHREAD_PROCESS_SHARED in MAP_SHARED memory; then eventfd(2): set =
 *          write 1, is_set = poll with timeout 0, wait = poll, clear = read.
 * Usage:   events [--procs N (4, 1..64)] [--timeout S (0.1, 0.01..60)]
 *                 [--delay-ms N (50, 0..600000)] [--jobs N (2000, 0..1000000)]
 * Output:  [parent 24385 +100.1ms] wait(0.1) on an unset event:
 *                                  False after 100.1 ms
 *          [parent 24385 +151.2ms] set() after 50 ms of work: 4 of 4
 *                                  waiters woke
 *          [parent 24385 +151.3ms] is_set() True; clear(); is_set() False
 *          [parent 24385 +152.0ms] eventfd: 4 of 4 workers served 2000 jobs
 *                                  from a pipe, then stopped
 *          [parent 24385 +152.0ms] eventfd is_set (poll 0): True;
 *                                  clear (read) got 1; is_set: False
 *          result: woke=4/4 wait(timeout)=False eventfd jobs=2000/2000
 *                  stopped=4/4 OK
 * Which:   the condvar event is memory: an is_set() on a set flag is a lock
 *          and an unlock in user space, and the same lock can guard more than
 *          one bit.  The eventfd is a file descriptor: one poll/epoll waits on
 *          it beside pipes, sockets, timerfds and signalfds (a worker waiting
 *          for "a job or stop", below), it can cross exec (without
 *          EFD_CLOEXEC) or a Unix socket, but every set, is_set and clear is
 *          a system call.
 * Try this: in event_set() replace pthread_cond_broadcast with
 *          pthread_cond_signal: one waiter wakes, the others sleep until
 *          their 2 s bound runs out, and the verdict says MISMATCH.  In
 *          event_wait() turn the while into an if: the wake-up with the
 *          flag down (step 3) then ends every wait early: MISMATCH.
 */
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>

enum { MAX_PROCS = 64 };

struct event {              /* multiprocessing.Event, in shared memory */
	pthread_mutex_t lock;   /* guards flag */
	pthread_cond_t changed; /* waiters sleep here until flag is up */
	bool flag;
};

struct shared {
	struct event go;
	_Atomic int woke;       /* wait() returned True before its bound */
	_Atomic int stopped;    /* eventfd workers that saw the stop */
	_Atomic long jobs_done;
};

static void event_init(struct event *ev)
{
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;

	MP_CHECK_PT(pthread_mutexattr_init(&ma));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&ev->lock, &ma));
	MP_CHECK_PT(pthread_mutexattr_destroy(&ma));
	MP_CHECK_PT(pthread_condattr_init(&ca));
	MP_CHECK_PT(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
	/* Timeouts measured on a clock that never jumps when the date is
	 * set. */
	MP_CHECK_PT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
	MP_CHECK_PT(pthread_cond_init(&ev->changed, &ca));
	MP_CHECK_PT(pthread_condattr_destroy(&ca));
	ev->flag = false;
}

/* Event.set(): the flag up, and every waiter woken (not one: an Event is a
 * level that stays up, not a pulse). */
static void event_set(struct event *ev)
{
	MP_CHECK_PT(pthread_mutex_lock(&ev->lock));
	ev->flag = true;
	MP_CHECK_PT(pthread_cond_broadcast(&ev->changed));
	MP_CHECK_PT(pthread_mutex_unlock(&ev->lock));
}

static void event_clear(struct event *ev)
{
	MP_CHECK_PT(pthread_mutex_lock(&ev->lock));
	ev->flag = false;
	MP_CHECK_PT(pthread_mutex_unlock(&ev->lock));
}

static bool event_is_set(struct event *ev)
{
	MP_CHECK_PT(pthread_mutex_lock(&ev->lock));
	bool up = ev->flag;
	MP_CHECK_PT(pthread_mutex_unlock(&ev->lock));
	return up;
}

/* Event.wait(timeout): the flag, after it went up or the timeout passed. */
static bool event_wait(struct event *ev, double timeout_s)
{
	/* the condition's clock */
	struct timespec dl = mp_deadline(CLOCK_MONOTONIC, timeout_s);
	int rc = 0;

	MP_CHECK_PT(pthread_mutex_lock(&ev->lock));
	while (!ev->flag && rc == 0) /* a wake-up is a hint: look again */
		rc = pthread_cond_timedwait(&ev->changed, &ev->lock, &dl);
	if (rc != 0 && rc != ETIMEDOUT)
		mp_die_en(rc, "pthread_cond_timedwait");
	bool up = ev->flag;
	MP_CHECK_PT(pthread_mutex_unlock(&ev->lock));
	return up;
}

/* Take whatever job tokens (one byte each) the pipe holds now; 0 if none. */
static long take_jobs(int fd)
{
	char buf[256];
	ssize_t n = read(fd, buf, sizeof buf);

	if (n == -1 && errno == EAGAIN)
		return 0; /* another worker was quicker */
	MP_CHECK(n);
	return n;
}

/* A worker that waits for "a job or stop" in one poll(): the thing a
 * condition variable cannot do beside a pipe. */
static void efd_worker(struct shared *sh, int efd, int jobs, int bound_ms)
{
	struct pollfd p[2] = { { efd, POLLIN, 0 }, { jobs, POLLIN, 0 } };
	long done = 0;
	int n;

	for (;;) {
		if ((n = poll(p, 2, bound_ms)) == -1 && errno == EINTR)
			continue;
		MP_CHECK(n);
		if (n == 0 || (p[1].revents & POLLHUP))
			return; /* timed out, or the parent is gone: no stop */
		if (p[1].revents & POLLIN)
			done += take_jobs(jobs);
		/* nobody reads efd: a read would clear it for all */
		if (p[0].revents & POLLIN)
			break;
	}
	sh->stopped++;
	for (long got; (got = take_jobs(jobs)) > 0;)
		done += got; /* jobs queued before the stop */
	sh->jobs_done += done;
}

int main(int argc, char *argv[])
{
	long procs = 4, delay_ms = 50, jobs = 2000;
	double timeout = 0.1;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 1, MAX_PROCS, "waiting processes"),
		MP_OPT_D("timeout", &timeout, 0.01, 60,
			 "seconds for wait(timeout) on an unset event"),
		MP_OPT_L("delay-ms", &delay_ms, 0, 600000,
			 "milliseconds of work before set()"),
		MP_OPT_L("jobs", &jobs, 0, 1000000,
			 "jobs handed out before the eventfd stop"),
	};

	mp_parse_options(argc, argv, "Python's Event between processes: "
			 "mutex + condition + flag, then an eventfd.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. The event in shared memory, made before fork(). */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	if (!sh)
		mp_die("mp_shm_alloc");
	event_init(&sh->go);

	/* 2. wait(timeout) on an event nobody sets returns False.  Every wait
	 *    below is bounded, and a watchdog bounds the whole run. */
	double bound = (double)delay_ms / 1e3 + 2;
	double wd_bound = timeout + bound + 2;

	/* The last bound (mp_watchdog): a mutex that is not process-shared
	 * loses its wake-ups across processes, and pthread_cond_timedwait
	 * re-takes the mutex with no time limit, so no timed call bounds
	 * that. */
	MP_CHECK_PT(mp_watchdog(wd_bound, NULL, "a lost wake-up"));
	int64_t t0 = mp_now_ns();
	bool early = event_wait(&sh->go, timeout);
	double waited = mp_elapsed_s(t0);
	bool timeout_ok = !early && waited >= timeout;
	mp_say("parent", "wait(%g) on an unset event: %s after %.1f ms",
	       timeout, early ? "True" : "False", waited * 1e3);

	/* 3. N processes wait; one set() wakes them all.  A process that comes
	 * late finds the flag up and never sleeps: no wake-up is lost.  Half
	 * way, a wake-up with the flag still down (POSIX allows spurious
	 * ones): the while loop sends each waiter back to sleep.  The parent
	 * holds the mutex while they start, so they queue on it: its unlock
	 * must wake sleepers in other processes (a mutex that is not
	 * process-shared would lose that wake-up: the watchdog's case). */
	MP_CHECK_PT(pthread_mutex_lock(&sh->go.lock));
	for (long i = 0; i < procs; i++)
		if (mp_fork() == 0) {
			int64_t start = mp_now_ns();

			if (event_wait(&sh->go, bound) &&
			    mp_elapsed_s(start) < bound)
				sh->woke++; /* woken, not timed out */
			_exit(EXIT_SUCCESS);
		}
	MP_CHECK(nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL));
	MP_CHECK_PT(pthread_mutex_unlock(&sh->go.lock));
	long half_ms = delay_ms / 2;

	MP_CHECK(nanosleep(&(struct timespec){ half_ms / 1000,
					       half_ms % 1000 * 1000000 },
			   NULL)); /* the parent's "work" */
	MP_CHECK_PT(pthread_mutex_lock(&sh->go.lock));
	MP_CHECK_PT(pthread_cond_broadcast(&sh->go.changed)); /* flag down */
	MP_CHECK_PT(pthread_mutex_unlock(&sh->go.lock));
	half_ms = delay_ms - half_ms;
	MP_CHECK(nanosleep(&(struct timespec){ half_ms / 1000,
					       half_ms % 1000 * 1000000 },
			   NULL));
	event_set(&sh->go);
	mp_wait_all();
	int woke = sh->woke;
	mp_say("parent", "set() after %ld ms of work: %d of %ld waiters woke",
	       delay_ms, woke, procs);
	bool was_set = event_is_set(&sh->go);
	event_clear(&sh->go);
	bool cleared = !event_is_set(&sh->go);
	mp_say("parent", "is_set() %s; clear(); is_set() %s",
	       was_set ? "True" : "False", cleared ? "False" : "True");

	/* 4. The same signal as an eventfd (a kernel counter behind a file
	 * descriptor; non-zero means set), beside a pipe of job tokens. */
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), jp[2];
	MP_CHECK(efd);
	MP_CHECK(pipe(jp));
	MP_CHECK(fcntl(jp[0], F_SETFL, O_NONBLOCK)); /* workers share it */
	for (long i = 0; i < procs; i++)
		if (mp_fork() == 0) {
			MP_CHECK(close(jp[1]));
			efd_worker(sh, efd, jp[0], (int)(bound * 1e3));
			_exit(EXIT_SUCCESS);
		}
	char tokens[512];
	memset(tokens, 'j', sizeof tokens);
	for (long left = jobs; left > 0;) {
		ssize_t n = write(jp[1], tokens,
				  left < 512 ? (size_t)left : 512);
		MP_CHECK(n);
		left -= n;
	}
	uint64_t one = 1, value = 0;
	MP_CHECK(write(efd, &one, sizeof one)); /* set(): after every job */
	mp_wait_all();
	int stopped = sh->stopped;
	mp_say("parent", "eventfd: %d of %ld workers served %ld jobs from a "
	       "pipe, then stopped", stopped, procs, (long)sh->jobs_done);
	struct pollfd p = { efd, POLLIN, 0 };
	int up = poll(&p, 1, 0); /* is_set() */
	MP_CHECK(up);
	if (read(efd, &value, sizeof value) == -1 && errno != EAGAIN)
		mp_die("read(eventfd)"); /* clear(): back to 0; EAGAIN: was */
	int still = poll(&p, 1, 0);
	MP_CHECK(still);
	mp_say("parent", "eventfd is_set (poll 0): %s; clear (read) got %ju; "
	       "is_set: %s", up ? "True" : "False", (uintmax_t)value,
	       still ? "True" : "False");

	/* 5. Clean up and judge. */
	MP_CHECK(close(efd)); /* the kernel object goes with its last fd */
	MP_CHECK(close(jp[0]));
	MP_CHECK(close(jp[1]));
	MP_CHECK_PT(pthread_cond_destroy(&sh->go.changed));
	MP_CHECK_PT(pthread_mutex_destroy(&sh->go.lock));
	long done = sh->jobs_done;
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = timeout_ok && woke == procs && was_set && cleared &&
		  done == jobs && stopped == procs && up == 1 && value == 1 &&
		  still == 0 && reaped;
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	printf("result: woke=%d/%ld wait(timeout)=%s eventfd jobs=%ld/%ld "
	       "stopped=%d/%ld %s\n", woke, procs, early ? "True" : "False",
	       done, jobs, stopped, procs, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
