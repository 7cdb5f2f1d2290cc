/*
 * packed.c - the batch scan: many items per call, handed to a callback.
 *
 * Why: a binding pays per call and per object it creates. One
 * bolt_cursor_next_each hands it up to `max` items straight from the leaf
 * pages (whole runs of a leaf page per step, through the cursor's internals
 * in cursor.h), under one take of the transaction lock, so it makes its
 * objects with one copy and one crossing per batch.
 */

#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

/* Where a forward scan puts its items: take() returns 0 when it took the
 * item, nonzero to stop on it (the cursor then stays on that item). */
typedef struct scan_sink {
    int (*take)(void *ctx, const uint8_t *k, uint32_t kl, const uint8_t *v, uint32_t vl, int bucket);
    void *ctx;
    size_t max;                 /* items to take at most */
    size_t n;                   /* items taken */
    int refused;                /* take() refused an item: the scan ends on it */
} scan_sink;

static int sink_take(scan_sink *s, const uint8_t *k, uint32_t kl, const uint8_t *v, uint32_t vl, int bucket)
{
    if (s->take(s->ctx, k, kl, bucket ? NULL : v, bucket ? 0 : vl, bucket)) {
        s->refused = 1;
        return 0;
    }
    s->n++;
    return 1;
}

/* Hand the elements after the cursor's one on its leaf page straight from
 * the page, when the cursor allows it (cur_leaf_run). Why: stepping with
 * cur_next re-derived the path state and the item per element; here each
 * element costs its bounds check (page_leaf_elem, the same check the cursor
 * makes) and the sink. The cursor ends where cur_next would have left it:
 * on the last item taken, or on the item the sink refused. */
static int scan_leaf_run(struct bolt_cursor *c, scan_sink *s)
{
    const bpage *leaf;
    uint32_t at;
    if (!cur_leaf_run(c, &leaf, &at))
        return BOLT_OK;
    const uint8_t *rest_key = NULL;
    uint32_t rest_at = at, rest_klen = 0;
    for (uint32_t i = at + 1; i < leaf->count && s->n < s->max; i++) {
        const uint8_t *k, *v;
        uint32_t kl, vl, fl;
        if (page_leaf_elem(leaf, i, &k, &kl, &v, &vl, &fl)) {
            /* Step onto it the checked way, which reports it as corrupt. */
            int rc = cur_leaf_move(c, i, NULL);
            return rc ? rc : set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                     (unsigned long long)leaf->id, i);
        }
        rest_at = i;
        rest_key = k;
        rest_klen = kl;
        if (!sink_take(s, k, kl, v, vl, (fl & LEAF_FLAG_BUCKET) != 0))
            break;
    }
    if (rest_key)
        cur_leaf_rest(c, rest_at, rest_key, rest_klen);
    return BOLT_OK;
}

/* Move forward handing items to the sink until it has max, refuses one, or
 * the cursor passes the last item (*end). The tx lock is held by the caller. */
static int scan_forward(struct bolt_cursor *c, int include_current, scan_sink *s, int *end)
{
    bolt_kv kv;
    int rc, have = 0;
    *end = 0;
    if (include_current && s->max) {
        if ((rc = cur_current(c, &kv)))
            return rc;
        c->resynced_ahead = 0; /* the successor is handed over right here */
        have = kv.key != NULL;
    }
    while (s->n < s->max) {
        if (!have && (rc = cur_next(c, &kv)))
            return rc;
        have = 0;
        if (!kv.key) {
            *end = 1;
            return BOLT_OK;
        }
        if (!sink_take(s, kv.key, (uint32_t)kv.key_len, kv.value, (uint32_t)kv.value_len, kv.flags & 1))
            return BOLT_OK;
        if ((rc = scan_leaf_run(c, s)))
            return rc;
        if (s->refused)
            return BOLT_OK;
    }
    return BOLT_OK;
}

int bolt_cursor_next_each(bolt_cursor *c, int include_current, size_t max, bolt_item_fn fn, void *ctx,
                          size_t *n, int *end)
{
    if (!c || !fn || !n || !end)
        return set_err(BOLT_ERR_INVALID_ARG, "cursor visit: missing callback or output");
    *n = 0;
    *end = 0;
    int rc = cur_enter(c, 0);
    if (rc)
        return rc;
    scan_sink sink = {fn, ctx, max, 0, 0};
    rc = scan_forward(c, include_current, &sink, end);
    *n = sink.n;
    tx_leave(c->b->tx);
    return rc;
}
