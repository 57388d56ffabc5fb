/* 2_communication/shared_memory/manager_dict_list.c -- Python's Manager in
 * C: a server process owns a dict and a list, clients call it over a socket
 *
 * Python:  with Manager() as m:
 *              d, l = m.dict(), m.list()   # proxies: every d[k] = v, d[k],
 *              ...                         # l.append(x) is a round trip
 *          Lib/multiprocessing/managers.py: Manager() starts a server
 *          process listening on an AF_UNIX socket (a path in a temporary
 *          directory); its accepter thread starts one thread per connection.
 *          A proxy's _callmethod() sends (id, method, args, kwds) pickled
 *          through a Connection (4-byte length, then the bytes) and waits
 *          for ('#RETURN', result): every d[k] is a round trip to another
 *          process, pickling both ways -- the surprise of Python users who
 *          swap a dict for a Manager().dict() and find it hundreds of
 *          times slower.
 * C:       socket(AF_UNIX, SOCK_SEQPACKET) on an abstract name (a leading
 *          NUL: nothing on disk, gone with the last fd), bind, listen,
 *          accept, poll; fixed-size request/response structs (SEQPACKET
 *          keeps message boundaries: no length prefix needed); the same
 *          dict and list in MAP_SHARED memory under a process-shared mutex.
 * Usage:   manager_dict_list [--clients N (2, 1..16)] [--ops N (1000, 1..10^6)]
 *                            [--keys N (256, 1..4096)] [--python-ops N (1000, 0..10^6)]
 * Output:  [parent 910 +0.1ms] manager 911 listens on @mpp-manager_dict_list-manager-910 (abstract: no file)
 *          [parent 910 +132.0ms] through the manager: 25178 ns per call, contents exact
 *          [parent 910 +133.2ms] shared memory + mutex: 245 ns per call, contents exact
 *          [python3] Manager proxies: 73040 ns per call; plain dict and list: 74 ns; 991x
 *          result: 2 clients x 1000 rounds, manager 25178 ns/call, shared memory 245 ns/call, 103x, contents exact OK
 * Try this: --clients 1, then taskset -c 0 ./manager_dict_list --clients 1:
 *          a call is two wake-ups, and waking a process on another, idle
 *          CPU can cost more than the switch itself (on a 2-vCPU VM: 12-68
 *          us per call spread over both CPUs, 9-10 us pinned to one).
 *          --keys 1: every client hammers one key, still exact.
 */
#define _GNU_SOURCE /* accept4 */
#include "mp.h"

#include <poll.h>
#include <spawn.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

enum { KEY_LEN = 32, MAX_CLIENTS = 16 };
enum op { OP_SET, OP_GET, OP_APPEND, OP_LEN, OP_ITEM, OP_SHUTDOWN };

struct req { int op; long value; char key[KEY_LEN]; };
struct rep { int err; long value; };  /* err: 0, ENOENT (KeyError), ... */

/* The dict (open addressing) and the list, flat -- no pointers inside --
 * so that one copy lives in the server's own heap and another in shared
 * memory, run by the same store_do(). */
struct slot { char key[KEY_LEN]; long value; bool used; };
struct store {
	pthread_mutex_t lock;        /* only the shared-memory copy uses it */
	size_t cap;                  /* dict slots, a power of 2 */
	size_t list_cap, list_len;
	struct slot slots[];         /* then long list[list_cap] */
};

static size_t store_size(size_t cap, size_t list_cap)
{
	return sizeof(struct store) + cap * sizeof(struct slot) +
	       list_cap * sizeof(long);
}

static long *list_of(struct store *s)
{
	return (long *)(s->slots + s->cap);
}

static struct slot *dict_find(struct store *s, const char *key)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3u;
	for (size_t n = 0, i = h & (s->cap - 1); n < s->cap;
	     n++, i = (i + 1) & (s->cap - 1))
		if (!s->slots[i].used || strcmp(s->slots[i].key, key) == 0)
			return &s->slots[i];
	return NULL; /* full and absent */
}

