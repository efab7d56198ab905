/* relay-https client: the gate of new connections. At most CONNECTING_MAX
 * requests of a process are between their start and an established
 * connection (TCP and TLS done, or a pooled one taken); the others wait their
 * turn in order, out of the multi handle.
 *
 * Why: Apache's event MPM runs a TLS handshake on a worker thread that blocks
 * on the client's next handshake message. One forward holding thousands of
 * tunnels that all needed a new connection at once (their first byte after
 * the idle push ended, resumes) started thousands of handshakes; it could not
 * answer them quickly, every worker of the server waited on one of them, the
 * server stopped accepting (listen queue full) and woke no parked pull or
 * push: most tunnels stopped echoing (docs/BENCHMARKS.md, "Thousands of
 * tunnels in one forward").
 *
 * The bound itself adapts, as TCP's window does: a connection that timed out
 * before it was up (the server's listen queue full, its workers all in
 * handshakes) halves it, once per round of connects, down to CONNECTING_MIN;
 * each CONNECTING_MAX connections up raise it by one again. Many processes
 * waking their tunnels at once otherwise kept thousands of handshakes in
 * flight that the server could not finish within the connect timeout: each
 * one timed out, was started again and cost the server a handshake for
 * nothing (docs/BENCHMARKS.md, "The wake of 20,000 watched tunnels").
 *
 * A request's clocks that judge the server (rhc_gate_connected) start when its
 * connection is up: until then curl's connect timeout judges it. */
#ifndef RHC_GATE_H
#define RHC_GATE_H

#include <stdint.h>

#include <curl/curl.h>

#include "rhc_tunnel.h"

#define CONNECTING_MAX 48       /* requests of a process connecting at once ... */
#define CONNECTING_MIN 4        /* ... at least, once connects time out */

struct rhc_req;

int rhc_gate_go(struct rhc_req *r);         /* into the multi, or in line: -1 on error */
void rhc_gate_connected(struct rhc_req *r); /* its connection is up */
void rhc_gate_ended(struct rhc_req *r, CURLcode rc); /* done: a connect timeout cuts */
void rhc_gate_forget(struct rhc_req *r);    /* out of line and count: freed or done */
void rhc_gate_release(rhc_ctx *c);          /* those whose turn came go into the multi */
void rhc_gate_set(struct rhc_req *r);       /* the callback that says "connected" */
size_t rhc_gate_cap(const rhc_ctx *c);      /* requests that may connect at once now */

#endif
