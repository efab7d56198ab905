"""RelayAsync (issue 17): on the event MPM, HTTP/1.1 relay requests that wait
(stream pulls, long-polls, idle push bodies) are parked in the child's reactor
thread instead of holding a worker thread each.

An Apache with 2 children of 4 worker threads (8 threads in all for requests)
holds 300 idle tunnels: every tunnel echoes, the children's thread count is
the same with 300 tunnels held as before, and the website beside the relay
still answers. A graceful restart with parked tunnels moving a paced pattern
loses and doubles no byte, and the old children go once their tunnels end."""

import os
import re
import signal
import socket
import threading
import time

import pytest

import harness
from harness import Forward
import pattern

SMALL_EVENT = """
<IfModule mpm_event_module>
    StartServers 2
    ServerLimit 8
    ThreadsPerChild 4
    MaxRequestWorkers 8
    MinSpareThreads 1
    MaxSpareThreads 8
    AsyncRequestWorkerFactor 200
</IfModule>
RelayAsync On
RelayMaxWorkers 4000
RelayMaxSessions 2048
"""

N_TUNNELS = 300


def _children(a):
    parent = a.proc.pid
    cores = set(a.core_pids().values()) | {a.core_pid()}    # RH_CORE_PROCESSES: several
    return [p for p in a.pids() if p != parent and p not in cores]


def _threads(pids):
    n = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                n += int(next(l for l in f if l.startswith("Threads:")).split()[1])
        except (OSError, StopIteration):
            pass
    return n


def _site_ok(a):
    st, _, _ = harness.https_get(a.port, "/", timeout=5)
    return st == 200


@pytest.fixture
def async_apache(apache_factory, module_so, targets):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=SMALL_EVENT)


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("transport", ["stream", "batch"])
def test_300_idle_tunnels_on_8_threads(async_apache, transport, client_bin, tls):
    a = async_apache
    assert harness.wait_for(lambda: len(_children(a)) >= 2, 10)
    time.sleep(1.0)
    before = _threads(_children(a))
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--http1.1", "--transport", transport]) as fw:
        socks = harness.open_tunnels(fw.port, N_TUNNELS, b"tunnel")
        try:
            time.sleep(2.0)
            held = _threads(_children(a))
            assert _site_ok(a), "the website did not answer with %d tunnels held" % N_TUNNELS
            # every tunnel still carries bytes after the hold, both ways
            harness.echo_all(socks, b"again")
            children = _children(a)
        finally:
            for s in socks:
                s.close()
    assert held == before, ("threads of the children: %d before, %d with %d tunnels held"
                            % (before, held, N_TUNNELS))
    assert len(children) <= 3, "the MPM started children for idle tunnels: %s" % children


@pytest.mark.rh_timeout(240)
def test_graceful_restart_with_parked_tunnels_loses_no_byte(async_apache, client_bin, tls):
    """Tunnels parked in a child's reactor carry a paced pattern across a
    graceful restart: every byte arrives once and in order, the old child
    serves its parked requests to their end and then exits."""
    a = async_apache
    results = []
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--http1.1", "--transport", "stream"]) as fw:
        idle = harness.open_tunnels(fw.port, 50, b"tunnel")
        old = set(_children(a))

        def run():
            results.append(pattern.pump_pattern("127.0.0.1", fw.port, 4 * 1024 * 1024,
                                                rate=1024 * 1024, timeout=120))
        ts = [threading.Thread(target=run) for _ in range(3)]
        for t in ts:
            t.start()
        time.sleep(1.5)
        a.proc.send_signal(signal.SIGUSR1)          # apachectl -k graceful
        time.sleep(1.0)
        for t in ts:
            t.join(150)
        harness.echo_all(idle, b"after")                   # the parked idle ones too
        for s in idle:
            s.close()
    assert len(results) == 3
    for res in results:
        assert res["first_bad_offset"] is None and res["received"] == 4 * 1024 * 1024, res
    # the old generation's children go once their parked requests are over
    assert harness.wait_for(lambda: not (old & set(_children(a))), 30), \
        "old children still there: %s" % (old & set(_children(a)))


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_configtest_says_where_relayasync_cannot_park(apache_factory, module_so, targets, mpm):
    """RelayAsync On under prefork (or worker) works, as the blocking path, and
    configtest says so with the directive's place; under event it says nothing."""
    a = apache_factory.get(mpm, module=module_so, targets=targets, start=False,
                           extra_conf="RelayAsync On\n# configtest %d" % time.monotonic_ns())
    r = a.configtest()
    assert r.returncode == 0, r.stdout
    if mpm == "prefork":
        assert "RH3005" in r.stdout and "prefork MPM" in r.stdout, r.stdout
        assert "%s:" % a.conf_path in r.stdout, r.stdout
    else:
        assert "RH3005" not in r.stdout, r.stdout


