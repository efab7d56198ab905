/* A duplex's connections keep the memory they free while it runs (MaxMemFree
 * lifted to RH_KEEPFREE_BYTES), and give it back when it ends. */
#ifndef MOD_RH_KEEPFREE_H
#define MOD_RH_KEEPFREE_H

#include <apr_allocator.h>
#include <httpd.h>

/* What a duplex's connections may keep freed (bytes): a stream window's worth
 * (mod_http2 2.0 grows a stream's receive window to 2 MiB at most) of the
 * blocks mod_http2 and mod_ssl take and free for every piece of a body. */
#define RH_KEEPFREE_BYTES (2 * 1024 * 1024)

/* Lifts MaxMemFree for r's connection (this thread's) and, on HTTP/2, for the
 * main connection (done by that connection's own thread, on its next read),
 * until r's pool is cleared. Returns the bytes the request's connection may
 * now keep freed (0: no limit, as without MaxMemFree). */
apr_size_t rh_keepfree_begin(request_rec *r);

/* 1 while the allocator holds free blocks (read from APR's struct; see the .c). */
int rh_keepfree_has_free(apr_allocator_t *a);

/* Gives every free block of a (at most max) back to the system, then leaves
 * its limit at MaxMemFree: the number given back. Only on the thread that
 * runs a's connection. */
int rh_keepfree_drain(apr_allocator_t *a, int max);

void rh_keepfree_register_hooks(void);

#endif
