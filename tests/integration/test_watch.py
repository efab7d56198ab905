"""The watch endpoint (docs/PROTOCOL.md, watch): one long-poll for many idle
sessions, asked with the real curl of sessions opened with curl, against a
target this test drives. Under every MPM, and over HTTP/2 where mod_http2 runs:
the answer when a target sends, the empty answer after the poll timeout, a
newer watch taking the sessions of an older one, unknown sessions, the
refusals (400, 413, 405), no token in any log, and the watch's figures on
the status page in every format."""

import glob
import json
import os
import re
import socket
import threading
import time

import pytest

import harness
import test_async

POLL_S = 2          # RelayPollTimeout of the watch location
LONG_S = 20         # ... and of the one whose watches must not time out
WATCH_MAX = 4096    # RH_WATCH_MAX
LINE_MAX = 48 + 1 + 20 + 1   # RH_WATCH_LINE_MAX


class Target:
    """A listener whose accepted connections the test writes to."""

    def __init__(self):
        self.sock = harness.listener()
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout=10):
        self.sock.settimeout(timeout)
        c, _ = self.sock.accept()
        return c

    def stop(self):
        self.sock.close()


@pytest.fixture(scope="module")
def target():
    t = Target()
    yield t
    t.stop()


def _conf(port):
    """/wrelay: a short poll timeout (POLL_S); /wlong: 20 s, for waits that
    must not end by it."""
    loc = ("<Location %s>\n"
           "    SetHandler relay-https\n"
           "    RelayTarget w 127.0.0.1:%d\n"
           "    RelayPollTimeout %d\n"
           "</Location>\n")
    return ("LogLevel warn relay_https:trace8\n" + loc % ("/wrelay", port, POLL_S)
            + loc % ("/wlong", port, LONG_S))


def _apache(apache_factory, mpm, module_so, target):
    return apache_factory.get(mpm, module=module_so, extra_conf=_conf(target.port))


def _proto_args(proto):
    return ["--http2"] if proto == "h2" else ["--http1.1"]


def _open(a, target, tls, proto="h1", base="/wrelay"):
    """A session opened with curl: (token, the target's side of it)."""
    r = harness.curl(a.base_url + base + "/w/open", headers=["Relay-Version: 1"],
                     cacert=tls["ca"], extra=_proto_args(proto))
    assert r.status == 201, r
    tok = r.header("Relay-Session")
    assert tok and len(tok) == 48, r
    return tok, target.accept()


def _watch(a, tls, body, proto="h1", method="POST", max_time=POLL_S + 10, base="/wrelay",
           chunked=False):
    """One watch with curl: (result, seconds it took)."""
    t0 = time.monotonic()
    r = harness.curl(a.base_url + base + "/w/watch", method=method,
                     headers=["Relay-Version: 1", "Content-Type: text/plain"]
                     + (["Transfer-Encoding: chunked"] if chunked else []),
                     data=body if method == "POST" else None, cacert=tls["ca"],
                     max_time=max_time, extra=_proto_args(proto))
    return r, time.monotonic() - t0


class Later:
    """A watch running in a thread."""

    def __init__(self, *args, **kw):
        self.res = None
        self.th = threading.Thread(target=self._run, args=args, kwargs=kw, daemon=True)
        self.th.start()

    def _run(self, *args, **kw):
        self.res = _watch(*args, **kw)

    def done(self):
        return self.res is not None

    def wait(self, timeout):
        self.th.join(timeout)
        assert self.res is not None, "the watch did not answer in %s s" % timeout
        return self.res


def _lines(*pairs):
    return "".join("%s %d\n" % p for p in pairs).encode()


def _sid(tok):
    return tok[:16]


def _wake(tok, c, w):
    """The target of session tok (its side c) sends a byte: watch w answers,
    naming it."""
    c.sendall(b"!")
    r, _ = w.wait(10)
    assert r.status == 200 and r.body == ("%s data\n" % _sid(tok)).encode(), r


def _no_token_logged(a, tokens):
    logs = glob.glob(os.path.join(a.root, "logs", "*"))
    for path in logs:
        with open(path, "rb") as f:
            text = f.read()
        for tok in tokens:
            assert tok.encode() not in text, "token of %s in %s" % (_sid(tok), path)
            assert tok[16:].encode() not in text, "secret of %s in %s" % (_sid(tok), path)


