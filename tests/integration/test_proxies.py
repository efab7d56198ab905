"""Through every proxy: the relay-https client reaches Apache + mod_relay_https through
real intermediaries, each started here on loopback from a generated configuration:

- squid as a forward proxy: CONNECT (with and without Basic proxy auth, --proxy and
  https_proxy), and as a plain HTTP proxy in front of Apache's plain-HTTP port (what a
  TLS-inspecting proxy looks like to the client: no CONNECT, it sees every request);
- nginx as a buffering reverse proxy (proxy_buffering on, proxy_request_buffering on);
- haproxy and nginx cutting anything idle for 30 s, in front of a tunnel left idle for
  2 minutes.
"""

import hashlib
import os
import re
import socket
import threading
import time

import pytest

import harness
import intermediaries as im
import pattern
from harness import Forward, assert_sessions_closed, pump, run_stdio

MB = 1024 * 1024
PROXY_USER, PROXY_PASS = "proxyuser", "proxy-S3cret"


# ---------------------------------------------------------------------------
# Fixtures: one Apache (event MPM, TLS + a plain-HTTP vhost) and the intermediaries,
# all shared by the tests of this module.
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_port():
    return harness.free_port()


# every relay request with its Relay-Offset (where a push starts)
OFFSET_LOG = "relay_offset.log"
OFFSET_LOG_CONF = ('LogFormat "%%{relay-session}n \\"%%r\\" %%>s offset=%%{Relay-Offset}i" '
                   'relayoffset\nCustomLog "logs/%s" relayoffset' % OFFSET_LOG)


@pytest.fixture(scope="module")
def module_apache_conf(plain_port):
    return "\n".join([im.mode_log_conf(), OFFSET_LOG_CONF, im.plain_http_vhost_conf(plain_port)])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("intermediaries"))
    harness.make_traversable(d)
    return d


def _started(daemon):
    daemon.start()
    return daemon


@pytest.fixture(scope="module")
def squid(workdir, _module_apache):
    s = _started(im.Squid(os.path.join(workdir, "squid"), connect_ports=[_module_apache.port]))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def squid_auth(workdir, _module_apache):
    s = _started(im.Squid(os.path.join(workdir, "squid-auth"), connect_ports=[_module_apache.port],
                          auth=(PROXY_USER, PROXY_PASS)))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def nginx_ignoring_accel(workdir, _module_apache):
    """nginx that also ignores the module's `X-Accel-Buffering: no` (proxy_ignore_headers):
    request bodies are buffered whole; responses go through nginx's proxy buffers."""
    n = _started(im.Nginx(os.path.join(workdir, "nginx-ignore-accel"), _module_apache.port,
                          ignore_accel_buffering=True))
    yield n
    n.stop()


@pytest.fixture(scope="module")
def nginx_stock(workdir, _module_apache):
    """nginx with proxy_buffering on and proxy_request_buffering on, which honours the
    module's X-Accel-Buffering: no (responses stream, request bodies are buffered whole)."""
    n = _started(im.Nginx(os.path.join(workdir, "nginx-stock"), _module_apache.port))
    yield n
    n.stop()


@pytest.fixture(scope="module")
def haproxy_holding(workdir, _module_apache):
    """haproxy holding every response until its body is complete (up to 30 s:
    `http-response wait-for-body`), like a proxy that scans whole responses.
    `option http-no-delay` so that haproxy's own send coalescing does not add 200 ms."""
    h = _started(im.HAProxy(os.path.join(workdir, "haproxy-holding"), _module_apache.port,
                            timeout_s=60, hold_responses_s=30, no_delay=True))
    yield h
    h.stop()


def _forward(client_bin, url, tls, *args, env=None, cacert=True):
    return Forward(client_bin, url, "echo", cacert=tls["ca"] if cacert else None,
                   extra_args=list(args), env=env if env is not None else im.clean_env())


