/* bucket.h - bucket handles. */
#ifndef BOLTIMAGES_BUCKET_H
#define BOLTIMAGES_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "bolt.h"
#include "node.h"
#include "page.h"

struct bolt_bucket {
    struct bolt_tx *tx;
    struct bolt_bucket *parent;
    uint8_t *name;              /* stored right after the handle (one allocation) */
    size_t name_len;
    size_t name_hash;           /* kept so the parent's index never rehashes names */
    uint64_t root;              /* 0: inline, see inline_page */
    uint64_t sequence;
    const uint8_t *inline_page; /* the leaf page image inside the bucket value */
    size_t inline_len;
    node *root_node;            /* materialised root, write tx only */
    struct bolt_bucket **children; /* opened sub-buckets (deleted ones stay, flagged) */
    size_t nchildren, capchildren;
    uint32_t *chash;            /* open-addressing index into children (i + 1; 0 = empty) */
    size_t chash_cap;
    int deleted, depth, is_root;
    struct bolt_bucket *next_all;
};

/* Load the root of the bucket as a page (root_node NULL) or the node. */
int bucket_root_page(struct bolt_bucket *b, bpage *out);
int bucket_root_node(struct bolt_bucket *b, node **out);
/* Enter b's transaction (tx_enter) and refuse a deleted bucket; pair with tx_leave. */
int bucket_enter(struct bolt_bucket *b, int write);
int bucket_child(struct bolt_bucket *b, const uint8_t *name, size_t len, struct bolt_bucket **out);
/* A sub-bucket for reading only, without registering a handle with the tx:
 * the open handle when there is one, else `scratch` filled from the stored
 * value v. Why: walking thousands of small buckets (one per image) spent
 * most of its time creating handles that nobody would use again. The view
 * borrows `name` and must not outlive the call that asked for it. */
int bucket_child_view(struct bolt_bucket *b, const uint8_t *name, size_t len, const uint8_t *v, size_t vlen,
                      struct bolt_bucket *scratch, struct bolt_bucket **out);
int bucket_create_child(struct bolt_bucket *b, const uint8_t *name, size_t len, int if_not_exists,
                        struct bolt_bucket **out);
int bucket_delete_child(struct bolt_bucket *b, const uint8_t *name, size_t len);
int bucket_put_internal(struct bolt_bucket *b, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl);
int bucket_get_internal(struct bolt_bucket *b, const uint8_t *k, size_t kl, bolt_kv *out);
int bucket_set_seq_internal(struct bolt_bucket *b, uint64_t seq);
int bucket_spill(struct bolt_bucket *b);
void bucket_free_handle(struct bolt_bucket *b);
int bucket_stats_internal(struct bolt_bucket *b, bolt_bucket_stats *s);

#endif
