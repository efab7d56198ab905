/* The handler <-> core line protocol and the blocking helpers with timeouts. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "tests.h"
#include "rh_ipc.h"
#include "rh_ipc_client.h"

static long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A non-blocking socketpair, as rh_ipc_connect hands out. */
static void nb_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

static void parse_ok(const char *line, rh_ipc_req *rq)
{
    ck_assert_msg(rh_ipc_parse_req(line, rq) == 0, "refused: \"%s\"", line);
}

static void parse_bad(const char *line)
{
    rh_ipc_req rq;
    ck_assert_msg(rh_ipc_parse_req(line, &rq) != 0, "accepted: \"%s\"", line);
}

/* format -> strip the newline -> parse -> format again gives the same line */
static void roundtrip(const rh_ipc_req *in)
{
    char buf[RH_IPC_LINE_MAX], buf2[RH_IPC_LINE_MAX];
    rh_ipc_req out;
    int n = rh_ipc_format_req(buf, sizeof(buf), in);
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq(strlen(buf), (size_t)n);
    ck_assert_int_eq(buf[n - 1], '\n');
    ck_assert_ptr_eq(strchr(buf, '\n'), buf + n - 1);   /* one line, one newline */
    buf[n - 1] = '\0';
    parse_ok(buf, &out);
    ck_assert_int_eq(out.op, in->op);
    ck_assert_str_eq(out.target, in->target);
    ck_assert_str_eq(out.host, in->host);
    ck_assert_uint_eq(out.port, in->port);
    ck_assert_uint_eq(out.bufsize, in->bufsize);
    ck_assert_uint_eq(out.idle_s, in->idle_s);
    ck_assert_uint_eq(out.connect_s, in->connect_s);
    ck_assert_int_eq(out.resume, in->resume);
    ck_assert_uint_eq(out.window, in->window);
    ck_assert_int_eq(out.check, in->check);
    ck_assert_int_eq(out.integrity, in->integrity);
    ck_assert_str_eq(out.token, in->token);
    ck_assert(out.offset == in->offset);
    if (in->op == RH_IPC_PULL)
        ck_assert_str_eq(out.mode, in->mode[0] ? in->mode : "stream");
    ck_assert_int_eq(out.keep, in->keep);
    ck_assert_uint_eq(out.poll_s, in->poll_s);
    int n2 = rh_ipc_format_req(buf2, sizeof(buf2), &out);
    ck_assert_int_eq(n2, n);
    buf[n - 1] = '\n';
    ck_assert_str_eq(buf2, buf);
}

#define TOK "0000000300000001a3f0a3f0a3f0a3f0a3f0a3f0a3f0a3f0"

START_TEST(test_roundtrip_all_ops)
{
    rh_ipc_req rq;

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_OPEN;
    strcpy(rq.target, "db-main.1");
    strcpy(rq.host, "2001:db8::1");
    rq.port = 65535;
    rq.bufsize = 262144;
    rq.idle_s = 300;
    rq.connect_s = 10;
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PUSH;
    strcpy(rq.token, TOK);
    rq.offset = UINT64_MAX;
    roundtrip(&rq);
    rq.offset = 0;
    roundtrip(&rq);
    rq.has_len = 1;
    rq.body_len = 1048594;
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_PULL;
    strcpy(rq.token, TOK);
    rq.offset = 123456789012345ULL;
    strcpy(rq.mode, "stream");
    roundtrip(&rq);
    rq.mode[0] = '\0';           /* formats as the default mode */
    roundtrip(&rq);
    strcpy(rq.mode, "batch");
    rq.poll_s = 25;
    roundtrip(&rq);
    rq.keep = 1;                 /* a batch pull on a kept connection */
    roundtrip(&rq);
    rq.poll_s = 0;
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_CLOSE;
    strcpy(rq.token, TOK);
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_GONE;
    strcpy(rq.token, TOK);
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_STAT;
    roundtrip(&rq);

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_LOGS;
    rq.log_level = 15;
    roundtrip(&rq);
}
END_TEST

