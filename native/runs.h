/* runs.h - a commit's pages taken as few contiguous runs (see runs.c). */
#ifndef BOLTIMAGES_RUNS_H
#define BOLTIMAGES_RUNS_H

#include <stdint.h>

struct bolt_tx;
struct bolt_db;
struct node;

/* Pages of the last few commits, remembered to tell a hot node (rewritten
 * every commit or every few: bucket roots and branches near the top of the
 * tree, the freelist) from a cold one (a leaf deep in a large bucket, or a
 * record's own page, written again only when a change lands on it). */
#define RUN_RECENT_MAX 64u
#define RUN_RECENT_COMMITS 32u
typedef struct run_commit {
    uint64_t ids[RUN_RECENT_MAX]; /* first page id of each page the commit wrote, ascending */
    size_t n;
} run_commit;
typedef struct run_memory {
    run_commit last[RUN_RECENT_COMMITS]; /* a ring; `newest` is the last commit */
    unsigned newest;
    int overflow;                 /* the last commit wrote more pages than ids[] holds */
    uint64_t hot_pages;           /* pages the last commit took from its runs */
} run_memory;

/* Where a node's new page should come from. */
enum run_place { RUN_PLACE_RUN, RUN_PLACE_SINGLE };
/* RUN_PLACE_RUN for a leaf node read from a page the last commit wrote,
 * a branch node read from a page one of the last RUN_RECENT_COMMITS
 * commits wrote, or any node after a commit too big to remember; new nodes
 * and the rest take their pages alone. */
enum run_place run_place_for(const struct bolt_tx *tx, const struct node *n);
/* After a commit's pages are written (tx->dirty sorted by id). */
void run_remember(struct bolt_db *db, const struct bolt_tx *tx);

/* Before spilling: estimate the commit's pages and take a first run. */
void run_begin(struct bolt_tx *tx);
/* Serve npages from the runs: 1 with *id set, 0 when the caller must
 * allocate as usual (no run, or no run can be had for this many pages). */
int run_take(struct bolt_tx *tx, uint64_t npages, uint64_t *id);
/* After the commit's last allocation: give back what the run did not use. */
int run_finish(struct bolt_tx *tx);

#endif
