"""What the client shows of a running forward (issue 14, item 6): -v lines carry a
timestamp and name the proxy in use (through a real squid, its password masked);
SIGUSR1 prints a statistics block (tunnels, routes, total) whose byte counts match
what went through, and whose resumes count the requests taken up again through a
proxy that cuts every connection; --stats prints route lines periodically;
--stats-json rewrites a JSON file atomically (never partial while a transfer runs)
with exact counts after it."""

import json
import os
import subprocess
import re
import signal
import socket
import threading
import time

import pytest

import harness
import intermediaries as im
from chaos import ChaosProxy
from harness import Forward, wait_for

MB = 1024 * 1024
PROXY_USER, PROXY_PASS = "statsuser", "stats-S3cret"
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} relay-https: ")
TUNNEL = re.compile(r"stats: tunnel (?P<label>#\d+ \S+): route (?P<route>\S+), "
                    r"session (?P<sid>\S+), (?P<xp>[^,]+(?:, pull \w+)?), age [\d.]+ s, "
                    r"up (?P<up>\d+) B \([^)]*\) at [^,]+, down (?P<down>\d+) B \([^)]*\) "
                    r"at .*, resumes (?P<resumes>\d+)$")
COUNTERS = (r"tunnels (?P<open>\d+) open, (?P<total>\d+) total, (?P<failed>\d+) failed, "
            r"(?P<lost>\d+) lost; up (?P<up>\d+) B \([^)]*\) at [^,]+, down (?P<down>\d+) B "
            r"\([^)]*\) at [^;]+; resumes (?P<resumes>\d+); sessions duplex (?P<duplex>\d+), "
            r"stream (?P<stream>\d+), batch (?P<batch>\d+)")
ROUTE = re.compile(r"stats: route (?P<name>\S+) \((?P<url>\S+) (?P<target>\S+)\): " + COUNTERS)
TOTAL = re.compile(r"stats: total: " + COUNTERS + r"; uptime \d+ s, rates over [\d.]+ s$")


@pytest.fixture(scope="module")
def apache(apache_factory, module_so, targets):
    return apache_factory.get("event", module=module_so, targets=targets)


@pytest.fixture(scope="module")
def squid_auth(tmp_path_factory, apache):
    d = str(tmp_path_factory.mktemp("stats-squid"))
    harness.make_traversable(d)
    s = im.Squid(os.path.join(d, "squid"), connect_ports=[apache.port],
                 auth=(PROXY_USER, PROXY_PASS))
    s.start()
    yield s
    s.stop()


def _forward(client_bin, apache, tls, *args, env=None, verbose=True):
    return Forward(client_bin, apache.relay_url, "echo", cacert=tls["ca"], verbose=verbose,
                   extra_args=list(args), env=env if env is not None else im.clean_env())


def _ints(m):
    return {k: int(v) for k, v in m.groupdict().items() if v is not None and v.isdigit()}


def _block(fw):
    """SIGUSR1, then the block it prints: (tunnel lines, route lines, total line), parsed."""
    start = len(fw.lines())
    fw.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: any(TOTAL.search(l) for l in fw.lines()[start:]), 10), \
        "no 'stats: total:' line after SIGUSR1:\n" + "\n".join(fw.lines()[start:])
    lines = fw.lines()[start:]
    end = next(i for i, l in enumerate(lines) if TOTAL.search(l))
    block = [l for l in lines[:end + 1] if "stats: " in l]
    tunnels = [TUNNEL.search(l) for l in block if "stats: tunnel " in l]
    routes = [ROUTE.search(l) for l in block if "stats: route " in l]
    assert all(tunnels) and all(routes), "unparsed stats lines:\n" + "\n".join(block)
    return tunnels, routes, TOTAL.search(lines[end])