START_TEST(test_parse_fields)
{
    rh_ipc_req rq;
    parse_ok("OPEN web 127.0.0.1 8080 4096 60 5", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_OPEN);
    ck_assert_str_eq(rq.target, "web");
    ck_assert_str_eq(rq.host, "127.0.0.1");
    ck_assert_uint_eq(rq.port, 8080);
    ck_assert_uint_eq(rq.bufsize, 4096);
    ck_assert_uint_eq(rq.idle_s, 60);
    ck_assert_uint_eq(rq.connect_s, 5);
    parse_ok("OPEN a 1.2.3.4 1 1024 1 1", &rq);      /* the smallest values */
    ck_assert_uint_eq(rq.port, 1);
    ck_assert_uint_eq(rq.bufsize, 1024);
    ck_assert_int_eq(rq.resume, 0);
    parse_ok("OPEN web 127.0.0.1 8080 4096 60 5 resume=16777216", &rq);
    ck_assert_int_eq(rq.resume, 1);
    ck_assert_uint_eq(rq.window, 16777216);
    roundtrip(&rq);
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume=0");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume=x");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 keep=5");
    parse_ok("PUSH " TOK " 42", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_PUSH);
    ck_assert_str_eq(rq.token, TOK);
    ck_assert(rq.offset == 42);
    ck_assert_int_eq(rq.has_len, 0);
    parse_ok("PUSH " TOK " 42 len=0", &rq);
    ck_assert_int_eq(rq.has_len, 1);
    ck_assert(rq.body_len == 0);
    parse_ok("PULL " TOK " 18446744073709551615 stream", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_PULL);
    ck_assert(rq.offset == UINT64_MAX);
    ck_assert_str_eq(rq.mode, "stream");
    parse_ok("CLOSE " TOK, &rq);
    ck_assert_int_eq(rq.op, RH_IPC_CLOSE);
    ck_assert_str_eq(rq.token, TOK);
    parse_ok("GONE " TOK, &rq);
    ck_assert_int_eq(rq.op, RH_IPC_GONE);
    ck_assert_str_eq(rq.token, TOK);
    parse_bad("GONE");
    parse_bad("GONE " TOK " 0");
    parse_ok("STAT", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_STAT);
    parse_ok("LOGS 7", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_LOGS);
    ck_assert_uint_eq(rq.log_level, 7);
}
END_TEST

/* OPEN's options: resume=<window> and check=crc32c, in either order, each at
 * most once; formatting puts them in one order. */
