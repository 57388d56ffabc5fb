/* tests/test_pool_fd.c -- lib/mp_pool: mp_pool_fd() and mp_pool_poll(), the
 * pool driven by an epoll loop
 *
 * The loop waits on the pool's descriptor beside its own (here a timerfd
 * would sit too) and calls mp_pool_poll() when it is readable; callbacks
 * run there, in the loop's thread.  Checked: 100,000 apply_async calls
 * driven to completion that way, every callback run exactly once with the
 * exact result; the descriptor quiet when nothing is due; readable when a
 * worker dies; a long call not holding back the callbacks of short ones.
 *
 * Every wait is bounded (epoll_wait with a timeout, and a watchdog).
 * Assertions stay in the main thread; callbacks only record.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <time.h>

#include "mp.h"
#include "pool_tasks.h"

enum { WATCHDOG_S = 120, CALLS = 100000 };
#include "watchdog.h"
enum { WAIT_MS = 20000 };  /* far above any correct run, even under ASan */

/* A pool of n workers and its descriptor (asserted here, in the main
 * thread, like every assertion of the suite). */
static struct mp_pool *pool_with_fd(int n, int *fd)
{
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = n });

	assert_non_null(p);
	*fd = mp_pool_fd(p);
	assert_true(*fd >= 0);
	return p;
}

/* What the callbacks saw (they run in this thread: no atomics needed). */
static uint8_t runs[CALLS];
static long errors, done, wrong;
static int64_t sum;

static void on_square(void *arg, const void *result,
		      const struct mp_pool_error *err)
{
	int64_t i = (int64_t)(intptr_t)arg;

	runs[i]++;
	done++;
	if (err) {
		errors++;
		return;
	}
	int64_t y = *(const int64_t *)result;

	wrong += y != i * i + 1;
	sum += y;
}

static long naps_done[2];

static void on_nap(void *arg, const void *result,
		   const struct mp_pool_error *err)
{
	(void)result;
	naps_done[(intptr_t)arg] += err ? 100 : 1;
}

/* Is fd readable right now? */
static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/* An epoll set holding the pool's descriptor only. */
static int epoll_on(int fd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
		return -1;
	return ep;
}

/* Poll until nothing more is due for settle_ms in a row (a replacement
 * worker announces it is ready, a worker may signal a job just
 * collected: spurious wake-ups are allowed, a descriptor that stays
 * readable is not).  0 when quiet, -1 if it never went quiet. */
static int settle(struct mp_pool *p, int fd, int settle_ms)
{
	for (int round = 0; round < 100; round++) {
		struct pollfd q = { .fd = fd, .events = POLLIN };

		if (mp_pool_poll(p) == -1)
			return -1;
		if (poll(&q, 1, settle_ms) == 0)
			return 0;
	}
	return -1;
}

