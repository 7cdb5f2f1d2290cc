/*
 * node.c - in-memory nodes of a write transaction.
 *
 * Unlike bbolt, an oversized node is split as soon as it grows past a few
 * pages instead of at commit: a random bulk load into one transaction then
 * stays O(N log N) rather than O(N^2) (each insert shifts a small array, not
 * one huge leaf). The new sibling has no page yet, so the parent's entry
 * points at it through `child`. Commit (spill) then cuts nodes into pages
 * with bbolt's rules: fill 50%, at least two keys per page.
 */
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "err.h"
#include "node.h"
#include "tx.h"

/* Split a node in memory once its image exceeds this many pages. */
#define EAGER_SPLIT_PAGES 2u

size_t inode_size(const node *n, const inode *e)
{
    return LEAF_ELEM_SIZE + e->ksize + (n->leaf ? e->vsize : 0);
}

int node_new(bolt_tx *tx, struct bolt_bucket *b, int leaf, node **out)
{
    node *n = calloc(1, sizeof *n);
    if (!n)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory for a node"));
    n->bucket = b;
    n->leaf = (uint8_t)leaf;
    n->size = PAGE_HEADER_SIZE;
    int rc = tx_track_node(tx, n);
    if (rc) {
        free(n);
        return rc;
    }
    *out = n;
    return BOLT_OK;
}

static int node_reserve(bolt_tx *tx, node *n, uint32_t need)
{
    if (need <= n->cap)
        return BOLT_OK;
    uint32_t nc = n->cap ? n->cap : 8;
    while (nc < need)
        nc *= 2;
    inode *ni = realloc(n->in, (size_t)nc * sizeof *ni);
    if (!ni)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory growing a node"));
    n->in = ni;
    n->cap = nc;
    return BOLT_OK;
}

int node_from_page(bolt_tx *tx, struct bolt_bucket *b, node *parent, const bpage *p, node **out)
{
    node *n;
    int rc = node_new(tx, b, (p->flags & PAGE_FLAG_LEAF) != 0, &n);
    if (rc)
        return rc;
    if ((rc = node_reserve(tx, n, p->count ? p->count : 1)))
        return rc;
    n->pgid = p->id;
    n->parent = parent;
    for (uint32_t i = 0; i < p->count; i++) {
        inode *e = &n->in[i];
        memset(e, 0, sizeof *e);
        int bad;
        if (n->leaf)
            bad = page_leaf_elem(p, i, &e->key, &e->ksize, &e->value, &e->vsize, &e->flags);
        else
            bad = page_branch_elem(p, i, &e->key, &e->ksize, &e->pgid);
        if (bad)
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                       (unsigned long long)p->id, i));
        n->size += inode_size(n, e);
    }
    n->n = p->count;
    *out = n;
    return BOLT_OK;
}

uint32_t node_search(const node *n, const uint8_t *key, size_t klen, int *exact)
{
    uint32_t lo = 0, hi = n->n;
    *exact = 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(n->in[mid].key, n->in[mid].ksize, key, klen);
        if (c < 0) {
            lo = mid + 1;
        } else {
            if (c == 0)
                *exact = 1;
            hi = mid;
        }
    }
    return lo;
}

int node_insert(bolt_tx *tx, node *n, uint32_t idx, int replace, const inode *e)
{
    if (replace && idx < n->n) {
        n->size -= inode_size(n, &n->in[idx]);
        n->in[idx] = *e;
        n->size += inode_size(n, e);
        return BOLT_OK;
    }
    int rc = node_reserve(tx, n, n->n + 1);
    if (rc)
        return rc;
    if (idx > n->n)
        idx = n->n;
    memmove(&n->in[idx + 1], &n->in[idx], (size_t)(n->n - idx) * sizeof *n->in);
    n->in[idx] = *e;
    n->n++;
    n->size += inode_size(n, e);
    return BOLT_OK;
}

void node_remove(bolt_tx *tx, node *n, uint32_t idx)
{
    if (idx >= n->n)
        return;
    n->size -= inode_size(n, &n->in[idx]);
    memmove(&n->in[idx], &n->in[idx + 1], (size_t)(n->n - idx - 1) * sizeof *n->in);
    n->n--;
    tx_mark_unbalanced(tx, n);
}

int node_child_at(bolt_tx *tx, node *n, uint32_t idx, node **out)
{
    if (n->leaf || idx >= n->n)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "branch node has no child %u", idx));
    inode *e = &n->in[idx];
    if (e->child) {
        *out = e->child;
        return BOLT_OK;
    }
    bpage p;
    int rc = tx_tree_page(tx, e->pgid, &p);
    if (rc)
        return rc;
    node *c;
    if ((rc = node_from_page(tx, n->bucket, n, &p, &c)))
        return rc;
    e->child = c;
    *out = c;
    return BOLT_OK;
}

