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
 */

#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

/* Walk records start with four u32 fields: depth, flags, key length, value length. */
#define WALK_HEADER_SIZE 16
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

static int walk_record(walk_buf *w, uint32_t depth, const bolt_kv *kv)
{
    size_t vlen = kv->flags & 1 ? 0 : kv->value_len;
    int rc = walk_reserve(w, WALK_HEADER_SIZE + kv->key_len + vlen);
    if (rc)
        return rc;
    uint32_t header[4] = {depth, kv->flags & 1, (uint32_t)kv->key_len, (uint32_t)vlen};
    uint8_t *at = w->data + w->len;
    memcpy(at, header, WALK_HEADER_SIZE);
    memcpy(at + WALK_HEADER_SIZE, kv->key, kv->key_len);
    if (vlen)
        memcpy(at + WALK_HEADER_SIZE + kv->key_len, kv->value, vlen);
    w->len += WALK_HEADER_SIZE + kv->key_len + vlen;
    return BOLT_OK;
}

/* cursors[depth] serves this level; views[depth] holds the sub-bucket opened below it. */
static int walk_bucket(struct bolt_bucket *b, uint32_t depth, uint32_t max_depth, struct bolt_cursor *cursors,
                       struct bolt_bucket *views, walk_buf *w)
{
    struct bolt_cursor *c = &cursors[depth];
    bolt_kv kv;
    cur_init(c, b);
    int rc = cur_first(c, &kv);
    while (!rc && kv.key) {
        rc = walk_record(w, depth, &kv);
        if (!rc && (kv.flags & 1) && depth < max_depth) {
            const uint8_t *v;
            uint32_t vl;
            struct bolt_bucket *child;
            rc = cur_raw_value(c, &v, &vl);
            if (!rc)
                rc = bucket_child_view(b, kv.key, kv.key_len, v, vl, &views[depth], &child);
            if (!rc)
                rc = walk_bucket(child, depth + 1, max_depth, cursors, views, w);
        }
        if (!rc)
            rc = cur_next(c, &kv);
    }
    return rc;
}

int bolt_bucket_walk(bolt_bucket *b, uint32_t max_depth, uint8_t **out, size_t *out_len)
{
    if (!b || !out || !out_len)
        return set_err(BOLT_ERR_INVALID_ARG, "bucket walk: missing output");
    *out = NULL;
    *out_len = 0;
    if (max_depth > WALK_MAX_DEPTH)
        max_depth = WALK_MAX_DEPTH;
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    /* One cursor and one view per level, each in one allocation. */
    struct bolt_cursor *cursors = malloc(sizeof *cursors * (max_depth + 1));
    struct bolt_bucket *views = malloc(sizeof *views * (max_depth + 1));
    walk_buf w = {NULL, 0, 0};
    if (!cursors || !views)
        rc = set_err(BOLT_ERR_NOMEM, "bucket walk: out of memory");
    else
        rc = walk_bucket(b, 0, max_depth, cursors, views, &w);
    tx_leave(b->tx);
    free(cursors);
    free(views);
    if (rc) {
        free(w.data);
        return rc;
    }
    *out = w.data;
    *out_len = w.len;
    return BOLT_OK;
}
