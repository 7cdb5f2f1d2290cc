/* meta.h - the two meta pages: decode, validate, encode. */
#ifndef BOLTIMAGES_META_H
#define BOLTIMAGES_META_H

#include <stdint.h>
#include <stddef.h>

typedef struct bmeta {
    uint32_t magic, version, page_size, flags;
    uint64_t root, sequence, freelist, pgid, txid, checksum;
} bmeta;

uint64_t fnv1a64(const uint8_t *data, size_t n);
/* `page` points at a meta page (header + body, >= 80 bytes). */
void meta_decode(const uint8_t *page, bmeta *m);
/* BOLT_OK, or INVALID (magic / checksum / fields) or VERSION; sets a message
 * that names `slot`. */
int meta_validate(const bmeta *m, int slot);
/* Writes a whole meta page image into buf (page_size bytes, zeroed first). */
void meta_encode(const bmeta *m, uint64_t page_id, uint8_t *buf, uint32_t page_size);

#endif
