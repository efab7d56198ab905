"""UDP over the relay (issue 16): `RelayTarget NAME udp:HOST:PORT` on the server and
`relay-https forward -L udp:[ADDR:]PORT URL NAME` on the client. Each datagram rides
the session's byte stream behind a 2-byte length (docs/PROTOCOL.md, Datagrams), so
every transport, resume and check applies. Here: dig through a UDP forward gets
answers from a real dnsmasq on the target side; 10,000 datagrams of random sizes keep
their boundaries and bytes, with no loss at a moderate rate; a flood beyond the bound
drops datagrams (counted) while a TCP tunnel of the same client keeps moving; a
malformed length and a UDP/TCP mismatch are refused with a clear message."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
import intermediaries as im
from harness import wait_for
from pattern import PatternChecker, pattern_bytes

DNS_NAME, DNS_ADDR = "relay.test", "192.0.2.7"
WILD_ADDR = "198.51.100.9"
STATUS_LOCATION = harness.STATUS_LOCATION


class UdpEcho:
    """A UDP target that sends every datagram back to its sender (or, as a sink,
    only counts them)."""

    def __init__(self, echo=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.count = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.count += 1
            self.handle(data, peer)

    def handle(self, data, peer):
        if self.echo:
            self.sock.sendto(data, peer)

    def stop(self):
        self.stopped = True
        self.thread.join(2)
        self.sock.close()


class UdpBurst(UdpEcho):
    """A UDP target that answers b"burst N SIZE" with N datagrams of SIZE bytes, as
    fast as it can: a flood toward the client."""

    def __init__(self):
        super().__init__(echo=False)
        self.peer = None

    def handle(self, data, peer):
        self.peer = peer
        if not data.startswith(b"burst "):
            return
        n, size = (int(x) for x in data.split()[1:3])
        self.blast(n, size)

    def blast(self, n, size, peer=None):
        """N datagrams of SIZE bytes (a 4-byte number first) to peer (default: the
        last one that spoke)."""
        for i in range(n):
            try:
                self.sock.sendto(i.to_bytes(4, "big") + b"b" * (size - 4), peer or self.peer)
            except OSError:
                pass


class Dnsmasq:
    """dnsmasq on a loopback port, answering only from the records given here."""

    def __init__(self, tmpdir):
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.path.exists(exe):
            pytest.skip("dnsmasq not installed (Debian: dnsmasq-base)")
        self.port = harness.free_port()
        self.proc = subprocess.Popen(
            [exe, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % self.port,
             "--pid-file=%s/dnsmasq.pid" % tmpdir, "--user=root",
             "--host-record=%s,%s" % (DNS_NAME, DNS_ADDR),
             "--address=/wild.test/%s" % WILD_ADDR],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        harness._register(self.proc)

    def stop(self):
        harness.kill_proc(self.proc)


def _udp_target_fixture(name, make):
    """A module fixture named name: a UDP target made by make(), stopped after."""
    @pytest.fixture(scope="module", name=name)
    def fixture():
        e = make()
        yield e
        e.stop()
    return fixture


udp_echo = _udp_target_fixture("udp_echo", UdpEcho)
udp_sink = _udp_target_fixture("udp_sink", lambda: UdpEcho(echo=False))
udp_burst = _udp_target_fixture("udp_burst", UdpBurst)


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory):
    d = Dnsmasq(str(tmp_path_factory.mktemp("dnsmasq")))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def udp_targets(targets, udp_echo, udp_sink, dnsmasq, udp_burst):
    t = dict(targets)
    t.update({"uecho": "udp:127.0.0.1:%d" % udp_echo.port,
              "uburst": "udp:127.0.0.1:%d" % udp_burst.port,
              "usink": "udp:127.0.0.1:%d" % udp_sink.port,
              "dns": "udp:127.0.0.1:%d" % dnsmasq.port})
    return t


@pytest.fixture
def apache(apache_factory, module_so, udp_targets):
    # /uidle: the same echo with the server's UDP idle timeout at 1 s
    idle = ("<Location /uidle>\n    SetHandler relay-https\n    RelayTarget uecho %s\n"
            "    RelayTarget echo %s\n    RelayUDPIdleTimeout 1\n</Location>"
            % (udp_targets["uecho"], udp_targets["echo"]))
    return apache_factory.get("event", module=module_so, targets=udp_targets,
                              extra_conf=STATUS_LOCATION + "\n" + idle)


class UdpForward(harness.Forward):
    """`relay-https forward -L udp:127.0.0.1:PORT[:TARGET] ...`: Forward's process with
    the UDP -L first (Forward's own TCP -L, to its TARGET, comes along as a second
    route, used by the flood test)."""

    def __init__(self, client, url, target, tcp_target, cacert, extra_args=()):
        self.udp_port = harness.free_port()
        super().__init__(client, url, tcp_target, cacert=cacert, env=im.clean_env(),
                         extra_args=["-L", "udp:127.0.0.1:%d:%s" % (self.udp_port, target)]
                         + list(extra_args))
        assert wait_for(lambda: sum("listening on" in l for l in self.lines()) >= 2, 10), \
            self.stderr_text()


def _udp_forward(client_bin, apache, tls, target, *args):
    return UdpForward(client_bin, apache.relay_url, target, "echo", tls["ca"], args)


def _dig(port, name, qtype="A"):
    dig = shutil.which("dig")
    if not dig:
        pytest.skip("dig not installed (Debian: bind9-dnsutils)")
    r = subprocess.run([dig, "@127.0.0.1", "-p", str(port), name, qtype, "+short",
                        "+tries=1", "+time=10"], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip(), r.stderr


def _stats_json(path):
    with open(path) as f:
        return json.load(f)


def _udp_route(path):
    """The -L udp: route's figures in a --stats-json file."""
    return [r for r in _stats_json(path)["routes"] if r["name"].startswith("udp:")][0]


