/*
 * db.c - opening a file (create, flock, meta selection, mmap, freelist
 * load), beginning transactions, and closing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bucket.h"
#include "check.h"
#include "db.h"
#include "err.h"
#include "page.h"
#include "tx.h"

#define MAP_MIN_SIZE (32ull << 10)
#define MAP_DOUBLING_LIMIT (1ull << 30)
#define LOCK_POLL_NS 50000000L

uint32_t bolt_os_page_size(void)
{
    long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? (uint32_t)v : 4096u;
}

void bolt_options_init(bolt_options *o)
{
    memset(o, 0, sizeof *o);
    o->create = 1;
    o->timeout = 1.0;
    o->freelist_mode = BOLT_FREELIST_KEEP;
    o->file_mode = 0600;
}

int db_write_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return set_err(BOLT_ERR_IO, "write at offset %llu failed: %s", (unsigned long long)off, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return BOLT_OK;
}

static int read_full(int fd, void *buf, size_t n, uint64_t off, size_t *got)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return set_err(BOLT_ERR_IO, "read at offset %llu failed: %s", (unsigned long long)off, strerror(errno));
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return BOLT_OK;
}

int db_sync(bolt_db *db)
{
    if (fdatasync(db->fd) != 0)
        return set_err(BOLT_ERR_IO, "%s: fdatasync failed: %s", db->path, strerror(errno));
    return BOLT_OK;
}

void map_unref_locked(bolt_db *db, bmap *m)
{
    (void)db;
    if (!m || --m->refs > 0)
        return;
    munmap(m->data, m->len);
    free(m);
}

static uint64_t map_size(uint64_t need)
{
    if (need <= MAP_DOUBLING_LIMIT) {
        uint64_t s = MAP_MIN_SIZE;
        while (s < need)
            s <<= 1;
        return s;
    }
    return (need + MAP_DOUBLING_LIMIT - 1) / MAP_DOUBLING_LIMIT * MAP_DOUBLING_LIMIT;
}

int db_ensure_map_locked(bolt_db *db, uint64_t bytes)
{
    if (db->map && db->map->len >= bytes)
        return BOLT_OK;
    uint64_t len = map_size(bytes > db->file_size ? bytes : db->file_size);
    if (len > SIZE_MAX)
        return set_err(BOLT_ERR_NOMEM, "database too large to map");
    bmap *m = malloc(sizeof *m);
    if (!m)
        return set_err(BOLT_ERR_NOMEM, "out of memory");
    void *p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, db->fd, 0);
    if (p == MAP_FAILED) {
        free(m);
        return set_err(BOLT_ERR_IO, "%s: mmap of %llu bytes failed: %s", db->path, (unsigned long long)len,
                       strerror(errno));
    }
    m->data = p;
    m->len = (size_t)len;
    m->refs = 1;
    bmap *old = db->map;
    db->map = m;
    map_unref_locked(db, old);
    return BOLT_OK;
}

static void db_destroy(bolt_db *db)
{
    fl_destroy(&db->fl);
    free(db->readers);
    free(db->path);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->wcond);
    free(db);
}

void db_unref_unlock(bolt_db *db)
{
    int last = --db->refs == 0;
    pthread_mutex_unlock(&db->mu);
    if (last)
        db_destroy(db);
}

static int take_lock(int fd, const char *path, int exclusive, double timeout)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
            return BOLT_OK;
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return set_err(BOLT_ERR_IO, "%s: flock failed: %s", path, strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
        if (timeout >= 0 && waited >= timeout)
            return set_err(BOLT_ERR_LOCKED,
                           "%s: timed out after %.1fs waiting for the file lock: another process holds the "
                           "database open (is containerd running?)", path, timeout);
        struct timespec ts = {0, LOCK_POLL_NS};
        if (timeout >= 0 && timeout - waited < 0.05)
            ts.tv_nsec = (long)((timeout - waited) * 1e9) + 1;
        nanosleep(&ts, NULL);
    }
}

static int init_file(int fd, const char *path, uint32_t ps)
{
    uint8_t *buf = calloc(4, ps);
    if (!buf)
        return set_err(BOLT_ERR_NOMEM, "out of memory");
    bmeta m = {0};
    m.magic = META_MAGIC;
    m.version = META_VERSION;
    m.page_size = ps;
    m.root = 3;
    m.freelist = 2;
    m.pgid = 4;
    for (uint64_t i = 0; i < 2; i++) {
        m.txid = i;
        meta_encode(&m, i, buf + i * ps, ps);
    }
    put64(buf + 2 * ps + PAGE_OFF_ID, 2);
    put16(buf + 2 * ps + PAGE_OFF_FLAGS, PAGE_FLAG_FREELIST);
    put64(buf + 3 * ps + PAGE_OFF_ID, 3);
    put16(buf + 3 * ps + PAGE_OFF_FLAGS, PAGE_FLAG_LEAF);
    int rc = db_write_full(fd, buf, 4 * (size_t)ps, 0);
    free(buf);
    if (!rc && fdatasync(fd) != 0)
        rc = set_err(BOLT_ERR_IO, "%s: fdatasync failed: %s", path, strerror(errno));
    return rc;
}

/* Read and validate the meta page of `slot` at page size ps. */
static int read_meta(int fd, uint32_t ps, int slot, uint64_t fsize, bmeta *m)
{
    uint8_t buf[PAGE_HEADER_SIZE + META_BODY_SIZE];
    uint64_t off = (uint64_t)slot * ps;
    if (off + sizeof buf > fsize)
        return set_err(BOLT_ERR_INVALID, "meta page %d: file too short (%llu bytes)", slot,
                       (unsigned long long)fsize);
    size_t got = 0;
    int rc = read_full(fd, buf, sizeof buf, off, &got);
    if (rc)
        return rc;
    if (got < sizeof buf)
        return set_err(BOLT_ERR_INVALID, "meta page %d: file too short", slot);
    meta_decode(buf, m);
    if ((rc = meta_validate(m, slot)))
        return rc;
    if (slot == 1 && m->page_size != ps)
        return set_err(BOLT_ERR_INVALID, "meta page 1: page size %u does not match its position", m->page_size);
    return BOLT_OK;
}

