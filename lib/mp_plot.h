/* lib/mp_plot.h -- a benchmark's table as CSV, and as a chart through gnuplot
 *
 * Every benchmark lesson ends with a table of numbers: one x column (workers,
 * bytes, chunksize) and one or more y columns (seconds, speedup, KiB).  This
 * helper keeps such a table, prints it as CSV for machines (--csv), and hands
 * it to the gnuplot program through a pipe for people (--plot): gnuplot's
 * "dumb" terminal draws it with characters on our stdout, or its svg / png
 * terminal writes a file (--plot FILE.svg).  gnuplot is optional (Debian:
 * gnuplot-nox); it is looked for at configure time, and without it --plot
 * prints one line that says how to get it -- the CSV works all the same.
 *
 * The script handed to gnuplot carries the data inline (a "$data << EOD"
 * block), so no temporary file is made and nothing is left behind.
 *
 * Functions that can fail return 0 / -1 with errno set.
 */
#ifndef MP_PLOT_H
#define MP_PLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum { MP_TABLE_MAXCOLS = 16 };

/* A table: column 0 is x, the others are lines on the chart.  A cell that
 * holds NAN is missing (an empty CSV field; gnuplot skips the point). */
struct mp_table {
	const char *title;                      /* the chart's title */
	const char *ylabel;                     /* y axis; x is cols[0] */
	const char *cols[MP_TABLE_MAXCOLS];     /* column names */
	int ncols;
	bool logx, logy;                        /* logarithmic axes */
	/* Categories instead of numbers on x (mechanisms, pairs of CPUs):
	 * when set, row r's x is written as names[r] -- no comma in it --
	 * and the chart is a bar chart, one bar per column in each group.
	 * The caller keeps the names alive while the table is used. */
	const char *const *xnames;
	size_t nrows, cap;
	double *cells;                          /* nrows x ncols, row-major */
};

/* Start a table.  cols is the column names separated by commas ("workers,
 * processes,threads"); the names point into a copy the table keeps.  Returns
 * NULL with errno set (EINVAL: no column or more than MP_TABLE_MAXCOLS). */
struct mp_table *mp_table_new(const char *title, const char *ylabel,
			      const char *cols);

/* Append one row of t->ncols values. */
int mp_table_add(struct mp_table *t, const double *row);

void mp_table_free(struct mp_table *t);

/* The table as CSV on f: the header, then one line per row ("%.6g" per
 * cell, empty for NAN). */
int mp_table_csv(const struct mp_table *t, FILE *f);

/* The gnuplot script that draws the table on f: to the terminal (out NULL
 * or "") or into out, whose name ends in .svg or .png (EINVAL otherwise). */
int mp_table_script(const struct mp_table *t, const char *out, FILE *f);

/* Draw the table with the gnuplot found at configure time: see
 * mp_plot_with(). */
int mp_plot(const struct mp_table *t, const char *out);

/* Draw the table with the gnuplot program at path: fork, exec gnuplot with a
 * pipe on its stdin, write the script, wait (at most 10 s, then it is
 * killed).  With path NULL (no gnuplot), print one line on stdout saying how
 * to install it and return -1 with ENOENT.  A drawing in the terminal goes to
 * our stdout; out names a file otherwise (see mp_table_script). */
int mp_plot_with(const struct mp_table *t, const char *out, const char *path);

/* Path of the gnuplot found at configure time, or NULL. */
const char *mp_gnuplot(void);

/* Take "--plot", "--plot FILE" or "--plot=FILE" out of argv, before
 * mp_parse_options() sees it (--plot's value is optional, which that parser
 * does not do).  Returns NULL when there is none, "" for the terminal, or
 * FILE; a FILE that does not end in .svg or .png is a usage error (one line
 * on stderr, exit 2).  A lesson also lists "plot" as a flag in its options,
 * so that --help shows it. */
const char *mp_plot_option(int *argc, char *argv[]);

#endif