static uint32_t child_index(const node *p, const node *c)
{
    for (uint32_t i = 0; i < p->n; i++)
        if (p->in[i].child == c)
            return i;
    return UINT32_MAX;
}

static void reparent(node *n)
{
    if (n->leaf)
        return;
    for (uint32_t i = 0; i < n->n; i++)
        if (n->in[i].child)
            n->in[i].child->parent = n;
}

static void recompute_size(node *n)
{
    size_t s = PAGE_HEADER_SIZE;
    for (uint32_t i = 0; i < n->n; i++)
        s += inode_size(n, &n->in[i]);
    n->size = s;
}

int node_maybe_split(bolt_tx *tx, node *n)
{
    while (n && n->n >= 2 * MIN_KEYS_PER_PAGE && n->size > (size_t)EAGER_SPLIT_PAGES * tx->ps) {
        /* Cut where half the bytes lie on each side. */
        size_t half = n->size / 2, acc = PAGE_HEADER_SIZE;
        uint32_t idx = 0;
        while (idx < n->n && acc < half)
            acc += inode_size(n, &n->in[idx++]);
        if (idx < MIN_KEYS_PER_PAGE)
            idx = MIN_KEYS_PER_PAGE;
        if (idx > n->n - MIN_KEYS_PER_PAGE)
            idx = n->n - MIN_KEYS_PER_PAGE;
        node *s;
        int rc = node_new(tx, n->bucket, n->leaf, &s);
        if (rc)
            return rc;
        uint32_t moved = n->n - idx;
        if ((rc = node_reserve(tx, s, moved * 2)))
            return rc;
        memcpy(s->in, &n->in[idx], (size_t)moved * sizeof *s->in);
        s->n = moved;
        n->n = idx;
        recompute_size(s);
        n->size -= s->size - PAGE_HEADER_SIZE;
        reparent(s);
        inode e = {0};
        e.key = s->in[0].key;
        e.ksize = s->in[0].ksize;
        e.child = s;
        node *p = n->parent;
        if (!p) {
            if ((rc = node_new(tx, n->bucket, 0, &p)))
                return rc;
            inode first = {0};
            first.key = n->in[0].key;
            first.ksize = n->in[0].ksize;
            first.pgid = n->pgid;
            first.child = n;
            if ((rc = node_insert(tx, p, 0, 0, &first)) || (rc = node_insert(tx, p, 1, 0, &e)))
                return rc;
            n->parent = p;
            s->parent = p;
            n->bucket->root_node = p;
            return BOLT_OK;
        }
        uint32_t at = child_index(p, n);
        if (at == UINT32_MAX)
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "node missing from its parent"));
        /* The entry of a leftmost child may still carry an older, larger
         * first key (smaller keys are routed to index 0 anyway). Refresh it
         * so the new sibling's key sorts after it. */
        p->size -= p->in[at].ksize;
        p->in[at].key = n->in[0].key;
        p->in[at].ksize = n->in[0].ksize;
        p->size += p->in[at].ksize;
        s->parent = p;
        if ((rc = node_insert(tx, p, at + 1, 0, &e)))
            return rc;
        n = p; /* the parent grew: it may need a split too */
    }
    return BOLT_OK;
}

static int node_free_page(bolt_tx *tx, node *n)
{
    if (!n->pgid)
        return BOLT_OK;
    uint64_t id = n->pgid;
    n->pgid = 0;
    return tx_free_page(tx, id);
}

