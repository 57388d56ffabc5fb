/* 6_performance/ipc_cost_table.c -- what every IPC mechanism and every lock
 * costs on this machine, measured between processes
 *
 * Python:  conn.send_bytes / recv_bytes on a Pipe() (a socketpair,
 *          Lib/multiprocessing/connection.py; a 4-byte length header goes
 *          in front of every message), Queue.put / get (a feeder thread
 *          pickles into a pipe, get() reads it under a lock and unpickles
 *          it, Lib/multiprocessing/queues.py), "with lock:" (a POSIX
 *          semaphore, Modules/_multiprocessing/semaphore.c), a Manager
 *          proxy call (the method name and arguments pickled over
 *          a socket to the manager process and the result back,
 *          BaseProxy._callmethod in Lib/multiprocessing/managers.py).
 *          The twin, ipc_cost_table.py, measures those four.
 * C:       pipe, mkfifo, socketpair (SOCK_STREAM, SOCK_DGRAM), an AF_UNIX
 *          and a TCP 127.0.0.1 listen/connect/accept, mq_open, msgget,
 *          shared memory with FUTEX_WAIT/FUTEX_WAKE or spinning, eventfd;
 *          pthread_mutex (PROCESS_SHARED), sem_init (pshared), semop,
 *          flock, fcntl F_SETLKW, F_OFD_SETLKW, a futex lock, a spinlock,
 *          atomic_fetch_add.
 * How:     every run forks two fresh processes (or N, for locks) and the
 *          parent only watches the clock: a message run that does not end
 *          in 2 s (plus 200 us a round trip, 1 ms a message), or lock
 *          workers not gone 3 s after they were told to stop, are killed:
 *          the run fails, and so does the rest of that row.  Messages carry
 *          their number, checked on arrival with the last word, and every 8th
 *          is checksummed word by word (summing every 64 KiB message would add
 *          a third to the transfer it measures); one-way runs send message 1
 *          with a middle word flipped, which the checksum must catch (the check
 *          checked); every lock guards a plain "read, add one, write back"
 *          counter that must come out exact (lock workers run for --lock-ms,
 *          each pinned to its own CPU so that they really overlap).  Beside
 *          each row a probe runs the same calls in a bare loop (no numbering,
 *          no checksum, no counter), alternating with the measured runs;
 *          "ratio" is best measured run / best probe run.
 * Reading: a blocking round trip costs two wake-ups of a sleeping process
 *          (microseconds, whatever carries the bytes); spinning on shared
 *          memory skips them while each side has a CPU of its own; an
 *          uncontended futex lock or mutex is one atomic instruction, a
 *          SysV semaphore or a file lock is a system call each way, and
 *          contention makes sleepers and wake-ups of them all.
 * Usage:   ipc_cost_table [--rounds N (500)] [--messages N (32)]
 *          [--lock-ms X (5)] [--procs N (2)] [--repeat N (3)] [--full]
 *          [--python-rounds N (200)] [--csv] [--plot [FILE.svg|png]]
 *          --full: 20000 rounds, 2000 messages, 200 ms per lock run,
 *          4 procs, 7 repeats, progress on stderr (options given beside
 *          it still win).
 * Output:  (release preset, 2 CPUs, each side pinned to its own; cut)
 *   round trip, us     bytes   median      min..max         probe  ratio
 *   pipe                   8    32.73    32.27..33.24       32.63  0.99x
 *   socketpair stream      8    32.13    29.71..33.44       30.29  0.98x
 *   SysV msg               8    34.08    33.75..35.72       34.73  0.97x
 *   shm + futex            8    32.84    32.07..34.09       32.20  1.00x
 *   shm + spin             8     0.60     0.47..0.77         0.46  1.01x
 *   eventfd                8    32.05    31.81..33.44       31.90  1.00x
 *   bandwidth, MB/s    bytes   median      min..max         probe  ratio
 *   socketpair stream  65536     8506     8383..10095        9650  0.96x
 *   SysV msg            8192     3389     2117..4035         3814  0.95x
 *   shm + futex        65536     1813     1750..1815         1910  1.05x
 *   shm + spin         65536    23256    23182..25916       23986  0.93x
 *   lock pair, ns      procs   median      min..max         probe  ratio
 *   pthread mutex          1     13.9     13.9..14.0         14.0  0.99x
 *     (procs: ns)  2: 51
 *   SysV semaphore         1    614.4    605.8..620.1       601.9  1.01x
 *     (procs: ns)  2: 16468
 *   flock                  1    623.1    618.2..624.0       616.1  1.00x
 *     (procs: ns)  2: 1243
 *   futex lock             1     12.1     12.0..12.3         12.0  1.00x
 *     (procs: ns)  2: 47
 *   py Pipe                8    36.22    34.58..38.96
 *   py Manager call        8    18.67    17.98..37.46
 *   py Lock                1    160.3    160.2..167.2
 *   30 of 30 rows within 1.2x of their probe
 *   result: 11 mechanisms, every message intact; 9 locks, counters exact
 *     with up to 2 processes; median ratio 1.00x; python's exact OK
 *   A round trip here is two wake-ups of a sleeping CPU (about 15 us
 *   each on this VM); with both sides on one CPU (taskset -c 0) it is
 *   two context switches instead, a few us.
 *   With --csv: table,name,param,median,min,max,probe_best,ratio.
 * Try this: --procs 4 (more processes than CPUs: watch the SysV semaphore
 *          and the spinlock); make spin_lock() return at once and watch
 *          the verdict; --full on a quiet machine.
 */
