/* lib/mp_util.h -- what every lesson needs and none of them teaches
 *
 * Error exits, narration, option parsing, a monotonic clock, reaping of
 * children, IPC names, and a clean stop on Ctrl-C.  Python hides all of this
 * inside multiprocessing; in C it is a few lines each, collected here so that
 * a lesson can show only the calls it is about.
 *
 * Conventions (the same as the system calls a lesson teaches):
 *  - functions that can fail return 0 / -1 with errno set, unless documented
 *    otherwise;
 *  - "die" means: print one line to stderr, stop (SIGTERM) and reap the
 *    process's children, run the cleanups it registered with mp_atcleanup()
 *    (so an error exit leaves no process and no named object behind), and
 *    exit(1) -- or _exit(1) when called in a forked child, so that the child
 *    never runs the parent's atexit handlers or flushes the parent's stdio
 *    buffers a second time.
 */
#ifndef MP_UTIL_H
#define MP_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* ---- errors ----------------------------------------------------------- */

/* Print "prog: <message>: ENAME (description)" for the current errno, then
 * exit(1) in the main process or _exit(1) in a forked child. */
_Noreturn void mp_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* The same for calls that return an error number instead of setting errno
 * (every pthread_* call, posix_spawn): pass that number as err. */
_Noreturn void mp_die_en(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Check a call that returns -1 and sets errno (most system calls). */
#define MP_CHECK(call)                                                    \
	do {                                                              \
		if ((call) == -1)                                         \
			mp_die("%s:%d: %s", __FILE__, __LINE__, #call);   \
	} while (0)

/* Check a call that returns 0 or an error number (pthread_*, posix_spawn).
 * These do not set errno, so perror() after them prints the wrong thing. */
#define MP_CHECK_PT(call)                                                 \
	do {                                                              \
		int mp_en_ = (call);                                      \
		if (mp_en_ != 0)                                          \
			mp_die_en(mp_en_, "%s:%d: %s", __FILE__,          \
				  __LINE__, #call);                       \
	} while (0)

/* Die as mp_die() does, for a failure that no call reported (a child's bad
 * exit status, a wrong count): the message alone, no errno. */
_Noreturn void mp_fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* The symbolic name of an error number, as lessons print a call's result:
 * "EOWNERDEAD" for EOWNERDEAD, "0" for 0 (success), "?" for an unknown one. */
const char *mp_errname(int err);

/* True in the process that started the program, false in forked children. */
bool mp_is_main_process(void);

/* ---- narration -------------------------------------------------------- */

/* Print "[role pid +12.3ms] message" on stdout and flush it at once, so that
 * lines from several processes interleave in the order they were written.
 * The clock starts when the program starts; children share the origin. */
void mp_say(const char *role, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Nanoseconds on CLOCK_MONOTONIC (never jumps with the wall clock). */
int64_t mp_now_ns(void);

/* Seconds since program start, for figures printed by lessons. */
double mp_elapsed_s(int64_t since_ns);

/* ---- waiting and spinning --------------------------------------------- */

/* The absolute time `seconds` from now on `clock`, for the calls that wait
 * until a deadline: CLOCK_MONOTONIC for a condition variable made with
 * pthread_condattr_setclock(CLOCK_MONOTONIC), CLOCK_REALTIME for
 * sem_timedwait, mq_timedreceive and pthread_mutex_timedlock. */
struct timespec mp_deadline(clockid_t clock, double seconds);

/* pthread_mutex_destroy, where EBUSY (the mutex is still locked: an unlock
 * is missing) is a finding for a verdict, not a reason to die: it says so
 * and returns false.  true once destroyed; dies on any other error. */
bool mp_mutex_destroy(pthread_mutex_t *m);

/* One turn of a spin-wait: tells the CPU (PAUSE on x86, YIELD on Arm) that
 * this is a busy loop, which saves power and lets the other hardware
 * thread of the core run. */
static inline void mp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* ---- CPU-bound work ---------------------------------------------------- */

/* n steps of the 64-bit LCG x -> A x + C (Knuth's MMIX constants): work
 * whose every step needs the one before, so neither the compiler nor the
 * CPU can skip or overlap steps.  The lessons' unit of CPU-bound work. */
#define MP_LCG_A UINT64_C(6364136223846793005)
#define MP_LCG_C UINT64_C(1442695040888963407)
uint64_t mp_lcg(uint64_t x, uint64_t n);

/* The same value in about log2(n) steps (the step composed with itself by
 * squaring), to check a worker's answer without redoing its work. */
uint64_t mp_lcg_jump(uint64_t x, uint64_t n);

/* ---- options ---------------------------------------------------------- */

enum mp_opt_kind { MP_OPT_LONG, MP_OPT_DOUBLE, MP_OPT_FLAG, MP_OPT_STRING };

/* One command-line option "--name VALUE" (or "--name=VALUE", or "--name"
 * alone for a flag).  The variable it points to holds the default before
 * parsing and the value after.  Numbers outside [min, max] are refused. */
struct mp_opt {
	const char *name;  /* without the leading "--" */
	enum mp_opt_kind kind;
	void *value;       /* long *, double *, bool * or const char ** */
	double min, max;   /* range, for LONG and DOUBLE */
	const char *help;  /* one line; NULL hides the option from --help */
};

#define MP_OPT_L(nm, ptr, lo, hi, text) \
	{ (nm), MP_OPT_LONG, (ptr), (double)(lo), (double)(hi), (text) }
#define MP_OPT_D(nm, ptr, lo, hi, text) \
	{ (nm), MP_OPT_DOUBLE, (ptr), (lo), (hi), (text) }
#define MP_OPT_F(nm, ptr, text) { (nm), MP_OPT_FLAG, (ptr), 0, 1, (text) }
#define MP_OPT_S(nm, ptr, text) { (nm), MP_OPT_STRING, (ptr), 0, 0, (text) }

/* Parse argv against opts[0..n-1].  "--help" or "-h" prints
 *   Usage: prog [options]
 *   <summary>
 *     --name N   help (default D, range LO..HI)
 * on stdout and exits 0.  An unknown option, a missing or malformed value, a
 * value out of range or a stray argument prints one line naming the problem
 * and a hint on stderr, and exits 2. */
void mp_parse_options(int argc, char *argv[], const char *summary,
		      const struct mp_opt *opts, size_t n);

/* ---- children --------------------------------------------------------- */

/* Wait for every child of this process.  Returns how many were reaped.
 * Dies, naming the pid and what happened, if any child exited non-zero or was
 * killed by a signal (after reaping the others).  Retries on EINTR. */
int mp_wait_all(void);

/* waitpid() that retries on EINTR and dies on any other error; returns the
 * raw status for WIFEXITED() and friends. */
int mp_waitpid(pid_t pid);

/* fflush(stdout) and fork(); dies if fork fails.  Flushing first matters:
 * under a pipe stdout is fully buffered, and a child would print the parent's
 * pending output a second time.  The parent remembers the child, so that a
 * stop (mp_stop_on_signals, mp_die) finds it without /proc and with no free
 * descriptor.  The child asks for SIGTERM when its parent dies
 * (prctl(PR_SET_PDEATHSIG)), so that a parent killed with SIGKILL leaves no
 * orphan running; the race (the parent dying before the prctl) is closed by
 * comparing getppid() with the parent's pid saved before fork().  Caveats:
 * the signal comes when the parent *thread* that forked exits, and a
 * grandchild does not inherit the setting (fork clears it). */
pid_t mp_fork(void);

/* The path of this program, as readlink("/proc/self/exe") gives it, for a
 * lesson that runs itself again (posix_spawn, exec).  Spawning the path
 * rather than "/proc/self/exe" itself matters under valgrind: there
 * /proc/self/exe is valgrind's own binary, and readlink() is what valgrind
 * answers with the program's path.  Dies if the link cannot be read. */
const char *mp_self_exe(void);

/* Run this program again (same pid, same argv) with the environment
 * variable name set to value, unless name is already set (then return):
 * for a setting a library reads only when it loads, such as libgomp's
 * OMP_WAIT_POLICY.  Dies if the exec fails. */
void mp_reexec_with_env(char *argv[], const char *name, const char *value);

/* ---- a descriptor for a child's end ------------------------------------ */

/* pidfd_open(pid, 0): a descriptor that polls readable once the child has
 * exited (and signals it safely: never a recycled pid).  Where the system
 * has no pidfd_open (ENOSYS: Linux before 5.3, valgrind before 3.20), it
 * returns mp_exit_fd(pid) instead.  -1 with errno on failure. */
int mp_pidfd_open(pid_t pid);

/* The stand-in: an eventfd that a small thread makes readable as soon as
 * waitid(P_PID, pid, WEXITED | WNOWAIT) sees the child end (or finds it
 * already reaped).  WNOWAIT leaves the child for the caller to reap,
 * exactly as with a pidfd.  Python's Process.sentinel is the same idea
 * done before fork(): a pipe whose only write end dies with the child
 * (Lib/multiprocessing/popen_fork.py).  pid must be a child of this
 * process; the descriptor is only for poll/epoll and close. */
int mp_exit_fd(pid_t pid);

/* pidfd_send_signal(pidfd, sig, NULL, 0), or kill(pid, sig) where it is
 * missing (ENOSYS).  pid must be the same child, not yet reaped, so that the
 * fallback cannot hit a recycled pid either. */
int mp_pidfd_send_signal(int pidfd, pid_t pid, int sig);

/* ---- IPC names and a clean stop --------------------------------------- */

/* Write "/mpp-<program>-<what>-<pid>-<random>" into buf (NUL-terminated,
 * truncated to size): names of shm segments, semaphores and message queues
 * carry the program and the pid, so two runs at once never share or unlink
 * each other's objects and a leftover can be traced to whoever made it, and
 * 32 random bits, so that nobody can create the name first. */
void mp_ipc_name(char *buf, size_t size, const char *what);

/* Stop cleanly on SIGINT (Ctrl-C), SIGTERM, SIGHUP (the terminal closed),
 * SIGQUIT (Ctrl-\) and SIGPIPE (stdout piped into `head`, which exited).
 * Call it once, early in main, before forking: the handler is inherited by
 * forked children.  On the signal, the handler (in whichever process
 * receives it)
 *   1. sends SIGTERM and SIGCONT (a stopped child would keep SIGTERM
 *      pending) to every child of this process (Python's terminate()), and
 *      to the whole process group of a child that leads one; the children
 *      mp_fork() made are found from memory, the others in /proc;
 *   2. reaps them all (each child does the same for its own children),
 *      sending SIGKILL to those still there after 2 s;
 *   3. runs the cleanups this process registered with mp_atcleanup(),
 *      newest first (unlinking its named IPC objects),
 *   4. _exits with 128 + the signal number, as a shell reports it.
 * Cleanups run inside a signal handler, so they may only call
 * async-signal-safe functions (signal-safety(7)): printf, malloc and free
 * are not.  shm_unlink, sem_unlink and mq_unlink are not on POSIX's list
 * either; glibc implements them as a plain unlink(2) (or the mq_unlink
 * system call) without locks or allocation, so they are safe there in
 * practice, and the ready-made cleanups below rely on that.  A signal
 * ignored when the program started (nohup's SIGHUP) stays ignored. */
void mp_stop_on_signals(void);

/* For an event loop that reads Ctrl-C as an event: block SIGINT, SIGTERM,
 * SIGHUP (the terminal closed) and SIGQUIT (Ctrl-\), put them in *set (for
 * children to unblock), and return a signalfd (O_CLOEXEC) that reads them.
 * SIGPIPE is ignored, so that a `| head` that exits shows as EPIPE, and
 * mp_say() then stops the children and exits 141 quietly.  Use it instead
 * of mp_stop_on_signals(); dies on failure. */
int mp_stop_signalfd(sigset_t *set);

/* Block the stop signals in this thread, saving the old mask in *old (NULL:
 * not saved), and restore it.  Around a call that must not be cut short by
 * the handler: sem_open(O_CREAT) first creates a temporary file
 * /dev/shm/sem.XXXXXX with a random name and then renames it, and a stop in
 * between would leave that file where no cleanup can name it.  Both return
 * 0, or -1 with errno. */
int mp_block_stop_signals(sigset_t *old);
int mp_restore_signals(const sigset_t *old);

/* Register fn(arg) to run on a signal stop (see above) or in mp_die().  They
 * do not run on a normal exit: there the lesson cleans up in plain sight.
 * They run in the process that registered them, never in a forked child that
 * inherited the list.  Up to 16; returns -1 with ENOMEM beyond that. */
int mp_atcleanup(void (*fn)(void *), void *arg);

/* Remove a cleanup this process registered with the same fn and arg, once
 * the lesson has done that cleanup itself (-1 with ENOENT if none matches). */
int mp_cancel_cleanup(void (*fn)(void *), void *arg);

/* Ready-made cleanups for mp_atcleanup(): arg is the object's name. */
void mp_cleanup_shm(void *name);  /* shm_unlink(name) */
void mp_cleanup_sem(void *name);  /* sem_unlink(name) */
void mp_cleanup_mq(void *name);   /* mq_unlink(name) */

/* ---- a last bound ------------------------------------------------------ */

/* A watchdog thread for the waits no timed call can bound (a wake-up lost
 * on a mutex that is not process-shared: pthread_cond_timedwait re-takes
 * its mutex with no time limit).  If the program still runs `seconds` from
 * now -- or, with progress not NULL, `seconds` after *progress last
 * changed -- it prints "result: no verdict within S s (why) MISMATCH"
 * ("no progress for S s" with progress),
 * stops and reaps the children, runs the cleanups and _exit(1)s (not
 * exit(): the main thread may be inside exit() itself, and two exit()
 * calls at once can deadlock).  Returns 0, or an error number. */
int mp_watchdog(double seconds, _Atomic long *progress, const char *why);

/* ---- Python twins ----------------------------------------------------- */

/* Path of the python3 found when the project was configured, or NULL when
 * none was found (then lessons print their C figures alone and say so). */
const char *mp_python3(void);

/* Run a lesson's Python twin, "python3 -u script args...", and hand each line
 * it prints on stdout to on_line(line, arg) as it arrives (without the
 * newline; with on_line NULL, each line is printed on our stdout).  The
 * twin runs in its own process group, so that past timeout_s seconds the
 * whole group -- python3 and the worker
 * processes it forked -- is stopped (SIGTERM, then SIGKILL a second later).
 * On Ctrl-C mp_stop_on_signals() sends SIGTERM to the twin's whole group.
 * Returns the twin's raw wait status, or -1 with errno: ENOENT when no
 * python3 was found at configure time, ETIMEDOUT when it was stopped for
 * taking too long, or the errno of a failed pipe, fork or poll. */
int mp_run_twin(const char *script, char *const args[], double timeout_s,
		void (*on_line)(const char *line, void *arg), void *arg);

#endif
