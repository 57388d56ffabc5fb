/* tests/test_queue.c -- lib/mp_queue: the process-shared bounded queue
 *
 * What is pinned: FIFO order per producer; with several producers and
 * consumers every item is received exactly once; put waits while full and
 * get while empty, asleep in the kernel (not spinning); no wake-up is lost,
 * neither in the window just before a waiter sleeps (made to happen, below)
 * nor over many thousand sleeps; a signal handler does not end a wait;
 * timeouts expire with ETIMEDOUT; close lets consumers drain and then end,
 * refuses producers with EPIPE (waking those that wait, cutting a put_many
 * short); tickets are 64-bit; EINVAL for sizes of 0 and NULLs.
 *
 * The queue's source is compiled into this test (lib/ is a static library,
 * so its mp_queue.o is then never linked in) with one hook defined: a waiter
 * calls before_sleep() after its last look at the ring found nothing and
 * before it counts itself as a sleeper, where a put, get or close that it
 * did not see must still reach it.  There a child can stop while the parent
 * acts (a deterministic test), or dawdle while the other side aims a put at
 * it (a stress test).  Tests that need the struct's fields see them too.
 *
 * Children report through their exit status (0 = all good) and _exit; every
 * child arms alarm() so that a bug kills it instead of hanging the suite, and
 * the parent only waits with timeouts.
 */
static void before_sleep(void);
#define MP_QUEUE_BEFORE_SLEEP() before_sleep()
#include "../lib/mp_queue.c"

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

/* Reap pid within limit_s seconds: its exit status (100 + signal if it was
 * killed), or -1 if it was still running then (hung: it is killed). */
static int reap_within(pid_t pid, double limit_s)
{
	double end = now_s() + limit_s;
	int status;
	pid_t r;

	while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < end)
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	if (r == 0) {
		kill(pid, SIGKILL);
		reap(pid);
		return -1;
	}
	if (r == -1)
		return -2;
	return WIFEXITED(status) ? WEXITSTATUS(status)
				 : 100 + WTERMSIG(status);
}

/* ---- the hook ------------------------------------------------------- */

/* Per process (a forked child gets its own copy).  Armed, the next waiter
 * to reach the hook writes a byte to at[1] and waits for one on go[0].  With
 * flag set, every visit raises *flag and then dawdles a random while (up to
 * HOOK_SPINS pauses, a fraction of a microsecond), so that the other side
 * can aim a put at what the waiter does next. */
