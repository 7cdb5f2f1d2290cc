/*
 * cursor.c - B+tree traversal. The path from the bucket root to a leaf is a
 * stack of refs, each a node (when this write tx materialised one) or a page.
 * A node exists only if its parent does, so descending from a page never
 * has to look for nodes. The stack depth is bounded, which also turns a
 * cyclic page graph into an error instead of a hang.
 */
#include <string.h>

#include "bolt.h"
#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

static void ref_node(cursor_ref *r, node *n)
{
    r->n = n;
    r->count = n->n;
    r->leaf = n->leaf;
    r->index = 0;
}

static void ref_page(cursor_ref *r, const bpage *p)
{
    r->n = NULL;
    r->p = *p;
    r->count = p->count;
    r->leaf = (p->flags & PAGE_FLAG_LEAF) != 0;
    r->index = 0;
}

static int corrupt_elem(struct bolt_cursor *c, const cursor_ref *r)
{
    return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                     (unsigned long long)r->p.id, r->index));
}

/* Key (and value, flags) of the element under ref r. */
static int ref_kv(struct bolt_cursor *c, const cursor_ref *r, uint32_t idx, const uint8_t **k,
                  uint32_t *kl, const uint8_t **v, uint32_t *vl, uint32_t *fl)
{
    if (r->n) {
        if (idx >= r->n->n)
            return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT, "cursor index out of node range"));
        const inode *e = &r->n->in[idx];
        *k = e->key;
        *kl = e->ksize;
        if (v) { *v = e->value; *vl = e->vsize; *fl = e->flags; }
        return BOLT_OK;
    }
    int rc;
    if (r->leaf) {
        const uint8_t *vv; uint32_t vs, f;
        rc = page_leaf_elem(&r->p, idx, k, kl, &vv, &vs, &f);
        if (v && rc == 0) { *v = vv; *vl = vs; *fl = f; }
    } else {
        rc = page_branch_elem(&r->p, idx, k, kl, NULL);
    }
    if (rc) {
        cursor_ref tmp = *r;
        tmp.index = idx;
        return corrupt_elem(c, &tmp);
    }
    return BOLT_OK;
}

static int push(struct bolt_cursor *c, cursor_ref **out)
{
    if (c->depth >= MAX_TREE_DEPTH)
        return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT,
                                         "bucket tree deeper than %d levels (corrupt or cyclic)",
                                         MAX_TREE_DEPTH));
    *out = &c->stack[c->depth++];
    return BOLT_OK;
}

static int push_root(struct bolt_cursor *c)
{
    cursor_ref *r = NULL;
    int rc;
    c->depth = 0;
    if ((rc = push(c, &r)))
        return rc;
    if (c->b->root_node) {
        ref_node(r, c->b->root_node);
        return BOLT_OK;
    }
    bpage p;
    if ((rc = bucket_root_page(c->b, &p)))
        return rc;
    ref_page(r, &p);
    return BOLT_OK;
}

/* Push the child of the top ref at its index. */
/* Bytes of the next sibling page to pull into the cache ahead of a scan.
 * Why: a scan is bound by memory latency, not work; each leaf of a 4 KiB page
 * is visited in a few microseconds, which is about the time the memory
 * system needs to bring the next page in when asked early. */
#define PREFETCH_SPAN 4096u
#define PREFETCH_AHEAD 1u

/* Hint the cache with the page after the one being entered under branch page
 * `top`. Only a hint: an id outside the snapshot is simply not prefetched. */
static void prefetch_page_at(struct bolt_cursor *c, const cursor_ref *top, uint32_t index)
{
    const uint8_t *k; uint32_t kl; uint64_t next;
    if (index >= top->count || page_branch_elem(&top->p, index, &k, &kl, &next))
        return;
    tx_prefetch_page(c->b->tx, next, PREFETCH_SPAN);
}

static void prefetch_sibling(struct bolt_cursor *c, const cursor_ref *top)
{
    if (top->n)
        return;
    if (top->index == 0)
        for (uint32_t d = 1; d < PREFETCH_AHEAD; d++)
            prefetch_page_at(c, top, d);
    prefetch_page_at(c, top, top->index + PREFETCH_AHEAD);
}

