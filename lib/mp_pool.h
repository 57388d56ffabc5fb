/* lib/mp_pool.h -- a pool of forked worker processes: Python's Pool in C
 *
 * Python:  with Pool(4, initializer=init, maxtasksperchild=100) as pool:
 *              squares = pool.map(square, range(n), chunksize=64)
 *              r = pool.apply_async(f, (x,), callback=done); r.get(timeout=1)
 * C:       struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
 *                  .workers = 4, .initializer = init,
 *                  .maxtasksperchild = 100 });
 *          mp_pool_map(pool, square, in, n, sizeof *in, out, sizeof *out, 64);
 *          struct mp_pool_async *r = mp_pool_apply_async(pool, f, &x,
 *                  sizeof x, sizeof(long), done, NULL);
 *          mp_pool_get(r, &y, 1.0); mp_pool_async_free(r);
 *          mp_pool_close(pool); mp_pool_join(pool); mp_pool_destroy(pool);
 *
 * A task is a function pointer plus bytes.  The arguments are copied into
 * memory shared with the workers and the results are copied back; nothing is
 * pickled, so items are plain bytes of a fixed size (no pointers into the
 * parent's heap: a worker has its own copy of the heap as it was at fork()).
 *
 * Why a function pointer may cross to a worker: every worker is made by
 * fork() from the process that created the pool, so it runs the same
 * executable mapped at the same addresses; the address of square() in the
 * parent is the address of square() in the worker.  After exec() that would
 * no longer hold: a new image is loaded, at a new random base (ASLR), and
 * may not even be the same program.  This is why Python's "spawn" start
 * method sends functions by name (pickled as module + qualified name) and
 * re-imports the module in the child, and why this pool only forks.
 * Consequences: a task may use globals, but sees them as they were when its
 * worker was forked (the pool forks at mp_pool_create() and again whenever
 * it replaces a worker); the usual way to give workers state is an
 * initializer that sets globals in each worker, exactly as in Python.
 *
 * How CPython builds Pool (Lib/multiprocessing/pool.py): tasks go through a
 * SimpleQueue (a pipe plus two locks, _rlock and _wlock:
 * Lib/multiprocessing/queues.py) as pickles, results come back through
 * another one, and three threads in the parent run it: _task_handler feeds
 * tasks, _result_handler sets results and runs callbacks, _worker_handler
 * waits on the workers' sentinels and starts a new worker for each one that
 * exits.  A worker killed mid-task is replaced, but its task is simply
 * lost: map() and get() without a timeout then wait forever (bpo-22393,
 * cpython issue 66587).
 *
 * How this pool is built: one shared anonymous mapping (nothing appears in
 * /dev/shm, so nothing can be left there) holds a ring of job descriptors and
 * an arena for arguments and results; mp_pool_alloc()'s heap is a memfd (also
 * nameless) that grows as it is used.  A map needs no queue of tasks: its
 * items sit in the arena and each worker claims the next chunk with one
 * atomic add (OpenMP's schedule(dynamic, chunksize)).  apply_async jobs are
 * entries of the same ring.  Idle workers sleep on a futex and are woken only
 * when they are counted as sleeping (a woken worker that sees more work
 * queued wakes the next sleeper, so a burst of apply_async reaches every idle
 * worker); the parent waits in poll() on an eventfd (workers signal it only
 * while the parent waits) and on one pidfd per worker, so a dead worker is
 * noticed at once.  Each worker records in its shared slot which job, chunk
 * and item it is running, and every item gets a "done" byte once its chunk
 * has run; when a worker dies the pool reaps it, marks the items its chunk
 * finished before the one it was running, forks a replacement and runs
 * the rest of the chunk again (an item that was cut short may thus run
 * twice), up to `retries` extra times per item; then the
 * call fails with EOWNERDEAD naming the item (see struct mp_pool_error).
 * There are no threads: the pool's bookkeeping (collecting results, running
 * callbacks, replacing workers) happens in the thread that calls into the
 * pool; an event loop waits on mp_pool_fd() and calls mp_pool_poll().
 *
 * Conventions:
 *  - Functions return 0 / -1 with errno set, or NULL with errno set, unless
 *    documented otherwise.  mp_pool_last_error() gives the details of the
 *    last failure (which item, which code, which signal).
 *  - A task function returns 0 on success or an errno-style code in
 *    1..4095 on failure (other values are reported as ERANGE).  A failed
 *    task makes its call return -1 with errno set to that code.  Give tasks
 *    codes other than EINVAL, ETIMEDOUT, EOWNERDEAD and ECANCELED if the
 *    caller must tell them apart from the pool's own errors (or look at
 *    mp_pool_last_error()->task, which says where the code came from).
 *  - Errors of the pool itself: EINVAL for bad arguments (a NULL pool or
 *    function, an item size of 0, a NULL array with items, a pool that is
 *    closed, a negative worker count, more than MP_POOL_MAX_WORKERS, an item
 *    larger than the arena allows) -- and a call refused with EINVAL changes
 *    nothing; ETIMEDOUT when a wait with a timeout expires (nothing is lost:
 *    wait again); EOWNERDEAD when an item killed its worker on every try;
 *    ECANCELED for work outstanding when the pool was terminated; ECHILD
 *    once the pool gave up because replacement workers kept dying in their
 *    initializer (every later call fails with it too; a worker killed
 *    before its initializer ran, or with no initializer, is simply
 *    replaced); ENOMEM, EAGAIN or EMFILE when memory, fork() or file
 *    descriptors fail -- in particular EAGAIN (fork()'s error) for the
 *    calls waiting when no worker is left and none could be forked for a
 *    second (RLIMIT_NPROC reached): the pool stays usable, and the next
 *    call tries to fork again.
 *  - Every wait has a way out.  A worker stopped by SIGSTOP (or Ctrl-Z
 *    aimed at it alone) keeps its chunk until it gets SIGCONT, so a call
 *    waiting on that chunk waits too: the blocking calls (map, apply) wait
 *    without limit, as Python's do; use their async form with a timeout
 *    (mp_pool_map_async + mp_pool_get(h, ..., timeout)) to keep control,
 *    mp_pool_stats()->workers_stopped to see why, and mp_pool_terminate()
 *    (SIGKILL ends a stopped process too) to give up.
 *  - Timeouts are in seconds (fractions allowed); MP_POOL_FOREVER (any
 *    negative value) waits without limit, as Python's timeout=None; 0 checks
 *    once without waiting (but still notices dead workers).  A NaN timeout
 *    is EINVAL.  Waits retry by themselves when a signal handler returns
 *    (as Python does, PEP 475).
 *  - One thread uses a pool (Python's Pool may be shared by threads).  Create
 *    it in a thread that outlives it: workers get SIGKILL when the thread
 *    that forked them ends (PR_SET_PDEATHSIG), so they never outlive a
 *    crashed parent.
 *  - Workers are children of the caller.  Do not reap them behind the pool's
 *    back (mp_wait_all() or waitpid(-1) while a pool exists); destroy the
 *    pool first.  mp_stop_on_signals() is fine: on Ctrl-C its handler
 *    SIGTERMs and reaps every child, workers included, and exits 130.
 */
