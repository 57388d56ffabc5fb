/* 5_advanced/error_handling_retry.c -- tasks that fail, crash or hang: each
 * attempt in its own process, a timeout, retries with backoff, a quarantine
 *
 * Python:  concurrent.futures.ProcessPoolExecutor + a retry loop around
 *          future.result(timeout=...).  A worker that dies makes the whole
 *          executor broken: _terminate_broken() sets BrokenProcessPool on
 *          every pending future, not only the one that crashed
 *          (Lib/concurrent/futures/process.py), and later submit()s raise.
 *          multiprocessing.Pool replaces a killed worker but never sends its
 *          task again: the call waits forever (bpo-22393).  Process.exitcode
 *          is 1 when run() raised, -N when signal N killed it
 *          (os.waitstatus_to_exitcode in popen_fork.py).
 * C:       fork per attempt, pidfd_open + poll for its end with a deadline,
 *          pidfd_send_signal(SIGKILL) past it, waitpid + WIFEXITED,
 *          WIFSIGNALED, WTERMSIG, WCOREDUMP; fixed-size error records on one
 *          pipe (atomic up to PIPE_BUF); setrlimit(RLIMIT_CORE) in the child.
 * Usage:   error_handling_retry [--tasks N (24)] [--workers N (4)]
 *            [--attempts N (3)] [--timeout S (0.2)] [--backoff-ms N (20)]
 *            [--backoff-cap-ms N (200)] [--seed N (5)] [--fail-rate X (0.25)]
 *            [--crash-rate X (0.15)] [--hang-rate X (0.05)]
 * Output:  (trimmed, long lines folded)
 *   [parent 3325 +2.6ms] task 1 attempt 1: killed by SIGSEGV (exitcode -11,
 *                        WCOREDUMP 0); retry in 12 ms
 *   [parent 3325 +5.1ms] task 9 attempt 1: EAGAIN: fetch of shard 9 failed
 *                        (exitcode 1); retry in 6 ms
 *   [parent 3325 +217.1ms] task 9 attempt 2: timed out after 0.20 s,
 *                        SIGKILLed (exitcode -9); retry in 27 ms
 *   [parent 3325 +248.3ms] task 9 quarantined after 3 attempts, attempt 3:
 *                        killed by SIGSEGV (exitcode -11, WCOREDUMP 0)
 *   [parent 3325 +259.0ms]    42 attempts: 21 ok, 11 error, 2 abort, 4
 *                        SIGSEGV, 4 killed at the timeout (0 of them slow,
 *                        not hung: a timeout cannot tell), 0 other
 *   result: 21 succeeded exactly once with the right result, 3 quarantined
 *           after 3 attempts with their reason, 0 ran twice, 0 wrong or
 *           unfinished, 0 not as injected, 0 core files OK
 * Try this: drop the SIGKILL in turn() (step 3): hung attempts outlive
 *          their deadline and the run stops a second later, MISMATCH;
 *          quarantine at the first failure (if (0) in finish_attempt());
 *          drop the setrlimit() and run under "ulimit -c unlimited";
 *          --seed 7 --fail-rate 0.3 --crash-rate 0.1 --hang-rate 0.05.
 */
#define _GNU_SOURCE /* sigabbrev_np, pidfd_open */
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>

enum fault { F_NONE, F_ERROR, F_ABORT, F_SEGV, F_HANG, F_OTHER };
enum { MAX_WORKERS = 64, HANG_S = 30, GRACE_S = 1 };

struct inject { double fail, crash, hang; uint64_t seed; };

struct record {  /* what a child sends; int64 first: no padding travels */
	int64_t result;
	int32_t task, attempt, err;  /* err 0: success */
	char msg[52];
};

struct task {
	enum { WAITING, RUNNING, DONE, QUARANTINED } state;
	int attempts, slot;  /* attempts started; its slot while RUNNING */
	int successes;       /* success records received: 0 or 1, never 2 */
	int64_t not_before;  /* backoff: no new attempt before this */
	int64_t result;
	char reason[112];    /* the last failure: its dead-letter entry */
};

