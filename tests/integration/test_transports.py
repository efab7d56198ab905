"""Every transport (stream, batch, duplex where HTTP/2 is available) under every MPM,
forced with --transport, checked end to end (sha256) and on the server side (which
requests Apache saw: duplex, push/pull, Relay-Mode: batch long-polls).  Also: HTTP/2
duplex at volume, and mod_reqtimeout (on, with Debian's settings) leaving an idle
stream push alone."""

import concurrent.futures
import os
import signal
import socket
import time

import pytest

import harness
import intermediaries as im
import pattern
from harness import Forward, assert_sessions_closed, pump

MB = 1024 * 1024

# LogLevel after the harness's: keep relay_https at debug, and show mod_reqtimeout's
# own messages (it logs its timeouts at info).
EXTRA_CONF = im.mode_log_conf() + "\nLogLevel warn relay_https:debug reqtimeout:info"


def _apache(apache_factory, mpm, module_so, targets):
    return apache_factory.get(mpm, module=module_so, targets=targets, extra_conf=EXTRA_CONF)


def _session_entries(a, log_start, opened):
    return [e for e in im.mode_log_entries(a)[log_start:] if e[1] in opened]


MATRIX = [(m, t) for m in harness.MPMS for t in ("stream", "batch", "duplex")
          if not (m == "prefork" and t == "duplex")]   # mod_http2 does not run under prefork


