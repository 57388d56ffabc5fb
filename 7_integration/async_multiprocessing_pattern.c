/* 7_integration/async_multiprocessing_pattern.c -- an event loop that runs
 * at most K child processes from a list of jobs, with deadlines and Ctrl-C
 *
 * Python:  sem = asyncio.Semaphore(K)
 *          async def run(i):
 *              async with sem:
 *                  p = await asyncio.create_subprocess_exec(prog, str(i),
 *                                                           stdout=PIPE)
 *                  try:
 *                      out, _ = await asyncio.wait_for(p.communicate(), T)
 *                  except TimeoutError:
 *                      p.kill(); await p.wait()
 *          results = await asyncio.gather(*map(run, jobs))  # submission order
 *          for f in asyncio.as_completed(tasks): ...        # completion order
 * CPython: Lib/asyncio/unix_events.py: the loop learns that a child ended
 *          through a pidfd (PidfdChildWatcher, chosen by can_use_pidfd())
 *          registered as a reader, exactly as here; stdout is a pipe read by
 *          the same selector.  tasks.py: wait_for() on timeout *cancels the
 *          coroutine*, not the process: the child runs on until p.kill() or
 *          until its transport is closed (base_subprocess.py close() calls
 *          kill()).  gather() returns results "in the order of the original
 *          sequence", as_completed() in completion order.
 * C:       posix_spawn (file actions: the pipe as stdout; attributes: signal
 *          mask, default dispositions, own process group), pidfd_open,
 *          waitid(P_PIDFD), pidfd_send_signal, timerfd_create/settime,
 *          signalfd, epoll_create1/ctl/wait.  The semaphore is a counter:
 *          the loop starts a job only while fewer than K run.
 * Usage:   async_multiprocessing_pattern [--jobs N (12, 1..1000)]
 *            [--limit K (3, 1..64)] [--timeout-ms T (500, 100..60000)]
 *            [--grace-ms G (200, 10..10000)]
 *          Every 4th job fails with an exit status; every 6th hangs,
 *          ignoring SIGTERM, until its deadline kills it.
 * Output:  [loop 1627 +0.0ms] 12 jobs, at most 3 at once, deadline 500 ms
 *          [loop 1627 +9.2ms] #1 job 0 done in 5 ms: 333833500
 *          [loop 1627 +23.5ms] #2 job 2 done in 15 ms: 9004500500
 *          [loop 1627 +34.9ms] #3 job 1 done in 30 ms: 2668667000 ...
 *          [loop 1627 +525.5ms] #11 job 4 timed out in 500 ms: SIGKILL
 *          job  outcome      ms  value / status      (gather: submission order)
 *            0  done          5  333833500
 *            3  failed       40  exit status 4 ...
 *          result: 12 jobs, each once: 7 done (exact), 3 failed (status
 *            exact), 2 timed out; all as expected; at most 3 children,
 *            limit 3 OK
 * Try this: press Ctrl-C mid-run with --jobs 200 (running children get
 *          SIGTERM, the hanging ones SIGKILL after the grace period); let
 *          one more child run (`running < limit` -> `<=` in step 3): at
 *          most 4 children, MISMATCH; delete close(p[1]) in spawn(): no
 *          EOF ever comes, the loop gives up after a deadline + grace +
 *          1 s without an event, kills and reaps the rest: MISMATCH;
 *          --limit 1 (the jobs run one after the other).
 */
#define _GNU_SOURCE /* pipe2, sigabbrev_np */
#include "mp.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

extern char **environ;

enum kind { OK_JOB, FAIL_JOB, HANG_JOB };
enum outcome { NONE, DONE, FAILED, TIMED_OUT, STOPPED, NEVER_RAN };
static const char *const outcome_name[] = {
	"-", "done", "failed", "timed out", "stopped", "never ran"
};

/* What job i does: the parent knows it too, to check every result. */
static enum kind kind_of(long i)
{
	return i % 6 == 4 ? HANG_JOB : i % 4 == 3 ? FAIL_JOB : OK_JOB;
}

static int64_t expected_value(long i)  /* 1^2 + ... + m^2, m = 1000(i+1) */
{
	int64_t m = 1000 * (i + 1);

	return m * (m + 1) * (2 * m + 1) / 6;
}

