/*
 * pyext/wire.c - protobuf wire bytes of a stored image record (module
 * boltimages._wire).
 *
 * Why in C: a Get answers with one containerd.services.images.v1.Image built
 * from the record's stored bytes. Framing it in Python (a list of pieces,
 * a varint per length, a UTF-8 check per string, a join) took about 22 us
 * per record on a warm cache and two to three times that on the cold one a
 * server request meets; it was two thirds of the servicer's part of a Get.
 * Here it is one pass to size the answer and one to fill it.
 *
 * The bytes are the same, byte for byte, as images_service.encode_image
 * gives (tests/server/test_wire_framing.py compares the two on many
 * records): field order, a map entry always carrying both its key and its
 * value, a Timestamp always carrying both seconds and nanos.
 *
 * Protobuf requires string fields to hold UTF-8; a stored record may not
 * (bbolt keys are bytes). Each string is checked here, with the rules of
 * Python's strict decoder: no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "go_time.h"
#include "record_slots.h"

/* Field tags (field number << 3 | wire type 2 or 0) of the messages framed. */
#define TAG_RESPONSE_IMAGE 0x0a    /* GetImageResponse.image = 1 (and List's images = 1) */
#define TAG_IMAGE_NAME 0x0a        /* Image.name = 1 */
#define TAG_IMAGE_LABELS 0x12      /* Image.labels = 2 (map entries) */
#define TAG_IMAGE_TARGET 0x1a      /* Image.target = 3 */
#define TAG_IMAGE_CREATED 0x3a     /* Image.created_at = 7 */
#define TAG_IMAGE_UPDATED 0x42     /* Image.updated_at = 8 */
#define TAG_DESC_MEDIA_TYPE 0x0a   /* Descriptor.media_type = 1 */
#define TAG_DESC_DIGEST 0x12       /* Descriptor.digest = 2 */
#define TAG_DESC_SIZE 0x18         /* Descriptor.size = 3 (varint) */
#define TAG_DESC_ANNOTATIONS 0x2a  /* Descriptor.annotations = 5 (map entries) */
#define TAG_ENTRY_KEY 0x0a         /* map entry key = 1 */
#define TAG_ENTRY_VALUE 0x12       /* map entry value = 2 */
#define TAG_TS_SECONDS 0x08        /* Timestamp.seconds = 1 (varint) */
#define TAG_TS_NANOS 0x10          /* Timestamp.nanos = 2 (varint) */

/* Go's binary.MaxVarintLen64: the longest varint of a 64-bit value. */
#define MAX_VARINT_LEN 10

/* ------------------------------------------------------------ UTF-8 */

/* Whether p[0..n) is UTF-8 as Python's strict decoder accepts it. */
static int utf8_valid(const unsigned char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        /* runs of ASCII eight bytes at a time: most stored strings are all ASCII */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0; /* below: overlong */
            else if (c == 0xED)
                hi = 0x9F; /* above: UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90; /* below: overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above: past U+10FFFF */
        } else {
            return 0; /* a continuation byte first, C0/C1 (overlong), or F5..FF */
        }
        if (n - i <= need)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (Py_ssize_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
        i += need + 1;
    }
    return 1;
}

/* ------------------------------------------------------------ varints */

static size_t uvarint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *put_uvarint(unsigned char *out, uint64_t v)
{
    while (v >= 0x80) {
        *out++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *out++ = (unsigned char)v;
    return out;
}

/* A length-delimited field's size: tag, length varint, body. */
static size_t field_len(size_t body)
{
    return 1 + uvarint_len(body) + body;
}

/* ------------------------------------------------------------ inputs */

/* One string field: the bytes and whether the field is written at all. */
typedef struct text {
    const unsigned char *p;
    Py_ssize_t n;
} text;

/* Why the inputs are checked before anything is written: the answer's
 * size is computed from them first, so a wrong type found half way would
 * leave a half-filled buffer to throw away. */
static int take_text(PyObject *obj, const char *what, int allow_none, text *out, int *utf8_ok)
{
    out->p = NULL;
    out->n = 0;
    if (obj == Py_None && allow_none)
        return 0;
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes%s, not %.100s", what,
                     allow_none ? " or None" : "", Py_TYPE(obj)->tp_name);
        return -1;
    }
    out->p = (const unsigned char *)PyBytes_AS_STRING(obj);
    out->n = PyBytes_GET_SIZE(obj);
    if (utf8_ok && *utf8_ok && !utf8_valid(out->p, out->n))
        *utf8_ok = 0;
    return 0;
}

