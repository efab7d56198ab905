/* Frame codec shared by the relay core and the client (see docs/PROTOCOL.md).
 * httpd-independent: plain C99. */
#ifndef RH_FRAME_H
#define RH_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "rh_proto.h"

#define RH_FRAME_HDR      4
#define RH_FRAME_MAX      65536u   /* largest payload a receiver accepts */

#define RH_FRAME_DATA     'D'
#define RH_FRAME_HEARTBEAT 'H'
#define RH_FRAME_FIN      'F'
#define RH_FRAME_RESET    'R'
#define RH_FRAME_ACK      'A'
#define RH_FRAME_END      'E'
#define RH_FRAME_CHECK    'C'
#define RH_FRAME_CHECK_LEN 12      /* C payload: u64 offset, u32 CRC32C, big endian */

/* Writes a frame header for a payload of len bytes into out[4]. */
void rh_frame_hdr(unsigned char out[RH_FRAME_HDR], int type, size_t len);

/* Incremental parser: feed it bytes in any slicing, it reports frame events.
 * Data payloads are handed out as they arrive (a D frame may come in pieces). */
typedef struct rh_frame_parser {
    unsigned char hdr[RH_FRAME_HDR];
    unsigned hdr_have;        /* header bytes collected */
    int type;                 /* current frame type, 0 = reading header */
    size_t remain;            /* payload bytes still to come */
    unsigned char small[256]; /* collects short payloads of A and R frames */
    size_t small_len;
    const char *error;        /* set on a protocol error; sticky */
} rh_frame_parser;

typedef enum {
    RH_FEV_NONE = 0,   /* need more input */
    RH_FEV_DATA,       /* data bytes: ev->data/ev->len (part of a D frame) */
    RH_FEV_HEARTBEAT,
    RH_FEV_FIN,
    RH_FEV_RESET,      /* ev->data/ev->len: reason (truncated to its first 256 bytes) */
    RH_FEV_ACK,        /* ev->offset */
    RH_FEV_END,
    RH_FEV_CHECK,      /* ev->offset, ev->crc: the direction's bytes [0, offset) */
    RH_FEV_ERROR       /* parser->error says why */
} rh_frame_event_type;

typedef struct rh_frame_event {
    rh_frame_event_type type;
    const unsigned char *data;
    size_t len;
    uint64_t offset;
    uint32_t crc;
} rh_frame_event;

void rh_frame_parser_init(rh_frame_parser *p);

/* Consumes bytes from buf (at most len) until one event is complete or input runs
 * out. Returns the number of bytes consumed; ev->type says what happened.
 * Call again with the rest of the buffer until it returns 0 with RH_FEV_NONE.
 * allowed: string of frame types accepted in this direction (e.g. "DHFRA"). */
size_t rh_frame_parse(rh_frame_parser *p, const unsigned char *buf, size_t len,
                      const char *allowed, rh_frame_event *ev);

/* Helpers for 64-bit big-endian offsets in A frames. */
void rh_put_u64(unsigned char out[8], uint64_t v);
uint64_t rh_get_u64(const unsigned char in[8]);

/* Writes a whole C frame (header and payload) into out; returns its length. */
size_t rh_frame_check(unsigned char out[RH_FRAME_HDR + RH_FRAME_CHECK_LEN], uint64_t offset,
                      uint32_t crc);

#endif
