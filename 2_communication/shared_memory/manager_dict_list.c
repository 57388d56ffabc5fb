/* 2_communication/shared_memory/manager_dict_list.c -- Python's Manager in
 * C: a server process owns a dict and a list, clients call it over a socket
 *
 * Python:  with Manager() as m:
 *              d, l = m.dict(), m.list()   # proxies: every d[k] = v, d[k],
 *              ...                         # l.append(x) is a round trip
 *          Lib/multiprocessing/managers.py: Manager() starts a server
 *          process listening on an AF_UNIX socket (a path in a temporary
 *          directory); its accepter thread starts a thread per connection.
 *          A proxy's _callmethod() sends (id, method, args, kwds) pickled
 *          through a Connection (4-byte length, then the bytes) and waits
 *          for ('#RETURN', result): a round trip to another process, and
 *          pickling both ways, per call -- the surprise of Python users who
 *          swap a dict for a Manager().dict().  Who may call: the socket
 *          is a file in a private 0700 directory (util.get_temp_dir(),
 *          mkdtemp), and every connection starts with a challenge both
 *          ways (connection.deliver_challenge / answer_challenge:
 *          "#CHALLENGE#{sha256}" + 40 random bytes, answered with
 *          "{sha256}" + HMAC-SHA256(authkey, message), then "#WELCOME#" or
 *          "#FAILURE#"); the authkey is os.urandom(32), inherited by the
 *          children.  Python never asks the kernel who the peer is.
 * C:       socket(AF_UNIX, SOCK_SEQPACKET) on an abstract name (a leading
 *          NUL: no file, gone with the last fd -- but no file permissions
 *          either: anyone can see it in /proc/net/unix and connect), bind,
 *          listen, accept4, getsockopt(SO_PEERCRED) to refuse other users,
 *          Python's challenge with HMAC-SHA256 (lib/mp_hmac), a thread per
 *          client, send/recv of fixed-size structs (SEQPACKET keeps
 *          message boundaries: no length prefix), SO_RCVTIMEO; then the
 *          same dict and list in MAP_SHARED memory under a shared mutex.
 * Usage:   manager_dict_list [--clients N (2, 1..16)] [--ops N (1000, 1..10^6)]
 *                            [--keys N (256, 1..4096)]
 *                            [--python-ops N (1000, 0..10^6)]
 * Output:  [parent 30446 +1.1ms] manager 30448 listens on
 *                                @mpp-manager_dict_list-manager-30446-56a7729c
 *                                (abstract: no file)
 *          [parent 30446 +93.8ms] wrong key: refused (1);
 *                                 other user: refused by SO_PEERCRED (1);
 *                                 malformed request: EINVAL, then served on (1)
 *          [parent 30446 +134.9ms] through the manager: 29677 ns per call,
 *                                  contents exact
 *          [parent 30446 +137.0ms] shared memory + mutex: 30 ns per call,
 *                                  contents exact
 *          [python 30451] Manager proxies: 35189 ns per call; plain dict and
 *                         list: 27 ns; 1303x
 *          result: 2 clients x 1000 rounds, manager 29677 ns/call,
 *                  shared memory 30 ns/call, 979x, contents exact,
 *                  intruders refused OK
 *          (on a loaded 2-vCPU VM a call through the manager took 8-121 us from
 *          run to run, one in shared memory 26-299 ns)
 * Try this: taskset -c 0 ./manager_dict_list: a call is two wake-ups, and
 *          waking a process on another CPU can cost more than the switch;
 *          in serve(), drop the SO_PEERCRED check and run as root: "nobody"
 *          gets in (the verdict says MISMATCH).
 */
#define _GNU_SOURCE /* accept4 */
#include "mp.h"

#include <stddef.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

enum { MAX_CLIENTS = 16 };
enum op { OP_SET, OP_GET, OP_APPEND, OP_ITEM, OP_SHUTDOWN };

/* The protocol: a fixed-size request, a fixed-size reply; no pickling.
 * Fields of one size: no padding bytes, which would go out uninitialised. */
struct req { int64_t op, key, value; };
struct rep { int64_t err, value; };  /* err: 0, ENOENT (KeyError), ... */

/* Python's authkey: made once, inherited by every forked process. */
static uint8_t authkey[32];

/* What the server refused, for the parent to check (shared memory). */
struct refusals { _Atomic int other_user, bad_key, malformed; };

