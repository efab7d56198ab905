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
 * tunnels in one forward"). */
#ifndef RHC_GATE_H
#define RHC_GATE_H

#include <stdint.h>

#include "rhc_tunnel.h"

#define CONNECTING_MAX 48       /* requests of a process connecting at once */

struct rhc_req;

int rhc_gate_go(struct rhc_req *r);         /* into the multi, or in line: -1 on error */
void rhc_gate_connected(struct rhc_req *r); /* its connection is up (or it ended) */
void rhc_gate_forget(struct rhc_req *r);    /* out of line and count: freed or done */
void rhc_gate_release(rhc_ctx *c);          /* those whose turn came go into the multi */
void rhc_gate_set(struct rhc_req *r);       /* the callback that says "connected" */

#endif