@pytest.mark.rh_timeout(150)
@pytest.mark.parametrize("mpm,transport", MATRIX, ids=["%s-%s" % x for x in MATRIX])
def test_transport_matrix_2mb(apache_factory, mpm, transport, module_so, targets, client_bin,
                              tls):
    a = _apache(apache_factory, mpm, module_so, targets)
    mark = a.error_log_mark()
    log_start = len(im.mode_log_entries(a))
    size = 2 * MB
    args = ["--transport", transport]
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], extra_args=args,
                 env=im.clean_env()) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=size, timeout=120)
        assert res["error"] is None, (res, fw.stderr_text())
        assert res["received"] == res["sent"] == size, (res, fw.stderr_text())
        assert res["recv_sha"] == res["sent_sha"], res
        opened = assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        said = im.last_transport(fw.lines())
        assert said in (None, transport), (
            "--transport %s, but the client says it uses %s:\n%s"
            % (transport, said, "\n".join(im.transport_lines(fw.lines()))))

    # what Apache saw (the access log is written when each request ends)
    def entries():
        e = _session_entries(a, log_start, opened)
        ok = any("/open " in x[2] for x in e) and (
            any("/duplex " in x[2] for x in e) if transport == "duplex" else
            any("/pull " in x[2] for x in e) and any("/push " in x[2] for x in e))
        return e if ok else None
    e = harness.wait_for(entries, 10, interval=0.2)
    e = e or _session_entries(a, log_start, opened)
    show = "\n".join("%s %s mode=%s" % (x[2], x[3], x[4]) for x in e)
    duplex = [x for x in e if "/duplex " in x[2]]
    pulls = [x for x in e if "/pull " in x[2]]
    pushes = [x for x in e if "/push " in x[2]]
    if transport == "duplex":
        assert duplex and all(x[2].endswith("HTTP/2.0") for x in duplex), \
            "--transport duplex: no HTTP/2 duplex request in the log:\n" + show
        assert all(x[3] == 200 for x in duplex), show
        assert not pulls and not pushes, "duplex session also used push/pull:\n" + show
    else:
        assert not duplex, "--transport %s used duplex:\n%s" % (transport, show)
        assert pulls and pushes, "no push/pull requests in the log:\n" + show
        modes = set(x[4].lower() for x in pulls)
        if transport == "batch":
            assert modes == {"batch"}, "batch pulls must carry Relay-Mode: batch:\n" + show
            assert all(x[3] == 200 for x in pulls + pushes), show
        else:
            assert "batch" not in modes, "stream transport sent batch long-polls:\n" + show
    print("%s %s: 2 MB each way in %.2f s, %d requests" % (mpm, transport, res["elapsed"],
                                                           len(e)))


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", ["event"])
def test_http2_duplex_20mb(apache_factory, mpm, module_so, targets, client_bin, tls):
    """--transport duplex through mod_http2: 20 MB each way, and the access log shows
    the HTTP/2.0 requests to /duplex."""
    a = _apache(apache_factory, mpm, module_so, targets)
    mark = a.error_log_mark()
    with open(a.access_log, "rb") as f:
        f.seek(0, 2)
        acc_start = f.tell()
    size = 20 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex"], env=im.clean_env()) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=size, timeout=180)
        assert res["error"] is None, (res, fw.stderr_text())
        assert res["received"] == res["sent"] == size, (res, fw.stderr_text())
        assert res["recv_sha"] == res["sent_sha"], res
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)

    def duplex_lines():
        with open(a.access_log, "r", errors="replace") as f:
            f.seek(acc_start)
            lines = f.read().splitlines()
        d = [l for l in lines if '"POST /relay/echo/duplex HTTP/2.0" 200 ' in l]
        return d or None
    d = harness.wait_for(duplex_lines, 10, interval=0.2)
    assert d, "access log (combined) has no 'POST /relay/echo/duplex HTTP/2.0' 200:\n%s" % (
        harness._read(a.access_log)[-3000:])
    print("h2 duplex: 20 MB each way in %.2f s (%.1f MB/s each way)"
          % (res["elapsed"], 20 / res["elapsed"]))


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", ["event"])
def test_duplex_bulk_upload_moves_to_a_stream_push(apache_factory, mpm, module_so, targets,
                                                   client_bin, tls):
    """--transport duplex, no HTTP version given: a bulk upload leaves the duplex
    for a stream push over HTTP/1.1 at an offset the duplex body ends at, while
    down stays on the duplex (duplex_split); 30 MB each way intact. With --http2
    the upload stays on the duplex."""
    a = _apache(apache_factory, mpm, module_so, targets)
    size = 30 * MB
    for args, split in ((["--transport", "duplex", "-v"], True),
                        (["--transport", "duplex", "--http2", "-v"], False)):
        mark = a.error_log_mark()
        with open(a.access_log, "rb") as f:
            f.seek(0, 2)
            acc_start = f.tell()
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], extra_args=args,
                     env=im.clean_env()) as fw:
            res = pump("127.0.0.1", fw.port, nbytes=size, timeout=180)
            assert res["error"] is None, (res, fw.stderr_text())
            assert res["received"] == res["sent"] == size, (res, fw.stderr_text())
            assert res["recv_sha"] == res["sent_sha"], res
            assert_sessions_closed(a, mark, timeout=15, min_opened=1)
            log = "\n".join(fw.lines())
        assert ("up moves to a stream push" in log) == split, (args, log[-3000:])

        def lines():
            with open(a.access_log, "r", errors="replace") as f:
                f.seek(acc_start)
                got = f.read()
            return got if '/relay/echo/duplex HTTP/2.0" 200 ' in got else None
        acc = harness.wait_for(lines, 10, interval=0.2)
        assert acc, harness._read(a.access_log)[-3000:]
        assert ('"POST /relay/echo/push HTTP/1.1" 200 ' in acc) == split, (args, acc[-3000:])
        assert "/relay/echo/pull " not in acc, acc[-3000:]
        print("%s: 30 MB each way in %.2f s" % (" ".join(args), res["elapsed"]))


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", ["event", "worker"])
def test_http2_parallel_echoes_intact(apache_factory, mpm, module_so, targets, client_bin,
                                      tls):
    """Rounds of 10 tunnels at once through one client over HTTP/2 (duplex, resume
    on, so ack requests run beside the duplex streams), 1 MiB echoed by each: every
    byte must come back in order. With several streams on one connection, libcurl
    7.88 altered about one tunnel in 60 here (48 bytes replaced, or a frame header
    shifted); the client now gives such a libcurl one connection per stream."""
    a = _apache(apache_factory, mpm, module_so, targets)
    mark = a.error_log_mark()
    rounds, n = 30, 10
    bad = []
    for rnd in range(rounds):
        # a new client each round: its connections fill with streams from the start
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                     extra_args=["--http2", "--transport", "duplex"],
                     env=im.clean_env()) as fw:
            payloads = [os.urandom(MB) for _ in range(n)]
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                results = list(ex.map(lambda p: pump("127.0.0.1", fw.port, payload=p,
                                                     timeout=60), payloads))
            for i, res in enumerate(results):
                if (res["error"] is not None or res["received"] != res["sent"]
                        or res["recv_sha"] != res["sent_sha"]):
                    bad.append((rnd, i, res, fw.stderr_text()[-1500:]))
            assert im.last_transport(fw.lines()) == "duplex", fw.stderr_text()[-2000:]
    assert not bad, "%d of %d tunnels came back altered: %r" % (len(bad), rounds * n, bad[:2])
    assert_sessions_closed(a, mark, timeout=20, min_opened=rounds * n)


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm", ["event"])
def test_http2_duplex_many_tunnels_held_open(apache_factory, mpm, module_so, targets,
                                            client_bin, tls):
    """20 duplex tunnels through one client, all held open at once: each echoes.
    (mod_http2 works on only 6 streams of a connection until some complete, and a
    duplex stream lasts its tunnel's life: the client spreads them.)"""
    a = _apache(apache_factory, mpm, module_so, targets)
    n = 20
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex"], env=im.clean_env()) as fw:
        socks = [socket.create_connection(("127.0.0.1", fw.port), timeout=20)
                 for _ in range(n)]
        for i, s in enumerate(socks):
            s.sendall(b"tunnel %02d\n" % i)
        for i, s in enumerate(socks):
            want = b"tunnel %02d\n" % i
            got = b""
            while len(got) < len(want):
                b = s.recv(64)       # times out (20 s) if the tunnel waits in a queue
                assert b, "tunnel %d closed: %s" % (i, fw.stderr_text())
                got += b
            assert got == want
        for s in socks:
            s.close()


