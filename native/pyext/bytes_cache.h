/* pyext/bytes_cache.h - sharing the short bytes objects that repeat within
 * one decode (shared by the extensions in native/pyext/).
 *
 * Keys that repeat from record to record (createdat, labels, target, ... in
 * every image) are made once per decode and shared: a small direct-mapped
 * cache of recent short keys. Sharing also keeps their computed hash, so
 * dict inserts skip rehashing them. Short values that repeat (media types)
 * get a cache of their own, so unique values (digests, label values) do not
 * push the keys out. Bytes are immutable, so sharing is invisible. */
#ifndef BOLTIMAGES_PYEXT_BYTES_CACHE_H
#define BOLTIMAGES_PYEXT_BYTES_CACHE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KEY_CACHE_SLOTS 64
#define KEY_CACHE_MAX_LEN 24
#define VALUE_CACHE_SLOTS 256
#define VALUE_CACHE_MAX_LEN 64

typedef struct key_cache {
    PyObject *slot[KEY_CACHE_SLOTS > VALUE_CACHE_SLOTS ? KEY_CACHE_SLOTS : VALUE_CACHE_SLOTS];
} key_cache;

/* Slot hash from the length and the first and last (up to) 8 bytes: cheap,
 * and enough to tell apart the few distinct short strings of one decode.
 * Keys that differ only in their last byte (label-0, label-1, ...) differ
 * only in the top byte of `b`; a product carries differences upwards only,
 * so the slot is taken from the top bits of the mixed product. */
static inline uint32_t short_hash(const char *p, uint32_t len)
{
    uint64_t a = 0, b = 0;
    if (len >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, p + len - 8, 8);
    } else {
        memcpy(&a, p, len);
    }
    uint64_t x = a ^ ((b << 31) | (b >> 33)) ^ ((uint64_t)len << 56);
    return (uint32_t)((x * 0x9E3779B97F4A7C15ull) >> 32);
}

static inline PyObject *cached_bytes(key_cache *kc, size_t slots, uint32_t max_len, const char *p, uint32_t len)
{
    if (len <= 1 || len > max_len)
        return PyBytes_FromStringAndSize(p, len); /* CPython shares 0- and 1-byte bytes itself */
    uint32_t h = short_hash(p, len);
    PyObject **at = &kc->slot[(uint64_t)h * slots >> 32];
    if (*at && PyBytes_GET_SIZE(*at) == (Py_ssize_t)len && memcmp(PyBytes_AS_STRING(*at), p, len) == 0) {
        Py_INCREF(*at);
        return *at;
    }
    PyObject *obj = PyBytes_FromStringAndSize(p, len);
    if (obj) {
        Py_XSETREF(*at, obj);
        Py_INCREF(obj);
    }
    return obj;
}

static inline PyObject *cached_key(key_cache *kc, const char *p, uint32_t len)
{
    return cached_bytes(kc, KEY_CACHE_SLOTS, KEY_CACHE_MAX_LEN, p, len);
}

static inline PyObject *cached_value(key_cache *vc, const char *p, uint32_t len)
{
    return cached_bytes(vc, VALUE_CACHE_SLOTS, VALUE_CACHE_MAX_LEN, p, len);
}

static inline void key_cache_clear(key_cache *kc)
{
    for (size_t i = 0; i < sizeof kc->slot / sizeof kc->slot[0]; i++)
        Py_CLEAR(kc->slot[i]);
}

#endif
