/* 7_integration/asyncio_bridge.c -- an epoll server that hands its CPU
 * work to a process pool through a file descriptor, and keeps time
 *
 * Python:  async def handle(reader, writer):
 *              x = await reader.readexactly(8)
 *              y = await loop.run_in_executor(pool, f, x)  # or f(x) inline
 *              writer.write(y)
 *          pool = ProcessPoolExecutor(); asyncio.start_server(handle, ...)
 * CPython: run_in_executor() wraps the executor's future (wrap_future,
 *          Lib/asyncio/base_events.py); ProcessPoolExecutor.submit() wakes
 *          its manager thread through a pipe (_ThreadWakeup), which puts
 *          the call on _call_queue (a multiprocessing Queue: a feeder
 *          thread and a pipe), reads the result from _result_queue (a
 *          SimpleQueue, another pipe) and sets the future
 *          (Lib/concurrent/futures/process.py); the done-callback calls
 *          loop.call_soon_threadsafe() (_chain_future, futures.py), which
 *          writes a byte to the loop's self-pipe, a socketpair
 *          (_write_to_self, selector_events.py).  Two threads and four
 *          pipes between the loop and a worker, and back.
 * C:       socket/bind(127.0.0.1:0)/listen/accept4, epoll, a timerfd
 *          ticking every millisecond, a signalfd for Ctrl-C, and the pool's
 *          own descriptor: mp_pool_fd() is readable when a call completed;
 *          mp_pool_poll() runs its callback (which sends the reply) in the
 *          loop.  No thread anywhere.  A futex ping-pong between two
 *          processes gives the floor of a wake-up round trip to compare.
 * Usage:   asyncio_bridge [--clients N (4, 1..64)] [--requests N (16,
 *            1..100000) per client and mode] [--work N (4000000,
 *            0..10^9) LCG steps a request, 1-2 ns each] [--workers N
 *            (0 = CPUs)] [--probes N (1000, 1..10^6)] [--python-work N
 *            (20000, -1..10^8; -1: no Python)]
 * Output:  (2 CPUs shared with other jobs, load average 23; trimmed)
 *   [loop 23573 +27.5ms] round trip of an empty task, loop -> pool ->
 *     loop: 6.5 us; futex wake and back between two processes: 5.2 us;
 *     ratio 1.2x (medians of 1000, not judged: ...)
 *   mode       reqs  req/s   p50 ms   p99 ms  worst tick  missed  loop CPU
 *   inline       64    120    31.44    71.35     62.1 ms     97%    246 ms
 *   offload      64    202    11.73    91.83     26.8 ms     14%      6 ms
 *   python: loop -> ProcessPoolExecutor -> loop, median 105.1 us
 *   inline       64    230    13.38    48.89     38.3 ms  python
 *   offload      64    168    17.86    59.36     19.7 ms  python
 *   result: 128/128 replies exact; offloaded, the loop used 6 ms of CPU
 *     (inline 246) and missed 14% of ticks (inline 97%) OK
 *   "missed": ticks that expired unseen (a read found several due).
 * Try this: replace the apply_async in on_request() by a direct call
 *          (the offloaded run stalls like the inline one: MISMATCH);
 *          drop watch(L.ep, pfd, TAG_POOL) in step 4 (no reply ever
 *          comes back: after 2 s without one the clients are killed,
 *          MISMATCH);
 *          press Ctrl-C with --requests 100000: the requests in flight are
 *          answered, then the pool stops and the socket closes (exit 130).
 */
#define _GNU_SOURCE /* accept4, sigabbrev_np */
#include "mp.h"

#include <arpa/inet.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

enum { INLINE, OFFLOAD, NMODES, MAXCONN = 64 };
enum { TAG_LISTEN = MAXCONN, TAG_TICK, TAG_SIGNAL, TAG_POOL };
static const char *const mode_name[NMODES] = { "inline", "offload" };

/* A request's CPU work: n steps of an LCG, one after the other
 * (mp_lcg); every reply is checked with mp_lcg_jump(), in O(log n). */

