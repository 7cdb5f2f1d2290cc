/* node.h - in-memory B+tree nodes of a write transaction. */
#ifndef BOLTIMAGES_NODE_H
#define BOLTIMAGES_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "page.h"

struct bolt_tx;
struct bolt_bucket;
struct node;

/* One entry. Leaf entries use value/vsize/flags; branch entries use pgid and
 * `child`, the materialised child node if any. A child created in this tx
 * (by an eager split) has no page yet: pgid 0 and child set. */
typedef struct inode {
    const uint8_t *key;
    const uint8_t *value;
    struct node *child;
    uint64_t pgid;
    uint32_t ksize, vsize, flags;
} inode;

typedef struct node {
    struct bolt_bucket *bucket;
    struct node *parent;
    inode *in;
    uint32_t n, cap;
    uint64_t pgid;        /* the page this node was read from; 0 if new */
    size_t size;          /* page image bytes: header + elements + keys + values */
    uint8_t leaf, unbalanced, dead;
} node;

/* A (first key, page) pair produced by spilling a node. */
typedef struct spill_entry {
    const uint8_t *key;
    uint32_t ksize;
    uint64_t pgid;
} spill_entry;

typedef struct spill_vec {
    spill_entry *v;
    size_t n, cap;
} spill_vec;

int node_new(struct bolt_tx *tx, struct bolt_bucket *b, int leaf, node **out);
int node_from_page(struct bolt_tx *tx, struct bolt_bucket *b, node *parent, const bpage *p, node **out);
uint32_t node_search(const node *n, const uint8_t *key, size_t klen, int *exact);
int node_insert(struct bolt_tx *tx, node *n, uint32_t idx, int replace, const inode *e);
void node_remove(struct bolt_tx *tx, node *n, uint32_t idx);
int node_child_at(struct bolt_tx *tx, node *n, uint32_t idx, node **out);
/* Keep in-memory nodes small while a tx grows them (see node.c). */
int node_maybe_split(struct bolt_tx *tx, node *n);
int node_rebalance(struct bolt_tx *tx, node *n);
int node_spill(struct bolt_tx *tx, node *n, spill_vec *out);
void node_write(const node *n, uint8_t *buf);
int node_free_tree(struct bolt_tx *tx, node *n, int depth);
size_t inode_size(const node *n, const inode *e);
/* Free every page of a tree that has no materialised nodes. */
int page_tree_free(struct bolt_tx *tx, uint64_t root);

#endif