/* A labels or annotations list: (key, value) pairs of bytes, or None.
 * Adds the encoded size of its map entries to *size. */
static int size_pairs(PyObject *pairs, const char *what, size_t *size, int *utf8_ok)
{
    if (pairs == Py_None)
        return 0;
    if (!PyList_Check(pairs)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list or None, not %.100s", what, Py_TYPE(pairs)->tp_name);
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(pairs);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(pairs, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be a (key, value) tuple", what, i);
            return -1;
        }
        text k, v;
        if (take_text(PyTuple_GET_ITEM(item, 0), "a map key", 0, &k, utf8_ok) < 0
            || take_text(PyTuple_GET_ITEM(item, 1), "a map value", 0, &v, utf8_ok) < 0)
            return -1;
        size_t entry = field_len((size_t)k.n) + field_len((size_t)v.n);
        *size += field_len(entry);
    }
    return 0;
}

static unsigned char *put_bytes_field(unsigned char *out, unsigned char tag, const unsigned char *p, size_t n)
{
    *out++ = tag;
    out = put_uvarint(out, n);
    if (n)
        memcpy(out, p, n);
    return out + n;
}

/* The pairs were checked by size_pairs: only bytes, only 2-tuples. */
static unsigned char *put_pairs(unsigned char *out, unsigned char tag, PyObject *pairs)
{
    if (pairs == Py_None)
        return out;
    Py_ssize_t count = PyList_GET_SIZE(pairs);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(pairs, i);
        PyObject *k = PyTuple_GET_ITEM(item, 0), *v = PyTuple_GET_ITEM(item, 1);
        size_t kn = (size_t)PyBytes_GET_SIZE(k), vn = (size_t)PyBytes_GET_SIZE(v);
        *out++ = tag;
        out = put_uvarint(out, field_len(kn) + field_len(vn));
        out = put_bytes_field(out, TAG_ENTRY_KEY, (const unsigned char *)PyBytes_AS_STRING(k), kn);
        out = put_bytes_field(out, TAG_ENTRY_VALUE, (const unsigned char *)PyBytes_AS_STRING(v), vn);
    }
    return out;
}

/* ------------------------------------------------------------ times */

/* A Timestamp body's two varints, from a stored time: None is Go's zero
 * time (what containerd answers for a record without one). Returns 0, or
 * 1 when the stored form is not the plain version-1 one (the caller then
 * frames the record in Python, which decodes every form Go writes). */
typedef struct stamp {
    uint64_t seconds; /* two's complement, as protobuf's int64 varint */
    uint64_t nanos;
    size_t body;      /* encoded length of the Timestamp message */
} stamp;

static int take_time(PyObject *obj, const char *what, stamp *out)
{
    int64_t sec;
    int32_t nanos;
    if (obj == Py_None) {
        sec = 0;
        nanos = 0;
    } else if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or None, not %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    } else if (!go_time_plain((const unsigned char *)PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj), &sec,
                              &nanos)) {
        return 1;
    }
    /* Unix seconds modulo 2**64: the subtraction may pass INT64_MIN for
     * absurd stored values, and protobuf's varint of an int64 is its
     * two's complement, so unsigned arithmetic gives the same bytes. */
    out->seconds = (uint64_t)sec - (uint64_t)GO_UNIX_TO_INTERNAL;
    out->nanos = (uint64_t)nanos;
    out->body = 1 + uvarint_len(out->seconds) + 1 + uvarint_len(out->nanos);
    return 0;
}

static unsigned char *put_time(unsigned char *out, unsigned char tag, const stamp *t)
{
    *out++ = tag;
    out = put_uvarint(out, t->body);
    *out++ = TAG_TS_SECONDS;
    out = put_uvarint(out, t->seconds);
    *out++ = TAG_TS_NANOS;
    return put_uvarint(out, t->nanos);
}