#define _GNU_SOURCE  /* F_OFD_SETLKW */
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "mp.h"

enum { BIG = 65536, NREP = 15, MAXP = 16, SPIN = 100 };

/* ---- messages ---------------------------------------------------------- */

enum fam { FD, MQ, MSG, SPINSHM, FUTEXSHM };

struct msg {             /* the long in front is SysV's message type */
	long mtype;
	uint64_t w[BIG / 8];
};

struct slot {            /* shared memory: a one-message mailbox */
	_Alignas(64) _Atomic uint32_t full;  /* 0 empty, 1 full; futex word */
	_Alignas(64) uint64_t w[BIG / 8];
};

struct ch {              /* one two-way channel between sides 0 and 1 */
	int rfd[2], wfd[2];  /* side k reads rfd[k] and writes wfd[k] */
	mqd_t mq[2];         /* side k reads mq[k] */
	int msqid;           /* side k reads message type k + 1 */
	struct slot *slot;   /* slot[k]: the mailbox side k reads */
	size_t max;          /* largest message it carries */
	const char *dir;     /* private temp dir for FIFOs and the socket */
};

static void futex(_Atomic uint32_t *w, int op, uint32_t val)
{
	/* Not FUTEX_PRIVATE: the word is in a MAP_SHARED mapping. */
	if (syscall(SYS_futex, w, op, val, NULL, NULL, 0) == -1 &&
	    errno != EAGAIN && errno != EINTR)
		mp_die("futex");
}

static void open_pipe(struct ch *c)
{
	int a[2], b[2];  /* a: side 0 -> side 1, b: back */

	MP_CHECK(pipe(a));
	MP_CHECK(pipe(b));
	c->wfd[0] = a[1], c->rfd[1] = a[0], c->wfd[1] = b[1], c->rfd[0] = b[0];
}

static void open_fifo(struct ch *c)
{
	for (int k = 0; k < 2; k++) {  /* FIFO k: messages to side k */
		char p[PATH_MAX];

		snprintf(p, sizeof p, "%s/fifo%d", c->dir, k);
		MP_CHECK(mkfifo(p, 0600));
		/* The read end without waiting for a writer, then the write
		 * end, then blocking reads again; the name can go at once. */
		MP_CHECK(c->rfd[k] = open(p, O_RDONLY | O_NONBLOCK));
		MP_CHECK(c->wfd[1 - k] = open(p, O_WRONLY));
		MP_CHECK(fcntl(c->rfd[k], F_SETFL, 0));
		MP_CHECK(unlink(p));
	}
}

static void open_socketpair(struct ch *c, int type)
{
	int sv[2];

	MP_CHECK(socketpair(AF_UNIX, type, 0, sv));
	for (int k = 0; k < 2; k++)
		c->rfd[k] = c->wfd[k] = sv[k];
}

static void open_stream(struct ch *c)
{
	open_socketpair(c, SOCK_STREAM);
}

static void open_dgram(struct ch *c)
{
	open_socketpair(c, SOCK_DGRAM);
}

/* listen, connect, accept, all here before fork: the kernel completes the
 * connection from the listen backlog, so nothing waits. */
static void connect_pair(struct ch *c, int domain, struct sockaddr *a,
			 socklen_t len)
{
	int l, s, one = 1;

	MP_CHECK(l = socket(domain, SOCK_STREAM, 0));
	MP_CHECK(bind(l, a, len));
	MP_CHECK(listen(l, 1));
	MP_CHECK(getsockname(l, a, &len));  /* TCP: the port it was given */
	MP_CHECK(s = socket(domain, SOCK_STREAM, 0));
	MP_CHECK(connect(s, a, len));
	MP_CHECK(c->rfd[1] = c->wfd[1] = accept(l, NULL, NULL));
	c->rfd[0] = c->wfd[0] = s;
	MP_CHECK(close(l));
	for (int k = 0; k < 2 && domain == AF_INET; k++)  /* no Nagle wait */
		MP_CHECK(setsockopt(c->rfd[k], IPPROTO_TCP, TCP_NODELAY, &one,
				    sizeof one));
}

static void open_unix(struct ch *c)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	snprintf(a.sun_path, sizeof a.sun_path, "%s/sock", c->dir);
	connect_pair(c, AF_UNIX, (struct sockaddr *)&a, sizeof a);
	MP_CHECK(unlink(a.sun_path));
}

static void open_tcp(struct ch *c)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	connect_pair(c, AF_INET, (struct sockaddr *)&a, sizeof a);
}

static void open_eventfd(struct ch *c)
{
	for (int k = 0; k < 2; k++) {  /* a counter, not a byte stream */
		MP_CHECK(c->rfd[k] = eventfd(0, 0));
		c->wfd[1 - k] = c->rfd[k];
	}
}

static void open_mq(struct ch *c)
{
	struct mq_attr a = { .mq_maxmsg = 8, .mq_msgsize = (long)c->max };

	for (int k = 0; k < 2; k++) {  /* the name goes as soon as it opens */
		char name[64];

		mp_ipc_name(name, sizeof name, k ? "mq1" : "mq0");
		c->mq[k] = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &a);
		if (c->mq[k] == (mqd_t)-1 || mq_unlink(name) == -1)
			mp_die("mq_open %s", name);
	}
}

