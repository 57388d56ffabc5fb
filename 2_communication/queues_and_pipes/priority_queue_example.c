/* 2_communication/queues_and_pipes/priority_queue_example.c -- a queue the
 * kernel keeps sorted: POSIX message queues
 *
 * Python:  multiprocessing has no priority queue.  Users register
 *          queue.PriorityQueue on a BaseManager subclass (SyncManager
 *          registers Queue, not PriorityQueue) and put (priority, item)
 *          tuples; the queue lives in the manager's server process and each
 *          put/get is a pickled request over a socket.  PriorityQueue is a
 *          heapq: the LOWEST value comes out first.
 * C:       mq_open(O_CREAT | O_EXCL, attr), mq_send with a priority,
 *          mq_receive (the HIGHEST priority first, FIFO within one),
 *          mq_timedreceive (an absolute CLOCK_REALTIME deadline),
 *          mq_getattr/mq_setattr (O_NONBLOCK), mq_close, mq_unlink.
 * Usage:   priority_queue_example [--workers N (3, 1..16)]
 *            [--tasks N (3000, 1..10^9)]
 * Output:  [parent 18121 +0.1ms] mq_open
 *            /mpp-priority_queue_example-tasks-18121: maxmsg 8,
 *            msgsize 64 (limits: msg_max 10, msgsize_max 8192)
 *          [parent 18121 +0.3ms] received: [9] page on-call, [7] restore,
 *            [5] reindex a, [5] reindex b, [5] reindex c, [2] report,
 *            [1] backup, [0] vacuum
 *          [parent 18121 +0.3ms] full queue, O_NONBLOCK: mq_send EAGAIN;
 *            a 16-byte buffer: mq_receive EMSGSIZE
 *          [parent 18121 +100.4ms] empty queue: mq_timedreceive ETIMEDOUT
 *            after 100.1 ms
 *          [parent 18121 +106.7ms] 3 workers took 3000 tasks (ids sum 4498500),
 *            3 STOP after the last task
 *          [parent 18121 +106.8ms] mq_unlink:
 *            /dev/mqueue/mpp-priority_queue_example-tasks-18121 is gone
 *          result: order highest-first, EAGAIN+EMSGSIZE+ETIMEDOUT,
 *                  3000/3000 tasks OK
 * Try this: cat /dev/mqueue/<name> while it runs with --tasks 100000000
 *          (QSIZE is the bytes queued); --workers 1 shows the same order.
 *          Send the STOPs at priority 9: workers leave before the last
 *          tasks, the queue stays full, and after 2 s the verdict says
 *          MISMATCH; drop the mq_setattr(O_NONBLOCK): the send to a full
 *          queue waits (ETIMEDOUT after 2 s), not EAGAIN: MISMATCH.
 */
#include "mp.h"

#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <sys/wait.h>

enum { MAXMSG = 8, MSGSIZE = 64, MAX_WORKERS = 16 };
#define STOP_ID (-1L)  /* a worker's sentinel, at priority 0 */

struct msg {             /* one message: up to MSGSIZE bytes */
	long id;
	char text[48];
};

struct shared {
	_Atomic long count, sum;
};

/* now + s seconds on CLOCK_REALTIME, the clock of mq_timedsend and
 * mq_timedreceive: every send and receive below is bounded, so that a
 * broken lesson (a STOP sent too early, a worker without one) ends with a
 * MISMATCH instead of waiting forever on a full or empty queue. */
static struct timespec in_s(long s)
{
	return mp_deadline(CLOCK_REALTIME, (double)s);
}

enum { BOUND_S = 2 }; /* nobody here waits that long on a healthy queue */

/* mq_send, bounded: false when the queue stayed full for BOUND_S. */
static bool send_task(mqd_t mq, long id, const char *text, unsigned prio)
{
	struct msg m = { .id = id };
	struct timespec t = in_s(BOUND_S);

	snprintf(m.text, sizeof m.text, "%s", text);
	if (mq_timedsend(mq, (const char *)&m, sizeof m, prio, &t) == 0)
		return true;
	if (errno != ETIMEDOUT)
		mp_die("mq_timedsend");
	return false;
}

/* Receive into a buffer of mq_msgsize bytes (a smaller one: EMSGSIZE),
 * bounded: id STOP_ID when the queue stayed empty for BOUND_S, with *prio
 * set to UINT_MAX so that nobody mistakes it for a real STOP. */