@pytest.mark.rh_timeout(200)
def test_auto_http2_measures_duplex_against_stream(apache_factory, module_so, targets,
                                                   client_bin, tls):
    """auto on HTTP/2 times what it uses: the first bulk session goes stream and times
    it; the next starts on duplex (its upload on a stream push), times its download and
    moves to stream in the middle unless duplex was faster (the server resends what
    was in flight: the offset pattern shows no wrong, lost or doubled byte); -v says
    what was measured and why, the statistics show the figures, and the sessions after
    use the pick."""
    a = _apache(apache_factory, "event", module_so, targets)
    mark = a.error_log_mark()
    size = 24 * MB

    def text():
        return "\n".join(fw.lines())

    def bulk():
        res = pattern.pump_pattern("127.0.0.1", fw.port, size, timeout=150)
        assert res["error"] is None and res["first_bad_offset"] is None, (res, text()[-4000:])
        assert res["received"] == size, (res, text()[-4000:])

    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], extra_args=["-v"],
                 env=im.clean_env()) as fw:
        bulk()
        assert "transport: stream (auto: HTTP/2, not measured on this path yet" in text()
        assert "auto: stream moved " in text(), text()[-4000:]
        n = len(fw.lines())
        bulk()
        later = "\n".join(fw.lines()[n:])
        assert "transport: duplex (auto: HTTP/2, stream timed on this path" in later, later
        assert harness.wait_for(lambda: "auto: measured on this path" in text(), 10), later
        picked = "stream" if "stream from now on" in text() else "duplex"
        if picked == "stream":
            # it moves once staying has cost what a move costs (the duplex's time to
            # its answer), unless its download ended first (rhc_meter_move_due, unit
            # test_meter_switch); the pattern above was intact either way
            assert "auto: this session moves to stream once the duplex has cost it" in text()
        print("\n".join(l for l in fw.lines() if "auto: " in l and "transport: " not in l))
        # the next session starts with the pick, and says why
        n = len(fw.lines())
        res = pump("127.0.0.1", fw.port, nbytes=64 * 1024, timeout=60)
        assert res["error"] is None and res["recv_sha"] == res["sent_sha"], res
        said = im.transport_lines(fw.lines()[n:])
        assert said and "auto: measured on this path" in said[0], said
        assert im.last_transport(fw.lines()[n:]) == picked, said
        # SIGUSR1: the route line carries the figures
        n = len(fw.lines())
        fw.proc.send_signal(signal.SIGUSR1)
        assert harness.wait_for(lambda: any("stats: total:" in l for l in fw.lines()[n:]), 10)
        route = [l for l in fw.lines()[n:] if "stats: route " in l]
        assert route and "; measured " in route[0] and " MB/s" in route[0], route
        assert "auto picks " + picked in route[0], route
    assert_sessions_closed(a, mark, timeout=15, min_opened=3)


def _exchange_then_idle(fw, seconds):
    """A socket through fw that carried 1 KB, then idled for seconds; and the
    client's log length before the idle."""
    s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
    first = os.urandom(1024)
    got, why = im.exchange(s, first, timeout=30)
    if got != first:
        s.close()
        raise AssertionError((why, fw.stderr_text()))
    n_lines = len(fw.lines())
    time.sleep(seconds)
    return s, n_lines


