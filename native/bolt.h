/*
 * bolt.h - the public C API of the boltimages storage engine.
 *
 * The engine reads and writes the go.etcd.io/bbolt on-disk format (version 2).
 * This header is the whole contract between the C core and its users: the
 * cffi builder (native/build_bolt.py) feeds it to ffi.cdef() after dropping
 * preprocessor lines, so it holds plain declarations only: no macros with
 * bodies, no inline functions, no system headers.
 *
 * Ownership rules, chosen so that a Python program can never cause a
 * use-after-free however it drops its references:
 *   - bolt_db is reference counted: bolt_close() releases the file, the lock
 *     and every open transaction; the struct itself lives until bolt_db_free()
 *     has been called and the last transaction has been freed.
 *   - bolt_tx handles live until bolt_tx_free(). After commit or rollback
 *     (explicit, or forced by bolt_close) every call on the tx, its buckets
 *     and its cursors fails with BOLT_ERR_TX_CLOSED.
 *   - bolt_bucket handles belong to their tx and are freed by bolt_tx_free();
 *     asking twice for the same bucket in one tx returns the same handle.
 *     A handle whose bucket was deleted fails with BOLT_ERR_BUCKET_NOT_FOUND.
 *   - bolt_cursor memory belongs to the caller (bolt_cursor_size() bytes,
 *     8-byte aligned) so a garbage collector can drop it without calling C.
 *   - Pointers returned in bolt_kv point into the file's mapping or the
 *     tx's own copies, both kept until bolt_tx_free (not released by
 *     commit, rollback or bolt_close), so a thread still copying them when
 *     another ends the tx reads the bytes it was given, never freed memory.
 *     They show the current value only until the next call that modifies
 *     the same transaction.
 *
 * Thread safety: any number of threads may use one bolt_db. Each tx carries a
 * mutex, so concurrent calls on one tx are serialised rather than undefined.
 * A thread that already owns the write transaction and asks for another gets
 * BOLT_ERR_TX_BUSY instead of deadlocking.
 *
 * Errors: every int-returning call returns BOLT_OK (0) or one of the codes
 * below; bolt_errmsg() returns a thread-local message describing the last
 * failure on the calling thread (for corruption it names the page id).
 */

#ifndef BOLTIMAGES_BOLT_H
#define BOLTIMAGES_BOLT_H

#include <stddef.h>
#include <stdint.h>

typedef struct bolt_db bolt_db;
typedef struct bolt_tx bolt_tx;
typedef struct bolt_bucket bolt_bucket;
typedef struct bolt_cursor bolt_cursor;

enum bolt_status {
    BOLT_OK = 0,
    BOLT_ERR_IO = 1,                  /* a system call failed; message has strerror */
    BOLT_ERR_LOCKED = 2,              /* flock not granted within the timeout */
    BOLT_ERR_CORRUPT = 3,             /* structural damage found; message names the page */
    BOLT_ERR_INVALID = 4,             /* not a bolt file (bad magic, no valid meta page) */
    BOLT_ERR_VERSION = 5,             /* bolt format version other than 2 */
    BOLT_ERR_NOMEM = 6,
    BOLT_ERR_TX_CLOSED = 7,
    BOLT_ERR_TX_NOT_WRITABLE = 8,
    BOLT_ERR_DB_READ_ONLY = 9,
    BOLT_ERR_BUCKET_NOT_FOUND = 10,
    BOLT_ERR_BUCKET_EXISTS = 11,
    BOLT_ERR_BUCKET_NAME_REQUIRED = 12,
    BOLT_ERR_KEY_REQUIRED = 13,
    BOLT_ERR_KEY_TOO_LARGE = 14,
    BOLT_ERR_VALUE_TOO_LARGE = 15,
    BOLT_ERR_INCOMPATIBLE = 16,       /* value where a bucket was expected, or the reverse */
    BOLT_ERR_DB_CLOSED = 17,
    BOLT_ERR_TX_BUSY = 18,            /* this thread already holds the write transaction */
    BOLT_ERR_TX_FAILED = 19,          /* an earlier error poisoned this write tx; only rollback is allowed */
    BOLT_ERR_INVALID_ARG = 20,
    BOLT_ERR_SEQUENCE_OVERFLOW = 21
};