int node_rebalance(bolt_tx *tx, node *n)
{
    int rc;
    while (n && n->unbalanced && !n->dead && !n->bucket->deleted) {
        n->unbalanced = 0;
        uint32_t minkeys = n->leaf ? 1 : 2;
        if (n->size > tx->ps / REBALANCE_DIV && n->n > minkeys)
            return BOLT_OK;
        node *p = n->parent;
        if (!p) {
            /* A root branch with a single child collapses into that child. */
            if (!n->leaf && n->n == 1) {
                node *c;
                if ((rc = node_child_at(tx, n, 0, &c)))
                    return rc;
                free(n->in);
                n->in = c->in;
                n->n = c->n;
                n->cap = c->cap;
                n->size = c->size;
                n->leaf = c->leaf;
                c->in = NULL;
                c->n = c->cap = 0;
                c->dead = 1;
                reparent(n);
                if ((rc = node_free_page(tx, c)))
                    return rc;
            }
            return BOLT_OK;
        }
        uint32_t idx = child_index(p, n);
        if (idx == UINT32_MAX)
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "node missing from its parent"));
        if (n->n == 0) {
            node_remove(tx, p, idx);
            n->dead = 1;
            if ((rc = node_free_page(tx, n)))
                return rc;
            n = p;
            continue;
        }
        if (p->n < 2)
            return BOLT_OK; /* no sibling; the parent's own rebalance deals with it */
        node *dst, *src;
        uint32_t src_idx;
        if (idx == 0) {
            dst = n;
            if ((rc = node_child_at(tx, p, 1, &src)))
                return rc;
            src_idx = 1;
        } else {
            src = n;
            if ((rc = node_child_at(tx, p, idx - 1, &dst)))
                return rc;
            src_idx = idx;
        }
        if (dst->leaf != src->leaf)
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "siblings of different kinds (leaf and branch)"));
        if ((rc = node_reserve(tx, dst, dst->n + src->n)))
            return rc;
        memcpy(&dst->in[dst->n], src->in, (size_t)src->n * sizeof *src->in);
        dst->n += src->n;
        dst->size += src->size - PAGE_HEADER_SIZE;
        src->n = 0;
        src->dead = 1;
        reparent(dst);
        node_remove(tx, p, src_idx);
        if ((rc = node_free_page(tx, src)))
            return rc;
        n = p;
    }
    return BOLT_OK;
}

static void write_range(const inode *in, uint32_t cnt, int leaf, uint8_t *buf)
{
    put16(buf + PAGE_OFF_FLAGS, leaf ? PAGE_FLAG_LEAF : PAGE_FLAG_BRANCH);
    put16(buf + PAGE_OFF_COUNT, (uint16_t)cnt);
    size_t data = PAGE_HEADER_SIZE + (size_t)cnt * LEAF_ELEM_SIZE;
    for (uint32_t i = 0; i < cnt; i++) {
        uint8_t *e = buf + PAGE_HEADER_SIZE + (size_t)i * LEAF_ELEM_SIZE;
        uint32_t pos = (uint32_t)(data - (PAGE_HEADER_SIZE + (size_t)i * LEAF_ELEM_SIZE));
        const inode *x = &in[i];
        if (leaf) {
            put32(e, x->flags);
            put32(e + 4, pos);
            put32(e + 8, x->ksize);
            put32(e + 12, x->vsize);
        } else {
            put32(e, pos);
            put32(e + 4, x->ksize);
            put64(e + 8, x->pgid);
        }
        if (x->ksize)
            memcpy(buf + data, x->key, x->ksize);
        data += x->ksize;
        if (leaf) {
            if (x->vsize)
                memcpy(buf + data, x->value, x->vsize);
            data += x->vsize;
        }
    }
}

void node_write(const node *n, uint8_t *buf)
{
    write_range(n->in, n->n, n->leaf, buf);
}

static int spill_push(bolt_tx *tx, spill_vec *out, const uint8_t *k, uint32_t kl, uint64_t pgid)
{
    if (out->n == out->cap) {
        size_t nc = out->cap ? out->cap * 2 : 8;
        spill_entry *nv = realloc(out->v, nc * sizeof *nv);
        if (!nv)
            return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory during commit"));
        out->v = nv;
        out->cap = nc;
    }
    out->v[out->n].key = k;
    out->v[out->n].ksize = kl;
    out->v[out->n].pgid = pgid;
    out->n++;
    return BOLT_OK;
}

static int write_piece(bolt_tx *tx, const node *n, uint32_t start, uint32_t end, enum run_place place,
                       spill_vec *out)
{
    size_t size = PAGE_HEADER_SIZE;
    for (uint32_t i = start; i < end; i++)
        size += inode_size(n, &n->in[i]);
    if (end - start > 0xFFFFu)
        return tx_fail(tx, set_err(BOLT_ERR_INVALID_ARG, "too many elements for one page"));
    dirty_page *d;
    int rc = tx_allocate(tx, (size + tx->ps - 1) / tx->ps, place, &d);
    if (rc)
        return rc;
    write_range(&n->in[start], end - start, n->leaf, d->buf);
    const uint8_t *k = end > start ? n->in[start].key : NULL;
    uint32_t kl = end > start ? n->in[start].ksize : 0;
    return spill_push(tx, out, k, kl, d->pgid);
}

