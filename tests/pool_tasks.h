/* tests/pool_tasks.h -- tasks that several pool suites hand to mp_pool
 *
 * Task functions in the pool's form (int fn(const void *arg, void *result),
 * 0 on success), inline so that a suite may use only some.  Include it in
 * the suite's .c file after mp.h.
 */
#ifndef POOL_TASKS_H
#define POOL_TASKS_H

#include <stdint.h>
#include <time.h>

/* result = x * x + 1 (the + 1: a zeroed result is never right) */
static inline int square(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	*(int64_t *)result = x * x + 1;
	return 0;
}

/* Sleep the milliseconds given (however often a signal cuts the sleep
 * short), return them. */
static inline int nap(const void *arg, void *result)
{
	long ms = *(const long *)arg;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1)
		;
	*(long *)result = ms;
	return 0;
}

#endif