struct req { uint64_t x, steps; };

static int serve_task(const void *arg, void *res)  /* runs in a worker */
{
	const struct req *r = arg;

	*(uint64_t *)res = mp_lcg(r->x, r->steps);
	return 0;
}

/* What a client saw, written in a MAP_SHARED page made before fork. */
struct rec { uint64_t x, reply; int64_t ns; };
struct shared { _Atomic uint32_t word; struct rec rec[]; };

struct conn { int fd; bool busy; size_t have; unsigned char in[8]; };
struct loop {
	int ep, lfd, tfd, sfd, mode, stop_sig, open, accepted;
	uint64_t steps;
	struct mp_pool *pool;
	struct conn conn[MAXCONN];
	int64_t tick0, worst;
	uint64_t ticks, reads;  /* ticks due, and reads that saw them */
	int64_t moved, quiet;   /* last accept, request or reply; bound */
	bool stuck;             /* nothing moved for `quiet` ns */
};

static void watch(int ep, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	MP_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
}

static void close_conn(struct loop *L, struct conn *c)
{
	MP_CHECK(close(c->fd));  /* (leaves the epoll set with it) */
	c->fd = -1;
	L->open--;
}

static void reply(struct loop *L, struct conn *c, uint64_t y)
{
	c->busy = false;
	if (c->fd == -1)  /* the loop gave up on it: nobody to answer */
		return;
	L->moved = mp_now_ns();
	if (send(c->fd, &y, sizeof y, MSG_NOSIGNAL) != sizeof y)
		mp_die("send");  /* 8 bytes always fit: one request at a time */
	if (L->stop_sig)  /* draining: answered, so this one can go */
		close_conn(L, c);
}

static struct loop *cb_loop;  /* the one loop, for the callback */

/* mp_pool_poll() runs this in the loop's thread: the reply goes out. */
static void on_result(void *arg, const void *result,
		      const struct mp_pool_error *err)
{
	if (err)
		mp_die_en(err->code, "a request failed");
	reply(cb_loop, arg, *(const uint64_t *)result);
}

/* A connection is readable: a request (or EOF). */
static void on_request(struct loop *L, struct conn *c)
{
	ssize_t n = read(c->fd, c->in + c->have, sizeof c->in - c->have);

	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {  /* the client is done (or gone) */
		close_conn(L, c);
		return;
	}
	L->moved = mp_now_ns();
	if ((c->have += (size_t)n) < sizeof c->in)
		return;
	struct req r = { 0, L->steps };

	memcpy(&r.x, c->in, sizeof r.x);
	c->have = 0;
	c->busy = true;
	if (L->mode == INLINE) {  /* the loop computes: nothing else runs */
		reply(L, c, mp_lcg(r.x, r.steps));
		return;
	}
	struct mp_pool_async *h = mp_pool_apply_async(
		L->pool, serve_task, &r, sizeof r, sizeof(uint64_t), on_result,
		c);

	if (!h)
		mp_die("mp_pool_apply_async");
	mp_pool_async_free(h);  /* fire and forget: the callback replies */
}

/* How late is the loop?  Tick k is due at tick0 + k ms; n > 1 ticks
 * expired since the last read means the oldest waited longest. */
static void on_tick(struct loop *L)
{
	uint64_t n;

	MP_CHECK(read(L->tfd, &n, sizeof n));
	int64_t due = L->tick0 + (int64_t)(L->ticks + 1) * 1000000;
	int64_t late = mp_now_ns() - due;

	L->ticks += n;
	L->reads++;

	L->worst = late > L->worst ? late : L->worst;
}

/* Ctrl-C: no new connections or requests; requests in flight are
 * answered (their connections close then), idle connections close now. */