/* What the server does with a request (a dict or list method). */
static struct rep store_do(struct store *s, const struct req *rq)
{
	struct slot *sl = rq->op == OP_SET || rq->op == OP_GET ?
			  dict_find(s, rq->key) : NULL;

	switch (rq->op) {
	case OP_SET:      /* d[key] = value */
		if (!sl)
			return (struct rep){ ENOSPC, 0 };
		*sl = (struct slot){ .value = rq->value, .used = true };
		memcpy(sl->key, rq->key, KEY_LEN);
		return (struct rep){ 0, 0 };
	case OP_GET:      /* d[key] */
		return sl && sl->used ? (struct rep){ 0, sl->value }
				      : (struct rep){ ENOENT, 0 };
	case OP_APPEND:   /* l.append(value) */
		if (s->list_len == s->list_cap)
			return (struct rep){ ENOSPC, 0 };
		list_of(s)[s->list_len++] = rq->value;
		return (struct rep){ 0, 0 };
	case OP_LEN:      /* len(l) */
		return (struct rep){ 0, (long)s->list_len };
	case OP_ITEM:     /* l[i] */
		return rq->value >= 0 && (size_t)rq->value < s->list_len ?
		       (struct rep){ 0, list_of(s)[rq->value] } :
		       (struct rep){ ERANGE, 0 };
	}
	return (struct rep){ EINVAL, 0 };
}

/* One call through either transport: the socket (fd >= 0, a proxy call)
 * or the shared store under its lock (direct). */
static struct rep call(int fd, struct store *shared, struct req rq)
{
	struct rep rp;

	if (fd < 0) {
		MP_CHECK_PT(pthread_mutex_lock(&shared->lock));
		rp = store_do(shared, &rq);
		MP_CHECK_PT(pthread_mutex_unlock(&shared->lock));
		return rp;
	}
	if (send(fd, &rq, sizeof rq, MSG_NOSIGNAL) != (ssize_t)sizeof rq ||
	    recv(fd, &rp, sizeof rp, 0) != (ssize_t)sizeof rp)
		mp_die("call to the manager");
	return rp;
}

/* The server: one thread, poll() over the listening socket and every
 * client; requests are served one at a time, so the store needs no lock. */
static void serve(int lfd, struct store *s)
{
	struct pollfd fds[MAX_CLIENTS + 2] = { { .fd = lfd, .events = POLLIN } };
	nfds_t n = 1;

	for (;;) {
		if (poll(fds, n, -1) == -1) {
			if (errno == EINTR)
				continue;
			mp_die("poll");
		}
		if ((fds[0].revents & POLLIN) && n < MAX_CLIENTS + 2) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			MP_CHECK(c);
			fds[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
		}
		for (nfds_t i = 1; i < n; i++) {
			struct req rq;

			if (!fds[i].revents)
				continue;
			ssize_t r = recv(fds[i].fd, &rq, sizeof rq, 0);

			if (r == 0 || (r == -1 && errno == ECONNRESET)) {
				MP_CHECK(close(fds[i].fd)); /* client gone */
				fds[i--] = fds[--n];
				continue;
			}
			if (r != (ssize_t)sizeof rq)
				mp_die("recv: %zd bytes", r);
			struct rep rp = rq.op == OP_SHUTDOWN ? (struct rep){ 0, 0 }
							     : store_do(s, &rq);

			if (send(fds[i].fd, &rp, sizeof rp, MSG_NOSIGNAL) == -1 &&
			    errno != EPIPE)
				mp_die("send");
			if (rq.op == OP_SHUTDOWN)
				return;
		}
	}
}

static int connect_to(const struct sockaddr_un *addr, socklen_t len)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	MP_CHECK(fd);
	MP_CHECK(connect(fd, (const struct sockaddr *)addr, len));
	return fd;
}

/* Client c's key number k: "c1-42" (clients and keys are small). */
static void make_key(char key[KEY_LEN], int c, long k)
{
	snprintf(key, KEY_LEN, "c%d-%d", c, (int)k);
}

