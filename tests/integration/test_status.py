"""The relay's status (issue 13): `SetHandler relay-https-status` answers JSON in
strelaysrv's vocabulary and an HTML page (checked in headless Chromium), and
mod_status shows a section and `server-status?auto` lines."""

import json
import os
import shutil
import subprocess
import time

import pytest

import harness
from harness import Forward, curl

STATUS_LOCATION = harness.STATUS_LOCATION


@pytest.fixture
def status_apache(apache_factory, module_so, targets):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=STATUS_LOCATION)


def _get(a, path, headers=(), method="GET"):
    return curl(a.base_url + path, method=method, headers=list(headers))


def _json(a):
    r = _get(a, "/relay-status?json")
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("application/json"), r
    return json.loads(r.body)


def test_json_vocabulary(status_apache):
    d = _json(status_apache)
    for key, kind in [("numActiveSessions", int), ("numConnections", int),
                      ("bytesProxied", int), ("kbps10s1m5m15m30m60m", list),
                      ("uptimeSeconds", int), ("startTime", str), ("version", str),
                      ("options", dict), ("targets", list), ("requests", dict),
                      ("refused", dict), ("resumes", int), ("integrityFailures", int),
                      ("core", dict)]:
        assert isinstance(d.get(key), kind), (key, d)
    assert len(d["kbps10s1m5m15m30m60m"]) == 6, d
    for opt in ("idleTimeout", "pollTimeout", "connectTimeout", "maxSessions",
                "maxWorkers", "openRate"):
        assert isinstance(d["options"].get(opt), int), (opt, d["options"])
    assert d["core"]["running"] is True, d
    assert d["options"]["maxSessions"] == 1024, d["options"]   # the harness' RelayMaxSessions
    # RelayResumeMemory's default, 1 GiB, in one core (what is held depends on
    # the tests that ran before on this Apache)
    rm = d.get("resumeMemory")
    assert isinstance(rm, dict) and rm.get("bound") == 1 << 30 \
        and isinstance(rm.get("held"), int) and isinstance(rm.get("waits"), int), d