/* The dict (open addressing) and the list, flat -- no pointers inside --
 * so that the same store_do() runs the server's private copy (its threads
 * share the lock) and the copy in shared memory (processes share it). */
struct slot { long key, value; bool used; };
struct store {
	pthread_mutex_t lock;
	size_t cap, list_cap, list_len; /* cap: dict slots, a power of 2 */
	struct slot slots[];            /* then long list[list_cap] */
};

/* Where the manager listens, and one connection to it. */
struct where { struct sockaddr_un sa; socklen_t len; };
struct conn { int fd; struct store *s; struct refusals *refused; };

/* An empty store of size bytes: in the server's own heap, or shared. */
static struct store *store_new(size_t size, size_t cap, size_t list_cap,
			       bool shared)
{
	struct store *s = shared ? mp_shm_alloc(size) : calloc(1, size);
	pthread_mutexattr_t a;

	if (!s)
		mp_die("allocating %zu bytes", size);
	s->cap = cap, s->list_cap = list_cap;
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, shared ?
		PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE));
	MP_CHECK_PT(pthread_mutex_init(&s->lock, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
	return s;
}

static struct slot *dict_find(struct store *s, long key)
{
	uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15u; /* Fibonacci hash */

	for (size_t n = 0, i = (h >> 32) & (s->cap - 1); n < s->cap;
	     n++, i = (i + 1) & (s->cap - 1))
		if (!s->slots[i].used || s->slots[i].key == key)
			return &s->slots[i];
	return NULL; /* full and absent */
}

/* A dict or list method (the caller holds the store's lock). */
static struct rep store_do(struct store *s, const struct req *rq)
{
	struct slot *sl = rq->op <= OP_GET ? dict_find(s, rq->key) : NULL;
	long *list = (long *)(s->slots + s->cap);

	switch (rq->op) {
	case OP_SET:    /* d[key] = value */
		if (!sl)
			return (struct rep){ ENOSPC, 0 };
		*sl = (struct slot){ rq->key, rq->value, true };
		return (struct rep){ 0, 0 };
	case OP_GET:    /* d[key] */
		return sl && sl->used ? (struct rep){ 0, sl->value }
				      : (struct rep){ ENOENT, 0 };
	case OP_APPEND: /* l.append(value) */
		if (s->list_len == s->list_cap)
			return (struct rep){ ENOSPC, 0 };
		list[s->list_len++] = rq->value;
		return (struct rep){ 0, 0 };
	case OP_ITEM:   /* l[value] */
		return rq->value >= 0 && (size_t)rq->value < s->list_len ?
		       (struct rep){ 0, list[rq->value] } :
		       (struct rep){ ERANGE, 0 };
	}
	return (struct rep){ EINVAL, 0 };
}

/* What the server does for a request, and a process directly on the
 * shared copy: the method under the store's lock. */
static struct rep locked_do(struct store *s, const struct req *rq)
{
	struct timespec t;

	/* Bounded (a holder keeps it for microseconds): a lock never
	 * released, an unlock left out, gives ETIMEDOUT after a second, which
	 * the contents check reports.  pthread_mutex_timedlock takes a
	 * CLOCK_REALTIME deadline: fine for a bound this loose, and unlike
	 * pthread_mutex_clocklock it is one ThreadSanitizer knows. */
	MP_CHECK(clock_gettime(CLOCK_REALTIME, &t));
	t.tv_sec += 1;
	int err = pthread_mutex_timedlock(&s->lock, &t);

	if (err == ETIMEDOUT)
		return (struct rep){ ETIMEDOUT, 0 };
	MP_CHECK_PT(err);
	struct rep rp = store_do(s, rq);

	MP_CHECK_PT(pthread_mutex_unlock(&s->lock));
	return rp;
}

/* One call: through the socket (fd >= 0: a proxy), or on the store in
 * shared memory (direct). */
static struct rep call(int fd, struct store *shared, struct req rq)
{
	struct rep rp;

	if (fd < 0)
		return locked_do(shared, &rq);
	if (send(fd, &rq, sizeof rq, MSG_NOSIGNAL) != (ssize_t)sizeof rq)
		mp_die("send to the manager");
	ssize_t r = recv(fd, &rp, sizeof rp, 0);

	if (r != (ssize_t)sizeof rp) /* 0: it hung up; EAGAIN: SO_RCVTIMEO */
		mp_die_en(r == 0 ? ECONNRESET : r == -1 ? errno : EBADMSG,
			  "recv from the manager");
	return rp;
}

static bool exited_0(pid_t pid)
{
	int st = mp_waitpid(pid);

	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---- Python's challenge, both ways ------------------------------------ */

enum { NONCE = 40, PREFIX = 8 };  /* 40 random bytes; "{sha256}" */
#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"

/* deliver_challenge(): send "#CHALLENGE#{sha256}" + random bytes, expect
 * "{sha256}" + HMAC(authkey, "{sha256}" + random), say WELCOME or FAILURE. */
static bool deliver_challenge(int fd, const uint8_t key[32])
{
	uint8_t msg[sizeof CHALLENGE - 1 + PREFIX + NONCE];
	uint8_t got[PREFIX + MP_SHA256_LEN + 1], want[MP_SHA256_LEN];
	uint8_t *signed_part = msg + sizeof CHALLENGE - 1;

	memcpy(msg, CHALLENGE "{sha256}", sizeof CHALLENGE - 1 + PREFIX);
	if (getrandom(signed_part + PREFIX, NONCE, 0) != NONCE)
		mp_die("getrandom");
	if (send(fd, msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg)
		return false;
	ssize_t n = recv(fd, got, sizeof got, 0);

	mp_hmac_sha256(key, 32, signed_part, PREFIX + NONCE, want);
	bool ok = n == PREFIX + MP_SHA256_LEN &&
		  memcmp(got, "{sha256}", PREFIX) == 0 &&
		  mp_mac_equal(got + PREFIX, want, MP_SHA256_LEN);
	const char *verdict = ok ? WELCOME : FAILURE;

	send(fd, verdict, strlen(verdict), MSG_NOSIGNAL); /* best effort */
	return ok;
}

/* answer_challenge(): prove we know the key, and hear WELCOME. */
static bool answer_challenge(int fd, const uint8_t key[32])
{
	uint8_t msg[256], reply[PREFIX + MP_SHA256_LEN];
	ssize_t n = recv(fd, msg, sizeof msg, 0);
	size_t head = sizeof CHALLENGE - 1;

	if (n < (ssize_t)(head + 20) || memcmp(msg, CHALLENGE, head) != 0)
		return false;
	memcpy(reply, "{sha256}", PREFIX);
	mp_hmac_sha256(key, 32, msg + head, (size_t)n - head, reply + PREFIX);
	if (send(fd, reply, sizeof reply, MSG_NOSIGNAL) !=
	    (ssize_t)sizeof reply)
		return false;
	n = recv(fd, msg, sizeof msg, 0);
	return n == sizeof WELCOME - 1 && memcmp(msg, WELCOME, (size_t)n) == 0;
}

/* The server, as Python's: a thread per connection, which answers its
 * client's requests until the client hangs up.  Nothing a client sends can
 * kill it: a malformed request gets EINVAL, a broken connection is closed. */
static void *serve_client(void *arg)
{
	struct conn c = *(struct conn *)arg;
	struct req rq;

	free(arg);
	/* Python's order on the server side: challenge, then be challenged. */
	if (!deliver_challenge(c.fd, authkey) ||
	    !answer_challenge(c.fd, authkey)) {
		atomic_fetch_add(&c.refused->bad_key, 1);
		MP_CHECK(close(c.fd));
		return NULL;
	}
	for (;;) {
		ssize_t r = recv(c.fd, &rq, sizeof rq, 0);

		if (r <= 0)
			break; /* hung up, reset, or silent past SO_RCVTIMEO */
		struct rep rp = { EINVAL, 0 };

		if (r == (ssize_t)sizeof rq && rq.op >= OP_SET &&
		    rq.op <= OP_SHUTDOWN)
			rp = rq.op == OP_SHUTDOWN ? (struct rep){ 0, 0 }
						  : locked_do(c.s, &rq);
		else
			atomic_fetch_add(&c.refused->malformed, 1);
		if (send(c.fd, &rp, sizeof rp, MSG_NOSIGNAL) == -1 &&
		    errno != EPIPE) /* EPIPE: gone; recv() will say so */
			mp_die("send");
		if (rp.err == 0 && rq.op == OP_SHUTDOWN &&
		    r == (ssize_t)sizeof rq)
			_exit(EXIT_SUCCESS); /* the server, every thread */
	}
	MP_CHECK(close(c.fd));
	return NULL;
}

/* Accept, refuse other users (the kernel says who connected: SO_PEERCRED),
 * and give each connection a thread. */
static _Noreturn void serve(int lfd, struct store *s,
			    struct refusals *refused)
{
	for (;;) {
		struct conn *c = malloc(sizeof *c);
		struct ucred cred;
		socklen_t len = sizeof cred;
		struct timeval limit = { .tv_sec = 2 };
		pthread_t t;

		if (!c)
			mp_die("malloc");
		*c = (struct conn){ accept4(lfd, NULL, NULL, SOCK_CLOEXEC), s,
				    refused };
		MP_CHECK(c->fd);
		MP_CHECK(getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred,
				    &len));
		if (cred.uid != geteuid()) {
			atomic_fetch_add(&refused->other_user, 1);
			MP_CHECK(close(c->fd));
			free(c);
			continue;
		}
		/* A client that says nothing must not hold a thread forever. */
		MP_CHECK(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &limit,
				    sizeof limit));
		MP_CHECK_PT(pthread_create(&t, NULL, serve_client, c));
		MP_CHECK_PT(pthread_detach(t));
	}
}

/* A proxy's connection, authenticated with key: -1 with EACCES when the
 * server refused it.  Python's proxies wait for ever on a server that does
 * not answer; ours give up after 10 s (recv fails with EAGAIN). */
static int connect_with(const struct where *w, const uint8_t key[32])
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct timeval limit = { .tv_sec = 10 };

	MP_CHECK(fd);
	MP_CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit));
	MP_CHECK(connect(fd, (const struct sockaddr *)&w->sa, w->len));
	/* Python's order on the client side: be challenged, then challenge. */
	if (answer_challenge(fd, key) && deliver_challenge(fd, key))
		return fd;
	MP_CHECK(close(fd));
	errno = EACCES;
	return -1;
}

