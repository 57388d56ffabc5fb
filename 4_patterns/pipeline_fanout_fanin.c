/* 4_patterns/pipeline_fanout_fanin.c -- reader -> N transform workers ->
 * writer: fan-out through a bounded queue, fan-in through a pipe, input
 * order restored by a reorder buffer, shutdown and EPIPE stage by stage
 *
 * Python:  a reader Process puts records into Queue(maxsize); N workers
 *          get, transform and put into a second Queue; one writer gets the
 *          results and puts them back in order (a dict keyed by sequence
 *          number); None sentinels stop each stage.  Every hop pickles the
 *          record into a pipe through the queue's feeder thread
 *          (Lib/multiprocessing/queues.py).  A Queue keeps both ends of
 *          its pipe in every process that holds it (a forked child
 *          inherits _reader and _writer; Queue.__getstate__ passes both
 *          under spawn), so when the writer dies nobody upstream hears of
 *          it: the workers' puts wait on the full Queue(maxsize) forever
 *          (the twin shows one still blocked after 0.5 s).
 * C:       reader -> lib/mp_queue (fan-out: whichever worker is free takes
 *          the next record) -> workers -> one pipe (fan-in: writes of 16
 *          bytes are atomic, never interleaved, since 16 <= PIPE_BUF) ->
 *          writer.  Shutdown cascades downstream: the reader's
 *          mp_queue_close() lets the workers drain and see the end; each
 *          worker's exit closes its write end, and the writer reads EOF
 *          once the last one is gone -- only because every other copy of
 *          the write end was closed.  Failure cascades upstream: a dead
 *          writer makes the kernel answer the workers' write() with EPIPE
 *          (SIGPIPE ignored); they close the queue, and the reader's put
 *          gets EPIPE too.  pipe2, fcntl(F_SETPIPE_SZ, O_NONBLOCK), poll,
 *          ioctl(FIONREAD), sigaction(SIGPIPE), mp_queue_qsize.
 * Usage:   pipeline_fanout_fanin [--items N (100000, 1..10^9)] [--workers N
 *            (2, 1..16)] [--capacity N (64, 1..65536)] [--work N (40,
 *            0..10^6 mixing rounds per record)] [--slow-stage K (0 none, 1
 *            reader, 2 transform, 3 writer)] [--slow-us N (50, 1..10000)]
 *            [--fault none|no-reorder] [--python-items N (20000, 0 skips)]
 *            [--csv]
 * Output:  (default build, 2 cores shared with other jobs, load 4; trimmed)
 *   [parent 15352 +77.3ms] 100000 records, 1 reader -> 2 workers -> 1
 *     writer: 100000 written, 390 arrived out of order, the reorder buffer
 *     held at most 145
 *   [parent 15352 +77.4ms] checksum of the output in order
 *     74c56fbbdecbf285, serial 74c56fbbdecbf285
 *   [parent 15352 +477.6ms] 2 workers, queue of 64, slow reader    (50 us
 *     a record): queue   0% full, pipe   0% full, 7518 records/s
 *   [parent 15352 +658.1ms] 2 workers, queue of 64, slow transform (50 us
 *     a record): queue  98% full, pipe   0% full, 16777 records/s
 *   [parent 15352 +1006.4ms] 2 workers, queue of 64, slow writer    (50 us
 *     a record): queue 100% full, pipe  78% full, 8642 records/s
 *   [parent 15352 +1012.2ms] the writer killed after 1000 records: 2 of 2
 *     workers got EPIPE from write() and closed the queue (0 found it
 *     closed), the reader got EPIPE from put(); all reaped 1.0 ms after
 *     the death
 *   stage      processes     items   seconds   busy      items/s
 *   reader             1    100000  0.071788     6%      1392997
 *   transform          2    100000  0.071983    28%      1389220
 *   writer             1    100000  0.069332     3%      1442345
 *   pipeline           4    100000  0.072122             1386537
 *   python             4     20000  0.271747               73598
 *   python: with the writer killed, a worker's put() on the full Queue was
 *     still blocked after 0.5 s: nothing tells it the writer is gone
 *   result: 100000 of 100000 records, checksum of the output == serial;
 *     every stage ended cleanly; stalls where expected; dead writer ->
 *     EPIPE upstream yes OK                                    (one line)
 *   With --csv: "stage,processes,items,seconds,busy,items_per_s", one row
 *   per stage, "pipeline" end to end, and "python" (its --python-items).
 *   Busy: the share of the span a stage's processes spent not waiting for a
 *   neighbour; every stage moves at the pace of the slowest, and the
 *   busiest one is it.  Rates are measured, not judged; the occupancy is
 *   judged loosely (the link before the slow stage at least 25 points
 *   fuller than when the stage before it is slow), the checksum and the
 *   EPIPE cascade exactly.
 * Try this: --fault no-reorder (the writer emits records as they come: the
 *          checksum must say MISMATCH).  --slow-stage 2 --items 3000: the
 *          queue before the workers stays full, the pipe after them empty.
 *          Drop the reorder buffer (emit in writer()): MISMATCH, also with
 *          --workers 1, where the stall runs (2 workers) catch it.
 *          Delete the parent's close(fd[1]) in run(): the writer never reads
 *          EOF and gives up after 2 s (MISMATCH; the later steps are then
 *          skipped).  Keep fd[0] open in the workers: a dead writer no
 *          longer gives them EPIPE, they wait 2 s on a full pipe: MISMATCH.
 */
