/*
 * pyext/records.c - containerd image records cut out of a bucket walk copy
 * (module boltimages._records), for the store layer (store/image_records.py).
 *
 * Why in C: a List reads the namespace's whole images bucket with one
 * engine walk (bolt_bucket_walk: u32 depth, flags, key length, value
 * length, then the bytes) and cuts it into records. In Python that loop
 * spent about 1.5 us per entry, some eleven entries per image: 170 ms of a
 * 10,000-image List, paid by the first List after every commit (later ones
 * reuse the records until the next commit). Here it is one pass making
 * only the objects a record keeps.
 *
 * What a record is, exactly as store/image_records.py describes it:
 *   depth top      a nested bucket: an image, its key the name (a plain
 *                  value there is no image and is skipped, with anything
 *                  under it);
 *   depth top + 1  createdat and updatedat (plain values), the labels,
 *                  annotations and target buckets (a bucket named like a
 *                  time, or a value named like a sub-bucket, is ignored);
 *   depth top + 2  label and annotation entries, in key order (a nested
 *                  bucket there reads as an empty value, as containerd's
 *                  ForEach sees it), and the target's digest, mediatype
 *                  and size (plain values only).
 * With top = -1 the copy is one record's own bucket, whose name is given.
 *
 * Each record is made by the caller's factory (RawImage), called with
 * (name, created, updated, labels, annotations, has_target, digest,
 * media_type, size) while the cyclic collector is paused: ten thousand
 * records made with it running cost up to three times as long.
 * The walk copy comes from our own engine, but every length is still
 * checked against the buffer: a copy that does not parse is a ValueError.
 *
 * cut_bucket does the same without the copy: it is the visitor of the
 * engine's own walk (bolt_bucket_walk_each), so no buffer is grown to the
 * bucket's size, copied into bytes and freed. Those three cost 6 to 14 ms of
 * a cold List of 10,000 images (4.6 MB), most of it in page faults of the
 * fresh memory (about 2,200 per List, counted with getrusage).
 *
 * Both also say which records Python must check (is_plain), so the List
 * path calls RawImage.check only for those.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../bolt.h"
#include "bytes_cache.h"
#include "gc_pause.h"
#include "go_time.h"
#include "record_slots.h"

/* Where the entries being read belong, inside the current record. */
enum section { IN_OTHER, IN_LABELS, IN_ANNOTATIONS, IN_TARGET };

/* A record's fields, in the order the factory takes them. */
enum slot {
    SLOT_NAME,
    SLOT_CREATED,
    SLOT_UPDATED,
    SLOT_LABELS,
    SLOT_ANNOTATIONS,
    SLOT_HAS_TARGET,
    SLOT_DIGEST,
    SLOT_MEDIA_TYPE,
    SLOT_SIZE,
    SLOT_COUNT
};

typedef struct cutter {
    PyObject *make;     /* borrowed: called with a record's slots to make it */
    PyObject *out;      /* list of finished records */
    PyObject *suspects; /* list of the records Python must check (see is_plain) */
    Py_ssize_t walked;  /* bytes a walk copy of the entries seen would take */
    int failed;         /* the walk visitor stopped the walk on an exception */
    int deferred;       /* records are kept as slot tuples, made after the walk */
    PyObject *slots[SLOT_COUNT]; /* the record being read (owned references; NULL: not seen) */
    int have_record;    /* slots hold a record that will be kept */
    enum section in;
    PyObject *pairs;    /* borrowed: the labels/annotations list being filled */
    /* Label keys, media types, sizes and short label values repeat from
     * image to image: each distinct one is made once per parse and shared
     * (bytes_cache.h), so a List makes and later frees fewer objects. */
    key_cache keys, values;
} cutter;

/* The record class bound by bind_record (RawImage), and where its slots
 * are: the record's fields in enum slot order, then its wire. */
#define BOUND_SLOTS (SLOT_COUNT + 1)
static const char *const slot_names[BOUND_SLOTS] = {"name", "created", "updated", "labels", "annotations",
                                                    "has_target", "digest", "media_type", "size", "wire"};