START_TEST(test_open_options)
{
    rh_ipc_req rq;
    char buf[RH_IPC_LINE_MAX];

    parse_ok("OPEN web 127.0.0.1 8080 4096 60 5", &rq);
    ck_assert_int_eq(rq.check, 0);
    ck_assert_int_eq(rq.resume, 0);

    parse_ok("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_OPEN);
    ck_assert_int_eq(rq.check, 1);
    ck_assert_int_eq(rq.resume, 0);
    ck_assert_uint_eq(rq.window, 0);
    ck_assert_uint_eq(rq.connect_s, 5);   /* the option is not taken for a field */
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c\n");
    roundtrip(&rq);

    const char *both[] = {
        "OPEN web 127.0.0.1 8080 4096 60 5 resume=65536 check=crc32c",
        "OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c resume=65536",
    };
    for (int i = 0; i < 2; ++i) {
        parse_ok(both[i], &rq);
        ck_assert_int_eq(rq.check, 1);
        ck_assert_int_eq(rq.resume, 1);
        ck_assert_uint_eq(rq.window, 65536);
        ck_assert_str_eq(rq.host, "127.0.0.1");
        ck_assert_uint_eq(rq.port, 8080);
        ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
        ck_assert_str_eq(buf, "OPEN web 127.0.0.1 8080 4096 60 5 resume=65536 check=crc32c\n");
        roundtrip(&rq);
    }

    /* from the struct: what the handler sends */
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_OPEN;
    strcpy(rq.target, "db");
    strcpy(rq.host, "::1");
    rq.port = 5432;
    rq.bufsize = 262144;
    rq.idle_s = 300;
    rq.connect_s = 10;
    rq.check = 1;
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN db ::1 5432 262144 300 10 check=crc32c\n");
    roundtrip(&rq);
    rq.resume = 1;
    rq.window = 16777216;
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN db ::1 5432 262144 300 10 resume=16777216 check=crc32c\n");
    roundtrip(&rq);
    rq.check = 0;
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN db ::1 5432 262144 300 10 resume=16777216\n");
    roundtrip(&rq);

    /* each option at most once */
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c check=crc32c");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume=4096 resume=4096");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume=4096 resume=8192");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c resume=4096 check=crc32c");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 resume=4096 check=crc32c resume=4096");
    /* unknown options and values */
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=CRC32C");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c,md5");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 crc32c");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 Check=crc32c");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c x");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c resume=0");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 5 check=crc32c resume=x");
    /* options do not stand in for the fixed words */
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 check=crc32c");
    parse_bad("OPEN web 127.0.0.1 8080 4096 60 resume=4096 check=crc32c");
    /* CLOSE may say the client's own check failed */
    parse_ok("CLOSE " TOK " integrity", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_CLOSE);
    ck_assert_int_eq(rq.integrity, 1);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "CLOSE " TOK " integrity\n");
    roundtrip(&rq);
    parse_ok("CLOSE " TOK, &rq);
    ck_assert_int_eq(rq.integrity, 0);
    parse_bad("CLOSE " TOK " check=crc32c");
    parse_bad("CLOSE " TOK " integrity integrity");
    /* only OPEN has them */
    parse_bad("PUSH " TOK " 0 check=crc32c");
    parse_bad("PULL " TOK " 0 stream check=crc32c");
}
END_TEST

/* Rendezvous: LISTEN and OPEN of a service, parsed and formatted alike. */
START_TEST(test_rendezvous_lines)
{
    rh_ipc_req rq;
    char buf[RH_IPC_LINE_MAX];
    parse_ok("LISTEN svc 4096 30 25 resume=65536 check=crc32c client=ab owner=1f", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_LISTEN);
    ck_assert_str_eq(rq.target, "svc");
    ck_assert_uint_eq(rq.bufsize, 4096);
    ck_assert_uint_eq(rq.poll_s, 25);
    ck_assert(rq.resume && rq.window == 65536 && rq.check && rq.owner == 0x1f);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "LISTEN svc 4096 30 25 resume=65536 check=crc32c client=ab "
                     "owner=000000000000001f\n");
    parse_bad("LISTEN svc 4096 30 0");
    parse_bad("LISTEN svc 4096 30 25 service");
    parse_bad("LISTEN svc 4096 30");
    parse_ok("OPEN svc - 0 4096 30 5 resume=65536 check=crc32c client=ab owner=1f service",
             &rq);
    ck_assert(rq.op == RH_IPC_OPEN && rq.service && rq.port == 0);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN svc - 0 4096 30 5 resume=65536 check=crc32c client=ab "
                     "owner=000000000000001f service\n");
    parse_bad("OPEN svc - 0 4096 30 5");          /* port 0 only for a service */
    parse_bad("OPEN svc - 0 4096 30 5 service service");
}
END_TEST

/* WATCH: target, count, poll_s and an owner; count within 1..RH_WATCH_MAX */
START_TEST(test_watch_lines)
{
    rh_ipc_req rq;
    char buf[RH_IPC_LINE_MAX];
    parse_ok("WATCH t1 3 25 owner=1f", &rq);
    ck_assert_int_eq(rq.op, RH_IPC_WATCH);
    ck_assert_str_eq(rq.target, "t1");
    ck_assert(rq.count == 3 && rq.poll_s == 25 && rq.owner == 0x1f);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "WATCH t1 3 25 owner=000000000000001f\n");
    parse_ok("WATCH t1 4096 1", &rq);
    ck_assert(rq.count == RH_WATCH_MAX && rq.owner == 0);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "WATCH t1 4096 1\n");
    parse_bad("WATCH t1 0 25");
    parse_bad("WATCH t1 4097 25");
    parse_bad("WATCH t1 3 0");
    parse_bad("WATCH t1 3");
    parse_bad("WATCH t1 3 25 client=ab");
    parse_bad("WATCH t1 3 25 owner=1f keep");
}
END_TEST