static int connect_to(const struct where *w)
{
	int fd = connect_with(w, authkey);

	if (fd == -1)
		mp_die("the manager refused our own key");
	return fd;
}

/* Three callers the manager must turn away, each in a child that reports
 * through its exit status: 0 refused as it should be, 1 let in.
 *   wrong key: the challenge fails; another user (only as root, which can
 *   become "nobody"): refused before any challenge; a malformed request
 *   from a good client: EINVAL, and the server answers the next one. */
static bool intruders(const struct where *w, struct refusals *refused)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		uint8_t wrong[32];

		memcpy(wrong, authkey, sizeof wrong);
		wrong[0] ^= 1;  /* one bit off */
		_exit(connect_with(w, wrong) == -1 ? 0 : 1);
	}
	bool key_ok = exited_0(pid);
	bool as_root = geteuid() == 0;

	if (as_root && (pid = mp_fork()) == 0) {
		if (setgid(65534) == -1 || setuid(65534) == -1)
			_exit(2);
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		struct timeval limit = { .tv_sec = 10 };
		char b[64];

		if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit,
					   sizeof limit) == -1 ||
		    connect(fd, (const struct sockaddr *)&w->sa, w->len) == -1)
			_exit(2);
		_exit(recv(fd, b, sizeof b, 0) == 0 ? 0 : 1); /* hung up */
	}
	bool uid_ok = !as_root || exited_0(pid);
	int fd = connect_to(w);
	struct rep rp;

	MP_CHECK(send(fd, "bad", 3, MSG_NOSIGNAL));
	bool bad_ok = recv(fd, &rp, sizeof rp, 0) == (ssize_t)sizeof rp &&
		      rp.err == EINVAL;
	rp = call(fd, NULL, (struct req){ .op = OP_ITEM, .value = 0 });
	bad_ok = bad_ok && rp.err == 0;  /* and it serves on */
	MP_CHECK(close(fd));
	mp_say("parent", "wrong key: %s (%d); other user: %s (%d); malformed "
	       "request: %s, then served on (%d)",
	       key_ok ? "refused" : "LET IN", atomic_load(&refused->bad_key),
	       !as_root ? "not tried (needs root to become nobody)"
	       : uid_ok ? "refused by SO_PEERCRED" : "LET IN",
	       atomic_load(&refused->other_user),
	       bad_ok ? "EINVAL" : "NOT REFUSED",
	       atomic_load(&refused->malformed));
	return key_ok && uid_ok && bad_ok &&
	       atomic_load(&refused->bad_key) == 1 &&
	       atomic_load(&refused->other_user) == (as_root ? 1 : 0) &&
	       atomic_load(&refused->malformed) == 1;
}

