/*
 * check.c - walks of the whole page graph of a snapshot.
 *
 * bolt_check is bbolt's Tx.Check plus key-order checks: every page in
 * [0, pgid) must be reached exactly once (metas, freelist run, tree pages of
 * every bucket including overflow) or be free, never both. A bitmap marks
 * reached pages, so a page reached twice is reported and not descended into
 * again, which also ends cycles. The same walk, failing on the first
 * problem, rebuilds the freelist of NoFreelistSync files.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "check.h"
#include "err.h"
#include "tx.h"

typedef struct walker {
    bolt_tx *tx;
    uint8_t *seen;
    uint64_t pgid;
    int collect;          /* 1: record problems and go on; 0: stop at the first */
    char *report;
    size_t len, cap;
    size_t problems, max;
    int rc;               /* first hard error (collect == 0) */
} walker;

static int bit_get(const uint8_t *b, uint64_t i) { return (b[i >> 3] >> (i & 7)) & 1; }
static void bit_set(uint8_t *b, uint64_t i) { b[i >> 3] |= (uint8_t)(1u << (i & 7)); }

static int stopped(const walker *w)
{
    return w->rc != BOLT_OK || (w->max && w->problems >= w->max);
}

__attribute__((format(printf, 2, 3))) static void problem(walker *w, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!w->collect) {
        if (w->rc == BOLT_OK)
            w->rc = set_err(BOLT_ERR_CORRUPT, "%s", line);
        return;
    }
    if (w->max && w->problems >= w->max)
        return;
    size_t n = strlen(line);
    if (w->len + n + 2 > w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 1024;
        while (nc < w->len + n + 2)
            nc *= 2;
        char *r = realloc(w->report, nc);
        if (!r) {
            w->rc = set_err(BOLT_ERR_NOMEM, "out of memory for the check report");
            return;
        }
        w->report = r;
        w->cap = nc;
    }
    memcpy(w->report + w->len, line, n);
    w->len += n;
    w->report[w->len++] = '\n';
    w->report[w->len] = 0;
    w->problems++;
}

/* Mark pages [id, id + overflow]; 0 if any was already reached. */
static int mark(walker *w, uint64_t id, uint32_t overflow)
{
    int fresh = 1;
    for (uint64_t i = id; i <= id + overflow && i < w->pgid; i++) {
        if (bit_get(w->seen, i)) {
            problem(w, "page %llu: multiple references", (unsigned long long)i);
            fresh = 0;
        }
        bit_set(w->seen, i);
    }
    return fresh;
}

static void walk_bucket(walker *w, const uint8_t *v, size_t vl, int bdepth, uint64_t via);

static void walk_leaf_buckets(walker *w, const bpage *p, int bdepth)
{
    for (uint32_t i = 0; i < p->count && !stopped(w); i++) {
        const uint8_t *k, *v; uint32_t kl, vl, fl;
        if (page_leaf_elem(p, i, &k, &kl, &v, &vl, &fl))
            continue; /* reported by the key walk */
        if (fl & LEAF_FLAG_BUCKET)
            walk_bucket(w, v, vl, bdepth + 1, p->id);
    }
}

/* Keys of page p must be ascending and within [lo, hi) (NULL = open). */
static void check_keys(walker *w, const bpage *p, const uint8_t *lo, uint32_t lol, const uint8_t *hi, uint32_t hil,
                       int leaf)
{
    const uint8_t *prev = NULL;
    uint32_t prevl = 0;
    for (uint32_t i = 0; i < p->count; i++) {
        const uint8_t *k; uint32_t kl;
        int bad = leaf ? page_leaf_elem(p, i, &k, &kl, NULL, NULL, NULL) : page_branch_elem(p, i, &k, &kl, NULL);
        if (bad) {
            problem(w, "page %llu: element %u lies outside the page", (unsigned long long)p->id, i);
            return;
        }
        if (prev && key_cmp(prev, prevl, k, kl) >= 0)
            problem(w, "page %llu: keys out of order at element %u", (unsigned long long)p->id, i);
        if (lo && key_cmp(k, kl, lo, lol) < 0)
            problem(w, "page %llu: key at element %u sorts before its branch key", (unsigned long long)p->id, i);
        if (hi && key_cmp(k, kl, hi, hil) >= 0)
            problem(w, "page %llu: key at element %u sorts after the next branch key", (unsigned long long)p->id, i);
        prev = k;
        prevl = kl;
    }
}