/* How the freelist is kept on disk. bbolt's NoFreelistSync files record the
 * freelist page id as all ones and rebuild the list by scanning the tree. */
enum bolt_freelist_mode {
    BOLT_FREELIST_KEEP = 0,           /* keep the existing file's mode; new files persist it */
    BOLT_FREELIST_PERSIST = 1,        /* always write a freelist page (bbolt default) */
    BOLT_FREELIST_NO_SYNC = 2         /* never write one (bbolt NoFreelistSync) */
};

typedef struct bolt_options {
    int read_only;                    /* shared flock, no writes */
    int create;                       /* create the file when missing (ignored if read_only) */
    uint32_t page_size;               /* for new files; 0 = the OS page size */
    double timeout;                   /* seconds to wait for the flock; < 0 waits forever */
    int freelist_mode;                /* enum bolt_freelist_mode */
    int no_sync;                      /* skip fsync/fdatasync (tests and benchmarks only) */
    uint32_t file_mode;               /* permission bits for a created file, e.g. 0600 */
} bolt_options;

typedef struct bolt_kv {
    const uint8_t *key;               /* NULL when the cursor is past either end */
    size_t key_len;
    const uint8_t *value;             /* NULL for nested buckets */
    size_t value_len;
    uint32_t flags;                   /* 1 = the key names a nested bucket */
} bolt_kv;

typedef struct bolt_info {
    uint32_t page_size;
    uint64_t txid;                    /* txid of the meta page in use */
    uint64_t pgid;                    /* high water mark: first never-allocated page */
    uint64_t root_pgid;
    uint64_t freelist_pgid;           /* 0xFFFFFFFFFFFFFFFF when the freelist is not persisted */
    uint32_t meta_slot;               /* 0 or 1: which meta page was chosen */
    uint64_t file_size;
    uint64_t free_count;              /* pages free now */
    uint64_t pending_count;           /* pages freed but still visible to a reader */
    int freelist_persisted;           /* the mode writes will use */
    int read_only;
    uint32_t open_read_txs;
    uint32_t last_commit_runs;        /* contiguous runs of pages the last commit wrote (one device request each) */
} bolt_info;

/* bbolt's BucketStats, same meaning field for field. */
typedef struct bolt_bucket_stats {
    int64_t branch_page_n;
    int64_t branch_overflow_n;
    int64_t leaf_page_n;
    int64_t leaf_overflow_n;
    int64_t key_n;
    int64_t depth;
    int64_t branch_alloc;
    int64_t branch_inuse;
    int64_t leaf_alloc;
    int64_t leaf_inuse;
    int64_t bucket_n;
    int64_t inline_bucket_n;
    int64_t inline_bucket_inuse;
} bolt_bucket_stats;

/* ---- errors ---- */
const char *bolt_errmsg(void);
const char *bolt_status_name(int status);

/* ---- database ---- */
void bolt_options_init(bolt_options *opts);
int bolt_open(const char *path, const bolt_options *opts, bolt_db **out);
int bolt_close(bolt_db *db);
void bolt_db_free(bolt_db *db);
int bolt_db_info(bolt_db *db, bolt_info *out);
/* The txid of the last committed write: what a read tx begun now would see
 * (0 for a NULL or closed db). One locked read, for callers that only need
 * to know whether the file changed since they last looked. */
uint64_t bolt_db_txid(bolt_db *db);
int bolt_db_sync(bolt_db *db);
/* Drop the file mapping's pages from this process's page tables (madvise
 * DONTNEED on the read-only shared mapping): nothing changes for readers, a
 * page read again faults back in from the page cache. For a long read of a
 * whole file (verification, export) whose RSS would otherwise grow to the
 * file's size. */
int bolt_db_release_pages(bolt_db *db);
uint32_t bolt_os_page_size(void);

