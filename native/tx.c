/*
 * tx.c - transactions. A read tx is a meta snapshot plus a reference on the
 * mapping it began with. A write tx additionally owns in-memory nodes, an
 * arena for copied keys/values, and dirty page buffers that reach the file
 * only at commit, in bbolt's order: data pages, sync, meta, sync.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bucket.h"
#include "err.h"
#include "runs.h"
#include "tx.h"

#define ARENA_CHUNK (256u * 1024u)
#define ARENA_BIG (32u * 1024u)

int tx_fail(bolt_tx *tx, int rc)
{
    if (tx && tx->writable && (rc == BOLT_ERR_IO || rc == BOLT_ERR_CORRUPT || rc == BOLT_ERR_NOMEM))
        tx->failed = 1;
    return rc;
}

int tx_enter(bolt_tx *tx, int write)
{
    if (!tx)
        return set_err(BOLT_ERR_INVALID_ARG, "no transaction");
    pthread_mutex_lock(&tx->mu);
    if (tx->closed) {
        pthread_mutex_unlock(&tx->mu);
        return set_err(BOLT_ERR_TX_CLOSED, "transaction is closed");
    }
    if (write) {
        if (!tx->writable) {
            pthread_mutex_unlock(&tx->mu);
            if (tx->db->read_only)
                return set_err(BOLT_ERR_DB_READ_ONLY, "database is opened read-only");
            return set_err(BOLT_ERR_TX_NOT_WRITABLE, "transaction is read-only");
        }
        if (tx->failed) {
            pthread_mutex_unlock(&tx->mu);
            return set_err(BOLT_ERR_TX_FAILED, "an earlier error poisoned this write transaction; roll it back");
        }
    }
    return BOLT_OK;
}

void tx_leave(bolt_tx *tx) { pthread_mutex_unlock(&tx->mu); }

int tx_page(bolt_tx *tx, uint64_t pgid, bpage *out)
{
    uint64_t ps = tx->ps;
    uint64_t limit = tx->meta.pgid; /* pages this snapshot may reference */
    if (pgid >= limit)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: beyond the high water mark %llu",
                                   (unsigned long long)pgid, (unsigned long long)limit));
    if ((pgid + 1) * ps > tx->map->len)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: beyond the end of the file",
                                   (unsigned long long)pgid));
    const uint8_t *data = tx->map->data + pgid * ps;
    page_header(data, ps, out);
    if (out->id != pgid)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: header names page %llu",
                                   (unsigned long long)pgid, (unsigned long long)out->id));
    uint64_t last = pgid + (uint64_t)out->overflow;
    if (last >= limit || (last + 1) * ps > tx->map->len)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: overflow %u runs past the end of the data",
                                   (unsigned long long)pgid, out->overflow));
    out->span = (size_t)((out->overflow + 1ull) * ps);
    return BOLT_OK;
}

int tx_tree_page(bolt_tx *tx, uint64_t pgid, bpage *out)
{
    if (pgid < 2)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: a meta page referenced as a tree page",
                                   (unsigned long long)pgid));
    int rc = tx_page(tx, pgid, out);
    if (rc)
        return rc;
    if (out->flags != PAGE_FLAG_BRANCH && out->flags != PAGE_FLAG_LEAF)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: invalid type: %s (flags 0x%x), expected branch or leaf",
                                   (unsigned long long)pgid, page_type_name(out->flags), out->flags));
    if (out->flags == PAGE_FLAG_BRANCH && out->count == 0)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: branch page with no elements",
                                   (unsigned long long)pgid));
    size_t need = PAGE_HEADER_SIZE + (size_t)out->count * LEAF_ELEM_SIZE;
    if (need > out->span)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: %u elements do not fit in the page",
                                   (unsigned long long)pgid, out->count));
    return BOLT_OK;
}

static int grow(bolt_tx *tx, void **arr, size_t *cap, size_t need, size_t elsize)
{
    if (need <= *cap)
        return BOLT_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *n = realloc(*arr, nc * elsize);
    if (!n)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
    *arr = n;
    *cap = nc;
    return BOLT_OK;
}