static PyTypeObject *bound_type;
static Py_ssize_t slot_offset[BOUND_SLOTS];

/* A record of the bound class made straight from the cutter's slots
 * (which it takes over), as RawImage.__init__ would fill it, wire None.
 * Allocating runs no Python code, so this is safe inside the engine's
 * walk; and it costs a fraction of calling the class. */
static PyObject *make_bound(cutter *c)
{
    PyObject *record = bound_type->tp_alloc(bound_type, 0);
    if (!record)
        return NULL;
    for (int i = 0; i < SLOT_COUNT; i++) {
        *slot_at(record, slot_offset[i]) = c->slots[i];
        c->slots[i] = NULL;
    }
    Py_INCREF(Py_None);
    *slot_at(record, slot_offset[SLOT_COUNT]) = Py_None;
    return record;
}

/* Take an object the cutter made out of the cyclic collector's sight.
 *
 * Why: the records of a large bucket are kept (a snapshot, until the next
 * commit) and hold only bytes, tuples of bytes and lists of those, so they
 * can never be part of a cycle; yet the first collection after they are
 * made traverses every one of them, and the next generations' ones again:
 * 11 ms per List of 10,000 images right after a write, more on a busy heap.
 * Untracked, they are freed by reference counting as before. Only objects
 * of collected types are tracked, so anything else is left alone. */
static void untrack(PyObject *obj)
{
    if (PyObject_IS_GC(obj))
        PyObject_GC_UnTrack(obj);
}

/* Append a new object (stealing the reference; NULL: an error already set)
 * to one of the cutter's lists, untracked. */
static int append_untracked(PyObject *list, PyObject *obj)
{
    if (!obj)
        return -1;
    untrack(obj);
    int rc = PyList_Append(list, obj);
    Py_DECREF(obj);
    return rc;
}

static void record_clear(cutter *c)
{
    for (int i = 0; i < SLOT_COUNT; i++)
        Py_CLEAR(c->slots[i]);
    c->have_record = 0;
    c->pairs = NULL;
}

/* codec.is_plain_time for a slot (NULL: absent, which check() accepts). */
static int plain_time(PyObject *slot)
{
    return !slot || go_time_plain((const unsigned char *)PyBytes_AS_STRING(slot), (size_t)PyBytes_GET_SIZE(slot),
                                  NULL, NULL);
}

/* RawImage.is_plain: a record RawImage.check cannot fail (a target, and
 * each time absent or in the plain form). Only the others are handed to
 * Python to check: the Python loop over every record cost 4.5 to 12 ms a
 * cold List of 10,000 images; this test costs nothing measurable. */
static int is_plain(cutter *c)
{
    return c->slots[SLOT_HAS_TARGET] == Py_True && plain_time(c->slots[SLOT_CREATED])
        && plain_time(c->slots[SLOT_UPDATED]);
}

/* Keep the current record, if one is kept, and say whether Python must
 * check it. Made now by the caller's factory, or, while the engine's walk
 * is running (c->deferred), kept as a tuple of its slots to be made after
 * the walk: the factory is Python code, and Python code must not run while
 * the engine holds the transaction locked (a signal handler or another
 * thread woken by it could call the engine on the same transaction). */
static int record_finish(cutter *c)
{
    if (!c->have_record) {
        record_clear(c);
        return 0;
    }
    int plain = is_plain(c);
    for (int i = 0; i < SLOT_COUNT; i++) {
        if (!c->slots[i]) {
            c->slots[i] = i == SLOT_HAS_TARGET ? Py_False : Py_None;
            Py_INCREF(c->slots[i]);
        }
    }
    PyObject *record;
    int deferred = c->deferred;
    if ((PyObject *)bound_type == c->make) {
        record = make_bound(c);
        deferred = 0;
    } else if (deferred) {
        if (!(record = PyTuple_New(SLOT_COUNT)))
            return -1;
        for (int i = 0; i < SLOT_COUNT; i++) {
            PyTuple_SET_ITEM(record, i, c->slots[i]); /* the tuple takes the slot's reference */
            c->slots[i] = NULL;
        }
    } else {
        record = PyObject_Vectorcall(c->make, c->slots, SLOT_COUNT, NULL);
    }
    record_clear(c);
    if (!record)
        return -1;
    if (!plain && c->suspects) {
        /* deferred: the record's index, replaced by the record in make_deferred */
        PyObject *entry = deferred ? PyLong_FromSsize_t(PyList_GET_SIZE(c->out)) : record;
        int rc = entry ? PyList_Append(c->suspects, entry) : -1;
        if (deferred)
            Py_XDECREF(entry);
        if (rc < 0) {
            Py_DECREF(record);
            return -1;
        }
    }
    return append_untracked(c->out, record);
}