/* ------------------------------------------------------------ the record */

/* What framing made of a record. */
enum framed { FRAMED, FRAMED_NOT_UTF8, FRAMED_OTHER_TIME };

/* A record's answer, sized: its strings and maps (borrowed from the
 * caller's references), times and the encoded lengths. */
typedef struct layout {
    text name, media, digest;
    PyObject *labels, *annotations;
    stamp created, updated;
    uint64_t size;
    size_t target, label_bytes, image, total;
} layout;

/* Size one Image as field 1 of a Get/List response, from the stored
 * fields. check_utf8: check every string (0: they were checked before).
 * Returns FRAMED with *l filled, FRAMED_NOT_UTF8 or FRAMED_OTHER_TIME (no
 * answer: see frame_record), or -1 with an exception set. */
static int frame_layout(PyObject *name_o, PyObject *labels, PyObject *media_o, PyObject *digest_o, uint64_t size,
                        PyObject *annotations, PyObject *created_o, PyObject *updated_o, int check_utf8, layout *l)
{
    int utf8_ok = 1;
    int *check = check_utf8 ? &utf8_ok : NULL;
    if (take_text(name_o, "name", 0, &l->name, check) < 0
        || take_text(media_o, "media_type", 1, &l->media, check) < 0
        || take_text(digest_o, "digest", 1, &l->digest, check) < 0)
        return -1;
    int rc = take_time(created_o, "created", &l->created);
    if (rc == 0)
        rc = take_time(updated_o, "updated", &l->updated);
    if (rc < 0)
        return -1;

    /* the target: a Descriptor with only the fields that are set */
    size_t target = 0;
    if (l->media.n)
        target += field_len((size_t)l->media.n);
    if (l->digest.n)
        target += field_len((size_t)l->digest.n);
    if (size)
        target += 1 + uvarint_len(size);
    size_t label_bytes = 0;
    if (size_pairs(annotations, "annotations", &target, check) < 0
        || size_pairs(labels, "labels", &label_bytes, check) < 0)
        return -1;
    if (!utf8_ok)
        return FRAMED_NOT_UTF8;
    if (rc == 1)
        return FRAMED_OTHER_TIME;

    l->labels = labels;
    l->annotations = annotations;
    l->size = size;
    l->target = target;
    l->label_bytes = label_bytes;
    l->image = field_len((size_t)l->name.n) + label_bytes + field_len(target) + field_len(l->created.body)
        + field_len(l->updated.body);
    l->total = field_len(l->image);
    if (l->total > (size_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "image record too large to frame");
        return -1;
    }
    return FRAMED;
}

/* Write a sized answer at w (l->total bytes); returns the end. */
static unsigned char *frame_write(const layout *l, unsigned char *w)
{
    *w++ = TAG_RESPONSE_IMAGE;
    w = put_uvarint(w, l->image);
    w = put_bytes_field(w, TAG_IMAGE_NAME, l->name.p, (size_t)l->name.n);
    w = put_pairs(w, TAG_IMAGE_LABELS, l->labels);
    *w++ = TAG_IMAGE_TARGET;
    w = put_uvarint(w, l->target);
    if (l->media.n)
        w = put_bytes_field(w, TAG_DESC_MEDIA_TYPE, l->media.p, (size_t)l->media.n);
    if (l->digest.n)
        w = put_bytes_field(w, TAG_DESC_DIGEST, l->digest.p, (size_t)l->digest.n);
    if (l->size) {
        *w++ = TAG_DESC_SIZE;
        w = put_uvarint(w, l->size);
    }
    w = put_pairs(w, TAG_DESC_ANNOTATIONS, l->annotations);
    w = put_time(w, TAG_IMAGE_CREATED, &l->created);
    return put_time(w, TAG_IMAGE_UPDATED, &l->updated);
}

/* ------------------------------------------------------------ records and lists */

/* A stored size as containerd reads it: Go's binary.Varint with the error
 * ignored (a malformed or overlong value reads as 0), as two's complement;
 * absent (None) is 0 too. Mirrors RawImage.size_value. */
