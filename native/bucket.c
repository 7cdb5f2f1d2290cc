/*
 * bucket.c - buckets: handles, get/put/delete, nested buckets (inline or
 * with their own tree), sequences, spill at commit, stats.
 */
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "cursor.h"
#include "err.h"
#include "tx.h"

static int name_eq(const struct bolt_bucket *c, const uint8_t *name, size_t len, size_t hash)
{
    return c->name_hash == hash && c->name_len == len && (len == 0 || memcmp(c->name, name, len) == 0);
}

static size_t name_hash(const uint8_t *name, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ name[i]) * 0x100000001b3ull;
    return (size_t)(h ^ (h >> 29));
}

/* The open handle for name, if any: a hash index keeps lookups O(1) when a
 * tx opens thousands of sub-buckets (one per containerd image, say). */
static struct bolt_bucket *cached_child(struct bolt_bucket *b, const uint8_t *name, size_t len)
{
    if (!b->chash_cap)
        return NULL;
    size_t mask = b->chash_cap - 1;
    size_t hash = name_hash(name, len);
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        uint32_t slot = b->chash[i];
        if (!slot)
            return NULL;
        struct bolt_bucket *c = b->children[slot - 1];
        if (!c->deleted && name_eq(c, name, len, hash))
            return c;
    }
}

static void hash_insert(struct bolt_bucket *b, size_t idx)
{
    struct bolt_bucket *c = b->children[idx];
    size_t mask = b->chash_cap - 1;
    size_t i = c->name_hash & mask;
    while (b->chash[i])
        i = (i + 1) & mask;
    b->chash[i] = (uint32_t)(idx + 1);
}

/* Register children[nchildren - 1] in the index, growing it as needed. */
static int index_child(struct bolt_bucket *b)
{
    if (b->nchildren * 2 > b->chash_cap) {
        size_t nc = b->chash_cap ? b->chash_cap * 2 : 16;
        uint32_t *nh = calloc(nc, sizeof *nh);
        if (!nh)
            return set_err(BOLT_ERR_NOMEM, "out of memory");
        free(b->chash);
        b->chash = nh;
        b->chash_cap = nc;
        for (size_t i = 0; i < b->nchildren; i++)
            hash_insert(b, i);
        return BOLT_OK;
    }
    hash_insert(b, b->nchildren - 1);
    return BOLT_OK;
}

int bucket_root_page(struct bolt_bucket *b, bpage *out)
{
    if (b->root)
        return tx_tree_page(b->tx, b->root, out);
    if (!b->inline_page || b->inline_len < PAGE_HEADER_SIZE)
        return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "inline bucket value too short"));
    page_header(b->inline_page, b->inline_len, out);
    out->id = 0;
    if (out->flags != PAGE_FLAG_LEAF)
        return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "inline bucket page: invalid type: %s (flags 0x%x)",
                                      page_type_name(out->flags), out->flags));
    if (PAGE_HEADER_SIZE + (size_t)out->count * LEAF_ELEM_SIZE > out->span)
        return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "inline bucket page: %u elements exceed the value",
                                      out->count));
    return BOLT_OK;
}

int bucket_root_node(struct bolt_bucket *b, node **out)
{
    if (b->root_node) {
        *out = b->root_node;
        return BOLT_OK;
    }
    bpage p;
    int rc = bucket_root_page(b, &p);
    if (rc)
        return rc;
    node *n;
    if ((rc = node_from_page(b->tx, b, NULL, &p, &n)))
        return rc;
    n->pgid = b->root;
    b->root_node = n;
    *out = n;
    return BOLT_OK;
}