class Echo:
    """One connection through the forward to the echo target: sends at a set rate while
    a thread reads the echo back; both counts are readable while it runs."""

    def __init__(self, port, size, rate):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.size, self.rate = size, rate
        self.sent = self.received = 0
        self.payload = os.urandom(size)
        self.got = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.writer.start()

    def _write(self):
        start = time.monotonic()
        while self.sent < self.size:
            if self.sent > self.rate * (time.monotonic() - start):
                time.sleep(0.01)
                continue
            self.sock.sendall(self.payload[self.sent:self.sent + 32768])
            self.sent = min(self.size, self.sent + 32768)

    def _read(self):
        while self.received < self.size:
            b = self.sock.recv(262144)
            if not b:
                break
            self.got += b
            self.received += len(b)

    def finish(self, timeout=60):
        self.writer.join(timeout)
        self.reader.join(timeout)
        assert self.received == self.size and bytes(self.got) == self.payload, \
            "echo: sent %d, received %d of %d" % (self.sent, self.received, self.size)

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------------------
# -v: timestamps, the proxy in use
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(90)
def test_verbose_timestamps_and_proxy_masked(apache, squid_auth, client_bin, tls):
    """-x with user:password in the URL: -v names the proxy with the password masked,
    every line starts with a timestamp, and the tunnel goes through squid."""
    proxy = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASS, squid_auth.port)
    n_log = len(squid_auth.access_lines())
    with _forward(client_bin, apache, tls, "-x", proxy) as fw:
        e = Echo(fw.port, 256 * 1024, 10 * MB)
        e.finish()
        e.close()
        assert wait_for(lambda: any("closed cleanly" in l for l in fw.lines()), 15), \
            fw.stderr_text()
        lines = fw.lines()
    text = "\n".join(lines)
    assert PROXY_PASS not in text, "the -v output shows the proxy password"
    said = [l for l in lines if "proxy: " in l]
    assert said and said[0].endswith("proxy: http://%s:***@127.0.0.1:%d (from -x)"
                                     % (PROXY_USER, squid_auth.port)), text
    assert all(STAMP.match(l) for l in lines), \
        "lines without a timestamp:\n" + "\n".join(l for l in lines if not STAMP.match(l))
    stamps = [l[:23] for l in lines]
    assert stamps == sorted(stamps), "timestamps go back:\n" + text
    # squid logs a CONNECT when its tunnel ends: the forward has just closed them
    ok = lambda: [l for l in squid_auth.access_lines()[n_log:]
                  if " CONNECT 127.0.0.1:%d %s " % (apache.port, PROXY_USER) in l]
    assert wait_for(ok, 10), "squid saw no authenticated CONNECT:\n" + squid_auth.describe()


@pytest.mark.rh_timeout(60)
@pytest.mark.parametrize("env,says", [
    ({"https_proxy": "http://u:pw@127.0.0.1:9"}, "proxy: http://u:***@127.0.0.1:9 (from https_proxy)"),
    ({"HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "localhost,127.0.0.0/8"},
     "proxy: none (no_proxy matches 127.0.0.1)"),
    ({}, "proxy: none (no -x; no https_proxy, HTTPS_PROXY, all_proxy or ALL_PROXY set)"),
], ids=["https_proxy", "no_proxy", "none"])
def test_verbose_names_proxy_source(apache, client_bin, tls, env, says):
    """The proxy line comes before the start check; with the dead proxy of the
    first case that check fails (exit 3, "cannot reach the proxy")."""
    cmd = [client_bin, "forward", "-L", "127.0.0.1:0", "--cacert", tls["ca"], "-v",
           "https://127.0.0.1:%d/relay" % apache.port, "echo"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         env=im.clean_env(**env), text=True)
    try:
        if "https_proxy" in env:
            _, err = p.communicate(timeout=20)
            assert p.returncode == 3, err
            assert "cannot reach the proxy" in err, err
        else:
            time.sleep(1.5)
            assert p.poll() is None, p.stderr.read()
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=20)
            assert "listening on" in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    said = [l for l in err.splitlines() if "proxy: " in l]
    assert said and said[0].endswith(says), err
    assert "pw" not in err


@pytest.mark.rh_timeout(60)
def test_no_timestamps_without_verbose(apache, client_bin, tls):
    """Without -v the lines stay as they were ("relay-https: ..."), and SIGUSR1 still
    answers (statistics are not verbosity)."""
    with _forward(client_bin, apache, tls, verbose=False) as fw:
        tunnels, routes, total = _block(fw)
        lines = fw.lines()
        assert fw.proc.poll() is None, "SIGUSR1 stopped the forward"
    assert lines[0].startswith("relay-https: listening on "), lines
    assert not any(STAMP.match(l) for l in lines), lines
    assert not tunnels and len(routes) == 1
    assert _ints(total)["total"] == 0