static int stored_size(PyObject *obj, uint64_t *out)
{
    *out = 0;
    if (obj == Py_None)
        return 0;
    if (!PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "size must be bytes or None, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(obj);
    Py_ssize_t n = PyBytes_GET_SIZE(obj);
    uint64_t zigzag = 0;
    unsigned shift = 0;
    for (Py_ssize_t i = 0; i < n && i < MAX_VARINT_LEN; i++) {
        if (p[i] < 0x80) {
            if (i == MAX_VARINT_LEN - 1 && p[i] > 1)
                return 0; /* overflows 64 bits */
            zigzag |= (uint64_t)p[i] << shift;
            uint64_t magnitude = zigzag >> 1;
            *out = zigzag & 1 ? ~magnitude : magnitude;
            return 0;
        }
        zigzag |= (uint64_t)(p[i] & 0x7F) << shift;
        shift += 7;
    }
    return 0; /* truncated, or too long */
}

/* Attribute names of RawImage read by frame_list, interned once. */
enum attr { A_WIRE, A_NAME, A_LABELS, A_MEDIA_TYPE, A_DIGEST, A_SIZE, A_ANNOTATIONS, A_CREATED, A_UPDATED, A_COUNT };
static const char *const attr_names[A_COUNT] = {"wire", "name", "labels", "media_type", "digest", "size",
                                                "annotations", "created", "updated"};
static PyObject *attr[A_COUNT];

/* Where each of those attributes lives in a record of the bound class
 * (RawImage, a class with __slots__; see bind_record), and the class. */
static PyTypeObject *record_type;
static Py_ssize_t slot_offset[A_COUNT];

/* A record's attribute: read straight from its slot for the bound class
 * (set slots only), else through getattr. Why: the nine getattr calls per
 * record (type lookup, descriptor call) were a third of framing a List of
 * 10,000 images; a slot read is a load. A new reference, or NULL with an
 * exception set. */
static PyObject *record_attr(PyObject *raw, int i)
{
    if (Py_TYPE(raw) == record_type) {
        PyObject *v = *slot_at(raw, slot_offset[i]);
        if (v) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(raw, attr[i]);
}

/* Keep a record's framed answer in its wire attribute. */
static int record_keep_wire(PyObject *raw, PyObject *wire)
{
    if (Py_TYPE(raw) == record_type) {
        Py_INCREF(wire);
        Py_XSETREF(*slot_at(raw, slot_offset[A_WIRE]), wire);
        return 0;
    }
    return PyObject_SetAttr(raw, attr[A_WIRE], wire);
}

PyDoc_STRVAR(bind_record_doc,
"bind_record(cls) -> None\n"
"\n"
"Read the record fields straight from the slots of instances of exactly\n"
"cls (RawImage), whose __slots__ must include every field framed and wire.\n"
"Records of any other type are read through getattr, as before.");

static PyObject *bind_record(PyObject *self, PyObject *cls)
{
    (void)self;
    Py_ssize_t offsets[A_COUNT];
    if (slots_bind(cls, attr, A_COUNT, offsets) < 0)
        return NULL;
    memcpy(slot_offset, offsets, sizeof offsets);
    Py_INCREF(cls);
    Py_XSETREF(record_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

/* A record's fields, new references (NULL: not read, or an exception). */
typedef struct fields {
    PyObject *v[A_COUNT];
} fields;

static int fields_get(PyObject *raw, fields *f)
{
    memset(f, 0, sizeof *f);
    for (int i = 0; i < A_COUNT; i++)
        if (!(f->v[i] = record_attr(raw, i)))
            return -1;
    return 0;
}

static void fields_clear(fields *f)
{
    for (int i = 0; i < A_COUNT; i++)
        Py_CLEAR(f->v[i]);
}

/* A kept wire: FRAMED (bytes to use), FRAMED_NOT_UTF8 (empty: the record
 * is not UTF-8), or -1 for anything but bytes. */
static int kept_wire(PyObject *wire)
{
    if (!PyBytes_Check(wire)) {
        PyErr_SetString(PyExc_TypeError, "a record's wire must be bytes or None");
        return -1;
    }
    return PyBytes_GET_SIZE(wire) ? FRAMED : FRAMED_NOT_UTF8;
}

static int fields_layout(const fields *f, int check_utf8, layout *l)
{
    uint64_t size;
    if (stored_size(f->v[A_SIZE], &size) < 0)
        return -1;
    return frame_layout(f->v[A_NAME], f->v[A_LABELS], f->v[A_MEDIA_TYPE], f->v[A_DIGEST], size, f->v[A_ANNOTATIONS],
                        f->v[A_CREATED], f->v[A_UPDATED], check_utf8, l);
}

/* A record's answer: its kept wire, or one framed now and kept. Returns
 * FRAMED with a new reference in *out, FRAMED_NOT_UTF8 / FRAMED_OTHER_TIME,
 * or -1. */
static int record_wire(PyObject *raw, PyObject **out)
{
    fields f;
    layout l;
    int rc = fields_get(raw, &f);
    if (rc < 0)
        goto done;
    if (f.v[A_WIRE] != Py_None) {
        if ((rc = kept_wire(f.v[A_WIRE])) == FRAMED) {
            *out = f.v[A_WIRE];
            f.v[A_WIRE] = NULL;
        }
        goto done;
    }
    if ((rc = fields_layout(&f, 1, &l)) != FRAMED)
        goto done;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)l.total);
    if (!bytes) {
        rc = -1;
        goto done;
    }
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(bytes);
    if ((size_t)(frame_write(&l, start) - start) != l.total) {
        /* cannot happen: sizing and writing walk the same fields */
        Py_DECREF(bytes);
        PyErr_SetString(PyExc_SystemError, "frame_record: sized and written lengths differ");
        rc = -1;
        goto done;
    }
    if (record_keep_wire(raw, bytes) < 0) {
        Py_DECREF(bytes);
        rc = -1;
        goto done;
    }
    *out = bytes;
done:
    fields_clear(&f);
    return rc;
}

PyDoc_STRVAR(frame_record_doc,
"frame_record(record) -> bytes, None or NotImplemented\n"
"\n"
"One stored record (a RawImage) as field 1 of a Get/List response: its\n"
"kept wire, or one framed now and kept in the record. None when a string\n"
"of it is not valid UTF-8, NotImplemented when a time is not in the\n"
"15-byte version-1 form (frame it in Python then).");

static PyObject *frame_record(PyObject *self, PyObject *record)
{
    (void)self;
    PyObject *wire = NULL;
    switch (record_wire(record, &wire)) {
    case FRAMED:
        return wire;
    case FRAMED_NOT_UTF8:
        Py_RETURN_NONE;
    case FRAMED_OTHER_TIME:
        Py_RETURN_NOTIMPLEMENTED;
    default:
        return NULL;
    }
}

PyDoc_STRVAR(frame_list_doc,
"frame_list(records) -> (bytes, sizes) or None\n"
"\n"
"A whole ListImagesResponse: every record's kept wire, or its answer\n"
"framed now, in one buffer (nothing is kept in the records), and the\n"
"length of each record's part of it, in order, as native unsigned 64-bit\n"
"integers (array('Q') reads them: where each record lies, so that a\n"
"later answer can be spliced from this one). None when a record cannot be\n"
"framed here (not UTF-8, or a time in another form): the caller then takes\n"
"its per-record path, which handles both.");

/* Why one buffer: framing each record into its own bytes object, keeping
 * it in the record and joining them cost 5.3 ms of a cold List of 10,000
 * images; sizing every record first and writing each once into the answer
 * costs 2.1 ms, and the records no longer hold a second copy of the answer
 * (2.7 MB for those 10,000) while their snapshot is kept. A Get frames its
 * one record when asked (frame_record), and keeps that. */
static PyObject *frame_list_impl(PyObject *records, PyObject **sizes_out)
{
    if (!PyList_Check(records)) {
        PyErr_Format(PyExc_TypeError, "frame_list() takes a list, not %.100s", Py_TYPE(records)->tp_name);
        return NULL;
    }
    /* Reading an attribute may run Python code (a property, for anything
     * but a RawImage) that changes the list, or a record: walk a copy of
     * the list, and check in the second pass that each record's answer has
     * the size the first found. */
    PyObject *items = PyList_AsTuple(records);
    if (!items)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    size_t *sizes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *sizes);
    if (!sizes) {
        Py_DECREF(items);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    fields f;
    memset(&f, 0, sizeof f);
    layout l;
    size_t total = 0;
    int all_bound = 1; /* every record read from its slots: no Python code ran between the passes */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyTuple_GET_ITEM(items, i);
        all_bound &= Py_TYPE(raw) == record_type;
        int rc = fields_get(raw, &f);
        if (rc == 0)
            rc = f.v[A_WIRE] != Py_None ? kept_wire(f.v[A_WIRE]) : fields_layout(&f, 1, &l);
        if (rc < 0)
            goto done;
        if (rc != FRAMED) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        sizes[i] = f.v[A_WIRE] != Py_None ? (size_t)PyBytes_GET_SIZE(f.v[A_WIRE]) : l.total;
        fields_clear(&f);
        if (sizes[i] > (size_t)PY_SSIZE_T_MAX - total) {
            PyErr_SetString(PyExc_OverflowError, "List answer too large");
            goto done;
        }
        total += sizes[i];
    }
    if (!(result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total)))
        goto done;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = fields_get(PyTuple_GET_ITEM(items, i), &f);
        size_t got = 0;
        if (rc == 0 && f.v[A_WIRE] != Py_None) {
            rc = kept_wire(f.v[A_WIRE]);
            got = rc == FRAMED ? (size_t)PyBytes_GET_SIZE(f.v[A_WIRE]) : 0;
        } else if (rc == 0) {
            rc = fields_layout(&f, !all_bound, &l);
            got = rc == FRAMED ? l.total : 0;
        }
        if (rc >= 0 && (rc != FRAMED || got != sizes[i]))
            PyErr_SetString(PyExc_RuntimeError, "frame_list: a record changed while the List was framed");
        if (rc != FRAMED || got != sizes[i]) {
            Py_CLEAR(result);
            goto done;
        }
        if (f.v[A_WIRE] != Py_None) {
            memcpy(w, PyBytes_AS_STRING(f.v[A_WIRE]), got);
            w += got;
        } else {
            unsigned char *end = frame_write(&l, w);
            if ((size_t)(end - w) != got) {
                /* cannot happen: sizing and writing walk the same fields */
                PyErr_SetString(PyExc_SystemError, "frame_list: sized and written lengths differ");
                Py_CLEAR(result);
                goto done;
            }
            w = end;
        }
        fields_clear(&f);
    }
    if (result && result != Py_None) {
        /* the sizes the first pass found, which the second checked */
        if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(uint64_t)) {
            PyErr_NoMemory();
            Py_CLEAR(result);
            goto done;
        }
        if (!(*sizes_out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(uint64_t)))) {
            Py_CLEAR(result);
            goto done;
        }
        uint64_t *out = (uint64_t *)PyBytes_AS_STRING(*sizes_out);
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = sizes[i];
    }
