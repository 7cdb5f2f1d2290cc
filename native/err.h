/* err.h - thread-local error messages. */
#ifndef BOLTIMAGES_ERR_H
#define BOLTIMAGES_ERR_H

/* Record a message for the calling thread and return `code` so callers can
 * write `return set_err(BOLT_ERR_CORRUPT, "page %llu: ...", id);`. */
int set_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void clear_err(void);

#endif
