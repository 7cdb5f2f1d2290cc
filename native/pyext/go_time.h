/* pyext/go_time.h - containerd's stored times in their plain form (shared
 * by the extensions in native/pyext/).
 *
 * containerd stores createdat/updatedat with Go's time.MarshalBinary,
 * version 1: a version byte, big-endian int64 seconds since year 1, int32
 * nanoseconds, int16 zone offset in minutes. That 15-byte form with its
 * nanoseconds in range is what store/codec.py calls plain (is_plain_time):
 * the C paths read only it and leave every other form to Python. */
#ifndef BOLTIMAGES_PYEXT_GO_TIME_H
#define BOLTIMAGES_PYEXT_GO_TIME_H

#include <stddef.h>
#include <stdint.h>

#define GO_TIME_V1 1
#define GO_TIME_V1_LEN 15
#define GO_UNIX_TO_INTERNAL 62135596800LL
#define NANOS_PER_SECOND 1000000000L

/* Whether p[0..n) is a plain stored time; if so, its seconds since year 1
 * and nanoseconds in *sec and *nanos (either may be NULL). */
static inline int go_time_plain(const unsigned char *p, size_t n, int64_t *sec, int32_t *nanos)
{
    if (n != GO_TIME_V1_LEN || p[0] != GO_TIME_V1)
        return 0;
    uint64_t s = 0;
    for (int i = 1; i <= 8; i++)
        s = s << 8 | p[i];
    int32_t ns = (int32_t)((uint32_t)p[9] << 24 | (uint32_t)p[10] << 16 | (uint32_t)p[11] << 8 | p[12]);
    if (ns < 0 || ns >= NANOS_PER_SECOND)
        return 0;
    if (sec)
        *sec = (int64_t)s;
    if (nanos)
        *nanos = ns;
    return 1;
}

#endif