#define _GNU_SOURCE  /* F_SETPIPE_SZ */
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>

/* The pipe's bound: 4 pages.  A pipe refills a page only once it has been
 * read to its end, so with one page its occupancy saws 0..100%. */
enum { MAX_WORKERS = 16, PIPE_BYTES = 16384 };
enum { STALL_ITEMS = 3000, STALL_CAP = 64 };
enum { EXIT_STUCK = 3, EXIT_EPIPE = 4 };
enum stage { NONE, READER, TRANSFORM, WRITER };
#define WAIT_MS 2000  /* no stage waits longer for its neighbour */
#define FNV 0x100000001b3ULL

struct rec { uint64_t seq, value; };  /* 16 bytes, <= PIPE_BUF: atomic */

struct cfg {
	long items, workers, work, slow_us, die_at;  /* writer dies at die_at */
	enum stage slow;
	bool reorder, quiet;  /* quiet: no progress lines (--csv) */
};

struct shared {
	struct { _Atomic int64_t first, last; } t[4];  /* per stage */
	_Atomic int64_t wait_ns[4];  /* time spent waiting for a neighbour */
	_Atomic long pipe_bytes;  /* as the writer last saw it (FIONREAD) */
	_Atomic long epipe[4];    /* stages that got EPIPE */
	_Atomic long stuck;       /* stages that waited WAIT_MS in vain */
	_Atomic bool read_all;    /* the reader has put its last record */
	_Atomic int64_t died;     /* when the writer died (-1: never) */
	uint64_t sum;             /* the writer's checksum, in output order */
	_Atomic long written;     /* records out, in order */
	long late, peak;          /* arrivals out of order, the most the
				   * reorder buffer held at once */
};

/* Sleep us microseconds (< 1 s), whole even if a signal interrupts. */
static void sleep_us(long us)
{
	struct timespec t = { 0, us * 1000 };

	while (nanosleep(&t, &t) == -1)
		if (errno != EINTR)
			mp_die("nanosleep");
}

static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The work of the middle stage: `work` rounds of mixing. */
static uint64_t transform(uint64_t v, long work)
{
	for (long i = 0; i < work; i++)
		v = mix(v + 0x9e3779b97f4a7c15ULL);
	return v;
}

static void stamp(struct shared *sh, enum stage s)
{
	int64_t now = mp_now_ns(), zero = 0;

	atomic_compare_exchange_strong(&sh->t[s].first, &zero, now);
	for (int64_t old = atomic_load(&sh->t[s].last);
	     now > old && !atomic_compare_exchange_weak(&sh->t[s].last, &old,
							 now);)
		;
}

static void slow(const struct cfg *c, enum stage s)
{
	if (c->slow == s)
		sleep_us(c->slow_us);
}