/* A client: ops times d[key] = i; check d[key] == i; l.append(unique). */
static void client(int id, long ops, long keys, int fd, struct store *shared,
		   int64_t *ns)
{
	struct req rq = { 0 };
	int64_t t0 = mp_now_ns();

	for (long i = 0; i < ops; i++) {
		make_key(rq.key, id, i % keys);
		rq.op = OP_SET, rq.value = i;
		struct rep a = call(fd, shared, rq);

		rq.op = OP_GET;
		struct rep b = call(fd, shared, rq);

		rq.op = OP_APPEND, rq.value = id * ops + i;
		struct rep c = call(fd, shared, rq);

		if (a.err || b.err || b.value != i || c.err)
			mp_die_en(EBADMSG, "client %d: op %ld went wrong", id, i);
	}
	*ns = mp_now_ns() - t0;
}

/* Read everything back through the same transport: every key holds the
 * last value its client set, and the list holds 0..clients*ops-1 once each. */
static bool verify(int fd, struct store *shared, long clients, long ops,
		   long keys)
{
	struct req rq = { .op = OP_LEN };
	long n = clients * ops;
	bool bad = call(fd, shared, rq).value != n;
	bool *seen = calloc((size_t)n, sizeof *seen);

	if (!seen)
		mp_die("calloc");
	for (rq.op = OP_ITEM, rq.value = 0; !bad && rq.value < n; rq.value++) {
		struct rep rp = call(fd, shared, rq);

		bad = rp.err || rp.value < 0 || rp.value >= n || seen[rp.value];
		if (!bad)
			seen[rp.value] = true;
	}
	free(seen);
	for (long c = 0; c < clients && !bad; c++)
		for (long k = 0; k < keys && !bad; k++) {
			rq.op = OP_GET;
			make_key(rq.key, (int)c, k);
			struct rep rp = call(fd, shared, rq);

			bad = k < ops ? rp.err || rp.value != k + keys * ((ops - 1 - k) / keys)
				      : rp.err != ENOENT;
		}
	return !bad;
}

/* Fork the clients, wait for them, return the mean ns per request (or -1
 * if one failed: the caller still shuts the server down). */
static double run_clients(long clients, long ops, long keys,
			  const struct sockaddr_un *addr, socklen_t len,
			  struct store *shared, int64_t *ns)
{
	pid_t pids[MAX_CLIENTS];
	int64_t total = 0;
	bool failed = false;

	for (int c = 0; c < clients; c++) {
		pids[c] = mp_fork();
		if (pids[c] == 0) {
			int fd = addr ? connect_to(addr, len) : -1;

			client(c, ops, keys, fd, shared, &ns[c]);
			if (fd >= 0)
				MP_CHECK(close(fd));
			_exit(EXIT_SUCCESS);
		}
	}
	for (int c = 0; c < clients; c++) {
		int st = mp_waitpid(pids[c]);

		failed |= !WIFEXITED(st) || WEXITSTATUS(st) != 0;
		total += ns[c];
	}
	return failed ? -1 : (double)total / (double)(clients * ops * 3);
}

/* The Python twin: the same loop on Manager proxies and on a plain dict. */
static void python_twin(long ops)
{
	const char *py = mp_python3();
	char ops_s[24];
	pid_t pid;

	if (!py) {
		mp_say("parent", "python3 was not found at configure time: C "
		       "figures only");
		return;
	}
	snprintf(ops_s, sizeof ops_s, "%ld", ops);
	char *args[] = { (char *)py, MP_LESSON_DIR "/manager_dict_list.py",
			 ops_s, NULL };

	if (fflush(stdout) == EOF)
		mp_die("fflush");
	MP_CHECK_PT(posix_spawn(&pid, py, NULL, NULL, args, environ));
	int st = mp_waitpid(pid);

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		mp_say("parent", "the Python twin failed: C figures only");
}

