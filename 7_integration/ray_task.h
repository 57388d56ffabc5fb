/* 7_integration/ray_task.h -- the task both halves of ray_comparison run
 *
 * ray_comparison.c (on mp_pool) and ray_comparison_mpi.c (MPI ranks) are
 * separate programs; the driver checks every result the ranks send back
 * against this same function, so it lives here, once.
 */
#ifndef RAY_TASK_H
#define RAY_TASK_H

#include <stdint.h>

/* Task i: `work` xorshift64 steps from a value made of i (work 0: the
 * value itself, for a bare dispatch). */
static inline uint64_t task_value(int64_t i, int64_t work)
{
	uint64_t x = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15u;

	for (int64_t k = 0; k < work; k++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return x;
}

#endif
