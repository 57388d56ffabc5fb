/* 7_integration/ray_comparison_mpi.c -- ray_comparison's workload as MPI
 * ranks: rank 0 is the driver, rank 1 the actor, the others run tasks
 *
 * Started by ray_comparison (mpirun -np N ray_comparison_mpi --tasks T
 * --work W), or by hand:
 *   mpirun -np 4 --oversubscribe build/7_integration/ray_comparison_mpi
 *   mpirun -np 8 --hostfile hosts build/7_integration/ray_comparison_mpi
 * Ray:     refs = [f.remote(i) for i in range(T)]   # remote tasks
 *          actor = Summer.remote(); actor.add.remote(v); actor.state.remote()
 * MPI:     there is no scheduler: the driver hands out task i to whichever
 *          worker answered last (MPI_Recv from MPI_ANY_SOURCE, then MPI_Send
 *          the next index to that rank): dynamic load balancing by hand.
 *          The actor is a rank that owns the state and serves messages one
 *          at a time, which is all a Ray actor is.  Messages between two
 *          ranks never overtake each other (MPI's ordering rule), so a
 *          worker's "done" reaches the actor after all its "add"s.
 * Output:  CSV lines for ray_comparison to parse (no header):
 *          mpi,ranks,<ranks>,<hosts>
 *          mpi,latency,<task round trip us>,<actor call us>
 *          mpi,tasks,<tasks>,<seconds>,<checksum>,<indices answered once>
 *          mpi,actor,<count>,<sum>
 *          or "mpi,stuck,<seconds>" and exit 3 when the driver waited that
 *          long for a message that never came.
 */
#include "ray_task.h"

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DRIVER = 0, ACTOR = 1, FIRST_WORKER = 2, PINGS = 200 };
enum { TASK = 1, RESULT, PING, PONG, STOP, ADD, GET, STATE, DONE, FINAL };

/* Open MPI keeps some memory until the process ends, on purpose;
 * LeakSanitizer (the asan build) would call that a leak and fail the rank. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "detect_leaks=0";
}

static void check(int rc, const char *what)
{
	if (rc != MPI_SUCCESS) {
		fprintf(stderr, "ray_comparison_mpi: %s failed\n", what);
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
}

/* The driver's receive, bounded: a message that has not come after `quiet`
 * seconds never will (a rank lost a task or a DONE).  Then it says so and
 * aborts every rank, instead of waiting for mpirun's caller to kill it. */
