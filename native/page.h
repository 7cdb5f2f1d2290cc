/*
 * page.h - the bbolt on-disk page format: every on-disk constant is named
 * here once, plus little-endian field access and bounds-checked element
 * accessors. Nothing read from a file is trusted: every accessor checks the
 * offsets it follows against the span of the page it came from.
 */
#ifndef BOLTIMAGES_PAGE_H
#define BOLTIMAGES_PAGE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- page header: id u64, flags u16, count u16, overflow u32 ---- */
#define PAGE_HEADER_SIZE 16u
#define PAGE_OFF_ID 0u
#define PAGE_OFF_FLAGS 8u
#define PAGE_OFF_COUNT 10u
#define PAGE_OFF_OVERFLOW 12u

#define PAGE_FLAG_BRANCH 0x01u
#define PAGE_FLAG_LEAF 0x02u
#define PAGE_FLAG_META 0x04u
#define PAGE_FLAG_FREELIST 0x10u

/* ---- branch element: pos u32, ksize u32, child pgid u64 ---- */
#define BRANCH_ELEM_SIZE 16u
/* ---- leaf element: flags u32, pos u32, ksize u32, vsize u32 ---- */
#define LEAF_ELEM_SIZE 16u
#define LEAF_FLAG_BUCKET 0x01u

/* ---- sub-bucket value header: root pgid u64, sequence u64 ---- */
#define BUCKET_HEADER_SIZE 16u

/* ---- meta page body (starts right after the page header) ---- */
#define META_MAGIC 0xED0CDAEDu
#define META_VERSION 2u
#define META_OFF_MAGIC 0u
#define META_OFF_VERSION 4u
#define META_OFF_PAGE_SIZE 8u
#define META_OFF_FLAGS 12u
#define META_OFF_ROOT 16u
#define META_OFF_SEQUENCE 24u
#define META_OFF_FREELIST 32u
#define META_OFF_PGID 40u
#define META_OFF_TXID 48u
#define META_OFF_CHECKSUM 56u
#define META_CHECKSUMMED_BYTES 56u /* magic .. txid */
#define META_BODY_SIZE 64u
#define META_READ_SIZE 4096u /* bbolt reads this much to find meta 0 */

/* ---- freelist page: count 0xFFFF means "real count in the first u64" ---- */
#define FREELIST_COUNT_MARKER 0xFFFFu

/* Freelist id recorded by NoFreelistSync databases. */
#define PGID_NONE UINT64_MAX

/* ---- limits bbolt enforces ---- */
#define MAX_KEY_SIZE 32768u
#define MAX_VALUE_SIZE ((1u << 31) - 2u)
#define MIN_PAGE_SIZE 1024u
#define MAX_PAGE_SIZE 65536u
#define MIN_KEYS_PER_PAGE 2u       /* a split leaves at least this many per page */
#define FILL_PERCENT_NUM 1u        /* split threshold: page size * 1/2 */
#define FILL_PERCENT_DEN 2u
#define REBALANCE_DIV 4u           /* merge when a node is under page size / 4 */
#define INLINE_DIV 4u              /* inline a bucket up to page size / 4 */

/* ---- engine bounds (ours, not the format's) ---- */
#define MAX_TREE_DEPTH 64          /* deeper means a corrupt file (or a cycle) */
#define MAX_BUCKET_DEPTH 128       /* bucket nesting; stops bucket cycles */

/* ---- little-endian access, safe for any alignment ---- */
static inline uint16_t le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the engine assumes a little-endian host (the file format is little-endian)"
#endif

/* A page as seen through a mapping or buffer: `span` is how many bytes the
 * page may use ((overflow + 1) * page size, or an inline value's length). */
typedef struct bpage {
    const uint8_t *data;
    size_t span;
    uint64_t id;
    uint16_t flags;
    uint16_t count;
    uint32_t overflow;
} bpage;

/* Decode the header of `data` (at least PAGE_HEADER_SIZE bytes). */
static inline void page_header(const uint8_t *data, size_t span, bpage *p)
{
    p->data = data;
    p->span = span;
    p->id = le64(data + PAGE_OFF_ID);
    p->flags = le16(data + PAGE_OFF_FLAGS);
    p->count = le16(data + PAGE_OFF_COUNT);
    p->overflow = le32(data + PAGE_OFF_OVERFLOW);
}

/* Validated element accessors: 0 on success, -1 when the element or the
 * bytes it points at fall outside the page span. */
int page_leaf_elem(const bpage *p, uint32_t i, const uint8_t **key, uint32_t *ksize,
                   const uint8_t **val, uint32_t *vsize, uint32_t *flags);
int page_branch_elem(const bpage *p, uint32_t i, const uint8_t **key, uint32_t *ksize,
                     uint64_t *child);
const char *page_type_name(uint16_t flags);

int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

#endif
