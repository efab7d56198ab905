/* Datagrams in a byte stream (proto/rh_dgram.c): the drop-oldest queue, and the
 * link over real sockets: boundaries kept across partial reads, the order kept,
 * a length above RH_DGRAM_MAX refused. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_allow.h"
#include "rh_dgram.h"
#include "rh_ipc.h"
#include "tests.h"

START_TEST(test_queue_drops_oldest)
{
    rh_dgq q;
    rh_dgq_init(&q, 3, 0);
    for (unsigned char i = 0; i < 5; ++i)
        rh_dgq_push(&q, &i, 1, 0);
    ck_assert_uint_eq(q.n, 3);
    ck_assert_uint_eq(q.dropped, 2);
    ck_assert_uint_eq(q.head->data[0], 2);   /* 0 and 1 went */
    ck_assert_uint_eq(q.tail->data[0], 4);
    rh_dgq_clear(&q);
    ck_assert_uint_eq(q.n, 0);
    ck_assert_uint_eq(q.bytes, 0);
}
END_TEST

START_TEST(test_queue_keeps_half_written_head)
{
    rh_dgq q;
    rh_dgq_init(&q, 2, 0);
    unsigned char a = 'a', b = 'b', c = 'c';
    rh_dgq_push(&q, &a, 1, 1);
    q.head_off = 1;   /* its length header went out: the head must stay */
    rh_dgq_push(&q, &b, 1, 1);
    rh_dgq_push(&q, &c, 1, 1);
    ck_assert_uint_eq(q.n, 2);
    ck_assert_uint_eq(q.dropped, 1);
    ck_assert_uint_eq(q.head->data[2], 'a');
    ck_assert_uint_eq(q.tail->data[2], 'c');
    ck_assert_uint_eq(q.head->len, RH_DGRAM_HDR + 1);
    rh_dgq_clear(&q);
}
END_TEST

START_TEST(test_queue_byte_bound)
{
    rh_dgq q;
    unsigned char big[100];
    memset(big, 7, sizeof(big));
    rh_dgq_init(&q, 100, 250);
    for (int i = 0; i < 4; ++i)
        rh_dgq_push(&q, big, sizeof(big), 0);
    ck_assert_uint_eq(q.n, 2);
    ck_assert_uint_le(q.bytes, 250);
    ck_assert_uint_eq(rh_dgq_push(&q, big, 300, 0), 3);   /* never fits: all go, itself too */
    ck_assert_uint_eq(q.n, 0);
    rh_dgq_clear(&q);
}
END_TEST

/* Datagrams framed into a stream socket come out of a UDP pair whole. */
START_TEST(test_link_keeps_boundaries)
{
    int st[2], ud[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, st), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, ud), 0);
    rh_dglink a, b;
    rh_dglink_init(&a, 64, 0);
    rh_dglink_init(&b, 64, 0);
    unsigned char d[1400];
    for (int i = 0; i < 20; ++i) {
        memset(d, i, sizeof(d));
        rh_dglink_from_net(&a, d, (size_t)(i * 70));   /* 0 .. 1330 bytes, empty included */
    }
    ck_assert_int_eq(rh_dglink_to_stream(&a, st[0]), RH_DGL_OK);
    ck_assert_ptr_null(a.to_stream.head);
    ck_assert_int_eq(rh_dglink_from_stream(&b, st[1], ud[0], NULL, 0), RH_DGL_OK);
    ck_assert_uint_eq(b.from_stream, 20);
    for (int i = 0; i < 20; ++i) {
        unsigned char got[2000];
        ssize_t n = recv(ud[1], got, sizeof(got), MSG_DONTWAIT);
        ck_assert_int_eq(n, i * 70);
        for (ssize_t k = 0; k < n; ++k)
            ck_assert_uint_eq(got[k], (unsigned)i);
    }
    close(st[0]);
    ck_assert_int_eq(rh_dglink_from_stream(&b, st[1], ud[0], NULL, 0), RH_DGL_EOF);
    rh_dglink_free(&a);
    rh_dglink_free(&b);
    close(st[1]);
    close(ud[0]);
    close(ud[1]);
}
END_TEST