static void recv_bounded(void *buf, int count, MPI_Datatype type, int from,
			 int tag, MPI_Status *st, double quiet)
{
	double t0 = MPI_Wtime();
	int flag = 0;

	for (;;) {
		check(MPI_Iprobe(from, tag, MPI_COMM_WORLD, &flag, st),
		      "MPI_Iprobe");
		if (flag)
			break;
		if (MPI_Wtime() - t0 > quiet) {
			printf("mpi,stuck,%.1f\n", quiet);
			fflush(stdout);
			MPI_Abort(MPI_COMM_WORLD, 3);
		}
	}
	check(MPI_Recv(buf, count, type, st->MPI_SOURCE, st->MPI_TAG,
		       MPI_COMM_WORLD, st), "driver recv");
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* A worker: run tasks until STOP; report each value to the actor too. */
static void worker(int64_t work)
{
	MPI_Status st;
	int64_t msg[2];  /* index, value */

	for (;;) {
		check(MPI_Recv(msg, 2, MPI_INT64_T, DRIVER, MPI_ANY_TAG,
			       MPI_COMM_WORLD, &st), "worker recv");
		if (st.MPI_TAG == STOP)
			break;
		if (st.MPI_TAG == PING) {  /* latency probe: an empty task */
			msg[1] = (int64_t)task_value(msg[0], 0);
			check(MPI_Send(msg, 2, MPI_INT64_T, DRIVER, PONG,
				       MPI_COMM_WORLD), "send pong");
			continue;
		}
		msg[1] = (int64_t)task_value(msg[0], work);
		check(MPI_Send(&msg[1], 1, MPI_INT64_T, ACTOR, ADD,
			       MPI_COMM_WORLD), "send add");
		check(MPI_Send(msg, 2, MPI_INT64_T, DRIVER, RESULT,
			       MPI_COMM_WORLD), "send result");
	}
	check(MPI_Send(msg, 0, MPI_INT64_T, ACTOR, DONE, MPI_COMM_WORLD),
	      "send done");
}

/* The actor: state that only this rank touches, one message at a time.
 * FINAL is answered once every worker said DONE (all adds are in). */
static void actor(int workers)
{
	uint64_t state[2] = { 0, 0 };  /* count, sum */
	int done = 0, final_from = -1;
	MPI_Status st;
	int64_t v;

	while (done < workers || final_from < 0) {
		check(MPI_Recv(&v, 1, MPI_INT64_T, MPI_ANY_SOURCE, MPI_ANY_TAG,
			       MPI_COMM_WORLD, &st), "actor recv");
		if (st.MPI_TAG == ADD) {
			state[0]++;
			state[1] += (uint64_t)v;
		} else if (st.MPI_TAG == GET) {
			check(MPI_Send(state, 2, MPI_UINT64_T, st.MPI_SOURCE,
				       STATE, MPI_COMM_WORLD), "send state");
		} else if (st.MPI_TAG == DONE) {
			done++;
		} else if (st.MPI_TAG == FINAL) {
			final_from = st.MPI_SOURCE;
		}
	}
	check(MPI_Send(state, 2, MPI_UINT64_T, final_from, STATE,
		       MPI_COMM_WORLD), "send final state");
}

/* Median microseconds of PINGS round trips to rank `to`. */
static double round_trip(int to, int tag, int reply)
{
	double t[PINGS];
	int64_t msg[2] = { 0, 0 };
	uint64_t state[2];

	for (int k = 0; k < PINGS; k++) {
		double t0 = MPI_Wtime();

		check(MPI_Send(msg, tag == PING ? 2 : 1, MPI_INT64_T, to, tag,
			       MPI_COMM_WORLD), "send probe");
		check(MPI_Recv(tag == PING ? (void *)msg : (void *)state, 2,
			       tag == PING ? MPI_INT64_T : MPI_UINT64_T, to,
			       reply, MPI_COMM_WORLD, MPI_STATUS_IGNORE),
		      "recv probe");
		t[k] = (MPI_Wtime() - t0) * 1e6;
	}
	qsort(t, PINGS, sizeof *t, cmp_double);
	return t[PINGS / 2];
}

/* The driver: probes, then every task handed out one at a time to
 * whichever worker is free, then the actor's final state. */
static void driver(int64_t tasks, int64_t work, int size)
{
	double quiet = 3 + (double)work * 1e-8;  /* > a task, 10 ns a step */
	uint64_t *value = calloc((size_t)tasks, sizeof *value);
	unsigned char *seen = calloc((size_t)tasks, 1);
	int64_t next = 0, got = 0, msg[2];
	uint64_t state[2], checksum = 0;
	MPI_Status st;

	if (!value || !seen) {
		fprintf(stderr, "ray_comparison_mpi: out of memory\n");
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	double task_us = round_trip(FIRST_WORKER, PING, PONG);
	double actor_us = round_trip(ACTOR, GET, STATE);
	double t0 = MPI_Wtime();

	for (int w = FIRST_WORKER; w < size; w++) {  /* one task each */
		int tag = next < tasks ? TASK : STOP;

		msg[0] = next < tasks ? next++ : 0;
		check(MPI_Send(msg, 2, MPI_INT64_T, w, tag, MPI_COMM_WORLD),
		      "send first");
	}
	while (got < tasks) {
		recv_bounded(msg, 2, MPI_INT64_T, MPI_ANY_SOURCE, RESULT, &st,
			     quiet);
		got++;
		if (msg[0] >= 0 && msg[0] < tasks) {
			value[msg[0]] = (uint64_t)msg[1];
			seen[msg[0]]++;
		}
		int tag = next < tasks ? TASK : STOP;

		msg[0] = next < tasks ? next++ : 0;
		check(MPI_Send(msg, 2, MPI_INT64_T, st.MPI_SOURCE, tag,
			       MPI_COMM_WORLD), "send next");
	}
	double secs = MPI_Wtime() - t0;

	check(MPI_Send(msg, 1, MPI_INT64_T, ACTOR, FINAL, MPI_COMM_WORLD),
	      "send final");
	recv_bounded(state, 2, MPI_UINT64_T, ACTOR, STATE, &st, quiet);
	int64_t once = 0;

	for (int64_t i = 0; i < tasks; i++) {
		checksum += value[i] * (uint64_t)(2 * i + 1);
		once += seen[i] == 1;
	}
	printf("mpi,latency,%.3f,%.3f\n", task_us, actor_us);
	printf("mpi,tasks,%lld,%.6f,%llu,%lld\n", (long long)tasks, secs,
	       (unsigned long long)checksum, (long long)once);
	printf("mpi,actor,%llu,%llu\n", (unsigned long long)state[0],
	       (unsigned long long)state[1]);
	free(value);
	free(seen);
}

int main(int argc, char *argv[])
{
	int64_t tasks = 20000, work = 100;
	int rank, size;

	for (int i = 1; i + 1 < argc; i += 2) {  /* set by ray_comparison */
		char *end;
		long long v = strtoll(argv[i + 1], &end, 10);

		if (*end || v < 0 || (strcmp(argv[i], "--tasks") &&
				      strcmp(argv[i], "--work"))) {
			fprintf(stderr, "ray_comparison_mpi: usage: "
					"[--tasks N] [--work N]\n");
			return 2;
		}
		*(strcmp(argv[i], "--tasks") ? &work : &tasks) = v;
	}
	check(MPI_Init(&argc, &argv), "MPI_Init");
	check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
	check(MPI_Comm_size(MPI_COMM_WORLD, &size), "MPI_Comm_size");
	if (size < 3) {
		if (rank == 0)
			fprintf(stderr, "ray_comparison_mpi: needs 3 ranks or "
					"more (driver, actor, workers)\n");
		MPI_Finalize();
		return 2;
	}

	/* Where the ranks run: one name per rank, gathered on the driver. */
	char name[MPI_MAX_PROCESSOR_NAME] = "", *all = NULL;
	int len;

	check(MPI_Get_processor_name(name, &len), "MPI_Get_processor_name");
	if (rank == DRIVER && !(all = calloc((size_t)size, sizeof name)))
		MPI_Abort(MPI_COMM_WORLD, 1);
	check(MPI_Gather(name, sizeof name, MPI_CHAR, all, sizeof name,
			 MPI_CHAR, DRIVER, MPI_COMM_WORLD), "MPI_Gather");
	if (rank == DRIVER) {
		int hosts = 0;

		for (int r = 0; r < size; r++) {
			int first = 1;

			for (int q = 0; q < r && first; q++)
				first = strcmp(all + (size_t)r * sizeof name,
					       all + (size_t)q * sizeof name);
			hosts += first != 0;
		}
		printf("mpi,ranks,%d,%d\n", size, hosts);
		free(all);
		driver(tasks, work, size);
	} else if (rank == ACTOR) {
		actor(size - FIRST_WORKER);
	} else {
		worker(work);
	}
	fflush(stdout);
	check(MPI_Finalize(), "MPI_Finalize");
	return 0;
}