@pytest.mark.rh_timeout(90)
def test_figures_follow_a_tunnel(status_apache, client_bin, tls):
    a = status_apache
    before = _json(a)
    n = 3 * 1024 * 1024
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        sock = harness.socket.create_connection(("127.0.0.1", fw.port), timeout=30)
        try:
            chunk = os.urandom(64 * 1024)
            got = 0
            for _ in range(n // len(chunk)):
                sock.sendall(chunk)
                want = got + len(chunk)
                while got < want:
                    b = sock.recv(want - got)
                    assert b, "the echo ended after %d bytes" % got
                    got += len(b)
            # the session is still open: a beat (1 s) brings the totals up to date
            def moved():
                d = _json(a)
                return d if (d["bytesProxied"] - before["bytesProxied"] >= 2 * n
                             and d["kbps10s1m5m15m30m60m"][0] > 0) else None
            d = harness.wait_for(moved, 10)
            assert d, ("bytesProxied did not grow by the %d bytes that went up and back, "
                       "or the 10 s rate stayed 0:\n%s"
                       % (2 * n, json.dumps(_json(a), indent=1)))
            assert d["numActiveSessions"] >= 1, d
            assert d["numConnections"] >= 1, d      # at least the tunnel's pull is held
            assert d["kbps10s1m5m15m30m60m"][0] > 0, d
            echo = [t for t in d["targets"] if t["name"] == "echo"]
            assert echo and echo[0]["sessionsOpened"] >= 1, d
            assert echo[0]["numActiveSessions"] >= 1, d
            assert echo[0]["bytesUp"] >= n and echo[0]["bytesDown"] >= n, d
        finally:
            sock.close()
    after = harness.wait_for(lambda: (lambda d: d if d["numActiveSessions"] == 0 else None)(
        _json(a)), 15)
    assert after, "the closed session still counts as active:\n%s" % json.dumps(_json(a))
    assert after["bytesProxied"] - before["bytesProxied"] >= 2 * n, after


def test_refusals_counted(status_apache):
    a = status_apache
    before = _json(a)["refused"]
    r = curl(a.relay_url + "/nosuchtarget/open")
    assert r.status == 404, r
    r = curl(a.relay_url + "/echo/pull", headers=["Relay-Session: " + "0" * 48, "Relay-Ack: 0"])
    assert r.status == 410, r
    after = _json(a)["refused"]
    assert after["unknownTarget"] == before["unknownTarget"] + 1, (before, after)
    assert after["unknownSession"] == before["unknownSession"] + 1, (before, after)


def test_bad_input(status_apache):
    a = status_apache
    r = _get(a, "/relay-status", method="POST")
    assert r.status == 405 and "GET" in (r.header("Allow") or ""), r
    r = _get(a, "/relay-status?<script>")
    assert r.status == 400 and b"unknown query" in r.body, r
    r = _get(a, "/relay-status", headers=["Accept: application/json"])
    assert r.status == 200 and json.loads(r.body)["version"], r
    r = _get(a, "/relay-status")
    assert r.status == 200 and r.header("Content-Type").startswith("text/html"), r


def test_mod_status_section(status_apache):
    a = status_apache
    r = _get(a, "/server-status?auto", method="GET")
    assert r.status == 200, r
    lines = dict(l.split(": ", 1) for l in r.body.decode().splitlines() if ": " in l)
    for k in ("RelayCoreRunning", "RelayActiveSessions", "RelayConnections",
              "RelayBytesProxied", "RelaySessionsOpened", "RelayResumeHeld",
              "RelayResumeBound", "RelayResumeWaits"):
        assert k in lines, (k, r.body[-800:])
    assert lines["RelayCoreRunning"] == "1", lines
    r = _get(a, "/server-status", method="GET")
    assert r.status == 200 and b"mod_relay_https" in r.body, r.body[-800:]


def _chromium():
    for c in ("chromium", "chromium-browser"):
        p = shutil.which(c)
        if p:
            return p
    return None


@pytest.mark.rh_timeout(120)
def test_html_in_a_real_browser(status_apache, tmp_path):
    """Headless Chromium renders the page: the table, both graphs, no external
    request (the page has none to make)."""
    browser = _chromium()
    if not browser:
        pytest.skip("Debian's chromium is not installed (quickstart installs it)")
    a = status_apache
    home = tmp_path / "home"
    home.mkdir()
    time.sleep(2.2)   # a few beats: both graphs have points
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
           "--user-data-dir=%s" % (tmp_path / "profile"), "--dump-dom",
           a.base_url + "/relay-status"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90,
                       env=dict(os.environ, HOME=str(home)))
    dom = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and "<h1>mod_relay_https status</h1>" in dom, (
        r.returncode, dom[:500], r.stderr.decode(errors="replace")[-1500:])
    assert dom.count("<svg") == 2 and "<polyline" in dom, dom[:3000]
    assert "active sessions" in dom and "relay core" in dom and "running" in dom, dom[:3000]
    for external in ("<script", "<link", "src=", "@import", "url("):
        assert external not in dom, ("the page loads something: %s" % external, dom[:3000])


@pytest.mark.rh_timeout(60)
def test_resumes_counted(status_apache):
    """A pull that takes over a pull the server still holds (a resume after a
    cut the server did not notice) counts as a resume."""
    a = status_apache
    before = _json(a)["resumes"]
    r = curl(a.relay_url + "/echo/open", headers=["Relay-Resume: 1"])
    assert r.status == 201, r
    token = r.header("Relay-Session")
    hdrs = ["-H", "Relay-Session: " + token, "-H", "Relay-Ack: 0"]
    first = subprocess.Popen([harness.CURL, "-sS", "-k", "-N", "--max-time", "20", "-X", "POST",
                              "-H", "Content-Length: 0"] + hdrs + [a.relay_url + "/echo/pull"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)   # the first pull is held by the core
        second = subprocess.Popen([harness.CURL, "-sS", "-k", "-N", "--max-time", "3", "-X",
                                   "POST", "-H", "Content-Length: 0"] + hdrs
                                  + [a.relay_url + "/echo/pull"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        got = harness.wait_for(lambda: _json(a)["resumes"] > before, 10)
        second.wait(timeout=10)
    finally:
        first.kill()
        first.wait()
    assert got, "a pull taken over did not count as a resume: %r" % _json(a)["resumes"]
    curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