struct slot {  /* one attempt in flight (pid 0: a free slot) */
	pid_t pid;
	int pidfd, attempt;
	long task;
	int64_t deadline;
	bool killed, got;
	struct record rec;
};

/* Everything the parent keeps about a run, in one place. */
struct run {
	struct inject in;
	long ntasks, workers, attempts, base_ms, cap_ms;
	double timeout;
	struct task *t;
	struct slot slot[MAX_WORKERS];
	int rec[2];  /* the records' pipe */
	long left, nattempts, unexpected, slow, stray, seen[F_OTHER + 1];
	long cores, core_files, first_crash, pending_then;
	bool had_core;  /* a file "core" was in the cwd before the run */
	const char *stop;  /* why the loop gave up, if it did */
};

static uint64_t mix(uint64_t x)  /* splitmix64: a seed -> 64 good bits */
{
	x += 0x9e3779b97f4a7c15;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
	return x ^ (x >> 31);
}

static double uniform(uint64_t seed, uint64_t a, uint64_t b)  /* [0, 1) */
{
	return (double)(mix(seed ^ mix(a * 1000003 + b)) >> 11) * 0x1p-53;
}

/* The fault injector.  The child asks it what to do; the parent asks it
 * too, afterwards, to check that what it saw is what happened. */
static enum fault planned(const struct inject *in, long task, int attempt)
{
	double u = uniform(in->seed, (uint64_t)task, (uint64_t)attempt);

	if (u < in->fail)
		return F_ERROR;
	if ((u -= in->fail) < in->crash)
		return u < in->crash / 2 ? F_ABORT : F_SEGV;
	return u - in->crash < in->hang ? F_HANG : F_NONE;
}

static int64_t work(long task)  /* 1^2 + ... + n^2, the slow way */
{
	int64_t sum = 0, n = 1000 + task;

	for (int64_t i = 1; i <= n; i++)
		sum += i * i;
	return sum;
}

/* One attempt, in a fresh child.  It reports success or an error as a
 * record; a crash or a hang it cannot report: the parent sees the status. */
static _Noreturn void attempt_main(const struct inject *in, long task,
				   int attempt, int wfd, pid_t parent)
{
	static const int errs[] = { EIO, ECONNRESET, EAGAIN, ETIMEDOUT };
	struct record r = { .task = (int32_t)task, .attempt = attempt };
	volatile char *page;

	/* A planned crash must leave no core file in the cwd: below a page
	 * of limit the kernel writes none (and WCOREDUMP stays 0). */
	if (setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }) == -1 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
		mp_die("setrlimit/prctl");
	if (getppid() != parent)  /* the parent died before the prctl */
		_exit(EXIT_FAILURE);
	switch (planned(in, task, attempt)) {
	case F_ERROR:  /* as a failed read() or connect() would */
		r.err = errs[mix((uint64_t)task + (uint64_t)attempt) % 4];
		snprintf(r.msg, sizeof r.msg, "fetch of shard %ld failed",
			 task);
		break;
	case F_ABORT:  /* as a failed assert() would */
		abort();
	case F_SEGV:   /* as a wild pointer would: a page with no access */
		page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
		/* SIG_DFL: ASan's handler would make the death an exit(1). */
		if (page == MAP_FAILED || signal(SIGSEGV, SIG_DFL) == SIG_ERR)
			mp_die("mmap/signal");
		page[0] = 1;
		_exit(EXIT_FAILURE);  /* not reached */
	case F_HANG:   /* a deadlock; bounded, should the parent be broken */
		sleep(HANG_S);
		_exit(EXIT_FAILURE);
	default:
		r.result = work(task);
	}
	MP_CHECK(write(wfd, &r, sizeof r));  /* <= PIPE_BUF: never torn */
	_exit(r.err ? 1 : 0);  /* 1: Python's exitcode after run() raised */
}

/* Decode a wait status as Python prints it (exitcode -11 for SIGSEGV)
 * into why, and say which fault it was. */