def _check_pump(res, fw, size, what):
    if res["error"] or res["received"] != size or res["recv_sha"] != res["sent_sha"]:
        time.sleep(1)       # let the client's last -v lines arrive for the report
    assert res["error"] is None, "%s: %s\nclient -v:\n%s" % (what, res, fw.stderr_text())
    assert res["received"] == res["sent"] == size, \
        "%s: sent %d, received %d of %d\nclient -v:\n%s" % (
            what, res["sent"], res["received"], size, fw.stderr_text())
    assert res["recv_sha"] == res["sent_sha"], "%s: sha256 differs" % what


def _new_lines(lines, start):
    return lines[start:]


# ---------------------------------------------------------------------------
# squid, CONNECT
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(150)
def test_squid_connect_5mb_each_way(module_apache, squid, client_bin, tls):
    """--proxy http://squid: the client reaches Apache's TLS port over CONNECT."""
    a = module_apache
    mark = a.error_log_mark()
    n_log = len(squid.access_lines())
    with _forward(client_bin, a.relay_url, tls, "--proxy", squid.url) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=5 * MB, timeout=120)
        _check_pump(res, fw, 5 * MB, "5 MB through squid (CONNECT)")
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
    connects = [l for l in squid.access_lines()[n_log:]
                if " CONNECT 127.0.0.1:%d " % a.port in l]
    assert connects, ("squid's access log shows no CONNECT to 127.0.0.1:%d: the client did "
                      "not use the proxy\n%s" % (a.port, squid.describe()))
    print("squid CONNECT: 5 MB each way in %.2f s (%d CONNECTs)" % (res["elapsed"],
                                                                    len(connects)))


