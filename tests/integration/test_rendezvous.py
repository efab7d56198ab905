"""Rendezvous (issue #15): `RelayService NAME` in a relay location; `relay-https serve
URL NAME --to HOST:PORT` offers a service from a machine with no inbound port, and
clients reach it like a target (`relay-https forward URL NAME`), both legs outbound
HTTPS only. Here: the answers before any serve (404, 503 with a reason), echo through a
service on every transport, many connections at once over two serves, a serve stopped
midway, Apache's Require on BASE/NAME/listen deciding who may serve, and the serve leg
through a buffering nginx in batch mode."""

import os
import signal
import subprocess
import threading
import time

import pytest

import harness
import intermediaries as im
from harness import Forward, curl, pump

MB = 1024 * 1024
USER, PASSWORD = "serveuser", "serve-P4ss"


class Serve:
    """A running `relay-https serve URL SERVICE --to HOST:PORT`."""

    def __init__(self, client, url, service, to, cacert=None, extra_args=(),
                 ready_timeout=15, expect_ready=True):
        cmd = [client, "serve", "-v", "--to", to]
        if cacert:
            cmd += ["--cacert", cacert]
        cmd += list(extra_args) + [url, service]
        self.cmd = cmd
        self.lines_ = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        harness._register(self.proc)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if expect_ready:
            ok = harness.wait_for(lambda: self.proc.poll() is not None
                                  or any("serving " in l for l in self.lines()), ready_timeout)
            assert ok and self.proc.poll() is None, \
                "serve did not start: %s\n%s" % (" ".join(cmd), self.text())

    def _read(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self._lock:
                self.lines_.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def lines(self):
        with self._lock:
            return list(self.lines_)

    def text(self):
        return "\n".join(self.lines()[-80:])

    def accepted(self):
        return sum(1 for l in self.lines() if " accepted for " in l)

    def stop(self):
        harness.kill_proc(self.proc)
        self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rdv-auth"))
    harness.make_traversable(d)
    return im.write_htpasswd(os.path.join(d, "htpasswd"), {USER: PASSWORD})


def _rdv_conf(htpasswd):
    return "\n".join([
        "<Location /rdv>",
        "    SetHandler relay-https",
        "    RelayService echosvc",
        "    RelayService never",
        "    RelayService authsvc",
        "    RelayService batchsvc",
        "    RelayService killsvc",
        "    RelayService manysvc",
        "    RelayService echosvc-stream",
        "    RelayService echosvc-batch",
        "    RelayService echosvc-duplex",
        "    RelayIdleTimeout 300",
        "</Location>",
        # who may serve authsvc: Apache's own Require on its listen endpoint only
        "<Location /rdv/authsvc/listen>",
        "    AuthType Basic",
        '    AuthName "serve"',
        '    AuthUserFile "%s"' % htpasswd,
        "    Require valid-user",
        "</Location>",
    ])


@pytest.fixture
def apache(apache_factory, module_so, targets, htpasswd):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=_rdv_conf(htpasswd))


def _url(a):
    return a.base_url + "/rdv"


def _echo_to(echo_server):
    return "127.0.0.1:%d" % echo_server.port


def test_unknown_and_unserved(apache, tls):
    """No name, no relay: 404 for an unknown name; a declared service no serve has
    listened for answers 503 with Relay-Reason no-server after a short wait, never
    a connection anywhere; a listen on a RelayTarget is 404."""
    r = curl(_url(apache) + "/nosuch/open", cacert=tls["ca"])
    assert r.status == 404, r
    t0 = time.monotonic()
    r = curl(_url(apache) + "/never/open", cacert=tls["ca"], max_time=20)
    took = time.monotonic() - t0
    assert r.status == 503, r
    assert r.header("Relay-Reason") == "no-server", r
    assert b"no server serves 'never'" in r.body, r
    assert took < 12, took
    r = curl(apache.relay_url + "/echo/listen", cacert=tls["ca"])
    assert r.status == 404, r
    r = curl(_url(apache) + "/never/listen", method="GET", cacert=tls["ca"])
    assert r.status == 405, r


@pytest.mark.parametrize("transport", ["stream", "batch", "duplex"])
def test_echo_through_service(apache, tls, client_bin, echo_server, transport):
    """Bytes through a service arrive intact, with the same transport on both legs."""
    xp = ["--transport", transport]
    svc = "echosvc-" + transport   # a service of its own: no listen of another test's serve
    with Serve(client_bin, _url(apache), svc, _echo_to(echo_server), cacert=tls["ca"],
               extra_args=xp) as sv, \
         Forward(client_bin, _url(apache), svc, cacert=tls["ca"], extra_args=xp) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=4 * MB, timeout=90)
        assert res["error"] is None, (res, fw.stderr_text(), sv.text())
        assert res["recv_sha"] == res["sent_sha"], res
        assert sv.accepted() == 1, sv.text()
        for line in sv.lines() + fw.lines():
            assert not any(len(w) == 48 and all(c in "0123456789abcdef" for c in w)
                           for w in line.split()), "a token in the log: " + line


