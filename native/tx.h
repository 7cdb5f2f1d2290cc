/* tx.h - transactions: snapshot, page access, allocation, arena. */
#ifndef BOLTIMAGES_TX_H
#define BOLTIMAGES_TX_H

#include <pthread.h>
#include <stdint.h>

#include "bolt.h"
#include "db.h"
#include "meta.h"
#include "node.h"
#include "page.h"

typedef struct dirty_page {
    uint64_t pgid;
    uint64_t npages;
    uint8_t *buf;
} dirty_page;

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    uint8_t data[];
} arena_chunk;

struct bolt_tx {
    bolt_db *db;
    pthread_mutex_t mu;         /* taken by every call on the tx, its buckets and cursors */
    int writable, closed, failed;
    int commit_failed;          /* closed by a failed commit: a later rollback is a no-op */
    int refs;                   /* guarded by db->mu: handle + bolt_close in progress */
    bmeta meta;                 /* snapshot; a write tx holds its own txid here */
    bmap *map;
    uint32_t ps;
    uint64_t pgid;              /* high water mark as this tx sees it */
    uint64_t mod_seq;           /* bumped by every change; cursors re-seek on mismatch */
    struct bolt_bucket *root;
    struct bolt_bucket *buckets;/* every handle, for freeing */
    node **nodes;
    size_t nnodes, capnodes;
    node **unbalanced;
    size_t nunbalanced, capunbalanced;
    dirty_page *dirty;
    size_t ndirty, capdirty;
    uint64_t *allocs;           /* ids taken from the freelist, given back on rollback */
    /* The commit's current run of pages [run_next, run_end), served in
     * order by tx_allocate (see runs.c); run_alloc is its entry in allocs,
     * or SIZE_MAX when it was taken from the end of the file; run_want is
     * how many more pages the commit is expected to take, run_served how
     * many it has taken from runs so far. */
    uint64_t run_next, run_end, run_want, run_served;
    size_t run_alloc;
    int run_active;
    size_t nallocs, capallocs;
    arena_chunk *arena;
    uint64_t *freed;            /* hash set of pages freed by this tx: a page reached */
    size_t nfreed, capfreed;    /* twice (corrupt, shared subtree) is an error, not a loop */
    struct bolt_tx *next_open, *prev_open;
};

/* Load page pgid as this tx sees it, checking id range, span and file bounds. */
int tx_page(bolt_tx *tx, uint64_t pgid, bpage *out);
/* Same, and the page must be a branch or a leaf (a B+tree page). */
int tx_tree_page(bolt_tx *tx, uint64_t pgid, bpage *out);
/* A new dirty page of npages; place says whether it may come from the
 * commit's runs (see runs.h). */
int tx_allocate(bolt_tx *tx, uint64_t npages, enum run_place place, dirty_page **out);
/* Record pages taken from the freelist (given back on rollback); *index
 * (if not NULL) is where the record sits in tx->allocs. */
int tx_note_alloc(bolt_tx *tx, uint64_t id, uint64_t npages, size_t *index);
int tx_free_page(bolt_tx *tx, uint64_t pgid);
void *tx_arena(bolt_tx *tx, size_t n);
int tx_track_node(bolt_tx *tx, node *n);
int tx_mark_unbalanced(bolt_tx *tx, node *n);
/* Record `rc` on a write tx: real failures poison it. Returns rc. */
int tx_fail(bolt_tx *tx, int rc);
/* Entry check of every call: open, and (if write) writable and healthy. */
int tx_enter(bolt_tx *tx, int write);
void tx_leave(bolt_tx *tx);
int tx_rollback_locked(bolt_tx *tx);
/* Free what an ended tx kept for readers of its bolt_kv results: the
 * arena and its mapping reference. Only from bolt_tx_free's last reference. */
void tx_free_retained(bolt_tx *tx);
int tx_commit_locked(bolt_tx *tx);
/* bolt_tx_commit with tx->mu already held: a failed commit rolls back. */
int tx_commit_or_rollback_locked(bolt_tx *tx);

/* Bytes of a cache line, the step of page prefetch hints. */
#define TX_CACHE_LINE 64u

/* Hint the first `bytes` of page pgid into the cache, ahead of a read that
 * waits on memory. Only a hint: a page outside this tx's snapshot or past
 * the mapping is simply not prefetched. */
static inline void tx_prefetch_page(const bolt_tx *tx, uint64_t pgid, size_t bytes)
{
    uint64_t ps = tx->ps;
    if (pgid < 2 || pgid >= tx->meta.pgid || (pgid + 1) * ps > tx->map->len)
        return;
    const uint8_t *base = tx->map->data + pgid * ps;
    size_t span = ps < bytes ? ps : bytes;
    for (size_t off = 0; off < span; off += TX_CACHE_LINE)
        __builtin_prefetch(base + off);
}

#endif
