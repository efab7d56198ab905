"""SOCKS5 UDP ASSOCIATE in `relay-https proxy` (issue 16): a SOCKS5 client (written
here: no standard command line tool does UDP ASSOCIATE) gets a UDP relay address,
and each destination its datagrams name becomes a datagram session to the server's
BASE/*/open, let through only where a RelayAllow lists udp/PORT. Here: datagrams of
random sizes to a UDP echo come back whole with the destination's header, a DNS
query reaches a real dnsmasq, a destination listed for TCP only is refused (a log
line, nothing reaches it), and the association ends with its control connection."""

import os
import random
import socket
import struct
import subprocess

import pytest

import harness
from harness import wait_for
from pattern import PatternChecker, pattern_bytes
from test_udp import DNS_ADDR, DNS_NAME, Dnsmasq, UdpEcho


@pytest.fixture(scope="module")
def env(tmp_path_factory, tls, module_so, client_bin):
    root = str(tmp_path_factory.mktemp("sudp"))
    harness.make_traversable(root)
    echo, sink = UdpEcho(), UdpEcho(echo=False)
    dns = Dnsmasq(root)
    conf = "\n".join([
        "<Location /px>", "    SetHandler relay-https",
        "    RelayAllow 127.0.0.1 udp/%d,udp/%d,%d" % (echo.port, dns.port, sink.port),
        "</Location>"])
    a = harness.Apache(os.path.join(root, "apache"), tls["cert"], tls["key"], mpm="event",
                       module=module_so, extra_conf=conf)
    a.prepare()
    a.start()
    port = harness.free_port()
    log = os.path.join(root, "proxy.log")
    proc = subprocess.Popen([client_bin, "proxy", "-v", "-L", str(port), "--cacert", tls["ca"],
                             a.base_url + "/px"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    harness._register(proc)

    def listening():
        assert proc.poll() is None, open(log).read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    assert wait_for(listening, 15), open(log).read()
    yield dict(apache=a, port=port, echo=echo, sink=sink, dns=dns, log=log)
    harness.kill_proc(proc)
    a.stop()
    dns.stop()
    echo.stop()
    sink.stop()


def associate(port):
    """SOCKS5 UDP ASSOCIATE: (control socket, UDP socket, relay address)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"\x05\x01\x00")
    assert c.recv(2) == b"\x05\x00"
    c.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")   # DST 0.0.0.0:0
    rep = b""
    while len(rep) < 10:
        chunk = c.recv(10 - len(rep))
        assert chunk, "no reply to UDP ASSOCIATE"
        rep += chunk
    assert rep[:4] == b"\x05\x00\x00\x01", rep
    relay = (socket.inet_ntoa(rep[4:8]), struct.unpack(">H", rep[8:10])[0])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.settimeout(10)
    return c, u, relay


def header(port):
    return b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", port)


def test_datagrams_through_associate(env):
    """300 datagrams of random sizes to the UDP echo through one association: each
    comes back whole, with the echo's address in its header."""
    c, u, relay = associate(env["port"])
    hdr = header(env["echo"].port)
    rnd = random.Random(5)
    bad = []
    try:
        for i in range(300):
            size = rnd.randint(4, 1400)
            u.sendto(hdr + i.to_bytes(4, "big") + pattern_bytes(i * 2048 + 4, i * 2048 + size),
                     relay)
            data = u.recv(65536)
            if data[:len(hdr)] != hdr:
                bad.append("datagram %d: header %r" % (i, data[:10]))
                continue
            body = data[len(hdr):]
            chk = PatternChecker(start=i * 2048 + 4)
            chk.feed(body[4:])
            if len(body) != size or body[:4] != i.to_bytes(4, "big") or not chk.ok:
                bad.append("datagram %d: %d bytes (sent %d)" % (i, len(body), size))
    finally:
        u.close()
        c.close()
    assert not bad, bad[:10]


def dns_query(name, qid=0x4242):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


def test_dns_through_associate(env):
    """A DNS query by hand to a real dnsmasq through the association: its A record
    comes back."""
    c, u, relay = associate(env["port"])
    try:
        u.sendto(header(env["dns"].port) + dns_query(DNS_NAME), relay)
        data = u.recv(65536)[10:]
    finally:
        u.close()
        c.close()
    qid, flags, qd, an = struct.unpack(">HHHH", data[:8])
    assert qid == 0x4242 and an >= 1 and flags & 0x000f == 0, data
    assert socket.inet_ntoa(data[-4:]) == DNS_ADDR, data


def test_tcp_only_destination_refused(env):
    """A destination RelayAllow lists without udp/: the open is refused (403, a log
    line naming it), nothing reaches the target, and the client counts the
    datagram it could not carry."""
    a = env["apache"]
    mark = len(a.error_log_text())
    before = env["sink"].count
    c, u, relay = associate(env["port"])
    try:
        u.sendto(header(env["sink"].port) + b"not for you", relay)
        assert wait_for(lambda: "127.0.0.1:%d refused" % env["sink"].port
                        in a.error_log_text()[mark:], 10), a.error_log_tail(20)
    finally:
        u.close()
        c.close()
    assert env["sink"].count == before


def test_association_ends_with_its_control_connection(env):
    """Closing the control connection ends the association: its session closes on
    the server and the relay address carries nothing more."""
    a = env["apache"]
    c, u, relay = associate(env["port"])
    hdr = header(env["echo"].port)
    u.sendto(hdr + b"ping", relay)
    assert u.recv(65536) == hdr + b"ping"
    mark = len(a.error_log_text())
    c.close()
    assert wait_for(lambda: "closed" in a.error_log_text()[mark:], 10), a.error_log_tail(20)
    u.settimeout(1.5)
    u.sendto(hdr + b"again", relay)
    with pytest.raises(OSError):   # a timeout, or refused: the port is gone
        u.recv(65536)
    u.close()