int tx_note_alloc(bolt_tx *tx, uint64_t id, uint64_t npages, size_t *index)
{
    int rc = grow(tx, (void **)&tx->allocs, &tx->capallocs, tx->nallocs + 2, sizeof *tx->allocs);
    if (rc)
        return rc;
    if (index)
        *index = tx->nallocs;
    tx->allocs[tx->nallocs++] = id;
    tx->allocs[tx->nallocs++] = npages;
    return BOLT_OK;
}

int tx_allocate(bolt_tx *tx, uint64_t npages, enum run_place place, dirty_page **out)
{
    bolt_db *db = tx->db;
    if (npages == 0 || npages > (1ull << 32))
        return tx_fail(tx, set_err(BOLT_ERR_INVALID_ARG, "cannot allocate %llu pages", (unsigned long long)npages));
    int rc = grow(tx, (void **)&tx->dirty, &tx->capdirty, tx->ndirty + 1, sizeof *tx->dirty);
    if (rc)
        return rc;
    if ((rc = grow(tx, (void **)&tx->allocs, &tx->capallocs, tx->nallocs + 2, sizeof *tx->allocs)))
        return rc;
    uint8_t *buf = calloc((size_t)npages, tx->ps);
    if (!buf)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory for %llu dirty pages", (unsigned long long)npages));
    uint64_t id = 0;
    if (place != RUN_PLACE_RUN || !run_take(tx, npages, &id)) {
        pthread_mutex_lock(&db->mu);
        id = fl_allocate(&db->fl, (size_t)npages);
        pthread_mutex_unlock(&db->mu);
        if (id)
            (void)tx_note_alloc(tx, id, npages, NULL); /* cannot fail: room was made above */
    }
    /* A page meant to go alone that the freelist cannot give comes from
     * the end of the file; while a run sits there, it must come through
     * the run, which owns the end until the commit gives it back. */
    if (!id && place != RUN_PLACE_RUN)
        (void)run_take(tx, npages, &id);
    if (!id) {
        id = tx->pgid;
        if (id + npages > (UINT64_MAX / tx->ps) / 2) {
            free(buf);
            return tx_fail(tx, set_err(BOLT_ERR_INVALID_ARG, "database would exceed the maximum size"));
        }
        tx->pgid += npages;
    }
    put64(buf + PAGE_OFF_ID, id);
    put32(buf + PAGE_OFF_OVERFLOW, (uint32_t)(npages - 1));
    dirty_page *d = &tx->dirty[tx->ndirty++];
    d->pgid = id;
    d->npages = npages;
    d->buf = buf;
    *out = d;
    return BOLT_OK;
}

/* Remember pgid as freed by this tx; -1 if it already was. */
static int freed_insert(bolt_tx *tx, uint64_t pgid)
{
    if (tx->nfreed * 2 >= tx->capfreed) {
        size_t nc = tx->capfreed ? tx->capfreed * 2 : 256;
        uint64_t *nf = calloc(nc, sizeof *nf);
        if (!nf)
            return -2;
        for (size_t i = 0; i < tx->capfreed; i++) {
            uint64_t v = tx->freed[i];
            if (!v)
                continue;
            size_t j = (size_t)(v * 0x9E3779B97F4A7C15ull) & (nc - 1);
            while (nf[j])
                j = (j + 1) & (nc - 1);
            nf[j] = v;
        }
        free(tx->freed);
        tx->freed = nf;
        tx->capfreed = nc;
    }
    size_t mask = tx->capfreed - 1;
    for (size_t j = (size_t)(pgid * 0x9E3779B97F4A7C15ull) & mask;; j = (j + 1) & mask) {
        if (tx->freed[j] == pgid)
            return -1;
        if (!tx->freed[j]) {
            tx->freed[j] = pgid; /* page ids freed are >= 2, so 0 means empty */
            tx->nfreed++;
            return 0;
        }
    }
}

int tx_free_page(bolt_tx *tx, uint64_t pgid)
{
    bpage p;
    int rc = tx_page(tx, pgid, &p);
    if (rc)
        return rc;
    int seen = pgid >= 2 ? freed_insert(tx, pgid) : 0;
    if (seen == -2)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
    if (seen == -1)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: multiple references (freed twice in one transaction)",
                                   (unsigned long long)pgid));
    pthread_mutex_lock(&tx->db->mu);
    rc = fl_free(&tx->db->fl, tx->meta.txid, pgid, p.overflow);
    pthread_mutex_unlock(&tx->db->mu);
    return tx_fail(tx, rc);
}

