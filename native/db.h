/* db.h - the open database: file, lock, mappings, current meta, freelist. */
#ifndef BOLTIMAGES_DB_H
#define BOLTIMAGES_DB_H

#include <pthread.h>
#include <stdint.h>

#include "bolt.h"
#include "freelist.h"
#include "meta.h"
#include "runs.h"

/* A read-only mapping of the file. A bigger file gets a new mapping; the old
 * one lives on while any transaction that began on it is open, so no reader
 * ever waits for (or races with) a remap. refs is guarded by db->mu. */
typedef struct bmap {
    uint8_t *data;
    size_t len;
    int refs;
} bmap;

struct bolt_db {
    pthread_mutex_t mu;         /* guards everything below except fd/ps */
    pthread_cond_t wcond;       /* signalled when the write tx ends */
    int fd;
    char *path;
    uint32_t ps;
    int read_only, no_sync, persist_freelist;
    int closed, handle_freed;
    int refs;                   /* handle + every unfreed tx */
    bmeta meta;                 /* the meta of the last commit */
    int meta_slot;
    bmap *map;
    uint64_t file_size;
    freelist fl;                /* valid for writable databases */
    run_memory runs;            /* the last commits' pages; used by writers only */
    uint32_t last_commit_runs;  /* runs of pages the last commit wrote; under mu */
    int writer_active;
    pthread_t writer_thread;
    struct bolt_tx *writer;
    uint64_t *readers;          /* txids of open read transactions */
    size_t nreaders, capreaders;
    struct bolt_tx *open_txs;   /* every open (not yet ended) tx */
};

void map_unref_locked(bolt_db *db, bmap *m);
/* Make sure the current mapping covers `bytes`; db->mu held. */
int db_ensure_map_locked(bolt_db *db, uint64_t bytes);
/* Drop one reference and unlock db->mu; frees the db at zero. */
void db_unref_unlock(bolt_db *db);
int db_write_full(int fd, const void *buf, size_t n, uint64_t off);
int db_sync(bolt_db *db);

#endif