/* ---- transactions ---- */
/* A write tx that hit an I/O error, corruption or NOMEM is poisoned: further
 * writes and commit return BOLT_ERR_TX_FAILED. A commit that fails (for that
 * or any other reason) rolls the tx back before returning, releasing the
 * writer slot; bolt_tx_rollback on such a tx then returns BOLT_OK. */
int bolt_begin(bolt_db *db, int writable, bolt_tx **out);
int bolt_tx_commit(bolt_tx *tx);
int bolt_tx_rollback(bolt_tx *tx);
void bolt_tx_free(bolt_tx *tx);
uint64_t bolt_tx_id(bolt_tx *tx);
int bolt_tx_writable(bolt_tx *tx);
int bolt_tx_closed(bolt_tx *tx);
uint64_t bolt_tx_size(bolt_tx *tx);   /* bytes: pgid * page size as this tx sees it */
/* A number that grows with every change the tx makes (put, delete, bucket
 * create/delete, sequence), and UINT64_MAX once the tx has failed or closed:
 * equal readings before and after an operation mean it left the tx as it was. */
uint64_t bolt_tx_changes(bolt_tx *tx);

/* The root bucket: its keys are the top-level buckets. Put/Delete of plain
 * values on it fail with BOLT_ERR_INCOMPATIBLE, as bbolt's Tx API allows none. */
int bolt_tx_root(bolt_tx *tx, bolt_bucket **out);

/* ---- buckets ---- */
/* Missing bucket -> BOLT_ERR_BUCKET_NOT_FOUND; key holding a value -> BOLT_ERR_INCOMPATIBLE. */
int bolt_bucket_bucket(bolt_bucket *b, const uint8_t *name, size_t name_len, bolt_bucket **out);
/* if_not_exists=0: an existing bucket -> BOLT_ERR_BUCKET_EXISTS */
int bolt_bucket_create(bolt_bucket *b, const uint8_t *name, size_t name_len, int if_not_exists, bolt_bucket **out);
int bolt_bucket_delete_bucket(bolt_bucket *b, const uint8_t *name, size_t name_len);
int bolt_bucket_writable(bolt_bucket *b);

/* Missing key, or a key naming a nested bucket: BOLT_OK with out->value NULL and out->flags telling which. */
int bolt_bucket_get(bolt_bucket *b, const uint8_t *key, size_t key_len, bolt_kv *out);
int bolt_bucket_put(bolt_bucket *b, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len);
int bolt_bucket_delete(bolt_bucket *b, const uint8_t *key, size_t key_len);

int bolt_bucket_sequence(bolt_bucket *b, uint64_t *out);
int bolt_bucket_set_sequence(bolt_bucket *b, uint64_t seq);
int bolt_bucket_next_sequence(bolt_bucket *b, uint64_t *out);
int bolt_bucket_stats_get(bolt_bucket *b, bolt_bucket_stats *out);

/* Batch calls, one C call for many items. Keys and values are packed back to
 * back in `data` as k0 v0 k1 v1 ...; lengths come in key_lens / value_lens.
 * put_batch stops at the first failing item and reports its index in *done. */
int bolt_bucket_put_batch(bolt_bucket *b, size_t n, const uint8_t *data,
                          const uint32_t *key_lens, const uint32_t *value_lens, size_t *done);

/* ---- cursors ---- */
size_t bolt_cursor_size(void);
int bolt_cursor_init(bolt_cursor *c, bolt_bucket *b);
int bolt_cursor_first(bolt_cursor *c, bolt_kv *out);
int bolt_cursor_last(bolt_cursor *c, bolt_kv *out);
int bolt_cursor_next(bolt_cursor *c, bolt_kv *out);
int bolt_cursor_prev(bolt_cursor *c, bolt_kv *out);
int bolt_cursor_seek(bolt_cursor *c, const uint8_t *key, size_t key_len, bolt_kv *out);
/* Deletes the item under the cursor; nested buckets -> BOLT_ERR_INCOMPATIBLE (as bbolt). */
int bolt_cursor_delete(bolt_cursor *c);