static enum fault judge(const struct run *ru, const struct slot *s, int st,
			char *why, size_t size)
{
	int code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);

	if (s->got && s->rec.err == 0)  /* kept, even if killed just after */
		return F_NONE;
	if (s->got && WIFEXITED(st)) {
		snprintf(why, size, "%s: %s (exitcode %d)",
			 mp_errname(s->rec.err), s->rec.msg, code);
		return F_ERROR;
	}
	if (WIFSIGNALED(st) && s->killed && WTERMSIG(st) == SIGKILL) {
		snprintf(why, size, "timed out after %.2f s, SIGKILLed "
			 "(exitcode %d)", ru->timeout, code);
		return F_HANG;
	}
	if (WIFSIGNALED(st)) {
		snprintf(why, size, "killed by SIG%s (exitcode %d, WCOREDUMP "
			 "%d)", sigabbrev_np(WTERMSIG(st)), code,
			 WCOREDUMP(st) ? 1 : 0);
		return WTERMSIG(st) == SIGABRT ? F_ABORT :
		       WTERMSIG(st) == SIGSEGV ? F_SEGV : F_OTHER;
	}
	snprintf(why, size, "exited with %d and no record", code);
	return F_OTHER;
}

/* Capped exponential backoff with full jitter: a delay drawn uniformly
 * from [0, min(cap, base * 2^(attempt-1))], so that retries of tasks that
 * failed together do not come back together. */
static int64_t backoff_ns(const struct run *ru, long task, int attempt)
{
	double ceil_ms = (double)ru->base_ms * (double)(1L << (attempt - 1));

	if (ceil_ms > (double)ru->cap_ms)
		ceil_ms = (double)ru->cap_ms;
	return (int64_t)(uniform(~ru->in.seed, (uint64_t)task,
				 (uint64_t)attempt) * ceil_ms * 1e6);
}

/* 2. Fork an attempt of task i into free slot w, and watch it. */
static void start_attempt(struct run *ru, long i, int w)
{
	struct task *k = &ru->t[i];
	struct slot *s = &ru->slot[w];
	pid_t parent = getpid();

	*s = (struct slot){ .task = i, .attempt = ++k->attempts,
			    .deadline = mp_now_ns() +
					(int64_t)(ru->timeout * 1e9) };
	k->state = RUNNING;
	k->slot = w;
	ru->nattempts++;
	if ((s->pid = mp_fork()) == 0) {
		MP_CHECK(close(ru->rec[0]));
		attempt_main(&ru->in, i, s->attempt, ru->rec[1], parent);
	}
	/* Not reaped yet, so the pid cannot be reused: no race here. */
	MP_CHECK(s->pidfd = mp_pidfd_open(s->pid));
}

/* Read every record in the pipe and file it with its attempt.  A child
 * writes before it exits: read first, and an ended child's record is in. */
static void drain_records(struct run *ru)
{
	struct record r;
	ssize_t n;

	while ((n = read(ru->rec[0], &r, sizeof r)) == sizeof r) {
		struct task *k = r.task >= 0 && r.task < ru->ntasks ?
				 &ru->t[r.task] : NULL;
		struct slot *s = k ? &ru->slot[k->slot] : NULL;

		if (!k || k->state != RUNNING || s->attempt != r.attempt) {
			ru->stray++;
			continue;
		}
		s->rec = r;
		s->got = true;
		k->successes += r.err == 0;  /* it ran to completion */
	}
	if (n == -1 && errno != EAGAIN && errno != EINTR)
		mp_die("read");
}

/* 4. The attempt in s ended: reap it, decode its status, then keep its
 *    result, schedule a retry, or quarantine the task. */