/* ---- stage 1: the reader --------------------------------------------- */

static _Noreturn void reader(struct mp_queue *q, struct shared *sh,
			     const struct cfg *c)
{
	stamp(sh, READER);
	for (uint64_t i = 0; i < (uint64_t)c->items; i++) {
		struct rec r = { i, mix(i) };
		int64_t t = mp_now_ns();

		slow(c, READER);
		if (mp_queue_try_put(q, &r) == 0)
			continue;
		if (errno == EAGAIN &&  /* full: wait for the workers */
		    mp_queue_put_timeout(q, &r, WAIT_MS / 1e3) == 0) {
			sh->wait_ns[READER] += mp_now_ns() - t;
			continue;
		}
		if (errno == EPIPE)  /* every worker is gone */
			sh->epipe[READER]++;
		else if (errno == ETIMEDOUT)
			sh->stuck++;
		_exit(errno == EPIPE ? EXIT_EPIPE : EXIT_STUCK);
	}
	stamp(sh, READER);
	sh->read_all = true;
	MP_CHECK(mp_queue_close(q));  /* the cascade starts here */
	_exit(0);
}

/* ---- stage 2: N transform workers ------------------------------------ */

enum { BATCH = 16 };  /* records per write(): 256 bytes <= PIPE_BUF */

/* Write n records to the non-blocking pipe in one write(), waiting
 * (bounded) for room.  Up to PIPE_BUF bytes a pipe write is all or nothing,
 * so records of different workers never interleave.  Returns 0, or -1 with
 * errno EPIPE (no read end left anywhere) or ETIMEDOUT. */
static int put_records(int fd, const struct rec *r, size_t n,
		       int64_t *waited)
{
	while (n > 0) {
		if (write(fd, r, n * sizeof *r) == (ssize_t)(n * sizeof *r))
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -1;
		int64_t t = mp_now_ns();
		int k = poll(&(struct pollfd){ fd, POLLOUT, 0 }, 1, WAIT_MS);

		*waited += mp_now_ns() - t;
		if (k == 0)
			errno = ETIMEDOUT;
		if (k == 0 || (k == -1 && errno != EINTR))
			return -1;
	}
	return 0;
}

/* The batch goes out when it is full, and before the worker would wait for
 * its next record: records never sit in a worker that is idle. */
static void flush(struct mp_queue *q, int fd, struct shared *sh,
		  struct rec *batch, size_t *n, int64_t *waited)
{
	if (*n == 0 || put_records(fd, batch, *n, waited) == 0) {
		*n = 0;
		return;
	}
	int err = errno;

	if (err != EPIPE && err != ETIMEDOUT)
		mp_die("write");
	if (err == EPIPE)
		sh->epipe[TRANSFORM]++;
	else
		sh->stuck++;
	/* Pass the failure upstream: the reader's next put gets EPIPE
	 * instead of waiting for workers that are gone. */
	MP_CHECK(mp_queue_close(q));
	_exit(err == EPIPE ? EXIT_EPIPE : EXIT_STUCK);
}

static _Noreturn void worker(struct mp_queue *q, int fd, struct shared *sh,
			     const struct cfg *c)
{
	/* Ignore SIGPIPE so a dead reader of the pipe is an error code
	 * (EPIPE), not the end of this process -- as Python does at start. */
	struct sigaction sa = { .sa_handler = SIG_IGN };
	struct rec batch[BATCH];
	size_t n = 0;
	long done = 0;
	int64_t waited = 0, t;
	int rc;

	MP_CHECK(sigaction(SIGPIPE, &sa, NULL));
	for (;;) {
		if ((rc = mp_queue_try_get(q, &batch[n])) == -1 &&
		    errno == EAGAIN) {
			flush(q, fd, sh, batch, &n, &waited);
			t = mp_now_ns();
			rc = mp_queue_get_timeout(q, &batch[n], WAIT_MS / 1e3);
			if (done)  /* waiting for the first is not a stall */
				waited += mp_now_ns() - t;
		}
		if (rc != 1)
			break;
		if (done++ == 0)
			stamp(sh, TRANSFORM);
		batch[n].value = transform(batch[n].value, c->work);
		slow(c, TRANSFORM);
		if (++n == BATCH)
			flush(q, fd, sh, batch, &n, &waited);
	}
	if (rc == -1 && errno != ETIMEDOUT)
		mp_die("mp_queue_get_timeout");
	sh->stuck += rc == -1;
	flush(q, fd, sh, batch, &n, &waited);
	stamp(sh, TRANSFORM);
	sh->wait_ns[TRANSFORM] += waited;
	MP_CHECK(close(fd));  /* the writer's EOF, once every worker is done */
	_exit(rc == -1 ? EXIT_STUCK : 0);
}

