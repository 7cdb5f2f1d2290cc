/* err.c - the last error message of each thread (see bolt_errmsg). */
#include <stdarg.h>
#include <stdio.h>

#include "bolt.h"
#include "err.h"

static _Thread_local char errbuf[512];

int set_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return code;
}

void clear_err(void) { errbuf[0] = 0; }

const char *bolt_errmsg(void) { return errbuf; }

const char *bolt_status_name(int status)
{
    switch (status) {
    case BOLT_OK: return "ok";
    case BOLT_ERR_IO: return "io";
    case BOLT_ERR_LOCKED: return "locked";
    case BOLT_ERR_CORRUPT: return "corrupt";
    case BOLT_ERR_INVALID: return "invalid";
    case BOLT_ERR_VERSION: return "version mismatch";
    case BOLT_ERR_NOMEM: return "out of memory";
    case BOLT_ERR_TX_CLOSED: return "tx closed";
    case BOLT_ERR_TX_NOT_WRITABLE: return "tx not writable";
    case BOLT_ERR_DB_READ_ONLY: return "database is read-only";
    case BOLT_ERR_BUCKET_NOT_FOUND: return "bucket not found";
    case BOLT_ERR_BUCKET_EXISTS: return "bucket already exists";
    case BOLT_ERR_BUCKET_NAME_REQUIRED: return "bucket name required";
    case BOLT_ERR_KEY_REQUIRED: return "key required";
    case BOLT_ERR_KEY_TOO_LARGE: return "key too large";
    case BOLT_ERR_VALUE_TOO_LARGE: return "value too large";
    case BOLT_ERR_INCOMPATIBLE: return "incompatible value";
    case BOLT_ERR_DB_CLOSED: return "database not open";
    case BOLT_ERR_TX_BUSY: return "write transaction already held by this thread";
    case BOLT_ERR_TX_FAILED: return "transaction failed";
    case BOLT_ERR_INVALID_ARG: return "invalid argument";
    case BOLT_ERR_SEQUENCE_OVERFLOW: return "sequence overflow";
    default: return "unknown error";
    }
}