static void finish_attempt(struct run *ru, struct slot *s)
{
	struct task *k = &ru->t[s->task];
	char why[96] = "";
	int st = mp_waitpid(s->pid);  /* at once: the pidfd said it ended */
	enum fault seen = judge(ru, s, st, why, sizeof why);
	enum fault plan = planned(&ru->in, s->task, s->attempt);

	MP_CHECK(close(s->pidfd));
	ru->seen[seen]++;
	ru->cores += WIFSIGNALED(st) && WCOREDUMP(st);
	if (WIFSIGNALED(st)) {  /* a core is written before the exit */
		char core[32];

		snprintf(core, sizeof core, "core.%jd", (intmax_t)s->pid);
		ru->core_files += access(core, F_OK) == 0 ||
				  (!ru->had_core && access("core", F_OK) == 0);
	}
	s->pid = 0;
	/* Only a timeout may differ from the plan: a slow attempt on a busy
	 * machine looks hung, and is killed like one. */
	ru->unexpected += seen != plan && seen != F_HANG;
	ru->slow += seen == F_HANG && plan != F_HANG;
	if ((seen == F_ABORT || seen == F_SEGV) && ru->first_crash < 0) {
		ru->first_crash = s->task;
		ru->pending_then = ru->left;
	}
	if (seen == F_NONE) {
		k->state = DONE;
		k->result = s->rec.result;
		ru->left--;
		return;
	}
	snprintf(k->reason, sizeof k->reason, "attempt %d: %s", s->attempt,
		 why);
	if (k->attempts < ru->attempts) {
		int64_t d = backoff_ns(ru, s->task, k->attempts);

		k->state = WAITING;
		k->not_before = mp_now_ns() + d;
		mp_say("parent", "task %ld %s; retry in %.0f ms", s->task,
		       k->reason, (double)d / 1e6);
	} else {
		k->state = QUARANTINED;
		ru->left--;
		mp_say("parent", "task %ld quarantined after %d attempts, %s",
		       s->task, k->attempts, k->reason);
	}
}

/* One turn of the loop (steps 2-4).  Returns false when the run cannot
 * go on: a task lost (nothing running, nothing waiting), or an attempt
 * alive GRACE_S past its deadline (the timeout is not enforced). */
static bool turn(struct run *ru, int64_t watchdog)
{
	int64_t now = mp_now_ns(), wake = watchdog;
	int64_t grace = GRACE_S * INT64_C(1000000000);
	int w = 0, busy = 0;
	long waiting = 0;

	for (long i = 0; i < ru->ntasks; i++) {  /* 2. start what may start */
		struct task *k = &ru->t[i];

		while (w < ru->workers && ru->slot[w].pid)
			w++;
		if (k->state != WAITING)
			continue;
		waiting++;
		if (w == ru->workers)  /* no free slot: an end wakes us */
			continue;
		if (k->not_before <= now)
			start_attempt(ru, i, w);
		else if (k->not_before < wake)
			wake = k->not_before;
	}
	/* 3. Sleep until a record, an end, a deadline or a backoff is over;
	 *    then kill whatever has run past its deadline. */
	struct pollfd pfd[MAX_WORKERS + 1] = { { ru->rec[0], POLLIN, 0 } };

	for (w = 0; w < ru->workers; w++) {
		struct slot *s = &ru->slot[w];
		int64_t d = s->deadline +
			    (s->killed || now >= s->deadline ? grace : 0);

		pfd[w + 1] = (struct pollfd){ s->pid ? s->pidfd : -1, POLLIN,
					      0 };
		busy += s->pid != 0;
		if (s->pid && now > s->deadline + grace) {
			ru->stop = "an attempt ran on a second past its "
				   "deadline: the timeout is not enforced";
			return false;
		}
		if (s->pid && d < wake)
			wake = d;
	}
	if (busy == 0 && waiting == 0) {
		ru->stop = "nothing runs, nothing waits: a task was lost";
		return false;
	}
	int64_t ms = (wake - mp_now_ns() + 999999) / 1000000;

	if (poll(pfd, (nfds_t)ru->workers + 1, ms < 0 ? 0 : (int)ms) == -1 &&
	    errno != EINTR)
		mp_die("poll");
	drain_records(ru);
	for (w = 0; w < ru->workers; w++) {
		struct slot *s = &ru->slot[w];

		if (s->pid && !s->killed && !s->got &&
		    mp_now_ns() >= s->deadline) {
			MP_CHECK(mp_pidfd_send_signal(s->pidfd, s->pid,
						      SIGKILL));
			s->killed = true;
		}
		if (s->pid && (pfd[w + 1].revents & POLLIN))
			finish_attempt(ru, s);
	}
	return true;
}