/* The child side (this program run as "--job I"): 5..40 ms of sleep, so
 * that jobs finish out of order, then a value on stdout. */
static int run_job(long i, long timeout_ms, long parent)
{
	int64_t sum = 0;

	/* If the loop dies (kill -9, or SIGPIPE under `| head`), so do we;
	 * checked after the call, in case it died before. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
		return 98;

	if (kind_of(i) == HANG_JOB) {  /* stubborn: only SIGKILL ends it */
		if (signal(SIGTERM, SIG_IGN) == SIG_ERR)
			mp_die("signal");
		/* Bounded even if nobody kills it: a loop that forgot
		 * the deadline sees it exit 0, with no output. */
		struct timespec t = { timeout_ms / 1000 + 1,
				      timeout_ms % 1000 * 1000000 };

		while (nanosleep(&t, &t) == -1 && errno == EINTR)
			;
		return 0;
	}
	struct timespec d = { 0, (5 + (i * 37) % 8 * 5) * 1000000L };

	while (nanosleep(&d, &d) == -1 && errno == EINTR)
		;
	for (int64_t k = 1; k <= 1000 * (i + 1); k++)
		sum += k * k;
	if (printf("%" PRId64 "\n", sum) < 0 || fflush(stdout) == EOF)
		return 99;
	return kind_of(i) == FAIL_JOB ? (int)(i % 5) + 1 : 0;
}

struct job {
	enum outcome out;
	pid_t pid;
	int pidfd, pipefd, timerfd;  /* -1 when closed */
	bool reaped, eof, killed;
	int code;  /* exit status or signal */
	char text[32];  /* what it printed */
	size_t len;
	int64_t t0_ns, ms;
	long finished;  /* how many times it was recorded (must be 1) */
	long rank;  /* completion order, 1-based */
};

/* epoll's data: which job and which of its descriptors. */
enum { EV_PID, EV_OUT, EV_TIMER };
#define EV_SIGNAL UINT64_MAX
#define EV_GRACE  (UINT64_MAX - 1)

static void watch(int ep, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	MP_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev));
}

static void close_fd(int *fd)  /* closing also leaves the epoll set */
{
	if (*fd != -1)
		MP_CHECK(close(*fd));
	*fd = -1;
}

/* Our children as the kernel lists them (zombies included until reaped):
 * the measurement the verdict trusts, not our own counter. */
static int count_children(void)
{
	char path[64], buf[8192];
	int fd, n = 0;

	snprintf(path, sizeof path, "/proc/self/task/%jd/children",
		 (intmax_t)getpid());
	MP_CHECK(fd = open(path, O_RDONLY | O_CLOEXEC));
	ssize_t len = read(fd, buf, sizeof buf);

	MP_CHECK(len);
	MP_CHECK(close(fd));
	for (ssize_t k = 0; k < len; k++)
		n += buf[k] == ' ';
	return n;
}

/* create_subprocess_exec: this same program with "--job I", its stdout a
 * pipe, in its own process group (a terminal's Ctrl-C reaches the loop
 * only: cancelling is the loop's decision), signals as at a fresh start. */