/* Read it all back through the same transport: the list holds each
 * client's ops appends, once each and in its order; each key holds the last
 * value its client set. */
static bool verify(int fd, struct store *shared, long clients, long ops,
		   long keys)
{
	long next[MAX_CLIENTS] = { 0 }, n = clients * ops;
	struct req rq = { .op = OP_ITEM };
	bool ok = true;

	for (rq.value = 0; ok && rq.value < n; rq.value++) {
		struct rep rp = call(fd, shared, rq);
		long c = rp.value / ops;

		ok = !rp.err && rp.value >= 0 && c < clients &&
		     rp.value == c * ops + next[c]++;
	}
	ok = ok && call(fd, shared, rq).err == ERANGE; /* l[n]: len(l) == n */
	rq.op = OP_GET;
	for (long c = 0; c < clients && ok; c++)
		for (long k = 0; k < keys && ok; k++) {
			rq.key = c * keys + k;
			struct rep rp = call(fd, shared, rq);

			/* The last i < ops with i % keys == k, or KeyError. */
			ok = k < ops ? !rp.err && rp.value == k + keys *
						  ((ops - 1 - k) / keys)
				     : rp.err == ENOENT;
		}
	return ok;
}

/* Fork the clients: each does ops rounds of d[key] = i; d[key] == i?;
 * l.append(unique), through the manager (w) or on the shared copy.
 * Returns the mean ns per call, or -1 if a client failed. */
