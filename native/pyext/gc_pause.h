/* pyext/gc_pause.h - pausing Python's cyclic collector while one large,
 * acyclic result is built (shared by the extensions in native/pyext/).
 *
 * Why: building many containers (lists, tuples, dicts) triggers the
 * collector every few hundred allocations, and each run scans every
 * container made so far, so building one big result costs work that grows
 * with its square. Nothing built here can form a cycle, so collection is
 * paused for the build and resumed (if it was on) right after. */
#ifndef BOLTIMAGES_PYEXT_GC_PAUSE_H
#define BOLTIMAGES_PYEXT_GC_PAUSE_H

#include <Python.h>

/* Returns whether collection was enabled, for gc_resume. */
static inline int gc_pause(void)
{
#if PY_VERSION_HEX >= 0x030A0000
    return PyGC_Disable();
#else
    return 0;
#endif
}

static inline void gc_resume(int was_enabled)
{
#if PY_VERSION_HEX >= 0x030A0000
    if (was_enabled)
        PyGC_Enable();
#else
    (void)was_enabled;
#endif
}

#endif