/* Pick the meta to use: the valid one with the higher txid whose pages all
 * lie inside the file, falling back to the other one. */
static int choose_meta(int fd, const char *path, uint64_t fsize, bmeta *out, int *slot, uint32_t *ps_out)
{
    bmeta m[2];
    int ok[2] = {0, 0};
    char msg0[256];
    int rc0;
    /* page size from meta 0 when it is valid; else probe for meta 1 */
    bmeta t;
    uint32_t ps = 0;
    int r = read_meta(fd, MIN_PAGE_SIZE, 0, fsize, &t);
    if (r == BOLT_OK) {
        m[0] = t;
        ok[0] = 1;
        ps = t.page_size;
    } else if (r == BOLT_ERR_IO) {
        return r;
    }
    rc0 = r;
    snprintf(msg0, sizeof msg0, "%s", bolt_errmsg());
    int rc1 = BOLT_ERR_INVALID;
    char msg1[256] = "meta page 1: not found at any page size";
    if (ps) {
        rc1 = read_meta(fd, ps, 1, fsize, &m[1]);
        if (rc1 == BOLT_ERR_IO)
            return rc1;
        if (rc1 == BOLT_OK)
            ok[1] = 1;
        else
            snprintf(msg1, sizeof msg1, "%s", bolt_errmsg());
    } else {
        for (uint32_t cand = MIN_PAGE_SIZE; cand <= MAX_PAGE_SIZE; cand <<= 1) {
            int rr = read_meta(fd, cand, 1, fsize, &t);
            if (rr == BOLT_ERR_IO)
                return rr;
            if (rr == BOLT_OK) {
                m[1] = t;
                ok[1] = 1;
                ps = cand;
                break;
            }
            if (rr == BOLT_ERR_VERSION)
                rc1 = rr, snprintf(msg1, sizeof msg1, "%s", bolt_errmsg());
        }
    }
    if (!ok[0] && !ok[1]) {
        if (rc0 == BOLT_ERR_VERSION || rc1 == BOLT_ERR_VERSION)
            return set_err(BOLT_ERR_VERSION, "%s: %s", path, rc0 == BOLT_ERR_VERSION ? msg0 : msg1);
        return set_err(BOLT_ERR_INVALID, "%s: not a valid bolt database: %s; %s", path, msg0, msg1);
    }
    int order[2];
    if (ok[0] && ok[1] && m[1].txid > m[0].txid) {
        order[0] = 1; order[1] = 0;
    } else if (ok[0]) {
        order[0] = 0; order[1] = 1;
    } else {
        order[0] = 1; order[1] = 0;
    }
    for (int i = 0; i < 2; i++) {
        int s = order[i];
        if (!ok[s])
            continue;
        if (m[s].pgid * (uint64_t)ps <= fsize) {
            *out = m[s];
            *slot = s;
            *ps_out = ps;
            return BOLT_OK;
        }
    }
    int s = order[0];
    return set_err(BOLT_ERR_CORRUPT, "%s: file is truncated: %llu bytes, but meta page %d needs %llu pages of %u bytes",
                   path, (unsigned long long)fsize, s, (unsigned long long)m[s].pgid, ps);
}