#ifndef MP_POOL_H
#define MP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The most workers one pool may have; more is EINVAL. */
#define MP_POOL_MAX_WORKERS 256

/* A timeout that waits without limit (Python: timeout=None). */
#define MP_POOL_FOREVER (-1.0)

/* mp_pool_error.index when no item is involved. */
#define MP_POOL_NO_INDEX SIZE_MAX

/* Default number of extra tries for an item whose worker died. */
#define MP_POOL_DEFAULT_RETRIES 2

struct mp_pool;        /* the pool (Python: multiprocessing.pool.Pool) */
struct mp_pool_async;  /* an outstanding call (Python: AsyncResult) */
struct mp_pool_iter;   /* imap's results (Python: IMapIterator) */

/* A task: read the argument bytes at arg, write result_size bytes at result
 * (uninitialized on entry; result is never NULL, even for a size of 0),
 * return 0 or an error code in 1..4095.  Runs in a worker process. */
typedef int (*mp_pool_fn)(const void *arg, void *result);

/* What went wrong in the last call on the pool that failed. */
struct mp_pool_error {
	int code;      /* errno value: the task's code, EOWNERDEAD, ETIMEDOUT,
			* EINVAL, ECANCELED...; 0 if nothing failed yet */
	bool task;     /* true when code comes from a task (its return value
			* or its worker's death), false for the pool's own */
	size_t index;  /* the item: index in the map's array (the first
			* failing one, the lowest index), 0 for apply;
			* MP_POOL_NO_INDEX when no item is involved */
	int signal;    /* EOWNERDEAD: the signal that killed the worker on
			* the last try (0 if it exited instead) */
	pid_t pid;     /* EOWNERDEAD: the worker that died last on it */
};