static int push_child(struct bolt_cursor *c)
{
    cursor_ref *top = &c->stack[c->depth - 1], *r = NULL;
    bpage p;
    int rc;
    if (top->n) {
        if (top->index >= top->n->n)
            return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT, "empty branch node"));
        inode *e = &top->n->in[top->index];
        if (e->child) {
            if ((rc = push(c, &r)))
                return rc;
            ref_node(r, e->child);
            return BOLT_OK;
        }
        if ((rc = tx_tree_page(c->b->tx, e->pgid, &p)))
            return rc;
    } else {
        const uint8_t *k; uint32_t kl; uint64_t child;
        if (page_branch_elem(&top->p, top->index, &k, &kl, &child))
            return corrupt_elem(c, top);
        if ((rc = tx_tree_page(c->b->tx, child, &p)))
            return rc;
        if (p.flags & PAGE_FLAG_LEAF)
            prefetch_sibling(c, top);
    }
    if ((rc = push(c, &r)))
        return rc;
    ref_page(r, &p);
    return BOLT_OK;
}

static int go_first(struct bolt_cursor *c)
{
    int rc;
    while (!c->stack[c->depth - 1].leaf) {
        if ((rc = push_child(c)))
            return rc;
        c->stack[c->depth - 1].index = 0;
    }
    return BOLT_OK;
}

/* Descend along the last child of each level below the top. */
static int go_last(struct bolt_cursor *c)
{
    int rc;
    while (!c->stack[c->depth - 1].leaf) {
        if ((rc = push_child(c)))
            return rc;
        cursor_ref *top = &c->stack[c->depth - 1];
        top->index = top->count ? top->count - 1 : 0;
    }
    return BOLT_OK;
}

/* Move to the next element, skipping empty leaves. 1 = moved, 0 = end. */
static int next_raw(struct bolt_cursor *c, int *moved)
{
    int rc;
    for (;;) {
        int i;
        for (i = c->depth - 1; i >= 0; i--) {
            cursor_ref *r = &c->stack[i];
            if (r->count && r->index + 1 < r->count) {
                r->index++;
                break;
            }
        }
        if (i < 0) {
            *moved = 0;
            return BOLT_OK;
        }
        c->depth = i + 1;
        if ((rc = go_first(c)))
            return rc;
        if (c->stack[c->depth - 1].count == 0)
            continue;
        *moved = 1;
        return BOLT_OK;
    }
}

static int prev_raw(struct bolt_cursor *c, int *moved)
{
    int rc;
    for (;;) {
        int i;
        for (i = c->depth - 1; i >= 0; i--) {
            cursor_ref *r = &c->stack[i];
            if (r->index > 0 && r->count) {
                r->index--;
                break;
            }
        }
        if (i < 0) {
            *moved = 0;
            return BOLT_OK;
        }
        c->depth = i + 1;
        if ((rc = go_last(c)))
            return rc;
        if (c->stack[c->depth - 1].count == 0)
            continue;
        *moved = 1;
        return BOLT_OK;
    }
}

/* Fill out from the top of the stack and remember the key. */
static int settle(struct bolt_cursor *c, int on, bolt_kv *out, int end_state)
{
    c->mod_seq = c->b->tx->mod_seq;
    c->resynced_ahead = 0;
    if (!on) {
        c->state = end_state;
        c->key = NULL;
        c->klen = 0;
        if (out)
            memset(out, 0, sizeof *out);
        return BOLT_OK;
    }
    cursor_ref *top = &c->stack[c->depth - 1];
    const uint8_t *k, *v; uint32_t kl, vl, fl;
    int rc = ref_kv(c, top, top->index, &k, &kl, &v, &vl, &fl);
    if (rc)
        return rc;
    c->state = CUR_ON;
    c->key = k;
    c->klen = kl;
    if (out) {
        out->key = k;
        out->key_len = kl;
        out->flags = fl & LEAF_FLAG_BUCKET;
        out->value = out->flags ? NULL : v;
        out->value_len = out->flags ? 0 : vl;
    }
    return BOLT_OK;
}

void cur_init(struct bolt_cursor *c, struct bolt_bucket *b)
{
    c->magic = CURSOR_MAGIC;
    c->b = b;
    c->mod_seq = 0;
    c->depth = 0;
    c->state = CUR_UNSET;
    c->resynced_ahead = 0;
    c->key = NULL;
    c->klen = 0;
}

int cur_first(struct bolt_cursor *c, bolt_kv *out)
{
    int rc, moved = 1;
    if ((rc = push_root(c)) || (rc = go_first(c)))
        return rc;
    if (c->stack[c->depth - 1].count == 0 && (rc = next_raw(c, &moved)))
        return rc;
    return settle(c, moved, out, CUR_PAST_END);
}