@pytest.mark.slow
@pytest.mark.rh_timeout(120)
def test_duplex_idle_30s_survives_reqtimeout(apache_factory, module_so, targets, client_bin,
                                             tls):
    """mod_reqtimeout is on (RequestReadTimeout body=10,minrate=500): an HTTP/2 duplex
    stream idle for 30 s must stay the same request. mod_http2 gives each stream
    mod_reqtimeout of its own, and taking it off only the connection's filter list
    left the stream's request filter pointing at it: every idle duplex ended after
    ~20 s ("request body ended early", a stream reset, a resume on a new
    connection), which 5000 idle tunnels paid in CPU and lost tunnels."""
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=EXTRA_CONF)
    conf = harness._read(a.conf_path)
    assert "LoadModule reqtimeout_module" in conf and "RequestReadTimeout body=10" in conf
    mark = a.error_log_mark()
    log_start = len(im.mode_log_entries(a))
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex", "--http2"], env=im.clean_env()) as fw:
        s, n_lines = _exchange_then_idle(fw, 30)
        try:
            payload = os.urandom(1 * MB)
            got, why = im.exchange(s, payload, timeout=60)
            assert got == payload, (why, "\n".join(fw.lines()[n_lines:]))
            idle_lines = fw.lines()[n_lines:]
            s.shutdown(socket.SHUT_WR)
            assert s.recv(16) == b""
        finally:
            s.close()
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
    resumed = [l for l in idle_lines if "resuming" in l or "duplex:" in l and "error" in l]
    cut = [l for l in a.error_log_text(mark).splitlines() if "RH2040" in l or "RH2041" in l]
    duplexes = harness.wait_for(lambda: [x for x in im.mode_log_entries(a)[log_start:]
                                         if "/duplex" in x[2]] or None, 10, interval=0.2) or []
    assert not resumed and not cut and len(duplexes) == 1, (
        "the idle duplex stream was cut and resumed:\nclient:\n%s\nerror_log:\n%s\n"
        "duplex requests: %s" % ("\n".join(resumed), "\n".join(cut), duplexes))


@pytest.mark.slow
@pytest.mark.rh_timeout(120)
def test_stream_idle_25s_survives_reqtimeout(apache_factory, module_so, targets, client_bin,
                                              tls):
    """mod_reqtimeout is on (RequestReadTimeout body=10,minrate=500), and RelayIdleTimeout
    is 12 s: a stream tunnel idle for 25 s still carries data. While idle, the client
    keeps the session alive (heartbeats, then acks) and, after 10 s (--idle-push 10),
    ends its push so that the server holds only the pull: a push has completed (200)
    before the data after the pause, and no body was cut."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=EXTRA_CONF + "\n<Location /relay>\n"
                                      "    RelayIdleTimeout 12\n</Location>")
    conf = harness._read(a.conf_path)
    assert "LoadModule reqtimeout_module" in conf and "RequestReadTimeout body=10" in conf
    mark = a.error_log_mark()
    log_start = len(im.mode_log_entries(a))
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "stream", "--http1.1", "--idle-push", "10"],
                 env=im.clean_env()) as fw:
        s, n_lines = _exchange_then_idle(fw, 25)
        try:
            sessions = a.sessions(mark)[0]
            pushes_idle = [x for x in _session_entries(a, log_start, sessions)
                           if "/push " in x[2]]
            assert len(pushes_idle) == 1 and pushes_idle[0][3] == 200, (
                "after 25 s idle the push should have ended (200): %s\n%s"
                % (pushes_idle, "\n".join(fw.lines()[n_lines:])))
            payload = os.urandom(1 * MB)
            got, why = im.exchange(s, payload, timeout=60)
            assert got == payload, (
                "after 25 s idle: %d of %d bytes back (%s)\nclient -v:\n%s\nerror_log:\n%s"
                % (len(got), len(payload), why, "\n".join(fw.lines()[n_lines:]),
                   a.error_log_tail(30, mark)))
            s.shutdown(socket.SHUT_WR)
            assert s.recv(16) == b""
        finally:
            s.close()
        opened = assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        assert fw.proc.poll() is None
    log = a.error_log_text(mark)
    cut = [l for l in log.splitlines()
           if "AH01382" in l or "Request body read timeout" in l or "RH2020" in l
           or "push body ended early" in l or "idle timeout" in l]
    assert not cut, "a body was cut, or the session timed out, while idle:\n" + "\n".join(cut)
    e = harness.wait_for(lambda: [x for x in _session_entries(a, log_start, opened)
                                  if "/push " in x[2]] or None, 10, interval=0.2) or []
    assert len(e) == 2 and all(x[3] == 200 for x in e), \
        "stream transport: expected the idle push and one after it (200): %s" % e