int main(int argc, char *argv[])
{
	struct run ru = { .in = { 0.25, 0.15, 0.05, 0 }, .ntasks = 24,
			  .workers = 4, .attempts = 3, .base_ms = 20,
			  .cap_ms = 200, .timeout = 0.2, .first_crash = -1 };
	long seed = 5;
	const struct mp_opt opts[] = {
		MP_OPT_L("tasks", &ru.ntasks, 1, 10000, "tasks to run"),
		MP_OPT_L("workers", &ru.workers, 1, MAX_WORKERS,
			 "attempts running at once"),
		MP_OPT_L("attempts", &ru.attempts, 1, 20,
			 "attempts before a task is quarantined"),
		MP_OPT_D("timeout", &ru.timeout, 0.01, 60,
			 "seconds an attempt may run before SIGKILL"),
		MP_OPT_L("backoff-ms", &ru.base_ms, 0, 10000,
			 "first retry delay ceiling, doubled each attempt"),
		MP_OPT_L("backoff-cap-ms", &ru.cap_ms, 0, 60000,
			 "largest retry delay ceiling"),
		MP_OPT_L("seed", &seed, 0, 1L << 62, "fault injector's seed"),
		MP_OPT_D("fail-rate", &ru.in.fail, 0, 1,
			 "chance an attempt fails with an error"),
		MP_OPT_D("crash-rate", &ru.in.crash, 0, 1,
			 "chance it crashes (abort or SIGSEGV)"),
		MP_OPT_D("hang-rate", &ru.in.hang, 0, 1, "chance it hangs"),
	};

	mp_parse_options(argc, argv, "Tasks that fail, crash or hang: a "
			 "timeout, retries with backoff, a quarantine.",
			 opts, sizeof opts / sizeof opts[0]);
	if (ru.in.fail + ru.in.crash + ru.in.hang > 1) {
		fprintf(stderr, "%s: --fail-rate + --crash-rate + --hang-rate "
			"is above 1\nTry '%s --help' for more information.\n",
			program_invocation_short_name,
			program_invocation_short_name);
		return 2;
	}
	ru.in.seed = (uint64_t)seed;
	mp_stop_on_signals();

	/* 1. One pipe for every error record (the read end does not block:
	 *    it is drained whenever poll() wakes up), and the tasks. */
	MP_CHECK(pipe2(ru.rec, O_CLOEXEC));
	MP_CHECK(fcntl(ru.rec[0], F_SETFL, O_NONBLOCK));
	if (!(ru.t = calloc((size_t)ru.ntasks, sizeof *ru.t)))
		mp_die("calloc");
	ru.left = ru.ntasks;
	ru.had_core = access("core", F_OK) == 0;
	/* The longest a correct run can take: every attempt hangs. */
	int64_t watchdog = mp_now_ns() + (int64_t)(1e9 *
		((double)(ru.ntasks * ru.attempts) * (ru.timeout +
		 (double)ru.cap_ms / 1e3) / (double)ru.workers + 2));

	mp_say("parent", "1. %ld tasks, %ld at a time, up to %ld attempts, "
	       "timeout %.2f s; faults: error %.2f, crash %.2f, hang %.2f, "
	       "seed %ld", ru.ntasks, ru.workers, ru.attempts, ru.timeout,
	       ru.in.fail, ru.in.crash, ru.in.hang, seed);
	mp_say("parent", "2-4. a child per attempt, a pidfd to see it end, "
	       "SIGKILL past the timeout, retry after a jittered backoff:");
	while (ru.left > 0 && mp_now_ns() < watchdog && turn(&ru, watchdog))
		;

	/* 5. Only a broken loop leaves work here: say why, stop the rest. */
	if (ru.left > 0)
		mp_say("parent", "5. stopped with %ld tasks left: %s", ru.left,
		       ru.stop ? ru.stop : "the watchdog fired");
	for (int w = 0; w < ru.workers; w++)
		if (ru.slot[w].pid) {
			MP_CHECK(mp_pidfd_send_signal(ru.slot[w].pidfd,
						      ru.slot[w].pid, SIGKILL));
			mp_waitpid(ru.slot[w].pid);
			MP_CHECK(close(ru.slot[w].pidfd));
		}
	MP_CHECK(close(ru.rec[0]));
	MP_CHECK(close(ru.rec[1]));

	/* 6. The dead-letter list, and every task checked: one success
	 *    with the right sum, or no success and every attempt used. */
	long done = 0, dead = 0, twice = 0, wrong = 0, listed = 0;

	mp_say("parent", "6. dead-letter list:");
	for (long i = 0; i < ru.ntasks; i++) {
		struct task *k = &ru.t[i];
		int64_t n = 1000 + i, sum = n * (n + 1) * (2 * n + 1) / 6;

		twice += k->successes > 1;
		if (k->state == QUARANTINED && ++listed)
			mp_say("parent", "   task %ld: %s", i, k->reason);
		if (k->state == DONE && k->successes == 1 && k->result == sum)
			done++;
		else if (k->state == QUARANTINED && k->successes == 0 &&
			 k->attempts == ru.attempts && k->reason[0])
			dead++;
		else
			wrong++;
	}
	if (listed == 0)
		mp_say("parent", "   (empty)");
	mp_say("parent", "   %ld attempts: %ld ok, %ld error, %ld abort, %ld "
	       "SIGSEGV, %ld killed at the timeout (%ld of them slow, not "
	       "hung: a timeout cannot tell), %ld other", ru.nattempts,
	       ru.seen[F_NONE], ru.seen[F_ERROR], ru.seen[F_ABORT],
	       ru.seen[F_SEGV], ru.seen[F_HANG], ru.slow, ru.seen[F_OTHER]);
	char pattern[128] = "?";  /* where the kernel writes cores */
	FILE *f = fopen("/proc/sys/kernel/core_pattern", "re");

	if (f && fgets(pattern, sizeof pattern, f))
		pattern[strcspn(pattern, "\n")] = '\0';
	if (f && fclose(f) == EOF)
		mp_die("fclose");
	mp_say("parent", "   WCOREDUMP was 1 for %ld of %ld crashes, core "
	       "files in the cwd: %ld.  The flag says a core was written; "
	       "RLIMIT_CORE 0 stops that, unless core_pattern (here '%s') "
	       "pipes to a program, which ignores the limit (core(5))",
	       ru.cores, ru.seen[F_ABORT] + ru.seen[F_SEGV], ru.core_files,
	       pattern);

	/* 7. The same faults under Python's pools. */
	if (ru.first_crash >= 0)
		mp_say("parent", "7. ProcessPoolExecutor: task %ld's crash "
		       "would have set BrokenProcessPool on all %ld unfinished "
		       "futures (_terminate_broken in concurrent/futures/"
		       "process.py); Pool.map would wait for task %ld forever "
		       "(bpo-22393); neither can kill one hung task alone",
		       ru.first_crash, ru.pending_then, ru.first_crash);

	bool ok = done + dead == ru.ntasks && twice == 0 &&
		  ru.unexpected == 0 && ru.stray == 0 && ru.core_files == 0;

	printf("result: %ld succeeded exactly once with the right result, "
	       "%ld quarantined after %ld attempts with their reason, %ld ran "
	       "twice, %ld wrong or unfinished, %ld not as injected, %ld core "
	       "files %s\n", done, dead, ru.attempts, twice, wrong,
	       ru.unexpected + ru.stray, ru.core_files, ok ? "OK" : "MISMATCH");
	free(ru.t);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
