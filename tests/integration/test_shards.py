"""Several relay cores (RelayCoreProcesses, issue 17): one core process holds two
or three descriptors per tunnel under its hard RLIMIT_NOFILE, so the sessions are
spread over several cores, each with its own socket, table and heartbeat. Here,
with 3 cores on every MPM: sessions spread and the status page shows every core;
a SIGKILLed core is started again and only its own tunnels end (clearly, never
with a wrong byte) while the others' keep moving; the per-client session limit
holds across cores; a rendezvous meets in one core; graceful restarts keep every
core's tunnels; an upgrade hands every core over and stop ends them all."""

import hashlib
import json
import os
import shutil
import signal
import socket
import threading
import time

import pytest

import harness
from harness import Forward, curl, pump
from test_rendezvous import Serve
from test_skeleton import open_session

MB = 1024 * 1024
NCORES = 3
CONF = "\n".join([
    "RelayCoreProcesses %d" % NCORES,
    harness.STATUS_LOCATION,
    "<Location /rdv>",
    "    SetHandler relay-https",
    "    RelayService shardsvc",
    "</Location>",
])


@pytest.fixture
def sharded(apache_factory, mpm, module_so, targets):
    return apache_factory.get(mpm, module=module_so, targets=targets, extra_conf=CONF)


def _status(a):
    # right after a graceful restart the listener may refuse for a moment (curl 7)
    end = time.monotonic() + 10
    r = curl(a.base_url + "/relay-status?json", method="GET")
    while r.rc == 7 and time.monotonic() < end:
        time.sleep(0.2)
        r = curl(a.base_url + "/relay-status?json", method="GET")
    assert r.status == 200, r
    return json.loads(r.body)


def _shard(token):
    """The core a token names: the top byte of its slot field."""
    return int(token[:8], 16) >> 24


def _close(a, token):
    r = curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token])
    assert r.status == 204, r


def _paced(fw, size, rate, timeout):
    payload = os.urandom(size)
    res = {}

    def run():
        res.update(pump("127.0.0.1", fw.port, payload=payload, timeout=timeout, rate=rate))

    t = threading.Thread(target=run)
    t.start()
    return t, payload, res


