/* lib/mp.h -- the playground's small library, in one include
 *
 * The C counterpart of "import multiprocessing as mp": lessons include this
 * and get the libc, POSIX and pthread headers they use, plus lib/'s helpers.
 * A lesson still makes the calls it teaches itself; the helpers cover what
 * is incidental to it (errors, narration, options, timing) or was taught in
 * an earlier chapter.
 */
#ifndef MP_H
#define MP_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mp_hmac.h"
#include "mp_plot.h"
#include "mp_pool.h"
#include "mp_queue.h"
#include "mp_shm.h"
#include "mp_util.h"

#endif