START_TEST(test_parse_rejects)
{
    parse_bad("");
    parse_bad(" ");
    parse_bad("HELLO");
    parse_bad("open web 127.0.0.1 80 4096 60 5");          /* verbs are case sensitive */
    /* missing and extra fields */
    parse_bad("OPEN web 127.0.0.1 80 4096 60");
    parse_bad("OPEN web 127.0.0.1 80 4096 60 5 9");
    parse_bad("OPEN");
    parse_bad("PUSH " TOK);
    parse_bad("PUSH " TOK " 1 2");
    parse_bad("PUSH " TOK " 1 len=");
    parse_bad("PUSH " TOK " 1 len=-4");
    parse_bad("PUSH " TOK " 1 len=4 x");
    parse_bad("PULL " TOK " 1");
    parse_bad("PULL " TOK " 1 stream extra");
    parse_bad("PULL " TOK " 1 batch 25 keep keep");
    parse_bad("PULL " TOK " 1 batch keep 25");
    parse_bad("PULL " TOK " 1 batch 25 extra keep");
    parse_bad("CLOSE");
    parse_bad("CLOSE " TOK " x");
    parse_bad("STAT now");
    parse_bad("LOGS");
    parse_bad("LOGS 16");
    parse_bad("LOGS debug");
    parse_bad("LOGS 7 8");
    parse_bad("PUSH");
    /* ports */
    parse_bad("OPEN web 127.0.0.1 0 4096 60 5");
    parse_bad("OPEN web 127.0.0.1 65536 4096 60 5");
    parse_bad("OPEN web 127.0.0.1 -1 4096 60 5");
    parse_bad("OPEN web 127.0.0.1 80x 4096 60 5");
    parse_bad("OPEN web 127.0.0.1 99999999999999999999999 4096 60 5");
    /* buffer, idle, connect */
    parse_bad("OPEN web 127.0.0.1 80 1023 60 5");
    parse_bad("OPEN web 127.0.0.1 80 0 60 5");
    parse_bad("OPEN web 127.0.0.1 80 4096 0 5");
    parse_bad("OPEN web 127.0.0.1 80 4096 60 0");
    parse_bad("OPEN web 127.0.0.1 80 4096 60 3601");
    parse_bad("OPEN web 127.0.0.1 80 2147483648 60 5");
    /* offsets: non-numeric, signed, overflowing, hex */
    parse_bad("PUSH " TOK " abc");
    parse_bad("PUSH " TOK " 12abc");
    parse_bad("PUSH " TOK " -1");
    parse_bad("PUSH " TOK " +1");
    parse_bad("PUSH " TOK " 0x10");
    parse_bad("PUSH " TOK " 18446744073709551616");
    parse_bad("PULL " TOK " -5 stream");
    parse_bad("PULL " TOK " five stream");
    /* a token that does not fit */
    char line[RH_IPC_LINE_MAX];
    char tok[100];
    memset(tok, 'a', 70);
    tok[70] = '\0';
    snprintf(line, sizeof(line), "CLOSE %s", tok);
    parse_bad(line);
    /* a line longer than the protocol allows */
    char huge[RH_IPC_LINE_MAX + 10];
    memset(huge, 'S', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    parse_bad(huge);
}
END_TEST

START_TEST(test_format_errors)
{
    rh_ipc_req rq;
    char buf[16];
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_NONE;
    ck_assert_int_lt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    rq.op = RH_IPC_CLOSE;
    strcpy(rq.token, TOK);
    ck_assert_int_lt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);    /* too small */
    rq.op = RH_IPC_STAT;
    ck_assert_int_eq(rh_ipc_format_req(buf, sizeof(buf), &rq), 5);
    ck_assert_str_eq(buf, "STAT\n");
    ck_assert_int_lt(rh_ipc_format_req(buf, 5, &rq), 0);               /* no room for NUL */
}
END_TEST