static void on_signal(struct loop *L)
{
	struct signalfd_siginfo si;

	if (read(L->sfd, &si, sizeof si) != sizeof si)
		mp_die("read signalfd");
	if (L->stop_sig)
		return;
	L->stop_sig = (int)si.ssi_signo;
	MP_CHECK(close(L->lfd));  /* no new connections */
	L->lfd = -1;
	for (int i = 0; i < L->accepted; i++)
		if (L->conn[i].fd != -1 && !L->conn[i].busy)
			close_conn(L, &L->conn[i]);
	mp_say("loop", "SIG%s: draining, %d requests in flight",
	       sigabbrev_np(L->stop_sig), L->open);
}

/* A client: connect, then one request at a time, timing each. */
static void client(int lfd, int port, long id, long nreq, struct rec *rec)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port) };
	sigset_t term;
	int fd;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Ctrl-C is the server's to handle; SIGTERM still stops us. */
	if (signal(SIGINT, SIG_IGN) == SIG_ERR || sigemptyset(&term) ||
	    sigaddset(&term, SIGTERM) || sigprocmask(SIG_UNBLOCK, &term, NULL))
		mp_die("signals");
	/* Our copy of the listening socket would keep it open after the
	 * server closes it: connections would queue and never be served. */
	MP_CHECK(close(lfd));
	MP_CHECK(fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
	MP_CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO,  /* never hang */
			    &(struct timeval){ 30, 0 },
			    sizeof(struct timeval)));
	if (connect(fd, (struct sockaddr *)&a, sizeof a) == -1)
		_exit(errno == ECONNREFUSED ? 0 : 1);  /* 0: it closed first */
	for (long k = 0; k < nreq; k++) {
		uint64_t x = (uint64_t)id * 1000003 + (uint64_t)k + 1, y;
		int64_t t0 = mp_now_ns();

		if (send(fd, &x, sizeof x, MSG_NOSIGNAL) != sizeof x ||
		    recv(fd, &y, sizeof y, MSG_WAITALL) != sizeof y)
			break;  /* the server closed: it is draining */
		rec[k] = (struct rec){ x, y, mp_now_ns() - t0 };
	}
	MP_CHECK(close(fd));
	_exit(0);
}

/* One mode: fork the clients, serve until each has closed (or, after
 * Ctrl-C, until every request in flight is answered).  Seconds taken, or
 * -1 when nothing moved for L->quiet ns (a reply that never comes: the
 * clients are killed) or a client failed. */
