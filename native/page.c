/* page.c - bounds-checked element access for leaf and branch pages. */
#include "page.h"

int page_leaf_elem(const bpage *p, uint32_t i, const uint8_t **key, uint32_t *ksize,
                   const uint8_t **val, uint32_t *vsize, uint32_t *flags)
{
    if (i >= p->count)
        return -1;
    size_t eoff = PAGE_HEADER_SIZE + (size_t)i * LEAF_ELEM_SIZE;
    if (eoff + LEAF_ELEM_SIZE > p->span)
        return -1;
    const uint8_t *e = p->data + eoff;
    uint32_t fl = le32(e), pos = le32(e + 4), ks = le32(e + 8), vs = le32(e + 12);
    /* 64-bit arithmetic: pos + ksize + vsize cannot wrap. */
    uint64_t kstart = (uint64_t)eoff + pos;
    uint64_t end = kstart + ks + (uint64_t)vs;
    if (end > p->span)
        return -1;
    *key = p->data + kstart;
    *ksize = ks;
    if (val)
        *val = p->data + kstart + ks;
    if (vsize)
        *vsize = vs;
    if (flags)
        *flags = fl;
    return 0;
}

int page_branch_elem(const bpage *p, uint32_t i, const uint8_t **key, uint32_t *ksize,
                     uint64_t *child)
{
    if (i >= p->count)
        return -1;
    size_t eoff = PAGE_HEADER_SIZE + (size_t)i * BRANCH_ELEM_SIZE;
    if (eoff + BRANCH_ELEM_SIZE > p->span)
        return -1;
    const uint8_t *e = p->data + eoff;
    uint32_t pos = le32(e), ks = le32(e + 4);
    uint64_t kstart = (uint64_t)eoff + pos;
    if (kstart + ks > p->span)
        return -1;
    *key = p->data + kstart;
    *ksize = ks;
    if (child)
        *child = le64(e + 8);
    return 0;
}

const char *page_type_name(uint16_t flags)
{
    switch (flags) {
    case PAGE_FLAG_BRANCH: return "branch";
    case PAGE_FLAG_LEAF: return "leaf";
    case PAGE_FLAG_META: return "meta";
    case PAGE_FLAG_FREELIST: return "freelist";
    default: return "unknown";
    }
}

int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}