/* A throwaway read view of the current meta, for open-time scans. */
static void scan_tx(bolt_db *db, bolt_tx *tx)
{
    memset(tx, 0, sizeof *tx);
    tx->db = db;
    tx->meta = db->meta;
    tx->map = db->map;
    tx->ps = db->ps;
    tx->pgid = db->meta.pgid;
}

static int load_freelist(bolt_db *db)
{
    bolt_tx tx;
    scan_tx(db, &tx);
    int rc = BOLT_OK;
    if (db->meta.freelist != PGID_NONE) {
        bpage p;
        rc = tx_page(&tx, db->meta.freelist, &p);
        if (!rc)
            rc = fl_read(&db->fl, &p, db->meta.pgid);
        if (!rc)
            return BOLT_OK;
        /* A damaged freelist page: the tree tells us what is free. */
    }
    uint64_t *ids;
    size_t n;
    int rc2 = rebuild_freelist(&tx, &ids, &n);
    if (rc2)
        return rc2;
    return fl_set(&db->fl, ids, n);
}

int bolt_open(const char *path, const bolt_options *opts, bolt_db **out)
{
    bolt_options defaults;
    if (!opts) {
        bolt_options_init(&defaults);
        opts = &defaults;
    }
    if (!path || !out)
        return set_err(BOLT_ERR_INVALID_ARG, "path and out are required");
    *out = NULL;
    int ro = opts->read_only != 0;
    int flags = (ro ? O_RDONLY : O_RDWR | (opts->create ? O_CREAT : 0)) | O_CLOEXEC;
    int fd = open(path, flags, opts->file_mode ? (mode_t)opts->file_mode : 0600);
    if (fd < 0)
        return set_err(BOLT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = take_lock(fd, path, !ro, opts->timeout);
    struct stat st;
    if (!rc && fstat(fd, &st) != 0)
        rc = set_err(BOLT_ERR_IO, "%s: fstat failed: %s", path, strerror(errno));
    if (!rc && st.st_size == 0) {
        if (ro) {
            rc = set_err(BOLT_ERR_INVALID, "%s: file is empty, not a bolt database", path);
        } else {
            uint32_t ps = opts->page_size ? opts->page_size : bolt_os_page_size();
            if (ps < MIN_PAGE_SIZE || ps > MAX_PAGE_SIZE || (ps & (ps - 1)))
                rc = set_err(BOLT_ERR_INVALID_ARG, "page size %u is not a power of two in [%u, %u]", ps,
                             MIN_PAGE_SIZE, MAX_PAGE_SIZE);
            else
                rc = init_file(fd, path, ps);
            if (!rc && fstat(fd, &st) != 0)
                rc = set_err(BOLT_ERR_IO, "%s: fstat failed: %s", path, strerror(errno));
        }
    }
    bmeta meta;
    int slot = 0;
    uint32_t ps = 0;
    if (!rc)
        rc = choose_meta(fd, path, (uint64_t)st.st_size, &meta, &slot, &ps);
    bolt_db *db = NULL;
    if (!rc && !(db = calloc(1, sizeof *db)))
        rc = set_err(BOLT_ERR_NOMEM, "out of memory");
    if (!rc && !(db->path = strdup(path)))
        rc = set_err(BOLT_ERR_NOMEM, "out of memory");
    if (rc) {
        if (db) {
            free(db->path);
            free(db);
        }
        close(fd);
        return rc;
    }
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->wcond, NULL);
    db->fd = fd;
    db->ps = ps;
    db->read_only = ro;
    db->no_sync = opts->no_sync != 0;
    db->meta = meta;
    db->meta_slot = slot;
    db->file_size = (uint64_t)st.st_size;
    db->refs = 1;
    fl_init(&db->fl);
    switch (opts->freelist_mode) {
    case BOLT_FREELIST_PERSIST: db->persist_freelist = 1; break;
    case BOLT_FREELIST_NO_SYNC: db->persist_freelist = 0; break;
    default: db->persist_freelist = meta.freelist != PGID_NONE; break;
    }
    pthread_mutex_lock(&db->mu);
    rc = db_ensure_map_locked(db, meta.pgid * (uint64_t)ps);
    pthread_mutex_unlock(&db->mu);
    if (!rc && !ro)
        rc = load_freelist(db);
    if (!rc && !ro && db->persist_freelist && meta.freelist == PGID_NONE) {
        /* Write a real freelist now, as bbolt does on opening such a file. */
        bolt_tx *tx;
        rc = bolt_begin(db, 1, &tx);
        if (!rc) {
            rc = bolt_tx_commit(tx);
            if (rc)
                bolt_tx_rollback(tx);
            bolt_tx_free(tx);
        }
    }
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bolt_errmsg());
        bolt_db_free(db);
        return set_err(rc, "%s", msg);
    }
    clear_err();
    *out = db;
    return BOLT_OK;
}