def _status(apache):
    r = harness.curl(apache.base_url + "/relay-status?json", method="GET")
    assert r.status == 200, r
    return json.loads(r.body)


def test_dig_through_udp_forward(apache, client_bin, tls, dnsmasq):
    """dig asks a real dnsmasq on the target side through the relay: the records set
    here come back, over several queries (each dig a new source port: a session each),
    and the server's status counts the datagrams."""
    before = _status(apache)["udp"]
    with _udp_forward(client_bin, apache, tls, "dns") as fw:
        for name, want in ((DNS_NAME, DNS_ADDR), ("a.wild.test", WILD_ADDR),
                           ("b.wild.test", WILD_ADDR)):
            rc, out, err = _dig(fw.udp_port, name)
            assert rc == 0 and out == want, (name, rc, out, err, fw.stderr_text())
        rc, out, err = _dig(fw.udp_port, DNS_NAME, "TXT")
        assert rc == 0 and out == "", (rc, out, err)   # NOERROR, no TXT record: an answer
    # the core publishes its figures once a second
    assert wait_for(lambda: _status(apache)["udp"]["sessions"] >= before["sessions"] + 4
                    and _status(apache)["udp"]["datagramsDown"] >= before["datagramsDown"] + 4,
                    5), (before, _status(apache)["udp"])


def _exchange(sock, n, window, sizes, rnd):
    """Sends n datagrams of random sizes (a sequence number, then pattern bytes),
    at most window unanswered; checks every echo whole. Returns (lost, bad)."""
    lost, bad, got = 0, [], {}
    seq = 0
    sock.settimeout(20)   # a loaded machine is slow, not lossy: a loss costs 20 s
    while seq < n:
        batch = range(seq, min(seq + window, n))
        for i in batch:
            size = sizes[i]
            sock.send(i.to_bytes(4, "big") + pattern_bytes(i * 2048 + 4, i * 2048 + size))
        want = set(batch)
        while want:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            i = int.from_bytes(data[:4], "big")
            if i not in want:
                bad.append("datagram %d came twice or unasked" % i)
                continue
            want.discard(i)
            got[i] = len(data)
            if len(data) != sizes[i]:
                bad.append("datagram %d: %d bytes, sent %d" % (i, len(data), sizes[i]))
                continue
            chk = PatternChecker(start=i * 2048 + 4)
            chk.feed(data[4:])
            if not chk.ok:
                bad.append("datagram %d: %s" % (i, chk.error))
        lost += len(want)
        seq += len(batch)
    return lost, bad


