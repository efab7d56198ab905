#!/usr/bin/python3
"""UDP over the relay (issue 16), measured in one run beside its baseline: a UDP
echo reached directly, and through `relay-https forward -L udp:` (a real apache2
with the module, TLS, HTTP/2 duplex and HTTP/1.1 stream). Two figures each:
- rtt: one 64-byte datagram at a time, round trip (p50, p99 over --pings)
- rate: 1200-byte datagrams with 64 in flight (datagrams/s and MB/s each way)
Ratios are against the direct path of the same run.

    RH_BUILD_DIR=/abs/builddir /usr/bin/python3 bench/udp.py [--pings 2000] [--count 20000]
"""

import argparse
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import harness  # noqa: E402
from test_udp import UdpEcho  # noqa: E402


def rtt(addr, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect(addr)
    msg = b"p" * 64
    s.send(msg)
    s.recv(100)   # the session is open before timing starts
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.send(msg)
        s.recv(100)
        t.append(time.perf_counter() - t0)
    s.close()
    t.sort()
    return t[len(t) // 2] * 1e3, t[int(len(t) * 0.99)] * 1e3


def rate(addr, n, window=64, size=1200):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(10)
    s.connect(addr)
    payload = b"r" * size
    s.send(payload)
    s.recv(65536)
    sent = got = 0
    t0 = time.perf_counter()
    while got < n:
        while sent < n and sent - got < window:
            s.send(payload)
            sent += 1
        try:
            s.recv(65536)
            got += 1
        except socket.timeout:
            break
    dt = time.perf_counter() - t0
    s.close()
    return got / dt, got * size / dt / 1e6, n - got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--count", type=int, default=20000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="rh-udp-bench-")
    harness.make_traversable(root)
    ca, cert, key = harness.make_cert(root)
    echo = UdpEcho()
    tcp_echo = harness.EchoServer()
    ap2 = harness.Apache(os.path.join(root, "apache"), cert, key, mpm="event",
                         module=harness.module_path(),
                         targets={"uecho": "udp:127.0.0.1:%d" % echo.port,
                                  "echo": "127.0.0.1:%d" % tcp_echo.port})
    ap2.prepare()
    ap2.start()
    rows = []
    try:
        rows.append(("direct",) + rtt(("127.0.0.1", echo.port), a.pings)
                    + rate(("127.0.0.1", echo.port), a.count))
        for name, args in (("relay h2 duplex", []),
                           ("relay h1.1 stream", ["--http1.1", "--transport", "stream"])):
            port = harness.free_port()
            fw = harness.Forward(harness.client_path(), ap2.relay_url, "echo", cacert=ca,
                                 verbose=False,
                                 extra_args=["-L", "udp:127.0.0.1:%d:uecho" % port] + args)
            try:
                rows.append((name,) + rtt(("127.0.0.1", port), a.pings)
                            + rate(("127.0.0.1", port), a.count))
            finally:
                fw.stop()
    finally:
        ap2.stop()
        echo.stop()
        tcp_echo.stop()
    base = rows[0]
    print("%-18s %9s %9s %12s %8s %6s %8s" % ("path", "rtt p50", "rtt p99", "datagrams/s",
                                              "MB/s", "lost", "vs direct"))
    for r in rows:
        print("%-18s %7.3fms %7.3fms %12.0f %8.2f %6d %8.2fx"
              % (r[0], r[1], r[2], r[3], r[4], r[5], r[3] / base[3]))


if __name__ == "__main__":
    main()