/* Drive CALLS apply_async calls with at most in_flight outstanding. */
static void drive(int64_t in_flight)
{
	int fd;
	struct mp_pool *p = pool_with_fd(2, &fd);

	assert_int_equal(mp_pool_fd(p), fd);  /* the same one each time */
	int ep = epoll_on(fd);

	assert_true(ep >= 0);
	memset(runs, 0, sizeof runs);
	errors = done = wrong = sum = 0;
	int64_t next = 0, want = 0, polled = 0;
	long wakeups = 0;

	for (int64_t i = 0; i < CALLS; i++)
		want += i * i + 1;
	while (done < CALLS) {
		/* Keep IN_FLIGHT calls outstanding, fire and forget: the
		 * callback is the only way a result comes back. */
		while (next < CALLS && next - done < in_flight) {
			struct mp_pool_async *h = mp_pool_apply_async(
				p, square, &next, sizeof next, sizeof(int64_t),
				on_square, (void *)(intptr_t)next);

			assert_non_null(h);
			mp_pool_async_free(h);
			next++;
		}
		struct epoll_event ev;
		int n = epoll_wait(ep, &ev, 1, WAIT_MS);

		assert_int_equal(n, 1);  /* 0: the pool never became ready */
		assert_int_equal(ev.data.fd, fd);
		int r = mp_pool_poll(p);

		assert_true(r >= 0);
		polled += r;
		wakeups++;
	}
	printf("  %d calls, at most %jd in flight: %ld wake-ups of the loop, "
	       "%jd completions counted by mp_pool_poll()\n", CALLS,
	       (intmax_t)in_flight, wakeups, (intmax_t)polled);
	assert_int_equal(done, CALLS);
	assert_int_equal(errors, 0);
	assert_int_equal(wrong, 0);
	assert_true(sum == want);
	for (int i = 0; i < CALLS; i++)
		assert_int_equal(runs[i], 1);
	/* Callbacks may also run inside apply_async (it collects once 64
	 * calls are outstanding, or while it waits for a descriptor a worker
	 * still looks at); below 64, nearly all run in mp_pool_poll(). */
	if (in_flight < 64)
		assert_true(polled >= CALLS - CALLS / 100);
	assert_true(polled > 0 && polled <= CALLS);
	assert_int_equal(settle(p, fd, 20), 0);
	assert_false(readable(fd));
	assert_int_equal(close(ep), 0);
	assert_int_equal(mp_pool_destroy(p), 0);
}

static void test_epoll_drives_100k_apply_async(void **state)
{
	(void)state;
	drive(32);    /* every result comes back through the loop */
	drive(2000);  /* apply_async collects too */
}

static void test_fd_quiet_until_due(void **state)
{
	(void)state;
	int fd;
	struct mp_pool *p = pool_with_fd(2, &fd);

	assert_int_equal(settle(p, fd, 20), 0);
	assert_false(readable(fd));  /* nothing submitted: nothing due */
	assert_int_equal(mp_pool_poll(p), 0);
	naps_done[0] = 0;
	long ms = 100;
	struct mp_pool_async *h = mp_pool_apply_async(p, nap, &ms, sizeof ms,
						      sizeof ms, on_nap, 0);

	assert_non_null(h);
	assert_false(readable(fd));  /* it sleeps 100 ms */
	struct pollfd q = { .fd = fd, .events = POLLIN };

	assert_int_equal(poll(&q, 1, WAIT_MS), 1);
	assert_int_equal(mp_pool_poll(p), 1);
	assert_int_equal(naps_done[0], 1);
	assert_true(mp_pool_ready(h));
	long got = 0;

	assert_int_equal(mp_pool_get(h, &got, 0), 0);
	assert_int_equal(got, 100);
	mp_pool_async_free(h);
	/* Drained: not readable, and it stays so. */
	assert_int_equal(settle(p, fd, 20), 0);
	assert_false(readable(fd));
	assert_int_equal(mp_pool_poll(p), 0);
	assert_false(readable(fd));
	assert_int_equal(naps_done[0], 1);  /* exactly once */
	assert_int_equal(mp_pool_destroy(p), 0);
}

/* A get() in between (which collects by itself) leaves the descriptor
 * right: readable for what it did not collect, quiet afterwards. */