/* Parse a sub-bucket value into a new handle registered with the tx. */
static int bucket_open_value(struct bolt_bucket *parent, const uint8_t *name, size_t len,
                             const uint8_t *v, size_t vlen, struct bolt_bucket **out)
{
    bolt_tx *tx = parent->tx;
    if (parent->depth + 1 > MAX_BUCKET_DEPTH)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "buckets nested deeper than %d levels (corrupt or cyclic)",
                                   MAX_BUCKET_DEPTH));
    if (!v || vlen < BUCKET_HEADER_SIZE)
        return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "bucket value of %zu bytes is shorter than its header", vlen));
    if (len > SIZE_MAX - sizeof(struct bolt_bucket))
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "bucket name of %zu bytes is too large", len));
    /* The name lives in the same allocation: one malloc and one free per handle. */
    struct bolt_bucket *c = calloc(1, sizeof *c + len);
    if (!c)
        return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
    if (parent->nchildren == parent->capchildren) {
        size_t nc = parent->capchildren ? parent->capchildren * 2 : 4;
        struct bolt_bucket **nv = realloc(parent->children, nc * sizeof *nv);
        if (!nv) {
            free(c);
            return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
        }
        parent->children = nv;
        parent->capchildren = nc;
    }
    c->name = (uint8_t *)(c + 1);
    memcpy(c->name, name, len);
    c->name_len = len;
    c->name_hash = name_hash(name, len);
    c->tx = tx;
    c->parent = parent;
    c->depth = parent->depth + 1;
    c->root = le64(v);
    c->sequence = le64(v + 8);
    if (c->root == 0) {
        c->inline_page = v + BUCKET_HEADER_SIZE;
        c->inline_len = vlen - BUCKET_HEADER_SIZE;
    }
    parent->children[parent->nchildren++] = c;
    c->next_all = tx->buckets;
    tx->buckets = c;
    if (index_child(parent)) {
        parent->nchildren--;
        return tx_fail(tx, BOLT_ERR_NOMEM);
    }
    *out = c;
    return BOLT_OK;
}

int bucket_child_view(struct bolt_bucket *b, const uint8_t *name, size_t len, const uint8_t *v, size_t vlen,
                      struct bolt_bucket *scratch, struct bolt_bucket **out)
{
    struct bolt_bucket *cached = cached_child(b, name, len);
    if (cached) {
        /* An open handle may hold this tx's changes (its nodes), which the
         * parent's stored value does not show until commit. */
        *out = cached;
        return BOLT_OK;
    }
    if (b->depth + 1 > MAX_BUCKET_DEPTH)
        return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "buckets nested deeper than %d levels (corrupt or cyclic)",
                                      MAX_BUCKET_DEPTH));
    if (!v || vlen < BUCKET_HEADER_SIZE)
        return tx_fail(b->tx, set_err(BOLT_ERR_CORRUPT, "bucket value of %zu bytes is shorter than its header", vlen));
    memset(scratch, 0, sizeof *scratch);
    scratch->tx = b->tx;
    scratch->parent = b;
    scratch->name = (uint8_t *)name; /* borrowed: the view never outlives the caller's key */
    scratch->name_len = len;
    scratch->name_hash = name_hash(name, len);
    scratch->depth = b->depth + 1;
    scratch->root = le64(v);
    scratch->sequence = le64(v + 8);
    if (scratch->root == 0) {
        scratch->inline_page = v + BUCKET_HEADER_SIZE;
        scratch->inline_len = vlen - BUCKET_HEADER_SIZE;
    }
    *out = scratch;
    return BOLT_OK;
}

int bucket_child(struct bolt_bucket *b, const uint8_t *name, size_t len, struct bolt_bucket **out)
{
    struct bolt_bucket *cached = cached_child(b, name, len);
    if (cached) {
        *out = cached;
        return BOLT_OK;
    }
    struct bolt_cursor c;
    cur_init(&c, b);
    int found;
    bolt_kv kv;
    int rc = cur_locate(&c, name, len, &found, &kv);
    if (rc)
        return rc;
    if (!found)
        return set_err(BOLT_ERR_BUCKET_NOT_FOUND, "bucket not found");
    if (!(kv.flags & LEAF_FLAG_BUCKET))
        return set_err(BOLT_ERR_INCOMPATIBLE, "key holds a value, not a bucket");
    return bucket_open_value(b, name, len, kv.value, kv.value_len, out);
}