def _wait_cores(a, n=NCORES, timeout=10):
    assert harness.wait_for(lambda: len(a.core_pids()) == n, timeout), a.error_log_tail(20)
    return a.core_pids()


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm", harness.MPMS)
def test_sessions_spread_and_status_shows_every_core(sharded, mpm):
    """With no per-client limit a new session goes to the core with the most room:
    9 sessions, 3 on each core; the token names its core; the status page sums them
    and lists each core with its pid and its sessions."""
    a = sharded
    pids = _wait_cores(a)
    base = {c["index"]: c["numActiveSessions"] for c in _status(a)["cores"]}
    tokens = [open_session(a.relay_url)[0] for _ in range(9)]
    try:
        shards = [_shard(t) for t in tokens]
        assert sorted(set(shards)) == list(range(NCORES)), shards
        st = _status(a)
        assert len(st["cores"]) == NCORES, st["cores"]
        for c in st["cores"]:
            assert c["running"] and c["pid"] == pids[c["index"]], (c, pids)
            assert c["numActiveSessions"] - base[c["index"]] == shards.count(c["index"]), st
        assert st["numActiveSessions"] == sum(c["numActiveSessions"] for c in st["cores"])
        assert st["core"]["running"], st["core"]
        assert st["options"]["maxSessions"] >= 1024, st["options"]
        r = curl(a.base_url + "/relay-status", method="GET")
        assert r.status == 200 and b"3 of 3 processes running" in r.body, r.body[:2000]
        r = curl(a.base_url + "/server-status?auto", method="GET")
        assert b"RelayCoreProcesses: 3" in r.body and b"RelayCoreRunning: 1" in r.body, r
    finally:
        for t in tokens:
            _close(a, t)


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", harness.MPMS)
def test_killed_core_respawns_others_keep_moving(sharded, mpm, client_bin, tls):
    """One transfer per core; one core SIGKILLed: httpd starts it again (the
    others keep their pids), its tunnel ends with a clear error and only a prefix
    of the right bytes, the tunnels of the other cores arrive whole."""
    a = sharded
    pids = _wait_cores(a)
    size = 24 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        runs = []
        base = {c["index"]: c["numActiveSessions"] for c in _status(a)["cores"]}
        for i in range(NCORES):
            before = sum(c["numActiveSessions"] for c in _status(a)["cores"])
            runs.append(_paced(fw, size, 4 * MB, 150))
            assert harness.wait_for(lambda: sum(c["numActiveSessions"]
                                                for c in _status(a)["cores"]) > before, 10)
        per = {c["index"]: c["numActiveSessions"] - base[c["index"]]
               for c in _status(a)["cores"]}
        assert all(per[k] == 1 for k in range(NCORES)), per
        victim = 1
        mark = a.error_log_mark()
        os.kill(pids[victim], signal.SIGKILL)
        assert harness.wait_for(lambda: a.core_pids().get(victim) not in (None, pids[victim]),
                                10), a.error_log_tail(20)
        now = a.core_pids()
        assert all(now[k] == pids[k] for k in range(NCORES) if k != victim), (pids, now)
        assert "core 1 of 3; the others go on" in a.error_log_text(mark), a.error_log_tail(20)
        for t, _, _ in runs:
            t.join(170)
            assert not t.is_alive(), "a tunnel hung after a core died"
        whole = [r for _, p, r in runs if r["error"] is None and r["received"] == size
                 and r["recv_sha"] == hashlib.sha256(p).hexdigest()]
        cut = [(p, r) for _, p, r in runs if not (r["error"] is None and r["received"] == size)]
        assert len(whole) == NCORES - 1 and len(cut) == 1, [r for _, _, r in runs]
        p, r = cut[0]
        assert hashlib.sha256(p[:r["received"]]).hexdigest() == r["recv_sha"], \
            "wrong bytes after the core died"
        assert harness.wait_for(lambda: any("session" in l and ("lost" in l or "gone" in l
                                                                 or "410" in l)
                                            for l in fw.lines()), 10), fw.stderr_text()
        st = _status(a)
        assert all(c["running"] for c in st["cores"]), st["cores"]
        # the new core takes sessions again
        small = pump("127.0.0.1", fw.port, nbytes=MB, timeout=30)
        assert small["error"] is None and small["recv_sha"] == small["sent_sha"], small


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm", ["event"])
def test_client_session_limit_holds_across_cores(apache_factory, mpm, module_so, targets):
    """RelayMaxSessionsPerClient 4 over 3 cores: a client's sessions all live in
    the core its key names, so the fifth is refused (429), as with one core."""
    a = apache_factory.get(mpm, module=module_so, targets=targets,
                           extra_conf=CONF + "\nRelayMaxSessionsPerClient 4")
    _wait_cores(a)
    tokens = [open_session(a.relay_url)[0] for _ in range(4)]
    try:
        assert len(set(_shard(t) for t in tokens)) == 1, tokens
        r = curl(a.relay_url + "/echo/open")
        assert r.status == 429, r
    finally:
        for t in tokens:
            _close(a, t)
    token, _ = open_session(a.relay_url)
    _close(a, token)


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_rendezvous_meets_in_one_core(sharded, mpm, tls, client_bin, echo_server):
    """A serve's listens and the clients' opens of a service go to the core of the
    service's name: 6 connections through it, all intact."""
    a = sharded
    _wait_cores(a)
    url = a.base_url + "/rdv"
    with Serve(client_bin, url, "shardsvc", "127.0.0.1:%d" % echo_server.port,
               cacert=tls["ca"]) as sv, \
         Forward(client_bin, url, "shardsvc", cacert=tls["ca"]) as fw:
        for _ in range(6):
            res = pump("127.0.0.1", fw.port, nbytes=512 * 1024, timeout=60)
            assert res["error"] is None and res["recv_sha"] == res["sent_sha"], \
                (res, fw.stderr_text(), sv.text())
        assert sv.accepted() == 6, sv.text()


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", harness.MPMS)
def test_graceful_restart_keeps_every_core(sharded, mpm, client_bin, tls):
    """A paced transfer on each core through two graceful restarts: every byte
    arrives, every core keeps its pid."""
    a = sharded
    pids = _wait_cores(a)
    size = 16 * MB
    mark = a.error_log_mark()
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        runs = []
        for _ in range(NCORES):
            runs.append(_paced(fw, size, 4 * MB, 150))
            time.sleep(0.3)
        per = {c["index"]: c["numActiveSessions"] for c in _status(a)["cores"]}
        assert all(per[k] >= 1 for k in range(NCORES)), per
        for _ in range(2):
            time.sleep(0.8)
            a.proc.send_signal(signal.SIGUSR1)      # apachectl -k graceful
        for t, p, r in runs:
            t.join(170)
            assert not t.is_alive(), "a tunnel hung across graceful restarts"
            assert r["error"] is None and r["received"] == size, (r, fw.stderr_text())
            assert r["recv_sha"] == hashlib.sha256(p).hexdigest(), r
    log = a.error_log_text(mark)
    assert log.count("kept across the restart") >= 2, a.error_log_tail(30, mark)
    assert "died" not in log, a.error_log_tail(30, mark)
    assert a.core_pids() == pids, (a.core_pids(), pids)