MATRIX = [(m, p) for m in harness.MPMS for p in ("h1", "h2") if not (m == "prefork" and p == "h2")]


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm,proto", MATRIX, ids=["%s-%s" % x for x in MATRIX])
def test_watch_answers(apache_factory, mpm, proto, module_so, target, tls):
    a = _apache(apache_factory, mpm, module_so, target)
    (ta, ca), (tb, cb) = _open(a, target, tls, proto), _open(a, target, tls, proto)
    try:
        # nothing to send: empty after the poll timeout
        r, dt = _watch(a, tls, _lines((ta, 0), (tb, 0)), proto)
        assert r.status == 200, r
        assert r.body == b"", r
        assert POLL_S - 0.5 <= dt < POLL_S + 3, dt
        assert r.header("Content-Type").startswith("text/plain"), r
        assert r.header("Cache-Control") == "no-store", r
        assert r.header("Content-Length") == "0" or proto == "h2", r
        # the target sends while the watch waits: its session is named at once
        w = Later(a, tls, _lines((ta, 0), (tb, 0)), proto, max_time=40, base="/wlong")
        time.sleep(0.5)
        assert not w.done(), w.res
        t0 = time.monotonic()
        cb.sendall(b"hello")
        r, _ = w.wait(POLL_S + 10)
        assert r.status == 200, r
        assert r.body == ("%s data\n" % _sid(tb)).encode(), r
        assert time.monotonic() - t0 < 1.5
        # the bytes are still there: ready at once at ack 0, not at ack 5
        r, dt = _watch(a, tls, _lines((ta, 0), (tb, 0)), proto)
        assert r.body == ("%s data\n" % _sid(tb)).encode() and dt < 1.5, (r, dt)
        r, dt = _watch(a, tls, _lines((ta, 0), (tb, 5)), proto)
        assert r.body == b"" and dt >= POLL_S - 0.5, (r, dt)
        # a pull gets them (nothing was consumed)
        p = harness.curl(a.base_url + "/wrelay/w/pull",
                         headers=["Relay-Version: 1", "Relay-Session: " + tb, "Relay-Ack: 0",
                                  "Relay-Mode: batch"], cacert=tls["ca"],
                         extra=_proto_args(proto))
        assert p.status == 200 and b"hello" in p.body, p
        _no_token_logged(a, [ta, tb])
    finally:
        ca.close()
        cb.close()