static void rm_msq(void *id)
{
	if (*(int *)id != -1)
		msgctl(*(int *)id, IPC_RMID, NULL);  /* signal-safe syscall */
}

static void open_msg(struct ch *c)
{
	MP_CHECK(c->msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600));
}

static void open_shm(struct ch *c)
{
	atomic_store(&c->slot[0].full, 0);
	atomic_store(&c->slot[1].full, 0);
}

static const struct mech {
	const char *name;
	enum fam fam;
	void (*open)(struct ch *c);
} mechs[] = {
	{ "pipe", FD, open_pipe },
	{ "FIFO", FD, open_fifo },
	{ "socketpair stream", FD, open_stream },
	{ "socketpair dgram", FD, open_dgram },
	{ "AF_UNIX stream", FD, open_unix },
	{ "TCP 127.0.0.1", FD, open_tcp },
	{ "POSIX mq", MQ, open_mq },
	{ "SysV msg", MSG, open_msg },
	{ "shm + futex", FUTEXSHM, open_shm },
	{ "shm + spin", SPINSHM, open_shm },
	{ "eventfd", FD, open_eventfd },
};
enum { NMECH = sizeof mechs / sizeof *mechs, EVENTFD = NMECH - 1 };

static void wait_full(const struct mech *m, struct slot *s, uint32_t want)
{
	for (unsigned i = 0; atomic_load_explicit(&s->full,
			memory_order_acquire) != want; i++)
		if (m->fam == FUTEXSHM)
			futex(&s->full, FUTEX_WAIT, !want);
		else if (i > SPIN)
			sched_yield();  /* sharing a CPU: let the other run */
}

static void xsend(const struct mech *m, struct ch *c, int k, struct msg *b,
		  size_t n)
{
	struct slot *s = &c->slot[1 - k];

	switch (m->fam) {
	case FD:
		for (size_t off = 0; off < n;) {  /* streams may take part */
			ssize_t w = write(c->wfd[k], (char *)b->w + off,
					  n - off);

			MP_CHECK(w);
			off += (size_t)w;
		}
		break;
	case MQ:
		MP_CHECK(mq_send(c->mq[1 - k], (char *)b->w, n, 0));
		break;
	case MSG:
		b->mtype = 2 - k;  /* to side 1 - k */
		MP_CHECK(msgsnd(c->msqid, b, n, 0));
		break;
	case SPINSHM:
	case FUTEXSHM:
		wait_full(m, s, 0);
		memcpy(s->w, b->w, n);
		atomic_store_explicit(&s->full, 1, memory_order_release);
		if (m->fam == FUTEXSHM)
			futex(&s->full, FUTEX_WAKE, 1);
	}
}

static void xrecv(const struct mech *m, struct ch *c, int k, struct msg *b,
		  size_t n)
{
	struct slot *s = &c->slot[k];
	ssize_t r;

	switch (m->fam) {
	case FD:
		for (size_t off = 0; off < n; off += (size_t)r) {
			MP_CHECK(r = read(c->rfd[k], (char *)b->w + off,
					  n - off));
			if (r == 0)
				mp_die("%s: the other side is gone", m->name);
		}
		break;
	case MQ:
		MP_CHECK(r = mq_receive(c->mq[k], (char *)b->w, c->max, NULL));
		break;
	case MSG:
		MP_CHECK(r = msgrcv(c->msqid, b, n, k + 1, 0));
		break;
	case SPINSHM:
	case FUTEXSHM:
		wait_full(m, s, 1);
		memcpy(b->w, s->w, n);
		atomic_store_explicit(&s->full, 0, memory_order_release);
		if (m->fam == FUTEXSHM)
			futex(&s->full, FUTEX_WAKE, 1);
	}
}

/* ---- locks ------------------------------------------------------------- */

enum lk { MUTEX, PSEM, SYSVSEM, FLOCK, FCNTL, OFD, FUTEXLK, SPINLK, ATOMIC,
	  NLOCK };
static const char *const lock_name[NLOCK] = {
	"pthread mutex", "POSIX semaphore", "SysV semaphore", "flock",
	"fcntl F_SETLKW", "OFD F_OFD_SETLKW", "futex lock", "spinlock",
	"atomic add" };

struct shared {
	struct slot slot[2];
	_Atomic int ready;
	double secs[2];              /* per side: seconds of the run */
	int64_t t0[MAXP], t1[MAXP];  /* per lock worker: start and end */
	long count[MAXP];            /* per lock worker: pairs it did */
	_Atomic int stop;            /* lock runs: time is up */
	long bad[MAXP];              /* wrong messages seen, per process */
	int semid;                   /* the SysV semaphore (one) */
	pthread_mutex_t mutex;
	sem_t sem;
	_Alignas(64) _Atomic uint32_t futex;  /* 0 free, 1 held, 2 + waiters */
	_Alignas(64) _Atomic int spin;
	_Alignas(64) long counter;   /* guarded by the lock under test */
	_Atomic long acounter;       /* the atomic add's own counter */
};

/* Drepper's futex mutex ("Futexes Are Tricky", mutex2): one atomic
 * instruction when free, a system call only when someone must sleep. */
static void futex_lock(_Atomic uint32_t *f)
{
	uint32_t c = 0;

	if (atomic_compare_exchange_strong(f, &c, 1))
		return;
	if (c != 2)
		c = atomic_exchange(f, 2);
	while (c != 0) {
		futex(f, FUTEX_WAIT, 2);
		c = atomic_exchange(f, 2);
	}
}