/* ---- stage 3: the writer and its reorder buffer ----------------------- */

/* Records that came early wait here until every earlier one is out: a ring
 * indexed by seq, doubled when a record comes from too far ahead. */
struct reorder {
	struct rec *slot;
	bool *used;
	size_t size, held;
	uint64_t next;  /* the sequence number to write next */
};

static void rb_grow(struct reorder *b)
{
	size_t n = b->size ? 2 * b->size : 64;
	struct rec *slot = calloc(n, sizeof *slot);
	bool *used = calloc(n, sizeof *used);

	if (!slot || !used)
		mp_die("calloc");
	for (size_t i = 0; i < b->size; i++)
		if (b->used[i]) {
			slot[b->slot[i].seq & (n - 1)] = b->slot[i];
			used[b->slot[i].seq & (n - 1)] = true;
		}
	free(b->slot);
	free(b->used);
	*b = (struct reorder){ slot, used, n, b->held, b->next };
}

static void emit(struct shared *sh, struct rec r)
{
	sh->sum = (sh->sum ^ r.value) * FNV;  /* order matters */
	sh->written++;
}

/* Take one arriving record; write every record that is now next. */
static void arrive(struct reorder *b, struct shared *sh, struct rec r)
{
	sh->late += r.seq != b->next;
	while (r.seq - b->next >= b->size)
		rb_grow(b);
	b->slot[r.seq & (b->size - 1)] = r;
	b->used[r.seq & (b->size - 1)] = true;
	if ((long)++b->held > sh->peak)
		sh->peak = (long)b->held;
	for (size_t i; b->used[i = b->next & (b->size - 1)]; b->next++) {
		b->used[i] = false;
		b->held--;
		emit(sh, b->slot[i]);
	}
}

enum { READ_RECS = 64 };  /* records per read(): FIONREAD stays meaningful */

static _Noreturn void writer(int fd, struct shared *sh, const struct cfg *c)
{
	struct reorder b = { 0 };
	unsigned char buf[READ_RECS * sizeof(struct rec)];
	size_t have = 0;
	long got = 0;

	rb_grow(&b);
	for (;;) {
		int64_t t = mp_now_ns();
		int n = poll(&(struct pollfd){ fd, POLLIN, 0 }, 1, WAIT_MS);

		if (got > 0)  /* waiting for the first record is not a stall */
			sh->wait_ns[WRITER] += mp_now_ns() - t;

		if (n == 0) {  /* no record and no EOF: a write end is open */
			sh->stuck++;
			_exit(EXIT_STUCK);
		}
		ssize_t k = n == -1 ? -1 : read(fd, buf + have,
						sizeof buf - have);

		if (k == -1 && errno == EINTR)
			continue;
		if (k == -1)
			mp_die("poll/read");
		if (k == 0)
			break;  /* EOF: every write end is closed */
		int left = 0;

		MP_CHECK(ioctl(fd, FIONREAD, &left));
		sh->pipe_bytes = left;
		have += (size_t)k;
		size_t m = have / sizeof(struct rec);

		for (size_t i = 0; i < m; i++) {
			struct rec r;

			memcpy(&r, buf + i * sizeof r, sizeof r);
			if (got++ == 0)
				stamp(sh, WRITER);
			slow(c, WRITER);
			if (got - 1 == c->die_at) {  /* dies mid-stream */
				sh->died = mp_now_ns();
				MP_CHECK(kill(getpid(), SIGKILL));
			}
			if (c->reorder)
				arrive(&b, sh, r);
			else
				emit(sh, r);  /* in whatever order they came */
		}
		have -= m * sizeof(struct rec);
		memmove(buf, buf + m * sizeof(struct rec), have);
	}
	stamp(sh, WRITER);
	sh->stuck += b.held > 0;  /* a record never came: the rest wait */
	free(b.slot);
	free(b.used);
	MP_CHECK(close(fd));
	_exit(0);
}

