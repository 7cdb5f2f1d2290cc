/*
 * pyext/unpack.c - the Python side of the packed batch format (module
 * boltimages._unpack).
 *
 * Why a CPython extension next to the cffi binding: cffi hands C buffers to
 * Python, but cannot create Python objects from C. Cutting a packed batch
 * into bytes objects from Python costs a slice object, a method call and a
 * list step per piece; here it is one allocation per piece. For the packed
 * and walk layouts bolt.h documents, the module checks every length against
 * the buffer it was given, so a wrong length is a ValueError, never a read
 * past the end.
 *
 * scan() goes one step further for cursor scans: it calls the engine's
 * bolt_cursor_next_each, which hands each item straight from the leaf page,
 * and makes the bytes objects there, so an item is copied once instead of
 * twice and the memory waits of the page walk overlap with the allocation
 * work. walk_tree() and walk_rows() do the same for bucket walks
 * (bolt_bucket_walk_each / bolt_bucket_walk_from): nested dicts, or one
 * tuple per record bucket with the fields asked for. This module does not
 * link against the engine (a separate shared object); boltimages.bolt binds
 * the functions' addresses once at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../bolt.h"
#include "bytes_cache.h"
#include "gc_pause.h"

/* Flags of packed items (see bolt_packed in bolt.h): nonzero means no value. */
#define PACKED_FLAG_VALUE 0u

typedef struct views {
    Py_buffer data, lens, flags;
    int have_data, have_lens, have_flags;
} views;

static void views_release(views *v)
{
    if (v->have_data)
        PyBuffer_Release(&v->data);
    if (v->have_lens)
        PyBuffer_Release(&v->lens);
    if (v->have_flags)
        PyBuffer_Release(&v->flags);
}

/* Take the three buffers and check that they hold `n` items with
 * `lens_per_item` u32 lengths each. */
static int views_get(views *v, PyObject *data, PyObject *lens, PyObject *flags, Py_ssize_t n,
                     Py_ssize_t lens_per_item)
{
    memset(v, 0, sizeof *v);
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative item count");
        return -1;
    }
    if (PyObject_GetBuffer(data, &v->data, PyBUF_SIMPLE) < 0)
        return -1;
    v->have_data = 1;
    if (PyObject_GetBuffer(lens, &v->lens, PyBUF_SIMPLE) < 0)
        return -1;
    v->have_lens = 1;
    if (PyObject_GetBuffer(flags, &v->flags, PyBUF_SIMPLE) < 0)
        return -1;
    v->have_flags = 1;
    if (v->lens.len / (Py_ssize_t)sizeof(uint32_t) / lens_per_item < n || v->flags.len < n) {
        PyErr_Format(PyExc_ValueError, "packed batch: %zd items do not fit the length and flag arrays", n);
        return -1;
    }
    return 0;
}

static uint32_t len_at(const views *v, Py_ssize_t i)
{
    uint32_t x;
    memcpy(&x, (const char *)v->lens.buf + (size_t)i * sizeof x, sizeof x);
    return x;
}

/* Next piece of `len` bytes at *off as bytes; NULL with ValueError past the end. */
static PyObject *take(const views *v, Py_ssize_t *off, uint32_t len)
{
    if ((Py_ssize_t)len > v->data.len - *off) {
        PyErr_Format(PyExc_ValueError, "packed batch: a %u-byte piece runs past the %zd-byte buffer",
                     len, v->data.len);
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)v->data.buf + *off, len);
    *off += len;
    return b;
}

/* Cut n items of `per_item` pieces each (lens: per_item u32 per item) into
 * the lists out[0..per_item-1]. An item's last piece is its value: None when
 * its flag byte is set. Returns 0, or -1 with an exception set. */
static int cut_items(const views *v, Py_ssize_t n, Py_ssize_t per_item, PyObject **out)
{
    Py_ssize_t off = 0;
    const uint8_t *fl = v->flags.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t j = 0; j < per_item; j++) {
            uint32_t len = len_at(v, per_item * i + j);
            PyObject *piece;
            if (j == per_item - 1 && fl[i] != PACKED_FLAG_VALUE) {
                piece = Py_None;
                Py_INCREF(piece);
                off += len; /* zero for buckets and missing keys; skipped all the same */
            } else if (!(piece = take(v, &off, len))) {
                return -1;
            }
            PyList_SET_ITEM(out[j], i, piece);
        }
    }
    return 0;
}