enum { HOOK_SPINS = 12 };
static struct {
	bool armed;
	int at[2], go[2];
	_Atomic int *flag;
	uint64_t rng;
	long visits;
} hook;

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void before_sleep(void)
{
	char c = 'w';

	hook.visits++;
	if (hook.flag) {
		atomic_store(hook.flag, 1);
		for (uint64_t d = xorshift(&hook.rng) % HOOK_SPINS; d > 0; d--)
			mp_cpu_relax();
	}
	if (!hook.armed)
		return;
	hook.armed = false;
	if (write(hook.at[1], &c, 1) != 1 || read(hook.go[0], &c, 1) != 1)
		_exit(9);
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

/* Tickets are 64-bit and only grow (white box: this file sees the struct).
 * Start them just below 2^32 and 2^62, with the slots' sequence numbers to
 * match, and run laps of the ring across: FIFO, full and empty as usual. */
static void test_tickets_past_32_and_62_bits(void **state)
{
	(void)state;
	const uint64_t starts[] = { (UINT64_C(1) << 32) - 3,
				    (UINT64_C(1) << 62) - 3 };

	for (int t = 0; t < 4; t++) {
		size_t cap = t % 2 ? 3 : 4;  /* a mask, and % */
		uint64_t start = starts[t / 2], v;
		struct mp_queue *q = mp_queue_create(sizeof v, cap);

		assert_non_null(q);
		atomic_store(&q->head, start);
		atomic_store(&q->tail, start);
		for (uint64_t i = 0; i < cap; i++)
			atomic_store(&slot_at(q, start + i)->seq,
				     2 * (start + i));
		for (uint64_t lap = 0, next = 0; lap < 5; lap++) {
			for (uint64_t i = 0; i < cap; i++) {
				v = lap * 10 + i;
				assert_int_equal(mp_queue_try_put(q, &v), 0);
			}
			assert_int_equal(mp_queue_qsize(q), cap);
			assert_int_equal(mp_queue_try_put(q, &v), -1);
			for (uint64_t i = 0; i < cap; i++, next++) {
				assert_int_equal(mp_queue_try_get(q, &v), 1);
				assert_int_equal(v, lap * 10 + i);
			}
			assert_int_equal(mp_queue_try_get(q, &v), -1);
			assert_true(mp_queue_empty(q));
		}
		assert_int_equal(atomic_load(&q->head), start + 5 * cap);
		assert_int_equal(mp_queue_close(q), 0);
		assert_int_equal(mp_queue_get(q, &v), 0);
		assert_int_equal(mp_queue_destroy(q), 0);
	}
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
				ssize_t put =
				    p == 0 ? mp_queue_put_many(q, buf, k)
				    : mp_queue_put(q, buf) == 0 ? 1 : -1;

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

/* The lost wake-up, made to happen.  A child finds the queue empty (or
 * full) and stops in the hook, just before it would count itself as a
 * sleeper; the parent then puts (gets, or closes): it sees no sleeper, so it
 * wakes nobody.  Let go, the child must still see that put (get, close) and
 * return at once.  Its last look at the ring, after counting itself, is what
 * sees it: without that look it sleeps forever, and this test fails. */
static void test_what_comes_just_before_a_sleep_is_not_missed(void **state)
{
	(void)state;
	static const char *what[] = { "put to a waiting get",
				      "get from a waiting put",
				      "close under a waiting get",
				      "close under a waiting put" };

	for (int c = 0; c < 4; c++) {
		bool getter = c % 2 == 0, closes = c >= 2;
		uint64_t v = 41;
		struct mp_queue *q = mp_queue_create(sizeof v, 1);

		assert_non_null(q);
		if (!getter)
			assert_int_equal(mp_queue_put(q, &v), 0);  /* full */
		assert_int_equal(pipe(hook.at), 0);
		assert_int_equal(pipe(hook.go), 0);
		pid_t pid = child();

		if (pid == 0) {
			uint64_t x = 43;
			int rc;

			hook.armed = true;
			errno = 0;
			if (getter) {
				rc = mp_queue_get(q, &x);
				_exit(closes ? rc != 0 : rc != 1 || x != 42);
			}
			rc = mp_queue_put(q, &x);
			_exit(closes ? rc != -1 || errno != EPIPE : rc != 0);
		}
		print_message("  %s\n", what[c]);
		assert_true(readable(hook.at[0], 10000));  /* in the window */
		v = 42;
		if (closes)
			assert_int_equal(mp_queue_close(q), 0);
		else if (getter)
			assert_int_equal(mp_queue_put(q, &v), 0);
		else
			assert_int_equal(mp_queue_get(q, &v), 1);
		assert_int_equal(write(hook.go[1], "g", 1), 1);
		assert_int_equal(reap_within(pid, 10), 0);  /* -1: asleep */
		if (!getter && !closes) {
			assert_int_equal(v, 41);
			assert_int_equal(mp_queue_get(q, &v), 1);
			assert_int_equal(v, 43);
		}
		for (int i = 0; i < 2; i++) {
			assert_int_equal(close(hook.at[i]), 0);
			assert_int_equal(close(hook.go[i]), 0);
		}
		assert_int_equal(mp_queue_destroy(q), 0);
	}
}

/* The same window, hammered: two processes bat a counter back and forth
 * through two one-slot queues, each waiting for the other in a blocking get.
 * Before it answers, each waits until the other has reached the hook (so
 * nearly every round goes down the sleep path) and then puts after a random
 * short while, so that its put lands all around the other's counting itself
 * as a sleeper, its fence and its last look, where the memory orders matter.
 * A lost wake-up leaves both waiting: the parent's bounded wait catches it.
 * Without the fence in event_signal() this fails in most runs on x86-64. */
static void test_ping_pong_loses_no_wake_up(void **state)
{
	(void)state;
	enum { ROUNDS = 20000, PUT_SPINS = 4, LIMIT_S = 10 };
	struct shared {
		_Atomic int at_window[2];
		_Atomic long visits[2], rounds;
	} *sh = mp_shm_alloc(sizeof *sh);
	struct mp_queue *q[2] = { mp_queue_create(sizeof(uint64_t), 1),
				  mp_queue_create(sizeof(uint64_t), 1) };
	pid_t pids[2];
	double t0 = now_s();

	assert_non_null(sh);
	assert_non_null(q[0]);
	assert_non_null(q[1]);
	for (int side = 0; side < 2; side++) {  /* side s gets from q[s] */
		if ((pids[side] = child()) != 0)
			continue;
		uint64_t x = 0, want = side == 0 ? 1 : 0;
		double end = now_s() + LIMIT_S;
		_Atomic int *other = &sh->at_window[1 - side];
		int rc;

		hook.flag = &sh->at_window[side];
		hook.rng = 88172645463325252u + (uint64_t)side;
		if (side == 0 && mp_queue_put(q[1], &x) == -1)  /* serve */
			_exit(1);
		while ((rc = mp_queue_get(q[side], &x)) == 1 && x == want) {
			sh->visits[side] = hook.visits;
			sh->rounds = (long)x;
			if (x >= ROUNDS || now_s() > end)
				break;
			/* The other side, waiting for x + 1, reaches the hook
			 * after its spin, some microseconds from now.  Unless
			 * it has no CPU: then put without aiming, rather than
			 * keep this one from it. */
			for (double t = now_s() + 50e-6;
			     !atomic_exchange(other, 0) && now_s() < t;)
				mp_cpu_relax();
			uint64_t d = xorshift(&hook.rng) % PUT_SPINS;

			while (d-- > 0)
				mp_cpu_relax();
			want = ++x + 1;
			if (mp_queue_put(q[1 - side], &x) == -1)
				_exit(3);
		}
		if (rc == 0)
			_exit(5);  /* the other side stopped first */
		if (rc != 1 || x != want)
			_exit(2);
		/* Stop the other side: it waits in get for an answer. */
		_exit(mp_queue_close(q[1 - side]) == 0 ? 0 : 4);
	}
	int st[2];
	double end = t0 + LIMIT_S + 10;

	for (int side = 0; side < 2; side++) {  /* -1: hung, a wake-up lost */
		double left = end - now_s();

		st[side] = reap_within(pids[side], left > 0.1 ? left : 0.1);
	}
	print_message("  %ld rounds in %.2f s, %ld + %ld visits to the "
		      "window\n", (long)sh->rounds, now_s() - t0,
		      (long)sh->visits[0], (long)sh->visits[1]);
	/* One side stops first (0); the other finds its queue closed (5). */
	assert_true((st[0] == 0 && st[1] == 5) || (st[0] == 5 && st[1] == 0));
	assert_true(sh->rounds > 0);
	assert_int_equal(mp_queue_destroy(q[0]), 0);
	assert_int_equal(mp_queue_destroy(q[1]), 0);
	assert_int_equal(mp_shm_free(sh, sizeof *sh), 0);
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
	/* Beyond 1e9 s (INFINITY too): no limit, not EINVAL. */
	assert_int_equal(mp_queue_put_timeout(q, &v, 1e300), 0);
	assert_int_equal(mp_queue_get_timeout(q, &v, INFINITY), 1);

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

/* A signal whose handler returns does not end a wait: no EINTR, as the
 * header promises (Python retries its waits too, PEP 475).  The handler is
 * installed without SA_RESTART, so the futex call itself does return EINTR;
 * the child tells the parent through a pipe when its handler has run and
 * when its first get is done. */
static int note_fd = -1;

static void note_signal(int sig)
{
	(void)sig;
	if (write(note_fd, "s", 1) != 1)
		_exit(8);
}

static void test_a_signal_handler_does_not_end_a_wait(void **state)
{
	(void)state;
	int note[2];
	uint64_t v;
	struct mp_queue *q = mp_queue_create(sizeof v, 2);
	char c;

	assert_non_null(q);
	assert_int_equal(pipe(note), 0);
	pid_t pid = child();

	if (pid == 0) {
		struct sigaction sa = { .sa_handler = note_signal };
		uint64_t a = 0, b = 0;

		note_fd = note[1];
		if (sigemptyset(&sa.sa_mask) == -1 ||
		    sigaction(SIGUSR1, &sa, NULL) == -1)
			_exit(7);
		if (mp_queue_get(q, &a) != 1 || write(note[1], "g", 1) != 1 ||
		    mp_queue_get_timeout(q, &b, 30) != 1)
			_exit(1);
		_exit(a == 7 && b == 8 ? 0 : 2);
	}
	for (v = 7; v <= 8; v++) {  /* in get, then in get_timeout */
		assert_true(wait_until_sleeping(pid));
		assert_int_equal(kill(pid, SIGUSR1), 0);
		assert_true(readable(note[0], 10000));
		assert_int_equal(read(note[0], &c, 1), 1);
		assert_int_equal(c, 's');  /* the handler ran */
		assert_int_equal(mp_queue_put(q, &v), 0);
		if (v == 7) {
			assert_true(readable(note[0], 10000));
			assert_int_equal(read(note[0], &c, 1), 1);
			assert_int_equal(c, 'g');
		}
	}
	assert_int_equal(reap_within(pid, 10), 0);
	assert_int_equal(close(note[0]), 0);
	assert_int_equal(close(note[1]), 0);
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

/* put_many on a queue closed while it waits for room: a short count, like
 * a write(2) cut short, and the items it did put are there to drain. */
static void test_close_cuts_a_waiting_put_many_short(void **state)
{
	(void)state;
	enum { CAP = 4, N = 10 };
	uint64_t v;
	struct mp_queue *q = mp_queue_create(sizeof v, CAP);

	assert_non_null(q);
	pid_t pid = child();

	if (pid == 0) {
		uint64_t items[N];

		for (uint64_t i = 0; i < N; i++)
			items[i] = i;
		_exit(mp_queue_put_many(q, items, N) == CAP ? 0 : 1);
	}
	assert_true(wait_until_sleeping(pid));  /* full, waiting for room */
	assert_int_equal(mp_queue_qsize(q), CAP);
	assert_int_equal(mp_queue_close(q), 0);
	assert_int_equal(reap_within(pid, 10), 0);
	for (uint64_t want = 0; want < CAP; want++) {
		assert_int_equal(mp_queue_get(q, &v), 1);
		assert_int_equal(v, want);
	}
	assert_int_equal(mp_queue_get(q, &v), 0);
	assert_int_equal(mp_queue_destroy(q), 0);
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
		QTEST(test_tickets_past_32_and_62_bits),
		QTEST(test_fifo_per_producer_across_processes),
		QTEST(test_every_item_received_exactly_once),
		QTEST(test_contended_tickets_are_never_shared),
		QTEST(test_put_waits_while_full),
		QTEST(test_get_waits_while_empty),
		QTEST(test_what_comes_just_before_a_sleep_is_not_missed),
		QTEST(test_ping_pong_loses_no_wake_up),
		QTEST(test_waiting_sleeps_instead_of_spinning),
		QTEST(test_timeouts_expire_with_etimedout),
		QTEST(test_a_signal_handler_does_not_end_a_wait),
		QTEST(test_close_drains_then_ends_and_refuses_puts),
		QTEST(test_close_wakes_waiting_consumers_and_producers),
		QTEST(test_close_cuts_a_waiting_put_many_short),
		QTEST(test_batches_keep_order_through_a_small_ring),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
