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
 * Output:  [parent 18121 +0.1ms] mq_open /mpp-priority_queue_example-tasks-18121: maxmsg 8, msgsize 64 (limits: msg_max 10, msgsize_max 8192)
 *          [parent 18121 +0.3ms] received: [9] page on-call, [7] restore, [5] reindex a, [5] reindex b, [5] reindex c, [2] report, [1] backup, [0] vacuum
 *          [parent 18121 +0.3ms] full queue, O_NONBLOCK: mq_send EAGAIN; a 16-byte buffer: mq_receive EMSGSIZE
 *          [parent 18121 +100.4ms] empty queue: mq_timedreceive ETIMEDOUT after 100.1 ms
 *          [parent 18121 +106.7ms] 3 workers took 3000 tasks (ids sum 4498500), each STOP after the last task
 *          [parent 18121 +106.8ms] mq_unlink: /dev/mqueue/mpp-priority_queue_example-tasks-18121 is gone
 *          result: order highest-first, EAGAIN+EMSGSIZE+ETIMEDOUT, 3000/3000 tasks OK
 * Try this: cat /dev/mqueue/<name> while it runs with --tasks 100000000
 *          (QSIZE is the bytes queued); --workers 1 shows the same order.
 */
#include "mp.h"

#include <fcntl.h>
#include <mqueue.h>

enum { MAXMSG = 8, MSGSIZE = 64, MAX_WORKERS = 16 };
#define STOP_ID (-1L)  /* a worker's sentinel, at priority 0 */

struct msg {             /* one message: up to MSGSIZE bytes */
	long id;
	char text[48];
};

struct shared {
	_Atomic long count, sum;
};

static void send_task(mqd_t mq, long id, const char *text, unsigned prio)
{
	struct msg m = { .id = id };

	snprintf(m.text, sizeof m.text, "%s", text);
	MP_CHECK(mq_send(mq, (const char *)&m, sizeof m, prio));
}

/* Receive into a buffer of mq_msgsize bytes (a smaller one: EMSGSIZE). */
static struct msg recv_task(mqd_t mq, unsigned *prio)
{
	char buf[MSGSIZE];
	struct msg m;
	ssize_t n = mq_receive(mq, buf, sizeof buf, prio);

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

	if (mp_fork() == 0) {
		for (long i = 0; i < MAXMSG; i++)
			send_task(mq, i, in[i].what, in[i].prio);
		_exit(0);
	}
	mp_wait_all();  /* all eight are queued before the first receive */
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
	struct mq_attr nonblock = { .mq_flags = O_NONBLOCK }, old;
	char small[16] = "";  /* sent (refused) and received into (too small) */
	unsigned prio;

	for (long i = 0; i < MAXMSG; i++)
		send_task(mq, i, "filler", 3);
	MP_CHECK(mq_setattr(mq, &nonblock, &old));
	int full = mq_send(mq, small, sizeof small, 3) == -1 ? errno : 0;
	int shrt = mq_receive(mq, small, sizeof small, &prio) == -1 ? errno : 0;

	MP_CHECK(mq_setattr(mq, &old, NULL));
	for (long i = 0; i < MAXMSG; i++)
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
	return full == EAGAIN && shrt == EMSGSIZE && timed == ETIMEDOUT &&
	       ms >= 99.0;
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
		_exit(0);
	}
	for (long i = 0; i < ntasks; i++)  /* blocks while 8 are queued */
		send_task(mq, i, "task", 1 + (unsigned)(i % 9));
	for (long w = 0; w < nworkers; w++)
		send_task(mq, STOP_ID, "STOP", 0);
	mp_wait_all();
	long want = ntasks * (ntasks - 1) / 2;

	mp_say("parent", "%ld workers took %ld tasks (ids sum %ld), each STOP "
	       "after the last task", nworkers, (long)sh->count, (long)sh->sum);
	return sh->count == ntasks && sh->sum == want;
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
	bool ok = sorted && limited && worked && gone;

	printf("result: order %s, %s, %ld/%ld tasks %s\n",
	       sorted ? "highest-first" : "WRONG", limited ?
	       "EAGAIN+EMSGSIZE+ETIMEDOUT" : "limits MISBEHAVED",
	       worked ? ntasks : 0, ntasks, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