@pytest.mark.rh_timeout(90)
def test_watch_supersede_and_gone(apache_factory, module_so, target, tls):
    a = _apache(apache_factory, "event", module_so, target)
    (ta, ca), (tb, cb) = _open(a, target, tls), _open(a, target, tls)
    try:
        w1 = Later(a, tls, _lines((ta, 0), (tb, 0)), max_time=40, base="/wlong")
        time.sleep(0.7)
        # a newer watch of both takes them: the older answers at once, empty
        w2 = Later(a, tls, _lines((ta, 0), (tb, 0)), max_time=40, base="/wlong")
        r1, dt1 = w1.wait(10)
        assert r1.status == 200 and r1.body == b"", r1
        assert dt1 < LONG_S - 5, dt1
        time.sleep(0.3)
        assert not w2.done(), w2.res
        ca.sendall(b"x")
        r2, _ = w2.wait(5)
        assert r2.body == ("%s data\n" % _sid(ta)).encode(), r2
        # a closed session and a token nobody has are gone, at once
        c = harness.curl(a.base_url + "/wrelay/w/close",
                         headers=["Relay-Version: 1", "Relay-Session: " + tb], cacert=tls["ca"])
        assert c.status == 204, c
        bogus = "00000000" + "00000001" + "ab" * 16
        r, dt = _watch(a, tls, _lines((tb, 0), (bogus, 0)))
        assert r.status == 200 and dt < 1.5, (r, dt)
        # (with several cores, each answers for its own: one answer all the same)
        assert sorted(r.body.splitlines()) == sorted(
            [("%s gone" % _sid(tb)).encode(), ("%s gone" % _sid(bogus)).encode()]), r
        # a bad secret of a live session is gone too
        bad = ta[:-1] + ("0" if ta[-1] != "0" else "1")
        r, _ = _watch(a, tls, _lines((bad, 1)))
        assert r.body == ("%s gone\n" % _sid(ta)).encode(), r
        _no_token_logged(a, [ta, tb])
    finally:
        ca.close()
        cb.close()


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_watch_refusals(apache_factory, module_so, target, tls, proto):
    a = _apache(apache_factory, "event", module_so, target)
    ta, ca = _open(a, target, tls)
    try:
        cases = [
            (b"", 400, "empty"),
            (("%s 0" % ta).encode(), 400, "malformed watch line 1"),
            (("%s x\n" % ta).encode(), 400, "malformed watch line 1"),
            (("%s 0\n%s\n" % (ta, ta[:20])).encode(), 400, "malformed watch line 2"),
            (("%s 0\n%s 3\n" % (ta, ta)).encode(), 400, "listed twice"),
            (("z" * 48 + " 0\n").encode(), 400, "malformed"),
            ("".join("%08x%08x%s 0\n" % (i + 1, 1, "ab" * 16) for i in range(WATCH_MAX + 1))
             .encode(), 400, "more than 4096"),
            (b"x" * (WATCH_MAX * LINE_MAX + 1), 413, "at most"),
        ]
        for body, status, says in cases:
            r, _ = _watch(a, tls, body, proto)
            assert r.status == status, (says, r)
            assert says.encode() in r.body, (says, r)
        if proto == "h1":
            # a chunked body (no Content-Length): read as it comes, bounded the same
            r, _ = _watch(a, tls, _lines((ta, 0)) * 2, chunked=True)
            assert r.status == 400 and b"listed twice" in r.body, r
            r, _ = _watch(a, tls, b"x" * (WATCH_MAX * LINE_MAX + 1), chunked=True)
            assert r.status == 413, r
            r, dt = _watch(a, tls, _lines((ta, 0)) + _lines(("0" * 48, 0)), chunked=True)
            assert r.status == 200 and r.body == b"0000000000000000 gone\n", r
        r, _ = _watch(a, tls, None, proto, method="GET")
        assert r.status == 405 and r.header("Allow") == "POST", r
        # none of them watched anything: a watch of the session still waits
        w = Later(a, tls, _lines((ta, 0)), proto, max_time=40, base="/wlong")
        time.sleep(0.5)
        assert not w.done(), w.res
        ca.sendall(b"y")
        r, _ = w.wait(5)
        assert r.body == ("%s data\n" % _sid(ta)).encode(), r
        _no_token_logged(a, [ta])
    finally:
        ca.close()


# two children of 4 threads, RelayAsync On, RelayMaxWorkers 4000
SMALL_EVENT = test_async.SMALL_EVENT
N_PARKED = 30


@pytest.mark.rh_timeout(120)
def test_watches_parked_hold_no_thread(apache_factory, module_so, target, tls):
    """RelayAsync on the event MPM: 30 waiting watches (one session each) on
    two children of 4 threads, which keep 2 each free for the site
    (RelayThreadReserve): a watch waiting on its thread would be refused
    (503) from the fifth on. Parked, all wait, the site answers, and each
    answers when its target sends."""
    a = apache_factory.get("event", module=module_so,
                           extra_conf=SMALL_EVENT + _conf(target.port))
    opened = [_open(a, target, tls, base="/wlong") for _ in range(N_PARKED)]
    try:
        ws = [Later(a, tls, _lines((tok, 0)), max_time=40, base="/wlong") for tok, _ in opened]
        time.sleep(2.0)
        early = [w.res for w in ws if w.done()]
        assert not early, "%d of %d watches answered early: %s" % (len(early), N_PARKED,
                                                                   early[:3])
        st, _, _ = harness.https_get(a.port, "/", timeout=5)
        assert st == 200, "the website did not answer with %d watches waiting" % N_PARKED
        for _, c in opened:
            c.sendall(b"!")
        for (tok, _), w in zip(opened, ws):
            r, _ = w.wait(10)
            assert r.status == 200 and r.body == ("%s data\n" % _sid(tok)).encode(), r
    finally:
        for _, c in opened:
            c.close()


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("async_", ["On", "Off"])
def test_watch_refused_by_the_core(apache_factory, module_so, target, tls, async_):
    """A waiting watch holds a worker of RelayMaxWorkers, as a long-poll: with
    2, a third waiting watch is refused 503 (Retry-After), parked or not, and
    the two others still answer."""
    a = apache_factory.get("event", module=module_so,
                           extra_conf="RelayMaxWorkers 2\nRelayAsync %s\n" % async_
                           + _conf(target.port))
    opened = [_open(a, target, tls, base="/wlong") for _ in range(3)]
    try:
        ws = [Later(a, tls, _lines((tok, 0)), max_time=40, base="/wlong")
              for tok, _ in opened[:2]]
        time.sleep(1.0)
        r, dt = _watch(a, tls, _lines((opened[2][0], 0)), base="/wlong")
        assert r.status == 503 and r.header("Retry-After"), r
        assert b"RelayMaxWorkers" in r.body and dt < 2, (r, dt)
        assert not any(w.done() for w in ws)
        for (tok, c), w in zip(opened, ws):
            _wake(tok, c, w)
    finally:
        for _, c in opened:
            c.close()