static void futex_unlock(_Atomic uint32_t *f)
{
	if (atomic_fetch_sub(f, 1) != 1) {
		atomic_store(f, 0);
		futex(f, FUTEX_WAKE, 1);
	}
}

/* Test-and-test-and-set; yields after a while, or a holder that lost its
 * CPU would keep every waiter spinning for a whole time slice. */
static void spin_lock(_Atomic int *s)
{
	unsigned i = 0;

	while (atomic_exchange_explicit(s, 1, memory_order_acquire))
		while (atomic_load_explicit(s, memory_order_relaxed))
			if (++i > SPIN)
				sched_yield();
}

static void lock_op(int kind, struct shared *sh, int fd, bool take)
{
	struct flock fl = { .l_type = take ? F_WRLCK : F_UNLCK,
			    .l_whence = SEEK_SET, .l_len = 1 };
	struct sembuf op = { 0, take ? -1 : 1, 0 };

	switch (kind) {
	case MUTEX:
		MP_CHECK_PT(take ? pthread_mutex_lock(&sh->mutex) :
				   pthread_mutex_unlock(&sh->mutex));
		break;
	case PSEM:
		while ((take ? sem_wait(&sh->sem) : sem_post(&sh->sem)) == -1)
			if (errno != EINTR)
				mp_die("sem_wait/sem_post");
		break;
	case SYSVSEM:
		MP_CHECK(semop(sh->semid, &op, 1));
		break;
	case FLOCK:  /* per open file: each worker opened its own */
		MP_CHECK(flock(fd, take ? LOCK_EX : LOCK_UN));
		break;
	case FCNTL:  /* per process */
		MP_CHECK(fcntl(fd, F_SETLKW, &fl));
		break;
	case OFD:    /* per open file, like flock, with byte ranges */
		MP_CHECK(fcntl(fd, F_OFD_SETLKW, &fl));
		break;
	case FUTEXLK:
		take ? futex_lock(&sh->futex) : futex_unlock(&sh->futex);
		break;
	case SPINLK:
		if (take)
			spin_lock(&sh->spin);
		else
			atomic_store_explicit(&sh->spin, 0,
					      memory_order_release);
		break;
	}
}

/* Run on the k-th CPU this process may use (wrapping around): contending
 * workers must be able to run at the same time, and the scheduler would
 * often start them all on their parent's CPU. */
static void pin(int k)
{
	cpu_set_t allowed, one;

	MP_CHECK(sched_getaffinity(0, sizeof allowed, &allowed));
	for (int cpu = 0, want = k % CPU_COUNT(&allowed); cpu < CPU_SETSIZE;
	     cpu++) {
		if (!CPU_ISSET(cpu, &allowed) || want-- > 0)
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		MP_CHECK(sched_setaffinity(0, sizeof one, &one));
		return;
	}
}

/* ---- runs -------------------------------------------------------------- */

/* Wait for the children; one that is not done by the deadline (a broken
 * lock, a lost message) is killed and the run fails.  A look every
 * millisecond: the parent takes almost no CPU from the run. */