/* A completion callback, run in the parent (never in a worker) by whichever
 * pool call the parent is in when the result is collected: a wait, get or
 * ready on any handle, a submission, an iterator's next, join, destroy.  On
 * success err is NULL and result points to the result (apply_async: the
 * result_size bytes, valid during the call only; map_async/starmap_async:
 * the caller's results array, complete).  On failure result is NULL and err
 * says which item and code.  Python has two callbacks (callback for a
 * value, error_callback for an exception); here it is one, with err.
 * A callback must not call the pool that runs it, except
 * mp_pool_async_free() on its own handle. */
typedef void (*mp_pool_callback)(void *cb_arg, const void *result,
				 const struct mp_pool_error *err);

/* Options for mp_pool_create(); all-zero (or a NULL pointer) means Python's
 * defaults. */
struct mp_pool_options {
	/* Worker processes; 0 = the CPUs this process may run on
	 * (sched_getaffinity, like os.process_cpu_count()).  EINVAL if
	 * negative or above MP_POOL_MAX_WORKERS. */
	int workers;
	/* Run once in each worker, before its first task, with initargs;
	 * again in every replacement worker (Python: initializer=,
	 * initargs=).  Pointers in initargs are valid in the worker: it is a
	 * fork of the parent. */
	void (*initializer)(void *initargs);
	void *initargs;
	/* Run in a worker that leaves normally (after maxtasksperchild tasks,
	 * or at close + join), with finargs.  Not run on terminate or when
	 * the worker dies.  Python has no such hook (it is how C code would
	 * flush a worker's output or free what the initializer made). */
	void (*finalizer)(void *finargs);
	void *finargs;
	/* A worker leaves after this many tasks and is replaced by a fresh
	 * one (whose initializer runs again); 0 = never (Python: None).  As in
	 * Python, one chunk of a map counts as one task.  EINVAL if < 0. */
	long maxtasksperchild;
	/* Extra tries for an item whose worker died while running it; then
	 * its call fails with EOWNERDEAD.  0 = MP_POOL_DEFAULT_RETRIES,
	 * negative = none (the first death fails the call). */
	int retries;
	/* Bytes of shared arena for arguments and results: 0 = 32 MiB of
	 * address space, of which only the pages used are ever touched.  A
	 * map runs in windows of about 2 MiB of items and results (never
	 * more than a quarter of the arena), so a bigger arena does not make
	 * maps faster; one item's argument plus result must fit in a
	 * sixteenth (else EINVAL).  Must be 0 or at least 1 MiB (EINVAL). */
	size_t arena_bytes;
	/* Bytes of shared heap for mp_pool_alloc().  0 = it grows as blocks
	 * are allocated (in mappings of at least 4 MiB, each as large as all
	 * before it), taking address space only then: a pool fits under a
	 * small ulimit -v and no fixed size is outgrown.  Otherwise a fixed
	 * heap of that many bytes of address space, mapped at create (pages
	 * are touched only as used), never more. */
	size_t heap_bytes;
};

/* ---- create and stop ------------------------------------------------- */

/* Start a pool: maps the shared memory, forks the workers and returns once
 * each has run its initializer.  opts may be NULL.  NULL with errno on
 * failure (EINVAL for bad options; ECHILD if a worker died in its
 * initializer; whatever mmap/memfd_create/fork/pidfd_open gave), with
 * nothing left behind. */
struct mp_pool *mp_pool_create(const struct mp_pool_options *opts);

/* Python's close(): no more submissions (they fail with EINVAL); work
 * already submitted still runs.  Closing twice is harmless. */
int mp_pool_close(struct mp_pool *pool);

/* Python's join(): after close() (or terminate(); EINVAL otherwise) wait for
 * every outstanding call to finish -- running their callbacks -- then let
 * the workers run their finalizer and exit, and reap them.  Returns 0 when
 * every worker exited normally (0 also after terminate()), -1 with ECHILD
 * if one died instead. */
int mp_pool_join(struct mp_pool *pool);

/* Python's terminate(): SIGKILL every worker at once and reap them.
 * Outstanding calls fail with ECANCELED (their callbacks run with that
 * error; Python's AsyncResults would never become ready).  No finalizer
 * runs.  Python sends SIGTERM; SIGKILL cannot be caught or blocked, so this
 * returns promptly whatever the tasks do. */