def _offset_lines(a):
    try:
        with open(os.path.join(a.root, "logs", OFFSET_LOG), errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _auto_trial_session(a, squid, client_bin, tls, second):
    """A forward with auto through squid (-v -v): a first bulk session times stream,
    then second(fw) runs the route's next session, the duplex trial. Returns the
    client's lines of that session and the length of the server's Relay-Offset log
    before it."""
    with _forward(client_bin, a.relay_url, tls, "--proxy", squid.url, "-v") as fw:
        res = pattern.pump_pattern("127.0.0.1", fw.port, 8 * MB, timeout=120)
        assert res["error"] is None and res["first_bad_offset"] is None, \
            (res, fw.stderr_text())
        assert harness.wait_for(lambda: any("auto: stream moved " in l for l in fw.lines()),
                                10), fw.stderr_text()
        n, n_off = len(fw.lines()), len(_offset_lines(a))
        second(fw)
        time.sleep(0.5)             # the session's last lines and requests
        return fw.lines()[n:], n_off


@pytest.mark.rh_timeout(200)
def test_squid_auto_trial_uploads_on_a_stream_push(module_apache, squid, client_bin, tls):
    """auto through squid (CONNECT; HTTP/2 by ALPN): the route's first bulk session
    times stream; the next one is the duplex trial, which times its download only: its
    upload goes on an HTTP/1.1 stream push asked for beside the duplex, from the end
    of the duplex body's first 32 KiB (before, the upload went at the duplex's pace,
    mod_http2's stream window, until the trial ended and a push had its connection).
    The server sees that push at offset 32768; every byte arrives in order."""
    a = module_apache

    def second(fw):
        res = pattern.pump_pattern("127.0.0.1", fw.port, 24 * MB, timeout=150)
        assert res["error"] is None and res["first_bad_offset"] is None, \
            (res, fw.stderr_text())
        assert res["received"] == 24 * MB, (res, fw.stderr_text())
    lines, n_off = _auto_trial_session(a, squid, client_bin, tls, second)
    text = "\n".join(l for l in lines if not re.search(r": [*<>] |: \* ", l))
    assert "transport: duplex (auto: HTTP/2, stream timed on this path" in text, text[-3000:]
    assert "up goes on a stream push from offset 32768" in text, text[-3000:]
    # an HTTP/2 request is logged when its stream is cleaned up, maybe later
    want = ('/relay/echo/push HTTP/1.1" 200 offset=32768',
            '/relay/echo/duplex HTTP/2.0" 200 offset=0')
    logged = harness.wait_for(lambda: all(any(w in l for l in _offset_lines(a)[n_off:])
                                          for w in want), 15)
    assert logged, "no push from offset 32768 beside the duplex:\n%s" % "\n".join(
        _offset_lines(a)[n_off:][-20:])
    # duplex is timed on the download, never on the upload
    assert "auto: measured on this path, up:" not in text, text[-3000:]


@pytest.mark.rh_timeout(200)
def test_squid_auto_trial_push_unused_the_duplex_goes_on(module_apache, squid, client_bin, tls):
    """The trial's push waits on the server for the duplex body's first 32 KiB; a
    session that sends less in 5 s drops it (before the server's RelayPushWait, 10 s,
    would refuse it: a 409 that the client, its body paused, saw only when the duplex
    body turned to that push), and its up bytes go on on the duplex, in order, a bulk
    upload after them too. The server never refused the push."""
    a = module_apache
    got = {}

    def second(fw):
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
        try:
            t_end = time.monotonic() + 12
            i = 0
            while time.monotonic() < t_end:
                msg = b"line %05d\n" % i
                back, why = im.exchange(s, msg, timeout=20)
                assert back == msg, (why, fw.stderr_text())
                i += 1
                time.sleep(0.2)
            big = os.urandom(8 * MB)
            back, why = im.exchange(s, big, timeout=60)
            got["ok"] = back == big
            got["why"] = why
        finally:
            s.close()
    lines, n_off = _auto_trial_session(a, squid, client_bin, tls, second)
    offsets = _offset_lines(a)[n_off:]
    # the client's own lines, not curl's (-v -v)
    text = "\n".join(l for l in lines if not re.search(r": [*<>] |: \* ", l))
    assert got.get("ok"), (got.get("why"), text[-3000:])
    assert "up goes on a stream push from offset 32768" in text, text[-3000:]
    assert "up stays on the duplex (the push asked for beside it went unused)" in text, \
        text[-3000:]
    refused = [l for l in offsets if '/relay/echo/push HTTP/1.1" 409 offset=32768' in l]
    assert not refused, "\n".join(offsets[-20:])
    # the trial's push was never refused (a push that goes again after auto moved
    # the session to stream may meet a 409 "below accepted": resume as designed)
    assert "push offset 32768 " not in text, text[-3000:]


@pytest.mark.rh_timeout(90)
def test_squid_proxy_auth_missing_exit_6(module_apache, squid_auth, client_bin, tls):
    """The proxy wants Basic auth and the client has none: exit code 6, clear message."""
    a = module_apache
    mark = a.error_log_mark()
    s = run_stdio(client_bin, a.relay_url, "echo", b"hello\n", cacert=tls["ca"], timeout=60,
                  extra_args=["--proxy", squid_auth.url], env=im.clean_env())
    assert not s["timed_out"], "relay-https stdio hung: %s" % s
    assert s["rc"] == 6, ("expected exit 6 (proxy refused / wants authentication), got %r\n"
                          "stderr:\n%s\n%s" % (s["rc"], s["stderr"], squid_auth.describe()))
    msg = s["stderr"]
    assert "407" in msg and "proxy" in msg.lower(), \
        "the message should say the proxy wants authentication (407): %r" % msg
    assert s["stdout"] == b"", s
    opened, _ = a.sessions(mark)
    assert not opened, "a session was opened although the proxy refused: %s" % opened


@pytest.mark.rh_timeout(90)
def test_squid_proxy_auth_wrong_password_exit_6(module_apache, squid_auth, client_bin, tls):
    s = run_stdio(client_bin, module_apache.relay_url, "echo", b"hello\n", cacert=tls["ca"],
                  timeout=60, env=im.clean_env(),
                  extra_args=["--proxy", squid_auth.url,
                              "--proxy-user", "%s:wrong" % PROXY_USER])
    assert not s["timed_out"], "relay-https stdio hung: %s" % s
    assert s["rc"] == 6, (s["rc"], s["stderr"])
    assert "407" in s["stderr"], s["stderr"]


@pytest.mark.rh_timeout(150)
def test_squid_proxy_auth_5mb_each_way(module_apache, squid_auth, client_bin, tls):
    """With --proxy-user the same proxy lets the tunnel through."""
    a = module_apache
    mark = a.error_log_mark()
    n_log = len(squid_auth.access_lines())
    with _forward(client_bin, a.relay_url, tls, "--proxy", squid_auth.url,
                  "--proxy-user", "%s:%s" % (PROXY_USER, PROXY_PASS)) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=5 * MB, timeout=120)
        _check_pump(res, fw, 5 * MB, "5 MB through squid with proxy auth")
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        assert PROXY_PASS not in "\n".join(fw.lines()), "the -v output shows the proxy password"
    ok = [l for l in squid_auth.access_lines()[n_log:]
          if " CONNECT 127.0.0.1:%d %s " % (a.port, PROXY_USER) in l and "/200 " in l]
    assert ok, ("squid's access log shows no authenticated CONNECT (user %s):\n%s"
                % (PROXY_USER, squid_auth.describe()))