static void walk_page(walker *w, uint64_t id, int depth, int bdepth, uint64_t from, const uint8_t *lo, uint32_t lol,
                      const uint8_t *hi, uint32_t hil)
{
    if (stopped(w))
        return;
    if (depth >= MAX_TREE_DEPTH) {
        problem(w, "page %llu: tree deeper than %d levels", (unsigned long long)id, MAX_TREE_DEPTH);
        return;
    }
    if (id < 2 || id >= w->pgid) {
        problem(w, "page %llu: out of bounds: %llu (referenced from page %llu)", (unsigned long long)id,
                (unsigned long long)w->pgid, (unsigned long long)from);
        return;
    }
    bpage p;
    int rc = tx_page(w->tx, id, &p);
    if (rc) {
        problem(w, "%s", bolt_errmsg());
        return;
    }
    if (!mark(w, id, p.overflow))
        return;
    if (p.flags != PAGE_FLAG_BRANCH && p.flags != PAGE_FLAG_LEAF) {
        problem(w, "page %llu: invalid type: %s", (unsigned long long)id, page_type_name(p.flags));
        return;
    }
    if (PAGE_HEADER_SIZE + (size_t)p.count * LEAF_ELEM_SIZE > p.span) {
        problem(w, "page %llu: %u elements do not fit in the page", (unsigned long long)id, p.count);
        return;
    }
    if (w->collect)
        check_keys(w, &p, lo, lol, hi, hil, p.flags == PAGE_FLAG_LEAF);
    if (p.flags == PAGE_FLAG_LEAF) {
        walk_leaf_buckets(w, &p, bdepth);
        return;
    }
    if (p.count == 0) {
        problem(w, "page %llu: branch page with no elements", (unsigned long long)id);
        return;
    }
    for (uint32_t i = 0; i < p.count && !stopped(w); i++) {
        const uint8_t *k, *nk = hi; uint32_t kl, nkl = hil; uint64_t child;
        if (page_branch_elem(&p, i, &k, &kl, &child))
            return;
        if (i + 1 < p.count && page_branch_elem(&p, i + 1, &nk, &nkl, NULL))
            return;
        walk_page(w, child, depth + 1, bdepth, id, i ? k : lo, i ? kl : lol, nk, nkl);
    }
}

static void walk_bucket(walker *w, const uint8_t *v, size_t vl, int bdepth, uint64_t via)
{
    if (bdepth > MAX_BUCKET_DEPTH) {
        problem(w, "page %llu: buckets nested deeper than %d levels", (unsigned long long)via, MAX_BUCKET_DEPTH);
        return;
    }
    if (vl < BUCKET_HEADER_SIZE) {
        problem(w, "page %llu: bucket value of %zu bytes is too short", (unsigned long long)via, vl);
        return;
    }
    uint64_t root = le64(v);
    if (root) {
        walk_page(w, root, 0, bdepth, via, NULL, 0, NULL, 0);
        return;
    }
    if (vl < BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE) {
        problem(w, "page %llu: inline bucket value too short", (unsigned long long)via);
        return;
    }
    bpage p;
    page_header(v + BUCKET_HEADER_SIZE, vl - BUCKET_HEADER_SIZE, &p);
    p.id = via;
    if (p.flags != PAGE_FLAG_LEAF) {
        problem(w, "page %llu: inline bucket page has invalid type: %s", (unsigned long long)via,
                page_type_name(p.flags));
        return;
    }
    if (PAGE_HEADER_SIZE + (size_t)p.count * LEAF_ELEM_SIZE > p.span) {
        problem(w, "page %llu: inline bucket elements exceed the value", (unsigned long long)via);
        return;
    }
    if (w->collect)
        check_keys(w, &p, NULL, 0, NULL, 0, 1);
    walk_leaf_buckets(w, &p, bdepth);
}

static int walker_init(walker *w, bolt_tx *tx, int collect, size_t max)
{
    memset(w, 0, sizeof *w);
    w->tx = tx;
    w->pgid = tx->meta.pgid;
    w->collect = collect;
    w->max = max;
    w->seen = calloc((size_t)(w->pgid / 8 + 1), 1);
    if (!w->seen)
        return set_err(BOLT_ERR_NOMEM, "out of memory for a %llu page bitmap", (unsigned long long)w->pgid);
    bit_set(w->seen, 0);
    bit_set(w->seen, 1);
    return BOLT_OK;
}

