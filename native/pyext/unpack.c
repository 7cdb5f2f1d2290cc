/*
 * pyext/unpack.c - cursor scans cut into Python objects (module
 * boltimages._unpack).
 *
 * Why a CPython extension next to the cffi binding: cffi hands C buffers to
 * Python, but cannot create Python objects from C. scan() calls the
 * engine's bolt_cursor_next_each, which hands each item straight from the
 * leaf page, and makes the bytes objects there, so an item is copied once
 * and a batch of up to a thousand items costs one crossing; Bucket.items()
 * iterates with it. This module does not link against the engine (a
 * separate shared object); boltimages.bolt binds the function's address
 * once at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../bolt.h"

/* ---- cursor scans straight from the engine ---- */

typedef int (*next_each_fn)(bolt_cursor *c, int include_current, size_t max, bolt_item_fn fn, void *ctx,
                            size_t *n, int *end);

/* Bound once by bind_engine(); NULL until then. */
static next_each_fn engine_next_each;
static Py_ssize_t engine_cursor_size;

PyDoc_STRVAR(bind_engine_doc,
"bind_engine(next_each_address, cursor_size) -> None\n\n"
"Private to boltimages.bolt: the address of bolt_cursor_next_each in the\n"
"engine module and bolt_cursor_size(), for scan().");

static PyObject *unpack_bind_engine(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long next_each;
    Py_ssize_t cursor_size;
    if (!PyArg_ParseTuple(args, "Kn:bind_engine", &next_each, &cursor_size))
        return NULL;
    if (!next_each || cursor_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "bind_engine: null function or empty cursor");
        return NULL;
    }
    engine_next_each = (next_each_fn)(uintptr_t)next_each;
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

static PyMethodDef methods[] = {
    {"bind_engine", unpack_bind_engine, METH_VARARGS, bind_engine_doc},
    {"scan", unpack_scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "boltimages._unpack",
    "Cursor scans cut into Python objects (see native/pyext/unpack.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__unpack(void)
{
    return PyModule_Create(&module);
}