/* Parse (data, lens, flags, n), take the buffers and cut per_item lists. */
static int cut_call(PyObject *args, const char *format, Py_ssize_t per_item, PyObject **out)
{
    PyObject *data, *lens, *flags;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, format, &data, &lens, &flags, &n))
        return -1;
    views v;
    int rc = views_get(&v, data, lens, flags, n, per_item);
    for (Py_ssize_t j = 0; rc == 0 && j < per_item; j++)
        if (!(out[j] = PyList_New(n)))
            rc = -1;
    if (rc == 0)
        rc = cut_items(&v, n, per_item, out);
    views_release(&v);
    if (rc < 0)
        for (Py_ssize_t j = 0; j < per_item; j++)
            Py_CLEAR(out[j]);
    return rc;
}

PyDoc_STRVAR(values_doc,
"values(data, lens, flags, n) -> list\n\n"
"Cut n values out of a packed get batch: lens holds n u32 lengths, flags n\n"
"bytes (nonzero: missing key or nested bucket, None).");

static PyObject *unpack_values(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *list = NULL;
    if (cut_call(args, "OOOn:values", 1, &list) < 0)
        return NULL;
    return list;
}

PyDoc_STRVAR(scatter_doc,
"scatter(items, order) -> list\n\n"
"out[order[i]] = items[i] for a permutation `order` of u32 (a buffer):\n"
"puts answers computed in sorted key order back in the caller's order.");