static int check_key(const uint8_t *k, size_t kl)
{
    if (!k || kl == 0)
        return set_err(BOLT_ERR_KEY_REQUIRED, "key required");
    if (kl > MAX_KEY_SIZE)
        return set_err(BOLT_ERR_KEY_TOO_LARGE, "key too large: %zu bytes (maximum %u)", kl, MAX_KEY_SIZE);
    return BOLT_OK;
}

/* Insert or replace an entry at the leaf where key belongs. */
static int leaf_store(struct bolt_bucket *b, struct bolt_cursor *c, int found, const uint8_t *k,
                      size_t kl, const uint8_t *v, size_t vl, uint32_t flags, int copy_key)
{
    bolt_tx *tx = b->tx;
    inode e = {0};
    if (copy_key) {
        uint8_t *kc = tx_arena(tx, kl);
        if (!kc)
            return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory copying a key"));
        memcpy(kc, k, kl);
        k = kc;
    }
    e.key = k;
    e.ksize = (uint32_t)kl;
    e.value = v;
    e.vsize = (uint32_t)vl;
    e.flags = flags;
    node *n;
    uint32_t idx;
    int rc = cur_node(c, &n, &idx);
    if (rc)
        return rc;
    if ((rc = node_insert(tx, n, idx, found, &e)))
        return rc;
    tx->mod_seq++;
    return node_maybe_split(tx, n);
}

int bucket_put_internal(struct bolt_bucket *b, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    int rc = check_key(k, kl);
    if (rc)
        return rc;
    if (vl > MAX_VALUE_SIZE)
        return set_err(BOLT_ERR_VALUE_TOO_LARGE, "value too large: %zu bytes (maximum %u)", vl, MAX_VALUE_SIZE);
    if (b->is_root)
        return set_err(BOLT_ERR_INCOMPATIBLE, "the top level holds only buckets, not plain values");
    struct bolt_cursor c;
    cur_init(&c, b);
    int found;
    bolt_kv kv;
    if ((rc = cur_locate(&c, k, kl, &found, &kv)))
        return rc;
    if (found && (kv.flags & LEAF_FLAG_BUCKET))
        return set_err(BOLT_ERR_INCOMPATIBLE, "key names a nested bucket, not a value");
    uint8_t *vc = tx_arena(b->tx, vl ? vl : 1);
    if (!vc)
        return tx_fail(b->tx, set_err(BOLT_ERR_NOMEM, "out of memory copying a value of %zu bytes", vl));
    if (vl)
        memcpy(vc, v, vl);
    if (found) /* keep the stored key bytes: same content, no new copy */
        return leaf_store(b, &c, 1, kv.key, kv.key_len, vc, vl, 0, 0);
    return leaf_store(b, &c, 0, k, kl, vc, vl, 0, 1);
}

int bucket_get_internal(struct bolt_bucket *b, const uint8_t *k, size_t kl, bolt_kv *out)
{
    struct bolt_cursor c;
    cur_init(&c, b);
    int found;
    bolt_kv kv;
    memset(out, 0, sizeof *out);
    int rc = cur_locate(&c, k, kl, &found, &kv);
    if (rc || !found)
        return rc;
    out->key = kv.key;
    out->key_len = kv.key_len;
    out->flags = kv.flags & LEAF_FLAG_BUCKET;
    if (!out->flags) {
        out->value = kv.value;
        out->value_len = kv.value_len;
    }
    return BOLT_OK;
}

