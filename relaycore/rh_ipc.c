/* The handler <-> core line protocol: parsing and formatting of request and
 * reply lines, no I/O (the blocking helpers the handler uses are in
 * rh_ipc_client.c; the core reads its lines without blocking). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rh_ipc.h"
#include "rh_util.h"

static int copy_word(char *dst, size_t max, const char *src)
{
    size_t n = strlen(src);
    if (n == 0 || n >= max)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static int parse_uint(const char *s, unsigned *v, unsigned max)
{
    uint64_t x;
    if (rh_parse_u64(s, (size_t)-1, &x) || x > max)
        return -1;
    *v = (unsigned)x;
    return 0;
}

/* OPEN's options after its fixed words, each at most once */
static int parse_open_option(const char *w, rh_ipc_req *req)
{
    if (!strncmp(w, "resume=", 7) && !req->resume) {
        req->resume = 1;
        if (parse_uint(w + 7, &req->window, 1u << 30) || !req->window)
            return -1;
    } else if (!strcmp(w, "check=crc32c") && !req->check) {
        req->check = 1;
    } else if (!strcmp(w, "service") && !req->service && req->op != RH_IPC_LISTEN) {
        req->service = 1;
    } else if (!strncmp(w, "udp=", 4) && !req->udp && req->op != RH_IPC_LISTEN) {
        /* a udp: target: udp=IDLE_S,QUEUE */
        char *comma = strchr(w + 4, ',');
        req->udp = 1;
        if (!comma || comma - w > 16)
            return -1;
        char idle[16];
        memcpy(idle, w + 4, (size_t)(comma - w - 4));
        idle[comma - w - 4] = 0;
        if (parse_uint(idle, &req->udp_idle_s, 86400) || !req->udp_idle_s
            || parse_uint(comma + 1, &req->udp_queue, 1u << 20) || !req->udp_queue)
            return -1;
    } else if (!strncmp(w, "client=", 7) && !req->client[0] && w[7]) {
        if (copy_word(req->client, sizeof(req->client), w + 7))
            return -1;
    } else if (!strncmp(w, "owner=", 6) && !req->owner) {
        char *end;
        errno = 0;
        req->owner = strtoull(w + 6, &end, 16);
        if (errno || *end || !req->owner || w[6] == '-' || w[6] == '+')
            return -1;
    } else {
        return -1;
    }
    return 0;
}

/* OPEN target ip port bufsize idle_s connect_s [options] */
static int parse_open(char **w, int n, rh_ipc_req *req)
{
    for (int i = 7; i < n; ++i)
        if (parse_open_option(w[i], req))
            return -1;
    req->op = RH_IPC_OPEN;
    if (copy_word(req->target, sizeof(req->target), w[1])
        || copy_word(req->host, sizeof(req->host), w[2])
        || parse_uint(w[3], &req->port, 65535) || (req->port == 0 && !req->service)
        || parse_uint(w[4], &req->bufsize, 1u << 30) || req->bufsize < 1024
        || parse_uint(w[5], &req->idle_s, 86400 * 7) || req->idle_s == 0
        || parse_uint(w[6], &req->connect_s, 3600) || req->connect_s == 0)
        return -1;
    return 0;
}

/* LISTEN service bufsize idle_s poll_s [options] */
static int parse_listen(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_LISTEN;
    for (int i = 5; i < n; ++i)
        if (parse_open_option(w[i], req))
            return -1;
    if (copy_word(req->target, sizeof(req->target), w[1])
        || parse_uint(w[2], &req->bufsize, 1u << 30) || req->bufsize < 1024
        || parse_uint(w[3], &req->idle_s, 86400 * 7) || req->idle_s == 0
        || parse_uint(w[4], &req->poll_s, 3600) || req->poll_s == 0)
        return -1;
    return 0;
}

/* the words PUSH, PULL and ACK begin with: token offset */
static int parse_token_offset(char **w, rh_ipc_req *req)
{
    if (copy_word(req->token, sizeof(req->token), w[1])
        || rh_parse_u64(w[2], (size_t)-1, &req->offset))
        return -1;
    return 0;
}

/* PUSH token offset [len=N] */
static int parse_push(char **w, int n, rh_ipc_req *req)
{
    if (n == 4 && strncmp(w[3], "len=", 4))
        return -1;
    req->op = RH_IPC_PUSH;
    if (parse_token_offset(w, req))
        return -1;
    if (n == 4) {
        if (rh_parse_u64(w[3] + 4, (size_t)-1, &req->body_len))
            return -1;
        req->has_len = 1;
    }
    return 0;
}

