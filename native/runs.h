/* runs.h - a commit's pages taken as few contiguous runs (see runs.c). */
#ifndef BOLTIMAGES_RUNS_H
#define BOLTIMAGES_RUNS_H

#include <stdint.h>

struct bolt_tx;

/* Before spilling: estimate the commit's pages and take a first run. */
void run_begin(struct bolt_tx *tx);
/* Serve npages from the runs: 1 with *id set, 0 when the caller must
 * allocate as usual (no run, or no run can be had for this many pages). */
int run_take(struct bolt_tx *tx, uint64_t npages, uint64_t *id);
/* After the commit's last allocation: give back what the run did not use. */
int run_finish(struct bolt_tx *tx);

#endif
