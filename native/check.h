/* check.h - whole-tree walks: consistency check and freelist rebuild. */
#ifndef BOLTIMAGES_CHECK_H
#define BOLTIMAGES_CHECK_H

#include <stdint.h>
#include <stddef.h>

struct bolt_tx;

/* Free ids of a NoFreelistSync file: [2, pgid) minus every page reachable
 * from the tx's root (and freelist page, if any). Each page is read once. */
int rebuild_freelist(struct bolt_tx *tx, uint64_t **ids, size_t *n);

#endif