/* After a deferred cut: make every record from its slot tuple, in place,
 * and put the records in the suspects list where their indices are. */
static int make_deferred(cutter *c)
{
    Py_ssize_t n = PyList_GET_SIZE(c->out);
    if ((PyObject *)bound_type == c->make)
        return 0; /* made during the walk already */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *slots = PyList_GET_ITEM(c->out, i);
        /* the tuple is the call's arguments as they are: a class called
         * through vectorcall would build the same tuple again */
        PyObject *record = PyObject_Call(c->make, slots, NULL);
        if (!record)
            return -1;
        untrack(record);
        PyList_SET_ITEM(c->out, i, record);
        Py_DECREF(slots);
    }
    Py_ssize_t m = c->suspects ? PyList_GET_SIZE(c->suspects) : 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyList_GET_ITEM(c->suspects, i));
        if (at < 0 || at >= n) {
            PyErr_SetString(PyExc_SystemError, "cut_bucket: a suspect's index is outside the records");
            return -1;
        }
        PyObject *record = PyList_GET_ITEM(c->out, at);
        Py_INCREF(record);
        if (PyList_SetItem(c->suspects, i, record) < 0)
            return -1;
    }
    return 0;
}

static int record_start(cutter *c, const char *name, Py_ssize_t name_len, int keep)
{
    if (record_finish(c) < 0)
        return -1;
    c->in = IN_OTHER;
    if (!keep)
        return 0; /* a plain value where an image belongs: what follows it is dropped */
    if (!(c->slots[SLOT_NAME] = PyBytes_FromStringAndSize(name, name_len)))
        return -1;
    c->have_record = 1;
    return 0;
}

/* A label or annotation key: the long ones repeat as much as the short. */
static PyObject *shared_key(cutter *c, const char *p, uint32_t len)
{
    return cached_bytes(&c->keys, VALUE_CACHE_SLOTS, VALUE_CACHE_MAX_LEN, p, len);
}

static PyObject *shared_value(cutter *c, const char *p, uint32_t len)
{
    return cached_value(&c->values, p, len);
}

/* Replace a slot with new bytes (later duplicates win, as in a dict). */
static int set_bytes(cutter *c, enum slot s, const char *p, Py_ssize_t n)
{
    PyObject *b = PyBytes_FromStringAndSize(p, n);
    if (!b)
        return -1;
    Py_XSETREF(c->slots[s], b);
    return 0;
}

static int key_is(const char *key, uint32_t len, const char *name)
{
    size_t n = strlen(name);
    return len == n && memcmp(key, name, n) == 0;
}

/* A sub-bucket of the record: labels/annotations start a fresh pair list. */
static int open_section(cutter *c, const char *key, uint32_t klen)
{
    enum slot s;
    if (key_is(key, klen, "labels")) {
        c->in = IN_LABELS;
        s = SLOT_LABELS;
    } else if (key_is(key, klen, "annotations")) {
        c->in = IN_ANNOTATIONS;
        s = SLOT_ANNOTATIONS;
    } else {
        if (key_is(key, klen, "target")) {
            c->in = IN_TARGET;
            Py_INCREF(Py_True);
            Py_XSETREF(c->slots[SLOT_HAS_TARGET], Py_True);
        }
        return 0;
    }
    PyObject *list = PyList_New(0);
    if (!list)
        return -1;
    untrack(list);
    Py_XSETREF(c->slots[s], list);
    c->pairs = list;
    return 0;
}

