/*
 * freelist.c - bbolt's array freelist. Free ids are kept sorted so a run of
 * contiguous pages can be found by one scan; single-page allocations take
 * the lowest id in O(1) by advancing `head` instead of shifting the array.
 */
#include <stdlib.h>
#include <string.h>

#include "bolt.h"
#include "err.h"
#include "freelist.h"

void fl_init(freelist *f) { memset(f, 0, sizeof *f); }

void fl_destroy(freelist *f)
{
    free(f->ids);
    for (size_t i = 0; i < f->npend; i++)
        free(f->pend[i].ids);
    free(f->pend);
    memset(f, 0, sizeof *f);
}

size_t fl_free_count(const freelist *f) { return f->n; }

size_t fl_pending_count(const freelist *f)
{
    size_t c = 0;
    for (size_t i = 0; i < f->npend; i++)
        c += f->pend[i].n;
    return c;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* qsort and memcpy are undefined on a NULL pointer even with a zero count,
 * and an empty list here is often a NULL array; these two make that case a no-op. */
static void sort_ids(uint64_t *ids, size_t n)
{
    if (n > 1)
        qsort(ids, n, sizeof *ids, cmp_u64);
}

static void copy_ids(uint64_t *dst, const uint64_t *src, size_t n)
{
    if (n)
        memcpy(dst, src, n * sizeof *dst);
}

static size_t dedupe(uint64_t *v, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (o == 0 || v[o - 1] != v[i])
            v[o++] = v[i];
    return o;
}

/* Index (from head) of the first free id >= pgid; n when there is none. */
static size_t lower_bound(const freelist *f, uint64_t pgid)
{
    const uint64_t *v = f->ids + f->head;
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < pgid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t fl_allocate(freelist *f, size_t n)
{
    if (n == 0 || f->n < n)
        return 0;
    uint64_t *v = f->ids + f->head;
    if (n == 1) {
        uint64_t id = v[0];
        f->head++;
        f->n--;
        return id;
    }
    size_t start = 0;
    for (size_t i = 1; i <= f->n; i++) {
        if (i - start == n) {
            uint64_t id = v[start];
            memmove(v + start, v + i, (f->n - i) * sizeof *v);
            f->n -= n;
            return id;
        }
        if (i < f->n && v[i] != v[i - 1] + 1)
            start = i;
    }
    return 0;
}

int fl_take_run(freelist *f, uint64_t first, size_t n)
{
    if (n == 0 || f->n < n)
        return 0;
    uint64_t *v = f->ids + f->head;
    size_t lo = lower_bound(f, first);
    if (lo + n > f->n || v[lo] != first || v[lo + n - 1] != first + n - 1)
        return 0; /* sorted and unique: first and last in place means all are */
    memmove(v + lo, v + lo + n, (f->n - lo - n) * sizeof *v);
    f->n -= n;
    return 1;
}

int fl_find_run(const freelist *f, size_t want, uint64_t *start)
{
    const uint64_t *v = f->ids + f->head;
    size_t best = SIZE_MAX, at = 0, from = 0;
    if (want == 0)
        return 0;
    for (size_t i = 1; i <= f->n; i++) {
        if (i == f->n || v[i] != v[i - 1] + 1) {
            size_t len = i - from;
            if (len >= want && len < best) {
                best = len;
                at = from;
                if (len == want)
                    break;
            }
            from = i;
        }
    }
    if (best == SIZE_MAX)
        return 0;
    *start = v[at];
    return 1;
}

size_t fl_run_length(const freelist *f, uint64_t start, size_t max)
{
    const uint64_t *v = f->ids + f->head;
    size_t lo = lower_bound(f, start);
    size_t len = 0;
    while (lo + len < f->n && len < max && v[lo + len] == start + len)
        len++;
    return len;
}

/* Merge sorted `add` (deduped) into the free ids. */
static int merge_in(freelist *f, uint64_t *add, size_t na)
{
    if (na == 0)
        return BOLT_OK;
    size_t total = f->n + na;
    uint64_t *out = malloc(total * sizeof *out);
    if (!out)
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory merging %zu ids", na);
    uint64_t *a = f->ids + f->head;
    size_t i = 0, j = 0, o = 0;
    while (i < f->n || j < na) {
        uint64_t x;
        if (j >= na || (i < f->n && a[i] <= add[j]))
            x = a[i++];
        else
            x = add[j++];
        if (o == 0 || out[o - 1] != x)
            out[o++] = x;
    }
    free(f->ids);
    f->ids = out;
    f->head = 0;
    f->n = o;
    f->cap = total;
    return BOLT_OK;
}

int fl_is_free(const freelist *f, uint64_t pgid)
{
    size_t lo = lower_bound(f, pgid);
    return lo < f->n && f->ids[f->head + lo] == pgid;
}

/* Make room for one more element in a growable array holding n of cap:
 * capacity doubles, from `first` when the array is still empty. */
static int room_for_one(void **arr, size_t *cap, size_t n, size_t elsize, size_t first)
{
    if (n < *cap)
        return BOLT_OK;
    size_t nc = *cap ? *cap * 2 : first;
    void *grown = realloc(*arr, nc * elsize);
    if (!grown)
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory");
    *arr = grown;
    *cap = nc;
    return BOLT_OK;
}

int fl_free(freelist *f, uint64_t txid, uint64_t pgid, uint32_t overflow)
{
    if (pgid < 2)
        return set_err(BOLT_ERR_CORRUPT, "page %llu: cannot free a meta page", (unsigned long long)pgid);
    pending_list *pl = NULL;
    if (f->npend && f->pend[f->npend - 1].txid == txid) {
        pl = &f->pend[f->npend - 1];
    } else {
        int rc = room_for_one((void **)&f->pend, &f->cappend, f->npend, sizeof *f->pend, 4);
        if (rc)
            return rc;
        pl = &f->pend[f->npend++];
        memset(pl, 0, sizeof *pl);
        pl->txid = txid;
    }
    for (uint64_t id = pgid; id <= pgid + overflow; id++) {
        if (fl_is_free(f, id))
            return set_err(BOLT_ERR_CORRUPT, "page %llu: already freed", (unsigned long long)id);
        int rc = room_for_one((void **)&pl->ids, &pl->cap, pl->n, sizeof *pl->ids, 64);
        if (rc)
            return rc;
        pl->ids[pl->n++] = id;
    }
    return BOLT_OK;
}

int fl_release(freelist *f, uint64_t max_txid)
{
    size_t total = 0, k = 0;
    for (size_t i = 0; i < f->npend; i++)
        if (f->pend[i].txid <= max_txid)
            total += f->pend[i].n;
    if (total == 0) {
        /* still drop empty lists that qualify */
        for (size_t i = 0; i < f->npend; i++) {
            if (f->pend[i].txid <= max_txid)
                free(f->pend[i].ids);
            else
                f->pend[k++] = f->pend[i];
        }
        f->npend = k;
        return BOLT_OK;
    }
    uint64_t *add = malloc(total * sizeof *add);
    if (!add)
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory releasing %zu ids", total);
    size_t o = 0;
    for (size_t i = 0; i < f->npend; i++) {
        if (f->pend[i].txid <= max_txid) {
            copy_ids(add + o, f->pend[i].ids, f->pend[i].n);
            o += f->pend[i].n;
            free(f->pend[i].ids);
        } else {
            f->pend[k++] = f->pend[i];
        }
    }
    f->npend = k;
    sort_ids(add, o);
    o = dedupe(add, o);
    int rc = merge_in(f, add, o);
    free(add);
    return rc;
}

void fl_drop_pending(freelist *f, uint64_t txid)
{
    size_t k = 0;
    for (size_t i = 0; i < f->npend; i++) {
        if (f->pend[i].txid == txid)
            free(f->pend[i].ids);
        else
            f->pend[k++] = f->pend[i];
    }
    f->npend = k;
}

int fl_give_back_run(freelist *f, uint64_t first, size_t n)
{
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory returning %zu pages", n);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    int rc = merge_in(f, ids, n); /* already sorted and unique */
    free(ids);
    return rc;
}

int fl_give_back(freelist *f, uint64_t *ids, size_t n)
{
    sort_ids(ids, n);
    n = dedupe(ids, n);
    return merge_in(f, ids, n);
}

int fl_set(freelist *f, uint64_t *ids, size_t n)
{
    sort_ids(ids, n);
    n = dedupe(ids, n);
    free(f->ids);
    f->ids = ids;
    f->head = 0;
    f->n = n;
    f->cap = n;
    return BOLT_OK;
}

int fl_read(freelist *f, const bpage *p, uint64_t pgid_limit)
{
    if (p->flags != PAGE_FLAG_FREELIST)
        return set_err(BOLT_ERR_CORRUPT, "page %llu: invalid freelist page type: %s (flags 0x%x)",
                       (unsigned long long)p->id, page_type_name(p->flags), p->flags);
    uint64_t n = p->count;
    size_t off = PAGE_HEADER_SIZE;
    if (p->count == FREELIST_COUNT_MARKER) {
        if (p->span < PAGE_HEADER_SIZE + 8)
            return set_err(BOLT_ERR_CORRUPT, "page %llu: freelist too short", (unsigned long long)p->id);
        n = le64(p->data + PAGE_HEADER_SIZE);
        off += 8;
    }
    if (n > (p->span - off) / 8)
        return set_err(BOLT_ERR_CORRUPT, "page %llu: freelist count %llu exceeds the page span",
                       (unsigned long long)p->id, (unsigned long long)n);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory for %llu ids", (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t id = le64(p->data + off + i * 8);
        if (id < 2 || id >= pgid_limit) {
            free(ids);
            return set_err(BOLT_ERR_CORRUPT, "page %llu: freelist holds page id %llu outside [2, %llu)",
                           (unsigned long long)p->id, (unsigned long long)id,
                           (unsigned long long)pgid_limit);
        }
        ids[i] = id;
    }
    return fl_set(f, ids, (size_t)n);
}

size_t fl_page_bytes(const freelist *f)
{
    size_t n = f->n + fl_pending_count(f);
    return PAGE_HEADER_SIZE + (n >= FREELIST_COUNT_MARKER ? 8 : 0) + n * 8;
}

int fl_write(const freelist *f, uint8_t *buf)
{
    size_t np = fl_pending_count(f);
    size_t n = f->n + np;
    /* The free ids are kept sorted; only the (few) pending ones need a sort
     * before the two are merged. Sorting everything on every commit cost
     * ~10% of an image update once a file had a few thousand free pages. */
    uint64_t *all = malloc((n ? n : 1) * sizeof *all);
    uint64_t *pend = malloc((np ? np : 1) * sizeof *pend);
    if (!all || !pend) {
        free(all);
        free(pend);
        return set_err(BOLT_ERR_NOMEM, "freelist: out of memory writing %zu ids", n);
    }
    size_t o = 0;
    for (size_t i = 0; i < f->npend; i++) {
        copy_ids(pend + o, f->pend[i].ids, f->pend[i].n);
        o += f->pend[i].n;
    }
    sort_ids(pend, np);
    const uint64_t *free_ids = f->ids + f->head;
    size_t a = 0, b = 0;
    for (o = 0; o < n; o++) {
        if (b >= np || (a < f->n && free_ids[a] <= pend[b]))
            all[o] = free_ids[a++];
        else
            all[o] = pend[b++];
    }
    free(pend);
    put16(buf + PAGE_OFF_FLAGS, PAGE_FLAG_FREELIST);
    size_t off = PAGE_HEADER_SIZE;
    if (n >= FREELIST_COUNT_MARKER) {
        put16(buf + PAGE_OFF_COUNT, FREELIST_COUNT_MARKER);
        put64(buf + off, n);
        off += 8;
    } else {
        put16(buf + PAGE_OFF_COUNT, (uint16_t)n);
    }
    for (size_t i = 0; i < n; i++)
        put64(buf + off + i * 8, all[i]);
    free(all);
    return BOLT_OK;
}

int fl_check_pending(freelist *f, uint64_t txid, uint64_t *dup)
{
    for (size_t i = 0; i < f->npend; i++) {
        pending_list *pl = &f->pend[i];
        if (pl->txid != txid)
            continue;
        sort_ids(pl->ids, pl->n);
        for (size_t j = 1; j < pl->n; j++)
            if (pl->ids[j] == pl->ids[j - 1]) {
                *dup = pl->ids[j];
                return -1;
            }
    }
    return 0;
}
