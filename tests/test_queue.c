/* tests/test_queue.c -- lib/mp_queue: the process-shared bounded queue
 *
 * What is pinned: FIFO order per producer; with several producers and
 * consumers every item is received exactly once; put waits while full and
 * get while empty, asleep in the kernel (not spinning); timeouts expire with
 * ETIMEDOUT; close lets consumers drain and then end, and refuses producers
 * with EPIPE, waking those that wait; EINVAL for sizes of 0 and NULLs.
 *
 * Children report through their exit status (0 = all good) and _exit; every
 * child arms alarm() so that a bug kills it instead of hanging the suite, and
 * the parent only waits with timeouts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sys/resource.h>

#include "mp.h"

enum { CHILD_ALARM_S = 20 };

/* Reap pid and return its exit status, or 100 + signal if it was killed. */
static int reap(pid_t pid)
{
	int status = mp_waitpid(pid);

	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 100 + WTERMSIG(status);
}

/* Fork a child that arms an alarm; returns 0 in the child. */
static pid_t child(void)
{
	pid_t pid = mp_fork();

	if (pid == 0)
		alarm(CHILD_ALARM_S);
	return pid;
}

/* Wait (at most 5 s) until pid is asleep in the kernel ('S' in
 * /proc/PID/stat): the explicit way to know a child is blocked in a call,
 * rather than sleeping and hoping it got there. */
static bool wait_until_sleeping(pid_t pid)
{
	char path[64], buf[512];

	snprintf(path, sizeof path, "/proc/%jd/stat", (intmax_t)pid);
	for (int tries = 0; tries < 5000; tries++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd == -1)
			return false;
		ssize_t n = read(fd, buf, sizeof buf - 1);

		close(fd);
		if (n <= 0)
			return false;
		buf[n] = '\0';
		const char *p = strrchr(buf, ')');

		if (p && p[1] == ' ' && p[2] == 'S')
			return true;
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
	return false;
}

/* Has fd something to read within ms milliseconds? */
static bool readable(int fd, int ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	int n;

	while ((n = poll(&p, 1, ms)) == -1 && errno == EINTR)
		;
	return n == 1;
}

static double now_s(void)
{
	return (double)mp_now_ns() / 1e9;
}

/* ---- argument checks -------------------------------------------------- */

/* call must return -1 with errno EINVAL. */
#define assert_einval(call)                                               \
	do {                                                              \
		errno = 0;                                                \
		assert_int_equal((call), -1);                             \
		assert_int_equal(errno, EINVAL);                          \
	} while (0)

