/* The fixture of the relay core tests (test_core_*.c): the core runs in a
 * thread on a unix socket in a private directory, the registry lives in
 * malloc'd memory, targets are loopback TCP sockets that the test controls,
 * and every wait has a timeout. test_core_fx.c holds the helpers; each
 * test_core_*.c file one group of tests. */
#ifndef RH_TEST_CORE_FX_H
#define RH_TEST_CORE_FX_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
/* from libasan (sanitizer/allocator_interface.h, not always installed) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif
#include "tests.h"
#include "rh_core.h"
#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_ipc.h"
#include "rh_ipc_client.h"
#include "rh_registry.h"

#define IO_MS 3000            /* every single blocking step in these tests */

/* Polls cond every 5 ms until it holds or ms ran out; yields whether it held. */
#define WAIT_FOR(cond, ms) __extension__ ({                              \
        long wf_end_ = now_ms() + (ms);                                  \
        int wf_ok_;                                                      \
        while (!(wf_ok_ = !!(cond)) && now_ms() < wf_end_)               \
            sleep_ms(5);                                                 \
        wf_ok_; })

/* the core under test, one at a time (CF) */
typedef struct core_fx {
    char path[128];
    int lfd;
    rh_registry *reg;
    rh_registry_ext *ext;   /* behind reg's slots */
    rh_core_config cfg;
    pthread_t th;
    int thread_created;
    int rv;
    pthread_mutex_t mu;
    char log[1 << 16];
    size_t log_len;
} core_fx;

#define read_reply(fd, buf, max, ms) read_reply_at(__LINE__, (fd), (buf), (max), (ms))

#define ASSERT_PREFIX(s, p) \
    ck_assert_msg(strncmp((s), (p), strlen(p)) == 0, "expected \"%s...\", got \"%s\"", (p), (s))

#define NO_LEN SIZE_MAX

/* Frame reader for a stream pull connection. It checks what every stream pull
 * must satisfy: the A frames it sees never go backwards. */
typedef struct frd {
    int fd;
    rh_frame_parser p;
    unsigned char buf[1 << 17];
    size_t off, len;
    int nacks;                /* A frames seen */
    uint64_t ack;             /* the offset in the last one */
    int nbeats;               /* H frames seen */
    const char *allowed;      /* frame types accepted; NULL: "DHFREA" (no C frames) */
} frd;

/* One batch answer, parsed and checked for form: "OK <offset> <len>", exactly len
 * bytes, then the core closes; the body is A, D frames (1..65536 each), and one
 * of F, R, E as the last frame. */
typedef struct batch_ans {
    uint64_t off;             /* from the OK line */
    size_t len;               /* from the OK line */
    uint64_t ack;             /* the A frame */
    size_t dlen;              /* D payload, in batch_data */
    int ndata;                /* D frames */
    size_t dmax;              /* largest D frame */
    int term;                 /* 'F', 'R' or 'E' */
    char reason[256];         /* R payload */
    long ms;                  /* from the request to the OK line */
    int nck;                  /* C frames, each right after a D frame */
    uint64_t ck_off[64];      /* ... the offset and CRC each carried */
    uint32_t ck_crc[64];
    size_t ck_dlen[64];       /* ... and dlen when it came */
    int d_alone;              /* D frames not followed at once by a C frame */
} batch_ans;

/* A push stream that writes generated D frames (with H and A frames between them)
 * through a non-blocking socket. */
typedef struct psend {
    int fd;
    unsigned seed;
    uint64_t queued;          /* payload bytes put into frames so far */
    uint64_t limit;           /* payload bytes to send in total */
    unsigned char frame[RH_FRAME_HDR + RH_FRAME_MAX];
    size_t flen, foff;
    int fixed;                /* 1: always full 65536 D frames, no H/A */
} psend;

extern core_fx CF;
extern unsigned char batch_data[1 << 20];

/* time */
long now_ms(void);
void sleep_ms(int ms);

/* the core under test */
int track(int fd);
void xclose(int fd);
int log_has(const char *needle);
uint32_t reg_active(void);
void core_start(uint32_t nslots, int heartbeat_s);
void core_stop(void);
void base_setup(void);
void base_teardown(void);
void fx_setup(void);
void fx_teardown(void);
long core_cpu_ms(void);