@pytest.mark.rh_timeout(90)
def test_watch_under_basic_auth(apache_factory, module_so, target, tls, tmp_path_factory):
    """The same Apache authentication as every endpoint: 401 without
    credentials; and where the location authenticates, a session is its
    opener's: another user's watch hears it gone, its opener's waits."""
    import intermediaries as im
    d = harness.www_tmpdir(tmp_path_factory, "watch-auth")
    pw = im.write_htpasswd(os.path.join(d, "htpasswd"), {"alice": "a-P4ss", "bob": "b-P4ss"})
    conf = im.basic_auth_location_conf("/wauth", {"w": "127.0.0.1:%d" % target.port}, pw)
    a = apache_factory.get("event", module=module_so, extra_conf=_conf(target.port) + conf)
    alice, bob = ["-u", "alice:a-P4ss"], ["-u", "bob:b-P4ss"]
    r = harness.curl(a.base_url + "/wauth/w/open", headers=["Relay-Version: 1"],
                     cacert=tls["ca"], extra=alice)
    assert r.status == 201, r
    tok = r.header("Relay-Session")
    c = target.accept()
    try:
        url = a.base_url + "/wauth/w/watch"
        body = _lines((tok, 0))
        # HTTP/1.1: over HTTP/2 Apache answers 401 before it reads the body and
        # resets the stream, and curl 7.88 then may report "Stream error in
        # the HTTP/2 framing layer" instead of the 401 (a CI run did)
        r = harness.curl(url, headers=["Relay-Version: 1"], data=body, cacert=tls["ca"],
                         extra=["--http1.1"])
        assert r.status == 401, r
        r = harness.curl(url, headers=["Relay-Version: 1"], data=body, cacert=tls["ca"],
                         extra=bob)
        assert r.status == 200 and r.body == ("%s gone\n" % _sid(tok)).encode(), r
        out = {}
        th = threading.Thread(target=lambda: out.update(r=harness.curl(
            url, headers=["Relay-Version: 1"], data=body, cacert=tls["ca"], extra=alice,
            max_time=30)), daemon=True)
        th.start()
        time.sleep(1.0)
        assert "r" not in out, out
        c.sendall(b"a")
        th.join(10)
        assert out["r"].status == 200 and out["r"].body == ("%s data\n" % _sid(tok)).encode(), out
    finally:
        c.close()


@pytest.mark.rh_timeout(120)
def test_watches_across_two_cores_parked(apache_factory, module_so, target, tls):
    """RelayCoreProcesses 2: watches of one session in each core (their
    tokens name the core) park too, on the two cores' sockets at once: 12 of
    them wait on two children of 4 threads (4 may wait on a thread), and each
    answers for whichever of its cores has data."""
    a = apache_factory.get("event", module=module_so,
                           extra_conf=SMALL_EVENT + "RelayCoreProcesses 2\n" + _conf(target.port))
    opened = [_open(a, target, tls, base="/wlong") for _ in range(30)]
    by_core = {}
    for tok, c in opened:
        by_core.setdefault(tok[:2], []).append((tok, c))
    assert len(by_core) == 2, sorted(by_core)
    pairs = list(zip(*by_core.values()))[:12]
    assert len(pairs) >= 8, {k: len(v) for k, v in by_core.items()}
    try:
        ws = [Later(a, tls, _lines((x[0], 0), (y[0], 0)), max_time=40, base="/wlong")
              for x, y in pairs]
        time.sleep(2.0)
        early = [w.res for w in ws if w.done()]
        assert not early, "%d of %d watches answered early: %s" % (len(early), len(ws), early[:3])
        for i, (pair, w) in enumerate(zip(pairs, ws)):
            tok, c = pair[i % 2]
            _wake(tok, c, w)
    finally:
        for _, c in opened:
            c.close()