static bool reap(pid_t *pid, int n, double seconds)
{
	int64_t deadline = mp_now_ns() + (int64_t)(seconds * 1e9);
	bool ok = true;

	for (int i = 0; i < n; i++) {
		int st;
		pid_t r;

		while ((r = waitpid(pid[i], &st, WNOHANG)) == 0 &&
		       mp_now_ns() < deadline)
			nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
		if (r == 0) {  /* past the deadline */
			MP_CHECK(kill(pid[i], SIGKILL));
			st = mp_waitpid(pid[i]);
		} else if (r == -1) {
			mp_die("waitpid");
		}
		ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	if (!ok)
		mp_say("parent", "a run failed or took over %.1f s: stopped",
		       seconds);
	return ok;
}

/* Close what side `keep` does not use (-1: everything); an fd can serve
 * both sides (eventfd) or both directions (sockets). */
static void close_fds(struct ch *c, int keep)
{
	int fd[4] = { c->rfd[0], c->wfd[0], c->rfd[1], c->wfd[1] };

	for (int i = 0; i < 4; i++) {
		bool skip = fd[i] < 0 || (keep >= 0 && (fd[i] == c->rfd[keep] ||
						       fd[i] == c->wfd[keep]));

		for (int j = 0; j < i; j++)
			skip |= fd[j] == fd[i];
		if (!skip)
			MP_CHECK(close(fd[i]));
	}
}

/* Four sums side by side: the CPU adds four words per cycle instead of
 * waiting for each add, so checking a message costs little beside
 * copying it.  (bytes is a multiple of 32, or 8.) */
static uint64_t sum_words(const uint64_t *w, size_t bytes)
{
	uint64_t s[4] = { 0, 0, 0, 0 };
	size_t n = bytes / 8, i = 0;

	for (; i + 4 <= n; i += 4)
		for (int j = 0; j < 4; j++)
			s[j] += w[i + j];
	for (; i < n; i++)
		s[0] += w[i];
	return s[0] + s[1] + s[2] + s[3];
}

/* One side of a message run.  Side 0 sends n messages of `size` bytes;
 * rt: each comes back (latency), else side 1 answers once at the end with
 * how many arrived intact (bandwidth).  probe: the same calls, bare. */
static _Noreturn void msg_side(const struct mech *m, struct ch *c,
			       struct shared *sh, int k, long n, size_t size,
			       bool rt, bool probe)
{
	struct msg *b = malloc(sizeof *b);
	long bad = 0, good = 0;

	if (!b)
		mp_die("malloc");
	/* Each side on its own CPU, measured and probe alike: left to the
	 * scheduler, the two sometimes share one CPU (a wake-up is then a
	 * switch, about 10x cheaper than waking another CPU) and sometimes
	 * not, and a row would read both from run to run. */
	pin(k);
	for (size_t i = 0; i < BIG / 8; i++)  /* word 0: the number */
		b->w[i] = i * 0x9E3779B97F4A7C15u;
	uint64_t base = sum_words(b->w, size);

	close_fds(c, k);
	atomic_fetch_add(&sh->ready, 1);
	while (atomic_load(&sh->ready) < 2)
		sched_yield();
	int64_t t0 = mp_now_ns();

	/* One-way: message 1 (summed, as every 8th) leaves with a middle
	 * word flipped; the receiver must count it bad. */
	bool plant = !rt && !probe && size >= 16;

	for (uint64_t i = 1; i <= (uint64_t)n; i++) {
		if (k == 0) {
			b->w[0] = i;
			b->w[size / 16] ^= plant && i == 1 ? 1 : 0;
			xsend(m, c, 0, b, size);
			b->w[size / 16] ^= plant && i == 1 ? 1 : 0;
			if (rt)
				xrecv(m, c, 0, b, size);
			bad += rt && !probe && b->w[0] != i;
		} else {
			xrecv(m, c, 1, b, size);
			if (!probe && rt)
				bad += b->w[0] != i;
			else if (!probe)  /* every 8th summed whole: a sum
					   * of 64 KiB costs as much as a
					   * third of the transfer */
				good += i % 8 == 1 ?
					sum_words(b->w, size) == base + i :
					b->w[0] == i && (size < 16 ||
					b->w[size / 8 - 1] == (size / 8 - 1) *
					0x9E3779B97F4A7C15u);
			if (rt)
				xsend(m, c, 1, b, size);
		}
	}
	if (!rt && k == 1) {  /* the answer: how many arrived intact */
		b->w[0] = (uint64_t)(probe ? n : good);
		xsend(m, c, 1, b, 8);
	} else if (!rt) {
		xrecv(m, c, 0, b, 8);
		bad += b->w[0] != (uint64_t)n - plant;
	}
	sh->secs[k] = mp_elapsed_s(t0);
	sh->bad[k] = bad;
	free(b);
	_exit(0);
}

/* One message run: a fresh channel, two fresh processes.  Seconds taken
 * by side 0; *ok goes false on a wrong message or a failed run. */
static double msg_run(const struct mech *m, struct ch *c, struct shared *sh,
		      long n, size_t size, bool rt, bool probe, bool *ok)
{
	pid_t pid[2];

	c->rfd[0] = c->rfd[1] = c->wfd[0] = c->wfd[1] = -1;
	m->open(c);
	atomic_store(&sh->ready, 0);
	sh->bad[0] = sh->bad[1] = 0;
	for (int k = 0; k < 2; k++)
		if ((pid[k] = mp_fork()) == 0)
			msg_side(m, c, sh, k, n, size, rt, probe);
	close_fds(c, -1);
	for (int k = 0; k < 2 && m->fam == MQ; k++)
		MP_CHECK(mq_close(c->mq[k]));
	/* 2 s, and 200 us a round trip or 1 ms a message: several times
	 * what they take here (about 35 us, 40 us at 64 KiB). */
	bool good = reap(pid, 2, 2 + (double)n * (rt ? 2e-4 : 1e-3)) &&
		    sh->bad[0] == 0 && sh->bad[1] == 0;

	if (!good)
		mp_say("parent", "%s: %ld and %ld messages wrong", m->name,
		       sh->bad[0], sh->bad[1]);
	*ok &= good;
	if (m->fam == MSG) {  /* SysV objects live until removed */
		MP_CHECK(msgctl(c->msqid, IPC_RMID, NULL));
		c->msqid = -1;
	}
	return sh->secs[0];
}

/* One lock run: procs workers take the lock over and over for `ms`
 * milliseconds around a read-add-write of the shared counter (probe: the
 * lock alone).  A time, not a count, so that they surely overlap.
 * Nanoseconds per acquire/release pair, wall clock. */
static double lock_run(int kind, struct shared *sh, const char *path,
		       int procs, double ms, bool probe, bool *ok)
{
	pid_t pid[MAXP];

	sh->counter = 0;
	atomic_store(&sh->acounter, 0);
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->stop, 0);
	for (int p = 0; p < procs; p++) {
		if ((pid[p] = mp_fork()) != 0)
			continue;
		int fd = open(path, O_RDWR);  /* its own open file */
		long mine = 0;

		MP_CHECK(fd);
		pin(p);
		atomic_fetch_add(&sh->ready, 1);
		while (atomic_load(&sh->ready) < procs)
			sched_yield();
		sh->t0[p] = mp_now_ns();
		for (; !atomic_load_explicit(&sh->stop, memory_order_relaxed);
		     mine++) {
			if (kind == ATOMIC) {  /* the add is the lock */
				atomic_fetch_add(&sh->acounter, 1);
				continue;
			}
			lock_op(kind, sh, fd, true);
			if (!probe) {
				/* racy without the lock */
				long v = sh->counter;

				sh->counter = v + 1;
			}
			lock_op(kind, sh, fd, false);
		}
		sh->t1[p] = mp_now_ns();
		sh->count[p] = mine;
		MP_CHECK(close(fd));
		_exit(0);
	}
	/* Sleep through the run (no CPU taken from it), then say stop. */
	for (int i = 0; i < 100000 && atomic_load(&sh->ready) < procs; i++)
		nanosleep(&(struct timespec){ 0, 50000 }, NULL);
	nanosleep(&(struct timespec){ 0, (long)(ms * 1e6) }, NULL);
	atomic_store(&sh->stop, 1);
	*ok &= reap(pid, procs, 3.0);  /* one last lock op each, then gone */
	long got = kind == ATOMIC ? atomic_load(&sh->acounter) : sh->counter;
	long want = 0;
	int64_t t0 = sh->t0[0], t1 = sh->t1[0];

	for (int p = 0; p < procs; p++) {
		want += sh->count[p];
		t0 = sh->t0[p] < t0 ? sh->t0[p] : t0;
		t1 = sh->t1[p] > t1 ? sh->t1[p] : t1;
	}
	if (!probe && got != want) {
		mp_say("parent", "%s, %d processes: counter=%ld expected=%ld",
		       lock_name[kind], procs, got, want);
		*ok = false;
	}
	return (double)(t1 - t0) / (double)(want > 0 ? want : 1);
}