int cur_last(struct bolt_cursor *c, bolt_kv *out)
{
    int rc, moved = 1;
    if ((rc = push_root(c)))
        return rc;
    c->stack[0].index = c->stack[0].count ? c->stack[0].count - 1 : 0;
    if ((rc = go_last(c)))
        return rc;
    if (c->stack[c->depth - 1].count == 0 && (rc = prev_raw(c, &moved)))
        return rc;
    return settle(c, moved, out, CUR_BEFORE_START);
}

/* Binary search in the ref for the first key >= key. */
static int ref_search(struct bolt_cursor *c, cursor_ref *r, const uint8_t *key, size_t klen,
                      uint32_t *idx, int *exact)
{
    if (r->n) {
        *idx = node_search(r->n, key, klen, exact);
        return BOLT_OK;
    }
    uint32_t lo = 0, hi = r->count;
    *exact = 0;
    /* A point lookup in a cold tree waits on memory at every probe. Both
     * possible next probes' element headers are hinted into the cache while
     * this probe's key is compared, so the two waits overlap. */
    size_t elem = r->leaf ? LEAF_ELEM_SIZE : BRANCH_ELEM_SIZE;
    const uint8_t *elems = r->p.data + PAGE_HEADER_SIZE;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (hi - lo > 2 && PAGE_HEADER_SIZE + (size_t)hi * elem <= r->p.span) {
            __builtin_prefetch(elems + (size_t)(lo + (mid - lo) / 2) * elem);
            __builtin_prefetch(elems + (size_t)(mid + 1 + (hi - mid - 1) / 2) * elem);
        }
        const uint8_t *k; uint32_t kl;
        int rc = ref_kv(c, r, mid, &k, &kl, NULL, NULL, NULL);
        if (rc)
            return rc;
        int cmp = key_cmp(k, kl, key, klen);
        if (cmp < 0) {
            lo = mid + 1;
        } else {
            if (cmp == 0)
                *exact = 1;
            hi = mid;
        }
    }
    *idx = lo;
    return BOLT_OK;
}

/* Descend to the leaf where key is or would be; leaf index may equal count. */
static int cur_search(struct bolt_cursor *c, const uint8_t *key, size_t klen)
{
    int rc;
    if ((rc = push_root(c)))
        return rc;
    for (;;) {
        cursor_ref *top = &c->stack[c->depth - 1];
        uint32_t idx; int exact;
        if ((rc = ref_search(c, top, key, klen, &idx, &exact)))
            return rc;
        if (top->leaf) {
            top->index = idx;
            return BOLT_OK;
        }
        if (top->count == 0)
            return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT, "page %llu: branch page with no elements",
                                             (unsigned long long)top->p.id));
        if (!exact && idx > 0)
            idx--;
        if (idx >= top->count)
            idx = top->count - 1;
        top->index = idx;
        if ((rc = push_child(c)))
            return rc;
    }
}

int cur_seek(struct bolt_cursor *c, const uint8_t *key, size_t klen, bolt_kv *out)
{
    int rc, moved = 1;
    if ((rc = cur_search(c, key, klen)))
        return rc;
    cursor_ref *top = &c->stack[c->depth - 1];
    if (top->index >= top->count && (rc = next_raw(c, &moved)))
        return rc;
    return settle(c, moved, out, CUR_PAST_END);
}

/* After changes in the tx the path may be stale: find the remembered key
 * again. Landing on a greater key means it was deleted; the next Next then
 * returns that successor instead of skipping it. */
static int resync(struct bolt_cursor *c)
{
    if (c->state != CUR_ON || c->mod_seq == c->b->tx->mod_seq)
        return BOLT_OK;
    const uint8_t *k = c->key;
    size_t kl = c->klen;
    bolt_kv kv;
    int rc = cur_seek(c, k, kl, &kv);
    if (rc)
        return rc;
    if (c->state == CUR_ON && key_cmp(kv.key, kv.key_len, k, kl) != 0)
        c->resynced_ahead = 1;
    else if (c->state == CUR_PAST_END)
        c->resynced_ahead = 1;
    return BOLT_OK;
}