int mp_pool_terminate(struct mp_pool *pool);

/* Free the pool: terminate() unless join() already ran (Python's
 * "with Pool() as p:" also terminates on exit), then unmap and free
 * everything.  Handles and iterators must be freed before (or after, with
 * their own free functions: they stay valid, ready, with ECANCELED).
 * A NULL pool is ignored.  Returns 0, or -1 with errno if unmapping the
 * shared memory or closing one of the pool's descriptors failed (EBADF:
 * a descriptor of the pool was closed behind its back, for instance
 * mp_pool_fd()'s); everything is released either way. */
int mp_pool_destroy(struct mp_pool *pool);

/* ---- blocking calls -------------------------------------------------- */

/* Python's map(fn, items, chunksize): results[i] = fn(items[i]) for i in
 * 0..n-1, in order.  items holds n items of item_size bytes each, results
 * room for n results of result_size bytes each (result_size may be 0).
 * chunksize: items claimed at a time by one worker; 0 = Python's rule,
 * ceil(n / (4 * workers)) (see mp_pool_auto_chunksize()).  n = 0 returns 0 at
 * once.  Returns 0 when every task returned 0.  Otherwise -1, with errno and
 * mp_pool_last_error() naming the lowest failing index: the task's code, or
 * EOWNERDEAD if that item killed its worker on every try.  Every item runs
 * even when one fails (as in Python); results of failed items are
 * undefined, the others are filled in. */
int mp_pool_map(struct mp_pool *pool, mp_pool_fn fn, const void *items,
		size_t n, size_t item_size, void *results, size_t result_size,
		size_t chunksize);

/* Python's starmap(fn, [(a, b), ...]): several arguments per task.  In C a
 * task's argument tuple is a struct, so this is map() over an array of
 * argument structs (args_size = sizeof that struct); same semantics. */
int mp_pool_starmap(struct mp_pool *pool, mp_pool_fn fn, const void *args,
		    size_t n, size_t args_size, void *results,
		    size_t result_size, size_t chunksize);

/* Python's apply(fn, args): run one task in a worker and wait for it.
 * arg_size may be 0 (arg may then be NULL); result gets result_size bytes.
 * Returns 0, or -1 with the task's code / EOWNERDEAD (index 0). */
int mp_pool_apply(struct mp_pool *pool, mp_pool_fn fn, const void *arg,
		  size_t arg_size, void *result, size_t result_size);

/* Python's chunksize rule for map over n items on this pool:
 * ceil(n / (4 * workers)), and at least 1. */
size_t mp_pool_auto_chunksize(const struct mp_pool *pool, size_t n);

/* ---- asynchronous calls ---------------------------------------------- */

/* Python's apply_async(fn, args, callback=, error_callback=): submit one
 * task and return at once with a handle (the argument bytes are already
 * copied: arg may be reused).  cb (may be NULL) runs in the parent when the
 * result is collected.  May wait while the pool's shared ring or arena is
 * full, collecting finished work meanwhile.  NULL with errno on failure. */
struct mp_pool_async *mp_pool_apply_async(struct mp_pool *pool, mp_pool_fn fn,
					  const void *arg, size_t arg_size,
					  size_t result_size,
					  mp_pool_callback cb, void *cb_arg);

/* Python's map_async(): map() without waiting.  results must stay valid and
 * untouched until the handle is ready; the pool fills it as windows finish.
 * cb receives results (complete) or the error of the lowest failing item.
 * A map larger than a window may wait here while earlier windows run. */
struct mp_pool_async *mp_pool_map_async(struct mp_pool *pool, mp_pool_fn fn,
					const void *items, size_t n,
					size_t item_size, void *results,
					size_t result_size, size_t chunksize,
					mp_pool_callback cb, void *cb_arg);

/* Python's starmap_async(): map_async() over argument structs. */
struct mp_pool_async *mp_pool_starmap_async(struct mp_pool *pool,
					    mp_pool_fn fn, const void *args,
					    size_t n, size_t args_size,
					    void *results, size_t result_size,
					    size_t chunksize,
					    mp_pool_callback cb, void *cb_arg);

/* AsyncResult.ready(): has the call finished (successfully or not)?  Also
 * collects whatever has finished meanwhile (running callbacks) and, like a
 * wait, replaces workers that died and re-runs their items: a caller that
 * only polls ready() gets its result too.  false for a NULL handle. */