static int bucket_del_key(struct bolt_bucket *b, const uint8_t *k, size_t kl, int want_bucket)
{
    struct bolt_cursor c;
    cur_init(&c, b);
    int found;
    bolt_kv kv;
    int rc = cur_locate(&c, k, kl, &found, &kv);
    if (rc)
        return rc;
    if (!found)
        return want_bucket ? set_err(BOLT_ERR_BUCKET_NOT_FOUND, "bucket not found") : BOLT_OK;
    if (!!(kv.flags & LEAF_FLAG_BUCKET) != want_bucket)
        return set_err(BOLT_ERR_INCOMPATIBLE, want_bucket ? "key holds a value, not a bucket"
                                                          : "key names a nested bucket, not a value");
    node *n;
    uint32_t idx;
    if ((rc = cur_node(&c, &n, &idx)))
        return rc;
    node_remove(b->tx, n, idx);
    b->tx->mod_seq++;
    return BOLT_OK;
}

int bucket_create_child(struct bolt_bucket *b, const uint8_t *name, size_t len, int if_not_exists,
                        struct bolt_bucket **out)
{
    if (!name || len == 0)
        return set_err(BOLT_ERR_BUCKET_NAME_REQUIRED, "bucket name required");
    /* bbolt limits keys only in Put: a bucket name may exceed MAX_KEY_SIZE,
     * and containerd relies on that (an image name is a bucket name). The
     * element's u32 length fields are the real bound. */
    if (len > MAX_VALUE_SIZE)
        return set_err(BOLT_ERR_KEY_TOO_LARGE, "bucket name too large: %zu bytes (maximum %u)", len, MAX_VALUE_SIZE);
    struct bolt_cursor c;
    cur_init(&c, b);
    int found;
    bolt_kv kv;
    int rc = cur_locate(&c, name, len, &found, &kv);
    if (rc)
        return rc;
    if (found) {
        if (!(kv.flags & LEAF_FLAG_BUCKET))
            return set_err(BOLT_ERR_INCOMPATIBLE, "key holds a value, not a bucket");
        if (!if_not_exists)
            return set_err(BOLT_ERR_BUCKET_EXISTS, "bucket already exists");
        return bucket_child(b, name, len, out);
    }
    /* A new bucket starts inline: header {0, 0} then an empty leaf page. */
    uint8_t *v = tx_arena(b->tx, BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE);
    if (!v)
        return tx_fail(b->tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
    memset(v, 0, BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE);
    put16(v + BUCKET_HEADER_SIZE + PAGE_OFF_FLAGS, PAGE_FLAG_LEAF);
    if ((rc = leaf_store(b, &c, 0, name, len, v, BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE, LEAF_FLAG_BUCKET, 1)))
        return rc;
    return bucket_child(b, name, len, out);
}

static void mark_deleted(struct bolt_bucket *b)
{
    b->deleted = 1;
    for (size_t i = 0; i < b->nchildren; i++)
        mark_deleted(b->children[i]);
}

/* Free every page of b and of all buckets below it. Sub-bucket names are
 * collected first and deleted afterwards, so no entry is ever skipped. */
static int bucket_free_all(struct bolt_bucket *b)
{
    bolt_tx *tx = b->tx;
    struct bolt_cursor c;
    bolt_kv kv;
    cur_init(&c, b);
    uint8_t **names = NULL;
    size_t *lens = NULL, n = 0, cap = 0;
    /* A sound tree holds at most this many entries (16-byte elements);
     * more means pages are shared, so stop instead of walking forever. */
    uint64_t budget = tx->meta.pgid * (tx->ps / LEAF_ELEM_SIZE) + 1;
    int rc = cur_first(&c, &kv);
    while (!rc && kv.key) {
        if (budget-- == 0) {
            rc = tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "bucket holds more entries than its pages can (shared pages)"));
            break;
        }
        if (kv.flags & LEAF_FLAG_BUCKET) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 8;
                uint8_t **nn = realloc(names, nc * sizeof *nn);
                size_t *nl = nn ? realloc(lens, nc * sizeof *nl) : NULL;
                if (nn)
                    names = nn;
                if (!nn || !nl) {
                    rc = tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
                    break;
                }
                lens = nl;
                cap = nc;
            }
            names[n] = (uint8_t *)kv.key; /* stable for the tx's life */
            lens[n++] = kv.key_len;
        }
        rc = cur_next(&c, &kv);
    }
    for (size_t i = 0; !rc && i < n; i++) {
        struct bolt_bucket *sub;
        rc = bucket_child(b, names[i], lens[i], &sub);
        if (!rc)
            rc = bucket_free_all(sub);
    }
    free(names);
    free(lens);
    if (rc)
        return tx_fail(tx, rc);
    if (b->root_node)
        rc = node_free_tree(tx, b->root_node, 0);
    else if (b->root)
        rc = page_tree_free(tx, b->root);
    b->root = 0;
    mark_deleted(b);
    return rc;
}

