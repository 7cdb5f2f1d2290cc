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
