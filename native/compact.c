/*
 * compact.c - copy every bucket, nested bucket, sequence and key of src into
 * dst, committing whenever tx_max_bytes of keys and values have been written
 * (bbolt's Compact). After a commit the destination bucket path is opened
 * again by name, so a copy can span any number of transactions.
 *
 * Closing either file from another thread during a copy: the copy holds
 * the lock of both its transactions (tx->mu) for as long as it uses them,
 * and bolt_close takes each open transaction's lock before rolling it back,
 * so a close waits for the work in hand instead of unmapping pages or
 * freeing nodes under it (bbolt's Close likewise waits for open
 * transactions). Closing the source therefore waits for the whole copy (its
 * one read transaction spans it); closing the destination waits for the
 * current write transaction, and the copy then fails with
 * BOLT_ERR_DB_CLOSED when it begins the next, as bbolt's Compact does.
 */
#include <string.h>
#include <sys/mman.h>

#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

/* What one entry costs a write transaction beyond its key and value bytes:
 * its inode (48 bytes) and the slack of the node's doubling inode array, the
 * element header of its page image at commit (16), and the arena's rounding.
 * A bucket costs its handle, name, root node and inline page on top. bbolt's
 * Compact counts key and value bytes only; with containerd's small records
 * (about 30 bytes a key and value) the real cost is ten times that, and a
 * 64 MiB budget peaked at 800 MiB of heap on a 50,000-image file (see
 * tests/tools/test_compact_memory.py for the figures after). */
#define COMPACT_ENTRY_COST 256u
#define COMPACT_BUCKET_COST 2048u

typedef struct compactor {
    bolt_db *dst;
    bolt_tx *dtx;
    bolt_tx *stx;
    uint64_t max, size;
    const uint8_t *names[MAX_BUCKET_DEPTH + 2];
    size_t lens[MAX_BUCKET_DEPTH + 2];
    struct bolt_bucket *handles[MAX_BUCKET_DEPTH + 2];
    int nvalid; /* handles[0 .. nvalid) belong to dtx */
} compactor;

static int dst_bucket(compactor *c, int depth, struct bolt_bucket **out)
{
    int rc;
    if (c->nvalid == 0) {
        c->handles[0] = c->dtx->root;
        c->nvalid = 1;
    }
    while (c->nvalid <= depth) {
        int i = c->nvalid;
        if ((rc = bucket_child(c->handles[i - 1], c->names[i], c->lens[i], &c->handles[i])))
            return rc;
        c->nvalid++;
    }
    *out = c->handles[depth];
    return BOLT_OK;
}

/* Drop the pages of a read-only file mapping from this process's page
 * tables. Nothing is lost (the next access faults the page back in from the
 * page cache); without it every page of both files stays resident while the
 * copy runs, and the process's RSS grows with the file, not the transaction. */
static void release_map(const bmap *m)
{
    if (m && m->data && m->len)
        (void)madvise(m->data, m->len, MADV_DONTNEED);
}

/* A close that got in first turns "transaction is closed" into what
 * happened, naming the file that was closed. */
static int closed_during_copy(int rc, const char *which)
{
    if (rc == BOLT_ERR_TX_CLOSED || rc == BOLT_ERR_DB_CLOSED)
        return set_err(BOLT_ERR_DB_CLOSED, "compact: the %s database was closed", which);
    return rc;
}

/* Begin the next destination write transaction and take its lock. */
static int begin_dst(compactor *c)
{
    int rc = bolt_begin(c->dst, 1, &c->dtx);
    if (!rc && (rc = tx_enter(c->dtx, 1))) {
        bolt_tx_free(c->dtx);
        c->dtx = NULL;
    }
    return closed_during_copy(rc, "destination");
}

/* Commit the destination transaction (its lock held), let it go. */
static int commit_dst(compactor *c)
{
    int rc = tx_commit_or_rollback_locked(c->dtx);
    tx_leave(c->dtx);
    bolt_tx_free(c->dtx);
    c->dtx = NULL;
    return rc;
}

static int account(compactor *c, uint64_t sz)
{
    if (c->max && c->size + sz > c->max) {
        int rc = commit_dst(c);
        if (rc || (rc = begin_dst(c)))
            return rc;
        /* through the transactions' own mapping references (held, locked):
         * a close from another thread cannot unmap them meanwhile */
        release_map(c->stx->map);
        release_map(c->dtx->map);
        c->nvalid = 0;
        c->size = 0;
    }
    c->size += sz;
    return BOLT_OK;
}

static int copy_bucket(compactor *c, struct bolt_bucket *src, int depth)
{
    struct bolt_cursor cur;
    bolt_kv kv;
    int rc;
    if (depth >= MAX_BUCKET_DEPTH)
        return set_err(BOLT_ERR_CORRUPT, "buckets nested deeper than %d levels", MAX_BUCKET_DEPTH);
    cur_init(&cur, src);
    for (rc = cur_first(&cur, &kv); !rc && kv.key; rc = cur_next(&cur, &kv)) {
        if ((rc = account(c, (uint64_t)kv.key_len + kv.value_len + COMPACT_ENTRY_COST +
                                 (kv.flags ? COMPACT_BUCKET_COST : 0))))
            return rc;
        struct bolt_bucket *d;
        if ((rc = dst_bucket(c, depth, &d)))
            return rc;
        if (kv.flags) {
            struct bolt_bucket *s, *nd;
            if ((rc = bucket_child(src, kv.key, kv.key_len, &s)))
                return rc;
            if ((rc = bucket_create_child(d, kv.key, kv.key_len, 1, &nd)))
                return rc;
            if ((rc = bucket_set_seq_internal(nd, s->sequence)))
                return rc;
            c->names[depth + 1] = kv.key;
            c->lens[depth + 1] = kv.key_len;
            c->handles[depth + 1] = nd;
            c->nvalid = depth + 2;
            if ((rc = copy_bucket(c, s, depth + 1)))
                return rc;
            c->nvalid = c->nvalid > depth + 1 ? depth + 1 : c->nvalid;
        } else if ((rc = bucket_put_internal(d, kv.key, kv.key_len, kv.value, kv.value_len))) {
            return rc;
        }
    }
    return rc;
}

int bolt_compact(bolt_db *dst, bolt_db *src, uint64_t tx_max_bytes)
{
    if (!dst || !src || dst == src)
        return set_err(BOLT_ERR_INVALID_ARG, "compact needs two different open databases");
    bolt_tx *stx;
    int rc = bolt_begin(src, 0, &stx);
    if (!rc && (rc = tx_enter(stx, 0)))
        bolt_tx_free(stx);
    if (rc)
        return closed_during_copy(rc, "source");
    compactor c;
    memset(&c, 0, sizeof c);
    c.dst = dst;
    c.stx = stx;
    c.max = tx_max_bytes;
    if (!(rc = begin_dst(&c))) {
        /* Both transactions are private to this call and locked by it, so
         * the internal (unlocked) functions are safe here. */
        rc = copy_bucket(&c, stx->root, 0);
        if (!rc) {
            rc = commit_dst(&c);
        } else if (c.dtx) {
            tx_leave(c.dtx);
            bolt_tx_free(c.dtx); /* rolls back */
        }
    }
    tx_leave(stx);
    bolt_tx_free(stx);
    return rc;
}