int node_spill(bolt_tx *tx, node *n, spill_vec *out)
{
    int rc;
    if (n->dead)
        return BOLT_OK;
    if (!n->leaf) {
        /* Children first: their pages (and first keys) replace our entries. */
        uint32_t total = 0;
        inode *neu = NULL;
        uint32_t cap = 0;
        for (uint32_t i = 0; i < n->n; i++) {
            inode *e = &n->in[i];
            spill_vec sub = {0};
            if (e->child) {
                if ((rc = node_spill(tx, e->child, &sub))) {
                    free(sub.v);
                    free(neu);
                    return rc;
                }
            } else if ((rc = spill_push(tx, &sub, e->key, e->ksize, e->pgid))) {
                free(neu);
                return rc;
            }
            if (total + sub.n > cap) {
                uint32_t nc = cap ? cap : 8;
                while (nc < total + sub.n)
                    nc *= 2;
                inode *ni = realloc(neu, (size_t)nc * sizeof *ni);
                if (!ni) {
                    free(sub.v);
                    free(neu);
                    return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory during commit"));
                }
                neu = ni;
                cap = nc;
            }
            for (size_t j = 0; j < sub.n; j++) {
                inode x = {0};
                x.key = sub.v[j].key;
                x.ksize = sub.v[j].ksize;
                x.pgid = sub.v[j].pgid;
                neu[total++] = x;
            }
            free(sub.v);
        }
        free(n->in);
        n->in = neu;
        n->n = total;
        n->cap = cap;
        if (total == 0)
            n->leaf = 1; /* every child vanished: an empty leaf is the honest image */
        recompute_size(n);
    }
    /* decided by the page the node was read from, which is freed now */
    enum run_place place = run_place_for(tx, n);
    if ((rc = node_free_page(tx, n)))
        return rc;
    if (n->n == 0)
        return write_piece(tx, n, 0, 0, place, out);
    /* Cut into pages the way bbolt's splitTwo/splitIndex does. */
    size_t threshold = (size_t)tx->ps * FILL_PERCENT_NUM / FILL_PERCENT_DEN;
    uint32_t start = 0;
    size_t rest = n->size;
    while (start < n->n) {
        uint32_t remaining = n->n - start;
        uint32_t end;
        if (remaining <= 2 * MIN_KEYS_PER_PAGE || rest < tx->ps) {
            end = n->n;
        } else {
            size_t sz = PAGE_HEADER_SIZE;
            uint32_t idx = start;
            for (uint32_t i = start; i < n->n - MIN_KEYS_PER_PAGE; i++) {
                idx = i;
                size_t el = inode_size(n, &n->in[i]);
                if (i - start >= MIN_KEYS_PER_PAGE && sz + el > threshold)
                    break;
                sz += el;
            }
            end = idx;
            if (end <= start)
                end = start + 1;
        }
        if ((rc = write_piece(tx, n, start, end, place, out)))
            return rc;
        for (uint32_t i = start; i < end; i++)
            rest -= inode_size(n, &n->in[i]);
        start = end;
    }
    return BOLT_OK;
}

static int page_free_tree(bolt_tx *tx, uint64_t pgid, int depth)
{
    if (depth > MAX_TREE_DEPTH)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: tree deeper than %d levels",
                                   (unsigned long long)pgid, MAX_TREE_DEPTH));
    bpage p;
    int rc = tx_tree_page(tx, pgid, &p);
    if (rc)
        return rc;
    if (p.flags & PAGE_FLAG_BRANCH) {
        for (uint32_t i = 0; i < p.count; i++) {
            const uint8_t *k; uint32_t kl; uint64_t c;
            if (page_branch_elem(&p, i, &k, &kl, &c))
                return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                           (unsigned long long)pgid, i));
            if ((rc = page_free_tree(tx, c, depth + 1)))
                return rc;
        }
    }
    return tx_free_page(tx, pgid);
}

int node_free_tree(bolt_tx *tx, node *n, int depth)
{
    int rc;
    if (depth > MAX_TREE_DEPTH)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "tree deeper than %d levels", MAX_TREE_DEPTH));
    if (n->dead)
        return BOLT_OK;
    if (!n->leaf) {
        for (uint32_t i = 0; i < n->n; i++) {
            inode *e = &n->in[i];
            rc = e->child ? node_free_tree(tx, e->child, depth + 1) : page_free_tree(tx, e->pgid, depth + 1);
            if (rc)
                return rc;
        }
    }
    n->dead = 1;
    return node_free_page(tx, n);
}

int page_tree_free(bolt_tx *tx, uint64_t root) { return page_free_tree(tx, root, 0); }