int bolt_begin(bolt_db *db, int writable, bolt_tx **out)
{
    if (!db || !out)
        return set_err(BOLT_ERR_INVALID_ARG, "db and out are required");
    *out = NULL;
    bolt_tx *tx = calloc(1, sizeof *tx);
    if (!tx)
        return set_err(BOLT_ERR_NOMEM, "out of memory");
    struct bolt_bucket *root = calloc(1, sizeof *root);
    if (!root) {
        free(tx);
        return set_err(BOLT_ERR_NOMEM, "out of memory");
    }
    int rc = BOLT_OK;
    pthread_mutex_lock(&db->mu);
    if (db->closed) {
        rc = set_err(BOLT_ERR_DB_CLOSED, "database is closed");
    } else if (writable) {
        if (db->read_only) {
            rc = set_err(BOLT_ERR_DB_READ_ONLY, "database is opened read-only");
        } else if (db->writer_active && pthread_equal(db->writer_thread, pthread_self())) {
            rc = set_err(BOLT_ERR_TX_BUSY, "this thread already holds the write transaction");
        } else {
            while (db->writer_active && !db->closed)
                pthread_cond_wait(&db->wcond, &db->mu);
            if (db->closed)
                rc = set_err(BOLT_ERR_DB_CLOSED, "database is closed");
        }
    }
    if (!rc && !writable && db->nreaders == db->capreaders) {
        size_t nc = db->capreaders ? db->capreaders * 2 : 8;
        uint64_t *nr = realloc(db->readers, nc * sizeof *nr);
        if (!nr)
            rc = set_err(BOLT_ERR_NOMEM, "out of memory");
        else
            db->readers = nr, db->capreaders = nc;
    }
    if (!rc && db->map->len < db->meta.pgid * (uint64_t)db->ps)
        rc = db_ensure_map_locked(db, db->meta.pgid * (uint64_t)db->ps);
    if (!rc && writable) {
        /* Pages freed by tx T are reusable once no reader is older than T. */
        uint64_t minid = UINT64_MAX;
        for (size_t i = 0; i < db->nreaders; i++)
            if (db->readers[i] < minid)
                minid = db->readers[i];
        if (minid > 0)
            rc = fl_release(&db->fl, minid - 1);
    }
    if (rc) {
        pthread_mutex_unlock(&db->mu);
        free(root);
        free(tx);
        return rc;
    }
    pthread_mutex_init(&tx->mu, NULL);
    tx->db = db;
    tx->writable = writable != 0;
    tx->refs = 1;
    tx->meta = db->meta;
    tx->ps = db->ps;
    tx->map = db->map;
    tx->map->refs++;
    tx->pgid = db->meta.pgid;
    if (writable) {
        tx->meta.txid++;
        db->writer_active = 1;
        db->writer_thread = pthread_self();
        db->writer = tx;
    } else {
        db->readers[db->nreaders++] = tx->meta.txid;
    }
    tx->next_open = db->open_txs;
    if (db->open_txs)
        db->open_txs->prev_open = tx;
    db->open_txs = tx;
    db->refs++;
    pthread_mutex_unlock(&db->mu);
    root->tx = tx;
    root->is_root = 1;
    root->root = tx->meta.root;
    root->sequence = tx->meta.sequence;
    tx->root = root;
    tx->buckets = root;
    *out = tx;
    return BOLT_OK;
}

