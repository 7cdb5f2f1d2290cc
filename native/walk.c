/*
 * walk.c - depth-first copy of a bucket's whole subtree into one buffer
 * (bolt_bucket_walk).
 *
 * Why it is not built on the public calls like packed.c: a List of images
 * visits one small bucket per image, and opening each through the public API
 * registers a handle with the transaction, costing more than reading the
 * records. Here the transaction is entered once, the cursors are the internal
 * ones, and sub-buckets are read through views (bucket_child_view) that
 * nothing needs to free.
 *
 * The walk hands each entry to a visitor: bolt_bucket_walk's visitor copies
 * it into one buffer; bolt_bucket_walk_each lets a binding build its own
 * objects straight from the pages (one copy instead of two, and no buffer
 * growing through fresh memory).
 */

#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

/* Nesting is bounded so a hostile file cannot make the walk recurse without end. */
#define WALK_MAX_DEPTH 64
/* First size of the output buffer; it doubles as needed. */
#define WALK_FIRST_CAP 65536u

typedef struct walk_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} walk_buf;

static int walk_reserve(walk_buf *w, size_t more)
{
    if (more > SIZE_MAX - w->len)
        return set_err(BOLT_ERR_NOMEM, "bucket walk: output too large");
    size_t want = w->len + more;
    if (want <= w->cap)
        return BOLT_OK;
    size_t cap = w->cap ? w->cap : WALK_FIRST_CAP;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    uint8_t *grown = realloc(w->data, cap);
    if (!grown)
        return set_err(BOLT_ERR_NOMEM, "bucket walk: out of memory (%zu bytes)", cap);
    w->data = grown;
    w->cap = cap;
    return BOLT_OK;
}

/* The buffer form of the walk: each visit appends one record. */
static int walk_record(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                       uint32_t value_len, int bucket)
{
    walk_buf *w = ctx;
    size_t vlen = bucket ? 0 : value_len;
    int rc = walk_reserve(w, BOLT_WALK_HEADER_SIZE + (size_t)key_len + vlen);
    if (rc)
        return rc;
    uint32_t header[4] = {depth, bucket ? (uint32_t)BOLT_WALK_FLAG_BUCKET : 0u, key_len, (uint32_t)vlen};
    uint8_t *at = w->data + w->len;
    memcpy(at, header, BOLT_WALK_HEADER_SIZE);
    memcpy(at + BOLT_WALK_HEADER_SIZE, key, key_len);
    if (vlen)
        memcpy(at + BOLT_WALK_HEADER_SIZE + key_len, value, vlen);
    w->len += BOLT_WALK_HEADER_SIZE + key_len + vlen;
    return BOLT_OK;
}

/* Bytes of a sub-bucket's root page hinted into the cache ahead of its turn.
 * Why: a List visits one root page per image, and each visit began with a
 * chain of cache misses (page header, element array, keys); asking for the
 * next image's page while this one is read overlaps those waits. */
#define WALK_PREFETCH_BYTES 1024u

/* Hint the root page of the nested bucket after the cursor's item, if the
 * next item is one and its page lies inside the snapshot. Only a hint. */
static void prefetch_next_child(struct bolt_cursor *c)
{
    const uint8_t *v;
    uint32_t vl, fl;
    if (!cur_peek_next(c, &v, &vl, &fl) || !(fl & LEAF_FLAG_BUCKET) || !v || vl < BUCKET_HEADER_SIZE)
        return;
    tx_prefetch_page(c->b->tx, le64(v), WALK_PREFETCH_BYTES);
}

/* The same hint for the nested bucket at element i of leaf page p. */
static void prefetch_child_at(const bolt_tx *tx, const bpage *p, uint32_t i)
{
    const uint8_t *k, *v;
    uint32_t kl, vl, fl;
    if (page_leaf_elem(p, i, &k, &kl, &v, &vl, &fl) || !(fl & LEAF_FLAG_BUCKET) || vl < BUCKET_HEADER_SIZE)
        return;
    tx_prefetch_page(tx, le64(v), WALK_PREFETCH_BYTES);
}

/* What one level of the walk needs: its cursor, and the view of the
 * sub-bucket opened below it. */