# ---------------------------------------------------------------------------
# SIGUSR1
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(120)
def test_sigusr1_block_counts_bytes(apache, client_bin, tls):
    size = 4 * MB
    with _forward(client_bin, apache, tls) as fw:
        e = Echo(fw.port, size, 2 * MB)           # about 2 s: the signal lands inside
        assert wait_for(lambda: e.received > 256 * 1024, 30), fw.stderr_text()
        got_before, sent_before = e.received, e.sent
        tunnels, routes, total = _block(fw)
        sent_after = e.sent
        assert len(tunnels) == 1 and len(routes) == 1, (tunnels, routes)
        t = _ints(tunnels[0])
        # down: written to our socket, so at least what we had read, at most the lot;
        # up: confirmed by the server, so never more than we had sent
        assert got_before <= t["down"] <= size, (t, got_before)
        assert t["up"] <= sent_after, (t, sent_before, sent_after)
        assert tunnels[0].group("xp") in ("duplex", "stream", "batch") or \
            tunnels[0].group("xp").startswith("push "), tunnels[0].group(0)
        assert routes[0].group("name") == "127.0.0.1:%d" % fw.port
        assert routes[0].group("url") == apache.relay_url and routes[0].group("target") == "echo"
        r = _ints(routes[0])
        assert r["open"] == 1 and r["total"] == 1 and r["failed"] == 0
        assert r["up"] == t["up"] and r["down"] == t["down"]
        assert r["duplex"] + r["stream"] + r["batch"] == 1, r

        e.finish()
        # every byte came back; the server's confirmations of the last up bytes may
        # trail the echo by a round trip
        def exact():
            tunnels, routes, total = _block(fw)
            return tunnels and _ints(tunnels[0])["up"] == size and \
                _ints(tunnels[0])["down"] == size and (tunnels, routes, total)
        got = None
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = exact()
            time.sleep(0.2)
        assert got, "after the transfer the counts are not exact:\n" + fw.stderr_text()
        tunnels, routes, total = got
        print("SIGUSR1 after the transfer:\n" + "\n".join(m.string for m in tunnels + routes + [total]))
        assert _ints(routes[0])["up"] == _ints(total)["up"] == size
        assert _ints(routes[0])["down"] == _ints(total)["down"] == size
        e.close()
        assert wait_for(lambda: any("closed cleanly" in l for l in fw.lines()), 15)
        tunnels, routes, total = _block(fw)
        assert not tunnels
        tot = _ints(total)
        assert (tot["open"], tot["total"], tot["failed"], tot["lost"]) == (0, 1, 0, 0), tot
        assert tot["up"] == tot["down"] == size
        assert fw.proc.poll() is None, "SIGUSR1 stopped the forward"