@pytest.mark.rh_timeout(150)
def test_squid_via_https_proxy_env(module_apache, squid, client_bin, tls):
    """No --proxy: the https_proxy environment variable picks the proxy."""
    a = module_apache
    mark = a.error_log_mark()
    n_log = len(squid.access_lines())
    env = im.clean_env(https_proxy=squid.url)
    with _forward(client_bin, a.relay_url, tls, env=env) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=5 * MB, timeout=120)
        _check_pump(res, fw, 5 * MB, "5 MB through squid chosen by https_proxy")
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
    connects = [l for l in squid.access_lines()[n_log:]
                if " CONNECT 127.0.0.1:%d " % a.port in l]
    assert connects, ("https_proxy=%s was ignored: squid saw no CONNECT\n%s"
                      % (squid.url, squid.describe()))


@pytest.mark.rh_timeout(90)
def test_squid_proxy_auth_via_env_missing_exit_6(module_apache, squid_auth, client_bin, tls):
    """HTTPS_PROXY (upper case) is honoured too, and the 407 still maps to exit 6."""
    env = im.clean_env(HTTPS_PROXY=squid_auth.url)
    s = run_stdio(client_bin, module_apache.relay_url, "echo", b"hello\n", cacert=tls["ca"],
                  timeout=60, env=env)
    assert not s["timed_out"], s
    assert s["rc"] == 6, (s["rc"], s["stderr"])


# ---------------------------------------------------------------------------
# squid as a plain HTTP proxy (the TLS-inspecting case: no CONNECT)
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(180)
def test_squid_plain_http_proxy_5mb_each_way(module_apache, squid, client_bin, plain_port):
    """http://APACHE/relay through squid: every request goes through the proxy as an
    HTTP request (absolute URI), as through a TLS-inspecting proxy."""
    a = module_apache
    mark = a.error_log_mark()
    n_log = len(squid.access_lines())
    url = "http://127.0.0.1:%d/relay" % plain_port
    with _forward(client_bin, url, {"ca": None}, "--proxy", squid.url, cacert=False) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=5 * MB, timeout=150)
        _check_pump(res, fw, 5 * MB, "5 MB through squid as a plain HTTP proxy")
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        print("transport lines:", im.transport_lines(fw.lines()))
    lines = squid.access_lines()[n_log:]
    seen = [l for l in lines if "http://127.0.0.1:%d/relay/echo/" % plain_port in l]
    assert any("/relay/echo/open" in l for l in seen), \
        "squid did not carry the requests (no POST http://...:%d/relay/echo/open):\n%s" % (
            plain_port, squid.describe())
    assert not any(" CONNECT " in l for l in lines), "the client used CONNECT: %s" % lines
    print("squid plain HTTP: 5 MB each way in %.2f s" % res["elapsed"])


# ---------------------------------------------------------------------------
# nginx as a buffering reverse proxy
# ---------------------------------------------------------------------------

