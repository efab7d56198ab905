/* The wire protocol, version 1 (docs/PROTOCOL.md): every name and number that
 * the module, the relay core and the client must agree on is defined here, once.
 * Plain C, no includes: proto/ depends on libc only. */
#ifndef RH_PROTO_H
#define RH_PROTO_H

#define RH_PROTO_VERSION      "1"

/* ---- request and response headers ---- */
#define RH_HDR_VERSION        "Relay-Version"      /* request: the protocol spoken */
#define RH_HDR_SESSION        "Relay-Session"      /* the session token (never in a URL) */
#define RH_HDR_OFFSET         "Relay-Offset"       /* first data byte of a body; bytes accepted */
#define RH_HDR_ACK            "Relay-Ack"          /* down bytes the client has received */
#define RH_HDR_MODE           "Relay-Mode"         /* pull: RH_MODE_STREAM or RH_MODE_BATCH */
#define RH_HDR_RESUME         "Relay-Resume"       /* open: "1" = keep bytes until acked */
#define RH_HDR_BUFFER         "Relay-Buffer"       /* open answer: server buffer per direction */
#define RH_HDR_WINDOW         "Relay-Window"       /* open answer: resume window in bytes */
#define RH_HDR_IDLE           "Relay-Idle-Timeout" /* open answer: seconds */
#define RH_HDR_HEARTBEAT      "Relay-Heartbeat"    /* open answer: seconds between idle H frames */
#define RH_HDR_POLL           "Relay-Poll-Timeout" /* open answer: seconds an idle long-poll waits */
#define RH_HDR_INTEGRITY      "Relay-Integrity"    /* open: RH_INTEGRITY_CRC32C asked / confirmed */
#define RH_HDR_REASON         "Relay-Reason"       /* a machine-readable why: RH_REASON_* */
#define RH_HDR_DATAGRAM       "Relay-Datagram"     /* open, check: RH_DATAGRAM_LEN16 = the
                                                      bytes are datagrams (a udp: target) */
#define RH_HDR_DESTINATION    "Relay-Destination"  /* open of RH_DEST_TARGET: HOST:PORT */

#define RH_RESUME_YES         "1"
#define RH_INTEGRITY_CRC32C   "crc32c"
#define RH_MODE_STREAM        "stream"
#define RH_MODE_BATCH         "batch"
#define RH_DATAGRAM_LEN16     "len16"

/* ---- endpoints: BASE/TARGET/<name> ---- */
#define RH_EP_OPEN            "open"
#define RH_EP_PUSH            "push"
#define RH_EP_PULL            "pull"
#define RH_EP_DUPLEX          "duplex"
#define RH_EP_CLOSE           "close"
#define RH_EP_ACK             "ack"
/* GET: is TARGET usable here (declared, Apache's auth passed, core up)?
 * Nothing connects to the target: a client's cheap check at start */
#define RH_EP_CHECK           "check"
#define RH_EP_LISTEN          "listen"   /* rendezvous: a serve waits for a client */

/* Destinations (PROTOCOL.md, Destinations): the target name of sessions whose
 * client names the destination per connection, in Relay-Destination, within
 * the location's RelayAllow list. Not a valid RelayTarget name, so it never
 * collides with one; URL-safe as a path segment. */
#define RH_DEST_TARGET        "*"
#define RH_HOST_MAX           253   /* a DNS name, without a trailing dot */

/* ---- Relay-Reason values ----
 * on a 409 push answer: the server has every up byte and the client's fin
 * already (an earlier push carried it all): the push is done, not refused */
#define RH_REASON_TOKEN_FIN   "fin"
/* on a close: the client's own check of down bytes failed (the server counts it) */
#define RH_REASON_TOKEN_INTEGRITY "integrity"
/* on a 404 of open or check: the target name is not declared here (a 404
 * without it is an unknown endpoint, e.g. check on an older server) */
#define RH_REASON_TOKEN_NO_TARGET "target"
/* on a 503 open of a RelayService: no serve was listening in time */
#define RH_REASON_TOKEN_NO_SERVER "no-server"
/* on a 429 listen: this serving client has RelayMaxListensPerClient waiting, or
 * the service has RH_LISTEN_MAX */
#define RH_REASON_TOKEN_LISTENS "listens"
/* on a 400 of open or check: the client's bytes are datagrams and the target
 * is TCP, or the other way round (RelayTarget NAME udp:HOST:PORT) */
#define RH_REASON_TOKEN_DATAGRAM "datagram"
/* on a 403 of an open of RH_DEST_TARGET: no RelayAllow lets the destination
 * (or the address its name resolved to) through; the body says which */
#define RH_REASON_TOKEN_DEST  "destination"
/* on a 502 of an open: the destination's name did not resolve, the target
 * refused the connection, or it is unreachable (a 504: the connect timed out) */
#define RH_REASON_TOKEN_RESOLVE "resolve"
#define RH_REASON_TOKEN_REFUSED "refused"
#define RH_REASON_TOKEN_UNREACHABLE "unreachable"
/* on a 410 of a session request: the session was reset (by the target, the
 * client, a failed check, a malformed datagram...) within the last minute;
 * the body has the reason for people */
