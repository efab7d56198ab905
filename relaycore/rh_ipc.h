/* The handler <-> relay core exchange over the core's unix socket: one text line
 * per request, one per reply, then raw frames. httpd-independent. */
#ifndef RH_IPC_H
#define RH_IPC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rh_proto.h"

#define RH_IPC_LINE_MAX 512

typedef enum {
    RH_IPC_NONE = 0,
    RH_IPC_OPEN,   /* OPEN target ip port bufsize idle_s connect_s [resume=window]
                      [check=crc32c] [client=KEY] [owner=HEX64] [service]
                      [udp=IDLE_S,QUEUE] (a udp: target: datagrams); with
                      service, target is a RelayService, ip "-", port 0 and
                      connect_s how long to wait for a serve's listen */
    RH_IPC_PUSH,   /* PUSH token offset [len=N] then frames until EOF; N = body bytes */
    RH_IPC_PULL,   /* PULL token ack mode [poll_s] [keep]  then frames from the
                      core; keep (batch): after the answer's last byte the
                      connection waits for the handler's next request line */
    RH_IPC_CLOSE,  /* CLOSE token [integrity]: the client found a failed check */
    RH_IPC_ACK,    /* ACK token offset: down bytes the client has received */
    RH_IPC_STAT,   /* STAT: one line of counters */
    RH_IPC_LISTEN, /* LISTEN service bufsize idle_s poll_s [resume=window] [check=crc32c]
                      [client=KEY] [owner=HEX64]: waits for an open of the service;
                      OK <token> (the serve leg's session) or OK alone (none came) */
    RH_IPC_LOGS,   /* LOGS level: from the httpd parent only, with the error log's
                      descriptor (SCM_RIGHTS) after every restart */
    RH_IPC_RESOLVE,/* RESOLVE name timeout_s: the core looks the name up without
                      blocking its loop; OK addr [addr...] (at most
                      RH_RESOLVE_ADDRS) or ERR 502/504 reason=resolve */
    RH_IPC_GONE,   /* GONE token: a session the registry does not have; always
                      ERR 410, with reason=reset and why when it was reset lately */
    RH_IPC_WATCH   /* WATCH target count poll_s [owner=HEX64], then count lines
                      "token ack": OK <length> once a session is ready (or
                      poll_s ran out), then length bytes "sid data|gone" lines
                      (rh_core_watch.h) */
} rh_ipc_op;

typedef struct rh_ipc_req {
    rh_ipc_op op;
    char target[64];
    char host[64];      /* numeric address: the glue resolves names */
    unsigned port;
    unsigned bufsize;
    unsigned window;           /* OPEN resume: bytes kept until acknowledged */
    unsigned idle_s;
    unsigned connect_s;
    int resume;         /* open: keep down bytes until acknowledged */
    int check;          /* open: C frames (CRC32C) follow every D frame, both ways */
    int service;        /* open: target names a RelayService (rendezvous) */
    int udp;            /* open: a udp: target, datagrams framed in the stream */
    unsigned udp_idle_s;       /* ... ends after this long without a datagram */
    unsigned udp_queue;        /* ... datagrams waiting per direction, at most */
    char client[32];    /* open: who asks (hashed user or address), for per-client limits */
    uint64_t owner;     /* open: hash of the authenticated user; 0: none */
    int integrity;      /* close: because the client's check failed */
    char token[64];
    uint64_t offset;    /* push: offset of first byte; pull: ack */
    int has_len;        /* push: the body's length is known (Content-Length) */
    uint64_t body_len;  /* push: body bytes (frames) the handler will pass */
    char mode[16];      /* pull: "stream" or "batch" */
    unsigned poll_s;    /* pull, batch; listen: answer empty after this long */
    int keep;           /* pull, batch: the connection is kept after the answer */
    unsigned log_level; /* logs: httpd's level for the module (APLOG_*) */
    char name[RH_HOST_MAX + 2];   /* resolve: the host name */
    unsigned timeout_s;           /* resolve: answer 504 after this long */
    unsigned count;               /* watch: entry lines after the request line */
} rh_ipc_req;

/* Replies: "OK <text>", "DONE <offset>", "ERR <status> [reason=<token>]
 * [offset=<n>] <message>" (the token, one of RH_REASON_TOKEN_*, goes to the
 * client as Relay-Reason; the offset, the up bytes the session has accepted,
 * as Relay-Offset). */
typedef struct rh_ipc_reply {
    int ok;             /* 1 for OK/DONE */
    int done;           /* 1 for DONE */
    int status;         /* HTTP status for ERR */
    char reason[16];    /* ERR: RH_REASON_TOKEN_* or empty */
    char text[RH_IPC_LINE_MAX];
    uint64_t num;       /* first number of an OK/DONE, if any; ERR: its offset= */
    int has_num;        /* ERR: it said offset= */
} rh_ipc_reply;

int rh_ipc_parse_req(const char *line, rh_ipc_req *req);
int rh_ipc_format_req(char *buf, size_t len, const rh_ipc_req *req);
int rh_ipc_parse_reply(const char *line, rh_ipc_reply *rep);

#endif