def test_concurrent_over_two_serves(apache, tls, client_bin, echo_server):
    """Many connections at once through one service served by two processes: all
    intact, and both serves take a share."""
    n = 24
    to = _echo_to(echo_server)
    with Serve(client_bin, _url(apache), "manysvc", to, cacert=tls["ca"]) as s1, \
         Serve(client_bin, _url(apache), "manysvc", to, cacert=tls["ca"]) as s2, \
         Forward(client_bin, _url(apache), "manysvc", cacert=tls["ca"]) as fw:
        results = [None] * n

        def one(i):
            results[i] = pump("127.0.0.1", fw.port, nbytes=256 * 1024, timeout=120)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(150)
        bad = [r for r in results if not r or r["error"] or r["recv_sha"] != r["sent_sha"]]
        if bad:
            print("forward:\n%s\nserve 1:\n%s\nserve 2:\n%s"
                  % (fw.stderr_text(), s1.text(), s2.text()))
        assert not bad, bad[:3]
        assert s1.accepted() + s2.accepted() == n
        assert s1.accepted() > 0 and s2.accepted() > 0, (s1.accepted(), s2.accepted())


def test_serve_stopped_midway(apache, tls, client_bin, echo_server):
    """Two serves, connections spread over both, one serve stopped (SIGTERM) while
    bytes flow: every connection of the survivor completes intact; those of the
    stopped one end promptly (reset), none hangs and none gets a wrong byte; new
    connections go to the survivor."""
    n = 16
    to = _echo_to(echo_server)
    s1 = Serve(client_bin, _url(apache), "killsvc", to, cacert=tls["ca"])
    s2 = Serve(client_bin, _url(apache), "killsvc", to, cacert=tls["ca"])
    try:
        with Forward(client_bin, _url(apache), "killsvc", cacert=tls["ca"]) as fw:
            results = [None] * n

            def one(i):
                # ~6 s of traffic each, so the stop lands in the middle (with
                # 4 s, a loaded machine once let one of the stopped serve's
                # connections finish before its SIGTERM was acted on)
                results[i] = pump("127.0.0.1", fw.port, nbytes=3 * MB, timeout=90,
                                  rate=512 * 1024)

            ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            assert harness.wait_for(lambda: s1.accepted() + s2.accepted() == n, 20)
            survivor_share = s2.accepted()
            assert survivor_share > 0 and s1.accepted() > 0
            time.sleep(1.0)
            s1.proc.send_signal(signal.SIGTERM)
            for t in ts:
                t.join(100)
            intact = [r for r in results if r and not r["error"]
                      and r["recv_sha"] == r["sent_sha"]]
            ended = [r for r in results if r and r not in intact]
            assert len(intact) == survivor_share, (len(intact), survivor_share,
                                                   [r["error"] for r in ended])
            for r in ended:
                assert r["received"] < r["sent"] or r["recv_sha"] == r["sent_sha"], r
                assert r["elapsed"] < 60, r
            assert s1.proc.wait(15) == 0
            res = pump("127.0.0.1", fw.port, nbytes=MB, timeout=60)
            assert res["error"] is None and res["recv_sha"] == res["sent_sha"], res
    finally:
        s1.stop()
        s2.stop()


def test_require_on_listen(apache, tls, client_bin, echo_server):
    """Apache's Require on BASE/NAME/listen decides who may serve: a serve without
    credentials hears 401 and exits 5; with them it serves, and clients (no
    credentials: the open is not under that Require) reach the service."""
    sv = Serve(client_bin, _url(apache), "authsvc", _echo_to(echo_server), cacert=tls["ca"],
               expect_ready=False)
    try:
        assert sv.proc.wait(20) == 5, sv.text()
        assert any("HTTP 401" in l for l in sv.lines()), sv.text()
    finally:
        sv.stop()
    r = curl(_url(apache) + "/authsvc/listen", cacert=tls["ca"])
    assert r.status == 401, r
    with Serve(client_bin, _url(apache), "authsvc", _echo_to(echo_server), cacert=tls["ca"],
               extra_args=["-u", "%s:%s" % (USER, PASSWORD)]) as sv, \
         Forward(client_bin, _url(apache), "authsvc", cacert=tls["ca"]) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=MB, timeout=60)
        assert res["error"] is None and res["recv_sha"] == res["sent_sha"], (res, sv.text())


def test_serve_leg_through_buffering_nginx(apache, tls, client_bin, echo_server,
                                           tmp_path_factory):
    """The serve leg through nginx buffering both ways (it ignores X-Accel-Buffering),
    batch transport: listen answers are complete (Content-Length), and the bytes of
    the session arrive intact."""
    d = str(tmp_path_factory.mktemp("rdv-nginx"))
    harness.make_traversable(d)
    ng = im.Nginx(os.path.join(d, "nginx"), apache.port, ignore_accel_buffering=True)
    ng.start()
    try:
        with Serve(client_bin, ng.url + "/rdv", "batchsvc", _echo_to(echo_server),
                   extra_args=["--transport", "batch"]) as sv, \
             Forward(client_bin, _url(apache), "batchsvc", cacert=tls["ca"]) as fw:
            res = pump("127.0.0.1", fw.port, nbytes=2 * MB, timeout=90)
            assert res["error"] is None, (res, sv.text())
            assert res["recv_sha"] == res["sent_sha"], res
    finally:
        ng.stop()