static void spawn(struct job *j, long i, int ep, long deadline_ms)
{
	char arg[24], ms[24], pp[24];
	char *argv[] = { "async_job", "--job", arg, "--timeout-ms", ms,
			 "--parent", pp, NULL };
	int p[2];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, stops;

	snprintf(arg, sizeof arg, "%ld", i);
	snprintf(ms, sizeof ms, "%ld", deadline_ms);
	snprintf(pp, sizeof pp, "%jd", (intmax_t)getpid());
	MP_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK));
	MP_CHECK(sigemptyset(&none));
	MP_CHECK(sigemptyset(&stops));
	MP_CHECK(sigaddset(&stops, SIGINT));
	MP_CHECK(sigaddset(&stops, SIGTERM));
	MP_CHECK_PT(posix_spawn_file_actions_init(&fa));
	MP_CHECK_PT(posix_spawn_file_actions_adddup2(&fa, p[1], 1));
	MP_CHECK_PT(posix_spawnattr_init(&at));
	MP_CHECK_PT(posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
						      POSIX_SPAWN_SETSIGDEF |
						      POSIX_SPAWN_SETPGROUP));
	MP_CHECK_PT(posix_spawnattr_setsigmask(&at, &none));
	MP_CHECK_PT(posix_spawnattr_setsigdefault(&at, &stops));
	MP_CHECK_PT(posix_spawnattr_setpgroup(&at, 0));
	fflush(stdout);
	MP_CHECK_PT(
	    posix_spawn(&j->pid, mp_self_exe(), &fa, &at, argv, environ));
	MP_CHECK_PT(posix_spawn_file_actions_destroy(&fa));
	MP_CHECK_PT(posix_spawnattr_destroy(&at));
	MP_CHECK(close(p[1]));  /* else we would never see EOF */
	j->pipefd = p[0];
	/* (mp_pidfd_open: pidfd_open, or a stand-in where it is missing,
	 * under valgrind for one: see lib/mp_util.h.) */
	MP_CHECK(j->pidfd = mp_pidfd_open(j->pid));
	MP_CHECK(j->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
	struct itimerspec its = {
		.it_value = { deadline_ms / 1000, deadline_ms % 1000 * 1000000 }
	};

	MP_CHECK(timerfd_settime(j->timerfd, 0, &its, NULL));
	j->t0_ns = mp_now_ns();
	watch(ep, j->pidfd, (uint64_t)i << 2 | EV_PID);
	watch(ep, j->pipefd, (uint64_t)i << 2 | EV_OUT);
	watch(ep, j->timerfd, (uint64_t)i << 2 | EV_TIMER);
}

/* Output arrived (or EOF). */
static void read_output(struct job *j)
{
	char buf[256];
	ssize_t n;

	while ((n = read(j->pipefd, buf, sizeof buf)) > 0) {
		size_t room = sizeof j->text - 1 - j->len;
		size_t k = (size_t)n < room ? (size_t)n : room;

		memcpy(j->text + j->len, buf, k);
		j->len += k;
	}
	if (n == -1 && errno != EAGAIN && errno != EINTR)
		mp_die("read");
	if (n == 0) {
		j->eof = true;
		close_fd(&j->pipefd);
	}
}

/* The pidfd is readable: the child ended.  Reap it through the pidfd
 * (waitid(P_PIDFD)), or by pid where the pidfd is a stand-in (EBADF or
 * EINVAL: not a pidfd) -- still our unreaped child, so not a reused pid. */
static void reap(struct job *j)
{
	siginfo_t si = { 0 };

	if (waitid(P_PIDFD, (id_t)j->pidfd, &si, WEXITED) == -1) {
		if (errno != EINVAL && errno != EBADF)
			mp_die("waitid(P_PIDFD)");
		MP_CHECK(waitid(P_PID, (id_t)j->pid, &si, WEXITED));
	}
	j->reaped = true;
	j->ms = (mp_now_ns() - j->t0_ns) / 1000000;
	j->code = si.si_status;  /* the exit status, or the signal */
	j->killed = si.si_code != CLD_EXITED;
	if (j->out == NONE)  /* (TIMED_OUT stays) */
		j->out = !j->killed && j->code == 0 ? DONE : FAILED;
	close_fd(&j->pidfd);
	close_fd(&j->timerfd);
}

/* What a finished job gave: its value, exit status or signal. */
static const char *describe(const struct job *j, char *buf, size_t size)
{
	if (j->killed)
		snprintf(buf, size, "SIG%s", sigabbrev_np(j->code));
	else if (j->code != 0)
		snprintf(buf, size, "exit status %d", j->code);
	else
		snprintf(buf, size, "%s", j->text);
	return buf;
}

/* The loop gave up: SIGKILL and reap every child not yet reaped, close
 * every pipe still open.  Returns how many jobs had not finished. */
static long abandon(struct job *jobs, long n)
{
	long left = 0;

	for (long i = 0; i < n; i++) {
		struct job *j = &jobs[i];

		if (j->pid > 0 && !j->reaped) {
			MP_CHECK(mp_pidfd_send_signal(j->pidfd, j->pid,
						      SIGKILL));
			reap(j);
		}
		close_fd(&j->pipefd);
		left += j->pid > 0 && !j->finished;
	}
	mp_say("loop", "no event for a deadline and a grace period: %ld "
	       "job(s) never finished, killed and reaped", left);
	return left;
}