def _echo_pattern(s, start, end):
    """Pattern bytes [start, end) through the tunnel s and back, checked."""
    data = pattern.pattern_bytes(start, end)
    s.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        chunk = s.recv(min(65536, len(data) - len(got)))
        assert chunk, "tunnel closed at %d of %d echoed bytes" % (len(got), len(data))
        got += chunk
    assert bytes(got) == data, "echo differs from %s" % pattern.fmt_offset(
        start + next(i for i in range(len(data)) if got[i] != data[i]))


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("transport", ["stream", "batch"])
def test_parked_connection_gives_back_its_free_memory(apache_factory, module_so, targets,
                                                       client_bin, tls, transport):
    """A connection that parks keeps no free memory: the blocks its allocator
    kept from the bytes it moved (and, for a long-poll, from the request that
    ended) are given back when it parks, OpenSSL's buffers are freed, and the
    tunnel moves bytes intact after waking, again and again."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=SMALL_EVENT + "LogLevel warn relay_https:trace2\n")
    mark = a.error_log_mark()
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--http1.1", "--transport", transport]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=60)
        try:
            off = 0
            for _ in range(3):
                _echo_pattern(s, off, off + 2 * 1024 * 1024)     # blocks freed ...
                off += 2 * 1024 * 1024
                time.sleep(1.0)                                  # ... and parked
            _echo_pattern(s, off, off + 1000)
        finally:
            s.close()
    log = a.error_log_text(mark)
    given = [int(m) for m in re.findall(r"park: (\d+) free blocks of the connection given back",
                                        log)]
    assert given and max(given) > 0, "no parked connection gave back a block:\n%s" % (
        a.error_log_tail(40, mark))
    # no MaxMemFree here: mod_ssl keeps OpenSSL's buffers, the park frees them
    assert "TLS buffers freed" in log, a.error_log_tail(40, mark)


@pytest.mark.rh_timeout(120)
def test_idle_stream_tunnel_wakes_for_heartbeats_and_moves_bytes(apache_factory, module_so,
                                                                 targets, client_bin, tls):
    """An idle stream tunnel's pull wakes for the core's heartbeats (every 1 s
    in the 15 s busy window, then after 20 s of silence), passes each on and
    parks again at once, the heartbeat written by the child's reactor itself (no
    worker woken); after the first idle one the tunnel still moves bytes intact."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=SMALL_EVENT + "LogLevel warn relay_https:trace2\n")
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--http1.1", "--transport", "stream"]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=60)
        try:
            _echo_pattern(s, 0, 100000)
            mark = a.error_log_mark()
            beats = lambda: a.error_log_text(mark).count("heartbeat passed on by the reactor")
            time.sleep(18)                          # past the busy window's heartbeats
            busy = beats()
            # the first heartbeat of the idle session, 20 s after the busy window's last
            idle = harness.wait_for(lambda: beats() > busy, 25, interval=0.5)
            time.sleep(0.5)                         # its park
            text = a.error_log_text(mark)
            parks = text.count("TLS buffers freed")
            quick = text.count("heartbeat passed on by the reactor")
            _echo_pattern(s, 100000, 300000)
        finally:
            s.close()
    # each heartbeat's wake parks again: its park frees the TLS buffers anew
    assert parks >= 2, a.error_log_tail(40, mark)
    assert quick >= 2 and "by the reactor: client gone" not in text, a.error_log_tail(40, mark)
    assert idle, "no heartbeat after the busy window's %d:\n%s" % (busy,
                                                                  a.error_log_tail(40, mark))