/* ---- the table --------------------------------------------------------- */

struct spread { double med, min, max; };

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static struct spread spread(double *v, long n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return (struct spread){ v[n / 2], v[0], v[n - 1] };
}

struct tally {
	int rows, within;
	double ratio[64];
	bool csv;
	/* The round trips again, for --plot: name, median, probe's best. */
	int nlat;
	const char *lat_name[32];
	double lat_med[32], lat_probe[32];
};

/* Print one row; x: the measured runs, p: the probe's (times or rates:
 * `lower` says which is better).  The ratio compares the best of each. */
static void row(struct tally *t, const char *table, const char *name,
		const char *param, double *x, double *p, long n, bool lower,
		int prec, const char *tail)
{
	struct spread s = spread(x, n), q = spread(p, n);
	double best = lower ? s.min : s.max, pbest = lower ? q.min : q.max;
	double ratio = lower ? best / pbest : pbest / best;

	t->ratio[t->rows++] = ratio;
	t->within += ratio <= 1.2;
	if (strcmp(table, "latency_us") == 0 && t->nlat < 32) {
		t->lat_name[t->nlat] = name;
		t->lat_med[t->nlat] = s.med;
		t->lat_probe[t->nlat++] = pbest;
	}
	if (t->csv)
		printf("%s,%s,%s,%.3f,%.3f,%.3f,%.3f,%.3f\n", table, name,
		       param, s.med, s.min, s.max, pbest, ratio);
	else
		printf("%-18s %5s %8.*f %8.*f..%-8.*f %8.*f %5.2fx%s%s\n",
		       name, param, prec, s.med, prec, s.min, prec, s.max,
		       prec, pbest, ratio, ratio > 1.2 ? "*" : " ", tail);
}

static long read_limit(const char *path, long fallback)
{
	FILE *f = fopen(path, "r");
	long v = fallback;

	if (f && fscanf(f, "%ld", &v) != 1)
		v = fallback;
	if (f && fclose(f) == EOF)
		mp_die("fclose %s", path);
	return v < BIG ? v : BIG;
}

struct tmp { char dir[64], fifo[2][80], sock[80], lock[80]; };

static void rm_tmp(void *arg)  /* async-signal-safe: unlink and rmdir */
{
	struct tmp *t = arg;

	unlink(t->fifo[0]);
	unlink(t->fifo[1]);
	unlink(t->sock);
	unlink(t->lock);
	rmdir(t->dir);
}

static void rm_sem(void *id)
{
	if (*(int *)id != -1)
		semctl(*(int *)id, 0, IPC_RMID);
}