def test_ten_thousand_datagrams_keep_boundaries(apache, client_bin, tls, udp_echo, tmp_path):
    """10,000 datagrams of random sizes (4..1400 bytes) to a UDP echo target and back:
    each arrives whole, alone and unchanged (its size and its pattern bytes), none is
    lost at a moderate rate (64 in flight), and the client counts each both ways."""
    rnd = random.Random(16)
    n = 10000
    sizes = [rnd.randint(4, 1400) for _ in range(n)]
    stats = str(tmp_path / "stats.json")
    with _udp_forward(client_bin, apache, tls, "uecho", "--stats-json", stats) as fw:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.connect(("127.0.0.1", fw.udp_port))
        lost, bad = _exchange(s, n, 64, sizes, rnd)
        s.close()
        fw.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: _udp_route(stats)["datagrams"]["down"] >= n - lost,
                        5), _stats_json(stats)
        dg = _udp_route(stats)["datagrams"]
    print("10000 datagrams: lost %d, client counted %s" % (lost, dg))
    assert not bad, bad[:10]
    assert lost == 0, "lost %d of %d datagrams (client counted %s)" % (lost, n, dg)
    assert dg["up"] == n and dg["down"] == n, dg
    assert dg["dropped_up"] == 0 and dg["dropped_down"] == 0, dg


def test_sources_get_sessions_of_their_own(apache, client_bin, tls, udp_echo):
    """Three sources at once: each hears only its own datagrams; with --udp-flows 2 the
    third ends the least recent one's session, and that source gets a new one when it
    speaks again."""
    with _udp_forward(client_bin, apache, tls, "uecho", "--udp-flows", "2") as fw:
        socks = []
        for k in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(10)
            s.connect(("127.0.0.1", fw.udp_port))
            socks.append(s)
        for rnd in range(3):
            for k, s in enumerate(socks):
                msg = b"source %d round %d" % (k, rnd)
                s.send(msg)
                assert s.recv(2048) == msg, (k, rnd, fw.stderr_text())
        assert any("ending the least recent" in l for l in fw.lines()), fw.stderr_text()
        for s in socks:
            s.close()


def test_flood_drops_oldest_tcp_keeps_moving(apache_factory, module_so, udp_targets,
                                             client_bin, tls, udp_sink, tmp_path):
    """A flood of datagrams far beyond what a rate-limited session carries: the client
    drops the oldest (counted in its statistics), and meanwhile a TCP tunnel of the
    same client echoes 64 KiB in 16 rounds, every round intact, while the flood is
    still going."""
    a = apache_factory.get("event", module=module_so, targets=udp_targets,
                           extra_conf="RelayRateLimit 256K")
    stats = str(tmp_path / "stats.json")
    with UdpForward(client_bin, a.relay_url, "usink", "echo", tls["ca"],
                    ["--udp-queue", "32", "--stats-json", stats, "--stats", "0.5"]) as fw:
        stop = threading.Event()
        sent = [0]

        def flood():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", fw.udp_port))
            payload = b"f" * 1200
            while not stop.is_set():
                try:
                    s.send(payload)
                    sent[0] += 1
                except OSError:
                    time.sleep(0.001)
                if sent[0] % 64 == 0:
                    time.sleep(0.0005)   # the loop must stay runnable on 2 cores
            s.close()

        th = threading.Thread(target=flood, daemon=True)
        th.start()
        try:
            assert wait_for(lambda: sent[0] > 20000, 20), sent
            c = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
            for rnd in range(16):
                chunk = pattern_bytes(rnd * 4096, rnd * 4096 + 4096)
                c.sendall(chunk)
                got = b""
                while len(got) < len(chunk):
                    data = c.recv(65536)
                    assert data, "TCP tunnel closed in round %d" % rnd
                    got += data
                assert got == chunk, "TCP round %d came back different" % rnd
                assert th.is_alive()
            c.close()
            flooding = not stop.is_set() and th.is_alive()
        finally:
            stop.set()
            th.join(5)
        assert flooding
        fw.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: _udp_route(stats)["datagrams"]["dropped_up"] > 0,
                        5), _stats_json(stats)
        route = _udp_route(stats)
    dg = route["datagrams"]
    print("flood: sent %d datagrams, client counted %s, the sink got %d"
          % (sent[0], dg, udp_sink.count))
    assert dg["up"] > 0 and dg["dropped_up"] > 0, dg
    assert udp_sink.count > 0