static int add_pair(cutter *c, const char *key, uint32_t klen, const char *value, uint32_t vlen)
{
    PyObject *k = shared_key(c, key, klen);
    PyObject *v = k ? (value ? shared_value(c, value, vlen) : PyBytes_FromStringAndSize(NULL, 0)) : NULL;
    PyObject *pair = v ? PyTuple_Pack(2, k, v) : NULL;
    Py_XDECREF(k);
    Py_XDECREF(v);
    return append_untracked(c->pairs, pair);
}

static int set_shared(cutter *c, enum slot s, const char *p, uint32_t n)
{
    PyObject *b = shared_value(c, p, n);
    if (!b)
        return -1;
    Py_XSETREF(c->slots[s], b);
    return 0;
}

static int target_field(cutter *c, const char *key, uint32_t klen, const char *value, uint32_t vlen)
{
    if (key_is(key, klen, "digest"))
        return set_bytes(c, SLOT_DIGEST, value, vlen);
    if (key_is(key, klen, "mediatype"))
        return set_shared(c, SLOT_MEDIA_TYPE, value, vlen);
    if (key_is(key, klen, "size"))
        return set_shared(c, SLOT_SIZE, value, vlen);
    return 0;
}

/* One walk entry at `depth` relative to the image names (0: a name). */
static int take_entry(cutter *c, int64_t depth, const char *key, uint32_t klen, const char *value, uint32_t vlen)
{
    if (depth == 0)
        return record_start(c, key, klen, value == NULL);
    if (depth == 1) {
        c->in = IN_OTHER;
        c->pairs = NULL;
        if (!c->have_record)
            return 0;
        if (value == NULL)
            return open_section(c, key, klen);
        if (key_is(key, klen, "createdat"))
            return set_bytes(c, SLOT_CREATED, value, vlen);
        if (key_is(key, klen, "updatedat"))
            return set_bytes(c, SLOT_UPDATED, value, vlen);
        return 0;
    }
    if (depth != 2 || !c->have_record)
        return 0;
    if (c->in == IN_LABELS || c->in == IN_ANNOTATIONS)
        return add_pair(c, key, klen, value, vlen);
    if (c->in == IN_TARGET && value != NULL)
        return target_field(c, key, klen, value, vlen);
    return 0;
}

