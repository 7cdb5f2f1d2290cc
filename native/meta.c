/* meta.c - meta pages. The checksum is 64-bit FNV-1a over magic..txid. */
#include <string.h>

#include "bolt.h"
#include "err.h"
#include "meta.h"
#include "page.h"

uint64_t fnv1a64(const uint8_t *data, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void meta_decode(const uint8_t *page, bmeta *m)
{
    const uint8_t *b = page + PAGE_HEADER_SIZE;
    m->magic = le32(b + META_OFF_MAGIC);
    m->version = le32(b + META_OFF_VERSION);
    m->page_size = le32(b + META_OFF_PAGE_SIZE);
    m->flags = le32(b + META_OFF_FLAGS);
    m->root = le64(b + META_OFF_ROOT);
    m->sequence = le64(b + META_OFF_SEQUENCE);
    m->freelist = le64(b + META_OFF_FREELIST);
    m->pgid = le64(b + META_OFF_PGID);
    m->txid = le64(b + META_OFF_TXID);
    m->checksum = le64(b + META_OFF_CHECKSUM);
}

static void meta_body(const bmeta *m, uint8_t *b)
{
    put32(b + META_OFF_MAGIC, m->magic);
    put32(b + META_OFF_VERSION, m->version);
    put32(b + META_OFF_PAGE_SIZE, m->page_size);
    put32(b + META_OFF_FLAGS, m->flags);
    put64(b + META_OFF_ROOT, m->root);
    put64(b + META_OFF_SEQUENCE, m->sequence);
    put64(b + META_OFF_FREELIST, m->freelist);
    put64(b + META_OFF_PGID, m->pgid);
    put64(b + META_OFF_TXID, m->txid);
}

int meta_validate(const bmeta *m, int slot)
{
    if (m->magic != META_MAGIC)
        return set_err(BOLT_ERR_INVALID, "meta page %d: invalid magic 0x%08x (not a bolt database)",
                       slot, m->magic);
    if (m->version != META_VERSION)
        return set_err(BOLT_ERR_VERSION, "meta page %d: format version %u, expected %u", slot,
                       m->version, META_VERSION);
    if (m->checksum != 0) { /* bbolt accepts a zero checksum unchecked */
        uint8_t body[META_BODY_SIZE];
        meta_body(m, body);
        if (fnv1a64(body, META_CHECKSUMMED_BYTES) != m->checksum)
            return set_err(BOLT_ERR_INVALID, "meta page %d: checksum error", slot);
    }
    uint32_t ps = m->page_size;
    if (ps < MIN_PAGE_SIZE || ps > MAX_PAGE_SIZE || (ps & (ps - 1)))
        return set_err(BOLT_ERR_INVALID, "meta page %d: invalid page size %u", slot, ps);
    if (m->pgid < 3 || m->pgid > (UINT64_MAX / ps))
        return set_err(BOLT_ERR_INVALID, "meta page %d: invalid high water mark %llu", slot,
                       (unsigned long long)m->pgid);
    if (m->root < 2 || m->root >= m->pgid)
        return set_err(BOLT_ERR_INVALID, "meta page %d: root page %llu out of range (pgid %llu)",
                       slot, (unsigned long long)m->root, (unsigned long long)m->pgid);
    if (m->freelist != PGID_NONE && (m->freelist < 2 || m->freelist >= m->pgid))
        return set_err(BOLT_ERR_INVALID, "meta page %d: freelist page %llu out of range", slot,
                       (unsigned long long)m->freelist);
    return BOLT_OK;
}

void meta_encode(const bmeta *m, uint64_t page_id, uint8_t *buf, uint32_t page_size)
{
    memset(buf, 0, page_size);
    put64(buf + PAGE_OFF_ID, page_id);
    put16(buf + PAGE_OFF_FLAGS, PAGE_FLAG_META);
    uint8_t *b = buf + PAGE_HEADER_SIZE;
    meta_body(m, b);
    put64(b + META_OFF_CHECKSUM, fnv1a64(b, META_CHECKSUMMED_BYTES));
}