int bucket_delete_child(struct bolt_bucket *b, const uint8_t *name, size_t len)
{
    if (!name || len == 0)
        return set_err(BOLT_ERR_BUCKET_NAME_REQUIRED, "bucket name required");
    struct bolt_bucket *child;
    int rc = bucket_child(b, name, len, &child);
    if (rc)
        return rc;
    if ((rc = bucket_free_all(child)))
        return rc;
    /* The handle stays in b->children, flagged deleted: spill skips it. */
    return bucket_del_key(b, name, len, 1);
}

int bucket_set_seq_internal(struct bolt_bucket *b, uint64_t seq)
{
    /* A materialised root makes the parent rewrite our header at commit. */
    node *n;
    int rc = bucket_root_node(b, &n);
    if (rc)
        return rc;
    b->sequence = seq;
    b->tx->mod_seq++;
    return BOLT_OK;
}

static int inlineable(const struct bolt_bucket *b)
{
    const node *n = b->root_node;
    if (!n || !n->leaf || n->dead)
        return 0;
    if (n->size > b->tx->ps / INLINE_DIV)
        return 0;
    for (uint32_t i = 0; i < n->n; i++)
        if (n->in[i].flags & LEAF_FLAG_BUCKET)
            return 0;
    return 1;
}

int bucket_spill(struct bolt_bucket *b)
{
    bolt_tx *tx = b->tx;
    int rc;
    for (size_t i = 0; i < b->nchildren; i++) {
        struct bolt_bucket *c = b->children[i];
        if (c->deleted)
            continue;
        uint8_t *v;
        size_t vl;
        if (inlineable(c)) {
            node *n = c->root_node;
            if (n->pgid) {
                uint64_t id = n->pgid;
                n->pgid = 0;
                if ((rc = tx_free_page(tx, id)))
                    return rc;
            }
            vl = BUCKET_HEADER_SIZE + n->size;
            if (!(v = tx_arena(tx, vl)))
                return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
            memset(v, 0, vl);
            put64(v, 0);
            put64(v + 8, c->sequence);
            node_write(n, v + BUCKET_HEADER_SIZE);
            c->root = 0;
        } else {
            if ((rc = bucket_spill(c)))
                return rc;
            vl = BUCKET_HEADER_SIZE;
            if (!(v = tx_arena(tx, vl)))
                return tx_fail(tx, set_err(BOLT_ERR_NOMEM, "out of memory"));
            put64(v, c->root);
            put64(v + 8, c->sequence);
        }
        if (!c->root_node)
            continue;
        struct bolt_cursor cur;
        cur_init(&cur, b);
        int found;
        bolt_kv kv;
        if ((rc = cur_locate(&cur, c->name, c->name_len, &found, &kv)))
            return rc;
        if (!found || !(kv.flags & LEAF_FLAG_BUCKET))
            return tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "bucket entry vanished from its parent during commit"));
        if ((rc = leaf_store(b, &cur, 1, kv.key, kv.key_len, v, vl, LEAF_FLAG_BUCKET, 0)))
            return rc;
    }
    if (!b->root_node)
        return BOLT_OK;
    spill_vec out = {0};
    if ((rc = node_spill(tx, b->root_node, &out))) {
        free(out.v);
        return rc;
    }
    /* A root that split needs a parent; repeat until one page remains. */
    while (out.n > 1) {
        node *p;
        if ((rc = node_new(tx, b, 0, &p)))
            break;
        for (size_t i = 0; i < out.n && !rc; i++) {
            inode e = {0};
            e.key = out.v[i].key;
            e.ksize = out.v[i].ksize;
            e.pgid = out.v[i].pgid;
            rc = node_insert(tx, p, (uint32_t)i, 0, &e);
        }
        if (rc)
            break;
        out.n = 0;
        if ((rc = node_spill(tx, p, &out)))
            break;
    }
    if (!rc) {
        if (out.n != 1)
            rc = tx_fail(tx, set_err(BOLT_ERR_CORRUPT, "spill produced no root page"));
        else
            b->root = out.v[0].pgid;
    }
    free(out.v);
    return rc;
}