static PyObject *unpack_scatter(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *items, *order_obj;
    if (!PyArg_ParseTuple(args, "O!O:scatter", &PyList_Type, &items, &order_obj))
        return NULL;
    Py_buffer order;
    if (PyObject_GetBuffer(order_obj, &order, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = NULL;
    if (order.len / (Py_ssize_t)sizeof(uint32_t) != n) {
        PyErr_Format(PyExc_ValueError, "scatter: %zd items but %zd order entries", n,
                     order.len / (Py_ssize_t)sizeof(uint32_t));
        goto done;
    }
    if (!(out = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t to;
        memcpy(&to, (const char *)order.buf + (size_t)i * sizeof to, sizeof to);
        if ((Py_ssize_t)to >= n || PyList_GET_ITEM(out, to) != NULL) {
            PyErr_Format(PyExc_ValueError, "scatter: order is not a permutation (entry %zd)", i);
            Py_CLEAR(out);
            goto done;
        }
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_INCREF(item);
        PyList_SET_ITEM(out, to, item);
    }
done:
    PyBuffer_Release(&order);
    return out;
}

/* One walk record header at off, checked against the buffer. */
static int walk_header(const Py_buffer *b, Py_ssize_t off, uint32_t h[4])
{
    if (b->len - off < BOLT_WALK_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "walk buffer: record header cut short at byte %zd", off);
        return -1;
    }
    memcpy(h, (const char *)b->buf + off, BOLT_WALK_HEADER_SIZE);
    uint64_t body = (uint64_t)h[2] + (h[1] & BOLT_WALK_FLAG_BUCKET ? 0 : h[3]);
    if (body > (uint64_t)(b->len - off - BOLT_WALK_HEADER_SIZE)) {
        PyErr_Format(PyExc_ValueError, "walk buffer: record at byte %zd runs past the end", off);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(records_doc,
"records(data) -> list of (depth, key, value)\n\n"
"Every record of a bolt_bucket_walk buffer; value None for a nested bucket.");

static PyObject *unpack_records(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    key_cache keys = {{NULL}};
    PyObject *out = PyList_New(0);
    Py_ssize_t off = 0;
    const char *base = b.buf;
    int gc_was = gc_pause();
    while (out && off < b.len) {
        uint32_t h[4];
        if (walk_header(&b, off, h) < 0)
            goto fail;
        off += BOLT_WALK_HEADER_SIZE;
        PyObject *depth = PyLong_FromUnsignedLong(h[0]);
        PyObject *key = cached_key(&keys, base + off, h[2]);
        off += h[2];
        PyObject *val;
        if (h[1] & BOLT_WALK_FLAG_BUCKET) {
            val = Py_None;
            Py_INCREF(val);
        } else {
            val = PyBytes_FromStringAndSize(base + off, h[3]);
            off += h[3];
        }
        PyObject *rec = depth && key && val ? PyTuple_Pack(3, depth, key, val) : NULL;
        Py_XDECREF(depth);
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (!rec || PyList_Append(out, rec) < 0) {
            Py_XDECREF(rec);
            goto fail;
        }
        Py_DECREF(rec);
    }
    key_cache_clear(&keys);
    gc_resume(gc_was);
    PyBuffer_Release(&b);
    return out;
fail:
    key_cache_clear(&keys);
    gc_resume(gc_was);
    PyBuffer_Release(&b);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(tree_doc,
"tree(data, max_depth) -> dict\n\n"
"A bolt_bucket_walk buffer as nested dicts: values are bytes, nested\n"
"buckets dicts (empty past max_depth, where the walk stopped descending).");

static PyObject *unpack_tree(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *arg;
    unsigned int max_depth;
    if (!PyArg_ParseTuple(args, "OI:tree", &arg, &max_depth))
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    /* stack[d] is the dict receiving records of depth d; borrowed from its parent. */
    enum { MAX_STACK = 66 };
    PyObject *stack[MAX_STACK];
    key_cache keys = {{NULL}}, values = {{NULL}};
    PyObject *root = PyDict_New();
    Py_ssize_t depth = 0;
    Py_ssize_t off = 0;
    const char *base = b.buf;
    int gc_was = gc_pause();
    if (!root)
        goto fail;
    stack[0] = root;
    while (off < b.len) {
        uint32_t h[4];
        if (walk_header(&b, off, h) < 0)
            goto fail;
        if ((Py_ssize_t)h[0] > depth || h[0] >= MAX_STACK - 1 || h[0] > max_depth) {
            PyErr_Format(PyExc_ValueError, "walk buffer: record at byte %zd jumps to depth %u", off, h[0]);
            goto fail;
        }
        off += BOLT_WALK_HEADER_SIZE;
        depth = h[0];
        PyObject *key = cached_key(&keys, base + off, h[2]);
        if (!key)
            goto fail;
        off += h[2];
        PyObject *val;
        if (h[1] & BOLT_WALK_FLAG_BUCKET) {
            val = PyDict_New();
        } else {
            val = cached_value(&values, base + off, h[3]);
            off += h[3];
        }
        if (!val || PyDict_SetItem(stack[depth], key, val) < 0) {
            Py_DECREF(key);
            Py_XDECREF(val);
            goto fail;
        }
        Py_DECREF(key);
        Py_DECREF(val); /* the parent dict holds it */
        if (h[1] & BOLT_WALK_FLAG_BUCKET) {
            stack[depth + 1] = val;
            depth++;
        }
    }
    key_cache_clear(&keys);
    key_cache_clear(&values);
    gc_resume(gc_was);
    PyBuffer_Release(&b);
    return root;
fail:
    key_cache_clear(&keys);
    key_cache_clear(&values);
    gc_resume(gc_was);
    PyBuffer_Release(&b);
    Py_XDECREF(root);
    return NULL;
}

/* ---- cursor scans straight from the engine ---- */

typedef int (*next_each_fn)(bolt_cursor *c, int include_current, size_t max, bolt_item_fn fn, void *ctx,
                            size_t *n, int *end);

typedef int (*walk_each_fn)(bolt_bucket *b, uint32_t max_depth, bolt_walk_fn fn, void *ctx);
typedef int (*walk_from_fn)(bolt_bucket *b, const uint8_t *start, size_t start_len, uint32_t max_depth,
                            bolt_walk_fn fn, void *ctx);

/* Bound once by bind_engine(); NULL until then. */
static next_each_fn engine_next_each;
static walk_each_fn engine_walk_each;
static walk_from_fn engine_walk_from;
static Py_ssize_t engine_cursor_size;

PyDoc_STRVAR(bind_engine_doc,
"bind_engine(next_each_address, cursor_size, walk_each_address, walk_from_address) -> None\n\n"
"Private to boltimages.bolt: the addresses of bolt_cursor_next_each,\n"
"bolt_bucket_walk_each and bolt_bucket_walk_from in the engine module and\n"
"bolt_cursor_size(), for scan(), walk_tree() and walk_rows().");

static PyObject *unpack_bind_engine(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long next_each, walk_each, walk_from;
    Py_ssize_t cursor_size;
    if (!PyArg_ParseTuple(args, "KnKK:bind_engine", &next_each, &cursor_size, &walk_each, &walk_from))
        return NULL;
    if (!next_each || !walk_each || !walk_from || cursor_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "bind_engine: null function or empty cursor");
        return NULL;
    }
    engine_next_each = (next_each_fn)(uintptr_t)next_each;
    engine_walk_each = (walk_each_fn)(uintptr_t)walk_each;
    engine_walk_from = (walk_from_fn)(uintptr_t)walk_from;
    engine_cursor_size = cursor_size;
    Py_RETURN_NONE;
}

typedef struct scan_lists {
    PyObject *keys;
    PyObject *values;
    Py_ssize_t n;
} scan_lists;

/* Runs inside the engine with the transaction locked: it only allocates
 * bytes objects, which are not tracked by the cyclic collector, so no
 * Python code (a finalizer calling the engine) can run here. The lists were
 * made beforehand for the same reason. Nonzero (with MemoryError set)
 * stops the scan on this item. */
static int scan_take(void *ctx, const uint8_t *key, uint32_t key_len, const uint8_t *value, uint32_t value_len,
                     int bucket)
{
    scan_lists *s = ctx;
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, key_len);
    if (!k)
        return 1;
    PyObject *v;
    if (bucket) {
        v = Py_None;
        Py_INCREF(v);
    } else if (!(v = PyBytes_FromStringAndSize((const char *)value, value_len))) {
        Py_DECREF(k);
        return 1;
    }
    PyList_SET_ITEM(s->keys, s->n, k);
    PyList_SET_ITEM(s->values, s->n, v);
    s->n++;
    return 0;
}

PyDoc_STRVAR(scan_doc,
"scan(cursor, include_current, max) -> (status, keys, values, end)\n\n"
"Up to max cursor items moving forward as two lists (value None for a\n"
"nested bucket); cursor is a writable buffer over the engine cursor's\n"
"memory. status is the engine's return code (0: ok), end true when the\n"
"cursor passed the last item. Private to boltimages.bolt.");

static PyObject *unpack_scan(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *cursor_obj;
    int include_current;
    Py_ssize_t max;
    if (!PyArg_ParseTuple(args, "Opn:scan", &cursor_obj, &include_current, &max))
        return NULL;
    if (!engine_next_each) {
        PyErr_SetString(PyExc_RuntimeError, "scan: the engine is not bound (bind_engine)");
        return NULL;
    }
    if (max < 0) {
        PyErr_SetString(PyExc_ValueError, "scan: negative item count");
        return NULL;
    }
    Py_buffer cursor;
    if (PyObject_GetBuffer(cursor_obj, &cursor, PyBUF_WRITABLE) < 0)
        return NULL;
    PyObject *out = NULL;
    scan_lists s = {PyList_New(max), PyList_New(max), 0};
    if (cursor.len < engine_cursor_size || ((uintptr_t)cursor.buf & 7u)) {
        PyErr_SetString(PyExc_ValueError, "scan: the cursor buffer is too small or misaligned");
        goto done;
    }
    if (!s.keys || !s.values)
        goto done;
    size_t n = 0;
    int end = 0;
    int status = engine_next_each(cursor.buf, include_current, (size_t)max, scan_take, &s, &n, &end);
    if (PyErr_Occurred())
        goto done;
    if (n != (size_t)s.n) {
        PyErr_SetString(PyExc_RuntimeError, "scan: the engine and the lists disagree on the item count");
        goto done;
    }
    /* Unfilled slots are NULL: cut them off before anyone sees the lists. */
    if (s.n < max && (PyList_SetSlice(s.keys, s.n, max, NULL) < 0 ||
                      PyList_SetSlice(s.values, s.n, max, NULL) < 0))
        goto done;
    out = Py_BuildValue("iOOO", status, s.keys, s.values, end ? Py_True : Py_False);
done:
    /* On failure, slots past s.n are still NULL, which list deallocation accepts. */
    Py_XDECREF(s.keys);
    Py_XDECREF(s.values);
    PyBuffer_Release(&cursor);
    return out;
}

/* ---- bucket trees straight from the engine ---- */

#if PY_VERSION_HEX >= 0x030A0000
/* Dicts are built inside the engine's walk with the transaction locked. A
 * dict allocation may start the cyclic collector, whose finalizers could
 * run Python code that calls the engine on this same transaction and
 * deadlocks on its lock: so the collector is paused for the whole walk,
 * which needs PyGC_Disable (3.10+); older versions keep the buffer path. */
enum { TREE_MAX_STACK = 66 };

typedef struct tree_build {
    PyObject *stack[TREE_MAX_STACK]; /* stack[d] receives entries of depth d; borrowed */
    uint32_t top;                    /* deepest depth an entry may have now */
    uint32_t max_depth;
    key_cache keys, values;
} tree_build;

/* Nonzero (with an exception set) stops the walk. */
static int tree_take(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                     uint32_t value_len, int bucket)
{
    tree_build *t = ctx;
    if (depth > t->top || depth > t->max_depth || depth >= TREE_MAX_STACK - 1) {
        PyErr_Format(PyExc_ValueError, "bucket walk: an entry jumps to depth %u", depth);
        return 1;
    }
    PyObject *k = cached_key(&t->keys, (const char *)key, key_len);
    if (!k)
        return 1;
    PyObject *v = bucket ? PyDict_New() : cached_value(&t->values, (const char *)value, value_len);
    int rc = v ? PyDict_SetItem(t->stack[depth], k, v) : -1;
    Py_DECREF(k);
    Py_XDECREF(v); /* on success the parent dict holds it */
    if (rc < 0)
        return 1;
    t->top = depth;
    if (bucket) {
        t->stack[depth + 1] = v;
        t->top = depth + 1;
    }
    return 0;
}

PyDoc_STRVAR(walk_tree_doc,
"walk_tree(bucket_address, max_depth) -> (status, dict)\n\n"
"The bucket's subtree as nested dicts (values bytes, nested buckets dicts,\n"
"empty past max_depth), built during the engine's walk. status is the\n"
"engine's return code (0: ok). Private to boltimages.bolt.");

static PyObject *unpack_walk_tree(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long address;
    Py_ssize_t max_depth;
    if (!PyArg_ParseTuple(args, "Kn:walk_tree", &address, &max_depth))
        return NULL;
    if (!engine_walk_each) {
        PyErr_SetString(PyExc_RuntimeError, "walk_tree: the engine is not bound (bind_engine)");
        return NULL;
    }
    if (!address || max_depth < 0 || max_depth > TREE_MAX_STACK - 2) {
        PyErr_Format(PyExc_ValueError, "walk_tree: no bucket, or max_depth %zd outside 0..%d", max_depth,
                     TREE_MAX_STACK - 2);
        return NULL;
    }
    tree_build t;
    memset(&t, 0, sizeof t);
    t.max_depth = (uint32_t)max_depth;
    PyObject *root = PyDict_New(); /* made before the lock is taken, like every container it can trigger GC */
    if (!root)
        return NULL;
    t.stack[0] = root;
    int gc_was = gc_pause();
    int status = engine_walk_each((bolt_bucket *)(uintptr_t)address, t.max_depth, tree_take, &t);
    gc_resume(gc_was);
    key_cache_clear(&t.keys);
    key_cache_clear(&t.values);
    if (PyErr_Occurred()) {
        Py_DECREF(root);
        return NULL;
    }
    PyObject *out = Py_BuildValue("iN", status, root);
    return out;
}

/* ---- one row per record bucket, straight from the engine ---- */

/* A table of records kept as one nested bucket per record (containerd's
 * images: name -> {createdat, updatedat, labels, target}) is read far more
 * cheaply as one tuple per record with the fields asked for than as a dict
 * per record: no key objects, no hashing, no dict per level, and nothing
 * built for fields nobody asked for. A field is a path of keys below the
 * record's bucket; what it ends on becomes bytes (a value) or a dict of
 * that bucket's subtree, as tree() builds it. */
enum { ROWS_MAX_FIELDS = 64 };

/* One distinct key at one depth of the paths, with the fields whose path
 * has it there: an entry is compared once per distinct key, not per field
 * (three target fields share one "target"). */
typedef struct rows_key {
    const char *key;  /* borrowed from the bytes in the caller's paths tuple */
    uint32_t len;
    uint64_t fields;
} rows_key;

typedef struct rows_build {
    PyObject *out;                            /* list of finished rows */
    PyObject *row[1 + ROWS_MAX_FIELDS];       /* the row being filled: name, fields; owned, NULL = none yet */
    int in_row;
    Py_ssize_t nrows, max_rows;               /* rows finished; stop before the record past max_rows (0: none) */
    PyObject *resume;                         /* name of the record the walk stopped at, or NULL */
    uint32_t nfields;
    uint32_t top;                             /* deepest depth an entry may have now */
    const rows_key *keys_at[TREE_MAX_STACK];  /* the distinct keys the paths have at this depth */
    uint32_t nkeys_at[TREE_MAX_STACK];
    uint64_t ends_at[TREE_MAX_STACK];         /* fields whose path ends at this depth */
    uint64_t want[TREE_MAX_STACK];            /* fields still matching the keys above this depth */
    PyObject *into[TREE_MAX_STACK];           /* dict taking the entries of this depth, or NULL; borrowed */
    key_cache keys, values;
} rows_build;

/* The current row as a tuple at the end of the list; missing fields None. */
static int rows_flush(rows_build *t)
{
    if (!t->in_row)
        return 0;
    t->in_row = 0;
    PyObject *row = PyTuple_New(1 + (Py_ssize_t)t->nfields);
    if (!row)
        return -1;
    for (uint32_t i = 0; i <= t->nfields; i++) {
        PyObject *item = t->row[i];
        if (!item) {
            item = Py_None;
            Py_INCREF(item);
        }
        t->row[i] = NULL;
        PyTuple_SET_ITEM(row, i, item);
    }
    int rc = PyList_Append(t->out, row);
    Py_DECREF(row);
    t->nrows++;
    return rc;
}

static void rows_clear(rows_build *t)
{
    for (uint32_t i = 0; i <= t->nfields; i++)
        Py_CLEAR(t->row[i]);
    Py_CLEAR(t->resume);
    key_cache_clear(&t->keys);
    key_cache_clear(&t->values);
}

/* Fields among `want` whose key at this depth is `key`. Keys of one
 * depth are distinct, so the first equal one is the only one. */
static uint64_t rows_match(const rows_build *t, uint64_t want, uint32_t depth, const uint8_t *key,
                           uint32_t key_len)
{
    const rows_key *k = t->keys_at[depth];
    for (uint32_t i = 0, n = want ? t->nkeys_at[depth] : 0; i < n; i++, k++)
        if ((k->fields & want) && k->len == key_len && memcmp(k->key, key, key_len) == 0)
            return k->fields & want;
    return 0;
}

/* Nonzero other than BOLT_WALK_SKIP (with an exception set) stops the walk. */
static int rows_take(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                     uint32_t value_len, int bucket)
{
    rows_build *t = ctx;
    if (depth > t->top || depth >= TREE_MAX_STACK - 1) {
        PyErr_Format(PyExc_ValueError, "bucket walk: an entry jumps to depth %u", depth);
        return 1;
    }
    if (depth == 0) {
        /* A record starts: the previous one is complete. Values beside
         * the record buckets are not records and make no row. */
        if (rows_flush(t) < 0)
            return 1;
        t->top = 0;
        if (!bucket)
            return BOLT_WALK_CONTINUE;
        if (!(t->row[0] = PyBytes_FromStringAndSize((const char *)key, key_len)))
            return 1;
        if (t->max_rows && t->nrows == t->max_rows) {
            /* A full batch: this record starts the next one. */
            t->resume = t->row[0];
            t->row[0] = NULL;
            return 1;
        }
        t->in_row = 1;
        if (!t->nfields)
            return BOLT_WALK_SKIP;
        t->want[1] = t->nfields == 64 ? ~0ull : (1ull << t->nfields) - 1;
        t->into[1] = NULL;
        t->top = 1;
        return BOLT_WALK_CONTINUE;
    }
    uint64_t hit = rows_match(t, t->want[depth], depth, key, key_len);
    uint64_t ends = hit & t->ends_at[depth];
    PyObject *dict = t->into[depth];
    PyObject *obj = NULL;
    if (ends || dict) {
        /* Short values repeat across records (a media type) and within one
         * (updatedat equal to createdat until the record changes): shared,
         * they cost neither an allocation nor fresh memory to fault in. */
        obj = bucket ? PyDict_New() : cached_value(&t->values, (const char *)value, value_len);
        if (!obj)
            return 1;
        if (dict) {
            PyObject *k = cached_key(&t->keys, (const char *)key, key_len);
            int rc = k ? PyDict_SetItem(dict, k, obj) : -1;
            Py_XDECREF(k);
            if (rc < 0) {
                Py_DECREF(obj);
                return 1;
            }
        }
        while (ends) {
            int f = __builtin_ctzll(ends);
            ends &= ends - 1;
            Py_INCREF(obj);
            Py_XSETREF(t->row[1 + f], obj);
        }
        Py_DECREF(obj); /* the row or the parent dict holds it */
    }
    t->top = depth;
    if (!bucket)
        return BOLT_WALK_CONTINUE;
    uint64_t deeper = hit & ~t->ends_at[depth];
    if (!obj && !deeper)
        return BOLT_WALK_SKIP;
    t->want[depth + 1] = deeper;
    t->into[depth + 1] = obj; /* a dict, or NULL when only longer paths go on below */
    t->top = depth + 1;
    return BOLT_WALK_CONTINUE;
}

PyDoc_STRVAR(walk_rows_doc,
"walk_rows(bucket_address, paths, start, max_rows) -> (status, list, resume)\n\n"
"One tuple per nested bucket of the bucket, in key order: its name, then\n"
"for each path (a tuple of 1..62 keys below the record's bucket, at most\n"
"64 paths) the value there as bytes, the bucket there as a dict of its\n"
"subtree, or None. Built during the engine's walk, from the first key >=\n"
"start (bytes, or None: from the first); with max_rows > 0 it stops after\n"
"that many rows and resume is the name of the next record (else None).\n"
"status is the engine's return code (0: ok). Private to boltimages.bolt.");

static PyObject *unpack_walk_rows(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long address;
    PyObject *paths, *start;
    Py_ssize_t max_rows;
    if (!PyArg_ParseTuple(args, "KO!On:walk_rows", &address, &PyTuple_Type, &paths, &start, &max_rows))
        return NULL;
    if (!engine_walk_from) {
        PyErr_SetString(PyExc_RuntimeError, "walk_rows: the engine is not bound (bind_engine)");
        return NULL;
    }
    if (start != Py_None && !PyBytes_Check(start)) {
        PyErr_SetString(PyExc_TypeError, "walk_rows: start must be bytes or None");
        return NULL;
    }
    if (max_rows < 0) {
        PyErr_SetString(PyExc_ValueError, "walk_rows: negative max_rows");
        return NULL;
    }
    Py_ssize_t nfields = PyTuple_GET_SIZE(paths);
    if (!address || nfields > ROWS_MAX_FIELDS) {
        PyErr_Format(PyExc_ValueError, "walk_rows: no bucket, or %zd fields (at most %d)", nfields,
                     ROWS_MAX_FIELDS);
        return NULL;
    }
    rows_build *t = PyMem_Calloc(1, sizeof *t);
    rows_key *keys = NULL;
    PyObject *out = NULL;
    if (!t) {
        PyErr_NoMemory();
        goto done;
    }
    /* Check every path before the walk, while raising is still cheap. */
    Py_ssize_t total = 0, longest = 0;
    for (Py_ssize_t f = 0; f < nfields; f++) {
        PyObject *path = PyTuple_GET_ITEM(paths, f);
        if (!PyTuple_Check(path) || PyTuple_GET_SIZE(path) < 1 || PyTuple_GET_SIZE(path) > TREE_MAX_STACK - 4) {
            PyErr_Format(PyExc_ValueError, "walk_rows: field %zd is not a tuple of 1..%d keys", f,
                         TREE_MAX_STACK - 4);
            goto done;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(path);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *key = PyTuple_GET_ITEM(path, i);
            if (!PyBytes_Check(key) || (size_t)PyBytes_GET_SIZE(key) > UINT32_MAX) {
                PyErr_Format(PyExc_TypeError, "walk_rows: key %zd of field %zd is not bytes", i, f);
                goto done;
            }
        }
        t->ends_at[n] |= 1ull << f;
        total += n;
        if (n > longest)
            longest = n;
    }
    if (!(keys = PyMem_Calloc((size_t)total + 1, sizeof *keys))) {
        PyErr_NoMemory();
        goto done;
    }
    /* Depth by depth, the distinct keys and the fields having each. */
    rows_key *at = keys;
    for (Py_ssize_t d = 1; d <= longest; d++) {
        rows_key *first = at;
        for (Py_ssize_t f = 0; f < nfields; f++) {
            PyObject *path = PyTuple_GET_ITEM(paths, f);
            if (PyTuple_GET_SIZE(path) < d)
                continue;
            PyObject *key = PyTuple_GET_ITEM(path, d - 1);
            const char *k = PyBytes_AS_STRING(key);
            uint32_t len = (uint32_t)PyBytes_GET_SIZE(key);
            rows_key *same = first;
            while (same < at && !(same->len == len && memcmp(same->key, k, len) == 0))
                same++;
            if (same == at) {
                at->key = k;
                at->len = len;
                at++;
            }
            same->fields |= 1ull << f;
        }
        t->keys_at[d] = first;
        t->nkeys_at[d] = (uint32_t)(at - first);
    }
    t->nfields = (uint32_t)nfields;
    t->max_rows = max_rows;
    /* Made before the walk locks the transaction, like every container that can trigger GC. */
    if (!(t->out = PyList_New(0)))
        goto done;
    /* Below a field that ends on a bucket its whole subtree is read, so the
     * walk may go as deep as it allows; BOLT_WALK_SKIP prunes the rest. */
    int gc_was = gc_pause();
    const uint8_t *from = start == Py_None ? NULL : (const uint8_t *)PyBytes_AS_STRING(start);
    size_t from_len = start == Py_None ? 0 : (size_t)PyBytes_GET_SIZE(start);
    int status = engine_walk_from((bolt_bucket *)(uintptr_t)address, from, from_len, TREE_MAX_STACK - 2,
                                  rows_take, t);
    if (!PyErr_Occurred())
        rows_flush(t);
    gc_resume(gc_was);
    if (!PyErr_Occurred())
        out = Py_BuildValue("iOO", status, t->out, t->resume ? t->resume : Py_None);
done:
    if (t) {
        rows_clear(t);
        Py_XDECREF(t->out);
    }
    PyMem_Free(t);
    PyMem_Free(keys);
    return out;
}
#endif

static PyMethodDef methods[] = {
    {"values", unpack_values, METH_VARARGS, values_doc},
    {"records", unpack_records, METH_O, records_doc},
    {"scatter", unpack_scatter, METH_VARARGS, scatter_doc},
    {"tree", unpack_tree, METH_VARARGS, tree_doc},
    {"bind_engine", unpack_bind_engine, METH_VARARGS, bind_engine_doc},
    {"scan", unpack_scan, METH_VARARGS, scan_doc},
#if PY_VERSION_HEX >= 0x030A0000
    {"walk_tree", unpack_walk_tree, METH_VARARGS, walk_tree_doc},
    {"walk_rows", unpack_walk_rows, METH_VARARGS, walk_rows_doc},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "boltimages._unpack",
    "Packed engine batches cut into Python objects (see native/pyext/unpack.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__unpack(void)
{
    return PyModule_Create(&module);
}