typedef struct walk_level {
    struct bolt_cursor cursor;
    struct bolt_bucket view;
} walk_level;

typedef struct walk_visit {
    bolt_walk_fn fn;
    void *ctx;
    uint32_t max_depth;
    int stopped;                /* fn returned nonzero */
    const uint8_t *start;       /* first key of the top level to visit; NULL: from the first */
    size_t start_len;
    /* levels[depth], allocated when the walk first gets that deep: a walk
     * allowed 64 levels that reaches 3 (a batch of records) allocates 3, not
     * a quarter megabyte that malloc would map and unmap on every call. */
    walk_level *levels[WALK_MAX_DEPTH + 1];
} walk_visit;

static int walk_bucket(struct bolt_bucket *b, uint32_t depth, walk_visit *wv);

/* A bucket whose whole content is one leaf page (inline, or a root page
 * that is a leaf) is read straight from that page. Why: an image's labels
 * and target are such buckets, two per image, and setting up and stepping
 * the general cursor (path stack, checks for writes made since) cost more
 * than reading their three or four entries. Only for a bucket this
 * transaction has not changed: its root is not materialised as a node. */
static int walk_leaf(struct bolt_bucket *b, const bpage *p, uint32_t depth, walk_visit *wv)
{
    for (uint32_t i = 0; i < p->count; i++) {
        const uint8_t *k, *v;
        uint32_t kl, vl, fl;
        if (page_leaf_elem(p, i, &k, &kl, &v, &vl, &fl))
            return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                          (unsigned long long)p->id, i));
        int bucket = (fl & LEAF_FLAG_BUCKET) != 0;
        int reply = wv->fn(wv->ctx, depth, k, kl, bucket ? NULL : v, bucket ? 0 : vl, bucket);
        if (reply != BOLT_WALK_CONTINUE && reply != BOLT_WALK_SKIP) {
            wv->stopped = 1;
            return BOLT_OK;
        }
        if (bucket && reply != BOLT_WALK_SKIP && depth < wv->max_depth) {
            struct bolt_bucket *child;
            prefetch_child_at(b->tx, p, i + 1);
            int rc = bucket_child_view(b, k, kl, v, vl, &wv->levels[depth]->view, &child);
            if (!rc)
                rc = walk_bucket(child, depth + 1, wv);
            if (rc || wv->stopped)
                return rc;
        }
    }
    return BOLT_OK;
}

static int walk_bucket(struct bolt_bucket *b, uint32_t depth, walk_visit *wv)
{
    if (!wv->levels[depth] && !(wv->levels[depth] = malloc(sizeof(walk_level))))
        return set_err(BOLT_ERR_NOMEM, "bucket walk: out of memory");
    if (!b->root_node && !(depth == 0 && wv->start)) {
        bpage root;
        int rc = bucket_root_page(b, &root);
        if (rc)
            return rc;
        if (root.flags == PAGE_FLAG_LEAF)
            return walk_leaf(b, &root, depth, wv);
    }
    struct bolt_cursor *c = &wv->levels[depth]->cursor;
    bolt_kv kv;
    cur_init(c, b);
    int rc = depth == 0 && wv->start ? cur_seek(c, wv->start, wv->start_len, &kv) : cur_first(c, &kv);
    while (!rc && kv.key) {
        int bucket = kv.flags & 1;
        int reply = wv->fn(wv->ctx, depth, kv.key, (uint32_t)kv.key_len, bucket ? NULL : kv.value,
                           bucket ? 0 : (uint32_t)kv.value_len, bucket);
        if (reply != BOLT_WALK_CONTINUE && reply != BOLT_WALK_SKIP) {
            wv->stopped = 1;
            return BOLT_OK;
        }
        if (bucket && reply != BOLT_WALK_SKIP && depth < wv->max_depth) {
            const uint8_t *v;
            uint32_t vl;
            struct bolt_bucket *child;
            rc = cur_raw_value(c, &v, &vl);
            if (!rc)
                prefetch_next_child(c);
            if (!rc)
                rc = bucket_child_view(b, kv.key, kv.key_len, v, vl, &wv->levels[depth]->view, &child);
            if (!rc)
                rc = walk_bucket(child, depth + 1, wv);
            if (!rc && wv->stopped)
                return BOLT_OK;
        }
        if (!rc)
            rc = cur_next(c, &kv);
    }
    return rc;
}