void bucket_free_handle(struct bolt_bucket *b)
{
    free(b->chash);
    free(b->children);
    free(b);
}

/* ---- stats (bbolt's BucketStats, computed from committed pages) ---- */

static void stats_add(bolt_bucket_stats *s, const bolt_bucket_stats *o)
{
    s->branch_page_n += o->branch_page_n;
    s->branch_overflow_n += o->branch_overflow_n;
    s->leaf_page_n += o->leaf_page_n;
    s->leaf_overflow_n += o->leaf_overflow_n;
    s->key_n += o->key_n;
    if (s->depth < o->depth)
        s->depth = o->depth;
    s->branch_alloc += o->branch_alloc;
    s->branch_inuse += o->branch_inuse;
    s->leaf_alloc += o->leaf_alloc;
    s->leaf_inuse += o->leaf_inuse;
    s->bucket_n += o->bucket_n;
    s->inline_bucket_n += o->inline_bucket_n;
    s->inline_bucket_inuse += o->inline_bucket_inuse;
}

static int stats_bucket(bolt_tx *tx, uint64_t root, const uint8_t *inl, size_t inl_len, int bdepth,
                        bolt_bucket_stats *s, uint64_t *budget);

/* `budget` counts page visits still allowed: a sound file reaches each of
 * its pages once, so running out means shared subtrees or cycles, not a
 * huge bucket. Inline pages are not counted: they have no id, a leaf can
 * hold hundreds of them (containerd's labels and target buckets), and they
 * are bounded anyway, as an inline page's own bucket entries are never
 * followed. */