int main(int argc, char *argv[])
{
	long rounds = 500, msgs = 32, procs = 2, repeat = 3;
	double ms = 5;
	long pyrounds = 200;
	bool full = false, csv = false, msg_ok = true, lock_ok = true;
	bool plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("rounds", &rounds, 1, 100000000,
			 "8-byte round trips per run"),
		MP_OPT_L("messages", &msgs, 1, 10000000,
			 "64 KiB messages per bandwidth run"),
		MP_OPT_D("lock-ms", &ms, 0.1, 10000,
			 "milliseconds per lock run"),
		MP_OPT_L("procs", &procs, 1, MAXP,
			 "contend with 2..N processes"),
		MP_OPT_L("repeat", &repeat, 1, NREP, "runs per row (median)"),
		MP_OPT_F("full", &full, "the long run: 20000 rounds, 2000 "
			 "messages, 200 lock-ms, 4 procs, 7 repeats"),
		MP_OPT_L("python-rounds", &pyrounds, 0, 1000000,
			 "round trips for the Python twin (0 skips it)"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw the round trips as bars in "
			 "the terminal; --plot FILE.svg|.png: into a file"),
	};

	for (int i = 1; i < argc; i++)  /* --full sets new defaults ... */
		if (strcmp(argv[i], "--full") == 0)
			rounds = 20000, msgs = 2000, ms = 200, procs = 4,
			repeat = 7, pyrounds = 5000;
	mp_parse_options(argc, argv, "Latency, bandwidth and lock cost of "
			 "every IPC mechanism, between processes.", opts,
			 sizeof opts / sizeof *opts);  /* ... options win */
	mp_stop_on_signals();

	/* 1. A private temp dir (FIFOs, the socket, the lock file), shared
	 *    memory with the mailboxes and the locks.  Everything, the SysV
	 *    queue and semaphore made later too, is removed on every way out
	 *    (mp_atcleanup). */
	struct tmp tmp = { .dir = "/tmp/mpp-ipc_cost_table-XXXXXX" };
	struct ch c = { .msqid = -1, .dir = tmp.dir };
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	pthread_mutexattr_t ma;

	MP_CHECK(mp_atcleanup(rm_tmp, &tmp));  /* before it exists */
	MP_CHECK(mp_atcleanup(rm_msq, &c.msqid));
	if (!sh || !mkdtemp(tmp.dir))
		mp_die("mp_shm_alloc / mkdtemp");
	snprintf(tmp.fifo[0], sizeof tmp.fifo[0], "%s/fifo0", tmp.dir);
	snprintf(tmp.fifo[1], sizeof tmp.fifo[1], "%s/fifo1", tmp.dir);
	snprintf(tmp.sock, sizeof tmp.sock, "%s/sock", tmp.dir);
	snprintf(tmp.lock, sizeof tmp.lock, "%s/lock", tmp.dir);
	c.slot = sh->slot;
	MP_CHECK_PT(pthread_mutexattr_init(&ma));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&sh->mutex, &ma));
	MP_CHECK_PT(pthread_mutexattr_destroy(&ma));
	MP_CHECK(sem_init(&sh->sem, 1, 1));
	sh->semid = -1;  /* made for its own rows only: SysV objects have no
			  * name, so nobody can tell whose they are */
	MP_CHECK(mp_atcleanup(rm_sem, &sh->semid));
	int lfd = open(tmp.lock, O_RDWR | O_CREAT | O_EXCL, 0600);

	MP_CHECK(lfd);
	MP_CHECK(close(lfd));
	long mqmax = read_limit("/proc/sys/fs/mqueue/msgsize_max", 8192);
	long msgmax = read_limit("/proc/sys/kernel/msgmax", 8192);

	/* 2. Latency: 8 bytes there and back, probe and measured runs in
	 *    turn, so that a busy moment hits both. */
	struct tally t = { .csv = csv };
	double x[NREP], p[NREP];
	int step = 0, steps = 2 * NMECH - 1 + NLOCK;

	if (csv)
		printf("table,name,param,median,min,max,probe_best,ratio\n");
	else
		printf("%-18s %5s %8s %8s..%-8s %8s %6s\n", "round trip, us",
		       "bytes", "median", "min", "max", "probe", "ratio");
	for (int i = 0; i < NMECH; i++) {
		const struct mech *m = &mechs[i];

		c.max = m->fam == MQ ? (size_t)mqmax : m->fam == MSG ?
			(size_t)msgmax : BIG;
		if (full)
			fprintf(stderr, "[%d/%d] %s: latency\n", ++step, steps,
				m->name);
		bool run_ok = true;  /* after a failed run: no more */

		for (long r = 0; r < repeat; r++) {
			p[r] = run_ok ? msg_run(m, &c, sh, rounds, 8, true,
						true, &run_ok) : 1;
			x[r] = run_ok ? msg_run(m, &c, sh, rounds, 8, true,
						false, &run_ok) : 1;
			p[r] *= 1e6 / (double)rounds;
			x[r] *= 1e6 / (double)rounds;
		}
		msg_ok &= run_ok;
		row(&t, "latency_us", m->name, "8", x, p, repeat, true, 2, "");
	}

	/* 3. Bandwidth: 64 KiB messages one way, each checksummed; POSIX
	 *    and SysV queues take what their limits allow (msgsize_max,
	 *    msgmax: 8 KiB unless raised). */
	if (!csv)
		printf("%-18s %5s %8s %8s..%-8s %8s %6s\n", "bandwidth, MB/s",
		       "bytes", "median", "min", "max", "probe", "ratio");
	for (int i = 0; i < NMECH; i++) {
		const struct mech *m = &mechs[i];
		char sz[16];

		if (i == EVENTFD) {
			if (!csv)
				printf("%-18s carries a counter, not bytes\n",
				       m->name);
			continue;
		}
		c.max = m->fam == MQ ? (size_t)mqmax : m->fam == MSG ?
			(size_t)msgmax : BIG;
		if (full)
			fprintf(stderr, "[%d/%d] %s: bandwidth\n", ++step,
				steps, m->name);
		bool run_ok = true;  /* after a failed run: no more */

		for (long r = 0; r < repeat; r++) {
			double bytes = (double)msgs * (double)c.max / 1e6;

			p[r] = run_ok ? bytes / msg_run(m, &c, sh, msgs, c.max,
							false, true, &run_ok)
				      : 1;
			x[r] = run_ok ? bytes / msg_run(m, &c, sh, msgs, c.max,
							false, false, &run_ok)
				      : 1;
		}
		msg_ok &= run_ok;
		snprintf(sz, sizeof sz, "%zu", c.max);
		row(&t, "bandwidth_MBps", m->name, sz, x, p, repeat, false, 0,
		    "");
	}

	/* 4. Locks: one process (against the probe), then 2..procs
	 *    contending for it, each counting under the lock. */
	if (!csv)
		printf("%-18s %5s %8s %8s..%-8s %8s %6s procs: ns\n",
		       "lock pair, ns", "procs", "median", "min", "max",
		       "probe", "ratio");
	for (int k = 0; k < NLOCK; k++) {
		char tail[160] = "";

		if (k == SYSVSEM) {
			MP_CHECK(sh->semid = semget(IPC_PRIVATE, 1,
						    IPC_CREAT | 0600));
			MP_CHECK(semctl(sh->semid, 0, SETVAL, 1));
		}

		if (full)
			fprintf(stderr, "[%d/%d] %s\n", ++step, steps,
				lock_name[k]);
		bool run_ok = true;  /* after a failed run: no more */

		for (int n = 2; n <= procs; n++) {
			double y[NREP];
			size_t len = strlen(tail);

			for (long r = 0; r < repeat; r++)
				y[r] = run_ok ? lock_run(k, sh, tmp.lock, n,
							 ms, false, &run_ok)
					      : 0;
			struct spread s = spread(y, repeat);

			if (csv)
				printf("lock_ns,%s,%d,%.3f,%.3f,%.3f,,\n",
				       lock_name[k], n, s.med, s.min, s.max);
			else
				snprintf(tail + len, sizeof tail - len,
					 " %d: %.0f", n, s.med);
		}
		lock_ok &= run_ok;
		for (long r = 0; r < repeat; r++) {
			p[r] = lock_run(k, sh, tmp.lock, 1, ms, true,
					&lock_ok);
			x[r] = lock_run(k, sh, tmp.lock, 1, ms, false,
					&lock_ok);
		}
		row(&t, "lock_ns", lock_name[k], "1", x, p, repeat, true, 1,
		    tail);
		if (k == SYSVSEM) {
			MP_CHECK(semctl(sh->semid, 0, IPC_RMID));
			sh->semid = -1;
		}
	}

	/* 5. Python's Pipe, Queue, Lock and a Manager proxy call. */
	bool twin = pyrounds && mp_python3(), twin_ok = true;

	if (twin) {  /* it prints its own rows, exits 1 on a wrong result */
		char a[3][32];

		snprintf(a[0], sizeof a[0], "%ld", pyrounds);
		snprintf(a[1], sizeof a[1], "%ld", msgs);
		snprintf(a[2], sizeof a[2], "%ld", full ? 200000L : 20000L);
		int st = mp_run_twin(MP_LESSON_DIR "/ipc_cost_table.py",
				     (char *[]){ "--rounds", a[0], "--messages",
						 a[1], "--iters", a[2],
						 csv ? "--csv" : NULL, NULL },
				     120, NULL, NULL);

		twin_ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	} else if (pyrounds && !csv) {
		printf("python: skipped (python3 was not found at configure "
		       "time)\n");
	}

	/* 6. Clean up in plain sight, then the verdict: every message
	 *    intact, every counter exact, no row far off its probe. */
	MP_CHECK_PT(pthread_mutex_destroy(&sh->mutex));
	MP_CHECK(sem_destroy(&sh->sem));
	MP_CHECK(mp_cancel_cleanup(rm_sem, &sh->semid));
	MP_CHECK(mp_cancel_cleanup(rm_msq, &c.msqid));
	rm_tmp(&tmp);
	MP_CHECK(mp_cancel_cleanup(rm_tmp, &tmp));
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	/* A harness that added its own cost would lift every row: the median
	 * ratio catches that, through the noise of single rows. */
	double mid = spread(t.ratio, t.rows).med;