bool mp_pool_ready(struct mp_pool_async *h);

/* AsyncResult.wait(timeout): wait until the call has finished.  0 when it
 * has (successfully or not: see get), -1 with ETIMEDOUT if not yet. */
int mp_pool_wait(struct mp_pool_async *h, double timeout_s);

/* AsyncResult.get(timeout): wait, then report.  0 on success, with the
 * result copied into result (apply_async: result_size bytes; result may be
 * NULL to skip the copy; map_async: result is ignored, the results are in
 * the caller's array).  -1 with ETIMEDOUT if not finished in time (the
 * handle stays valid), or with the call's error (task code, EOWNERDEAD,
 * ECANCELED; details in mp_pool_last_error()).  May be called again. */
int mp_pool_get(struct mp_pool_async *h, void *result, double timeout_s);

/* AsyncResult.successful(): 1 if the call finished and succeeded, 0 if it
 * finished and failed, -1 with EAGAIN if it has not finished (Python raises
 * ValueError). */
int mp_pool_successful(struct mp_pool_async *h);

/* Release a handle.  If the call is still running it goes on: its result is
 * discarded when it arrives and its callback still runs (so
 * mp_pool_async_free(mp_pool_apply_async(...)) is fire-and-forget).  For
 * map_async the results array must then stay valid until the callback ran.
 * A NULL handle is ignored. */
void mp_pool_async_free(struct mp_pool_async *h);

/* ---- event loops ----------------------------------------------------- *
 *
 * Python: an asyncio program hands CPU work to processes with
 *     await loop.run_in_executor(ProcessPoolExecutor(), f, x)
 * run_in_executor wraps the concurrent.futures Future (asyncio.wrap_future,
 * Lib/asyncio/base_events.py); when a thread of the executor sets its
 * result, a done-callback calls loop.call_soon_threadsafe()
 * (_chain_future in Lib/asyncio/futures.py), which queues the callback
 * and writes a byte to the loop's self-pipe, a socketpair
 * (_write_to_self in Lib/asyncio/selector_events.py): the loop's select()
 * wakes, and the callback runs in the loop's thread.  Pool.apply_async has
 * no such bridge: its callbacks run in the pool's _result_handler thread
 * (Pool._handle_results -> ApplyResult._set in
 * Lib/multiprocessing/pool.py), never in the caller's.
 * C: this pool has no threads, so there is nothing to call across: the
 * pool gives the loop a descriptor to wait on with everything else, and
 * the loop calls mp_pool_poll() when it is readable:
 *
 *     int pfd = mp_pool_fd(pool);
 *     epoll_ctl(ep, EPOLL_CTL_ADD, pfd, &(struct epoll_event){
 *             .events = EPOLLIN, .data.fd = pfd });
 *     ... mp_pool_async_free(mp_pool_apply_async(pool, f, &x, sizeof x,
 *                                                sizeof y, done, req));
 *     for (;;) {  epoll_wait(ep, ev, 16, -1);  for each ready ev:
 *             if (ev.data.fd == pfd) mp_pool_poll(pool);  -- runs done()
 *             else ...sockets, timers, signals... }
 *
 * It is an epoll descriptor holding the pool's eventfd (written by a worker
 * that finishes a job, once per mp_pool_poll(), not once per task), the
 * pidfd of every worker (readable when one dies) and a timerfd (for the
 * rare things that send no wake-up: a worker that could not be forked).
 * libuv's uv_async_t does the same job inside libuv (an eventfd on Linux:
 * uv__async_start in src/unix/async.c). */

/* A file descriptor that becomes readable when an async call of the pool
 * (apply_async, map_async, starmap_async) has completed and its callback
 * is due, or when the pool needs the caller's attention (a worker died).
 * Level-triggered: it stays readable until mp_pool_poll() has run what is
 * due.  Owned by the pool; do not close it.  For epoll/poll/select,
 * io_uring, libuv (uv_poll).  -1 with errno (EMFILE, ENOMEM...) if it
 * cannot be made; the same descriptor on every call. */
int mp_pool_fd(struct mp_pool *pool);

/* Never blocks: do the pool's bookkeeping (collect finished calls, replace
 * dead workers) and run the callbacks of the calls completed now, in this
 * thread.  Returns how many calls completed in this call (0 on a spurious
 * wake-up), or -1 with errno.  Calls complete in any order here (a long
 * call does not hold back the callbacks of short ones submitted after
 * it).  Any other pool call may also run callbacks (see mp_pool_callback);
 * the descriptor stays right whichever call ran them. */
