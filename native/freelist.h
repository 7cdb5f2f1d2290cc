/* freelist.h - free page ids: reusable now (`ids`) or pending per txid. */
#ifndef BOLTIMAGES_FREELIST_H
#define BOLTIMAGES_FREELIST_H

#include <stddef.h>
#include <stdint.h>

#include "page.h"

typedef struct pending_list {
    uint64_t txid;
    uint64_t *ids;
    size_t n, cap;
} pending_list;

typedef struct freelist {
    uint64_t *ids;            /* sorted, no duplicates: ids[head .. head + n) */
    size_t head, n, cap;
    pending_list *pend;       /* ascending txid */
    size_t npend, cappend;
} freelist;

void fl_init(freelist *f);
void fl_destroy(freelist *f);
size_t fl_free_count(const freelist *f);
size_t fl_pending_count(const freelist *f);
/* First id of a run of n free pages, removed from the list; 0 when none. */
uint64_t fl_allocate(freelist *f, size_t n);
/* Take exactly the pages [first, first + n) if all of them are free: 1 when
 * taken, 0 (and nothing changes) otherwise. */
int fl_take_run(freelist *f, uint64_t first, size_t n);
/* The shortest run of at least `want` contiguous free pages (best fit, so
 * long runs stay whole for multi-page nodes): 1 with its first id in
 * *start, 0 when there is none. Nothing is taken. */
int fl_find_run(const freelist *f, size_t want, uint64_t *start);
/* How many free ids follow `start` consecutively (start included), at most
 * `max`; 0 when `start` is not free. */
size_t fl_run_length(const freelist *f, uint64_t start, size_t max);
/* Page `pgid` and its overflow pages become pending for txid. */
int fl_free(freelist *f, uint64_t txid, uint64_t pgid, uint32_t overflow);
/* Pending lists of txids <= max_txid become reusable. */
int fl_release(freelist *f, uint64_t max_txid);
/* Drop the pending list of txid (its frees never happened). */
void fl_drop_pending(freelist *f, uint64_t txid);
/* Give back ids (sorted or not) handed out by fl_allocate. */
int fl_give_back(freelist *f, uint64_t *ids, size_t n);
/* Give back the pages [first, first + n) handed out by fl_allocate/fl_take_run. */
int fl_give_back_run(freelist *f, uint64_t first, size_t n);
/* Replace the free ids by `ids` (takes ownership; any order). */
int fl_set(freelist *f, uint64_t *ids, size_t n);
/* Load a freelist page; ids must be in [2, pgid_limit). */
int fl_read(freelist *f, const bpage *p, uint64_t pgid_limit);
/* Bytes the page image needs for every free and pending id. */
size_t fl_page_bytes(const freelist *f);
/* Write the page image (header flags/count + ids); buf holds fl_page_bytes. */
int fl_write(const freelist *f, uint8_t *buf);
/* Sort/dedupe the pending list of txid; -1 (and the id) on a duplicate. */
int fl_check_pending(freelist *f, uint64_t txid, uint64_t *dup);
int fl_is_free(const freelist *f, uint64_t pgid);

#endif