static double run_clients(long clients, long ops, long keys,
			  const struct where *w, struct store *shared)
{
	int64_t *ns = mp_shm_alloc(MAX_CLIENTS * sizeof *ns); /* per client */
	int64_t total = 0;
	pid_t pids[MAX_CLIENTS];
	bool failed = false;

	if (!ns)
		mp_die("mp_shm_alloc");
	for (long c = 0; c < clients; c++) {
		if ((pids[c] = mp_fork()) != 0)
			continue;
		int fd = w ? connect_to(w) : -1;
		struct req rq;
		int64_t t0 = mp_now_ns();

		for (long i = 0; i < ops; i++) {
			rq = (struct req){ OP_SET, c * keys + i % keys, i };
			struct rep a = call(fd, shared, rq);

			rq.op = OP_GET;
			struct rep b = call(fd, shared, rq);

			rq.op = OP_APPEND, rq.value = c * ops + i;
			if (a.err || b.err || b.value != i ||
			    call(fd, shared, rq).err)
				mp_die_en(EBADMSG, "client %ld: round %ld",
					  c, i);
		}
		ns[c] = mp_now_ns() - t0;
		if (fd >= 0)
			MP_CHECK(close(fd));
		_exit(EXIT_SUCCESS);
	}
	for (long c = 0; c < clients; c++) {
		int st = mp_waitpid(pids[c]);

		failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
		total += ns[c];
	}
	MP_CHECK(mp_shm_free(ns, MAX_CLIENTS * sizeof *ns));
	return failed ? -1 : (double)total / (double)(clients * ops * 3);
}

/* The Python twin: the same loop on Manager proxies and on a plain dict. */
static void python_twin(long ops)
{
	char ops_s[24];

	if (!mp_python3()) {
		mp_say("parent", "no python3 found at configure time: C only");
		return;
	}
	snprintf(ops_s, sizeof ops_s, "%ld", ops);
	int st = mp_run_twin(MP_LESSON_DIR "/manager_dict_list.py",
			     (char *[]){ ops_s, NULL }, 60 + (double)ops * 1e-3,
			     NULL, NULL);

	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		mp_say("parent", "the Python twin failed: C figures only");
}

