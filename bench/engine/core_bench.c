/*
 * core_bench.c - the engine workloads of bench/engine_bench.py run straight
 * against the boltimages C core (native/bolt.h), without Python in the way.
 * engine_bench.py compiles it at run time with the native C sources (cc -O2) and
 * compares it with bbolt_bench.go on the same data files.
 *
 * Usage: core_bench DATA_DIR DB_DIR a,b,c,d,e,f
 * Prints one JSON object {workload: {"seconds": s, "ops": n, "check": "..."}}.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bolt.h"

enum { KEY_LEN = 16, VALUE_LEN = 100 };

typedef struct blob {
    uint8_t *data;
    size_t len;
} blob;

typedef struct field {
    const uint8_t *p;
    size_t n;
} field;

typedef struct image {
    field f[6]; /* name, createdat, updatedat, digest, mediatype, size */
    field *labels; /* key, value, key, value ... */
    size_t nlabels;
} image;

static const char *data_dir;
static const char *db_dir;
static int first_result = 1;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("core_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void ok(int status, const char *what)
{
    if (status != BOLT_OK)
        die("%s: %s (%s)", what, bolt_status_name(status), bolt_errmsg());
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the whole process (user + system): steadier than wall time
 * for CPU-bound work on a shared machine. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static blob read_file(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", data_dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    blob b = { malloc(len > 0 ? (size_t)len : 1), (size_t)len };
    if (!b.data || fread(b.data, 1, b.len, f) != b.len)
        die("cannot read %s", path);
    fclose(f);
    return b;
}

static void db_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/core-%s.db", db_dir, name);
}

static bolt_db *open_db(const char *path, int read_only)
{
    bolt_options o;
    bolt_options_init(&o);
    o.read_only = read_only;
    o.create = !read_only;
    o.timeout = 1.0;
    o.file_mode = 0600;
    bolt_db *db;
    ok(bolt_open(path, &o, &db), path);
    return db;
}

static void close_db(bolt_db *db)
{
    ok(bolt_close(db), "close");
    bolt_db_free(db);
}

static bolt_bucket *child(bolt_bucket *parent, const char *name, int create, int if_not_exists)
{
    bolt_bucket *b;
    if (create)
        ok(bolt_bucket_create(parent, (const uint8_t *)name, strlen(name), if_not_exists, &b), name);
    else
        ok(bolt_bucket_bucket(parent, (const uint8_t *)name, strlen(name), &b), name);
    return b;
}

static bolt_bucket *root_child(bolt_tx *tx, const char *name, int create, int if_not_exists)
{
    bolt_bucket *root;
    ok(bolt_tx_root(tx, &root), "root");
    return child(root, name, create, if_not_exists);
}

static bolt_cursor *new_cursor(bolt_bucket *b)
{
    size_t size = (bolt_cursor_size() + 7) & ~(size_t)7;
    bolt_cursor *c = aligned_alloc(8, size);
    if (!c)
        die("out of memory");
    ok(bolt_cursor_init(c, b), "cursor init");
    return c;
}

static void emit(const char *name, double secs, double cpu, size_t ops, const char *check)
{
    printf("%s\"%s\": {\"seconds\": %.9f, \"cpu_seconds\": %.9f, \"ops\": %zu, \"check\": \"%s\"}",
           first_result ? "{" : ", ", name, secs, cpu, ops, check);
    first_result = 0;
}

static void count_bench(const char *path, char *check, size_t n)
{
    bolt_db *db = open_db(path, 1);
    bolt_tx *tx;
    ok(bolt_begin(db, 0, &tx), "begin");
    bolt_cursor *c = new_cursor(root_child(tx, "bench", 0, 0));
    bolt_kv kv;
    size_t keys = 0, bytes = 0;
    for (ok(bolt_cursor_first(c, &kv), "first"); kv.key; ok(bolt_cursor_next(c, &kv), "next")) {
        keys++;
        bytes += kv.value_len;
    }
    free(c);
    ok(bolt_tx_rollback(tx), "rollback");
    bolt_tx_free(tx);
    close_db(db);
    snprintf(check, n, "keys=%zu bytes=%zu", keys, bytes);
}

/* Every key with its value in one write transaction, one call per item. */
static void load(const char *result, const char *name, const char *keys_file, const char *values_file)
{
    char path[4096], check[128];
    db_path(path, sizeof path, name);
    unlink(path);
    blob keys = read_file(keys_file), values = read_file(values_file);
    size_t n = keys.len / KEY_LEN;
    if (keys.len % KEY_LEN || values.len != n * VALUE_LEN)
        die("%s/%s have inconsistent sizes", keys_file, values_file);
    bolt_db *db = open_db(path, 0);
    double start = now(), cpu0 = cpu_now();
    bolt_tx *tx;
    ok(bolt_begin(db, 1, &tx), "begin");
    bolt_bucket *b = root_child(tx, "bench", 1, 0);
    for (size_t i = 0; i < n; i++)
        ok(bolt_bucket_put(b, keys.data + i * KEY_LEN, KEY_LEN, values.data + i * VALUE_LEN, VALUE_LEN), "put");
    ok(bolt_tx_commit(tx), "commit");
    double secs = now() - start, cpu = cpu_now() - cpu0;
    bolt_tx_free(tx);
    close_db(db);
    count_bench(path, check, sizeof check);
    emit(result, secs, cpu, n, check);
    free(keys.data);
    free(values.data);
}

static void point_gets(void)
{
    char path[4096], check[128];
    db_path(path, sizeof path, "b");
    blob keys = read_file("c.keys");
    size_t n = keys.len / KEY_LEN, found = 0, sum = 0;
    bolt_db *db = open_db(path, 1);
    double start = now(), cpu0 = cpu_now();
    bolt_tx *tx;
    ok(bolt_begin(db, 0, &tx), "begin");
    bolt_bucket *b = root_child(tx, "bench", 0, 0);
    bolt_kv kv;
    for (size_t i = 0; i < n; i++) {
        ok(bolt_bucket_get(b, keys.data + i * KEY_LEN, KEY_LEN, &kv), "get");
        if (kv.value) {
            found++;
            sum += kv.value_len ? kv.value[0] : 0;
        }
    }
    ok(bolt_tx_rollback(tx), "rollback");
    double secs = now() - start, cpu = cpu_now() - cpu0;
    bolt_tx_free(tx);
    close_db(db);
    snprintf(check, sizeof check, "found=%zu sum=%zu", found, sum);
    emit("c", secs, cpu, n, check);
    free(keys.data);
}

typedef struct scan_sum {
    size_t n, sum;
} scan_sum;

static int scan_take(void *ctx, const uint8_t *key, uint32_t key_len, const uint8_t *value, uint32_t value_len,
                     int bucket)
{
    (void)key_len;
    (void)bucket;
    scan_sum *s = ctx;
    s->n++;
    s->sum += key[0] + (value_len ? value[0] : 0);
    return 0;
}

/* One scan of b's keys on a fresh open of the file (so each pays the same
 * first-touch page faults Go's open does): with the batch scan
 * (bolt_cursor_next_each, 1,024 items per call) or one bolt_cursor_next
 * call per item. Both add each key's and value's first byte, as Go does. */
static void scan_once(int batch, scan_sum *s, double *secs, double *cpu)
{
    char path[4096];
    db_path(path, sizeof path, "b");
    bolt_db *db = open_db(path, 1);
    s->n = s->sum = 0;
    double start = now(), cpu0 = cpu_now();
    bolt_tx *tx;
    ok(bolt_begin(db, 0, &tx), "begin");
    bolt_cursor *c = new_cursor(root_child(tx, "bench", 0, 0));
    bolt_kv kv;
    ok(bolt_cursor_first(c, &kv), "first");
    if (batch) {
        int include = 1, end = !kv.key;
        while (!end) {
            size_t got = 0;
            ok(bolt_cursor_next_each(c, include, 1024, scan_take, s, &got, &end), "next_each");
            include = 0;
            if (!got)
                break;
        }
    } else {
        for (; kv.key; ok(bolt_cursor_next(c, &kv), "next"))
            scan_take(s, kv.key, (uint32_t)kv.key_len, kv.value, (uint32_t)kv.value_len, 0);
    }
    ok(bolt_tx_rollback(tx), "rollback");
    *secs = now() - start;
    *cpu = cpu_now() - cpu0;
    free(c);
    bolt_tx_free(tx);
    close_db(db);
}

/* Row d: timed with the batch scan, the C core's scan call; the loop of one
 * call per item is reported beside it (per_item_*). */
static void scan(void)
{
    scan_sum batch, item;
    double secs, cpu, item_secs, item_cpu;
    scan_once(1, &batch, &secs, &cpu);
    scan_once(0, &item, &item_secs, &item_cpu);
    if (batch.n != item.n || batch.sum != item.sum)
        die("scan: the batch scan saw %zu keys (sum %zu), the per-item scan %zu (sum %zu)", batch.n, batch.sum,
            item.n, item.sum);
    printf("%s\"d\": {\"seconds\": %.9f, \"cpu_seconds\": %.9f, \"ops\": %zu, \"check\": \"keys=%zu sum=%zu\", "
           "\"per_item_seconds\": %.9f, \"per_item_cpu_seconds\": %.9f}",
           first_result ? "{" : ", ", secs, cpu, batch.n, batch.n, batch.sum, item_secs, item_cpu);
    first_result = 0;
}

/* One durable (fsynced) write transaction per key. */
static void single_tx(void)
{
    char path[4096], check[128];
    db_path(path, sizeof path, "e");
    unlink(path);
    blob keys = read_file("e.keys"), values = read_file("e.values");
    size_t n = keys.len / KEY_LEN;
    bolt_db *db = open_db(path, 0);
    bolt_tx *tx;
    ok(bolt_begin(db, 1, &tx), "begin");
    root_child(tx, "bench", 1, 0);
    ok(bolt_tx_commit(tx), "commit");
    bolt_tx_free(tx);
    double start = now(), cpu0 = cpu_now();
    for (size_t i = 0; i < n; i++) {
        ok(bolt_begin(db, 1, &tx), "begin");
        ok(bolt_bucket_put(root_child(tx, "bench", 0, 0), keys.data + i * KEY_LEN, KEY_LEN,
                           values.data + i * VALUE_LEN, VALUE_LEN), "put");
        ok(bolt_tx_commit(tx), "commit");
        bolt_tx_free(tx);
    }
    double secs = now() - start, cpu = cpu_now() - cpu0;
    close_db(db);
    count_bench(path, check, sizeof check);
    emit("e", secs, cpu, n, check);
    free(keys.data);
    free(values.data);
}

static uint32_t get_u32(const blob *b, size_t *off)
{
    if (*off + 4 > b->len)
        die("f.images truncated at %zu", *off);
    uint32_t v = (uint32_t)b->data[*off] | (uint32_t)b->data[*off + 1] << 8 |
                 (uint32_t)b->data[*off + 2] << 16 | (uint32_t)b->data[*off + 3] << 24;
    *off += 4;
    return v;
}

static field get_field(const blob *b, size_t *off)
{
    uint32_t n = get_u32(b, off);
    if (*off + n > b->len)
        die("f.images field overruns the file at %zu", *off);
    field f = { b->data + *off, n };
    *off += n;
    return f;
}

static image *parse_images(const blob *b, size_t *count)
{
    size_t cap = 1024, n = 0, off = 0;
    image *out = malloc(cap * sizeof *out);
    while (out && off < b->len) {
        uint32_t fields = get_u32(b, &off);
        if (fields < 6 || (fields - 6) % 2)
            die("f.images: bad field count %u", fields);
        if (n == cap) {
            cap *= 2;
            out = realloc(out, cap * sizeof *out);
            if (!out)
                break;
        }
        image *im = &out[n++];
        for (int i = 0; i < 6; i++)
            im->f[i] = get_field(b, &off);
        im->nlabels = (fields - 6) / 2;
        im->labels = malloc((fields - 6 + 1) * sizeof(field));
        if (!im->labels)
            die("out of memory");
        for (uint32_t i = 0; i < fields - 6; i++)
            im->labels[i] = get_field(b, &off);
    }
    if (!out)
        die("out of memory");
    *count = n;
    return out;
}

static void put_str(bolt_bucket *b, const char *key, field v)
{
    ok(bolt_bucket_put(b, (const uint8_t *)key, strlen(key), v.p, v.n), key);
}

static size_t value_len(bolt_bucket *b, const char *key)
{
    bolt_kv kv;
    ok(bolt_bucket_get(b, (const uint8_t *)key, strlen(key), &kv), key);
    if (!kv.value)
        die("missing %s", key);
    return kv.value_len;
}

/* What row f's read adds up: images, labels, and the bytes of every name,
 * time, label and target field, the same figures Go's reader adds. */
typedef struct image_sum {
    size_t images, labels, bytes;
    int in; /* while walking: which sub-bucket of a record the entries are in */
} image_sum;
enum { IN_OTHER, IN_LABELS, IN_TARGET };

static int key_is(const uint8_t *key, uint32_t len, const char *name)
{
    return len == strlen(name) && memcmp(key, name, len) == 0;
}

/* One entry of the walk of the images bucket: depth 0 is an image's bucket,
 * 1 its fields and sub-buckets, 2 the entries of labels and target. */
static int image_take(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                      uint32_t value_len, int bucket)
{
    image_sum *s = ctx;
    if (depth == 0) {
        if (!bucket)
            return BOLT_WALK_SKIP; /* a plain key among the images: not a record */
        s->images++;
        s->bytes += key_len;
    } else if (depth == 1) {
        s->in = IN_OTHER;
        if (bucket)
            s->in = key_is(key, key_len, "labels") ? IN_LABELS : key_is(key, key_len, "target") ? IN_TARGET : IN_OTHER;
        else if (key_is(key, key_len, "createdat") || key_is(key, key_len, "updatedat"))
            s->bytes += value_len;
    } else if (s->in == IN_LABELS) {
        s->labels++;
        s->bytes += key_len + value_len;
    } else if (s->in == IN_TARGET && !bucket
               && (key_is(key, key_len, "digest") || key_is(key, key_len, "mediatype") || key_is(key, key_len, "size"))) {
        s->bytes += value_len;
    }
    (void)value;
    return BOLT_WALK_CONTINUE;
}

/* Row f's read on a fresh read-only open: with the engine's subtree walk
 * (bolt_bucket_walk_each), or as Go's reader does it, a cursor over the
 * images and a bucket lookup and a get per field of each. */
static void read_images(int walk, image_sum *s, double *secs, double *cpu)
{
    char path[4096];
    db_path(path, sizeof path, "f");
    bolt_db *db = open_db(path, 1);
    memset(s, 0, sizeof *s);
    double start = now(), cpu0 = cpu_now();
    bolt_tx *tx;
    ok(bolt_begin(db, 0, &tx), "begin");
    bolt_bucket *all = child(child(root_child(tx, "v1", 0, 0), "default", 0, 0), "images", 0, 0);
    if (walk) {
        ok(bolt_bucket_walk_each(all, 2, image_take, s), "walk");
    } else {
        bolt_cursor *c = new_cursor(all);
        bolt_cursor *lc = new_cursor(all); /* re-initialised on each labels bucket */
        bolt_kv kv;
        for (ok(bolt_cursor_first(c, &kv), "first"); kv.key; ok(bolt_cursor_next(c, &kv), "next")) {
            if (kv.value)
                continue;
            bolt_bucket *ib;
            ok(bolt_bucket_bucket(all, kv.key, kv.key_len, &ib), "image");
            s->images++;
            s->bytes += kv.key_len + value_len(ib, "createdat") + value_len(ib, "updatedat");
            bolt_bucket *lb;
            int st = bolt_bucket_bucket(ib, (const uint8_t *)"labels", 6, &lb);
            if (st == BOLT_OK) {
                bolt_kv l;
                ok(bolt_cursor_init(lc, lb), "cursor init");
                for (ok(bolt_cursor_first(lc, &l), "first"); l.key; ok(bolt_cursor_next(lc, &l), "next")) {
                    s->labels++;
                    s->bytes += l.key_len + l.value_len;
                }
            } else if (st != BOLT_ERR_BUCKET_NOT_FOUND) {
                ok(st, "labels");
            }
            bolt_bucket *tb = child(ib, "target", 0, 0);
            s->bytes += value_len(tb, "digest") + value_len(tb, "mediatype") + value_len(tb, "size");
        }
        free(c);
        free(lc);
    }
    ok(bolt_tx_rollback(tx), "rollback");
    *secs = now() - start;
    *cpu = cpu_now() - cpu0;
    bolt_tx_free(tx);
    close_db(db);
}

/* containerd 1.6's image layout, one transaction per image, then one read
 * transaction that reads every field of every image: timed with the engine's
 * walk, the C core's call for a subtree; Go's way (a lookup per bucket and
 * field) is reported beside it (per_item_*). */
static void images(void)
{
    char path[4096], check[160];
    db_path(path, sizeof path, "f");
    unlink(path);
    blob raw = read_file("f.images");
    size_t n;
    image *ims = parse_images(&raw, &n);
    bolt_db *db = open_db(path, 0);
    bolt_tx *tx;
    double start = now(), cpu0 = cpu_now();
    for (size_t i = 0; i < n; i++) {
        image *im = &ims[i];
        ok(bolt_begin(db, 1, &tx), "begin");
        bolt_bucket *all = child(child(root_child(tx, "v1", 1, 1), "default", 1, 1), "images", 1, 1);
        bolt_bucket *ib;
        ok(bolt_bucket_create(all, im->f[0].p, im->f[0].n, 0, &ib), "create image");
        put_str(ib, "createdat", im->f[1]);
        put_str(ib, "updatedat", im->f[2]);
        if (im->nlabels) {
            bolt_bucket *lb = child(ib, "labels", 1, 0);
            for (size_t j = 0; j < im->nlabels; j++)
                ok(bolt_bucket_put(lb, im->labels[2 * j].p, im->labels[2 * j].n,
                                   im->labels[2 * j + 1].p, im->labels[2 * j + 1].n), "label");
        }
        bolt_bucket *tb = child(ib, "target", 1, 0);
        put_str(tb, "digest", im->f[3]);
        put_str(tb, "mediatype", im->f[4]);
        put_str(tb, "size", im->f[5]);
        ok(bolt_tx_commit(tx), "commit");
        bolt_tx_free(tx);
    }
    double secs = now() - start, cpu = cpu_now() - cpu0;

    bolt_kv kv;
    size_t stored = 0;
    ok(bolt_begin(db, 0, &tx), "begin");
    bolt_cursor *c = new_cursor(child(child(root_child(tx, "v1", 0, 0), "default", 0, 0), "images", 0, 0));
    for (ok(bolt_cursor_first(c, &kv), "first"); kv.key; ok(bolt_cursor_next(c, &kv), "next"))
        stored++;
    free(c);
    ok(bolt_tx_rollback(tx), "rollback");
    bolt_tx_free(tx);
    snprintf(check, sizeof check, "images=%zu", stored);
    emit("f_create", secs, cpu, n, check);

    close_db(db);
    image_sum walked, looked_up;
    double item_secs, item_cpu;
    read_images(1, &walked, &secs, &cpu);
    read_images(0, &looked_up, &item_secs, &item_cpu);
    if (walked.images != looked_up.images || walked.labels != looked_up.labels || walked.bytes != looked_up.bytes)
        die("f_read: the walk saw images=%zu labels=%zu bytes=%zu, the per-bucket reads images=%zu labels=%zu "
            "bytes=%zu", walked.images, walked.labels, walked.bytes, looked_up.images, looked_up.labels,
            looked_up.bytes);
    printf("%s\"f_read\": {\"seconds\": %.9f, \"cpu_seconds\": %.9f, \"ops\": %zu, "
           "\"check\": \"images=%zu labels=%zu bytes=%zu\", \"per_item_seconds\": %.9f, "
           "\"per_item_cpu_seconds\": %.9f}",
           first_result ? "{" : ", ", secs, cpu, walked.images, walked.images, walked.labels, walked.bytes,
           item_secs, item_cpu);
    first_result = 0;
    for (size_t i = 0; i < n; i++)
        free(ims[i].labels);
    free(ims);
    free(raw.data);
    unlink(path);
}

static int wants(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0)
            return 1;
        p += n + (end ? 1 : 0);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        die("usage: core_bench DATA_DIR DB_DIR a,b,c,d,e,f");
    data_dir = argv[1];
    db_dir = argv[2];
    const char *only = argv[3];
    char path[4096];
    if (wants(only, "a")) {
        load("a", "a", "a.keys", "a.values");
        db_path(path, sizeof path, "a");
        unlink(path);
    }
    if (wants(only, "b") || wants(only, "c") || wants(only, "d")) {
        load("b", "b", "b.keys", "b.values");
        if (wants(only, "c"))
            point_gets();
        if (wants(only, "d"))
            scan();
        db_path(path, sizeof path, "b");
        unlink(path);
    }
    if (wants(only, "e")) {
        single_tx();
        db_path(path, sizeof path, "e");
        unlink(path);
    }
    if (wants(only, "f"))
        images();
    puts(first_result ? "{}" : "}");
    return 0;
}