void *tx_arena(bolt_tx *tx, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    arena_chunk *c = tx->arena;
    if (n >= ARENA_BIG) {
        arena_chunk *big = malloc(sizeof *big + n);
        if (!big)
            return NULL;
        big->used = big->cap = n;
        if (c) {
            big->next = c->next;
            c->next = big;
        } else {
            big->next = NULL;
            tx->arena = big;
        }
        return big->data;
    }
    if (!c || c->cap - c->used < n) {
        arena_chunk *nc = malloc(sizeof *nc + ARENA_CHUNK);
        if (!nc)
            return NULL;
        nc->used = 0;
        nc->cap = ARENA_CHUNK;
        nc->next = c;
        tx->arena = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

int tx_track_node(bolt_tx *tx, node *n)
{
    int rc = grow(tx, (void **)&tx->nodes, &tx->capnodes, tx->nnodes + 1, sizeof *tx->nodes);
    if (rc)
        return rc;
    tx->nodes[tx->nnodes++] = n;
    return BOLT_OK;
}

int tx_mark_unbalanced(bolt_tx *tx, node *n)
{
    if (n->unbalanced)
        return BOLT_OK;
    int rc = grow(tx, (void **)&tx->unbalanced, &tx->capunbalanced, tx->nunbalanced + 1, sizeof *tx->unbalanced);
    if (rc)
        return rc;
    n->unbalanced = 1;
    tx->unbalanced[tx->nunbalanced++] = n;
    return BOLT_OK;
}

/* Free a growable array and zero its count and capacity, so a later grow()
 * starts from nothing. */
static void drop_array(void **arr, size_t *n, size_t *cap)
{
    free(*arr);
    *arr = NULL;
    *n = *cap = 0;
}

/* Drop what the tx built in memory. Bucket handles survive until
 * bolt_tx_free so that late calls can report TX_CLOSED; so do the arena and
 * the mapping (tx_free_retained), because a bolt_kv handed out earlier may
 * point into them and its reader may be copying it on another thread while
 * a commit, rollback or bolt_close ends the tx. Node and dirty page memory
 * can go now: no bolt_kv points into it. */
static void tx_release_memory(bolt_tx *tx)
{
    for (size_t i = 0; i < tx->nnodes; i++) {
        free(tx->nodes[i]->in);
        free(tx->nodes[i]);
    }
    drop_array((void **)&tx->nodes, &tx->nnodes, &tx->capnodes);
    drop_array((void **)&tx->unbalanced, &tx->nunbalanced, &tx->capunbalanced);
    for (size_t i = 0; i < tx->ndirty; i++)
        free(tx->dirty[i].buf);
    drop_array((void **)&tx->dirty, &tx->ndirty, &tx->capdirty);
    drop_array((void **)&tx->allocs, &tx->nallocs, &tx->capallocs);
    drop_array((void **)&tx->freed, &tx->nfreed, &tx->capfreed);
    /* Only a write tx materialises nodes; a reader's handles never point at one. */
    if (tx->writable)
        for (struct bolt_bucket *b = tx->buckets; b; b = b->next_all)
            b->root_node = NULL;
}

void tx_free_retained(bolt_tx *tx)
{
    while (tx->arena) {
        arena_chunk *n = tx->arena->next;
        free(tx->arena);
        tx->arena = n;
    }
    pthread_mutex_lock(&tx->db->mu);
    map_unref_locked(tx->db, tx->map);
    pthread_mutex_unlock(&tx->db->mu);
    tx->map = NULL;
}

/* Unregister from the db: readers list, writer slot (the mapping ref is
 * kept until bolt_tx_free, see tx_release_memory). */
static void tx_detach(bolt_tx *tx)
{
    bolt_db *db = tx->db;
    pthread_mutex_lock(&db->mu);
    if (tx->writable) {
        db->writer_active = 0;
        db->writer = NULL;
        pthread_cond_broadcast(&db->wcond);
    } else {
        for (size_t i = 0; i < db->nreaders; i++)
            if (db->readers[i] == tx->meta.txid) {
                db->readers[i] = db->readers[--db->nreaders];
                break;
            }
    }
    if (tx->prev_open)
        tx->prev_open->next_open = tx->next_open;
    else if (db->open_txs == tx)
        db->open_txs = tx->next_open;
    if (tx->next_open)
        tx->next_open->prev_open = tx->prev_open;
    tx->next_open = tx->prev_open = NULL;
    pthread_mutex_unlock(&db->mu);
    tx->closed = 1;
}

int tx_rollback_locked(bolt_tx *tx)
{
    int rc = BOLT_OK;
    if (tx->closed)
        return set_err(BOLT_ERR_TX_CLOSED, "transaction is closed");
    if (tx->writable) {
        bolt_db *db = tx->db;
        pthread_mutex_lock(&db->mu);
        fl_drop_pending(&db->fl, tx->meta.txid);
        /* Give back every page this tx took from the freelist. */
        size_t n = 0;
        for (size_t i = 0; i + 1 < tx->nallocs; i += 2)
            n += tx->allocs[i + 1];
        if (n) {
            uint64_t *ids = malloc(n * sizeof *ids);
            if (ids) {
                size_t o = 0;
                for (size_t i = 0; i + 1 < tx->nallocs; i += 2)
                    for (uint64_t j = 0; j < tx->allocs[i + 1]; j++)
                        ids[o++] = tx->allocs[i] + j;
                rc = fl_give_back(&db->fl, ids, o);
                free(ids);
            } else {
                rc = set_err(BOLT_ERR_NOMEM, "out of memory restoring the freelist");
            }
        }
        pthread_mutex_unlock(&db->mu);
    }
    tx_release_memory(tx);
    tx_detach(tx);
    return rc;
}

static int cmp_dirty(const void *a, const void *b)
{
    uint64_t x = ((const dirty_page *)a)->pgid, y = ((const dirty_page *)b)->pgid;
    return x < y ? -1 : x > y;
}

/* Sorted, with contiguous pages written by one pwritev each (*nruns of them). */
static int write_dirty(bolt_tx *tx, uint32_t *nruns)
{
    bolt_db *db = tx->db;
    if (tx->ndirty > 1) /* an empty list may be a NULL array: qsort(NULL, 0) is undefined */
        qsort(tx->dirty, tx->ndirty, sizeof *tx->dirty, cmp_dirty);
    struct iovec iov[64];
    size_t i = 0;
    uint32_t runs = 0;
    while (i < tx->ndirty) {
        size_t j = i, niov = 0;
        uint64_t next = tx->dirty[i].pgid;
        size_t bytes = 0;
        while (j < tx->ndirty && niov < 64 && tx->dirty[j].pgid == next) {
            iov[niov].iov_base = tx->dirty[j].buf;
            iov[niov].iov_len = (size_t)tx->dirty[j].npages * tx->ps;
            bytes += iov[niov].iov_len;
            next += tx->dirty[j].npages;
            niov++;
            j++;
        }
        off_t off = (off_t)(tx->dirty[i].pgid * tx->ps);
        runs++;
        ssize_t w = pwritev(db->fd, iov, (int)niov, off);
        if (w != (ssize_t)bytes) {
            /* Short or failed: retry page by page so errors are precise. */
            for (size_t k = i; k < j; k++) {
                int rc = db_write_full(db->fd, tx->dirty[k].buf, (size_t)tx->dirty[k].npages * tx->ps,
                                       tx->dirty[k].pgid * tx->ps);
                if (rc)
                    return tx_fail(tx, rc);
            }
        }
        i = j;
    }
    *nruns = runs;
    return BOLT_OK;
}

static uint64_t grow_size(uint64_t need)
{
    /* Like bbolt: powers of two while small, then 16 MiB steps, so that a
     * run of commits does not extend the file on every one of them. */
    const uint64_t mib16 = 16ull << 20;
    if (need < mib16) {
        uint64_t s = 32768;
        while (s < need)
            s <<= 1;
        return s;
    }
    return (need + mib16 - 1) / mib16 * mib16;
}

int tx_commit_locked(bolt_tx *tx)
{
    bolt_db *db = tx->db;
    int rc;
    if (tx->closed)
        return set_err(BOLT_ERR_TX_CLOSED, "transaction is closed");
    if (!tx->writable)
        return set_err(BOLT_ERR_TX_NOT_WRITABLE, "cannot commit a read-only transaction");
    if (tx->failed)
        return set_err(BOLT_ERR_TX_FAILED, "an earlier error poisoned this write transaction; roll it back");

    /* 1. merge underfull nodes (the list grows while we walk it) */
    for (size_t i = 0; i < tx->nunbalanced; i++)
        if ((rc = node_rebalance(tx, tx->unbalanced[i])))
            return tx_fail(tx, rc);
    /* 2. write nodes into dirty pages, children before parents; pages the
     *    next commit will rewrite go into contiguous runs (runs.c) */
    run_begin(tx);
    if ((rc = bucket_spill(tx->root)))
        return tx_fail(tx, rc);
    tx->meta.root = tx->root->root;
    tx->meta.sequence = tx->root->sequence;
    /* 3. freelist */
    if (tx->meta.freelist != PGID_NONE && (rc = tx_free_page(tx, tx->meta.freelist)))
        return rc;
    uint64_t dup;
    pthread_mutex_lock(&db->mu);
    int bad = fl_check_pending(&db->fl, tx->meta.txid, &dup);
    size_t flbytes = fl_page_bytes(&db->fl);
    pthread_mutex_unlock(&db->mu);
    if (bad)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: freed twice in one transaction (multiple references)",
                                   (unsigned long long)dup));
    if (db->persist_freelist) {
        dirty_page *d;
        /* the run's unused end joins the free ids written below */
        size_t unused = (size_t)(tx->run_end - tx->run_next);
        if ((rc = tx_allocate(tx, (flbytes + 8 * (unused + 1)) / tx->ps + 1, RUN_PLACE_RUN, &d)))
            return rc;
        if ((rc = run_finish(tx)))
            return rc;
        pthread_mutex_lock(&db->mu);
        rc = fl_write(&db->fl, d->buf);
        pthread_mutex_unlock(&db->mu);
        if (rc)
            return tx_fail(tx, rc);
        tx->meta.freelist = d->pgid;
    } else {
        if ((rc = run_finish(tx)))
            return rc;
        tx->meta.freelist = PGID_NONE;
    }
    tx->meta.pgid = tx->pgid;
    /* 4. grow the file so every page below pgid exists */
    uint64_t need = tx->pgid * tx->ps;
    if (need > db->file_size) {
        uint64_t ns = grow_size(need);
        if (ftruncate(db->fd, (off_t)ns) != 0)
            return tx_fail(tx, set_err(BOLT_ERR_IO, "%s: cannot grow the file to %llu bytes: %s", db->path,
                                       (unsigned long long)ns, strerror(errno)));
        pthread_mutex_lock(&db->mu);
        db->file_size = ns;
        pthread_mutex_unlock(&db->mu);
    }
    /* 5. data pages, then sync, then the meta page, then sync */
    uint32_t nruns = 0;
    if ((rc = write_dirty(tx, &nruns)))
        return rc;
    if (!db->no_sync && (rc = db_sync(db)))
        return tx_fail(tx, rc);
    uint8_t *mbuf = calloc(1, tx->ps);
    if (!mbuf)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
    uint64_t slot = tx->meta.txid % 2;
    meta_encode(&tx->meta, slot, mbuf, tx->ps);
    rc = db_write_full(db->fd, mbuf, tx->ps, slot * tx->ps);
    free(mbuf);
    if (rc)
        return tx_fail(tx, rc);
    if (!db->no_sync && (rc = db_sync(db)))
        return tx_fail(tx, rc);
    /* 6. publish */
    pthread_mutex_lock(&db->mu);
    run_remember(db, tx);
    db->last_commit_runs = nruns;
    db->meta = tx->meta;
    db->meta_slot = (int)slot;
    /* A failed remap is retried by the next begin; the commit stands. */
    (void)db_ensure_map_locked(db, tx->pgid * tx->ps);
    pthread_mutex_unlock(&db->mu);
    tx_release_memory(tx);
    tx_detach(tx);
    clear_err();
    return BOLT_OK;
}