START_TEST(test_reply_parse)
{
    rh_ipc_reply rep;
    ck_assert_int_eq(rh_ipc_parse_reply("OK " TOK, &rep), 0);
    ck_assert_int_eq(rep.ok, 1);
    ck_assert_int_eq(rep.done, 0);
    ck_assert_str_eq(rep.text, TOK);

    ck_assert_int_eq(rh_ipc_parse_reply("OK 1234", &rep), 0);
    ck_assert_int_eq(rep.ok, 1);
    ck_assert(rep.num == 1234);
    ck_assert_str_eq(rep.text, "1234");

    ck_assert_int_eq(rh_ipc_parse_reply("OK", &rep), 0);
    ck_assert_int_eq(rep.ok, 1);
    ck_assert_str_eq(rep.text, "");
    ck_assert(rep.num == 0);

    ck_assert_int_eq(rh_ipc_parse_reply("OK active=1 opened=2 closed=1", &rep), 0);
    ck_assert_int_eq(rep.ok, 1);
    ck_assert_str_eq(rep.text, "active=1 opened=2 closed=1");

    ck_assert_int_eq(rh_ipc_parse_reply("DONE 18446744073709551615", &rep), 0);
    ck_assert_int_eq(rep.ok, 1);
    ck_assert_int_eq(rep.done, 1);
    ck_assert(rep.num == UINT64_MAX);

    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 a push is already active", &rep), 0);
    ck_assert_int_eq(rep.ok, 0);
    ck_assert_int_eq(rep.done, 0);
    ck_assert_int_eq(rep.status, 409);
    ck_assert_str_eq(rep.text, "a push is already active");

    /* a reason token for Relay-Reason comes off the message */
    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 reason=" RH_REASON_TOKEN_FIN
                                        " the client already finished", &rep), 0);
    ck_assert_int_eq(rep.status, 409);
    ck_assert_str_eq(rep.reason, RH_REASON_TOKEN_FIN);
    ck_assert_str_eq(rep.text, "the client already finished");
    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 a push is already active", &rep), 0);
    ck_assert_str_eq(rep.reason, "");
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 409 reason= x", &rep), 0);
    /* the accepted offset for Relay-Offset comes off too, after a reason */
    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 offset=123 push offset 5 is below accepted 123",
                                        &rep), 0);
    ck_assert(rep.status == 409 && rep.has_num && rep.num == 123);
    ck_assert_str_eq(rep.text, "push offset 5 is below accepted 123");
    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 reason=" RH_REASON_TOKEN_FIN " offset=7 x",
                                        &rep), 0);
    ck_assert(rep.has_num && rep.num == 7 && !strcmp(rep.reason, RH_REASON_TOKEN_FIN));
    ck_assert_str_eq(rep.text, "x");
    ck_assert_int_eq(rh_ipc_parse_reply("ERR 409 a push is already active", &rep), 0);
    ck_assert(!rep.has_num);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 409 offset= x", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 409 offset=12x y", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 409 reason=abcdefghijklmnopqrstuvwxyz x", &rep), 0);

    ck_assert_int_eq(rh_ipc_parse_reply("ERR 502", &rep), 0);
    ck_assert_int_eq(rep.status, 502);
    ck_assert_str_eq(rep.text, "");

    /* refused */
    ck_assert_int_ne(rh_ipc_parse_reply("", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("OKAY", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ok 1", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("DONE", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR x", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 200 fine", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 600 x", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 4091 x", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("ERR 409x", &rep), 0);
    ck_assert_int_ne(rh_ipc_parse_reply("HELLO", &rep), 0);
    char huge[RH_IPC_LINE_MAX + 10];
    memset(huge, 'x', sizeof(huge) - 1);
    memcpy(huge, "OK ", 3);
    huge[sizeof(huge) - 1] = '\0';
    ck_assert_int_ne(rh_ipc_parse_reply(huge, &rep), 0);
}
END_TEST

/* The line is taken, the frames behind it stay in the socket. */
START_TEST(test_read_line_keeps_rest)
{
    int sv[2];
    char line[RH_IPC_LINE_MAX];
    nb_pair(sv);
    const char msg[] = "OK 17\nDxyz\nmore";
    ck_assert_int_eq(write(sv[1], msg, sizeof(msg) - 1), (ssize_t)sizeof(msg) - 1);
    ck_assert_int_eq(rh_ipc_read_line(sv[0], line, sizeof(line), 1000), 5);
    ck_assert_str_eq(line, "OK 17");
    char rest[64];
    ssize_t n = recv(sv[0], rest, sizeof(rest), 0);
    ck_assert_int_eq(n, (ssize_t)strlen("Dxyz\nmore"));
    ck_assert_mem_eq(rest, "Dxyz\nmore", (size_t)n);

    /* an empty line */
    ck_assert_int_eq(write(sv[1], "\nX", 2), 2);
    ck_assert_int_eq(rh_ipc_read_line(sv[0], line, sizeof(line), 1000), 0);
    ck_assert_str_eq(line, "");
    ck_assert_int_eq(recv(sv[0], rest, sizeof(rest), 0), 1);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

typedef struct slow_writer {
    int fd;
    const char *parts[4];
    int delay_ms;
} slow_writer;

static void *slow_writer_main(void *arg)
{
    slow_writer *w = arg;
    for (int i = 0; i < 4 && w->parts[i]; ++i) {
        usleep((useconds_t)w->delay_ms * 1000);
        if (write(w->fd, w->parts[i], strlen(w->parts[i])) < 0)
            break;
    }
    return NULL;
}

/* A line that arrives in pieces is assembled; bytes behind it stay. */
START_TEST(test_read_line_in_pieces)
{
    int sv[2];
    char line[RH_IPC_LINE_MAX];
    pthread_t th;
    nb_pair(sv);
    slow_writer w = { sv[1], { "DO", "NE 12", "3\nA", "BC" }, 30 };
    ck_assert_int_eq(pthread_create(&th, NULL, slow_writer_main, &w), 0);
    int n = rh_ipc_read_line(sv[0], line, sizeof(line), 3000);
    ck_assert_int_eq(n, 8);
    ck_assert_str_eq(line, "DONE 123");
    pthread_join(th, NULL);
    char rest[8];
    ck_assert_int_eq(recv(sv[0], rest, sizeof(rest), 0), 3);
    ck_assert_mem_eq(rest, "ABC", 3);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_read_line_limits)
{
    int sv[2];
    char line[8];
    nb_pair(sv);
    /* longer than the buffer, no newline within */
    ck_assert_int_eq(write(sv[1], "0123456789\n", 11), 11);
    ck_assert_int_eq(rh_ipc_read_line(sv[0], line, sizeof(line), 500), -EMSGSIZE);
    close(sv[0]);
    close(sv[1]);

    /* fits: the newline needs a byte of the buffer while it is read, so max
     * bytes hold max - 2 characters (a 510-character reply in RH_IPC_LINE_MAX,
     * which is what the core's out_printf() limits itself to) */
    nb_pair(sv);
    ck_assert_int_eq(write(sv[1], "012345\nX", 8), 8);
    ck_assert_int_eq(rh_ipc_read_line(sv[0], line, sizeof(line), 500), 6);
    ck_assert_str_eq(line, "012345");
    close(sv[0]);
    close(sv[1]);
    char big[RH_IPC_LINE_MAX], in[RH_IPC_LINE_MAX];
    memset(in, 'e', RH_IPC_LINE_MAX - 2);
    in[RH_IPC_LINE_MAX - 2] = '\n';
    nb_pair(sv);
    ck_assert_int_eq(write(sv[1], in, RH_IPC_LINE_MAX - 1), RH_IPC_LINE_MAX - 1);
    ck_assert_int_eq(rh_ipc_read_line(sv[0], big, sizeof(big), 500), RH_IPC_LINE_MAX - 2);
    close(sv[0]);
    close(sv[1]);

    /* the peer goes away before the newline */
    nb_pair(sv);
    ck_assert_int_eq(write(sv[1], "OK 1", 4), 4);
    close(sv[1]);
    long t0 = ms_now();
    ck_assert_int_eq(rh_ipc_read_line(sv[0], line, sizeof(line), 2000), -ECONNRESET);
    ck_assert_int_lt(ms_now() - t0, 1000);
    close(sv[0]);
}
END_TEST

START_TEST(test_timeouts)
{
    int sv[2];
    char buf[64];
    nb_pair(sv);

    long t0 = ms_now();
    ck_assert_int_eq(rh_ipc_read_line(sv[0], buf, sizeof(buf), 200), -ETIMEDOUT);
    long dt = ms_now() - t0;
    ck_assert_msg(dt >= 190 && dt < 1000, "read_line waited %ld ms for 200", dt);

    /* a partial line does not extend the wait */
    ck_assert_int_eq(write(sv[1], "OK", 2), 2);
    t0 = ms_now();
    ck_assert_int_eq(rh_ipc_read_line(sv[0], buf, sizeof(buf), 200), -ETIMEDOUT);
    dt = ms_now() - t0;
    ck_assert_msg(dt >= 190 && dt < 1000, "read_line waited %ld ms for 200", dt);
    close(sv[0]);
    close(sv[1]);
    nb_pair(sv);

    t0 = ms_now();
    ck_assert_int_eq(rh_ipc_read(sv[0], buf, sizeof(buf), 150), -ETIMEDOUT);
    dt = ms_now() - t0;
    ck_assert_msg(dt >= 140 && dt < 1000, "read waited %ld ms for 150", dt);

    t0 = ms_now();
    ck_assert_int_eq(rh_ipc_read(sv[0], buf, sizeof(buf), 0), -ETIMEDOUT);
    ck_assert_int_lt(ms_now() - t0, 100);

    /* data and EOF */
    ck_assert_int_eq(write(sv[1], "abc", 3), 3);
    ck_assert_int_eq(rh_ipc_read(sv[0], buf, sizeof(buf), 1000), 3);
    ck_assert_mem_eq(buf, "abc", 3);
    shutdown(sv[1], SHUT_WR);
    ck_assert_int_eq(rh_ipc_read(sv[0], buf, sizeof(buf), 1000), 0);

    /* write_all into a peer that never reads: fills the buffer, then times out */
    static char big[1 << 16];
    long total = 0;
    int rv;
    t0 = ms_now();
    for (;;) {
        rv = rh_ipc_write_all(sv[0], big, sizeof(big), 150);
        if (rv != 0)
            break;
        total += (long)sizeof(big);
        ck_assert_msg(total < (64L << 20), "the socket buffer never filled");
    }
    dt = ms_now() - t0;
    ck_assert_int_eq(rv, -ETIMEDOUT);
    ck_assert_msg(dt >= 140 && dt < 3000, "write_all took %ld ms", dt);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_write_all_and_peer_gone)
{
    int sv[2];
    nb_pair(sv);
    ck_assert_int_eq(rh_ipc_write_all(sv[0], "hello\n", 6, 500), 0);
    char buf[16];
    ck_assert_int_eq(rh_ipc_read_line(sv[1], buf, sizeof(buf), 500), 5);
    ck_assert_str_eq(buf, "hello");
    ck_assert_int_eq(rh_ipc_write_all(sv[0], "", 0, 500), 0);
    close(sv[1]);
    /* no SIGPIPE (the helpers use MSG_NOSIGNAL), a negative errno instead */
    int rv = rh_ipc_write_all(sv[0], "x", 1, 500);
    ck_assert_int_eq(rv, -EPIPE);
    close(sv[0]);
}
END_TEST

/* A large write is delivered whole while the reader drains slowly. */
typedef struct drain {
    int fd;
    size_t got;
    unsigned sum;
} drain;

static void *drain_main(void *arg)
{
    drain *d = arg;
    unsigned char buf[4096];
    for (;;) {
        ssize_t n = rh_ipc_read(d->fd, buf, sizeof(buf), 3000);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; ++i)
            d->sum = d->sum * 31u + buf[i];
        d->got += (size_t)n;
    }
    return NULL;
}

START_TEST(test_write_all_large)
{
    int sv[2];
    pthread_t th;
    nb_pair(sv);
    size_t len = 3u << 20;
    unsigned char *data = malloc(len);
    unsigned sum = 0;
    for (size_t i = 0; i < len; ++i) {
        data[i] = (unsigned char)(i * 2654435761u >> 13);
        sum = sum * 31u + data[i];
    }
    drain d = { sv[1], 0, 0 };
    ck_assert_int_eq(pthread_create(&th, NULL, drain_main, &d), 0);
    ck_assert_int_eq(rh_ipc_write_all(sv[0], data, len, 2000), 0);
    shutdown(sv[0], SHUT_WR);
    pthread_join(th, NULL);
    ck_assert_uint_eq(d.got, len);
    ck_assert_uint_eq(d.sum, sum);
    free(data);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

START_TEST(test_connect)
{
    char dir[] = "/tmp/rh_ipc_test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/missing.sock", dir);

    long t0 = ms_now();
    int fd = rh_ipc_connect(path, 1000);
    ck_assert_int_eq(fd, -ENOENT);
    ck_assert_int_lt(ms_now() - t0, 500);

    /* a path that does not fit sun_path */
    char longp[300];
    memset(longp, 'p', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    ck_assert_int_eq(rh_ipc_connect(longp, 100), -ENAMETOOLONG);

    /* a listening socket: connected, non-blocking, and it carries bytes */
    snprintf(path, sizeof(path), "%s/core.sock", dir);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(l, 4), 0);
    fd = rh_ipc_connect(path, 1000);
    ck_assert_int_ge(fd, 0);
    ck_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
    struct pollfd p = { l, POLLIN, 0 };
    ck_assert_int_eq(poll(&p, 1, 1000), 1);
    int a = accept(l, NULL, NULL);
    ck_assert_int_ge(a, 0);
    ck_assert_int_eq(rh_ipc_write_all(fd, "STAT\n", 5, 1000), 0);
    char line[16];
    int fl = fcntl(a, F_GETFL);
    fcntl(a, F_SETFL, fl | O_NONBLOCK);
    ck_assert_int_eq(rh_ipc_read_line(a, line, sizeof(line), 1000), 4);
    ck_assert_str_eq(line, "STAT");
    close(a);
    close(fd);

    /* a socket file with nobody listening: refused */
    close(l);
    fd = rh_ipc_connect(path, 500);
    ck_assert_int_eq(fd, -ECONNREFUSED);
    unlink(path);
    rmdir(dir);
}
END_TEST

Suite *ipc_suite(void)
{
    Suite *s = suite_create("ipc");
    TCase *tc = tcase_create("lines");
    tcase_add_test(tc, test_roundtrip_all_ops);
    tcase_add_test(tc, test_parse_fields);
    tcase_add_test(tc, test_open_options);
    tcase_add_test(tc, test_parse_rejects);
    tcase_add_test(tc, test_rendezvous_lines);
    tcase_add_test(tc, test_watch_lines);
    tcase_add_test(tc, test_format_errors);
    tcase_add_test(tc, test_reply_parse);
    suite_add_tcase(s, tc);

    TCase *tio = tcase_create("io");
    tcase_set_timeout(tio, 30);
    tcase_add_test(tio, test_read_line_keeps_rest);
    tcase_add_test(tio, test_read_line_in_pieces);
    tcase_add_test(tio, test_read_line_limits);
    tcase_add_test(tio, test_timeouts);
    tcase_add_test(tio, test_write_all_and_peer_gone);
    tcase_add_test(tio, test_write_all_large);
    tcase_add_test(tio, test_connect);
    suite_add_tcase(s, tio);
    return s;
}