/* Walk b's subtree, its transaction already entered; fn sees every entry
 * (of the top level, those from `start` on when it is not NULL). */
static int walk_entered(bolt_bucket *b, const uint8_t *start, size_t start_len, uint32_t max_depth,
                        bolt_walk_fn fn, void *ctx)
{
    if (max_depth > WALK_MAX_DEPTH)
        max_depth = WALK_MAX_DEPTH;
    walk_visit wv = {fn, ctx, max_depth, 0, start, start_len, {NULL}};
    int rc = walk_bucket(b, 0, &wv);
    for (uint32_t d = 0; d <= max_depth; d++)
        free(wv.levels[d]);
    return rc;
}

/* walk_entered with the transaction entered once for the whole walk. */
static int walk_run(bolt_bucket *b, const uint8_t *start, size_t start_len, uint32_t max_depth, bolt_walk_fn fn,
                    void *ctx)
{
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    rc = walk_entered(b, start, start_len, max_depth, fn, ctx);
    tx_leave(b->tx);
    return rc;
}

/* The buffer visitor reports its own failures (out of memory) as nonzero:
 * they stop the walk, and the status is kept here. */
typedef struct walk_buf_ctx {
    walk_buf buf;
    int rc;
} walk_buf_ctx;

static int walk_buf_visit(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                          uint32_t value_len, int bucket)
{
    walk_buf_ctx *w = ctx;
    w->rc = walk_record(&w->buf, depth, key, key_len, value, value_len, bucket);
    return w->rc;
}

/* The buffer walk's ending: hand the copy over, or free it on failure. */
static int walk_buf_finish(walk_buf_ctx *w, int rc, uint8_t **out, size_t *out_len)
{
    if (!rc)
        rc = w->rc;
    if (rc) {
        free(w->buf.data);
        return rc;
    }
    *out = w->buf.data;
    *out_len = w->buf.len;
    return BOLT_OK;
}

int bolt_bucket_walk(bolt_bucket *b, uint32_t max_depth, uint8_t **out, size_t *out_len)
{
    if (!b || !out || !out_len)
        return set_err(BOLT_ERR_INVALID_ARG, "bucket walk: missing output");
    *out = NULL;
    *out_len = 0;
    walk_buf_ctx w = {{NULL, 0, 0}, BOLT_OK};
    return walk_buf_finish(&w, walk_run(b, NULL, 0, max_depth, walk_buf_visit, &w), out, out_len);
}

int bolt_db_walk_path(bolt_db *db, size_t n, const uint8_t *names, const uint32_t *name_lens, uint32_t max_depth,
                      uint8_t **out, size_t *out_len)
{
    if (!db || (n && (!names || !name_lens)) || !out || !out_len)
        return set_err(BOLT_ERR_INVALID_ARG, "path walk: missing path or output");
    *out = NULL;
    *out_len = 0;
    bolt_tx *tx;
    int rc = bolt_begin(db, 0, &tx);
    if (rc)
        return rc;
    /* A close from another thread between begin and here has ended the tx. */
    if ((rc = tx_enter(tx, 0))) {
        bolt_tx_free(tx);
        return rc == BOLT_ERR_TX_CLOSED ? set_err(BOLT_ERR_DB_CLOSED, "database is closed") : rc;
    }
    struct bolt_bucket *b = tx->root;
    size_t off = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rc = bucket_child(b, names + off, name_lens[i], &b);
        off += name_lens[i];
    }
    walk_buf_ctx w = {{NULL, 0, 0}, BOLT_OK};
    if (!rc)
        rc = walk_buf_finish(&w, walk_entered(b, NULL, 0, max_depth, walk_buf_visit, &w), out, out_len);
    tx_leave(tx);
    bolt_tx_free(tx);
    return rc;
}

int bolt_bucket_walk_each(bolt_bucket *b, uint32_t max_depth, bolt_walk_fn fn, void *ctx)
{
    if (!b || !fn)
        return set_err(BOLT_ERR_INVALID_ARG, "bucket walk: missing callback");
    return walk_run(b, NULL, 0, max_depth, fn, ctx);
}