int cur_next(struct bolt_cursor *c, bolt_kv *out)
{
    int rc, moved;
    if (c->state == CUR_UNSET || c->state == CUR_BEFORE_START)
        return cur_first(c, out);
    if (c->state == CUR_PAST_END) {
        if (out)
            memset(out, 0, sizeof *out);
        return BOLT_OK;
    }
    if (c->mod_seq == c->b->tx->mod_seq && !c->resynced_ahead) {
        /* fast path: the next element is on the same leaf */
        cursor_ref *top = &c->stack[c->depth - 1];
        if (top->index + 1 < top->count) {
            top->index++;
            return settle(c, 1, out, CUR_PAST_END);
        }
    }
    if ((rc = resync(c)))
        return rc;
    if (c->resynced_ahead) {
        c->resynced_ahead = 0;
        return cur_current(c, out);
    }
    if ((rc = next_raw(c, &moved)))
        return rc;
    return settle(c, moved, out, CUR_PAST_END);
}

int cur_prev(struct bolt_cursor *c, bolt_kv *out)
{
    int rc, moved;
    if (c->state == CUR_UNSET || c->state == CUR_PAST_END) {
        if (c->state == CUR_PAST_END && c->resynced_ahead) {
            c->resynced_ahead = 0;
        }
        return cur_last(c, out);
    }
    if (c->state == CUR_BEFORE_START) {
        if (out)
            memset(out, 0, sizeof *out);
        return BOLT_OK;
    }
    if ((rc = resync(c)))
        return rc;
    if (c->state == CUR_PAST_END)
        return cur_last(c, out);
    c->resynced_ahead = 0;
    if ((rc = prev_raw(c, &moved)))
        return rc;
    return settle(c, moved, out, CUR_BEFORE_START);
}

int cur_current(struct bolt_cursor *c, bolt_kv *out)
{
    if (c->state != CUR_ON) {
        if (out)
            memset(out, 0, sizeof *out);
        return BOLT_OK;
    }
    int rc = resync(c);
    if (rc)
        return rc;
    int ahead = c->resynced_ahead;
    rc = settle(c, c->state == CUR_ON, out, c->state);
    c->resynced_ahead = ahead;
    return rc;
}

int cur_node(struct bolt_cursor *c, node **out, uint32_t *index)
{
    node *n;
    int rc;
    if (c->depth == 0)
        return set_err(BOLT_ERR_INVALID_ARG, "cursor is not positioned");
    if (c->stack[0].n)
        n = c->stack[0].n;
    else if ((rc = bucket_root_node(c->b, &n)))
        return rc;
    for (int i = 0; i < c->depth - 1; i++) {
        if ((rc = node_child_at(c->b->tx, n, c->stack[i].index, &n)))
            return rc;
    }
    if (!n->leaf)
        return tx_fail(c->b->tx, set_err(BOLT_ERR_CORRUPT, "cursor path does not end at a leaf"));
    *out = n;
    *index = c->stack[c->depth - 1].index;
    return BOLT_OK;
}

/* The stored value of the element under the cursor, as written on the page:
 * for a nested bucket that is its header and (inline) page, which the public
 * kv hides. The cursor must be on an element (after a successful move). */
int cur_raw_value(struct bolt_cursor *c, const uint8_t **v, uint32_t *vl)
{
    if (c->state != CUR_ON || c->depth == 0)
        return set_err(BOLT_ERR_INVALID_ARG, "cursor is not on an element");
    const cursor_ref *top = &c->stack[c->depth - 1];
    const uint8_t *k; uint32_t kl, fl;
    return ref_kv(c, top, top->index, &k, &kl, v, vl, &fl);
}

/* ---- internal search used by bucket get/put/delete ---- */
int cur_locate(struct bolt_cursor *c, const uint8_t *key, size_t klen, int *found, bolt_kv *out)
{
    int rc = cur_search(c, key, klen);
    if (rc)
        return rc;
    cursor_ref *top = &c->stack[c->depth - 1];
    *found = 0;
    if (top->index < top->count) {
        const uint8_t *k, *v; uint32_t kl, vl, fl;
        if ((rc = ref_kv(c, top, top->index, &k, &kl, &v, &vl, &fl)))
            return rc;
        if (key_cmp(k, kl, key, klen) == 0) {
            *found = 1;
            out->key = k;
            out->key_len = kl;
            out->value = v;
            out->value_len = vl;
            out->flags = fl;
        }
    }
    return BOLT_OK;
}

/* ---- leaf runs for batch readers (packed.c) ---- */