static int stats_page(bolt_tx *tx, const bpage *p, int is_inline, int depth, int bdepth, bolt_bucket_stats *s,
                      bolt_bucket_stats *sub, uint64_t *budget)
{
    int rc;
    if (!is_inline && (*budget)-- == 0)
        return set_err(BOLT_ERR_CORRUPT, "page %llu: pages reached more than once (corrupt page graph)",
                       (unsigned long long)p->id);
    if (depth >= MAX_TREE_DEPTH)
        return set_err(BOLT_ERR_CORRUPT, "page %llu: tree deeper than %d levels", (unsigned long long)p->id,
                       MAX_TREE_DEPTH);
    if (p->flags & PAGE_FLAG_LEAF) {
        s->key_n += p->count;
        int64_t used = PAGE_HEADER_SIZE;
        if (p->count) {
            size_t eoff = PAGE_HEADER_SIZE + (size_t)(p->count - 1) * LEAF_ELEM_SIZE;
            if (eoff + LEAF_ELEM_SIZE > p->span)
                return set_err(BOLT_ERR_CORRUPT, "page %llu: elements exceed the page", (unsigned long long)p->id);
            const uint8_t *e = p->data + eoff;
            used += (int64_t)LEAF_ELEM_SIZE * (p->count - 1);
            used += (int64_t)le32(e + 4) + le32(e + 8) + le32(e + 12);
        }
        if (is_inline) {
            s->inline_bucket_inuse += used;
        } else {
            s->leaf_page_n++;
            s->leaf_inuse += used;
            s->leaf_overflow_n += p->overflow;
            for (uint32_t i = 0; i < p->count; i++) {
                const uint8_t *k, *v; uint32_t kl, vl, fl;
                if (page_leaf_elem(p, i, &k, &kl, &v, &vl, &fl))
                    return set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                                   (unsigned long long)p->id, i);
                if (!(fl & LEAF_FLAG_BUCKET))
                    continue;
                if (vl < BUCKET_HEADER_SIZE)
                    return set_err(BOLT_ERR_CORRUPT, "page %llu: bucket value too short", (unsigned long long)p->id);
                bolt_bucket_stats cs;
                uint64_t croot = le64(v);
                if ((rc = stats_bucket(tx, croot, croot ? NULL : v + BUCKET_HEADER_SIZE,
                                       croot ? 0 : vl - BUCKET_HEADER_SIZE, bdepth + 1, &cs, budget)))
                    return rc;
                stats_add(sub, &cs);
            }
        }
    } else if (p->flags & PAGE_FLAG_BRANCH) {
        s->branch_page_n++;
        size_t eoff = PAGE_HEADER_SIZE + (size_t)(p->count - 1) * BRANCH_ELEM_SIZE;
        const uint8_t *e = p->data + eoff;
        s->branch_inuse += (int64_t)PAGE_HEADER_SIZE + (int64_t)BRANCH_ELEM_SIZE * (p->count - 1) + le32(e) +
                           le32(e + 4);
        s->branch_overflow_n += p->overflow;
        for (uint32_t i = 0; i < p->count; i++) {
            const uint8_t *k; uint32_t kl; uint64_t c;
            if (page_branch_elem(p, i, &k, &kl, &c))
                return set_err(BOLT_ERR_CORRUPT, "page %llu: element %u lies outside the page",
                               (unsigned long long)p->id, i);
            bpage cp;
            if ((rc = tx_tree_page(tx, c, &cp)) || (rc = stats_page(tx, &cp, 0, depth + 1, bdepth, s, sub, budget)))
                return rc;
        }
    }
    if (depth + 1 > s->depth)
        s->depth = depth + 1;
    return BOLT_OK;
}

static int stats_bucket(bolt_tx *tx, uint64_t root, const uint8_t *inl, size_t inl_len, int bdepth,
                        bolt_bucket_stats *s, uint64_t *budget)
{
    bolt_bucket_stats sub;
    memset(s, 0, sizeof *s);
    memset(&sub, 0, sizeof sub);
    if (bdepth > MAX_BUCKET_DEPTH)
        return set_err(BOLT_ERR_CORRUPT, "buckets nested deeper than %d levels", MAX_BUCKET_DEPTH);
    s->bucket_n = 1;
    bpage p;
    int rc;
    if (root == 0) {
        s->inline_bucket_n = 1;
        if (inl_len < PAGE_HEADER_SIZE)
            return set_err(BOLT_ERR_CORRUPT, "inline bucket value too short");
        page_header(inl, inl_len, &p);
        if (p.flags != PAGE_FLAG_LEAF)
            return set_err(BOLT_ERR_CORRUPT, "inline bucket page: invalid type 0x%x", p.flags);
        rc = stats_page(tx, &p, 1, 0, bdepth, s, &sub, budget);
    } else {
        rc = tx_tree_page(tx, root, &p);
        if (!rc)
            rc = stats_page(tx, &p, 0, 0, bdepth, s, &sub, budget);
    }
    if (rc)
        return rc;
    s->branch_alloc = (s->branch_page_n + s->branch_overflow_n) * (int64_t)tx->ps;
    s->leaf_alloc = (s->leaf_page_n + s->leaf_overflow_n) * (int64_t)tx->ps;
    s->depth += sub.depth;
    stats_add(s, &sub);
    return BOLT_OK;
}