static uint32_t u32_at(const char *p)
{
    uint32_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

static int cut(cutter *c, const char *buf, Py_ssize_t len, long top)
{
    Py_ssize_t off = 0;
    while (off < len) {
        if (len - off < BOLT_WALK_HEADER_SIZE) {
            PyErr_Format(PyExc_ValueError, "walk copy: %zd bytes left at offset %zd, short of an entry header",
                         len - off, off);
            return -1;
        }
        const char *h = buf + off;
        uint32_t depth = u32_at(h), flags = u32_at(h + 4), klen = u32_at(h + 8), vlen = u32_at(h + 12);
        off += BOLT_WALK_HEADER_SIZE;
        int bucket = (flags & BOLT_WALK_FLAG_BUCKET) != 0;
        /* a nested bucket's entry carries no value bytes, whatever its length says */
        Py_ssize_t need = (Py_ssize_t)klen + (bucket ? 0 : (Py_ssize_t)vlen);
        if (need > len - off) {
            PyErr_Format(PyExc_ValueError, "walk copy: an entry at offset %zd runs past the %zd-byte copy",
                         off - BOLT_WALK_HEADER_SIZE, len);
            return -1;
        }
        const char *key = buf + off;
        const char *value = bucket ? NULL : key + klen;
        off += need;
        if (take_entry(c, (int64_t)depth - top, key, klen, value, vlen) < 0)
            return -1;
    }
    return record_finish(c);
}

PyDoc_STRVAR(parse_doc,
"parse(walk, top, name, make, suspects=None) -> list\n"
"\n"
"The image records in a bolt_bucket_walk copy (any buffer), each made by\n"
"make(name, created, updated, labels, annotations, has_target, digest,\n"
"media_type, size). top: the depth of the image names (0 for a walk of an\n"
"images bucket), or -1 for a walk of one record's own bucket, whose name\n"
"(bytes) is then given (else None). suspects: a list to which the records\n"
"that are not plain (RawImage.is_plain) are appended as well, in order.\n"
"The cyclic collector is paused while the records are made, and the\n"
"records, their label lists and pairs are left untracked by it: make must\n"
"not build cycles.");

/* Check parse's and cut_bucket's common arguments into the cutter. */
static int cutter_init(cutter *c, PyObject *make, PyObject *suspects)
{
    memset(c, 0, sizeof *c);
    c->make = make;
    if (!PyCallable_Check(make)) {
        PyErr_SetString(PyExc_TypeError, "parse: make must be callable");
        return -1;
    }
    if (suspects != Py_None && !PyList_Check(suspects)) {
        PyErr_SetString(PyExc_TypeError, "parse: suspects must be a list or None");
        return -1;
    }
    c->suspects = suspects == Py_None ? NULL : suspects;
    return (c->out = PyList_New(0)) ? 0 : -1;
}

static void cutter_free(cutter *c)
{
    record_clear(c);
    key_cache_clear(&c->keys);
    key_cache_clear(&c->values);
    Py_CLEAR(c->out);
}

static PyObject *parse(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer walk;
    long top;
    PyObject *name, *make, *suspects = Py_None;
    if (!PyArg_ParseTuple(args, "y*lOO|O:parse", &walk, &top, &name, &make, &suspects))
        return NULL;
    PyObject *result = NULL;
    cutter c;
    if (cutter_init(&c, make, suspects) < 0)
        goto done;
    if (top < -1 || top > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "parse: top %ld outside -1..65535", top);
        goto done;
    }
    if ((top == -1) != (name != Py_None) || (name != Py_None && !PyBytes_Check(name))) {
        PyErr_SetString(PyExc_TypeError, "parse: a name (bytes) goes with top=-1, and only with it");
        goto done;
    }
    int gc_was = gc_pause();
    int rc = 0;
    if (top == -1)
        rc = record_start(&c, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), 1);
    if (rc == 0)
        rc = cut(&c, walk.buf, walk.len, top);
    gc_resume(gc_was);
    if (rc == 0) {
        result = c.out;
        c.out = NULL;
    }
done:
    cutter_free(&c);
    PyBuffer_Release(&walk);
    return result;
}

/* ------------------------------------------------------------ straight from the engine's walk */

/* bolt_bucket_walk_each, reached through the address the binding gives
 * (bolt.Bucket.walk_native): this module does not link the engine. */
typedef int (*walk_each_fn)(bolt_bucket *b, uint32_t max_depth, bolt_walk_fn fn, void *ctx);

/* The walk visitor: each entry as the copy would hold it, straight from
 * the pages. Nonzero (an exception is set) stops the walk. */
static int visit_entry(void *ctx, uint32_t depth, const uint8_t *key, uint32_t key_len, const uint8_t *value,
                       uint32_t value_len, int bucket)
{
    cutter *c = ctx;
    static const char empty[1] = "";
    /* in the cutter a NULL value means a nested bucket: an empty plain
     * value must not read as one, wherever the engine points it */
    const char *v = bucket ? NULL : value ? (const char *)value : empty;
    uint32_t vlen = bucket ? 0 : value_len;
    c->walked += BOLT_WALK_HEADER_SIZE + (Py_ssize_t)key_len + (Py_ssize_t)vlen;
    if (take_entry(c, depth, (const char *)key, key_len, v, vlen) < 0)
        c->failed = 1;
    return c->failed;
}

