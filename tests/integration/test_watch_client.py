"""The watch (docs/PROTOCOL.md, watch; issue 17): a forwarder's idle batch
tunnels wait in one long-poll per route (`POST .../watch`) instead of one
long-poll each per RelayPollTimeout.

With a short RelayPollTimeout (3 s), N idle batch tunnels of one forward:
the access log shows a few watches and (almost) no pulls per poll period
(before: N pulls per period); bytes the target sends after the idle time
arrive intact within seconds; local bytes after it go up and come back; a
server without the endpoint (404 for .../watch, as an older module answers)
is noticed after one watch and its tunnels long-poll as before; --no-watch
never watches; and the same through squid (CONNECT) and a buffering nginx.
"""

import os
import socket
import statistics
import threading
import time

import pytest

import harness
import intermediaries as im
from harness import Forward

POLL_S = 3
# the server answers a poll within 1 s while the session moved data in the
# last RH_BUSY_WINDOW_MS (15 s): after that, two poll periods to join
IDLE_WAIT_S = 15 + 2 * POLL_S + 2
WINDOW_S = 3 * POLL_S


@pytest.fixture(scope="module")
def target():
    srv = harness.EchoServer()
    yield srv
    srv.stop()


def _location(path, port):
    return ("<Location %s>\n    SetHandler relay-https\n    RelayTarget echo 127.0.0.1:%d\n"
            "    RelayPollTimeout %d\n    RelayIdleTimeout 120\n</Location>\n"
            % (path, port, POLL_S))


@pytest.fixture(scope="module")
def plain_port():
    return harness.free_port()


@pytest.fixture(scope="module")
def _conf(target, plain_port):
    # /old is a server older than the endpoint: .../watch is 404 there (no
    # Relay-Reason), as from a module that does not know it
    return ("LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so\n"
            "RewriteEngine On\n"
            "RewriteRule \"^/old/[^/]+/watch$\" - [R=404]\n"
            + _location("/wr", target.port) + _location("/old", target.port)
            + im.plain_http_vhost_conf(plain_port))


@pytest.fixture(scope="module")
def _apache(apache_factory, module_so, targets, _conf):
    return apache_factory.get("event", module=module_so, targets=targets, extra_conf=_conf)


@pytest.fixture
def apache(apache_factory, module_so, targets, _conf, _apache):
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=_conf)
    assert a is _apache
    return a


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("watch-intermediaries"))
    harness.make_traversable(d)
    return d


def _requests(a, path):
    """{endpoint: count} of the relay log's requests below path, and the
    statuses of the watches."""
    counts, watch_status = {}, []
    for _, _, line, status in a.relay_log_entries():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith(path + "/"):
            continue
        ep = parts[1].rsplit("/", 1)[-1]
        counts[ep] = counts.get(ep, 0) + 1
        if ep == "watch":
            watch_status.append(status)
    return counts, watch_status


def _diff(after, before):
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


def _open(port, n):
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
    harness.echo_all(socks, b"hello")
    return socks


def _target_sends(target, socks, nbytes=65536, timeout=30):
    """The target writes nbytes (the same random bytes) on each of its
    connections at once; every tunnel gets them intact. Returns the latencies."""
    payload = os.urandom(nbytes)
    with target.lock:
        conns = list(target.conns)
    assert len(conns) >= len(socks), (len(conns), len(socks))
    lat = [None] * len(socks)
    t0 = time.monotonic()
    for c in conns:
        try:
            c.sendall(payload)
        except OSError:
            pass        # a connection of a tunnel that ended before this test
    deadline = t0 + timeout

    def reader(i, s):
        got = harness.read_until(s, nbytes, deadline)
        if got == payload:
            lat[i] = time.monotonic() - t0

    threads = [threading.Thread(target=reader, args=(i, s)) for i, s in enumerate(socks)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout + 5)
    bad = [i for i, v in enumerate(lat) if v is None]
    assert not bad, "%d of %d tunnels did not get the target's %d bytes intact" % (
        len(bad), len(socks), nbytes)
    return lat


def _local_sends(socks, nbytes=4096, timeout=30):
    """Each tunnel sends nbytes up after the idle time; the echo comes back."""
    t0 = time.monotonic()
    payloads = [os.urandom(nbytes) for _ in socks]
    for s, p in zip(socks, payloads):
        s.sendall(p)
    deadline = t0 + timeout
    for i, (s, p) in enumerate(zip(socks, payloads)):
        assert harness.read_until(s, nbytes, deadline) == p, "tunnel %d: echo after idle" % i
    return time.monotonic() - t0


def _idle_then_window(a, path):
    """Waits until the tunnels are idle past the busy window, then counts a
    window's requests."""
    time.sleep(IDLE_WAIT_S)
    before, _ = _requests(a, path)
    time.sleep(WINDOW_S)
    after, statuses = _requests(a, path)
    return _diff(after, before), statuses


def _close(socks):
    for s in socks:
        s.close()


def _report(what, n, window, lat):
    print("%s: %d idle tunnels, %d s window: %s; target's bytes after idle: median %.3f s, "
          "max %.3f s" % (what, n, WINDOW_S, dict(sorted(window.items())),
                          statistics.median(lat), max(lat)))


def _forward(client_bin, url, tls, *args):
    return Forward(client_bin, url, "echo", cacert=tls["ca"], env=im.clean_env(),
                   extra_args=["--transport", "batch"] + list(args))