int main(int argc, char *argv[])
{
	long clients = 2, ops = 1000, keys = 256, py_ops = 1000;
	const struct mp_opt opts[] = {
		MP_OPT_L("clients", &clients, 1, MAX_CLIENTS,
			 "client processes"),
		MP_OPT_L("ops", &ops, 1, 1000000,
			 "set+get+append rounds per client"),
		MP_OPT_L("keys", &keys, 1, 4096, "distinct keys per client"),
		MP_OPT_L("python-ops", &py_ops, 0, 1000000,
			 "rounds for the Python twin (0: skip it)"),
	};

	mp_parse_options(argc, argv, "A dict and a list owned by a server "
			 "process (Python's Manager), against the same in "
			 "shared memory.", opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Sizes: a dict at most half full, a list for every append. */
	size_t cap = 1, list_cap = (size_t)(clients * ops);

	while (cap < (size_t)(2 * clients * keys))
		cap <<= 1;
	size_t size = sizeof(struct store) + cap * sizeof(struct slot) +
		      list_cap * sizeof(long);

	/* 2. The manager: listen on an abstract name, then fork the server.
	 *    Listening first means a client can connect() before the server
	 *    runs: the kernel queues it until accept(). */
	struct where w = { .sa.sun_family = AF_UNIX };
	char name[64];

	mp_ipc_name(name, sizeof name, "manager");
	memcpy(w.sa.sun_path + 1, name + 1, strlen(name + 1)); /* [0]: NUL */
	w.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
			    strlen(name));
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	MP_CHECK(lfd);
	MP_CHECK(bind(lfd, (struct sockaddr *)&w.sa, w.len));
	MP_CHECK(listen(lfd, MAX_CLIENTS));
	if (getrandom(authkey, sizeof authkey, 0) != (ssize_t)sizeof authkey)
		mp_die("getrandom");
	struct refusals *refused = mp_shm_alloc(sizeof *refused);

	if (!refused)
		mp_die("mp_shm_alloc");
	pid_t parent = getpid(), server = mp_fork();

	if (server == 0) {
		/* If the parent dies without a shutdown, SIGTERM us: otherwise
		 * we would wait on the listening socket for ever. */
		MP_CHECK(prctl(PR_SET_PDEATHSIG, SIGTERM));
		if (getppid() != parent)
			_exit(EXIT_FAILURE); /* it died before prctl() */
		serve(lfd, store_new(size, cap, list_cap, false), /* private */
		      refused);
	}
	MP_CHECK(close(lfd));
	mp_say("parent", "manager %jd listens on @%s (abstract: no file)",
	       (intmax_t)server, name + 1);

	/* 3. The clients call it through proxies; then the parent turns
	 *    intruders away, reads it all back through its own connection and
	 *    shuts it down. */
	double proxy = run_clients(clients, ops, keys, &w, NULL);
	bool guarded = intruders(&w, refused);
	int fd = connect_to(&w);
	bool proxy_ok = proxy >= 0 && verify(fd, NULL, clients, ops, keys);

	call(fd, NULL, (struct req){ .op = OP_SHUTDOWN });
	MP_CHECK(close(fd));
	int st = mp_waitpid(server);

	proxy_ok = proxy_ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	mp_say("parent", "through the manager: %.0f ns per call, contents %s",
	       proxy, proxy_ok ? "exact" : "WRONG");

	/* 4. The same dict and list in shared memory, a process-shared mutex
	 *    around each call: what SharedMemory or Array plus a Lock give. */
	struct store *sh = store_new(size, cap, list_cap, true);
	double direct = run_clients(clients, ops, keys, NULL, sh);
	bool direct_ok = direct >= 0 && verify(-1, sh, clients, ops, keys);

	mp_say("parent", "shared memory + mutex: %.0f ns per call, contents %s",
	       direct, direct_ok ? "exact" : "WRONG");
	int held = pthread_mutex_destroy(&sh->lock); /* EBUSY: still held */

	if (held != 0 && held != EBUSY)
		mp_die_en(held, "pthread_mutex_destroy");
	direct_ok = direct_ok && held == 0;
	MP_CHECK(mp_shm_free(sh, size));

	/* 5. Python's own figures, then the verdict. */
	if (py_ops > 0)
		python_twin(py_ops);
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = proxy_ok && direct_ok && guarded && reaped;

	MP_CHECK(mp_shm_free(refused, sizeof *refused));
	printf("result: %ld clients x %ld rounds, manager %.0f ns/call, shared "
	       "memory %.0f ns/call, %.0fx, contents %s, intruders %s %s\n",
	       clients, ops, proxy, direct,
	       proxy_ok && direct_ok && direct > 0 ? proxy / direct : 0,
	       proxy_ok && direct_ok ? "exact" : "WRONG",
	       guarded ? "refused" : "LET IN", ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