STATUS_CONF = harness.STATUS_LOCATION
N_STATUS = 5


def _status_figures(a):
    """The watch's figures in each status format: {format: (sessions watched,
    watches waiting, answered with data, gone, empty)}; a format without
    them maps to None."""
    def get(path):
        r = harness.curl(a.base_url + path, method="GET")
        assert r.status == 200, r
        return r.body.decode()

    def ints(m):
        return tuple(int(x) for x in m.groups()) if m else None

    out = {}
    w = json.loads(get("/relay-status?json")).get("watch")
    out["json"] = w and (w["sessions"], w["waiting"], w["answeredData"], w["answeredGone"],
                         w["answeredEmpty"])
    out["html"] = ints(re.search(r"<th>watches \(sessions watched, waiting; answered: data, "
                                 r"gone, empty\)</th><td>(\d+), (\d+); (\d+), (\d+), (\d+)<",
                                 get("/relay-status")))
    auto = dict(l.split(": ", 1) for l in get("/server-status?auto").splitlines() if ": " in l)
    keys = ("RelayWatchSessions", "RelayWatchesWaiting", "RelayWatchesAnsweredData",
            "RelayWatchesAnsweredGone", "RelayWatchesAnsweredEmpty")
    out["auto"] = tuple(int(auto[k]) for k in keys) if all(k in auto for k in keys) else None
    out["mod_status"] = ints(re.search(
        r"(\d+) sessions in (\d+) waiting watches; watches answered: (\d+) with data, "
        r"(\d+) gone, (\d+) empty", get("/server-status")))
    return out


def _status_shows(a, want, what):
    """Every format shows want (within a few of the core's turns)."""
    got = harness.wait_for(lambda: (lambda f: f if all(v == want for v in f.values())
                                    else None)(_status_figures(a)), 5)
    assert got, "%s: want %s in every format, got %s" % (what, want, _status_figures(a))


@pytest.mark.rh_timeout(90)
def test_watch_on_the_status_page(apache_factory, module_so, target, tls):
    """A watch of 5 sessions shows as 5 watched and 1 waiting in the JSON, the
    HTML page, server-status?auto and server-status; the totals move by one
    when a watch answers with data, empty after its poll timeout (2 s), and
    gone; and nothing is left waiting after."""
    a = apache_factory.get("event", module=module_so,
                           extra_conf=_conf(target.port) + STATUS_CONF)
    opened = [_open(a, target, tls, base="/wlong") for _ in range(N_STATUS)]
    try:
        base = _status_figures(a)["json"]
        assert base and base[:2] == (0, 0), base
        d, g, e = base[2:]
        w = Later(a, tls, _lines(*[(tok, 0) for tok, _ in opened]), max_time=40, base="/wlong")
        _status_shows(a, (N_STATUS, 1, d, g, e), "a waiting watch")
        assert not w.done(), w.res
        _wake(opened[2][0], opened[2][1], w)
        _status_shows(a, (0, 0, d + 1, g, e), "answered with data")
        # the woken session's byte is acked: nothing ready, empty after POLL_S
        acks = [(tok, 1 if i == 2 else 0) for i, (tok, _) in enumerate(opened)]
        r, dt = _watch(a, tls, _lines(*acks))
        assert r.status == 200 and r.body == b"" and dt >= POLL_S - 0.5, (r, dt)
        _status_shows(a, (0, 0, d + 1, g, e + 1), "answered empty")
        bogus = "0000000f00000063" + "ab" * 16
        r, _ = _watch(a, tls, _lines((bogus, 0)))
        assert r.status == 200 and r.body == ("%s gone\n" % _sid(bogus)).encode(), r
        _status_shows(a, (0, 0, d + 1, g + 1, e + 1), "answered gone")
    finally:
        for _, c in opened:
            c.close()