def _check_watched(fw, window, n):
    # before: n pulls per poll period, 3 * n in the window
    assert window.get("pull", 0) <= n // 10, (
        "idle batch tunnels still long-poll: %s in %d s for %d tunnels\nclient -v:\n%s"
        % (window, WINDOW_S, n, fw.stderr_text()))
    assert window.get("watch", 0) >= 1, window
    # one group: a watch per poll period, and a few more as the set grows
    assert window.get("watch", 0) <= WINDOW_S // POLL_S + 6, window


def _watched_round(a, fw, target, n, what):
    """n tunnels idle into the watch; then the target's bytes and local bytes move."""
    socks = _open(fw.port, n)
    window, _ = _idle_then_window(a, "/wr")
    _check_watched(fw, window, n)
    lat = _target_sends(target, socks)
    _report(what, n, window, lat)
    assert max(lat) < 10, lat
    _local_sends(socks)
    _close(socks)


@pytest.mark.rh_timeout(240)
def test_idle_batch_tunnels_wait_in_one_watch(apache, target, client_bin, tls):
    n = 150
    a = apache
    with _forward(client_bin, a.base_url + "/wr", tls) as fw:
        socks = _open(fw.port, n)
        window, statuses = _idle_then_window(a, "/wr")
        _check_watched(fw, window, n)
        assert set(statuses) <= {200}, statuses
        lat = _target_sends(target, socks)
        _report("watch", n, window, lat)
        assert max(lat) < 10, lat
        # and the tunnels go back to the watch, then local bytes go up
        window, _ = _idle_then_window(a, "/wr")
        _check_watched(fw, window, n)
        up = _local_sends(socks)
        print("local bytes after idle: every echo back in %.3f s" % up)
        _close(socks)


@pytest.mark.rh_timeout(200)
def test_server_without_watch_long_polls(apache, target, client_bin, tls):
    """/old answers .../watch 404 like a module older than the endpoint: one
    watch, then the tunnels long-poll as before, and bytes still move."""
    n = 30
    a = apache
    with _forward(client_bin, a.base_url + "/old", tls) as fw:
        socks = _open(fw.port, n)
        window, _ = _idle_then_window(a, "/old")
        counts, statuses = _requests(a, "/old")
        assert statuses and set(statuses) == {404} and len(statuses) <= 2, (
            "the client tried no watch, or went on after the 404: %s" % statuses)
        assert window.get("pull", 0) >= n * (WINDOW_S // POLL_S - 1), window
        assert any("no watch endpoint" in l for l in fw.lines()), fw.stderr_text()
        lat = _target_sends(target, socks)
        _report("no watch (404)", n, window, lat)
        _local_sends(socks)
        _close(socks)


@pytest.mark.rh_timeout(200)
def test_no_watch_option(apache, target, client_bin, tls):
    n = 20
    a = apache
    with _forward(client_bin, a.base_url + "/wr", tls, "--no-watch") as fw:
        socks = _open(fw.port, n)
        window, _ = _idle_then_window(a, "/wr")
        assert window.get("watch", 0) == 0, window
        assert window.get("pull", 0) >= n * (WINDOW_S // POLL_S - 1), window
        lat = _target_sends(target, socks)
        _report("--no-watch", n, window, lat)
        _close(socks)


@pytest.mark.rh_timeout(240)
def test_watch_through_squid_connect(apache, target, client_bin, tls, workdir):
    n = 40
    a = apache
    squid = im.Squid(os.path.join(workdir, "squid"), connect_ports=[a.port])
    squid.start()
    try:
        with _forward(client_bin, a.base_url + "/wr", tls, "--proxy", squid.url) as fw:
            _watched_round(a, fw, target, n, "watch through squid")
        assert any("CONNECT" in l for l in squid.access_lines()), squid.describe()
    finally:
        squid.stop()


@pytest.mark.rh_timeout(240)
def test_watch_through_buffering_nginx(apache, target, client_bin, tls, workdir, plain_port):
    """nginx buffers request bodies and (ignoring X-Accel-Buffering) responses:
    a watch is a complete request and a complete answer, as a long-poll."""
    n = 40
    a = apache
    ng = im.Nginx(os.path.join(workdir, "nginx"), plain_port, upstream_scheme="http",
                  ignore_accel_buffering=True)
    ng.start()
    try:
        with Forward(client_bin, ng.url + "/wr", "echo", env=im.clean_env(),
                     extra_args=["--transport", "batch"]) as fw:
            _watched_round(a, fw, target, n, "watch through nginx (buffering)")
    finally:
        ng.stop()


@pytest.mark.rh_timeout(300)
@pytest.mark.parametrize("mode", ["rst", "blackhole"])
def test_cut_or_dead_watch_loses_no_wake(apache, target, client_bin, tls, mode):
    """Every connection of the forward fails at once while its tunnels wait in
    the watch (reset; or a black hole: nothing passes, nothing ends), and the
    target writes right then: the watch is sent again (at once after a reset,
    15 s past the poll time when silent), and every tunnel gets its bytes."""
    from faultproxy import FaultProxy
    n = 30
    a = apache
    with FaultProxy(a.port, mode=mode, min_life=3600, max_life=3600, hold=600) as fp:
        url = "https://127.0.0.1:%d/wr" % fp.port
        with _forward(client_bin, url, tls) as fw:
            socks = _open(fw.port, n)
            window, _ = _idle_then_window(a, "/wr")
            _check_watched(fw, window, n)
            before, _ = _requests(a, "/wr")
            assert fp.fire() >= 1
            lat = _target_sends(target, socks, timeout=90)
            after, _ = _requests(a, "/wr")
            _report("watch, every connection failed (%s)" % mode, n, window, lat)
            assert _diff(after, before).get("watch", 0) >= 1, (before, after)
            assert max(lat) < (10 if mode == "rst" else 75), lat
            _local_sends(socks)
            _close(socks)