int cur_leaf_run(struct bolt_cursor *c, const bpage **leaf, uint32_t *index)
{
    /* The same conditions under which cur_next may step within the leaf
     * without a resync: the path was built in this state of the tx. */
    if (c->state != CUR_ON || c->depth == 0 || c->mod_seq != c->b->tx->mod_seq || c->resynced_ahead)
        return 0;
    const cursor_ref *top = &c->stack[c->depth - 1];
    if (top->n || !top->leaf || top->index >= top->count)
        return 0;
    *leaf = &top->p;
    *index = top->index;
    return 1;
}

void cur_leaf_rest(struct bolt_cursor *c, uint32_t index, const uint8_t *key, size_t klen)
{
    c->stack[c->depth - 1].index = index;
    c->key = key;
    c->klen = klen;
}

int cur_leaf_move(struct bolt_cursor *c, uint32_t index, bolt_kv *out)
{
    c->stack[c->depth - 1].index = index;
    return settle(c, 1, out, CUR_PAST_END);
}

int cur_peek_next(struct bolt_cursor *c, const uint8_t **v, uint32_t *vl, uint32_t *flags)
{
    if (c->state != CUR_ON || c->depth == 0)
        return 0;
    const cursor_ref *top = &c->stack[c->depth - 1];
    if (!top->leaf || top->index + 1 >= top->count)
        return 0;
    if (top->n) {
        const inode *e = &top->n->in[top->index + 1];
        *v = e->value;
        *vl = e->vsize;
        *flags = e->flags;
        return 1;
    }
    const uint8_t *k;
    uint32_t kl;
    return page_leaf_elem(&top->p, top->index + 1, &k, &kl, v, vl, flags) == 0;
}

/* ---- public API ---- */

#include "tx.h"

int cur_enter(bolt_cursor *c, int write)
{
    if (!c || c->magic != CURSOR_MAGIC || !c->b)
        return set_err(BOLT_ERR_INVALID_ARG, "cursor is not initialised");
    return bucket_enter(c->b, write);
}

size_t bolt_cursor_size(void) { return sizeof(struct bolt_cursor); }

int bolt_cursor_init(bolt_cursor *c, bolt_bucket *b)
{
    if (!c || !b)
        return set_err(BOLT_ERR_INVALID_ARG, "cursor or bucket missing");
    int rc = tx_enter(b->tx, 0);
    if (rc)
        return rc;
    cur_init(c, b);
    tx_leave(b->tx);
    return BOLT_OK;
}

#define CURSOR_CALL(expr)                   \
    int rc = cur_enter(c, 0);               \
    if (rc)                                 \
        return rc;                          \
    rc = (expr);                            \
    if (rc && out)                          \
        memset(out, 0, sizeof *out);        \
    tx_leave(c->b->tx);                     \
    return rc

int bolt_cursor_first(bolt_cursor *c, bolt_kv *out) { CURSOR_CALL(cur_first(c, out)); }
int bolt_cursor_last(bolt_cursor *c, bolt_kv *out) { CURSOR_CALL(cur_last(c, out)); }
int bolt_cursor_next(bolt_cursor *c, bolt_kv *out) { CURSOR_CALL(cur_next(c, out)); }
int bolt_cursor_prev(bolt_cursor *c, bolt_kv *out) { CURSOR_CALL(cur_prev(c, out)); }
int bolt_cursor_seek(bolt_cursor *c, const uint8_t *key, size_t key_len, bolt_kv *out)
{
    CURSOR_CALL(cur_seek(c, key, key_len, out));
}

int bolt_cursor_delete(bolt_cursor *c)
{
    int rc = cur_enter(c, 1);
    if (rc)
        return rc;
    bolt_kv kv;
    rc = cur_current(c, &kv);
    if (!rc && c->resynced_ahead) {
        /* the item under the cursor is already gone */
    } else if (!rc && !kv.key) {
        rc = set_err(BOLT_ERR_INVALID_ARG, "cursor is not on an item");
    } else if (!rc && kv.flags) {
        rc = set_err(BOLT_ERR_INCOMPATIBLE, "cannot delete a nested bucket through a cursor");
    } else if (!rc) {
        node *n;
        uint32_t idx;
        rc = cur_node(c, &n, &idx);
        if (!rc) {
            node_remove(c->b->tx, n, idx);
            c->b->tx->mod_seq++; /* the next move re-seeks from the deleted key */
        }
    }
    tx_leave(c->b->tx);
    return rc;
}