static struct msg recv_task(mqd_t mq, unsigned *prio)
{
	char buf[MSGSIZE];
	struct msg m = { .id = STOP_ID };
	struct timespec t = in_s(BOUND_S);
	ssize_t n = mq_timedreceive(mq, buf, sizeof buf, prio, &t);

	if (n == -1 && errno == ETIMEDOUT) {
		*prio = UINT_MAX;
		return m;
	}
	MP_CHECK(n);
	if (n != sizeof m)
		mp_die("mq_receive: %zd bytes, want %zu", n, sizeof m);
	memcpy(&m, buf, sizeof m);
	return m;
}

static long read_limit(const char *file)
{
	char path[96];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/sys/fs/mqueue/%s", file);
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* 2. A child queues eight tasks in mixed order and exits; the parent then
 *    receives them: highest priority first, FIFO among equals. */
static bool order(mqd_t mq)
{
	static const struct { const char *what; unsigned prio; } in[MAXMSG] = {
		{ "backup", 1 }, { "reindex a", 5 }, { "page on-call", 9 },
		{ "report", 2 }, { "reindex b", 5 }, { "vacuum", 0 },
		{ "restore", 7 }, { "reindex c", 5 },
	};
	static const int want[MAXMSG] = { 2, 6, 1, 4, 7, 3, 0, 5 };
	char line[400] = "";
	bool ok = true;

	pid_t pid = mp_fork();

	if (pid == 0) {
		for (long i = 0; i < MAXMSG; i++)
			if (!send_task(mq, i, in[i].what, in[i].prio))
				_exit(1);
		_exit(0);
	}
	int st = mp_waitpid(pid); /* all eight are queued before receiving */

	ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	for (int i = 0; i < MAXMSG; i++) {
		unsigned prio;
		struct msg m = recv_task(mq, &prio);
		size_t used = strlen(line);

		ok &= m.id == want[i] && prio == in[want[i]].prio;
		snprintf(line + used, sizeof line - used, "%s[%u] %s",
			 i ? ", " : "", prio, m.text);
	}
	mp_say("parent", "received: %s", line);
	return ok;
}

/* 3 and 4. The limits: a full queue, a short buffer, an empty queue. */
static bool limits(mqd_t mq)
{
	struct mq_attr nonblock = { .mq_flags = O_NONBLOCK }, old = { 0 };
	char small[16] = "";  /* sent (refused) and received into (too small) */
	unsigned prio;

	bool filled = true;

	for (long i = 0; i < MAXMSG; i++)
		filled &= send_task(mq, i, "filler", 3);
	MP_CHECK(mq_setattr(mq, &nonblock, &old));
	/* With O_NONBLOCK the timeout is not used: EAGAIN at once.  (Without
	 * it, this send would wait for room: ETIMEDOUT after BOUND_S.) */
	struct timespec t = in_s(BOUND_S);
	int full = mq_timedsend(mq, small, sizeof small, 3, &t) == -1 ? errno
								      : 0;
	int shrt = mq_receive(mq, small, sizeof small, &prio) == -1 ? errno : 0;

	MP_CHECK(mq_setattr(mq, &old, NULL));
	for (long i = 0; i < MAXMSG + (full == 0); i++)
		recv_task(mq, &prio);
	mp_say("parent", "full queue, O_NONBLOCK: mq_send %s; a %zu-byte "
	       "buffer: mq_receive %s", mp_errname(full),
	       sizeof small, mp_errname(shrt));

	/* The deadline is absolute and on CLOCK_REALTIME (a wall-clock jump
	 * moves it): now + 100 ms. */
	struct timespec deadline;
	char buf[MSGSIZE];

	MP_CHECK(clock_gettime(CLOCK_REALTIME, &deadline));
	deadline.tv_nsec += 100000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	int64_t t0 = mp_now_ns();
	int timed = mq_timedreceive(mq, buf, sizeof buf, &prio, &deadline) ==
			    -1 ? errno : 0;
	double ms = (double)(mp_now_ns() - t0) / 1e6;

	mp_say("parent", "empty queue: mq_timedreceive %s after %.1f ms",
	       mp_errname(timed), ms);
	return filled && full == EAGAIN && shrt == EMSGSIZE &&
	       timed == ETIMEDOUT && ms >= 99.0;
}

/* 5. Workers take tasks until a STOP.  STOPs go last, at priority 0, so
 *    every task still queued (priority >= 1) is received before any STOP. */
static bool workers(mqd_t mq, struct shared *sh, long nworkers, long ntasks)
{
	for (long w = 0; w < nworkers; w++) {
		if (mp_fork() != 0)
			continue;
		long count = 0, sum = 0;
		unsigned prio;
		struct msg m;

		while ((m = recv_task(mq, &prio)).id != STOP_ID) {
			count++;
			sum += m.id;
		}
		sh->count += count;
		sh->sum += sum;
		_exit(prio == 0 ? 0 : 1); /* 1: no STOP came */
	}
	bool sent = true;

	for (long i = 0; sent && i < ntasks; i++) /* waits while 8 queued */
		sent = send_task(mq, i, "task", 1 + (unsigned)(i % 9));
	for (long w = 0; sent && w < nworkers; w++)
		sent = send_task(mq, STOP_ID, "STOP", 0);
	if (!sent)
		mp_say("parent", "the queue stayed full for %d s: the workers "
		       "stopped early", BOUND_S);
	long stopped = 0; /* workers that left on a STOP, not a timeout */

	for (long w = 0; w < nworkers; w++) {
		int st;
		pid_t pid;

		while ((pid = wait(&st)) == -1 && errno == EINTR)
			;
		MP_CHECK(pid);
		stopped += WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	long want = ntasks * (ntasks - 1) / 2;

	mp_say("parent", "%ld workers took %ld tasks (ids sum %ld), %ld STOP "
	       "after the last task", nworkers, (long)sh->count, (long)sh->sum,
	       stopped);
	return sent && stopped == nworkers && sh->count == ntasks &&
	       sh->sum == want;
}

int main(int argc, char *argv[])
{
	long nworkers = 3, ntasks = 3000;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &nworkers, 1, MAX_WORKERS,
			 "worker processes"),
		MP_OPT_L("tasks", &ntasks, 1, 1000000000, "tasks to hand out"),
	};

	mp_parse_options(argc, argv, "POSIX message queues: priorities, "
			 "limits, timeouts, workers; Python's PriorityQueue "
			 "behind a Manager in C.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. A named queue under /dev/mqueue.  It outlives the process:
	 *    unlink it on Ctrl-C too.  maxmsg may not exceed msg_max (10 by
	 *    default for unprivileged users), msgsize not msgsize_max. */
	char name[96], path[128];
	struct mq_attr attr = { .mq_maxmsg = MAXMSG, .mq_msgsize = MSGSIZE };

	mp_ipc_name(name, sizeof name, "tasks");
	snprintf(path, sizeof path, "/dev/mqueue%s", name);
	MP_CHECK(mp_atcleanup(mp_cleanup_mq, name));
	mqd_t mq = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr);

	if (mq == (mqd_t)-1)
		mp_die("mq_open(%s)", name);
	MP_CHECK(mq_getattr(mq, &attr));
	mp_say("parent", "mq_open %s: maxmsg %ld, msgsize %ld (limits: "
	       "msg_max %ld, msgsize_max %ld)", name, attr.mq_maxmsg,
	       attr.mq_msgsize, read_limit("msg_max"),
	       read_limit("msgsize_max"));
	struct shared *sh = mp_shm_alloc(sizeof *sh);

	if (!sh)
		mp_die("mp_shm_alloc");

	bool sorted = order(mq);                          /* 2. */
	bool limited = limits(mq);                        /* 3, 4. */
	bool worked = workers(mq, sh, nworkers, ntasks);  /* 5. */

	/* 6. Close our descriptor and remove the name. */
	MP_CHECK(mq_close(mq));
	MP_CHECK(mq_unlink(name));
	MP_CHECK(mp_cancel_cleanup(mp_cleanup_mq, name));
	bool gone = access(path, F_OK) == -1 && errno == ENOENT;

	mp_say("parent", "mq_unlink: %s %s", path, gone ? "is gone"
							: "is STILL THERE");
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = sorted && limited && worked && gone && reaped;

	printf("result: order %s, %s, %ld/%ld tasks %s\n",
	       sorted ? "highest-first" : "WRONG", limited ?
	       "EAGAIN+EMSGSIZE+ETIMEDOUT" : "limits MISBEHAVED",
	       worked ? ntasks : 0, ntasks, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