PyDoc_STRVAR(cut_bucket_doc,
"cut_bucket(walk_each, bucket, make) -> (status, (records, suspects, walked))\n"
"\n"
"parse(bucket.walk_bytes(2), 0, None, make, suspects) without the copy:\n"
"the records are cut as the engine's walk visits the pages. walk_each and\n"
"bucket are the addresses bolt.Bucket.walk_native gives (of\n"
"bolt_bucket_walk_each and of an open bucket handle). status: the engine's\n"
"(nonzero: the second item is None); suspects as parse's; walked: the\n"
"size in bytes the copy would have had.");

static PyObject *cut_bucket(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *walk_each_o, *bucket_o, *make;
    if (!PyArg_ParseTuple(args, "O!O!O:cut_bucket", &PyLong_Type, &walk_each_o, &PyLong_Type, &bucket_o, &make))
        return NULL;
    walk_each_fn walk_each = (walk_each_fn)(uintptr_t)PyLong_AsVoidPtr(walk_each_o);
    bolt_bucket *bucket = PyLong_AsVoidPtr(bucket_o);
    if (PyErr_Occurred())
        return NULL;
    if (!walk_each || !bucket) {
        PyErr_SetString(PyExc_ValueError, "cut_bucket: a null address");
        return NULL;
    }
    PyObject *suspects = PyList_New(0);
    if (!suspects)
        return NULL;
    PyObject *result = NULL;
    cutter c;
    if (cutter_init(&c, make, suspects) < 0)
        goto done;
    c.deferred = 1;
    int gc_was = gc_pause();
    int status = walk_each(bucket, 2, visit_entry, &c);
    int rc = c.failed ? -1 : 0;
    if (rc == 0 && status == 0)
        rc = record_finish(&c);
    if (rc == 0 && status == 0)
        rc = make_deferred(&c);
    gc_resume(gc_was);
    if (rc < 0)
        goto done;
    if (status)
        result = Py_BuildValue("(iO)", status, Py_None);
    else
        result = Py_BuildValue("(i(OOn))", 0, c.out, suspects, c.walked);
done:
    cutter_free(&c);
    Py_DECREF(suspects);
    return result;
}

PyDoc_STRVAR(bind_record_doc,
"bind_record(cls) -> None\n"
"\n"
"Make the records of a parse or cut whose make is exactly cls (RawImage)\n"
"by filling its slots directly, as its __init__ would, instead of calling\n"
"it. cls must have exactly the slots name, created, updated, labels,\n"
"annotations, has_target, digest, media_type, size and wire.");

static PyObject *bind_record(PyObject *self, PyObject *cls)
{
    (void)self;
    PyObject *names[BOUND_SLOTS] = {NULL};
    Py_ssize_t offsets[BOUND_SLOTS];
    int rc = 0;
    for (int i = 0; i < BOUND_SLOTS && rc == 0; i++)
        rc = (names[i] = PyUnicode_InternFromString(slot_names[i])) ? 0 : -1;
    if (rc == 0)
        rc = slots_bind(cls, names, BOUND_SLOTS, offsets);
    for (int i = 0; i < BOUND_SLOTS; i++)
        Py_XDECREF(names[i]);
    if (rc < 0)
        return NULL;
    /* a slot the cutter does not know would be left unset in every record */
    Py_ssize_t count = 0, pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(((PyTypeObject *)cls)->tp_dict, &pos, &key, &value))
        count += Py_IS_TYPE(value, &PyMemberDescr_Type);
    if (count != BOUND_SLOTS || ((PyTypeObject *)cls)->tp_dictoffset) {
        PyErr_Format(PyExc_TypeError, "bind_record: %s has slots or a __dict__ the cutter does not fill",
                     ((PyTypeObject *)cls)->tp_name);
        return NULL;
    }
    memcpy(slot_offset, offsets, sizeof offsets);
    Py_INCREF(cls);
    Py_XSETREF(bound_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind_record", bind_record, METH_O, bind_record_doc},
    {"parse", parse, METH_VARARGS, parse_doc},
    {"cut_bucket", cut_bucket, METH_VARARGS, cut_bucket_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "boltimages._records",
    "containerd image records cut out of a bucket walk copy (see native/pyext/records.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void)
{
    return PyModule_Create(&module);
}