def _auto_through(apache, proxy, label, client_bin):
    """--transport auto (the default) through a reverse proxy: ends on a working transport
    (not duplex), moves 10 MB each way, and a one-byte echo costs about two HTTP round
    trips through the same proxy (median of 20, <= 3 x median GET + 5 ms)."""
    a = apache
    mark = a.error_log_mark()
    log_start = len(im.mode_log_entries(a))
    url = proxy.url + "/relay"
    # no --transport: the default (auto) must find its way
    with _forward(client_bin, url, {"ca": None}, cacert=False) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=10 * MB, timeout=200)
        _check_pump(res, fw, 10 * MB, "10 MB through %s" % label)
        assert_sessions_closed(a, mark, timeout=20, min_opened=1)
        used = im.last_transport(fw.lines())
        assert used is not None, ("the client's -v output does not say which transport it "
                                  "uses (no line with 'transport: ...'):\n%s" % fw.stderr_text())
        assert "duplex" not in used, "ended on duplex behind %s:\n%s" % (label, "\n".join(
            im.transport_lines(fw.lines())))
        entries = im.mode_log_entries(a)[log_start:]
        assert not any("/duplex" in e[2] and e[3] == 200 for e in entries), entries

        # interactive latency: one byte through the tunnel vs one HTTP GET through the proxy
        n_lines = len(fw.lines())
        http = im.http_rtts(proxy.port, "/index.html", n=20)
        try:
            echo = im.echo_rtts(fw.port, n=20, warmup=3)
        except (OSError, AssertionError) as e:
            raise AssertionError("one-byte echoes through %s failed: %r\nclient -v:\n%s\n%s"
                                 % (label, e, "\n".join(fw.lines()[n_lines:]),
                                    proxy.describe()))
        used_echo = im.last_transport(fw.lines()[n_lines:])
    med_http, med_echo = im.median_ms(http), im.median_ms(echo)
    print("%s: transport %s (echo session: %s); 10 MB each way in %.2f s; median echo "
          "%.2f ms, median HTTP GET %.2f ms" % (label, used, used_echo, res["elapsed"],
                                                med_echo, med_http))
    assert med_echo <= 3 * med_http + 5.0, (
        "one-byte echo through %s (transport %s) takes %.2f ms (median of 20) vs "
        "%.2f ms for one HTTP GET through the same proxy: more than 3 x + 5 ms "
        "(echo samples ms: %s)" % (label, used_echo, med_echo, med_http,
                                   ["%.1f" % (x * 1000) for x in sorted(echo)]))


@pytest.mark.rh_timeout(300)
@pytest.mark.parametrize("which", ["stock", "ignores-x-accel-buffering"])
def test_nginx_buffering_auto_transport(request, module_apache, which, client_bin):
    """nginx as a buffering reverse proxy (proxy_buffering on, proxy_request_buffering on,
    default timeouts and client_max_body_size) in front of Apache's TLS port."""
    nginx = request.getfixturevalue("nginx_stock" if which == "stock"
                                    else "nginx_ignoring_accel")
    _auto_through(module_apache, nginx, "nginx (%s)" % which, client_bin)


@pytest.mark.rh_timeout(120)
def test_batch_pushes_fit_nginx_body_limit(module_apache, nginx_stock, client_bin):
    """Batch pushes carry 2 MiB bodies; nginx's default client_max_body_size (1m) answers
    413. The client must split them without losing a byte and go on with bodies of
    exactly 1 MiB (the power of two below what failed), not halve again and again."""
    a = module_apache
    mark = a.error_log_mark()
    with _forward(client_bin, nginx_stock.url + "/relay", {"ca": None}, "--transport",
                  "batch", cacert=False) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=24 * MB, timeout=100, chunk=1 << 20)
        _check_pump(res, fw, 24 * MB, "24 MB of batch pushes through nginx")
        assert_sessions_closed(a, mark, timeout=20, min_opened=1)
        said = [l for l in fw.lines() if "HTTP 413" in l and "pushes now carry" in l]
        assert said, ("no push was refused with 413 by nginx's 1m body limit, so the split "
                      "was not exercised:\n%s" % fw.stderr_text())
        sizes = [int(l.split("at most ")[1].split()[0]) for l in said]
        full = 1048576 - 16 * (4 + 16) - 4   # 16 D frames, each with its C frame, and an F
        assert min(sizes) == full, (
            "pushes were cut to %s data bytes after nginx's 413, want %d (bodies of 1 MiB)"
            "\n%s" % (sizes, full, "\n".join(said)))