int mp_pool_poll(struct mp_pool *pool);

/* ---- iterators ------------------------------------------------------- */

/* Python's imap(fn, items, chunksize): submit everything at once and return
 * an iterator over the results in item order, each available as soon as it
 * and every earlier one are done (the first result can be read while later
 * tasks still run).  Python's imap chunksize default is 1, and so is
 * chunksize 0 here.  NULL with errno on failure. */
struct mp_pool_iter *mp_pool_imap(struct mp_pool *pool, mp_pool_fn fn,
				  const void *items, size_t n,
				  size_t item_size, size_t result_size,
				  size_t chunksize);

/* Python's imap_unordered(): the same, but results come in the order they
 * finish; mp_pool_next() says which item each belongs to. */
struct mp_pool_iter *mp_pool_imap_unordered(struct mp_pool *pool,
					    mp_pool_fn fn, const void *items,
					    size_t n, size_t item_size,
					    size_t result_size,
					    size_t chunksize);

/* IMapIterator.next(timeout): the next result.  Returns 1 with result_size
 * bytes copied into result (may be NULL to skip) and the item's index in
 * *index (may be NULL); 0 when every result has been delivered (Python's
 * StopIteration; every later call returns 0 too); -1 with ETIMEDOUT if
 * nothing arrived in time (call again), or -1 with the failed item's code /
 * EOWNERDEAD / ECANCELED, its index in *index and mp_pool_last_error(): as
 * in Python, the iterator then moves on to the next item. */
int mp_pool_next(struct mp_pool_iter *it, void *result, size_t *index,
		 double timeout_s);

/* Release an iterator.  Tasks still running finish in the background and
 * their results are discarded.  A NULL iterator is ignored. */
void mp_pool_iter_free(struct mp_pool_iter *it);

/* ---- shared memory: calls without copies ------------------------------ */

/* size bytes (64-byte aligned, contents undefined, like malloc) in the
 * pool's shared heap: memory shared with the workers at the same address
 * in each of them (a worker forked before the block existed maps it there
 * before its next task).  When a map's items, or its
 * results, or an apply's argument lie inside such a block, the call skips
 * the copy into (or out of) shared memory: workers read and write the block
 * itself.  Then, as with map_async's results, the caller must not change
 * the items (nor read the results) until the call has finished.  Python's
 * counterpart: multiprocessing.Array / shared_memory, used to avoid
 * pickling big data.  NULL with ENOMEM when the heap cannot grow (memory,
 * or heap_bytes reached), EINVAL for a size of 0. */
void *mp_pool_alloc(struct mp_pool *pool, size_t size);

/* Return a block to the heap (NULL is ignored; EINVAL for a pointer that
 * mp_pool_alloc() did not return, or one already freed).  The heap is a
 * stack: a block's bytes are handed out again once every block allocated
 * after it is freed too.  mp_pool_destroy() frees every block. */
int mp_pool_free(struct mp_pool *pool, void *ptr);

/* ---- inspection ------------------------------------------------------ */

/* The last failure of a call on this pool (code 0 if none yet).  The
 * pointer stays valid until the pool is destroyed; the contents change
 * with the next failure. */
const struct mp_pool_error *mp_pool_last_error(const struct mp_pool *pool);

/* Number of worker processes the pool keeps (its `processes`). */
int mp_pool_workers(const struct mp_pool *pool);

/* Store the pids of the live workers (up to max) in pids; returns how many
 * there are (which may be more than max).  A worker being replaced is not
 * listed.  For lessons and tests: kill one, read its /proc entry. */
int mp_pool_pids(const struct mp_pool *pool, pid_t *pids, int max);

/* Counters since mp_pool_create(). */
struct mp_pool_stats {
	uint64_t tasks;           /* task functions run to the end */
	uint64_t workers_started; /* including the first ones */
	uint64_t workers_retired; /* left after maxtasksperchild */
	uint64_t workers_died;    /* killed by a signal or exited early */
	uint64_t retried_items;   /* items run again after a death */
	uint64_t workers_stopped; /* stopped right now (SIGSTOP, Ctrl-Z):
				   * their chunks wait for SIGCONT */
};
void mp_pool_stats(const struct mp_pool *pool, struct mp_pool_stats *st);

#endif