/* Cancel: SIGTERM now to every running child, SIGKILL when grace ends. */
static void signal_running(struct job *jobs, long n, int sig)
{
	for (long i = 0; i < n; i++)
		if (jobs[i].pidfd != -1 && !jobs[i].reaped)
			MP_CHECK(mp_pidfd_send_signal(jobs[i].pidfd,
						      jobs[i].pid, sig));
}

int main(int argc, char *argv[])
{
	long n = 12, limit = 3, timeout_ms = 500, grace_ms = 200, job = -1;
	long parent = 1;
	const struct mp_opt opts[] = {
		MP_OPT_L("jobs", &n, 1, 1000, "jobs in the list"),
		MP_OPT_L("limit", &limit, 1, 64, "children running at once"),
		MP_OPT_L("timeout-ms", &timeout_ms, 100, 60000,
			 "deadline of each job (then SIGKILL)"),
		MP_OPT_L("grace-ms", &grace_ms, 10, 10000,
			 "Ctrl-C: SIGTERM, then SIGKILL after this long"),
		MP_OPT_L("job", &job, 0, 999, NULL),  /* the child's side */
		MP_OPT_L("parent", &parent, 1, 1L << 22, NULL),
	};

	mp_parse_options(argc, argv,
			 "An epoll loop over child processes: "
			 "a limit, deadlines, Ctrl-C.",
			 opts, sizeof opts / sizeof opts[0]);
	if (job >= 0)
		return run_job(job, timeout_ms, parent);

	/* 1. Ctrl-C becomes an event of the loop: mp_stop_signalfd() blocks
	 *    SIGINT, SIGTERM, SIGHUP and SIGQUIT and returns a signalfd that
	 *    reads them (sigprocmask + signalfd; children get them unblocked;
	 *    SIGPIPE ignored, so that `| head` shows as EPIPE). */
	sigset_t stops;
	int sfd = mp_stop_signalfd(&stops), ep, grace;

	MP_CHECK(ep = epoll_create1(EPOLL_CLOEXEC));
	MP_CHECK(grace = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
	watch(ep, sfd, EV_SIGNAL);
	watch(ep, grace, EV_GRACE);

	/* 2. The job list. */
	struct job *jobs = calloc((size_t)n, sizeof *jobs);

	if (!jobs)
		mp_die("calloc");
	for (long i = 0; i < n; i++)
		jobs[i] =
		    (struct job){ .pidfd = -1, .pipefd = -1, .timerfd = -1 };
	mp_say("loop", "%ld jobs, at most %ld at once, deadline %ld ms", n,
	       limit, timeout_ms);

	/* 3. The loop: start jobs while fewer than `limit` run (the
	 *    semaphore), then wait for any descriptor of any child. */
	long next = 0, running = 0, finished = 0, max_children = 0, killed = 0;
	int stop_sig = 0;
	long stuck = 0;
	char what[48];
	int64_t last_event = mp_now_ns();

	while (running > 0 || (next < n && !stop_sig)) {
		while (!stop_sig && next < n && running < limit) {
			spawn(&jobs[next], next, ep, timeout_ms);
			next++;
			running++;
			long c = count_children();

			max_children = c > max_children ? c : max_children;
		}
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 1000);

		if (k == -1 && errno != EINTR)
			mp_die("epoll_wait");
		if (k > 0) {
			last_event = mp_now_ns();
		} else if (mp_elapsed_s(last_event) * 1000 >
			   (double)(timeout_ms + grace_ms + 1000)) {
			/* Every child has a deadline, so a quiet loop this
			 * long waits for something that never comes (an EOF
			 * from a pipe with a write end left open, a child
			 * nobody counts). */
			stuck = abandon(jobs, n);
			break;
		}
		for (int e = 0; e < k; e++) {
			uint64_t tag = evs[e].data.u64;

			if (tag == EV_SIGNAL) {  /* 5. Ctrl-C: cancel all */
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof si) != sizeof si)
					mp_die("read signalfd");
				if (stop_sig) {  /* a second one: no grace */
					signal_running(jobs, n, SIGKILL);
					continue;
				}
				stop_sig = (int)si.ssi_signo;
				mp_say("loop",
				       "SIG%s: %ld running get SIGTERM, "
				       "SIGKILL in %ld ms; %ld never start",
				       sigabbrev_np(stop_sig), running,
				       grace_ms, n - next);
				signal_running(jobs, n, SIGTERM);
				struct itimerspec g = { .it_value = {
							    grace_ms / 1000,
							    grace_ms % 1000 *
								1000000 } };

				MP_CHECK(timerfd_settime(grace, 0, &g, NULL));
				continue;
			}
			if (tag == EV_GRACE) {
				uint64_t ticks;

				MP_CHECK(read(grace, &ticks, sizeof ticks));
				for (long i = 0; i < n; i++)
					killed += jobs[i].pidfd != -1;
				signal_running(jobs, n, SIGKILL);
				continue;
			}
			long i = (long)(tag >> 2);
			struct job *j = &jobs[i];

			/* (an fd closed earlier in this batch: -1, skip) */
			if ((tag & 3) == EV_OUT && j->pipefd != -1)
				read_output(j);
			else if ((tag & 3) == EV_PID && j->pidfd != -1)
				reap(j);
			else if ((tag & 3) == EV_TIMER && j->timerfd != -1) {
				/* 4. The deadline: wait_for() + p.kill() */
				uint64_t ticks;

				MP_CHECK(
				    read(j->timerfd, &ticks, sizeof ticks));
				j->out = TIMED_OUT;
				MP_CHECK(mp_pidfd_send_signal(j->pidfd, j->pid,
							      SIGKILL));
			}
			if (!j->reaped || !j->eof || j->finished)
				continue;
			/* Both seen: as_completed() hands this one out. */
			j->finished++;
			j->rank = ++finished;
			running--;
			if (stop_sig && j->killed && j->out != TIMED_OUT)
				j->out = STOPPED;
			j->text[strcspn(j->text, "\n")] = '\0';
			mp_say("loop", "#%ld job %ld %s in %" PRId64 " ms: %s",
			       j->rank, i, outcome_name[j->out], j->ms,
			       describe(j, what, sizeof what));
		}
	}
	for (long i = next; i < n; i++)
		jobs[i].out = NEVER_RAN;

	/* 6. gather(): the results in submission order, and the check. */
	long done = 0, failed = 0, timed_out = 0, right = 0, once = 0;

	if (!stop_sig)
		printf("job  outcome      ms  value / status      "
		       "(gather: submission order)\n");
	for (long i = 0; i < n; i++) {
		struct job *j = &jobs[i];
		enum kind want = kind_of(i);
		char *end;
		long long v = strtoll(j->text, &end, 10);

		once += j->finished == 1;
		done += j->out == DONE;
		failed += j->out == FAILED;
		timed_out += j->out == TIMED_OUT;
		right +=
		    want == OK_JOB ? j->out == DONE && *end == '\0' &&
					 v == expected_value(i)
		    : want == FAIL_JOB
			? j->out == FAILED && !j->killed && j->code == i % 5 + 1
			: j->out == TIMED_OUT && j->killed &&
			      j->code == SIGKILL;
		if (!stop_sig)
			printf("%3ld  %-10s %4" PRId64 "  %s\n", i,
			       outcome_name[j->out], j->ms,
			       describe(j, what, sizeof what));
	}
	int left = count_children();

	free(jobs);
	MP_CHECK(close(grace));
	MP_CHECK(close(sfd));
	MP_CHECK(close(ep));
	if (stop_sig && !stuck) {  /* 7. Cancelled: all reaped, 128 + sig */
		mp_say("loop",
		       "stopped: %ld jobs finished, %ld needed SIGKILL "
		       "after the grace period, %d children left",
		       finished, killed, left);
		return 128 + stop_sig;
	}
	bool ok = once == n && right == n && max_children <= limit &&
		  left == 0 && stuck == 0;

	printf("result: %ld jobs, each once: %ld done (exact), %ld failed "
	       "(status exact), %ld timed out; %s; at most %ld children, "
	       "limit %ld %s\n",
	       n, done, failed, timed_out, stuck ? "SOME NEVER FINISHED" :
	       right == n ? "all as expected" : "NOT as expected", max_children,
	       limit, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