def _burst_while_core_stopped(a, fw, udp_burst, n, size):
    """The target sends n datagrams of size bytes at once while every relay core
    is stopped (as a busy or descheduled core would be, or one whose session got
    a cut's backlog in one push, every datagram answered at once): they wait in
    the core's UDP receive buffer, or the kernel drops them. Returns (numbers the
    client delivered, in order; the status page's droppedDown grown by)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(10)
    s.connect(("127.0.0.1", fw.udp_port))
    s.send(b"burst 1 8")            # the session, and the target knows its peer
    assert s.recv(65536)[:4] == b"\0\0\0\0", fw.stderr_text()
    before = _status(a)["udp"]["droppedDown"]
    cores = list(a.core_pids().values())
    assert cores
    for pid in cores:
        os.kill(pid, signal.SIGSTOP)
    try:
        udp_burst.blast(n, size)
    finally:
        for pid in cores:
            os.kill(pid, signal.SIGCONT)
    got = []
    s.settimeout(3)
    try:
        while len(got) < n:
            got.append(int.from_bytes(s.recv(65536)[:4], "big"))
    except socket.timeout:
        pass
    s.close()
    # the status page's udp figures come once a second
    wait_for(lambda: len(got) + _status(a)["udp"]["droppedDown"] - before >= n, 3)
    return got, _status(a)["udp"]["droppedDown"] - before


def test_core_buffer_holds_a_burst_and_counts_what_it_drops(apache_factory, module_so,
                                                             udp_targets, client_bin, tls,
                                                             udp_burst):
    """A burst from the target while the relay core cannot read (stopped): the
    core's UDP socket holds 400 datagrams of 700 bytes (RH_UDP_RCVBUF; the
    kernel's default of 208 KiB held 92: a cut's backlog, sent on at once and
    echoed, lost its tail so in the fault soak); of 3,000 of 1,000 bytes, what
    the kernel dropped is counted in droppedDown even though no datagram came
    after the drops (SO_RXQ_OVFL reports drops only on a later datagram: it
    counted none of them)."""
    a = apache_factory.get("event", module=module_so, targets=udp_targets,
                           extra_conf=STATUS_LOCATION + "\nRelayUDPQueue 4096")
    with UdpForward(client_bin, a.relay_url, "uburst", "echo", tls["ca"]) as fw:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        got, dropped = _burst_while_core_stopped(a, fw, udp_burst, 400, 700)
        print("burst of 400 x 700 B: the client got %d, the server dropped %d (rmem_max %d)"
              % (len(got), dropped, rmem_max))
        assert got == sorted(got), got[:20]
        assert len(got) + dropped == 400, (len(got), dropped)
        if rmem_max >= 1 << 20:     # else the kernel caps the buffer (net.core.rmem_max)
            assert len(got) == 400, (len(got), dropped)
        got, dropped = _burst_while_core_stopped(a, fw, udp_burst, 3000, 1000)
        print("burst of 3000 x 1000 B: the client got %d, the server dropped %d"
              % (len(got), dropped))
        assert got == sorted(got), got[:20]
        assert dropped > 0 and len(got) + dropped == 3000, (len(got), dropped)


def test_malformed_length_is_refused(apache, client_bin, tls):
    """A stream that is not datagrams (stdio with the header set by hand): a length
    above 65507 resets the session with a message that says so."""
    out, err, rc = _stdio(client_bin, apache, tls, b"\xff\xf0" + b"x" * 100)
    assert rc != 0, (rc, err)
    assert wait_for(lambda: "malformed datagram length 65520 (at most 65507)"
                    in apache.error_log_text(), 5), apache.error_log_tail(20)
    # the reason reaches the client on its open pull, or, when the reset beats the
    # pull, on the 410 of its first request after it (Relay-Reason: reset)
    assert "malformed datagram length 65520" in err, err
    assert "no longer knows this session" not in err, err


def _stdio(client_bin, apache, tls, payload):
    p = subprocess.run([client_bin, "stdio", "--cacert", tls["ca"], "-H",
                        "Relay-Datagram: len16", apache.relay_url, "uecho"],
                       input=payload, capture_output=True, timeout=30, env=im.clean_env())
    return p.stdout, p.stderr.decode("utf-8", "replace"), p.returncode


def test_udp_tcp_mismatch_is_a_clear_error(apache, client_bin, tls):
    """-L udp: to a TCP target, and a TCP -L to a udp: target: the start check fails
    with a message naming the fix, and nothing listens."""
    port = harness.free_port()
    p = subprocess.run([client_bin, "forward", "-L", "udp:127.0.0.1:%d" % port, "--cacert",
                        tls["ca"], apache.relay_url, "echo"], capture_output=True, text=True,
                       timeout=30, env=im.clean_env())
    assert p.returncode != 0 and "is not UDP" in p.stderr, (p.returncode, p.stderr)
    p = subprocess.run([client_bin, "forward", "-L", "127.0.0.1:%d" % port, "--cacert",
                        tls["ca"], apache.relay_url, "dns"], capture_output=True, text=True,
                       timeout=30, env=im.clean_env())
    assert p.returncode != 0 and "-L udp:" in p.stderr, (p.returncode, p.stderr)


def test_relayallow_udp_ports(apache_factory, module_so, udp_targets, udp_echo, tls):
    """RelayAllow's udp/ ports: a destination open of datagrams (Relay-Datagram) passes
    only where a rule lists udp/PORT; the same port without udp/ lets TCP through and
    not UDP, and udp/ lets no TCP through."""
    conf = "\n".join([
        "<Location /px>", "    SetHandler relay-https",
        "    RelayAllow 127.0.0.1 udp/%d" % udp_echo.port,
        "    RelayAllow 127.0.0.2 %d" % udp_echo.port,
        "</Location>"])
    a = apache_factory.get("event", module=module_so, targets=udp_targets, extra_conf=conf)

    def open_(host, datagram):
        hdrs = ["Relay-Destination: %s:%d" % (host, udp_echo.port)]
        if datagram:
            hdrs.append("Relay-Datagram: len16")
        return harness.curl(a.base_url + "/px/*/open", headers=hdrs, cacert=tls["ca"])

    r = open_("127.0.0.1", True)
    assert r.status == 201, r
    harness.curl(a.base_url + "/px/*/close", cacert=tls["ca"],
                 headers=["Relay-Session: %s" % r.header("Relay-Session")])
    r = open_("127.0.0.1", False)
    assert r.status == 403 and r.header("Relay-Reason") == "destination", r
    r = open_("127.0.0.2", True)
    assert r.status == 403 and r.header("Relay-Reason") == "destination", r


@pytest.mark.parametrize("side", ["client", "server"])
def test_idle_sessions_end_cleanly(apache, client_bin, tls, side):
    """A source silent for the idle timeout loses its session, cleanly: the client's
    --udp-idle 1 ends the up side (FIN), or the server's RelayUDPIdleTimeout 1 ends
    the down side (F); either way the session closes without a reset, and the
    source's next datagram opens a new one."""
    url = apache.relay_url if side == "client" else apache.base_url + "/uidle"
    args = ["--udp-idle", "1"] if side == "client" else []
    with UdpForward(client_bin, url, "uecho", "echo", tls["ca"], args) as fw:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect(("127.0.0.1", fw.udp_port))
        s.send(b"first")
        assert s.recv(100) == b"first"
        assert wait_for(lambda: any("closed cleanly" in l for l in fw.lines()), 10), \
            fw.stderr_text()
        if side == "server":
            assert any("server finished" in l for l in fw.lines()), fw.stderr_text()
        s.send(b"second")
        assert s.recv(100) == b"second"
        s.close()
        opened = [l for l in fw.lines() if "udp#" in l and " opened" in l]
        assert len(opened) == 2, fw.stderr_text()