#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
	const char *why = repeat < 3 || rounds < 100 || msgs < 16 || ms < 1 ?
		"runs too short to see through the noise (judged from "
		"--repeat 3 --rounds 100 --messages 16 --lock-ms 1)" : NULL;
#else
	const char *why = "in a build without optimization or with "
		"sanitizers the checksums slow down, the kernel does not";
#endif
	bool ok = msg_ok && lock_ok && twin_ok && (why || mid <= 1.2);

	if (!csv)
		printf("ratio: best measured run / best probe run (* past "
		       "1.2x).  A single short run on\na shared machine swings "
		       "by more than that, so rows are not judged one by one;\n"
		       "a harness that added its own cost would lift them all: "
		       "the median is judged.\n"
		       "%d of %d rows within 1.2x of their probe%s%s\n"
		       "result: %d mechanisms, %s; %d locks, counters %s with "
		       "up to %ld processes; median ratio %.2fx%s%s %s\n",
		       t.within, t.rows, why ? "; the ratio is not judged: " :
		       "", why ? why : "", NMECH, msg_ok ?
		       "every message intact" : "messages WRONG", NLOCK,
		       lock_ok ? "exact" : "WRONG", procs, mid,
		       why ? " (not judged)" : "", !twin ? "" :
		       twin_ok ? "; python's exact" : "; python's WRONG",
		       ok ? "OK" : "MISMATCH");
	else if (!ok)
		fprintf(stderr, "ipc_cost_table: a check failed\n");
	if (plot && t.nlat > 0) {  /* one bar pair per mechanism */
		struct mp_table *pt = mp_table_new("8-byte round trip between "
						   "two processes", "us",
						   "mechanism,median,probe");

		if (!pt)
			mp_die("mp_table_new");
		pt->xnames = t.lat_name;
		for (int i = 0; i < t.nlat; i++)
			MP_CHECK(mp_table_add(
			    pt, (double[]){ i, t.lat_med[i], t.lat_probe[i] }));
		if (mp_plot(pt, plot) == -1 && errno != ENOENT)
			mp_die("plot");
		mp_table_free(pt);
	}
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
