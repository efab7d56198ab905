/* Frame codec: 1 byte type, 24-bit big-endian length, raw payload. */
#include <string.h>
#include "rh_frame.h"

void rh_frame_hdr(unsigned char out[RH_FRAME_HDR], int type, size_t len)
{
    out[0] = (unsigned char)type;
    out[1] = (unsigned char)((len >> 16) & 0xff);
    out[2] = (unsigned char)((len >> 8) & 0xff);
    out[3] = (unsigned char)(len & 0xff);
}

void rh_put_u64(unsigned char out[8], uint64_t v)
{
    for (int i = 7; i >= 0; --i) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t rh_get_u64(const unsigned char in[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v = (v << 8) | in[i];
    return v;
}

size_t rh_frame_check(unsigned char out[RH_FRAME_HDR + RH_FRAME_CHECK_LEN], uint64_t offset,
                      uint32_t crc)
{
    unsigned char *p = out + RH_FRAME_HDR;

    rh_frame_hdr(out, RH_FRAME_CHECK, RH_FRAME_CHECK_LEN);
    rh_put_u64(p, offset);
    p[8] = (unsigned char)(crc >> 24);
    p[9] = (unsigned char)(crc >> 16);
    p[10] = (unsigned char)(crc >> 8);
    p[11] = (unsigned char)crc;
    return RH_FRAME_HDR + RH_FRAME_CHECK_LEN;
}

void rh_frame_parser_init(rh_frame_parser *p)
{
    memset(p, 0, sizeof(*p));
}

static size_t fail(rh_frame_parser *p, rh_frame_event *ev, const char *why,
                   size_t consumed)
{
    p->error = why;
    ev->type = RH_FEV_ERROR;
    return consumed;
}

/* A frame whose payload we collect whole (A, R) or skip (H) ends here. */
static void finish_small(rh_frame_parser *p, rh_frame_event *ev)
{
    switch (p->type) {
    case RH_FRAME_ACK:
        ev->type = RH_FEV_ACK;
        ev->offset = rh_get_u64(p->small);
        break;
    case RH_FRAME_CHECK:
        ev->type = RH_FEV_CHECK;
        ev->offset = rh_get_u64(p->small);
        ev->crc = (uint32_t)p->small[8] << 24 | (uint32_t)p->small[9] << 16 |
                  (uint32_t)p->small[10] << 8 | p->small[11];
        break;
    case RH_FRAME_RESET:
        ev->type = RH_FEV_RESET;
        ev->data = p->small;
        ev->len = p->small_len;
        break;
    case RH_FRAME_HEARTBEAT:
        ev->type = RH_FEV_HEARTBEAT;
        break;
    case RH_FRAME_FIN:
        ev->type = RH_FEV_FIN;
        break;
    case RH_FRAME_END:
        ev->type = RH_FEV_END;
        break;
    default:
        break;
    }
    p->type = 0;
    p->hdr_have = 0;
    p->small_len = 0;
}

size_t rh_frame_parse(rh_frame_parser *p, const unsigned char *buf, size_t len,
                      const char *allowed, rh_frame_event *ev)
{
    size_t used = 0;

    ev->type = RH_FEV_NONE;
    ev->data = NULL;
    ev->len = 0;
    ev->offset = 0;
    ev->crc = 0;
    if (p->error) {
        ev->type = RH_FEV_ERROR;
        return 0;
    }
    while (used < len || (p->type && p->remain == 0)) {
        if (!p->type) {
            while (p->hdr_have < RH_FRAME_HDR && used < len)
                p->hdr[p->hdr_have++] = buf[used++];
            if (p->hdr_have < RH_FRAME_HDR)
                return used;
            int type = p->hdr[0];
            size_t flen = ((size_t)p->hdr[1] << 16) | ((size_t)p->hdr[2] << 8) | p->hdr[3];
            if (!type || !strchr(allowed, type))
                return fail(p, ev, "unknown or unexpected frame type", used);
            if (flen > RH_FRAME_MAX)
                return fail(p, ev, "frame too long", used);
            if (type == RH_FRAME_ACK && flen != 8)
                return fail(p, ev, "ack frame must carry 8 bytes", used);
            if (type == RH_FRAME_CHECK && flen != RH_FRAME_CHECK_LEN)
                return fail(p, ev, "check frame must carry 12 bytes", used);
            if ((type == RH_FRAME_FIN || type == RH_FRAME_END) && flen != 0)
                return fail(p, ev, "fin/end frame must be empty", used);
            if (type == RH_FRAME_DATA && flen == 0)
                return fail(p, ev, "empty data frame", used);
            p->type = type;
            p->remain = flen;
            p->small_len = 0;
            if (flen == 0) {
                finish_small(p, ev);
                return used;
            }
            continue;
        }
        if (p->type == RH_FRAME_DATA) {
            size_t n = len - used;
            if (n > p->remain)
                n = p->remain;
            ev->type = RH_FEV_DATA;
            ev->data = buf + used;
            ev->len = n;
            used += n;
            p->remain -= n;
            if (p->remain == 0) {
                p->type = 0;
                p->hdr_have = 0;
            }
            return used;
        }
        /* A, C, R, H: collect (R truncated to the buffer) or skip */
        size_t n = len - used;
        if (n > p->remain)
            n = p->remain;
        if (p->type != RH_FRAME_HEARTBEAT) {
            size_t room = sizeof(p->small) - p->small_len;
            size_t keep = n < room ? n : room;
            memcpy(p->small + p->small_len, buf + used, keep);
            p->small_len += keep;
        }
        used += n;
        p->remain -= n;
        if (p->remain == 0) {
            finish_small(p, ev);
            return used;
        }
    }
    return used;
}