/* A datagram split across reads waits for its tail; a length of 65508 is refused. */
START_TEST(test_link_partial_and_malformed)
{
    int st[2], ud[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, st), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, ud), 0);
    rh_dglink b;
    rh_dglink_init(&b, 8, 0);
    unsigned char part[] = { 0, 5, 'h', 'e' };
    ck_assert_int_eq(write(st[0], part, sizeof(part)), (ssize_t)sizeof(part));
    ck_assert_int_eq(rh_dglink_from_stream(&b, st[1], ud[0], NULL, 0), RH_DGL_OK);
    ck_assert_uint_eq(b.from_stream, 0);
    ck_assert_int_eq(write(st[0], "llo", 3), 3);
    ck_assert_int_eq(rh_dglink_from_stream(&b, st[1], ud[0], NULL, 0), RH_DGL_OK);
    ck_assert_uint_eq(b.from_stream, 1);
    char got[16];
    ck_assert_int_eq(recv(ud[1], got, sizeof(got), MSG_DONTWAIT), 5);
    ck_assert_int_eq(memcmp(got, "hello", 5), 0);
    unsigned char bad[] = { 0xff, 0xe4 };   /* 65508 = RH_DGRAM_MAX + 1 */
    ck_assert_int_eq(write(st[0], bad, 2), 2);
    ck_assert_int_eq(rh_dglink_from_stream(&b, st[1], ud[0], NULL, 0), RH_DGL_BAD);
    ck_assert_uint_eq(b.bad_len, RH_DGRAM_MAX + 1);
    rh_dglink_free(&b);
    close(st[0]);
    close(st[1]);
    close(ud[0]);
    close(ud[1]);
}
END_TEST

/* RelayAllow's udp/ ports: UDP only where written so, TCP never through them. */
START_TEST(test_allow_udp_ports)
{
    rh_allow_rule r;
    char err[256];
    ck_assert_int_eq(rh_allow_parse(&r, "dns.example.com", "53,udp/53,udp/5000-5010,tcp/22",
                                    err, sizeof(err)), 0);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 53), 1);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 53 | RH_ALLOW_UDP), 1);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 5005 | RH_ALLOW_UDP), 1);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 5005), 0);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 22), 1);
    ck_assert_int_eq(rh_allow_name(&r, 1, "dns.example.com", 22 | RH_ALLOW_UDP), 0);
    ck_assert_int_eq(rh_allow_parse(&r, "192.0.2.0/24", "udp/53", err, sizeof(err)), 0);
    rh_addr a;
    const char *why;
    ck_assert_int_eq(rh_addr_parse("192.0.2.9", &a), 0);
    ck_assert_int_eq(rh_allow_addr(&r, 1, &a, 53 | RH_ALLOW_UDP, 0, &why), 0);
    ck_assert_int_eq(rh_allow_addr(&r, 1, &a, 53, 0, &why), -1);
    const char *bad[] = { "udp/", "udp/0", "udp/70000", "udp/5-3", "quic/53", "udp/53," };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        ck_assert_msg(rh_allow_parse(&r, "example.com", bad[i], err, sizeof(err)) == -1,
                      "accepted ports %s", bad[i]);
}
END_TEST

/* OPEN's udp=IDLE_S,QUEUE: parsed, formatted back the same, nonsense refused. */
START_TEST(test_ipc_open_udp)
{
    rh_ipc_req rq;
    char buf[RH_IPC_LINE_MAX];
    const char *line = "OPEN dns 127.0.0.1 53 4096 60 5 resume=65536 check=crc32c client=abc "
                       "owner=00000000000000ff udp=30,16";
    ck_assert_int_eq(rh_ipc_parse_req(line, &rq), 0);
    ck_assert_int_eq(rq.udp, 1);
    ck_assert_uint_eq(rq.udp_idle_s, 30);
    ck_assert_uint_eq(rq.udp_queue, 16);
    ck_assert_uint_eq(rq.port, 53);
    ck_assert_int_gt(rh_ipc_format_req(buf, sizeof(buf), &rq), 0);
    ck_assert_str_eq(buf, "OPEN dns 127.0.0.1 53 4096 60 5 resume=65536 check=crc32c "
                          "client=abc owner=00000000000000ff udp=30,16\n");
    const char *bad[] = {
        "OPEN dns 127.0.0.1 53 4096 60 5 udp=0,16", "OPEN dns 127.0.0.1 53 4096 60 5 udp=30",
        "OPEN dns 127.0.0.1 53 4096 60 5 udp=30,0", "OPEN dns 127.0.0.1 53 4096 60 5 udp=,5",
        "OPEN dns 127.0.0.1 53 4096 60 5 udp=30,16 udp=30,16",
        "OPEN dns 127.0.0.1 53 4096 60 5 udp=99999999999999999,1",
        "LISTEN svc 4096 60 25 udp=30,16",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        ck_assert_msg(rh_ipc_parse_req(bad[i], &rq) != 0, "accepted: %s", bad[i]);
}
END_TEST

Suite *dgram_suite(void)
{
    Suite *s = suite_create("dgram");
    TCase *tc = tcase_create("dgram");
    tcase_add_test(tc, test_queue_drops_oldest);
    tcase_add_test(tc, test_queue_keeps_half_written_head);
    tcase_add_test(tc, test_queue_byte_bound);
    tcase_add_test(tc, test_link_keeps_boundaries);
    tcase_add_test(tc, test_link_partial_and_malformed);
    tcase_add_test(tc, test_allow_udp_ports);
    tcase_add_test(tc, test_ipc_open_udp);
    suite_add_tcase(s, tc);
    return s;
}