static void walk_root(walker *w)
{
    walk_page(w, w->tx->meta.root, 0, 0, 0, NULL, 0, NULL, 0);
}

int rebuild_freelist(bolt_tx *tx, uint64_t **ids, size_t *n)
{
    walker w;
    int rc = walker_init(&w, tx, 0, 0);
    if (rc)
        return rc;
    walk_root(&w);
    if (w.rc) {
        free(w.seen);
        return w.rc;
    }
    size_t cnt = 0;
    for (uint64_t i = 2; i < w.pgid; i++)
        cnt += !bit_get(w.seen, i);
    uint64_t *out = malloc((cnt ? cnt : 1) * sizeof *out);
    if (!out) {
        free(w.seen);
        return set_err(BOLT_ERR_NOMEM, "out of memory for %zu free ids", cnt);
    }
    size_t o = 0;
    for (uint64_t i = 2; i < w.pgid; i++)
        if (!bit_get(w.seen, i))
            out[o++] = i;
    free(w.seen);
    *ids = out;
    *n = o;
    return BOLT_OK;
}

int bolt_check(bolt_tx *tx, size_t max_problems, char **report, size_t *problems)
{
    if (report)
        *report = NULL;
    if (problems)
        *problems = 0;
    int rc = tx_enter(tx, 0);
    if (rc)
        return rc;
    walker w;
    if ((rc = walker_init(&w, tx, 1, max_problems))) {
        tx_leave(tx);
        return rc;
    }
    uint8_t *freed = NULL;
    int have_freelist = tx->meta.freelist != PGID_NONE;
    if (have_freelist) {
        freed = calloc((size_t)(w.pgid / 8 + 1), 1);
        if (!freed) {
            free(w.seen);
            tx_leave(tx);
            return set_err(BOLT_ERR_NOMEM, "out of memory");
        }
        bpage p;
        if (tx_page(tx, tx->meta.freelist, &p)) {
            problem(&w, "%s", bolt_errmsg());
        } else if (p.flags != PAGE_FLAG_FREELIST) {
            problem(&w, "page %llu: invalid type: %s (expected freelist)", (unsigned long long)p.id,
                    page_type_name(p.flags));
        } else {
            mark(&w, p.id, p.overflow);
            uint64_t cnt = p.count;
            size_t off = PAGE_HEADER_SIZE;
            if (p.count == FREELIST_COUNT_MARKER) {
                cnt = le64(p.data + off);
                off += 8;
            }
            if (cnt > (p.span - off) / 8) {
                problem(&w, "page %llu: freelist count %llu exceeds the page", (unsigned long long)p.id,
                        (unsigned long long)cnt);
                cnt = 0;
            }
            for (uint64_t i = 0; i < cnt && !stopped(&w); i++) {
                uint64_t id = le64(p.data + off + i * 8);
                if (id < 2 || id >= w.pgid) {
                    problem(&w, "page %llu: freelist entry out of bounds: %llu", (unsigned long long)id,
                            (unsigned long long)w.pgid);
                    continue;
                }
                if (bit_get(freed, id))
                    problem(&w, "page %llu: already freed", (unsigned long long)id);
                bit_set(freed, id);
            }
        }
    }
    walk_root(&w);
    for (uint64_t i = 0; i < w.pgid && !stopped(&w); i++) {
        int reach = bit_get(w.seen, i);
        if (!have_freelist)
            continue;
        int fr = bit_get(freed, i);
        if (reach && fr)
            problem(&w, "page %llu: reachable freed", (unsigned long long)i);
        else if (!reach && !fr)
            problem(&w, "page %llu: unreachable unfreed", (unsigned long long)i);
    }
    free(freed);
    free(w.seen);
    tx_leave(tx);
    if (w.rc) {
        free(w.report);
        return w.rc;
    }
    if (!w.report) {
        w.report = calloc(1, 1);
        if (!w.report)
            return set_err(BOLT_ERR_NOMEM, "out of memory");
    }
    if (problems)
        *problems = w.problems;
    if (report)
        *report = w.report;
    else
        free(w.report);
    return BOLT_OK;
}
