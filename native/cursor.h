/* cursor.h - cursors over pages (committed data) and nodes (this tx's changes). */
#ifndef BOLTIMAGES_CURSOR_H
#define BOLTIMAGES_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "bolt.h"
#include "node.h"
#include "page.h"

/* One level of the path: a node, or a page when no node exists for it. */
typedef struct cursor_ref {
    node *n;
    bpage p;
    uint32_t index;
    uint32_t count;
    uint8_t leaf;
} cursor_ref;

#define CURSOR_MAGIC 0x6375727330626f6cull

enum cursor_state { CUR_UNSET = 0, CUR_ON, CUR_PAST_END, CUR_BEFORE_START };

struct bolt_cursor {
    uint64_t magic;
    struct bolt_bucket *b;
    uint64_t mod_seq;           /* tx->mod_seq when the path was built */
    int depth;
    int state;
    int resynced_ahead;         /* after a re-seek landed on the successor */
    const uint8_t *key;         /* current key (stable for the tx's life) */
    size_t klen;
    cursor_ref stack[MAX_TREE_DEPTH];
};

void cur_init(struct bolt_cursor *c, struct bolt_bucket *b);
int cur_first(struct bolt_cursor *c, bolt_kv *out);
int cur_last(struct bolt_cursor *c, bolt_kv *out);
int cur_next(struct bolt_cursor *c, bolt_kv *out);
int cur_prev(struct bolt_cursor *c, bolt_kv *out);
/* Position on the first key >= key; *exact tells whether it matched. */
int cur_seek(struct bolt_cursor *c, const uint8_t *key, size_t klen, bolt_kv *out);
/* The leaf node under the cursor, materialising the path. */
int cur_node(struct bolt_cursor *c, node **out, uint32_t *index);
int cur_current(struct bolt_cursor *c, bolt_kv *out);
/* Descend to where key is or would go; *found and out describe an exact match. */
int cur_locate(struct bolt_cursor *c, const uint8_t *key, size_t klen, int *found, bolt_kv *out);
/* The on-page value under the cursor (a nested bucket's header and inline page included). */
int cur_raw_value(struct bolt_cursor *c, const uint8_t **v, uint32_t *vl);

/* Lock the cursor's transaction for a public call (checks the cursor and
 * its bucket); undo with tx_leave(c->b->tx). */
int cur_enter(struct bolt_cursor *c, int write);

/* Leaf runs, for batch readers that copy many consecutive items: when the
 * cursor is on an element of a committed leaf page and nothing in the tx has
 * changed since it got there, cur_leaf_run gives that page and the element's
 * index (returns 1; 0 when the caller must step with cur_next). The caller
 * may then read the following elements itself (page_leaf_elem) and leave the
 * cursor on one of them it read successfully with cur_leaf_rest, exactly as
 * cur_next would have. cur_leaf_move steps there through the checked path
 * (so an element that fails page_leaf_elem reports the corruption as a
 * cursor step does). */
int cur_leaf_run(struct bolt_cursor *c, const bpage **leaf, uint32_t *index);
void cur_leaf_rest(struct bolt_cursor *c, uint32_t index, const uint8_t *key, size_t klen);
int cur_leaf_move(struct bolt_cursor *c, uint32_t index, bolt_kv *out);
/* For read-ahead hints only: the stored value and flags of the element after
 * the cursor's one on the same leaf (1), or 0 when there is none there or it
 * fails its bounds check (the real step will report that). */
int cur_peek_next(struct bolt_cursor *c, const uint8_t **v, uint32_t *vl, uint32_t *flags);

#endif