/* ---- the pipeline, run and watched ------------------------------------ */

struct occ { double q1, pipe; long q1max, pipemax, n; };
struct exits { int writer; long workers_ok, workers_epipe; int reader; };

static int code(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Fork the writer, the workers and the reader (in that order, so that each
 * holds only the pipe ends it uses), sample both links every millisecond
 * while the reader reads (the steady state, not the final drain), reap the
 * writer, then the rest.  Every child ends within
 * WAIT_MS of its neighbours' end, so no wait here is unbounded. */
static struct exits run(struct shared *sh, const struct cfg *c, size_t cap,
			struct occ *o)
{
	struct mp_queue *q = mp_queue_create(sizeof(struct rec), cap);
	pid_t pid[MAX_WORKERS + 2];
	struct exits e = { 0 };
	int fd[2], st;

	if (!q)
		mp_die("mp_queue_create");
	memset(sh, 0, sizeof *sh);
	sh->died = -1;
	*o = (struct occ){ 0 };
	MP_CHECK(pipe2(fd, O_CLOEXEC));
	MP_CHECK(fcntl(fd[1], F_SETPIPE_SZ, PIPE_BYTES));  /* the bound */
	MP_CHECK(fcntl(fd[1], F_SETFL, O_NONBLOCK));  /* waits via poll */
	if ((pid[0] = mp_fork()) == 0) {
		MP_CHECK(close(fd[1]));
		writer(fd[0], sh, c);
	}
	for (long w = 1; w <= c->workers; w++)
		if ((pid[w] = mp_fork()) == 0) {
			MP_CHECK(close(fd[0]));
			worker(q, fd[1], sh, c);
		}
	/* Neither end stays here: with a write end the writer would never
	 * read EOF, with a read end a dead writer would give no EPIPE. */
	MP_CHECK(close(fd[0]));
	MP_CHECK(close(fd[1]));
	if ((pid[c->workers + 1] = mp_fork()) == 0)
		reader(q, sh, c);
	int64_t next = mp_now_ns() + 1000000000;

	for (pid_t w; (w = waitpid(pid[0], &st, WNOHANG)) != pid[0];) {
		if (w == -1 && errno != EINTR)
			mp_die("waitpid");
		long q1 = (long)mp_queue_qsize(q), p = sh->pipe_bytes;

		sleep_us(1000);
		if (!c->quiet && mp_now_ns() >= next) {  /* a long run */
			mp_say("parent", "%ld of %ld records written",
			       (long)sh->written, c->items);
			next += 1000000000;
		}
		if (sh->read_all)
			continue;  /* the reader is done: only draining now */
		o->q1 += (double)q1 / (double)cap;
		o->pipe += (double)p / PIPE_BYTES;
		o->q1max = q1 > o->q1max ? q1 : o->q1max;
		o->pipemax = p > o->pipemax ? p : o->pipemax;
		o->n++;
	}
	e.writer = code(st);
	for (long w = 1; w <= c->workers; w++) {
		int x = code(mp_waitpid(pid[w]));

		e.workers_ok += x == 0;
		e.workers_epipe += x == EXIT_EPIPE;
	}
	e.reader = code(mp_waitpid(pid[c->workers + 1]));
	MP_CHECK(mp_queue_destroy(q));
	return e;
}

/* The same records through the same transform, one after the other. */
static uint64_t serial(long items, long work)
{
	uint64_t h = 0;

	for (uint64_t i = 0; i < (uint64_t)items; i++)
		h = (h ^ transform(mix(i), work)) * FNV;
	return h;
}

static double secs(const struct shared *sh, enum stage a, enum stage b)
{
	return (double)(sh->t[b].last - sh->t[a].first) / 1e9;
}

/* Per stage: its span (first record to last), how busy its processes
 * were (the span minus their waits for a neighbour), and items/s.  Every
 * stage of a pipeline moves at the pace of the slowest: the busiest stage
 * is the bottleneck. */
static void print_stages(const struct shared *sh, const struct cfg *c,
			 bool csv, double py_s, long py_items)
{
	const char *name[4] = { "", "reader", "transform", "writer" };

	printf(csv ? "stage,processes,items,seconds,busy,items_per_s\n" :
	       "%-10s %9s %9s %9s %6s %12s\n", "stage", "processes", "items",
	       "seconds", "busy", "items/s");
	for (int s = READER; s <= WRITER; s++) {
		long np = s == TRANSFORM ? c->workers : 1;
		double t = secs(sh, s, s);
		double busy = 1 - (double)sh->wait_ns[s] / 1e9 /
				  (t * (double)np);

		printf(csv ? "%s,%ld,%ld,%.6f,%.2f,%.0f\n" :
		       "%-10s %9ld %9ld %9.6f %5.0f%% %12.0f\n", name[s], np,
		       c->items, t, csv ? busy : 100 * busy,
		       (double)c->items / t);
	}
	double t = secs(sh, READER, WRITER);  /* end to end */

	if (csv)
		printf("pipeline,%ld,%ld,%.6f,,%.0f\n", c->workers + 2,
		       c->items, t, (double)c->items / t);
	else
		printf("%-10s %9ld %9ld %9.6f %6s %12.0f\n", "pipeline",
		       c->workers + 2, c->items, t, "", (double)c->items / t);
	if (py_s > 0 && csv)
		printf("python,%ld,%ld,%.6f,,%.0f\n", c->workers + 2, py_items,
		       py_s, (double)py_items / py_s);
	else if (py_s > 0)
		printf("%-10s %9ld %9ld %9.6f %6s %12.0f\n", "python",
		       c->workers + 2, py_items, py_s, "",
		       (double)py_items / py_s);
}

/* The twin prints "python,1x<W>x1,<items>,<seconds>,<items/s>,<checksum>"
 * and "python-dead-downstream,<a worker's put still blocked 1/0>". */
struct twin { long items, work, blocked; double s; bool ok; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	long w, n;
	double rate;
	unsigned long long sum;

	if (sscanf(line, "python,1x%ldx1,%ld,%lf,%lf,%llu", &w, &n, &t->s,
		   &rate, &sum) == 5)
		t->ok = n == t->items && sum == serial(n, t->work);
	else if (sscanf(line, "python-dead-downstream,%ld", &t->blocked) != 1)
		fprintf(stderr, "python: %s\n", line);
}

static bool run_python(struct twin *t, long workers, long cap)
{
	char a[3][32];

	snprintf(a[0], sizeof a[0], "%ld", t->items);
	snprintf(a[1], sizeof a[1], "%ld", workers);
	snprintf(a[2], sizeof a[2], "%ld", cap);
	char wk[32];

	snprintf(wk, sizeof wk, "%ld", t->work);
	int st = mp_run_twin(MP_LESSON_DIR "/pipeline_fanout_fanin.py",
			     (char *[]){ "--items", a[0], "--workers", a[1],
					 "--capacity", a[2], "--work", wk,
					 NULL },
			     60 + (double)t->items * (double)(t->work + 1) *
			     1e-5, twin_line, t);

	if (st == -1)
		fprintf(stderr, "pipeline_fanout_fanin: python twin: %s\n",
			strerror(errno));
	return t->ok && st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Each stage slow in turn, always with 2 workers and a queue of 64 (16
 * slow workers would outrun one slow reader; a queue of 1 is full or
 * empty, nothing between).  The link before the slow stage fills, the one
 * after it empties.  Judged with a wide margin, as a busy machine blurs
 * the figures: the queue far fuller when the workers are slow than when
 * the reader is, the pipe far fuller when the writer is slow than when
 * the workers are. */
static bool stalls_where_expected(struct shared *sh, long work, long slow_us)
{
	const char *name[4] = { "", "reader", "transform", "writer" };
	long us = slow_us > 50 ? slow_us : 50;  /* well above a record's cost */
	double m[4][2];
	bool ok = true;
	struct occ o;

	for (int s = READER; s <= WRITER; s++) {
		struct cfg k = { STALL_ITEMS, 2, work, us, -1, (enum stage)s,
				 true, false };
		struct exits x = run(sh, &k, STALL_CAP, &o);
		bool right = x.writer == 0 && x.reader == 0 &&
			     x.workers_ok == 2 && sh->written == STALL_ITEMS &&
			     sh->sum == serial(STALL_ITEMS, work);  /* order */

		ok &= right;
		m[s][0] = o.n ? 100 * o.q1 / o.n : 0;
		m[s][1] = o.n ? 100 * o.pipe / o.n : 0;
		mp_say("parent", "2 workers, queue of %d, slow %-9s (%ld us a "
		       "record): queue %3.0f%% full, pipe %3.0f%% full, %.0f "
		       "records/s%s", STALL_CAP, name[s], us, m[s][0], m[s][1],
		       STALL_ITEMS / secs(sh, READER, WRITER), right ? "" :
		       "; the output is WRONG (lost, or out of order)");
	}
	if (!ok)
		mp_say("parent", "stalls: a run's output was wrong");
	return ok && m[TRANSFORM][0] >= m[READER][0] + 25 &&
	       m[WRITER][1] >= m[TRANSFORM][1] + 25;
}

/* The writer dies after 1000 of 20000 records.  The workers must get
 * EPIPE from the kernel, close the queue, and the reader get EPIPE from
 * it: every stage gone, none waiting out its bound. */
static bool dead_writer(struct shared *sh, const struct cfg *c, size_t cap)
{
	struct cfg d = { 20000, c->workers, c->work, 1, 1000, NONE, true,
			 false };
	struct occ o;
	struct exits x = run(sh, &d, cap, &o);
	double after = (double)(mp_now_ns() - sh->died) / 1e6;

	mp_say("parent", "the writer killed after 1000 records: %ld of %ld "
	       "workers got EPIPE from write() and closed the queue (%ld "
	       "found it closed), the reader got %s from put(); all reaped "
	       "%.1f ms after the death", x.workers_epipe, c->workers,
	       x.workers_ok, x.reader == EXIT_EPIPE ? "EPIPE" : "no EPIPE",
	       after);
	return x.writer == 128 + SIGKILL && x.reader == EXIT_EPIPE &&
	       x.workers_epipe >= 1 && sh->stuck == 0 &&
	       x.workers_epipe + x.workers_ok == c->workers;
}

int main(int argc, char *argv[])
{
	long items = 100000, workers = 2, cap = 64, work = 20, slow_stage = 0;
	long slow_us = 50, py_items = 20000;
	const char *fault = "none";
	bool csv = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("items", &items, 1, 1000000000, "records to read"),
		MP_OPT_L("workers", &workers, 1, MAX_WORKERS,
			 "transform workers (fan-out)"),
		MP_OPT_L("capacity", &cap, 1, 65536,
			 "reader -> workers queue capacity (records)"),
		MP_OPT_L("work", &work, 0, 1000000,
			 "mixing rounds per record in the transform"),
		MP_OPT_L("slow-stage", &slow_stage, 0, 3,
			 "the slowed stage: 0 none, 1 reader, 2 transform, "
			 "3 writer"),
		MP_OPT_L("slow-us", &slow_us, 1, 10000,
			 "microseconds a record in the slow stage"),
		MP_OPT_S("fault", &fault, "none | no-reorder (the writer "
			 "skips its reorder buffer)"),
		MP_OPT_L("python-items", &py_items, 0, 100000000,
			 "records for the Python twin (0 skips it)"),
		MP_OPT_F("csv", &csv, "the throughput table alone, as CSV"),
	};

	mp_parse_options(argc, argv, "A three-stage pipeline: reader, N "
			 "workers (fan-out), one writer (fan-in) that restores "
			 "input order; backpressure, stalls, shutdown and "
			 "EPIPE.", opts, sizeof opts / sizeof opts[0]);
	if (strcmp(fault, "none") && strcmp(fault, "no-reorder")) {
		fprintf(stderr, "pipeline_fanout_fanin: --fault '%s': want "
			"none or no-reorder\n", fault);
		return 2;
	}
	mp_stop_on_signals();
	struct shared *sh = mp_shm_alloc(sizeof *sh), keep;

	if (!sh)
		mp_die("mp_shm_alloc");

	/* 1. The pipeline, watched: how full each link is, every ms.
	 * 2. The answer it must give, computed serially. */
	struct cfg c = { items, workers, work, slow_us, -1,
			 (enum stage)slow_stage, !strcmp(fault, "none"), csv };
	struct occ o;
	struct exits e = run(sh, &c, (size_t)cap, &o);
	uint64_t want = serial(items, work);
	bool clean = e.writer == 0 && e.reader == 0 &&
		     e.workers_ok == workers && sh->stuck == 0;
	bool ok = clean && sh->written == items && sh->sum == want;

	memcpy(&keep, sh, sizeof keep);  /* its stage times, for the table */
	if (!csv) {
		mp_say("parent", "%ld records, 1 reader -> %ld workers -> 1 "
		       "writer: %ld written, %ld arrived out of order, the "
		       "reorder buffer held at most %ld", items, workers,
		       (long)sh->written, sh->late, sh->peak);
		mp_say("parent", "checksum of the output in order %016" PRIx64
		       ", serial %016" PRIx64, sh->sum, want);
		mp_say("parent", "%ld samples: queue %.0f%% full on average "
		       "(max %ld of %ld), pipe %.0f%% (max %ld of %d bytes)",
		       o.n, o.n ? 100 * o.q1 / o.n : 0, o.q1max, cap,
		       o.n ? 100 * o.pipe / o.n : 0, o.pipemax, PIPE_BYTES);
	}
	bool stalls = true, cascade = true;

	if (!csv && clean) {
		/* 3. Where it stalls: each stage slow in turn.
		 * 4. A dying downstream: the writer killed mid-stream.
		 * (Not after a stage waited in vain: each run would wait out
		 * its bounds the same way.) */
		stalls = stalls_where_expected(sh, work, slow_us);
		cascade = dead_writer(sh, &c, (size_t)cap);
	}

	/* 5. The same pipeline in Python: two multiprocessing.Queues. */
	struct twin t = { .items = py_items, .work = work, .blocked = -1 };
	bool py_ok = true;

	if (py_items && clean && mp_python3())
		py_ok = run_python(&t, workers, cap);
	else if (py_items && !csv)
		mp_say("parent", "python: skipped, python3 was not found at "
		       "configure time");

	/* 6. Per-stage and end-to-end throughput, then the verdict. */
	print_stages(&keep, &c, csv, t.ok ? t.s : 0, py_items);
	if (!csv && t.blocked >= 0)
		printf("python: with the writer killed, a worker's put() on "
		       "the full Queue %s\n", t.blocked ? "was still blocked "
		       "after 0.5 s: nothing tells it the writer is gone" :
		       "returned");
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	bool all = ok && stalls && cascade && py_ok && clean;

	if (csv && !all)
		fprintf(stderr, "pipeline_fanout_fanin: MISMATCH\n");
	if (!csv)
		printf("result: %ld of %ld records, checksum of the output %s "
		       "serial; %s; stalls %s; dead writer -> EPIPE upstream "
		       "%s%s %s\n", (long)keep.written, items,
		       keep.sum == want ? "==" : "!=", clean ?
		       "every stage ended cleanly" : "A STAGE WAITED IN VAIN",
		       !clean ? "not run" : stalls ? "where expected" :
		       "NOT WHERE EXPECTED", !clean ? "not run" : cascade ?
		       "yes" : "NO", py_ok ? "" : "; python FAILED",
		       all ? "OK" : "MISMATCH");
	return all ? EXIT_SUCCESS : EXIT_FAILURE;
}