/* PULL token ack mode [poll_s] [keep] */
static int parse_pull(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_PULL;
    if (parse_token_offset(w, req) || copy_word(req->mode, sizeof(req->mode), w[3]))
        return -1;
    if (n > 4 && !strcmp(w[n - 1], "keep")) {
        req->keep = 1;
        --n;
    }
    if (n > 5 || (n == 5 && (parse_uint(w[4], &req->poll_s, 3600) || req->poll_s == 0)))
        return -1;
    return 0;
}

/* ACK token offset */
static int parse_ack(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_ACK;
    return parse_token_offset(w, req);
}

/* CLOSE token [integrity] */
static int parse_close(char **w, int n, rh_ipc_req *req)
{
    if (n == 3 && strcmp(w[2], "integrity"))
        return -1;
    req->op = RH_IPC_CLOSE;
    req->integrity = n == 3;
    return copy_word(req->token, sizeof(req->token), w[1]);
}

/* GONE token */
static int parse_gone(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_GONE;
    return copy_word(req->token, sizeof(req->token), w[1]);
}

static int parse_stat(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_STAT;
    return 0;
}

/* LOGS level */
static int parse_logs(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_LOGS;
    return parse_uint(w[1], &req->log_level, 15);
}

/* RESOLVE name timeout_s */
static int parse_resolve(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_RESOLVE;
    return copy_word(req->name, sizeof(req->name), w[1])
        || parse_uint(w[2], &req->timeout_s, 3600) || req->timeout_s == 0 ? -1 : 0;
}

/* WATCH target count poll_s [owner=HEX64] */
static int parse_watch(char **w, int n, rh_ipc_req *req)
{
    req->op = RH_IPC_WATCH;
    if (copy_word(req->target, sizeof(req->target), w[1])
        || parse_uint(w[2], &req->count, RH_WATCH_MAX) || req->count == 0
        || parse_uint(w[3], &req->poll_s, 3600) || req->poll_s == 0)
        return -1;
    return n == 5 && (strncmp(w[4], "owner=", 6) || parse_open_option(w[4], req)) ? -1 : 0;
}

#define REQ_WORDS_MAX 13

/* the request verbs, with how many words (the verb included) each takes */
static const struct {
    const char *verb;
    int min_words, max_words;
    int (*parse)(char **w, int n, rh_ipc_req *req);
} req_verbs[] = {
    { "OPEN",  7, REQ_WORDS_MAX, parse_open },
    { "PUSH",  3, 4, parse_push },
    { "PULL",  4, 6, parse_pull },
    { "ACK",   3, 3, parse_ack },
    { "CLOSE", 2, 3, parse_close },
    { "STAT",  1, 1, parse_stat },
    { "LOGS",  2, 2, parse_logs },
    { "LISTEN", 5, 9, parse_listen },
    { "RESOLVE", 3, 3, parse_resolve },
    { "GONE",  2, 2, parse_gone },
    { "WATCH", 4, 5, parse_watch },
};

int rh_ipc_parse_req(const char *line, rh_ipc_req *req)
{
    char buf[RH_IPC_LINE_MAX];
    char *w[REQ_WORDS_MAX];
    int n = 0;
    char *save = NULL;

    memset(req, 0, sizeof(*req));
    if (strlen(line) >= sizeof(buf))
        return -1;
    strcpy(buf, line);
    for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (n == REQ_WORDS_MAX)
            return -1;
        w[n++] = t;
    }
    if (n == 0)
        return -1;
    for (size_t i = 0; i < sizeof(req_verbs) / sizeof(req_verbs[0]); ++i)
        if (!strcmp(w[0], req_verbs[i].verb))
            return n >= req_verbs[i].min_words && n <= req_verbs[i].max_words
                   ? req_verbs[i].parse(w, n, req) : -1;
    return -1;
}

/* The options OPEN and LISTEN share, with a leading space each. */
static void format_options(char *opts, size_t len, const rh_ipc_req *req)
{
    char resume[32] = "", client[48] = "", owner[32] = "", udp[40] = "";
    if (req->resume)
        snprintf(resume, sizeof(resume), " resume=%u", req->window);
    if (req->client[0])
        snprintf(client, sizeof(client), " client=%s", req->client);
    if (req->owner)
        snprintf(owner, sizeof(owner), " owner=%016" PRIx64, req->owner);
    if (req->udp)
        snprintf(udp, sizeof(udp), " udp=%u,%u", req->udp_idle_s, req->udp_queue);
    snprintf(opts, len, "%s%s%s%s%s%s", resume, req->check ? " check=crc32c" : "", client, owner,
             req->service ? " service" : "", udp);
}