done:
    fields_clear(&f);
    PyMem_Free(sizes);
    Py_DECREF(items);
    return result;
}

static PyObject *frame_list(PyObject *self, PyObject *records)
{
    (void)self;
    PyObject *sizes = NULL;
    PyObject *answer = frame_list_impl(records, &sizes);
    if (!answer || answer == Py_None)
        return answer;
    PyObject *pair = PyTuple_Pack(2, answer, sizes);
    Py_DECREF(answer);
    Py_DECREF(sizes);
    return pair;
}

PyDoc_STRVAR(utf8_doc, "utf8(data) -> bool: whether bytes are valid UTF-8 (Python's strict rules).");

static PyObject *utf8(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "utf8() takes bytes, not %.100s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return PyBool_FromLong(utf8_valid((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg)));
}

static PyMethodDef methods[] = {
    {"bind_record", bind_record, METH_O, bind_record_doc},
    {"frame_record", frame_record, METH_O, frame_record_doc},
    {"frame_list", frame_list, METH_O, frame_list_doc},
    {"utf8", utf8, METH_O, utf8_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "boltimages._wire",
    "Protobuf wire bytes of stored image records (see native/pyext/wire.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wire(void)
{
    for (int i = 0; i < A_COUNT; i++)
        if (!attr[i] && !(attr[i] = PyUnicode_InternFromString(attr_names[i])))
            return NULL;
    return PyModule_Create(&module);
}
