"""The relay as a proxy (issue 16, TCP): `relay-https proxy` serves SOCKS5 and
HTTP CONNECT on one port, and Apache's RelayAllow decides what is reachable.

Real curl (socks5h://, socks5://, -p -x http://), real squid in front of
Apache, the fault proxy, and real ssh with netcat-openbsd's SOCKS5 ProxyCommand.
Small web servers listen on 127.0.0.2 and 127.0.0.3 (listed by address) and
on 127.0.0.1 ("localhost"). Names other than localhost resolve through an
/etc/hosts of the test's own, bind-mounted over the real one in a mount
namespace that only apache2 (and so the relay core, which resolves) runs in:
no DNS server, and the machine's files stay as they are. Where a mount
namespace cannot be made, the tests by those names are skipped and the
localhost ones still run.

Refusals are checked three ways: the client's error (SOCKS5 reply 2, HTTP
403 with the server's reason), the target's own count of connections (none),
and the server's log line.
"""

import base64
import http.server
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

import harness
import intermediaries as im
import sshd as sshmod
from faultproxy import FaultProxy
from pattern import pump_pattern, summarize

NC = "/bin/nc"
LOCAL_USER, LOCAL_PASS = "pxuser", "px-S3cret"
REFUSED_LOG_RE = re.compile(r"RH2050: destination (\S+) refused: (.*)")