static int format_open(char *buf, size_t len, const rh_ipc_req *req)
{
    char opts[200];
    format_options(opts, sizeof(opts), req);
    if (req->op == RH_IPC_LISTEN)
        return snprintf(buf, len, "LISTEN %s %u %u %u%s\n", req->target, req->bufsize,
                        req->idle_s, req->poll_s, opts);
    return snprintf(buf, len, "OPEN %s %s %u %u %u %u%s\n", req->target, req->host,
                    req->port, req->bufsize, req->idle_s, req->connect_s, opts);
}

int rh_ipc_format_req(char *buf, size_t len, const rh_ipc_req *req)
{
    int n;
    switch (req->op) {
    case RH_IPC_OPEN:
    case RH_IPC_LISTEN:
        n = format_open(buf, len, req);
        break;
    case RH_IPC_PUSH:
        if (req->has_len)
            n = snprintf(buf, len, "PUSH %s %" PRIu64 " len=%" PRIu64 "\n", req->token,
                         req->offset, req->body_len);
        else
            n = snprintf(buf, len, "PUSH %s %" PRIu64 "\n", req->token, req->offset);
        break;
    case RH_IPC_PULL:
        if (req->poll_s)
            n = snprintf(buf, len, "PULL %s %" PRIu64 " %s %u%s\n", req->token, req->offset,
                         req->mode[0] ? req->mode : RH_MODE_STREAM, req->poll_s,
                         req->keep ? " keep" : "");
        else
            n = snprintf(buf, len, "PULL %s %" PRIu64 " %s%s\n", req->token, req->offset,
                         req->mode[0] ? req->mode : RH_MODE_STREAM, req->keep ? " keep" : "");
        break;
    case RH_IPC_ACK:
        n = snprintf(buf, len, "ACK %s %" PRIu64 "\n", req->token, req->offset);
        break;
    case RH_IPC_CLOSE:
        n = snprintf(buf, len, "CLOSE %s%s\n", req->token, req->integrity ? " integrity" : "");
        break;
    case RH_IPC_GONE:
        n = snprintf(buf, len, "GONE %s\n", req->token);
        break;
    case RH_IPC_STAT:
        n = snprintf(buf, len, "STAT\n");
        break;
    case RH_IPC_LOGS:
        n = snprintf(buf, len, "LOGS %u\n", req->log_level);
        break;
    case RH_IPC_RESOLVE:
        n = snprintf(buf, len, "RESOLVE %s %u\n", req->name, req->timeout_s);
        break;
    case RH_IPC_WATCH:
        if (req->owner)
            n = snprintf(buf, len, "WATCH %s %u %u owner=%016" PRIx64 "\n", req->target,
                         req->count, req->poll_s, req->owner);
        else
            n = snprintf(buf, len, "WATCH %s %u %u\n", req->target, req->count, req->poll_s);
        break;
    default:
        return -1;
    }
    return n > 0 && (size_t)n < len ? n : -1;
}

int rh_ipc_parse_reply(const char *line, rh_ipc_reply *rep)
{
    memset(rep, 0, sizeof(*rep));
    if (strlen(line) >= sizeof(rep->text))
        return -1;
    if (!strncmp(line, "OK", 2) && (line[2] == ' ' || line[2] == '\0')) {
        rep->ok = 1;
    } else if (!strncmp(line, "DONE ", 5)) {
        rep->ok = rep->done = 1;
    } else if (!strncmp(line, "ERR ", 4)) {
        char *end;
        long st = strtol(line + 4, &end, 10);
        if (st < 400 || st > 599 || (*end != ' ' && *end != '\0'))
            return -1;
        rep->status = (int)st;
        const char *msg = *end ? end + 1 : "";
        if (!strncmp(msg, "reason=", 7)) {
            /* a machine-readable why, for the client's Relay-Reason header */
            size_t n = strcspn(msg + 7, " ");
            if (n == 0 || n >= sizeof(rep->reason))
                return -1;
            memcpy(rep->reason, msg + 7, n);
            msg += 7 + n + (msg[7 + n] == ' ');
        }
        if (!strncmp(msg, "offset=", 7)) {
            /* the up bytes the session has accepted, for Relay-Offset */
            char *e;
            errno = 0;
            rep->num = strtoull(msg + 7, &e, 10);
            if (errno || e == msg + 7 || (*e != ' ' && *e != '\0'))
                return -1;
            rep->has_num = 1;
            msg = *e ? e + 1 : e;
        }
        snprintf(rep->text, sizeof(rep->text), "%s", msg);
        return 0;
    } else {
        return -1;
    }
    const char *rest = strchr(line, ' ');
    if (rest) {
        snprintf(rep->text, sizeof(rep->text), "%s", rest + 1);
        char *end;
        errno = 0;
        unsigned long long v = strtoull(rest + 1, &end, 10);
        if (!errno && end != rest + 1)
            rep->num = v;
    }
    return 0;
}