def _core_pid_list(a, n=NCORES, timeout=20):
    """The cores' pids from the status page, once every core says it runs. A
    core's pid there is 0 until the forked process has started (dropped its
    privileges, set its nice value), which under load comes well after httpd
    logged the fork (RH1004, what _wait_cores waits for; the same window as in
    test_nice). A list read in it holds a 0, and `_alive(0)` is false. "An old
    core did not wait for its session" (full run of 2026-12-06; not reproduced
    in 18 runs under load) came while the error_log shows every old core
    running until the client closed their sessions after the failure: the list
    held a pid that was no live core, and this is the one way found."""
    got = []

    def ready():
        cores = _status(a)["cores"]
        got[:] = [c["pid"] for c in cores]
        return len(cores) == n and all(c["running"] and c["pid"] > 0 for c in cores)
    assert harness.wait_for(ready, timeout), ("the status page does not show %d running "
                                              "cores: pids %s\n%s" % (n, got,
                                                                      a.error_log_tail(20)))
    return list(got)


@pytest.mark.rh_timeout(180)
def test_upgrade_hands_every_core_over_and_stop_ends_all(tmp_path, tls, module_so, targets,
                                                         client_bin):
    """A new module file and a graceful restart with 3 cores: 3 new cores serve new
    sessions, each old core keeps the tunnel it carries (a word still echoes
    through each) and ends with it; apachectl stop then ends every core."""
    from test_lifecycle import _alive, _graceful, _start_with_module_copy
    so, a = _start_with_module_copy(tmp_path, tls, module_so, targets, CONF)
    try:
        _wait_cores(a)
        old = _core_pid_list(a)
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
            socks = []
            for i in range(NCORES):
                s = socket.create_connection(("127.0.0.1", fw.port), timeout=20)
                s.sendall(b"before")
                assert s.recv(100) == b"before"
                socks.append(s)
            per = [c["numActiveSessions"] for c in _status(a)["cores"]]
            assert per == [1] * NCORES, per
            shutil.copy(module_so, so + ".new")
            os.rename(so + ".new", so)
            mark = a.error_log_mark()
            _graceful(a)
            assert harness.wait_for(lambda: "RH1016" in a.error_log_text(mark), 10), \
                a.error_log_tail(20, mark)
            new = _core_pid_list(a)
            assert not set(new) & set(old), (old, new)
            assert all(_alive(p) for p in old), "an old core did not wait for its session"
            for s in socks:
                s.sendall(b"after")
                assert s.recv(100) == b"after"
            token, _ = open_session(a.relay_url)
            _close(a, token)
            for s in socks:
                s.close()
        assert harness.wait_for(lambda: not any(_alive(p) for p in old), 30), \
            a.error_log_tail(20)
        assert harness.wait_for(lambda: a.error_log_text(mark).count("RH1017") == NCORES, 10), \
            a.error_log_tail(20)
        assert all(_alive(p) for p in new)
    finally:
        a.stop()
    assert not any(_alive(p) for p in new), "a core outlived apachectl stop"