static void test_fd_right_after_a_blocking_get(void **state)
{
	(void)state;
	int fd;
	struct mp_pool *p = pool_with_fd(2, &fd);

	naps_done[0] = naps_done[1] = 0;
	long slow = 300, fast = 30;
	struct mp_pool_async *hs = mp_pool_apply_async(
		p, nap, &slow, sizeof slow, sizeof slow, on_nap, (void *)1);
	struct mp_pool_async *hf = mp_pool_apply_async(
		p, nap, &fast, sizeof fast, sizeof fast, on_nap, 0);

	assert_non_null(hs);
	assert_non_null(hf);
	long got = 0;

	/* The short call completes while the long one still runs: its
	 * callback is due at once, not after the long one. */
	struct pollfd q = { .fd = fd, .events = POLLIN };
	int64_t t0 = mp_now_ns();

	while (naps_done[0] == 0) {  /* a spurious wake-up returns 0 */
		assert_int_equal(poll(&q, 1, WAIT_MS), 1);
		assert_true(mp_pool_poll(p) >= 0);
	}
	assert_true(mp_now_ns() - t0 < 250000000);  /* before the long one */
	assert_int_equal(naps_done[0], 1);
	assert_int_equal(naps_done[1], 0);
	/* Now a blocking get() of the long one runs its callback itself. */
	assert_int_equal(mp_pool_get(hs, &got, WAIT_MS / 1000.0), 0);
	assert_int_equal(got, 300);
	assert_int_equal(naps_done[1], 1);
	assert_int_equal(settle(p, fd, 20), 0);
	assert_false(readable(fd));
	/* And the fd still wakes the loop for the next call. */
	struct mp_pool_async *h2 = mp_pool_apply_async(
		p, nap, &fast, sizeof fast, sizeof fast, on_nap, 0);

	assert_non_null(h2);
	assert_int_equal(poll(&q, 1, WAIT_MS), 1);
	assert_int_equal(mp_pool_poll(p), 1);
	assert_int_equal(naps_done[0], 2);
	mp_pool_async_free(hs);
	mp_pool_async_free(hf);
	mp_pool_async_free(h2);
	assert_int_equal(mp_pool_destroy(p), 0);
}

static void test_fd_readable_when_a_worker_dies(void **state)
{
	(void)state;
	int fd;
	struct mp_pool *p = pool_with_fd(2, &fd);

	assert_int_equal(settle(p, fd, 20), 0);
	pid_t pids[2], now[2];

	assert_int_equal(mp_pool_pids(p, pids, 2), 2);
	assert_int_equal(kill(pids[0], SIGKILL), 0);
	struct pollfd q = { .fd = fd, .events = POLLIN };

	assert_int_equal(poll(&q, 1, WAIT_MS), 1);  /* its pidfd */
	assert_int_equal(mp_pool_poll(p), 0);       /* no call completed */
	assert_int_equal(settle(p, fd, 20), 0);
	assert_false(readable(fd));
	assert_int_equal(mp_pool_pids(p, now, 2), 2);  /* replaced */
	assert_true(now[0] != pids[0] && now[1] != pids[0]);
	struct mp_pool_stats st;

	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 1);
	/* The pool still works, through the loop. */
	naps_done[0] = 0;
	long ms = 10;
	struct mp_pool_async *h = mp_pool_apply_async(p, nap, &ms, sizeof ms,
						      sizeof ms, on_nap, 0);

	assert_non_null(h);
	mp_pool_async_free(h);
	while (naps_done[0] == 0) {
		assert_int_equal(poll(&q, 1, WAIT_MS), 1);
		assert_true(mp_pool_poll(p) >= 0);
	}
	assert_int_equal(naps_done[0], 1);
	assert_int_equal(mp_pool_destroy(p), 0);
}

/* Closing the pool's descriptor behind its back is what destroy reports
 * (its teardown checks every close()). */
static void test_destroy_reports_a_closed_fd(void **state)
{
	(void)state;
	int fd;
	struct mp_pool *p = pool_with_fd(1, &fd);

	assert_int_equal(close(fd), 0);
	errno = 0;
	assert_int_equal(mp_pool_destroy(p), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(mp_pool_destroy(NULL), 0);
	errno = 0;
	assert_int_equal(mp_pool_fd(NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_poll(NULL), -1);
	assert_int_equal(errno, EINVAL);
}



int main(void)
{
	const struct CMUnitTest tests[] = {
		WATCHED(test_epoll_drives_100k_apply_async),
		WATCHED(test_fd_quiet_until_due),
		WATCHED(test_fd_right_after_a_blocking_get),
		WATCHED(test_fd_readable_when_a_worker_dies),
		WATCHED(test_destroy_reports_a_closed_fd),
	};

	if (watchdog_init() == -1)
		return EXIT_FAILURE;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