class Web:
    """A tiny HTTP server on addr that says where it is, and counts the
    connections it accepted (a refused destination must show none)."""

    def __init__(self, addr, port=0):
        outer = self
        self.accepted = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("web at %s\n" % addr).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            daemon_threads = True

            def get_request(self):
                req = super().get_request()
                outer.accepted += 1
                return req

        self.srv = Server((addr, port), Handler)
        self.addr = addr
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def mount_ns_works():
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def env(tmp_path_factory, tls, module_so, client_bin):
    """The web servers, an echo server, and an Apache whose /proxy location
    lists them; apache2 runs in a mount namespace with our /etc/hosts when it
    can."""
    root = str(tmp_path_factory.mktemp("proxy"))
    harness.make_traversable(root)
    w2, w3 = Web("127.0.0.2"), Web("127.0.0.3")
    w1 = Web("127.0.0.1")                     # localhost
    w9 = Web("127.0.0.9")                     # web9.test: listed name, address not
    lo = Web("127.0.0.1")                     # only under 0.0.0.0/0: loopback refused
    w6 = Web("::1") if ipv6_loopback() else None
    echo = harness.EchoServer()
    with socket.socket() as d:                # listed, but nothing listens there
        d.bind(("127.0.0.2", 0))
        dead = d.getsockname()[1]
    named = mount_ns_works()
    hosts = os.path.join(root, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
                "127.0.0.2 web2.test\n127.0.0.3 web3.test\n127.0.0.9 web9.test\n")
    os.chmod(hosts, 0o644)
    allow = [
        "RelayAllow web2.test %d" % w2.port,
        "RelayAllow *.test %d" % w3.port,              # web3.test by the glob
        "RelayAllow 127.0.0.2 %d" % w2.port,
        "RelayAllow 127.0.0.3/32 %d" % w3.port,
        "RelayAllow localhost %d" % w1.port,
        "RelayAllow 127.0.0.1 %d,%d" % (w1.port, echo.port),
        "RelayAllow web9.test %d" % w9.port,
        "RelayAllow 0.0.0.0/0 %d" % lo.port,
        "RelayAllow 127.0.0.2 %d" % dead,
    ]
    if w6:
        allow.append("RelayAllow ::1 %d" % w6.port)
    conf = ("<Location /proxy>\n    SetHandler relay-https\n    RelayConnectTimeout 5\n    "
            + "\n    ".join(allow) + "\n</Location>\n" + harness.STATUS_LOCATION)
    wrap = (["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts]
            if named else None)
    a = harness.Apache(os.path.join(root, "apache"), tls["cert"], tls["key"], mpm="event",
                       module=module_so, extra_conf=conf, wrap=wrap)
    a.prepare()
    a.start()
    e = dict(apache=a, dead=dead, w1=w1, w2=w2, w3=w3, w9=w9, lo=lo, w6=w6, echo=echo, named=named,
             root=root, url=a.base_url + "/proxy", ca=tls["ca"])
    yield e
    a.stop()
    for w in (w1, w2, w3, w9, lo, w6):
        if w:
            w.stop()
    echo.stop()


class Proxy:
    """relay-https proxy on a free loopback port."""

    def __init__(self, env, *extra, url=None):
        self.port = harness.free_port()
        self.log = os.path.join(env["root"], "proxy-%d.log" % self.port)
        self.proc = subprocess.Popen(
            [harness.client_path(), "proxy", "-v", "-L", str(self.port), "--cacert", env["ca"]]
            + list(extra) + [url or env["url"]],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        harness._register(self.proc)
        ok = harness.wait_for(self._listening, 15)
        assert ok, "proxy did not listen:\n" + self.text()

    def _listening(self):
        assert self.proc.poll() is None, "proxy exited:\n" + self.text()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        harness.kill_proc(self.proc)


@pytest.fixture
def proxy(env):
    p = Proxy(env)
    yield p
    p.stop()


def curl(*args):
    r = subprocess.run([harness.CURL, "-sS", "-m", "15"] + list(args), capture_output=True,
                       text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def socks_connect(port, host, dport, auth=None):
    """A SOCKS5 CONNECT by hand (domain address type): the socket after a
    success reply, or the reply code."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(b"\x05\x01" + (b"\x02" if auth else b"\x00"))
    assert s.recv(2) == b"\x05" + (b"\x02" if auth else b"\x00")
    if auth:
        u, p = auth[0].encode(), auth[1].encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        assert s.recv(2) == b"\x01\x00"
    h = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + struct.pack(">H", dport))
    rep = b""
    while len(rep) < 10:
        chunk = s.recv(10 - len(rep))
        if not chunk:
            break
        rep += chunk
    if len(rep) < 2 or rep[1] != 0:
        s.close()
        return rep[1] if len(rep) >= 2 else -1
    return s


def refused_count(apache):
    """The status page's count of refused destinations."""
    r = harness.curl(apache.base_url + "/relay-status?json", method="GET")
    return json.loads(r.body)["refused"]["destination"]


def refused_lines(apache):
    return REFUSED_LOG_RE.findall(apache.error_log_text())


# ---------------------------------------------------------------------------

def test_curl_socks5h_and_connect_reach_listed_servers_by_name_and_address(env, proxy):
    """Two web servers on 127.0.0.2 and 127.0.0.3, by name and by address, and
    localhost, through socks5h:// (the relay resolves), socks5:// (curl sends
    the address) and HTTP CONNECT."""
    w1, w2, w3 = env["w1"], env["w2"], env["w3"]
    targets = [("127.0.0.2", w2), ("127.0.0.3", w3), ("localhost", w1)]
    if env["named"]:
        targets += [("web2.test", w2), ("web3.test", w3)]
    socks = "socks5h://127.0.0.1:%d" % proxy.port
    for host, w in targets:
        url = "http://%s:%d/" % (host, w.port)
        hows = [["-x", socks], ["-p", "-x", "http://127.0.0.1:%d" % proxy.port]]
        if not host.endswith(".test"):     # socks5:// resolves here, where .test does not
            hows.append(["-x", "socks5://127.0.0.1:%d" % proxy.port])
        for how in hows:
            rc, out, err = curl(*(how + [url]))
            assert rc == 0 and out == "web at %s\n" % w.addr, (how, url, rc, out, err,
                                                               proxy.text()[-2000:])
    if not env["named"]:
        pytest.skip("no mount namespace here: web2.test and web3.test were not tried")


def test_ipv6_destination(env, proxy):
    """An IPv6 address (SOCKS5 address type 4; [::1]:PORT in HTTP CONNECT)."""
    w6 = env["w6"]
    if not w6:
        pytest.skip("no IPv6 loopback here")
    for how in (["-x", "socks5://127.0.0.1:%d" % proxy.port],
                ["-p", "-x", "http://127.0.0.1:%d" % proxy.port]):
        rc, out, err = curl(*(how + ["-g", "http://[::1]:%d/" % w6.port]))
        assert rc == 0 and out == "web at ::1\n", (how, rc, out, err)


REFUSALS = [
    # (what, host, server key or port, why in the server's reason)
    ("non-listed host", "127.0.0.4", "w2", "no RelayAllow lists it"),
    ("non-listed name", "other.example", "w2", "no RelayAllow lists this name"),
    ("listed name, non-listed address", "web9.test", "w9", "resolves to 127.0.0.9"),
    ("loopback under 0.0.0.0/0", "127.0.0.1", "lo", "loopback address"),
    ("listed name resolving to loopback on another port", "localhost", "lo", "no RelayAllow"),
]


@pytest.mark.parametrize("what,host,key,why", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_destinations(env, proxy, what, host, key, why):
    """Refused with a clear error on both protocols, nothing connected, a log
    line on the server each time."""
    if host.endswith(".test") and not env["named"]:
        pytest.skip("no mount namespace here: %s does not resolve" % host)
    w = env[key]
    a = env["apache"]
    before_log = len(refused_lines(a))
    before_count = refused_count(a)
    before_conns = w.accepted
    dest = "%s:%d" % (host, w.port)
    # SOCKS5: reply 2, "connection not allowed by ruleset"
    code = socks_connect(proxy.port, host, w.port)
    assert code == 2, (what, code, proxy.text()[-1500:])
    rc, out, err = curl("-x", "socks5h://127.0.0.1:%d" % proxy.port, "http://%s/" % dest)
    assert rc == 97 and "(2)" in err, (what, rc, err)
    # HTTP CONNECT: 403, the server's reason in the body, Proxy-Status
    text = http_connect(proxy.port, dest)
    assert text.startswith("HTTP/1.1 403 "), (what, text)
    assert "Proxy-Status: relay-https; error=destination_ip_prohibited" in text, text
    assert "destination %s refused" % dest in text and why in text, (what, text)
    # nothing reached the target; each refusal was logged
    time.sleep(0.3)
    assert w.accepted == before_conns, "%s: the target saw %d connection(s)" % (
        what, w.accepted - before_conns)
    lines = refused_lines(a)[before_log:]
    assert len(lines) >= 3 and all(d == dest for d, _ in lines), (what, lines)
    assert why in lines[0][1], (what, lines)
    assert refused_count(a) - before_count == len(lines), (what, refused_count(a), lines)


def http_connect(port, dest, extra=""):
    """A CONNECT by hand: the proxy's whole answer (it closes after a refusal)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (dest, dest, extra)).encode())
    answer = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    s.close()
    return answer.decode(errors="replace")


def test_listed_destination_that_refuses(env, proxy):
    """A listed address where nothing listens: SOCKS5 reply 5 (connection
    refused), HTTP 502 with Proxy-Status connection_refused."""
    dest = "127.0.0.2:%d" % env["dead"]
    assert socks_connect(proxy.port, "127.0.0.2", env["dead"]) == 5
    text = http_connect(proxy.port, dest)
    assert text.startswith("HTTP/1.1 502 ") and "error=connection_refused" in text, text


def test_configtest_refuses_malformed_relayallow(env):
    a = env["apache"]
    bad = [("RelayAllow * 80", "'*' would let clients reach any name"),
           ("RelayAllow 10.1.2.3/8 22", "has address bits set past /8"),
           ("RelayAllow example.com 0-10", "is not a port list"),
           ("RelayAllow 127.1 22", "neither a host name")]
    for line, msg in bad:
        conf = a.config_text().replace("    SetHandler relay-https\n    RelayConnectTimeout 5",
                                       "    SetHandler relay-https\n    " + line, 1)
        path = os.path.join(env["root"], "bad.conf")
        with open(path, "w") as f:
            f.write(conf)
        r = a.configtest(path)
        assert r.returncode != 0 and msg in r.stdout, (line, r.stdout[-800:])


def test_local_login(env):
    """--local-user: SOCKS5 username/password and HTTP Basic; wrong or none refused."""
    p = Proxy(env, "--local-user", "%s:%s" % (LOCAL_USER, LOCAL_PASS))
    try:
        w2 = env["w2"]
        url = "http://127.0.0.2:%d/" % w2.port
        rc, out, err = curl("-x", "socks5h://%s:%s@127.0.0.1:%d" % (LOCAL_USER, LOCAL_PASS,
                                                                   p.port), url)
        assert rc == 0 and out.startswith("web at"), (rc, err)
        rc, out, err = curl("-x", "socks5h://%s:wrong@127.0.0.1:%d" % (LOCAL_USER, p.port), url)
        assert rc != 0, out
        rc, out, err = curl("-x", "socks5h://127.0.0.1:%d" % p.port, url)
        assert rc != 0, out
        rc, out, err = curl("-p", "-x", "http://127.0.0.1:%d" % p.port, "-U",
                            "%s:%s" % (LOCAL_USER, LOCAL_PASS), url)
        assert rc == 0 and out.startswith("web at"), (rc, err)
        rc, out, err = curl("-v", "-p", "-x", "http://127.0.0.1:%d" % p.port, url)
        assert rc != 0 and "407" in err, err
        with open("/proc/%d/cmdline" % p.proc.pid, "rb") as f:
            assert LOCAL_PASS.encode() not in f.read()
    finally:
        p.stop()


def test_handshake_timeout_and_other_protocols(env):
    p = Proxy(env, "--handshake-timeout", "0.5")
    try:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
        t0 = time.monotonic()
        assert s.recv(100) == b""          # closed, silent client
        assert time.monotonic() - t0 < 10, "a silent client was kept %.1f s" % (
            time.monotonic() - t0)     # 0.5 s asked; loaded machines are slow
        s.close()
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.sendall(b"GET http://127.0.0.2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 405 ")
        s.close()
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.sendall(b"\x04\x01\x00\x50\x7f\x00\x00\x02\x00")   # SOCKS4
        assert s.recv(8)[:2] == b"\x00\x5b"
        s.close()
    finally:
        p.stop()


def pattern_through(env, proxy_port, nbytes, timeout=90, rate=None):
    def connect():
        s = socks_connect(proxy_port, "127.0.0.1", env["echo"].port)
        assert not isinstance(s, int), "SOCKS5 reply %r" % s
        return s
    return pump_pattern("127.0.0.1", 0, nbytes, timeout=timeout, connect=connect, rate=rate)


def test_pattern_through_squid(env, tmp_path):
    """The client reaches Apache through squid (CONNECT); 4 MB through SOCKS5 intact."""
    a = env["apache"]
    sq = im.Squid(str(tmp_path / "squid"), connect_ports=[a.port])
    try:
        sq.start()
    except Exception as e:   # squid missing: say so rather than pass quietly
        pytest.skip("squid: %s" % e)
    try:
        p = Proxy(env, "-x", sq.url)
        try:
            res = pattern_through(env, p.port, 4 * 1024 * 1024)
            assert res["first_bad_offset"] is None and res["received"] == 4 * 1024 * 1024, \
                summarize(res)
        finally:
            p.stop()
        # squid logs a CONNECT when its tunnel ends
        assert harness.wait_for(lambda: any("CONNECT" in line for line in sq.access_lines()),
                                10), "squid saw no CONNECT"
    finally:
        sq.stop()


def test_pattern_through_fault_proxy(env):
    """Connections to Apache cut, reset and stalled at random: 3 MB at 1 MB/s
    through SOCKS5 intact (paced, so that the faults land mid-transfer)."""
    a = env["apache"]
    fp = FaultProxy(a.port, mode="mix", seed=1616, min_life=0.3, max_life=1.2)
    try:
        url = "https://127.0.0.1:%d/proxy" % fp.port
        p = Proxy(env, url=url)
        try:
            res = pattern_through(env, p.port, 3 * 1024 * 1024, timeout=120, rate=1 << 20)
            assert res["first_bad_offset"] is None and res["received"] == 3 * 1024 * 1024, \
                summarize(res) + "\n" + fp.describe()
            print(fp.describe())
            assert fp.stats()["faults"] > 0, "no fault was injected: " + fp.describe()
        finally:
            p.stop()
    finally:
        fp.stop()


@pytest.mark.skipif(sshmod.missing() is not None or not os.access(NC, os.X_OK),
                    reason=sshmod.missing() or "netcat-openbsd (nc -X 5) is missing")
def test_ssh_with_nc_socks_proxycommand(env, tmp_path):
    """ssh -o ProxyCommand='nc -X 5 -x 127.0.0.1:PORT %h %p' reaches a real sshd."""
    sd = sshmod.Sshd(str(tmp_path / "sshd")).start()
    a = env["apache"]
    extra = "<Location /ssh>\n    SetHandler relay-https\n    RelayAllow 127.0.0.1 %d\n" \
            "</Location>\n" % sd.port
    b = harness.Apache(str(tmp_path / "apache"), a.cert, a.key, mpm="event",
                       module=harness.module_path(), extra_conf=extra)
    b.prepare()
    b.start()
    try:
        p = Proxy(env, url=b.base_url + "/ssh")
        try:
            cmd = [sshmod.SSH] + sd.ssh_options(port=sd.port) + [
                "-o", "ProxyCommand=%s -X 5 -x 127.0.0.1:%d %%h %%p" % (NC, p.port),
                "%s@127.0.0.1" % sd.user, "echo relayed-$((6*7))"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip() == "relayed-42", (r.stderr,
                                                                           p.text()[-1500:])
        finally:
            p.stop()
    finally:
        b.stop()
        sd.stop()