static void tx_unref(bolt_tx *tx)
{
    bolt_db *db = tx->db;
    pthread_mutex_lock(&db->mu);
    int last = --tx->refs == 0;
    pthread_mutex_unlock(&db->mu);
    if (!last)
        return;
    while (tx->buckets) {
        struct bolt_bucket *n = tx->buckets->next_all;
        bucket_free_handle(tx->buckets);
        tx->buckets = n;
    }
    tx_free_retained(tx);
    pthread_mutex_destroy(&tx->mu);
    free(tx);
    pthread_mutex_lock(&db->mu);
    db_unref_unlock(db);
}

int bolt_close(bolt_db *db)
{
    if (!db)
        return BOLT_OK;
    pthread_mutex_lock(&db->mu);
    if (db->closed && db->fd < 0) {
        pthread_mutex_unlock(&db->mu);
        return BOLT_OK;
    }
    db->closed = 1;
    pthread_cond_broadcast(&db->wcond);
    /* Roll back open transactions one at a time; each leaves the list. */
    while (db->open_txs) {
        bolt_tx *tx = db->open_txs;
        tx->refs++;
        pthread_mutex_unlock(&db->mu);
        pthread_mutex_lock(&tx->mu);
        if (!tx->closed)
            tx_rollback_locked(tx);
        pthread_mutex_unlock(&tx->mu);
        tx_unref(tx);
        pthread_mutex_lock(&db->mu);
    }
    int rc = BOLT_OK;
    if (db->fd >= 0) {
        flock(db->fd, LOCK_UN);
        if (close(db->fd) != 0)
            rc = set_err(BOLT_ERR_IO, "%s: close failed: %s", db->path, strerror(errno));
        db->fd = -1;
    }
    map_unref_locked(db, db->map);
    db->map = NULL;
    fl_destroy(&db->fl);
    pthread_mutex_unlock(&db->mu);
    return rc;
}

void bolt_db_free(bolt_db *db)
{
    if (!db)
        return;
    bolt_close(db);
    pthread_mutex_lock(&db->mu);
    if (db->handle_freed) {
        pthread_mutex_unlock(&db->mu);
        return;
    }
    db->handle_freed = 1;
    db_unref_unlock(db);
}

int bolt_db_info(bolt_db *db, bolt_info *out)
{
    if (!db || !out)
        return set_err(BOLT_ERR_INVALID_ARG, "db and out are required");
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&db->mu);
    if (db->closed) {
        pthread_mutex_unlock(&db->mu);
        return set_err(BOLT_ERR_DB_CLOSED, "database is closed");
    }
    out->page_size = db->ps;
    out->txid = db->meta.txid;
    out->pgid = db->meta.pgid;
    out->root_pgid = db->meta.root;
    out->freelist_pgid = db->meta.freelist;
    out->meta_slot = (uint32_t)db->meta_slot;
    out->file_size = db->file_size;
    out->free_count = fl_free_count(&db->fl);
    out->pending_count = fl_pending_count(&db->fl);
    out->freelist_persisted = db->persist_freelist;
    out->read_only = db->read_only;
    out->open_read_txs = (uint32_t)db->nreaders;
    out->last_commit_runs = db->last_commit_runs;
    pthread_mutex_unlock(&db->mu);
    return BOLT_OK;
}