int bucket_stats_internal(struct bolt_bucket *b, bolt_bucket_stats *s)
{
    uint64_t budget = b->tx->meta.pgid + 1;
    return stats_bucket(b->tx, b->root, b->inline_page, b->inline_len, b->depth, s, &budget);
}

/* ---- public API ---- */

int bucket_enter(bolt_bucket *b, int write)
{
    if (!b)
        return set_err(BOLT_ERR_INVALID_ARG, "no bucket");
    int rc = tx_enter(b->tx, write);
    if (rc)
        return rc;
    if (b->deleted) {
        tx_leave(b->tx);
        return set_err(BOLT_ERR_BUCKET_NOT_FOUND, "bucket was deleted");
    }
    return BOLT_OK;
}

int bolt_bucket_bucket(bolt_bucket *b, const uint8_t *name, size_t name_len, bolt_bucket **out)
{
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    rc = bucket_child(b, name, name_len, out);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_create(bolt_bucket *b, const uint8_t *name, size_t name_len, int if_not_exists, bolt_bucket **out)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    rc = bucket_create_child(b, name, name_len, if_not_exists, out);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_delete_bucket(bolt_bucket *b, const uint8_t *name, size_t name_len)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    rc = bucket_delete_child(b, name, name_len);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_writable(bolt_bucket *b) { return b && b->tx->writable && !b->tx->closed; }

int bolt_bucket_get(bolt_bucket *b, const uint8_t *key, size_t key_len, bolt_kv *out)
{
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    rc = bucket_get_internal(b, key, key_len, out);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_put(bolt_bucket *b, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    rc = bucket_put_internal(b, key, key_len, value, value_len);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_delete(bolt_bucket *b, const uint8_t *key, size_t key_len)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    rc = check_key(key, key_len);
    if (!rc && b->is_root)
        rc = set_err(BOLT_ERR_INCOMPATIBLE, "the top level holds only buckets, not plain values");
    if (!rc)
        rc = bucket_del_key(b, key, key_len, 0);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_sequence(bolt_bucket *b, uint64_t *out)
{
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    *out = b->sequence;
    tx_leave(b->tx);
    return BOLT_OK;
}

int bolt_bucket_set_sequence(bolt_bucket *b, uint64_t seq)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    rc = bucket_set_seq_internal(b, seq);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_next_sequence(bolt_bucket *b, uint64_t *out)
{
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    if (b->sequence == UINT64_MAX)
        rc = set_err(BOLT_ERR_SEQUENCE_OVERFLOW, "bucket sequence would overflow");
    else if (!(rc = bucket_set_seq_internal(b, b->sequence + 1)))
        *out = b->sequence;
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_stats_get(bolt_bucket *b, bolt_bucket_stats *out)
{
    int rc = bucket_enter(b, 0);
    if (rc)
        return rc;
    rc = bucket_stats_internal(b, out);
    tx_leave(b->tx);
    return rc;
}

int bolt_bucket_put_batch(bolt_bucket *b, size_t n, const uint8_t *data, const uint32_t *key_lens,
                          const uint32_t *value_lens, size_t *done)
{
    if (done)
        *done = 0;
    int rc = bucket_enter(b, 1);
    if (rc)
        return rc;
    size_t off = 0, i;
    for (i = 0; i < n; i++) {
        const uint8_t *k = data + off;
        const uint8_t *v = k + key_lens[i];
        rc = bucket_put_internal(b, k, key_lens[i], v, value_lens[i]);
        if (rc)
            break;
        off += (size_t)key_lens[i] + value_lens[i];
    }
    if (done)
        *done = i;
    tx_leave(b->tx);
    return rc;
}