# ---------------------------------------------------------------------------
# --stats, --stats-json
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(120)
def test_stats_json_atomic_and_exact(apache, client_bin, tls, tmp_path):
    path = str(tmp_path / "stats.json")
    size = 3 * MB
    with _forward(client_bin, apache, tls, "--stats", "0.2", "--stats-json", path) as fw:
        assert wait_for(lambda: os.path.exists(path), 5), "no --stats-json file at the start"
        e = Echo(fw.port, size, 2 * MB)
        reads, bad, seen = 0, [], []
        while e.reader.is_alive():
            try:
                with open(path) as f:
                    text = f.read()
            except FileNotFoundError:
                bad.append("missing")
                continue
            reads += 1
            try:
                doc = json.loads(text)
            except ValueError as x:
                bad.append("%s: %r" % (x, text[-200:]))
                continue
            if doc["tunnels"]:
                seen.append((doc["tunnels"][0]["bytes_up"], doc["tunnels"][0]["bytes_down"]))
        e.finish()
        assert not bad, "%d of %d reads were not a whole JSON document: %s" % (
            len(bad), reads, bad[:3])
        assert len(set(seen)) >= 3, "the file was not rewritten during the transfer: %s" % seen
        assert seen == sorted(seen), "counts went back: %s" % seen
        assert all(u <= size and d <= size for u, d in seen)

        def exact():
            with open(path) as f:
                doc = json.load(f)
            return doc if doc["tunnels"] and doc["tunnels"][0]["bytes_up"] == size and \
                doc["tunnels"][0]["bytes_down"] == size else None
        assert wait_for(exact, 10), open(path).read()
        doc = exact()
        print("--stats-json after the transfer:\n" + json.dumps(doc, indent=1))
        e.close()
        assert wait_for(lambda: json.load(open(path))["total"]["tunnels_open"] == 0, 15), \
            open(path).read()
        end = json.load(open(path))
        lines = fw.lines()

    assert doc["version"] == 1 and doc["pid"] == fw.proc.pid
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$", doc["time"])
    assert abs(doc["time_ms"] / 1000.0 - time.time()) < 60
    assert doc["uptime_s"] > 0 and 0 < doc["interval_s"] < 5
    t = doc["tunnels"][0]
    assert t["route"] == "127.0.0.1:%d" % fw.port and re.match(r"#1 127\.0\.0\.1:\d+$", t["label"])
    assert t["transport_up"] in ("duplex", "stream", "batch") and t["session"]
    assert t["resumes"] == 0 and t["age_s"] > 0
    (r,) = doc["routes"]
    assert (r["name"], r["url"], r["target"], r["proxy"]) == \
        ("127.0.0.1:%d" % fw.port, apache.relay_url, "echo", None)
    assert r["bytes_up"] == r["bytes_down"] == size and r["tunnels_open"] == 1
    assert sum(r["sessions"].values()) == 1
    assert doc["total"]["bytes_up"] == size
    assert end["tunnels"] == [] and end["total"]["tunnels_total"] == 1
    assert end["total"]["bytes_down"] == size and end["total"]["tunnels_failed"] == 0
    # --stats: route and total lines, no tunnel lines (those are for SIGUSR1)
    assert sum(1 for l in lines if ROUTE.search(l)) >= 3, "\n".join(lines[-20:])
    assert not any("stats: tunnel " in l for l in lines)
    assert not any(n.startswith("stats.json.tmp") for n in os.listdir(str(tmp_path)))


# ---------------------------------------------------------------------------
# resumes, through a proxy that cuts every connection
# ---------------------------------------------------------------------------

RESUMED = ("resuming", "trying again on a new connection", "going on from offset",
           "sending it again")


@pytest.mark.rh_timeout(150)
def test_resumes_counted_through_cuts(apache, client_bin, tls):
    """Every connection cut after 0.5 to 3 s: the tunnel's and the route's resumes count
    the requests taken up again (as many as -v told, open retries aside), and the
    bytes are still exact."""
    size = 20 * MB
    with ChaosProxy(apache.port, seed=14) as chaos:
        url = "https://127.0.0.1:%d/relay" % chaos.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"], env=im.clean_env(),
                     extra_args=["--transport", "stream", "--http1.1"]) as fw:
            e = Echo(fw.port, size, 4 * MB)
            e.finish(timeout=120)

            def settled():
                tunnels, routes, total = _block(fw)
                t = _ints(tunnels[0])
                return t["up"] == size and t["down"] == size and (tunnels, routes, total)
            got = wait_for(settled, 15, interval=0.3)
            assert got, fw.stderr_text()
            tunnels, routes, total = got
            told = [l for l in fw.lines() if any(m in l for m in RESUMED) and ": open: " not in l]
            e.close()
        cuts = chaos.stats()["cuts"]
    t, r = _ints(tunnels[0]), _ints(routes[0])
    print("%d cuts; resumes %d; -v told %d" % (cuts, t["resumes"], len(told)))
    assert cuts >= 2, "the proxy cut nothing: the test proves nothing"
    assert t["resumes"] >= 1 and t["resumes"] == r["resumes"] == len(told), \
        (t, r, "\n".join(told))
    assert r["lost"] == 0 and r["failed"] == 0 and r["stream"] == 1, r