/* ---- batch scan (packed.c) ---- */
/* Hands up to `max` items moving forward (the first is the current item when
 * include_current is set) to fn, without copying them: key and value point
 * into the file or the tx's memory and are valid only during the call. fn runs
 * with the transaction locked, so it must not call the engine. It returns 0
 * when it took the item, nonzero to stop: the cursor then stays on that item
 * (call again with include_current=1). Nested buckets: value NULL, length 0,
 * bucket 1. *n is how many items fn took; *end is set when the cursor passed
 * the last item. */
typedef int (*bolt_item_fn)(void *ctx, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                            uint32_t value_len, int bucket);
int bolt_cursor_next_each(bolt_cursor *c, int include_current, size_t max, bolt_item_fn fn, void *ctx,
                          size_t *n, int *end);

/* ---- subtree walk (walk.c) ---- */
/* Depth-first copy of a bucket's whole subtree (nested buckets down to
 * max_depth levels) into a malloc'd buffer, freed with bolt_free. Records:
 * u32 depth, u32 flags (1 = nested bucket), u32 key_len, u32 value_len, then
 * key and value bytes; a nested bucket is followed by its own entries. */
int bolt_bucket_walk(bolt_bucket *b, uint32_t max_depth, uint8_t **out, size_t *out_len);
/* The copy's record header: depth, flags, key length and value length, each
 * a native-endian u32; flags is BOLT_WALK_FLAG_BUCKET for a nested bucket. */
enum bolt_walk_layout {
    BOLT_WALK_HEADER_SIZE = 16,
    BOLT_WALK_FLAG_BUCKET = 1
};
/* The same walk handing each entry to fn instead of copying it: depth, key,
 * value (NULL and 0 for a nested bucket, whose entries follow at depth + 1
 * when depth < max_depth) and bucket (1 for a nested bucket). The pointers
 * are valid only during the call. fn runs with the transaction locked, so it
 * must not call the engine; nonzero from fn ends the walk early (the call
 * still returns BOLT_OK: fn knows why it stopped), except BOLT_WALK_SKIP,
 * which for a nested bucket means: go on without its entries (a visitor
 * that wants a few fields of each record need not read the rest). */
enum bolt_walk_reply {
    BOLT_WALK_CONTINUE = 0,
    BOLT_WALK_SKIP = -1
};
typedef int (*bolt_walk_fn)(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len,
                            const uint8_t *value, uint32_t value_len, int bucket);
int bolt_bucket_walk_each(bolt_bucket *b, uint32_t max_depth, bolt_walk_fn fn, void *ctx);

/* bolt_bucket_walk of the bucket reached from the top level through n
 * nested buckets (names packed back to back, lengths in name_lens), in a
 * read transaction of its own: one call where a binding would make a begin,
 * a lookup per level, a walk and a rollback (a Get of one image by name).
 * A missing bucket on the path: BOLT_ERR_BUCKET_NOT_FOUND; a key there
 * holding a value: BOLT_ERR_INCOMPATIBLE. */
int bolt_db_walk_path(bolt_db *db, size_t n, const uint8_t *names, const uint32_t *name_lens, uint32_t max_depth,
                      uint8_t **out, size_t *out_len);

/* ---- whole-file tools ---- */
/* Structural check equivalent to bbolt's Tx.Check, plus key order and header
 * sanity. *report is a malloc'd string of newline-separated problems (empty
 * when the file is sound; free it with bolt_free); *problems is their count.
 * Stops collecting after max_problems (0 = no limit). */
int bolt_check(bolt_tx *tx, size_t max_problems, char **report, size_t *problems);
/* Copy every bucket, key and sequence of src into dst (both open; dst
 * writable), committing whenever a transaction has written tx_max_bytes
 * (0 = one transaction), like bbolt's Compact. A bolt_close of src from
 * another thread waits for the copy to finish; one of dst waits for the
 * transaction in hand, and the copy then fails with BOLT_ERR_DB_CLOSED. */
int bolt_compact(bolt_db *dst, bolt_db *src, uint64_t tx_max_bytes);
void bolt_free(void *p);

#endif