int main(int argc, char *argv[])
{
	long clients = 2, ops = 1000, keys = 256, py_ops = 1000;
	const struct mp_opt opts[] = {
		MP_OPT_L("clients", &clients, 1, MAX_CLIENTS, "client processes"),
		MP_OPT_L("ops", &ops, 1, 1000000, "set+get+append rounds per client"),
		MP_OPT_L("keys", &keys, 1, 4096, "distinct keys per client"),
		MP_OPT_L("python-ops", &py_ops, 0, 1000000,
			 "rounds for the Python twin (0: skip it)"),
	};

	mp_parse_options(argc, argv, "A dict and a list owned by a server "
			 "process (Python's Manager), against the same in shared "
			 "memory.", opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Sizes: a dict never more than half full, a list for every append. */
	size_t cap = 1, list_cap = (size_t)(clients * ops);

	while (cap < (size_t)(2 * clients * keys))
		cap <<= 1;
	size_t size = store_size(cap, list_cap);
	int64_t *ns = mp_shm_alloc(MAX_CLIENTS * sizeof *ns);

	if (!ns)
		mp_die("mp_shm_alloc");

	/* 2. The manager: listen on an abstract name, then fork the server.
	 *    Listening first means a client can connect() before the server
	 *    runs: the kernel queues it until accept(). */
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char name[64];

	mp_ipc_name(name, sizeof name, "manager");
	size_t nlen = strlen(name + 1);

	memcpy(addr.sun_path + 1, name + 1, nlen); /* sun_path[0] = '\0' */
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				     1 + nlen);
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	MP_CHECK(lfd);
	MP_CHECK(bind(lfd, (struct sockaddr *)&addr, alen));
	MP_CHECK(listen(lfd, MAX_CLIENTS));
	pid_t parent = getpid(), server = mp_fork();

	if (server == 0) {
		struct store *s = calloc(1, size); /* private: only it sees this */

		if (!s)
			mp_die("calloc");
		/* If the parent dies without a shutdown, SIGTERM us: otherwise
		 * we would wait on the listening socket for ever. */
		MP_CHECK(prctl(PR_SET_PDEATHSIG, SIGTERM));
		if (getppid() != parent)
			_exit(EXIT_FAILURE); /* it died before prctl() */
		s->cap = cap, s->list_cap = list_cap;
		serve(lfd, s);
		free(s);
		_exit(EXIT_SUCCESS);
	}
	MP_CHECK(close(lfd));
	mp_say("parent", "manager %jd listens on @%s (abstract: no file)",
	       (intmax_t)server, name + 1);

	/* 3. The clients call it (proxies), then the parent reads it all back
	 *    through its own connection and shuts it down. */
	double proxy = run_clients(clients, ops, keys, &addr, alen, NULL, ns);
	int fd = connect_to(&addr, alen);
	bool proxy_ok = verify(fd, NULL, clients, ops, keys);

	call(fd, NULL, (struct req){ .op = OP_SHUTDOWN }); /* m.shutdown() */
	MP_CHECK(close(fd));
	int st = mp_waitpid(server);

	proxy_ok = proxy_ok && proxy > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	mp_say("parent", "through the manager: %.0f ns per call, contents %s",
	       proxy, proxy_ok ? "exact" : "WRONG");

	/* 4. The same dict and list in shared memory, one mutex around each
	 *    call: what Value/Array or SharedMemory give you. */
	struct store *sh = mp_shm_alloc(size);
	pthread_mutexattr_t a;

	if (!sh)
		mp_die("mp_shm_alloc");
	sh->cap = cap, sh->list_cap = list_cap;
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&sh->lock, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
	double direct = run_clients(clients, ops, keys, NULL, 0, sh, ns);
	bool direct_ok = verify(-1, sh, clients, ops, keys) && direct > 0;

	mp_say("parent", "shared memory + mutex: %.0f ns per call, contents %s",
	       direct, direct_ok ? "exact" : "WRONG");
	MP_CHECK_PT(pthread_mutex_destroy(&sh->lock));
	MP_CHECK(mp_shm_free(sh, size));
	MP_CHECK(mp_shm_free(ns, MAX_CLIENTS * sizeof *ns));

	/* 5. Python's own figures, then the verdict. */
	if (py_ops > 0)
		python_twin(py_ops);
	bool ok = proxy_ok && direct_ok;

	printf("result: %ld clients x %ld rounds, manager %.0f ns/call, shared "
	       "memory %.0f ns/call, %.0fx, contents %s %s\n", clients, ops,
	       proxy, direct, proxy / direct, ok ? "exact" : "WRONG",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