/* targets: loopback TCP sockets driven by the test */
int tcp_listen(int *port, int rcvbuf, int backlog);
int tcp_accept(int lfd, int ms);
int closed_port(void);
int target_read_end(int fd, int ms, unsigned char *got, size_t cap, size_t *len);
void target_expect(int fd, const char *want);
void target_send(int fd, const void *data, size_t len);
void target_reset(int fd);
void target_send_full(int port);

/* the handler's side of the core protocol */
int cx(void);
void send_all(int fd, const void *data, size_t len);
void send_str(int fd, const char *s);
void read_reply_at(int line, int fd, char *buf, size_t max, int ms);
void req(char *reply, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void assert_token(const char *tok);
void open_session_window(int port, unsigned bufsize, unsigned idle_s, unsigned window,
                         char tok[RH_TOKEN_LEN + 1]);
void open_session(int port, unsigned bufsize, unsigned idle_s, char tok[RH_TOKEN_LEN + 1]);
/* A core (8 sessions, 20 s), a target listening (*listener) and a session to it
 * (buffer 65536, idle 30 s) in tok: the target's side of the session. */
int core_with_session(char tok[RH_TOKEN_LEN + 1], int *listener);
int push_open(const char *tok, uint64_t off);
int push_send_len(const char *tok, uint64_t off, const void *frames, size_t len,
                  size_t body_len);
int push_send(const char *tok, uint64_t off, const void *frames, size_t len);
int pull_open(const char *tok, uint64_t ack);
void attach_refused(char *reply, size_t max, const char *verb, const char *tok,
                    uint64_t off, const char *extra);
void send_frame(int fd, int type, const void *payload, size_t len);
size_t frame_put(unsigned char *out, int type, const void *payload, size_t len);
frd *frd_new(int fd);
void frd_free(frd *r);
int frd_next(frd *r, int ms, rh_frame_event *ev);
const char *fev_name(rh_frame_event_type t);
void frd_expect(frd *r, rh_frame_event_type type, rh_frame_event *ev);
void frd_expect_ack(frd *r, uint64_t want);
void frd_expect_data(frd *r, const char *want);
void frd_expect_eof(frd *r);
void frd_expect_quiet(frd *r, int ms);
frd *pull_start(const char *tok, uint64_t ack, uint64_t up);
void assert_no_reply(int fd, int ms, const char *what);

/* batch pulls */
int batch_send(const char *tok, uint64_t ack, unsigned poll_s);
/* ... on a connection of the caller's, with keep: the core keeps it after the answer */
int batch_send_on(int fd, const char *tok, uint64_t ack, unsigned poll_s, int keep);
void batch_finish(int fd, long t0, int ms, batch_ans *a);
/* ... of a kept pull: the connection stays open and holds nothing more */
void batch_finish_kept(int fd, long t0, int ms, batch_ans *a);
/* the answer's line and body into batch_body: its length (a->ms, off, len set) */
size_t batch_read(int fd, long t0, int ms, batch_ans *a);
void batch_pull(const char *tok, uint64_t ack, unsigned poll_s, int ms, batch_ans *a);
int session_alive(const char *tok);
unsigned char gen_byte(uint64_t i);

/* shared by several test files */
size_t psend_pump(psend *ps);
int psend_done(const psend *ps);
uint64_t fill_until_blocked(psend *ps, int quiet_ms, uint64_t max);
void target_expect_mem(int fd, const unsigned char *want, size_t len);

/* The test cases of the core suite, by name; each test file adds its tests. */
typedef struct core_tcases {
    TCase *requests, *data, *batch, *timers, *flow, *integrity;
} core_tcases;

void core_open_tests(const core_tcases *t);
void core_data_tests(const core_tcases *t);
void core_batch_tests(const core_tcases *t);
void core_resets_tests(const core_tcases *t);
void core_timers_tests(const core_tcases *t);
void core_flow_tests(const core_tcases *t);
void core_check_tests(const core_tcases *t);
void core_pair_tests(const core_tcases *t);
void core_watch_tests(const core_tcases *t);

#endif