@pytest.mark.rh_timeout(300)
def test_response_holding_proxy_auto_transport(module_apache, haproxy_holding, client_bin):
    """A proxy that holds responses until they are complete (haproxy wait-for-body):
    streamed pulls never arrive, batch long-polls do."""
    _auto_through(module_apache, haproxy_holding, "haproxy holding responses", client_bin)


# ---------------------------------------------------------------------------
# Intermediaries that cut anything idle for 30 s; a tunnel idle for 2 minutes
# ---------------------------------------------------------------------------

IDLE_S = 120


@pytest.mark.slow
@pytest.mark.rh_timeout(IDLE_S + 120)
def test_idle_2min_through_30s_cutting_intermediaries(module_apache, client_bin, workdir):
    """haproxy (timeout client/server 30s) and nginx (proxy_read/send_timeout 30s), side
    by side: a tunnel through each carries data, stays idle for 2 minutes (4 x the cut),
    then carries data again on the same local TCP connection, with the same client."""
    a = module_apache
    mark = a.error_log_mark()
    ha = im.HAProxy(os.path.join(workdir, "haproxy-30s"), a.port, timeout_s=30)
    ng = im.Nginx(os.path.join(workdir, "nginx-30s"), a.port, read_timeout=30,
                  send_timeout=30)
    paths = {"haproxy": ha, "nginx": ng}
    fws, socks = {}, {}
    try:
        for d in paths.values():
            d.start()
        for name, d in paths.items():
            fws[name] = _forward(client_bin, d.url + "/relay", {"ca": None}, cacert=False)
        before = {}
        for name, fw in fws.items():
            s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
            socks[name] = s
            payload = os.urandom(64 * 1024)
            got, why = im.exchange(s, payload, timeout=60)
            assert got == payload, "%s: first 64 KB did not come back (%s, %d bytes)\n%s\n%s" % (
                name, why, len(got), fw.stderr_text(), paths[name].describe())
            before[name] = (s.getsockname(), len(fw.lines()))
        time.sleep(IDLE_S)
        failures = []
        results = {}

        def after(name):
            fw, s = fws[name], socks[name]
            payload = os.urandom(1 * MB)
            got, why = im.exchange(s, payload, timeout=60)
            results[name] = (got, why, payload)

        ts = [threading.Thread(target=after, args=(n,), daemon=True) for n in fws]
        for t in ts:
            t.start()
        for t in ts:
            t.join(75)
        for name, fw in fws.items():
            got, why, payload = results.get(name, (b"", "no result", b"x"))
            alive = fw.proc.poll() is None
            same = socks[name].getsockname() == before[name][0]
            if not (alive and same and hashlib.sha256(got).digest()
                    == hashlib.sha256(payload).digest()):
                failures.append(
                    "%s: after %d s idle: %d of %d bytes back (%s); client alive=%s; "
                    "same local connection=%s\nclient -v since the idle period:\n%s\n%s"
                    % (name, IDLE_S, len(got), len(payload), why, alive, same,
                       "\n".join(fw.lines()[before[name][1]:][-40:]), paths[name].describe()))
        assert not failures, "\n\n".join(failures)
        for name, s in socks.items():
            s.shutdown(socket.SHUT_WR)
        assert_sessions_closed(a, mark, timeout=20, min_opened=2)
    finally:
        for s in socks.values():
            s.close()
        for fw in fws.values():
            fw.stop()
        for d in paths.values():
            d.stop()