def test_server_drops_oldest_toward_a_slow_client(apache_factory, module_so, udp_targets,
                                                   client_bin, tls):
    """The target floods the client faster than the rate-limited session carries:
    the core's queue (RelayUDPQueue 32) drops the oldest, the status page counts
    them (udp.droppedDown), and the newest datagrams still arrive."""
    a = apache_factory.get("event", module=module_so, targets=udp_targets,
                           extra_conf="RelayRateLimit 256K\nRelayUDPQueue 32\n"
                           + STATUS_LOCATION)
    before = _status(a)["udp"]["droppedDown"]
    with UdpForward(client_bin, a.relay_url, "uburst", "echo", tls["ca"]) as fw:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(10)
        s.connect(("127.0.0.1", fw.udp_port))
        s.send(b"burst 20000 1200")
        got = []
        assert wait_for(lambda: _status(a)["udp"]["droppedDown"] > before, 20), \
            _status(a)["udp"]
        s.settimeout(3)
        try:
            while True:
                got.append(int.from_bytes(s.recv(65536)[:4], "big"))
        except socket.timeout:
            pass
        s.close()
    dropped = _status(a)["udp"]["droppedDown"] - before
    print("burst of 20000: the client got %d, the server dropped %d" % (len(got), dropped))
    assert got and got == sorted(got), got[:20]   # what arrives keeps its order
    # every datagram is accounted for: delivered, or dropped and counted (the
    # queue's drops and the kernel's, SO_MEMINFO), but for a few in flight
    assert len(got) + dropped >= 19000, (len(got), dropped)