uint64_t bolt_db_txid(bolt_db *db)
{
    if (!db)
        return 0;
    pthread_mutex_lock(&db->mu);
    uint64_t txid = db->closed ? 0 : db->meta.txid;
    pthread_mutex_unlock(&db->mu);
    return txid;
}

int bolt_db_release_pages(bolt_db *db)
{
    if (!db)
        return set_err(BOLT_ERR_INVALID_ARG, "no db");
    pthread_mutex_lock(&db->mu);
    if (db->map && db->map->data && db->map->len)
        (void)madvise(db->map->data, db->map->len, MADV_DONTNEED);
    pthread_mutex_unlock(&db->mu);
    return BOLT_OK;
}

int bolt_db_sync(bolt_db *db)
{
    if (!db)
        return set_err(BOLT_ERR_INVALID_ARG, "no db");
    pthread_mutex_lock(&db->mu);
    int rc = db->closed ? set_err(BOLT_ERR_DB_CLOSED, "database is closed") : (db->read_only ? BOLT_OK : db_sync(db));
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* ---- transaction API ---- */

int tx_commit_or_rollback_locked(bolt_tx *tx)
{
    int rc = tx_commit_locked(tx);
    if (rc && tx->writable && !tx->closed) {
        /* Like bbolt: a commit that fails rolls back at once, so the writer
         * slot is never held by a tx nobody can finish. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", bolt_errmsg());
        tx_rollback_locked(tx);
        tx->commit_failed = 1;
        set_err(rc, "%s", msg);
    }
    return rc;
}

int bolt_tx_commit(bolt_tx *tx)
{
    if (!tx)
        return set_err(BOLT_ERR_INVALID_ARG, "no transaction");
    pthread_mutex_lock(&tx->mu);
    int rc = tx_commit_or_rollback_locked(tx);
    pthread_mutex_unlock(&tx->mu);
    return rc;
}

int bolt_tx_rollback(bolt_tx *tx)
{
    if (!tx)
        return set_err(BOLT_ERR_INVALID_ARG, "no transaction");
    pthread_mutex_lock(&tx->mu);
    int rc = (tx->closed && tx->commit_failed) ? BOLT_OK : tx_rollback_locked(tx);
    pthread_mutex_unlock(&tx->mu);
    return rc;
}

void bolt_tx_free(bolt_tx *tx)
{
    if (!tx)
        return;
    pthread_mutex_lock(&tx->mu);
    if (!tx->closed)
        tx_rollback_locked(tx);
    pthread_mutex_unlock(&tx->mu);
    tx_unref(tx);
}

uint64_t bolt_tx_id(bolt_tx *tx) { return tx ? tx->meta.txid : 0; }
int bolt_tx_writable(bolt_tx *tx) { return tx ? tx->writable : 0; }
int bolt_tx_closed(bolt_tx *tx)
{
    if (!tx)
        return 1;
    /* under the lock: another thread's commit, rollback or close sets it */
    pthread_mutex_lock(&tx->mu);
    int closed = tx->closed;
    pthread_mutex_unlock(&tx->mu);
    return closed;
}

uint64_t bolt_tx_size(bolt_tx *tx)
{
    if (!tx)
        return 0;
    pthread_mutex_lock(&tx->mu);
    uint64_t s = (tx->writable ? tx->pgid : tx->meta.pgid) * (uint64_t)tx->ps;
    pthread_mutex_unlock(&tx->mu);
    return s;
}

uint64_t bolt_tx_changes(bolt_tx *tx)
{
    if (!tx)
        return UINT64_MAX;
    pthread_mutex_lock(&tx->mu);
    uint64_t n = tx->closed || tx->failed ? UINT64_MAX : tx->mod_seq;
    pthread_mutex_unlock(&tx->mu);
    return n;
}

int bolt_tx_root(bolt_tx *tx, bolt_bucket **out)
{
    int rc = tx_enter(tx, 0);
    if (rc)
        return rc;
    *out = tx->root;
    tx_leave(tx);
    return BOLT_OK;
}

void bolt_free(void *p) { free(p); }
