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

/* Walk records start with four u32 fields: depth, flags, key length, value length. */
#define WALK_HEADER_SIZE 16
/* Nesting is bounded so a hostile file cannot make the walk recurse without end. */
#define WALK_MAX_DEPTH 64

static int packed_fits(const bolt_packed *p, size_t need)
{
    return need <= p->cap && p->used <= p->cap - need;
}

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
        bolt_kv kv;
        size_t got = 0;
        int rc = bolt_cursor_next_batch(c, current, 1, &kv, &got);
        if (rc)
            return rc;
        if (got == 0) {
            p->end = 1;
            break;
        }
        current = 0;
        size_t vlen = kv.flags & 1 ? 0 : kv.value_len;
        size_t need = kv.key_len + vlen;
        if (!packed_fits(p, need)) {
            /* The cursor now rests on this item: the caller asks again with
             * include_current set, after growing the buffer if need says so. */
            if (p->n == 0)
                p->need = need;
            break;
        }
        memcpy(p->buf + p->used, kv.key, kv.key_len);
        if (vlen)
            memcpy(p->buf + p->used + kv.key_len, kv.value, vlen);
        p->used += need;
        p->lens[2 * p->n] = (uint32_t)kv.key_len;
        p->lens[2 * p->n + 1] = (uint32_t)vlen;
        p->flags[p->n] = (uint8_t)(kv.flags & 1);
        p->n++;
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

/* ---- subtree walk ---- */

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
    size_t cap = w->cap ? w->cap : 4096;
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
    memcpy(w->data + w->len, header, WALK_HEADER_SIZE);
    memcpy(w->data + w->len + WALK_HEADER_SIZE, kv->key, kv->key_len);
    if (vlen)
        memcpy(w->data + w->len + WALK_HEADER_SIZE + kv->key_len, kv->value, vlen);
    w->len += WALK_HEADER_SIZE + kv->key_len + vlen;
    return BOLT_OK;
}

static int walk_bucket(bolt_bucket *b, uint32_t depth, uint32_t max_depth, bolt_cursor *cursors, walk_buf *w)
{
    bolt_cursor *c = (bolt_cursor *)((uint8_t *)cursors + (size_t)depth * bolt_cursor_size());
    int rc = bolt_cursor_init(c, b);
    bolt_kv kv;
    if (!rc)
        rc = bolt_cursor_first(c, &kv);
    while (!rc && kv.key) {
        rc = walk_record(w, depth, &kv);
        if (!rc && (kv.flags & 1) && depth < max_depth) {
            bolt_bucket *child;
            rc = bolt_bucket_bucket(b, kv.key, kv.key_len, &child);
            if (!rc)
                rc = walk_bucket(child, depth + 1, max_depth, cursors, w);
        }
        if (!rc)
            rc = bolt_cursor_next(c, &kv);
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
    /* One cursor per level, in one allocation; bolt_cursor_size() is a multiple of 8. */
    size_t csize = bolt_cursor_size();
    bolt_cursor *cursors = malloc(csize * (max_depth + 1));
    if (!cursors)
        return set_err(BOLT_ERR_NOMEM, "bucket walk: out of memory");
    walk_buf w = {NULL, 0, 0};
    int rc = walk_bucket(b, 0, max_depth, cursors, &w);
    free(cursors);
    if (rc) {
        free(w.data);
        return rc;
    }
    *out = w.data;
    *out_len = w.len;
    return BOLT_OK;
}