#define RH_REASON_TOKEN_RESET "reset"

/* ---- statuses with a meaning of their own (see PROTOCOL.md, Errors) ---- */
#define RH_STATUS_INTEGRITY   422   /* the session failed an end-to-end check */
#define RH_STATUS_GONE        410   /* unknown, expired or finished session */
#define RH_STATUS_CONFLICT    409   /* push offset not its turn; see Relay-Offset */
#define RH_STATUS_BUSY        503   /* the relay's budget is spent (Retry-After) */
#define RH_STATUS_CLIENT_BUSY 429   /* this client's share is spent (Retry-After) */

/* every error body is one line: this prefix, the message, a newline */
#define RH_ERROR_PREFIX       "mod_relay_https: "
/* how R frames and 422 bodies begin after a failed check */
#define RH_REASON_INTEGRITY   "integrity check failed"

/* ---- tokens ---- */
#define RH_TOKEN_LEN          48    /* 8 hex slot + 8 hex gen + 32 hex secret */
#define RH_SID_LEN            16    /* the public session id: slot + gen */
#define RH_TARGET_NAME_MAX    63    /* [A-Za-z0-9._-], not starting with '.' */

/* ---- server defaults, announced in the open answer ---- */
#define RH_HEARTBEAT_S        20        /* H frame on a silent stream pull */
#define RH_DEFAULT_POLL_S     25        /* a batch long-poll answers empty after this */
#define RH_DEFAULT_IDLE_S     300       /* a session nobody uses ends after this */
#define RH_DEFAULT_BUFSIZE    (256 * 1024)
#define RH_DEFAULT_WINDOW     (16 * 1024 * 1024)

/* Rendezvous (PROTOCOL.md, Rendezvous): a listen long-poll answers 204 after
 * RH_LISTEN_POLL_S without a client; an open of a service waits at most
 * RH_SERVICE_WAIT_S for a listen. Pairing is tentative: the client's open is
 * answered only when the serve leg's first request comes within
 * RH_ACCEPT_CLAIM_MS of its listen answer, else (or on a close first) that
 * listen is dropped and the client goes to the next one (with none waiting,
 * the late serve gets a little longer). A serve leg with no
 * request of it at the server for RH_SERVE_GONE_S is taken for a serve that
 * went away, and both legs are reset. At most RH_LISTEN_MAX listens wait per
 * service */
#define RH_LISTEN_POLL_S      25
#define RH_SERVICE_WAIT_S     5
#define RH_ACCEPT_CLAIM_MS    2000
#define RH_SERVE_GONE_S       10
#define RH_LISTEN_MAX         64

/* Datagrams (PROTOCOL.md, Datagrams): on a udp: target each datagram travels
 * in the session's byte stream as a 2-byte big-endian length, then that many
 * bytes; a length above RH_DGRAM_MAX (the largest UDP payload over IPv4) is a
 * protocol error. A UDP session ends after RH_UDP_IDLE_S without a datagram
 * either way; at most RH_UDP_QUEUE datagrams wait per direction (the oldest
 * is dropped beyond) */
#define RH_DGRAM_HDR          2
#define RH_DGRAM_MAX          65507
#define RH_UDP_IDLE_S         60
#define RH_UDP_QUEUE          256
/* SO_RCVBUF of the UDP sockets that face a target or the client's own
 * senders: the kernel's default (208 KiB) holds about 90 datagrams of 700
 * bytes, less than a cut's backlog that the relay sends on at once and the
 * target answers at once; the kernel doubles it and caps it at
 * net.core.rmem_max */
#define RH_UDP_RCVBUF         (1024 * 1024)

/* Liveness (PROTOCOL.md, Liveness): for RH_BUSY_WINDOW_MS after data moved, the
 * server heartbeats a silent stream pull every RH_BUSY_HEARTBEAT_MS and answers a
 * batch long-poll within RH_BUSY_POLL_MS, so a client notices a connection that
 * went silent in seconds; idle sessions keep the slow pace */
#define RH_BUSY_WINDOW_MS     15000
#define RH_BUSY_HEARTBEAT_MS  1000
#define RH_BUSY_POLL_MS       1000

/* watch (PROTOCOL.md, watch): one long-poll for many idle sessions.
 * The body has at most RH_WATCH_MAX lines "<token> <ack>\n" of at most
 * RH_WATCH_LINE_MAX bytes each; the answer names ready sessions by id with
 * RH_WATCH_DATA or RH_WATCH_GONE. A client re-sends a grown set at most once
 * per RH_WATCH_JOIN_MS. */
#define RH_EP_WATCH           "watch"
#define RH_WATCH_MAX          4096
#define RH_WATCH_LINE_MAX     (RH_TOKEN_LEN + 1 + 20 + 1)
#define RH_WATCH_BODY_MAX     (RH_WATCH_MAX * RH_WATCH_LINE_MAX)
#define RH_WATCH_DATA         "data"
#define RH_WATCH_GONE         "gone"
#define RH_WATCH_JOIN_MS      1000

#endif