static void test_zero_sizes_and_nulls_are_einval(void **state)
{
	(void)state;
	uint64_t x = 7, buf[2];

	errno = 0;
	assert_null(mp_queue_create(0, 4));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(mp_queue_create(8, 0));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(mp_queue_create(SIZE_MAX / 2, 4));  /* does not fit */
	assert_int_equal(errno, ENOMEM);

	struct mp_queue *q = mp_queue_create(sizeof x, 4);

	assert_non_null(q);
	assert_einval(mp_queue_put(NULL, &x));
	assert_einval(mp_queue_put(q, NULL));
	assert_einval(mp_queue_try_put(q, NULL));
	assert_einval(mp_queue_put_timeout(q, NULL, 1));
	assert_einval(mp_queue_put_timeout(q, &x, -1));
	assert_einval(mp_queue_put_timeout(q, &x, NAN));
	assert_einval(mp_queue_get(NULL, &x));
	assert_einval(mp_queue_get(q, NULL));
	assert_einval(mp_queue_try_get(q, NULL));
	assert_einval(mp_queue_get_timeout(q, &x, -0.5));
	assert_einval(mp_queue_put_many(q, NULL, 2));
	assert_einval(mp_queue_get_many(q, NULL, 2));
	assert_einval(mp_queue_get_many(q, buf, 0));
	assert_einval(mp_queue_close(NULL));
	assert_einval(mp_queue_destroy(NULL));
	/* Nothing was put by the refused calls. */
	assert_int_equal(mp_queue_qsize(q), 0);
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* ---- one process: order, bounds, sizes ------------------------------- */

static void test_fifo_bound_and_odd_item_size(void **state)
{
	(void)state;
	char item[5], out[5];
	struct mp_queue *q = mp_queue_create(sizeof item, 3);

	assert_non_null(q);
	assert_int_equal(mp_queue_item_size(q), 5);
	assert_int_equal(mp_queue_capacity(q), 3);
	assert_true(mp_queue_empty(q));
	for (int lap = 0; lap < 4; lap++) {  /* several laps of the ring */
		for (int i = 0; i < 3; i++) {
			memset(item, 'a' + lap * 3 + i, sizeof item);
			assert_int_equal(mp_queue_try_put(q, item), 0);
		}
		assert_int_equal(mp_queue_qsize(q), 3);
		assert_true(mp_queue_full(q));
		errno = 0;
		assert_int_equal(mp_queue_try_put(q, item), -1);
		assert_int_equal(errno, EAGAIN);
		for (int i = 0; i < 3; i++) {
			assert_int_equal(mp_queue_try_get(q, out), 1);
			for (size_t b = 0; b < sizeof out; b++)
				assert_int_equal(out[b], 'a' + lap * 3 + i);
		}
		errno = 0;
		assert_int_equal(mp_queue_try_get(q, out), -1);
		assert_int_equal(errno, EAGAIN);
		assert_true(mp_queue_empty(q));
	}
	assert_int_equal(mp_queue_destroy(q), 0);
}

static void test_capacity_one_holds_one_item(void **state)
{
	(void)state;
	uint64_t v;
	struct mp_queue *q = mp_queue_create(sizeof v, 1);

	assert_non_null(q);
	for (uint64_t i = 0; i < 5; i++) {
		assert_int_equal(mp_queue_try_put(q, &i), 0);
		errno = 0;
		assert_int_equal(mp_queue_try_put(q, &i), -1);
		assert_int_equal(errno, EAGAIN);
		assert_int_equal(mp_queue_try_get(q, &v), 1);
		assert_int_equal(v, i);
	}
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* ---- several processes ------------------------------------------------ */

struct tagged { uint32_t producer, seq; uint64_t check; };

static void test_fifo_per_producer_across_processes(void **state)
{
	(void)state;
	enum { P = 3, M = 20000 };
	struct mp_queue *q = mp_queue_create(sizeof(struct tagged), 64);
	pid_t pids[P];

	assert_non_null(q);
	for (uint32_t p = 0; p < P; p++) {
		if ((pids[p] = child()) == 0) {
			for (uint32_t i = 0; i < M; i++) {
				struct tagged t = { p, i, (uint64_t)p * M + i };

				if (mp_queue_put(q, &t) == -1)
					_exit(1);
			}
			_exit(0);
		}
	}
	uint32_t next[P] = { 0 };
	long got = 0, out_of_order = 0;
	struct tagged t;

	while (got < (long)P * M && mp_queue_get_timeout(q, &t, 10) == 1) {
		if (t.producer >= P || t.seq != next[t.producer] ||
		    t.check != (uint64_t)t.producer * M + t.seq)
			out_of_order++;
		else
			next[t.producer]++;
		got++;
	}
	for (int p = 0; p < P; p++)
		assert_int_equal(reap(pids[p]), 0);
	assert_int_equal(out_of_order, 0);
	assert_int_equal(got, (long)P * M);
	for (int p = 0; p < P; p++)
		assert_int_equal(next[p], M);
	assert_int_equal(mp_queue_try_get(q, &t), -1);
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* Consumer c's way to take items: 0 in batches, 1 with short timeouts that
 * keep expiring while items flow (a waiter that leaves must not swallow a
 * wake-up meant for the others), the rest one blocking get at a time. */
static ssize_t take(struct mp_queue *q, int c, uint64_t *buf, size_t max)
{
	int rc;

	if (c == 0)
		return mp_queue_get_many(q, buf, max);
	if (c > 1)
		return mp_queue_get(q, buf);
	while ((rc = mp_queue_get_timeout(q, buf, 0.001)) == -1 &&
	       errno == ETIMEDOUT)
		;
	return rc;
}

/* Producers tag items p * M + i; consumers count every tag they receive in
 * shared counters.  Exactly once = every counter is 1 at the end.  Producer
 * 0 and consumer 0 use the batch calls, so single and batch calls mix. */
static void test_every_item_received_exactly_once(void **state)
{
	(void)state;
	enum { P = 3, C = 3, M = 30000, BATCH = 7 };
	struct shared {
		_Atomic uint32_t seen[P * M];
		_Atomic long received[C];
	} *sh = mp_shm_alloc(sizeof *sh);
	struct mp_queue *q = mp_queue_create(sizeof(uint64_t), 16);
	pid_t prod[P], cons[C];

	assert_non_null(sh);
	assert_non_null(q);
	for (int c = 0; c < C; c++) {
		if ((cons[c] = child()) == 0) {
			uint64_t buf[BATCH];
			ssize_t n;

			while ((n = take(q, c, buf, BATCH)) > 0) {
				for (ssize_t i = 0; i < n; i++) {
					if (buf[i] >= (uint64_t)P * M)
						_exit(2);
					atomic_fetch_add(&sh->seen[buf[i]], 1);
				}
				atomic_fetch_add(&sh->received[c], n);
			}
			_exit(n == 0 ? 0 : 1);  /* 0 = the end of the queue */
		}
	}
	for (int p = 0; p < P; p++) {
		if ((prod[p] = child()) == 0) {
			uint64_t buf[BATCH];

			for (uint64_t i = 0; i < M;) {
				size_t k = p != 0 ? 1 : M - i < BATCH ? M - i
								    : BATCH;

				for (size_t j = 0; j < k; j++)
					buf[j] = (uint64_t)p * M + i + j;
				ssize_t put = p == 0 ? mp_queue_put_many(q, buf, k)
					      : mp_queue_put(q, buf) == 0 ? 1
									  : -1;

				if (put != (ssize_t)k)
					_exit(1);
				i += k;
			}
			_exit(0);
		}
	}
	for (int p = 0; p < P; p++)
		assert_int_equal(reap(prod[p]), 0);
	assert_int_equal(mp_queue_close(q), 0);  /* consumers drain, then end */
	for (int c = 0; c < C; c++)
		assert_int_equal(reap(cons[c]), 0);

	long total = 0, missing = 0, duplicated = 0;

	for (int c = 0; c < C; c++)
		total += sh->received[c];
	for (long i = 0; i < (long)P * M; i++) {
		missing += sh->seen[i] == 0;
		duplicated += sh->seen[i] > 1;
	}
	assert_int_equal(missing, 0);
	assert_int_equal(duplicated, 0);
	assert_int_equal(total, (long)P * M);
	assert_int_equal(mp_queue_destroy(q), 0);
	assert_int_equal(mp_shm_free(sh, sizeof *sh), 0);
}

/* Start all children at once: each blocks reading a pipe until the parent
 * closes the write end (EOF wakes every reader together). */
static void wait_for_start(int go[2])
{
	char c;

	if (close(go[1]) == -1 || read(go[0], &c, 1) != 0)
		_exit(3);
}

/* The tickets under the heaviest contention: K producers fill a queue with
 * room for everything at the same moment, then K consumers empty it at the
 * same moment; no one ever waits, so every call races on the head or tail.
 * A ticket taken twice shows up as a lost or a duplicated tag. */
static void test_contended_tickets_are_never_shared(void **state)
{
	(void)state;
	enum { K = 4, PER = 20000, N = K * PER };
	struct shared { _Atomic uint32_t seen[N]; } *sh =
		mp_shm_alloc(sizeof *sh);
	struct mp_queue *q = mp_queue_create(sizeof(uint64_t), N);
	int go[2];

	assert_non_null(sh);
	assert_non_null(q);
	for (int round = 0; round < 2; round++) {  /* 0: put, 1: get */
		pid_t pids[K];

		assert_int_equal(pipe(go), 0);
		for (int k = 0; k < K; k++) {
			if ((pids[k] = child()) != 0)
				continue;
			wait_for_start(go);
			for (uint64_t i = 0; round == 0 && i < PER; i++) {
				uint64_t tag = (uint64_t)k * PER + i;

				if (mp_queue_try_put(q, &tag) == -1)
					_exit(1);  /* there is room for all */
			}
			uint64_t tag;

			while (round == 1 && mp_queue_try_get(q, &tag) == 1) {
				if (tag >= N)
					_exit(2);
				atomic_fetch_add(&sh->seen[tag], 1);
			}
			_exit(0);
		}
		assert_int_equal(close(go[1]), 0);  /* go */
		for (int k = 0; k < K; k++)
			assert_int_equal(reap(pids[k]), 0);
		assert_int_equal(close(go[0]), 0);
		assert_int_equal(mp_queue_qsize(q), round == 0 ? N : 0);
	}
	long missing = 0, duplicated = 0;

	for (long i = 0; i < N; i++) {
		missing += sh->seen[i] == 0;
		duplicated += sh->seen[i] > 1;
	}
	assert_int_equal(missing, 0);
	assert_int_equal(duplicated, 0);
	assert_int_equal(mp_queue_destroy(q), 0);
	assert_int_equal(mp_shm_free(sh, sizeof *sh), 0);
}

/* ---- blocking, sleeping, timeouts ------------------------------------- */

static void test_put_waits_while_full(void **state)
{
	(void)state;
	int fds[2];
	uint64_t v = 1;
	struct mp_queue *q = mp_queue_create(sizeof v, 2);

	assert_non_null(q);
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(mp_queue_put(q, &v), 0);
	v = 2;
	assert_int_equal(mp_queue_put(q, &v), 0);
	pid_t pid = child();

	if (pid == 0) {
		uint64_t three = 3;

		if (mp_queue_put(q, &three) == -1 || write(fds[1], "d", 1) != 1)
			_exit(1);
		_exit(0);
	}
	assert_true(wait_until_sleeping(pid));
	assert_false(readable(fds[0], 0));  /* asleep, and not done */
	assert_int_equal(mp_queue_get(q, &v), 1);  /* makes room */
	assert_int_equal(v, 1);
	assert_true(readable(fds[0], 10000));
	assert_int_equal(reap(pid), 0);
	assert_int_equal(mp_queue_get(q, &v), 1);
	assert_int_equal(v, 2);
	assert_int_equal(mp_queue_get(q, &v), 1);
	assert_int_equal(v, 3);
	assert_int_equal(close(fds[0]), 0);
	assert_int_equal(close(fds[1]), 0);
	assert_int_equal(mp_queue_destroy(q), 0);
}

static void test_get_waits_while_empty(void **state)
{
	(void)state;
	int fds[2];
	uint64_t v = 0;
	struct mp_queue *q = mp_queue_create(sizeof v, 4);

	assert_non_null(q);
	assert_int_equal(pipe(fds), 0);
	pid_t pid = child();

	if (pid == 0) {
		uint64_t got;

		if (mp_queue_get(q, &got) != 1 ||
		    write(fds[1], &got, sizeof got) != sizeof got)
			_exit(1);
		_exit(0);
	}
	assert_true(wait_until_sleeping(pid));
	assert_false(readable(fds[0], 0));
	v = 42;
	assert_int_equal(mp_queue_put(q, &v), 0);
	assert_true(readable(fds[0], 10000));
	v = 0;
	assert_int_equal(read(fds[0], &v, sizeof v), sizeof v);
	assert_int_equal(v, 42);
	assert_int_equal(reap(pid), 0);
	assert_int_equal(close(fds[0]), 0);
	assert_int_equal(close(fds[1]), 0);
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* A waiter must sleep in the kernel: a child waiting 1 s on an empty queue
 * uses a few microseconds of CPU (its short spin), not the whole second; the
 * bound is loose enough for a loaded machine and a sanitizer build, tight
 * enough that a spinning wait fails even when it gets only 5% of a core. */
static void test_waiting_sleeps_instead_of_spinning(void **state)
{
	(void)state;
	uint64_t v;
	struct mp_queue *q = mp_queue_create(sizeof v, 4);

	assert_non_null(q);
	pid_t pid = child();

	if (pid == 0) {
		errno = 0;
		int rc = mp_queue_get_timeout(q, &v, 1.0);

		_exit(rc == -1 && errno == ETIMEDOUT ? 0 : 1);
	}
	int status;
	struct rusage ru;

	while (wait4(pid, &status, 0, &ru) == -1)
		assert_int_equal(errno, EINTR);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;

	if (cpu > 0.05)
		fail_msg("waiting 1 s used %.3f s of CPU: spinning?", cpu);
	assert_int_equal(mp_queue_destroy(q), 0);
}

static void test_timeouts_expire_with_etimedout(void **state)
{
	(void)state;
	uint64_t v = 5;
	struct mp_queue *q = mp_queue_create(sizeof v, 1);

	assert_non_null(q);
	double t0 = now_s();

	errno = 0;
	assert_int_equal(mp_queue_get_timeout(q, &v, 0.2), -1);
	assert_int_equal(errno, ETIMEDOUT);
	double waited = now_s() - t0;

	assert_true(waited >= 0.2);
	assert_true(waited < 5.0);
	errno = 0;
	assert_int_equal(mp_queue_get_timeout(q, &v, 0), -1);  /* tries once */
	assert_int_equal(errno, ETIMEDOUT);

	assert_int_equal(mp_queue_put_timeout(q, &v, 0.2), 0);  /* room: now */
	t0 = now_s();
	errno = 0;
	assert_int_equal(mp_queue_put_timeout(q, &v, 0.2), -1);  /* full */
	assert_int_equal(errno, ETIMEDOUT);
	waited = now_s() - t0;
	assert_true(waited >= 0.2);
	assert_true(waited < 5.0);
	assert_int_equal(mp_queue_get_timeout(q, &v, 0.2), 1);  /* ready */
	assert_int_equal(v, 5);
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* ---- close ------------------------------------------------------------ */

static void test_close_drains_then_ends_and_refuses_puts(void **state)
{
	(void)state;
	uint64_t v, many[3] = { 7, 8, 9 };
	struct mp_queue *q = mp_queue_create(sizeof v, 8);

	assert_non_null(q);
	for (v = 1; v <= 3; v++)
		assert_int_equal(mp_queue_put(q, &v), 0);
	assert_false(mp_queue_closed(q));
	assert_int_equal(mp_queue_close(q), 0);
	assert_int_equal(mp_queue_close(q), 0);  /* twice is harmless */
	assert_true(mp_queue_closed(q));

	errno = 0;
	assert_int_equal(mp_queue_put(q, &v), -1);
	assert_int_equal(errno, EPIPE);
	errno = 0;
	assert_int_equal(mp_queue_try_put(q, &v), -1);
	assert_int_equal(errno, EPIPE);
	errno = 0;
	assert_int_equal(mp_queue_put_timeout(q, &v, 1), -1);
	assert_int_equal(errno, EPIPE);
	errno = 0;
	assert_int_equal(mp_queue_put_many(q, many, 3), -1);
	assert_int_equal(errno, EPIPE);
	assert_int_equal(mp_queue_qsize(q), 3);  /* nothing was added */

	for (uint64_t want = 1; want <= 3; want++) {
		assert_int_equal(mp_queue_get(q, &v), 1);
		assert_int_equal(v, want);
	}
	assert_int_equal(mp_queue_get(q, &v), 0);  /* the end */
	assert_int_equal(mp_queue_get(q, &v), 0);  /* and it stays the end */
	assert_int_equal(mp_queue_try_get(q, &v), 0);
	assert_int_equal(mp_queue_get_timeout(q, &v, 1), 0);
	assert_int_equal(mp_queue_get_many(q, many, 3), 0);
	assert_int_equal(mp_queue_destroy(q), 0);
}

static void test_close_wakes_waiting_consumers_and_producers(void **state)
{
	(void)state;
	enum { WAITERS = 2 };
	uint64_t v = 1;
	struct mp_queue *empty = mp_queue_create(sizeof v, 4);
	struct mp_queue *full = mp_queue_create(sizeof v, 1);
	pid_t cons[WAITERS], prod;

	assert_non_null(empty);
	assert_non_null(full);
	assert_int_equal(mp_queue_put(full, &v), 0);
	for (int i = 0; i < WAITERS; i++)
		if ((cons[i] = child()) == 0)
			_exit(mp_queue_get(empty, &v) == 0 ? 0 : 1);
	if ((prod = child()) == 0) {
		errno = 0;
		int rc = mp_queue_put(full, &v);

		_exit(rc == -1 && errno == EPIPE ? 0 : 1);
	}
	for (int i = 0; i < WAITERS; i++)
		assert_true(wait_until_sleeping(cons[i]));
	assert_true(wait_until_sleeping(prod));
	assert_int_equal(mp_queue_close(empty), 0);
	assert_int_equal(mp_queue_close(full), 0);
	for (int i = 0; i < WAITERS; i++)
		assert_int_equal(reap(cons[i]), 0);
	assert_int_equal(reap(prod), 0);
	/* The item put before close is still there for a consumer. */
	assert_int_equal(mp_queue_get(full, &v), 1);
	assert_int_equal(mp_queue_get(full, &v), 0);
	assert_int_equal(mp_queue_destroy(empty), 0);
	assert_int_equal(mp_queue_destroy(full), 0);
}

/* ---- batches ---------------------------------------------------------- */

static void test_batches_keep_order_through_a_small_ring(void **state)
{
	(void)state;
	enum { N = 1000, MAX = 3 };
	struct mp_queue *q = mp_queue_create(sizeof(uint64_t), 4);

	assert_non_null(q);
	pid_t pid = child();

	if (pid == 0) {
		uint64_t items[N];

		for (uint64_t i = 0; i < N; i++)
			items[i] = i * 3 + 1;
		/* 1000 items through 4 slots: put_many must wait for room
		 * many times and still return the whole count. */
		if (mp_queue_put_many(q, items, N) != N)
			_exit(1);
		_exit(mp_queue_close(q) == 0 ? 0 : 1);
	}
	uint64_t buf[MAX], want = 0;
	long bad = 0, too_many = 0;
	ssize_t n;

	while ((n = mp_queue_get_many(q, buf, MAX)) > 0) {
		too_many += n > MAX;
		for (ssize_t i = 0; i < n; i++, want++)
			bad += buf[i] != want * 3 + 1;
	}
	assert_int_equal(n, 0);
	assert_int_equal(reap(pid), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(too_many, 0);
	assert_int_equal(want, N);
	assert_int_equal(mp_queue_destroy(q), 0);
}

/* Every test runs under an alarm: a wait that never ends (a lost wake-up,
 * a timeout that does not expire) kills the suite instead of hanging it. */
static int arm_alarm(void **state)
{
	(void)state;
	alarm(60);
	return 0;
}

static int disarm_alarm(void **state)
{
	(void)state;
	alarm(0);
	return 0;
}

#define QTEST(f) cmocka_unit_test_setup_teardown(f, arm_alarm, disarm_alarm)

int main(void)
{
	const struct CMUnitTest tests[] = {
		QTEST(test_zero_sizes_and_nulls_are_einval),
		QTEST(test_fifo_bound_and_odd_item_size),
		QTEST(test_capacity_one_holds_one_item),
		QTEST(test_fifo_per_producer_across_processes),
		QTEST(test_every_item_received_exactly_once),
		QTEST(test_contended_tickets_are_never_shared),
		QTEST(test_put_waits_while_full),
		QTEST(test_get_waits_while_empty),
		QTEST(test_waiting_sleeps_instead_of_spinning),
		QTEST(test_timeouts_expire_with_etimedout),
		QTEST(test_close_drains_then_ends_and_refuses_puts),
		QTEST(test_close_wakes_waiting_consumers_and_producers),
		QTEST(test_batches_keep_order_through_a_small_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