static double run_mode(struct loop *L, int mode, int port, long clients,
		       long nreq, struct rec *rec)
{
	pid_t pid[MAXCONN];
	struct itimerspec every_ms = { { 0, 1000000 }, { 0, 1000000 } };
	int64_t t0 = mp_now_ns();

	L->mode = mode;
	L->open = L->accepted = 0;
	L->worst = 0;
	L->ticks = L->reads = 0;
	L->moved = mp_now_ns();
	for (long i = 0; i < clients; i++)
		if ((pid[i] = mp_fork()) == 0)
			client(L->lfd, port, i, nreq, rec + i * nreq);
	L->tick0 = mp_now_ns();
	MP_CHECK(timerfd_settime(L->tfd, 0, &every_ms, NULL));
	while (!L->stop_sig ? L->accepted < clients || L->open > 0
			    : L->open > 0) {
		struct epoll_event ev[16];
		int n = epoll_wait(L->ep, ev, 16, 1000);

		if (mp_now_ns() - L->moved > L->quiet) {
			L->stuck = true;
			break;
		}
		if (n == -1 && errno != EINTR)
			mp_die("epoll_wait");
		for (int e = 0; e < n; e++) {
			uint64_t tag = ev[e].data.u64;

			if (tag == TAG_TICK)
				on_tick(L);
			else if (tag == TAG_SIGNAL)
				on_signal(L);
			else if (tag == TAG_POOL && mp_pool_poll(L->pool) == -1)
				mp_die("mp_pool_poll");
			else if (tag == TAG_LISTEN && !L->stop_sig) {
				struct conn *c = &L->conn[L->accepted];

				MP_CHECK(c->fd = accept4(L->lfd, NULL, NULL,
							 SOCK_NONBLOCK |
								 SOCK_CLOEXEC));
				watch(L->ep, c->fd, (uint64_t)L->accepted++);
				L->open++;
				L->moved = mp_now_ns();
			} else if (tag < MAXCONN && L->conn[tag].fd != -1 &&
				   !L->conn[tag].busy)
				on_request(L, &L->conn[tag]);
		}
	}
	MP_CHECK(timerfd_settime(L->tfd, 0, &(struct itimerspec){ 0 }, NULL));
	double secs = mp_elapsed_s(t0);

	if (L->stuck) {
		mp_say("loop", "%s: nothing moved for %.1f s, %d connection(s) "
		       "waiting for a reply; the clients are killed",
		       mode_name[mode], (double)L->quiet / 1e9, L->open);
		for (int i = 0; i < L->accepted; i++)
			if (L->conn[i].fd != -1)
				close_conn(L, &L->conn[i]);
		for (long i = 0; i < clients; i++)
			MP_CHECK(kill(pid[i], SIGKILL));  /* not yet reaped */
	}
	for (long i = 0; i < clients; i++) {
		int st = mp_waitpid(pid[i]);

		if (!L->stuck && (!WIFEXITED(st) || WEXITSTATUS(st) != 0)) {
			mp_say("loop", "client %ld failed", i);
			secs = -1;
		}
	}
	return L->stuck ? -1 : secs;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static int64_t median(int64_t *t, long n)
{
	qsort(t, (size_t)n, sizeof *t, cmp_i64);
	return t[n / 2];
}

static void on_probe(void *arg, const void *result,
		     const struct mp_pool_error *err)
{
	(void)result;
	if (err)
		mp_die_en(err->code, "probe");
	*(int64_t *)arg = mp_now_ns();
}

/* Loop -> pool -> loop for an empty task: submit, sleep in epoll_wait on
 * the pool's fd, mp_pool_poll() runs the callback.  Median ns, or -1 when
 * a completion did not come within 1 s. */
static int64_t pool_round_trip(struct mp_pool *pool, int pfd, long probes)
{
	static int64_t t1;  /* static: a callback after a give-up lands here */
	int64_t *t = malloc(sizeof *t * (size_t)probes), m = -1;
	int ep;

	MP_CHECK(ep = epoll_create1(EPOLL_CLOEXEC));
	if (!t)
		mp_die("malloc");
	watch(ep, pfd, 0);
	for (long k = 0; k < probes; k++) {
		struct req r = { 1, 0 };
		int64_t t0 = mp_now_ns();
		struct mp_pool_async *h = mp_pool_apply_async(
			pool, serve_task, &r, sizeof r, sizeof(uint64_t),
			on_probe, &t1);
		struct epoll_event ev;

		if (!h)
			mp_die("mp_pool_apply_async");
		mp_pool_async_free(h);
		for (t1 = 0; !t1;) {
			int n = epoll_wait(ep, &ev, 1, 1000);

			if (n == -1 && errno != EINTR)
				mp_die("epoll_wait");
			if (n == 0)
				goto out;  /* no completion within 1 s */
			MP_CHECK(mp_pool_poll(pool));
		}
		t[k] = t1 - t0;
	}
	m = median(t, probes);
out:
	MP_CHECK(close(ep));
	free(t);
	return m;
}

static long futex(_Atomic uint32_t *w, int op, uint32_t val)
{
	struct timespec to = { 1, 0 };  /* bounded: never hang */

	return syscall(SYS_futex, w, op, val, op == FUTEX_WAIT ? &to : NULL,
		       NULL, 0);
}

/* Sleep until *w == want; -1 after 2 s. */
static int futex_until(_Atomic uint32_t *w, uint32_t want)
{
	int64_t end = mp_now_ns() + 2000000000;

	for (uint32_t v; (v = atomic_load(w)) != want;) {
		if (mp_now_ns() > end)
			return -1;
		futex(w, FUTEX_WAIT, v);  /* returns at once if *w != v */
	}
	return 0;
}

/* The floor: process A wakes B with a futex, B wakes A back.  Median ns,
 * or -1 when one of them waited 2 s in vain. */
static int64_t futex_round_trip(_Atomic uint32_t *w, long probes)
{
	int64_t *t = malloc(sizeof *t * (size_t)probes);

	if (!t)
		mp_die("malloc");
	atomic_store(w, 0);
	pid_t pid = mp_fork();

	if (pid == 0) {
		for (long k = 0; k < probes; k++) {
			if (futex_until(w, 1) == -1)
				_exit(1);
			atomic_store(w, 2);
			futex(w, FUTEX_WAKE, 1);
		}
		_exit(0);
	}
	long k;

	for (k = 0; k < probes; k++) {
		int64_t t0 = mp_now_ns();

		atomic_store(w, 1);
		futex(w, FUTEX_WAKE, 1);
		if (futex_until(w, 2) == -1)
			break;  /* the partner is silent: it gives up too */
		t[k] = mp_now_ns() - t0;
	}
	int st = mp_waitpid(pid);  /* bounded: it waits 2 s at most */
	int64_t m = k == probes && st == 0 ? median(t, probes) : -1;

	free(t);
	return m;
}

/* Pool workers and clients inherit the blocked signals: undo that. */
static void worker_init(void *arg)
{
	if (signal(SIGINT, SIG_IGN) == SIG_ERR ||
	    sigprocmask(SIG_UNBLOCK, arg, NULL) == -1)
		mp_die("worker signals");
}

/* The twin's lines: python,<mode>,<reqs>,<s>,<p50 us>,<p99 us>,<tick us>,
 * <exact> and python,roundtrip,<us>. */
static void twin_line(const char *line, void *arg)
{
	char mode[16];
	long reqs, exact;
	double s, p50, p99, tick;

	if (sscanf(line, "python,%15[a-z],%ld,%lf,%lf,%lf,%lf,%ld", mode, &reqs,
		   &s, &p50, &p99, &tick, &exact) == 7) {
		printf("%-9s %5ld %6.0f %8.2f %8.2f %8.1f ms  python\n", mode,
		       reqs, reqs / s, p50 / 1e3, p99 / 1e3, tick / 1e3);
		*(long *)arg += reqs - exact;  /* wrong replies */
	} else if (sscanf(line, "python,roundtrip,%lf", &s) == 1) {
		printf("python: loop -> ProcessPoolExecutor -> loop, median "
		       "%.1f us\n", s);
	} else {
		printf("python: %s\n", line);
	}
}

int main(int argc, char *argv[])
{
	long clients = 4, nreq = 16, work = 4000000, workers = 0;
	long probes = 1000, pywork = 20000;
	const struct mp_opt opts[] = {
		MP_OPT_L("clients", &clients, 1, MAXCONN, "client processes"),
		MP_OPT_L("requests", &nreq, 1, 100000,
			 "requests per client and mode"),
		MP_OPT_L("work", &work, 0, 1000000000, "LCG steps a request"),
		MP_OPT_L("workers", &workers, 0, MP_POOL_MAX_WORKERS,
			 "pool workers, 0 = the CPUs we may run on"),
		MP_OPT_L("probes", &probes, 1, 1000000,
			 "round trips timed (median)"),
		MP_OPT_L("python-work", &pywork, -1, 100000000,
			 "LCG steps a request in the Python twin, -1 = none"),
	};

	mp_parse_options(argc, argv, "An epoll server offloading to a pool "
			 "through mp_pool_fd(), timed by a timerfd.", opts,
			 sizeof opts / sizeof opts[0]);

	/* 1. Ctrl-C is an event of the loop: mp_stop_signalfd() blocks
	 *    SIGINT, SIGTERM, SIGHUP and SIGQUIT and returns a signalfd that
	 *    reads them (sigprocmask + signalfd; SIGPIPE ignored, so that
	 *    `| head` shows as EPIPE). */
	sigset_t stops;
	int sfd = mp_stop_signalfd(&stops);

	/* 2. The pool, and the descriptor it offers to event loops. */
	size_t nrec = (size_t)(clients * nreq);
	struct shared *sh = mp_shm_alloc(sizeof *sh +
					 NMODES * nrec * sizeof(struct rec));
	struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers, .initializer = worker_init,
		.initargs = &stops });
	int pfd;

	if (!sh || !pool)
		mp_die("mp_shm_alloc / mp_pool_create");
	MP_CHECK(pfd = mp_pool_fd(pool));

	/* 3. One empty task loop -> pool -> loop, and the futex floor. */
	int64_t rt_pool = pool_round_trip(pool, pfd, probes);
	int64_t rt_futex = futex_round_trip(&sh->word, probes);
	bool probed = rt_pool > 0 && rt_futex > 0;  /* both came back */

	mp_say("loop", "round trip of an empty task, loop -> pool -> loop: "
	       "%.1f us; futex wake and back between two processes: %.1f "
	       "us; ratio %.1fx (medians of %ld, not judged: the pool adds "
	       "an eventfd write and an epoll wake-up, and saves the futex "
	       "wake when its worker is still spinning, 20 us, after the "
	       "last task)", rt_pool / 1e3, rt_futex / 1e3,
	       (double)rt_pool / (double)rt_futex, probes);

	/* 4. The server socket: 127.0.0.1 only, a port the kernel picks. */
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	struct loop L = { .sfd = sfd, .steps = (uint64_t)work, .pool = pool };

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	MP_CHECK(L.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
					 SOCK_CLOEXEC, 0));
	MP_CHECK(bind(L.lfd, (struct sockaddr *)&a, sizeof a));
	MP_CHECK(listen(L.lfd, MAXCONN));
	MP_CHECK(getsockname(L.lfd, (struct sockaddr *)&a, &alen));
	MP_CHECK(L.ep = epoll_create1(EPOLL_CLOEXEC));
	MP_CHECK(L.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
	watch(L.ep, L.lfd, TAG_LISTEN);
	watch(L.ep, L.tfd, TAG_TICK);
	watch(L.ep, L.sfd, TAG_SIGNAL);
	watch(L.ep, pfd, TAG_POOL);
	cb_loop = &L;
	int64_t t0 = mp_now_ns();

	if (mp_lcg(7, (uint64_t)work) != mp_lcg_jump(7, (uint64_t)work))
		mp_die("mp_lcg_jump disagrees with mp_lcg");
	double task_ms = mp_elapsed_s(t0) * 1e3;

	mp_say("loop", "listening on 127.0.0.1:%d; %ld clients x %ld "
	       "requests of %.2f ms of CPU each", ntohs(a.sin_port), clients,
	       nreq, task_ms);

	/* 5. The same requests served inline, then offloaded. */
	double secs[NMODES] = { -1, -1 }, missed[NMODES] = { 0 };
	double cpu[NMODES] = { 0 };
	int64_t worst[NMODES] = { 0 };

	/* A mode where nothing moves for 2 s plus 4 requests' time fails. */
	L.quiet = (int64_t)((2000 + 4 * task_ms) * 1e6);
	for (int m = 0; m < NMODES && !L.stop_sig && (m == 0 ||
	     secs[m - 1] >= 0); m++) {
		struct timespec c0, c1;  /* CPU time of the loop's thread */

		MP_CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0));
		secs[m] = run_mode(&L, m, ntohs(a.sin_port), clients, nreq,
				   sh->rec + m * nrec);
		MP_CHECK(clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1));
		cpu[m] = (double)(c1.tv_sec - c0.tv_sec) +
			 (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
		worst[m] = L.worst;
		/* a read that found n > 1 ticks due: n - 1 passed unseen */
		missed[m] = L.ticks ? 1 - (double)L.reads / L.ticks : 0;
	}

	/* 6. Stop: the socket, then the pool (close + join: it is idle). */
	if (L.lfd != -1)
		MP_CHECK(close(L.lfd));
	MP_CHECK(close(L.tfd));
	MP_CHECK(close(L.ep));
	MP_CHECK(mp_pool_close(pool));
	MP_CHECK(mp_pool_join(pool));
	mp_pool_destroy(pool);
	if (L.stop_sig) {
		mp_say("loop", "stopped: every request in flight answered, "
		       "pool joined, socket closed");
		return 128 + L.stop_sig;
	}
	MP_CHECK(close(sfd));
	mp_stop_on_signals();  /* from here on, Ctrl-C is the usual stop */
	MP_CHECK(sigprocmask(SIG_UNBLOCK, &stops, NULL));

	/* 7. What the clients saw: every reply checked, latencies. */
	long exact = 0;
	int64_t *lat = malloc(sizeof *lat * nrec);

	if (!lat)
		mp_die("malloc");
	printf("%-9s %5s %6s %8s %8s %11s %7s %9s\n", "mode", "reqs", "req/s",
	       "p50 ms", "p99 ms", "worst tick", "missed", "loop CPU");
	for (int m = 0; m < NMODES; m++) {
		struct rec *r = sh->rec + m * nrec;

		for (size_t k = 0; k < nrec; k++) {
			exact += r[k].ns > 0 && r[k].reply ==
				 mp_lcg_jump(r[k].x, (uint64_t)work);
			lat[k] = r[k].ns;
		}
		median(lat, (long)nrec);
		printf("%-9s %5zu %6.0f %8.2f %8.2f %8.1f ms %6.0f%% %6.0f "
		       "ms\n", mode_name[m], nrec, secs[m] > 0 ?
		       (double)nrec / secs[m] : 0,
		       lat[nrec / 2] / 1e6, lat[nrec * 99 / 100] / 1e6,
		       worst[m] / 1e6, missed[m] * 100, cpu[m] * 1e3);
	}
	free(lat);
	MP_CHECK(mp_shm_free(sh, sizeof *sh +
				      NMODES * nrec * sizeof(struct rec)));

	/* 8. The Python twin: asyncio + run_in_executor. */
	long py_wrong = 0;

	if (pywork >= 0 && mp_python3()) {
		char c[24], r[24], w[24], p[24];

		mp_say("loop", "8. the Python twin: asyncio, %ld LCG steps a "
		       "request (a Python step costs ~100 C steps)", pywork);
		snprintf(c, sizeof c, "%ld", clients);
		snprintf(r, sizeof r, "%ld", nreq);
		snprintf(w, sizeof w, "%ld", pywork);
		snprintf(p, sizeof p, "%ld", probes < 200 ? probes : 200);
		int st = mp_run_twin(MP_LESSON_DIR "/asyncio_bridge.py",
				     (char *[]){ c, r, w, p, NULL }, 120,
				     twin_line, &py_wrong);

		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			py_wrong++;
	}

	/* 9. The verdict: every reply right; offloaded, the loop spent less
	 *    than a quarter of the CPU it spent computing inline (it only
	 *    moves bytes: this holds however loaded the machine is), and
	 *    missed fewer ticks (on a loaded machine a loop that waits for a
	 *    CPU misses some too: fewer, not none). */
	bool judged = task_ms >= 1.0;
	bool freed = cpu[OFFLOAD] < cpu[INLINE] / 4;
	bool ticks_ok = !judged || (freed && missed[OFFLOAD] < missed[INLINE]);
	bool ok = exact == (long)(NMODES * nrec) && ticks_ok && py_wrong == 0 &&
		  probed &&
		  secs[INLINE] >= 0 && secs[OFFLOAD] >= 0;

	printf("result: %ld/%zu replies exact; offloaded, the loop used %.0f "
	       "ms of CPU (inline %.0f) and missed %.0f%% of ticks (inline "
	       "%.0f%%)%s%s%s%s %s\n", exact, NMODES * nrec, cpu[OFFLOAD] * 1e3,
	       cpu[INLINE] * 1e3, missed[OFFLOAD] * 100, missed[INLINE] * 100,
	       judged ? "" : " (not judged: a request is shorter than a "
	       "tick)", secs[INLINE] < 0 || secs[OFFLOAD] < 0 ?
	       ", a mode STALLED" : "", py_wrong ? ", python WRONG" : "",
	       probed ? "" : ", a probe never came back",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
