/*
 * packed.c - batch calls that copy many items into one caller buffer.
 *
 * Why: a binding pays per object it creates. Handing back one bolt_kv per
 * item costs a language runtime two buffer objects per item; copying the
 * items back to back lets it make one bytes object per batch and slice it.
 * Multi-gets are built on the public calls in bolt.h, so locking,
 * transaction state and corruption checks stay where they are. The cursor
 * batch uses the cursor's internals (cursor.h) to copy whole runs of a leaf
 * page per step; it takes the transaction lock once per call.
 * bolt_cursor_next_each is the same scan handing each item to a callback
 * instead of a buffer, for a binding that makes its objects straight from
 * the pages (one copy instead of two).
 */

#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

static int packed_fits(const bolt_packed *p, size_t need)
{
    return need <= p->cap && p->used <= p->cap - need;
}

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

static int packed_take(void *ctx, const uint8_t *k, uint32_t kl, const uint8_t *v, uint32_t vl, int bucket)
{
    bolt_packed *p = ctx;
    size_t need = (size_t)kl + vl;
    if (!packed_fits(p, need)) {
        if (p->n == 0)
            p->need = need;
        return 1;
    }
    uint8_t *at = p->buf + p->used;
    memcpy(at, k, kl);
    if (vl)
        memcpy(at + kl, v, vl);
    p->used += need;
    p->lens[2 * p->n] = kl;
    p->lens[2 * p->n + 1] = vl;
    p->flags[p->n] = (uint8_t)bucket;
    p->n++;
    return 0;
}

int bolt_cursor_next_packed(bolt_cursor *c, int include_current, bolt_packed *p)
{
    if (!c || !p || (p->max && (!p->lens || !p->flags)) || (p->cap && !p->buf))
        return set_err(BOLT_ERR_INVALID_ARG, "packed batch: missing buffer");
    p->used = 0;
    p->n = 0;
    p->need = 0;
    p->end = 0;
    int rc = cur_enter(c, 0);
    if (rc)
        return rc;
    scan_sink sink = {packed_take, p, p->max, 0, 0};
    rc = scan_forward(c, include_current, &sink, &p->end);
    tx_leave(c->b->tx);
    return rc;
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

int bolt_bucket_get_packed(bolt_bucket *b, size_t n, const uint8_t *keys, const uint32_t *key_lens,
                           bolt_packed *p)
{
    if (!b || !p || (n && (!keys || !key_lens)) || (p->max < n) || (n && (!p->lens || !p->flags)))
        return set_err(BOLT_ERR_INVALID_ARG, "packed get: missing or short buffer");
    p->used = 0;
    p->n = 0;
    p->need = 0;
    p->end = 0;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        bolt_kv kv;
        int rc = bolt_bucket_get(b, keys + off, key_lens[i], &kv);
        if (rc)
            return rc;
        size_t vlen = kv.value ? kv.value_len : 0;
        if (!packed_fits(p, vlen)) {
            if (p->n == 0)
                p->need = vlen;
            return BOLT_OK; /* caller continues from key p->n */
        }
        if (vlen)
            memcpy(p->buf + p->used, kv.value, vlen);
        p->used += vlen;
        p->lens[i] = (uint32_t)vlen;
        p->flags[i] = kv.value ? 0 : (kv.flags & 1 ? 1 : 2);
        p->n++;
        off += key_lens[i];
    }
    p->end = 1;
    return BOLT_OK;
}

/* ---- key order for batched lookups ---- */

/* Why a radix sort: qsort with a comparator spent a second on a million
 * random keys, jumping through memory to compare them. Sorting by an 8-byte
 * big-endian prefix in four 16-bit passes touches memory sequentially;
 * keys that share a prefix are then ordered by a full compare. */
#define PREFIX_BYTES 8
#define RADIX_BITS 16
#define RADIX_SIZE (1u << RADIX_BITS)

typedef struct key_ref {
    uint64_t prefix;            /* first 8 bytes, big-endian, zero padded */
    const uint8_t *key;
    uint32_t len;
    uint32_t index;
} key_ref;

static int key_ref_cmp(const void *a, const void *b)
{
    const key_ref *x = a, *y = b;
    size_t common = x->len < y->len ? x->len : y->len;
    int c = common ? memcmp(x->key, y->key, common) : 0;
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Stable LSD radix sort of refs by prefix; tmp has room for n refs. */
static int radix_sort(key_ref *refs, key_ref *tmp, size_t n)
{
    size_t *count = malloc(RADIX_SIZE * sizeof *count);
    if (!count)
        return -1;
    for (unsigned shift = 0; shift < 64; shift += RADIX_BITS) {
        memset(count, 0, RADIX_SIZE * sizeof *count);
        for (size_t i = 0; i < n; i++)
            count[(refs[i].prefix >> shift) & (RADIX_SIZE - 1)]++;
        if (count[(refs[0].prefix >> shift) & (RADIX_SIZE - 1)] == n)
            continue; /* every key has this digit: the pass would not move anything */
        size_t sum = 0;
        for (size_t d = 0; d < RADIX_SIZE; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            tmp[count[(refs[i].prefix >> shift) & (RADIX_SIZE - 1)]++] = refs[i];
        memcpy(refs, tmp, n * sizeof *refs);
    }
    free(count);
    return 0;
}

int bolt_keys_sort(size_t n, const uint8_t *keys, const uint32_t *key_lens, uint32_t *order,
                   uint8_t *sorted_keys, uint32_t *sorted_lens)
{
    if (n && (!keys || !key_lens || !order))
        return set_err(BOLT_ERR_INVALID_ARG, "key sort: missing buffer");
    if (n > UINT32_MAX)
        return set_err(BOLT_ERR_INVALID_ARG, "key sort: more than 2^32-1 keys");
    if (n == 0)
        return BOLT_OK;
    key_ref *refs = malloc(n * sizeof *refs);
    key_ref *tmp = malloc(n * sizeof *tmp);
    if (!refs || !tmp) {
        free(refs);
        free(tmp);
        return set_err(BOLT_ERR_NOMEM, "key sort: out of memory for %zu keys", n);
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *k = keys + off;
        uint32_t len = key_lens[i];
        uint64_t prefix = 0;
        for (size_t j = 0; j < PREFIX_BYTES; j++)
            prefix = prefix << 8 | (j < len ? k[j] : 0);
        refs[i] = (key_ref){prefix, k, len, (uint32_t)i};
        off += len;
    }
    int rc = radix_sort(refs, tmp, n);
    free(tmp);
    if (rc) {
        free(refs);
        return set_err(BOLT_ERR_NOMEM, "key sort: out of memory");
    }
    /* Runs that share a prefix may still differ later, or in length. */
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && refs[j].prefix == refs[i].prefix)
            j++;
        if (j - i > 1)
            qsort(refs + i, j - i, sizeof *refs, key_ref_cmp);
        i = j;
    }
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        order[i] = refs[i].index;
        if (sorted_keys && sorted_lens) {
            memcpy(sorted_keys + at, refs[i].key, refs[i].len);
            sorted_lens[i] = refs[i].len;
            at += refs[i].len;
        }
    }
    free(refs);
    return BOLT_OK;
}
