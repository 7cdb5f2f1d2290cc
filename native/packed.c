/*
 * packed.c - batch calls that copy many items into one caller buffer.
 *
 * Why: a binding pays per object it creates. Handing back one bolt_kv per
 * item costs a language runtime two buffer objects per item; copying the
 * items back to back lets it make one bytes object per batch and slice it.
 * Everything here is built on the public calls in bolt.h, so locking,
 * transaction state and corruption checks stay where they are.
 */

#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "err.h"

static int packed_fits(const bolt_packed *p, size_t need)
{
    return need <= p->cap && p->used <= p->cap - need;
}

/* Items fetched from the cursor per locked call. Why: the transaction lock
 * is taken once per call, so fetching one item at a time paid it per item. */
#define PACK_STEP 64

int bolt_cursor_next_packed(bolt_cursor *c, int include_current, bolt_packed *p)
{
    if (!c || !p || (p->max && (!p->lens || !p->flags)) || (p->cap && !p->buf))
        return set_err(BOLT_ERR_INVALID_ARG, "packed batch: missing buffer");
    p->used = 0;
    p->n = 0;
    p->need = 0;
    p->end = 0;
    int current = include_current;
    while (p->n < p->max) {
        bolt_kv kv[PACK_STEP];
        size_t want = p->max - p->n < PACK_STEP ? p->max - p->n : PACK_STEP;
        size_t got = 0;
        int rc = bolt_cursor_next_batch(c, current, want, kv, &got);
        if (rc)
            return rc;
        current = 0;
        for (size_t i = 0; i < got; i++) {
            size_t vlen = kv[i].flags & 1 ? 0 : kv[i].value_len;
            size_t need = kv[i].key_len + vlen;
            if (!packed_fits(p, need)) {
                /* The cursor ran ahead of the buffer: put it back on this
                 * item (keys are unique, so seek finds exactly it) and let
                 * the caller ask again with include_current set, after
                 * growing the buffer if need says so. */
                if (p->n == 0)
                    p->need = need;
                bolt_kv at;
                return bolt_cursor_seek(c, kv[i].key, kv[i].key_len, &at);
            }
            memcpy(p->buf + p->used, kv[i].key, kv[i].key_len);
            if (vlen)
                memcpy(p->buf + p->used + kv[i].key_len, kv[i].value, vlen);
            p->used += need;
            p->lens[2 * p->n] = (uint32_t)kv[i].key_len;
            p->lens[2 * p->n + 1] = (uint32_t)vlen;
            p->flags[p->n] = (uint8_t)(kv[i].flags & 1);
            p->n++;
        }
        if (got < want) {
            p->end = 1;
            break;
        }
    }
    return BOLT_OK;
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
