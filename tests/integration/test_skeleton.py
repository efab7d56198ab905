"""Acceptance tests of the walking skeleton: a real apache2 (prefork, worker, event)
with mod_relay_https under /relay, the relay-https client, and a TCP echo backend."""

import concurrent.futures
import os
import re
import struct
import time

import pytest

import harness
from harness import assert_sessions_closed, curl, pump, run_stdio, Forward

MB = 1024 * 1024
TOKEN_RE = re.compile(r"^[0-9a-f]{48}$")


def frame(kind, payload=b""):
    return kind + struct.pack(">I", len(payload))[1:] + payload


def parse_frames(body):
    """[(type, payload)]; raises on a truncated or oversized frame."""
    out, i = [], 0
    while i < len(body):
        assert i + 4 <= len(body), "truncated frame header at %d: %r" % (i, body[i:])
        t = body[i:i + 1]
        n = int.from_bytes(body[i + 1:i + 4], "big")
        assert n <= 65536, "frame %r of %d bytes" % (t, n)
        assert i + 4 + n <= len(body), "truncated frame %r at %d" % (t, i)
        out.append((t, body[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def open_session(url, target="echo", **kw):
    r = curl("%s/%s/open" % (url, target), **kw)
    assert r.status == 201, r
    token = r.header("Relay-Session")
    assert token and TOKEN_RE.match(token), r
    return token, r


# ---------------------------------------------------------------------------
# The website keeps serving
# ---------------------------------------------------------------------------

def _check_static(apache, tls):
    """GET / over TLS, verified against the test CA (python ssl, HTTP/1.1)."""
    st, _, body = harness.https_get(apache.port, "/", cafile=tls["ca"])
    assert st == 200 and body.decode() == harness.STATIC_BODY, (st, body[:200])


def _curl_static(apache, tls, path="/"):
    p = harness.subprocess.run(
        [harness.CURL, "-sS", "--http2", "--cacert", tls["ca"], "-o", "/dev/null",
         "-w", "%{http_code} %{http_version}", apache.base_url + path],
        capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p
    return p.stdout.split()


def test_static_page_plain_apache(apache_factory, mpm, tls):
    """The harness itself: a plain apache2 (no module) serves the page over TLS (+h2)."""
    a = apache_factory.get(mpm)
    code, ver = _curl_static(a, tls)
    assert code == "200"
    # mod_http2 declines prefork (advisory warning); worker and event speak h2.
    assert ver == ("1.1" if mpm == "prefork" else "2"), ver
    _check_static(a, tls)


def test_static_page_next_to_module(relay_apache, mpm, tls):
    a = relay_apache
    code, ver = _curl_static(a, tls, "/index.html")
    assert code == "200"
    assert ver == ("1.1" if mpm == "prefork" else "2"), ver
    _check_static(a, tls)
    # The base itself answers a one-line probe page.
    r = curl(a.relay_url + "/", method="GET")
    assert r.status == 200, r
    assert r.body.decode().strip() == "mod_relay_https: relay endpoint", r


# ---------------------------------------------------------------------------
# Data through the tunnel
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(240)
def test_forward_20mb_each_way(relay_apache, mpm, client_bin, tls, echo_server):
    a = relay_apache
    mark = a.error_log_mark()
    finished_before = echo_server.finished
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=20 * MB, timeout=150)
        assert res["error"] is None, (res, fw.stderr_text())
        assert res["received"] == res["sent"] == 20 * MB, (res, fw.stderr_text())
        assert res["recv_sha"] == res["sent_sha"], res
        # the session ends by itself (F both ways), without stopping the client
        opened = assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        assert fw.proc.poll() is None, "forward exited: %s" % fw.stderr_text()
    assert len(opened) == 1, opened
    assert harness.wait_for(lambda: echo_server.finished > finished_before, 10), \
        "the echo backend never saw the half-close (shutdown) of the session"
    print("%s: 20 MB each way in %.2f s" % (mpm, res["elapsed"]))


@pytest.mark.rh_timeout(180)
@pytest.mark.parametrize("mpm", ["worker", "event"])  # mod_http2 does not run under prefork
def test_forward_over_http2(relay_apache, mpm, client_bin, tls):
    """The client's --http2: sessions multiplexed as HTTP/2 streams."""
    a = relay_apache
    mark = a.error_log_mark()
    log_start = len(a.relay_log_entries())
    n, size = 10, 1 * MB
    payloads = [os.urandom(size) for _ in range(n)]
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--http2"]) as fw:
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
            results = list(ex.map(
                lambda p: pump("127.0.0.1", fw.port, payload=p, timeout=120), payloads))
        bad = [(i, r) for i, r in enumerate(results)
               if r["error"] or r["recv_sha"] != r["sent_sha"] or r["received"] != size]
        assert not bad, "%d of %d sessions failed, e.g. %s\nforward stderr:\n%s" % (
            len(bad), n, bad[:3], fw.stderr_text())
        opened = assert_sessions_closed(a, mark, timeout=20, min_opened=n)
    # open + duplex (auto picks duplex on HTTP/2), or open + push + pull
    assert harness.wait_for(
        lambda: sum(1 for e in a.relay_log_entries()[log_start:] if e[1] in opened) >= 2 * n, 10)
    protos = set(e[2].rsplit(" ", 1)[-1] for e in a.relay_log_entries()[log_start:]
                 if e[1] in opened)
    assert protos == {"HTTP/2.0"}, "requests were not all HTTP/2: %s" % protos


@pytest.mark.rh_timeout(120)
def test_prefork_session_requests_span_processes(apache_factory, module_so, targets,
                                                 client_bin, tls):
    a = apache_factory.get("prefork", module=module_so, targets=targets, keepalive=False,
                           prefork_children=8)
    assert len(a.pids()) >= 9, "prefork should run a parent and >= 8 children: %s" % a.pids()
    # KeepAlive Off: every response closes its connection.
    r = curl(a.base_url + "/", method="GET")
    conn = [x.strip() for x in (r.header("Connection") or "").lower().split(",")]
    assert r.status == 200 and "close" in conn, r

    mark = a.error_log_mark()
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        for _ in range(4):
            res = pump("127.0.0.1", fw.port, nbytes=512 * 1024, timeout=60)
            assert res["error"] is None and res["recv_sha"] == res["sent_sha"], \
                (res, fw.stderr_text())
        opened = assert_sessions_closed(a, mark, timeout=15, min_opened=4)

    def spans():
        by_session = {}
        for pid, note, req, status in a.relay_log_entries():
            if note in opened:
                by_session.setdefault(note, []).append((pid, req, status))
        if len(by_session) < len(opened) or any(len(v) < 3 for v in by_session.values()):
            return None
        return by_session
    by_session = harness.wait_for(spans, 15, interval=0.2)
    assert by_session, ("access log (%s) lacks open/push/pull lines for sessions %s:\n%s"
                        % (a.relay_log, opened, harness._read(a.relay_log)[-3000:]))
    multi = {s: sorted(set(p for p, _, _ in v)) for s, v in by_session.items()}
    assert any(len(p) > 1 for p in multi.values()), \
        "no session was served by more than one process: %s" % multi
    for s, v in by_session.items():
        reqs = " ".join(r for _, r, _ in v)
        assert "/relay/echo/open" in reqs and "/relay/echo/push" in reqs \
            and "/relay/echo/pull" in reqs, (s, v)


@pytest.mark.rh_timeout(180)
def test_50_concurrent_sessions(relay_apache, mpm, client_bin, tls):
    a = relay_apache
    mark = a.error_log_mark()
    n, size = 50, 200 * 1024
    payloads = [os.urandom(size) for _ in range(n)]
    # auto: under a prefork burst (100 long requests, 8 children to start with)
    # its probe may take a queued request for a buffering intermediary and fall
    # back; with resume that costs speed, never a byte
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
            results = list(ex.map(
                lambda p: pump("127.0.0.1", fw.port, payload=p, timeout=120), payloads))
        bad = [(i, r) for i, r in enumerate(results)
               if r["error"] or r["recv_sha"] != r["sent_sha"] or r["received"] != size]
        assert not bad, "%d of %d sessions failed, e.g. %s\nforward stderr:\n%s" % (
            len(bad), n, bad[:3], fw.stderr_text())
        opened = assert_sessions_closed(a, mark, timeout=20, min_opened=n)
    assert len(set(opened)) == n, "expected %d distinct sessions, log shows %d" % (
        n, len(set(opened)))


@pytest.mark.rh_timeout(120)
def test_stdio_5mb_each_way(relay_apache, mpm, client_bin, tls):
    a = relay_apache
    mark = a.error_log_mark()
    payload = os.urandom(5 * MB)
    r = run_stdio(client_bin, a.relay_url, "echo", payload, cacert=tls["ca"], timeout=90)
    assert not r["timed_out"], "relay-https stdio did not finish in 90 s: %s" % r["stderr"]
    assert r["rc"] == 0, (r["rc"], r["stderr"])
    assert len(r["stdout"]) == len(payload), (len(r["stdout"]), r["stderr"])
    assert r["stdout"] == payload, "stdio returned different bytes"
    assert_sessions_closed(a, mark, timeout=15, min_opened=1)


# ---------------------------------------------------------------------------
# Protocol with a plain HTTP client (curl), independent of relay-https
# ---------------------------------------------------------------------------

def test_curl_push_pull_roundtrip(relay_apache):
    """open, a chunked push of D+F, a pull that returns D+F, all with curl."""
    a = relay_apache
    mark = a.error_log_mark()
    token, r = open_session(a.relay_url)
    assert r.header("Relay-Buffer") == "262144", r
    assert r.header("Relay-Idle-Timeout") == "300", r
    assert r.header("Relay-Poll-Timeout") == "25", r     # the default, said to the client
    assert "no-store" in (r.header("Cache-Control") or ""), r
    body = frame(b"D", b"hello relay") + frame(b"F")
    p = curl(a.relay_url + "/echo/push", data=body,
             headers=["Relay-Session: " + token, "Relay-Offset: 0",
                      "Transfer-Encoding: chunked",
                      "Content-Type: application/octet-stream"])
    assert p.status == 200, p
    assert p.header("Relay-Offset") == str(len(b"hello relay")), p
    q = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    assert q.status == 200, q
    assert q.header("Relay-Offset") == "0", q
    frames = [f for f in parse_frames(q.body) if f[0] != b"H"]
    data = b"".join(pl for t, pl in frames if t == b"D")
    assert data == b"hello relay", frames
    assert frames[-1][0] == b"F", frames
    sid = token[:16]
    opened = assert_sessions_closed(a, mark, timeout=10, min_opened=1)
    assert sid in opened, (sid, opened)
    # the freed session is gone
    g = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 11"])
    assert g.status == 410, g


def test_close_endpoint(relay_apache):
    a = relay_apache
    mark = a.error_log_mark()
    token, _ = open_session(a.relay_url)
    r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
    assert r.status == 204, r
    r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
    assert r.status == 410, r
    r = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    assert r.status == 410, r
    assert_sessions_closed(a, mark, timeout=10, min_opened=1)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def _assert_error_body(r):
    text = r.body.decode("utf-8", "replace")
    assert text.startswith("mod_relay_https:"), r
    assert text.count("\n") <= 1 and "\n" not in text.rstrip("\n"), r
    assert (r.header("Content-Type") or "").startswith("text/plain"), r


def test_unknown_target_404(relay_apache):
    r = curl(relay_apache.relay_url + "/nosuchtarget/open")
    assert r.status == 404, r
    _assert_error_body(r)


def test_unknown_endpoint_404(relay_apache):
    r = curl(relay_apache.relay_url + "/echo/bogus")
    assert r.status == 404, r


def test_pull_without_session_400(relay_apache):
    r = curl(relay_apache.relay_url + "/echo/pull", headers=["Relay-Ack: 0"])
    assert r.status == 400, r
    _assert_error_body(r)


@pytest.mark.parametrize("token", ["xyz", "0" * 47, "G" * 48, "0" * 49,
                                   "00000000000000zz" + "0" * 32])
def test_garbled_token_400(relay_apache, token):
    r = curl(relay_apache.relay_url + "/echo/pull",
             headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    assert r.status == 400, r
    _assert_error_body(r)


def test_unknown_token_410(relay_apache):
    a = relay_apache
    for token in ("0" * 48, "00000000000000010123456789abcdef0123456789abcdef"):
        r = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
        assert r.status == 410, r
        _assert_error_body(r)
    # a live session's id with a wrong secret is 410 too, and the session survives it
    token, _ = open_session(a.relay_url)
    wrong = token[:16] + ("0" * 32 if token[16:] != "0" * 32 else "1" * 32)
    r = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + wrong, "Relay-Ack: 0"])
    assert r.status == 410, r
    r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
    assert r.status == 204, r


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET"])
def test_wrong_method_on_open_405(relay_apache, method):
    r = curl(relay_apache.relay_url + "/echo/open", method=method)
    assert r.status == 405, r
    assert "POST" in (r.header("Allow") or ""), r


def test_oversized_header(relay_apache, mpm):
    """Apache's own limit (LimitRequestFieldSize 8190) applies before the module."""
    r = curl(relay_apache.relay_url + "/echo/open", headers=["X-Big: " + "a" * 20000],
             extra=["--http1.1"])
    assert r.status == 400, r
    if mpm != "prefork":
        # over HTTP/2, mod_http2 answers 431 Request Header Fields Too Large
        r = curl(relay_apache.relay_url + "/echo/open", headers=["X-Big: " + "a" * 20000],
                 extra=["--http2"])
        assert r.status == 431, r


@pytest.mark.rh_timeout(60)
def test_refused_target(relay_apache, client_bin, tls):
    a = relay_apache
    mark = a.error_log_mark()
    r = curl(a.relay_url + "/refused/open")
    assert r.status == 502, r
    _assert_error_body(r)
    s = run_stdio(client_bin, a.relay_url, "refused", b"hello\n", cacert=tls["ca"], timeout=30)
    assert not s["timed_out"], s
    assert s["rc"] == 8, (s["rc"], s["stderr"])
    msg = s["stderr"].strip()
    assert msg, "relay-https stdio exited 8 without a message"
    assert len(msg) < 2000 and all(c.isprintable() or c in "\n\t" for c in msg), msg
    assert re.search(r"refus|502|unreachable|connect", msg, re.I), msg
    assert s["stdout"] == b"", s
    # nothing left behind in the registry
    assert_sessions_closed(a, mark, timeout=10, min_opened=0)


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("mpm", ["event"])
@pytest.mark.parametrize("case,code", [("unknown-target", 7), ("untrusted-cert", 4),
                                       ("unreachable", 3)])
def test_client_exit_codes(relay_apache, mpm, client_bin, tls, refused_port, case, code):
    """Scripts can tell failures apart: documented exit codes with a one-line message."""
    a = relay_apache
    url, target, cacert = a.relay_url, "echo", tls["ca"]
    if case == "unknown-target":
        target = "nosuchtarget"
    elif case == "untrusted-cert":
        cacert = None            # the test CA is not in the system store
    elif case == "unreachable":
        url = "https://127.0.0.1:%d/relay" % refused_port
    s = run_stdio(client_bin, url, target, b"hello\n", cacert=cacert, timeout=40)
    assert not s["timed_out"], s
    assert s["rc"] == code, (s["rc"], s["stderr"])
    msg = s["stderr"].strip()
    assert msg and len(msg) < 2000, s
    assert s["stdout"] == b"", s


# ---------------------------------------------------------------------------
# Secrets, timeouts, configuration
# ---------------------------------------------------------------------------

def test_token_never_in_logs(relay_apache):
    a = relay_apache
    token, _ = open_session(a.relay_url)
    sid, secret = token[:16], token[16:]
    p = curl(a.relay_url + "/echo/push", data=frame(b"D", b"x") + frame(b"F"),
             headers=["Relay-Session: " + token, "Relay-Offset: 0",
                      "Transfer-Encoding: chunked"])
    assert p.status == 200, p
    q = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    assert q.status == 200, q

    def logged():
        return sum(1 for e in a.relay_log_entries() if e[1] == sid) >= 3
    assert harness.wait_for(logged, 10), (
        "the %%{relay-session}n access log should show session %s on open, push and pull:\n%s"
        % (sid, harness._read(a.relay_log)[-2000:]))
    for path in (a.relay_log, a.access_log, a.common_log, a.error_log):
        text = harness._read(path)
        assert secret not in text, "the session secret appears in %s" % path
        assert token not in text, "the token appears in %s" % path


@pytest.mark.rh_timeout(60)
def test_idle_timeout(relay_apache):
    a = relay_apache
    mark = a.error_log_mark()
    token, r = open_session(a.idle_url)
    t0 = time.monotonic()
    assert r.header("Relay-Idle-Timeout") == "2", r
    assert r.header("Relay-Poll-Timeout") == "1", r      # half the idle time when not set
    sid = token[:16]
    closed = harness.wait_for(lambda: sid in a.sessions(mark)[1], 8, interval=0.1)
    elapsed = time.monotonic() - t0
    assert closed, ("idle session %s not closed within 8 s (RelayIdleTimeout 2):\n%s"
                    % (sid, a.error_log_tail(30, mark)))
    assert elapsed >= 1.0, "idle session closed after %.2f s, before its timeout" % elapsed
    assert elapsed <= 6.0, "idle session closed only after %.2f s" % elapsed
    g = curl(a.idle_url + "/echo/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    assert g.status == 410, g


@pytest.mark.rh_timeout(60)
def test_idle_timeout_spares_active_session(relay_apache, client_bin, tls):
    """Bytes flowing count as activity: a session trickling a byte every 0.5 s for
    5 s outlives RelayIdleTimeout 2."""
    a = relay_apache
    mark = a.error_log_mark()
    with Forward(client_bin, a.idle_url, "echo", cacert=tls["ca"]) as fw:
        s = harness.socket.create_connection(("127.0.0.1", fw.port), timeout=10)
        got = b""
        try:
            for i in range(10):
                b = bytes([65 + i])
                s.sendall(b)
                got += s.recv(16)
                time.sleep(0.5)
            s.shutdown(harness.socket.SHUT_WR)
            while True:
                x = s.recv(16)
                if not x:
                    break
                got += x
        except OSError as e:
            raise AssertionError("session died after %r: %r\nforward:\n%s\nerror_log:\n%s"
                                 % (got, e, fw.stderr_text(), a.error_log_tail(20, mark)))
        finally:
            s.close()
        assert got == b"ABCDEFGHIJ", (got, fw.stderr_text(), a.error_log_tail(20, mark))
        assert_sessions_closed(a, mark, timeout=10, min_opened=1)
    assert "idle" not in a.error_log_text(mark).lower(), a.error_log_tail(20, mark)


def _configtest(apache_factory, mpm, module_so, targets, location_body):
    a = apache_factory.get(mpm, module=module_so, targets=targets, start=False,
                           extra_conf="# configtest %d" % time.monotonic_ns())
    block = "<Location /bad>\n    SetHandler relay-https\n%s\n</Location>" % location_body
    text = a.config_text(extra_locations=block)
    path = os.path.join(a.root, "conf", "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    return a, path, text, a.configtest(path)


def _line_of(text, needle, nth=1):
    hits = [i + 1 for i, l in enumerate(text.splitlines()) if l.strip() == needle]
    return hits[nth - 1]


def test_config_ok(apache_factory, module_so, targets):
    a, path, text, r = _configtest(apache_factory, "event", module_so, targets,
                                   "    RelayTarget other 127.0.0.1:1")
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stdout


def test_config_bad_target_address(apache_factory, module_so, targets):
    a, path, text, r = _configtest(apache_factory, "event", module_so, targets,
                                   "    RelayTarget echo notaport")
    assert r.returncode != 0, r.stdout
    line = _line_of(text, "RelayTarget echo notaport")
    assert "line %d of %s" % (line, path) in r.stdout, r.stdout


def test_config_duplicate_target(apache_factory, module_so, targets):
    a, path, text, r = _configtest(apache_factory, "event", module_so, targets,
                                   "    RelayTarget dup 127.0.0.1:1\n"
                                   "    RelayTarget dup 127.0.0.1:2")
    assert r.returncode != 0, r.stdout
    line = _line_of(text, "RelayTarget dup 127.0.0.1:2")
    assert "line %d of %s" % (line, path) in r.stdout, r.stdout
    assert "dup" in r.stdout.split("line %d" % line, 1)[1], r.stdout


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("with_module", [False, True], ids=["plain", "module"])
def test_clean_stop(tmp_path, tls, mpm, with_module, targets, request):
    """SIGTERM stops apache cleanly: exit code 0, no process of it left (relay core
    included), no error logged while stopping."""
    module = request.getfixturevalue("module_so") if with_module else None
    a = harness.Apache(str(tmp_path / "apache"), tls["cert"], tls["key"], mpm=mpm,
                       module=module, targets=targets)
    harness.Apache.used.append(a)
    a.prepare()
    a.start()
    try:
        if module:
            token, _ = open_session(a.relay_url)
            r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
            assert r.status == 204, r
        mark = a.error_log_mark()
    finally:
        a.stop()
    log = a.error_log_text(mark)
    assert a.exit_code == 0, "apache exited with %r on SIGTERM%s:\n%s" % (
        a.exit_code, " (killed by signal %d)" % -a.exit_code
        if a.exit_code and a.exit_code < 0 else "", log)
    assert not a.leftovers, "processes left after apache exited: %s" % a.leftovers
    # (Apache's own messages are not judged here: mpm_event may log AH03093 for a
    # keep-alive connection caught by the stop.)
    errors = [l for l in log.splitlines()
              if re.search(r"\[relay_https:(error|crit|alert|emerg)\]", l)]
    assert not errors, "the module logged errors while stopping:\n" + "\n".join(errors)


@pytest.mark.rh_timeout(60)
def test_target_reset_frees_session(relay_apache):
    """A target that resets the connection (never pulled by the client) frees the
    session at once; the client then sees 410 (or an R frame)."""
    a = relay_apache
    mark = a.error_log_mark()
    r = curl(a.relay_url + "/reset/open")
    if r.status == 502:
        return  # reset before the open completed: nothing was created
    assert r.status == 201, r
    token = r.header("Relay-Session")
    sid = token[:16]
    closed = harness.wait_for(lambda: sid in a.sessions(mark)[1], 5, interval=0.1)
    assert closed, ("session %s to a target that reset the connection not freed in 5 s:\n%s"
                    % (sid, a.error_log_tail(20, mark)))
    q = curl(a.relay_url + "/reset/pull", headers=["Relay-Session: " + token, "Relay-Ack: 0"])
    if q.status == 200:
        assert [f[0] for f in parse_frames(q.body) if f[0] != b"H"][-1:] == [b"R"], q
    else:
        assert q.status == 410, q


@pytest.mark.rh_timeout(60)
def test_core_idle_cpu(relay_apache):
    """The relay core sleeps when nothing happens, also with sessions parked in
    odd states: both directions finished but never pulled; target reset, never pulled."""
    a = relay_apache
    pid = a.core_pid()
    assert pid, ("no 'relay core started, pid N' line in the error_log (pattern %r)"
                 % harness.CORE_STARTED_RE.pattern)
    tokens = []
    t1, _ = open_session(a.relay_url)
    tokens.append(t1)
    p = curl(a.relay_url + "/echo/push", data=frame(b"D", b"abc") + frame(b"F"),
             headers=["Relay-Session: " + t1, "Relay-Offset: 0",
                      "Transfer-Encoding: chunked"])
    assert p.status == 200, p
    r = curl(a.relay_url + "/reset/open")
    if r.status == 201:
        tokens.append(r.header("Relay-Session"))
    else:
        assert r.status == 502, r
    time.sleep(0.7)  # the echo has answered and closed; the reset target has reset
    try:
        c0 = harness.proc_cpu_seconds(pid)
        assert c0 is not None, "relay core pid %d is gone" % pid
        time.sleep(1.0)
        c1 = harness.proc_cpu_seconds(pid)
        assert c1 is not None, "relay core pid %d died" % pid
        assert c1 - c0 < 0.15, ("relay core burnt %.2f s of CPU in 1 s with nothing to do"
                                % (c1 - c0))
    finally:
        for tok in tokens:
            curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + tok])


# ---------------------------------------------------------------------------
# Last: nothing left in the registry after everything above
# ---------------------------------------------------------------------------

def test_registry_empty_at_end(relay_apache):
    """Every session this Apache ever opened (all tests above) has been freed."""
    a = relay_apache
    token, _ = open_session(a.relay_url)
    r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
    assert r.status == 204, r
    opened = assert_sessions_closed(a, 0, timeout=10, min_opened=1)
    assert token[:16] in opened, (token[:16], opened[-5:])
