"""The watch (docs/PROTOCOL.md, watch; issue 17): a forwarder's idle batch
tunnels wait in one long-poll per route (`POST .../watch`) instead of one
long-poll each per RelayPollTimeout.

With a short RelayPollTimeout (3 s), N idle batch tunnels of one forward:
once the server holds none of their requests any more (its status page), the
access log shows a few watches and (almost) no pulls per poll period (before:
N pulls per period, and a request held for each tunnel); bytes the target sends after the idle time
arrive intact within seconds; local bytes after it go up and come back; a
server without the endpoint (404 for .../watch, as an older module answers)
is noticed after one watch and its tunnels long-poll as before; --no-watch
never watches; and the same through squid (CONNECT) and a buffering nginx.
"""

import os
import statistics
import time

import pytest

import harness
import intermediaries as im
from harness import Forward

POLL_S = 3
# the server answers a poll within 1 s while the session moved data in the
# last RH_BUSY_WINDOW_MS (15 s): after that, two poll periods to join (the
# tests whose tunnels must not join wait this long; the others until they did)
IDLE_WAIT_S = 15 + 2 * POLL_S + 2
# without the watch: n pulls in each poll period of it
WINDOW_S = 2 * POLL_S


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
def module_apache_conf(target, plain_port):
    # /old is a server older than the endpoint: .../watch is 404 there (no
    # Relay-Reason), as from a module that does not know it
    return ("LoadModule rewrite_module /usr/lib/apache2/modules/mod_rewrite.so\n"
            "RewriteEngine On\n"
            "RewriteRule \"^/old/[^/]+/watch$\" - [R=404]\n"
            + _location("/wr", target.port) + _location("/old", target.port)
            + harness.STATUS_LOCATION + im.plain_http_vhost_conf(plain_port))


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


def _window(a, path):
    before, _ = _requests(a, path)
    time.sleep(WINDOW_S)
    after, statuses = _requests(a, path)
    return _diff(after, before), statuses


def _idle_then_window(a, path):
    """Waits the time idle tunnels take to join the watch (whether they do or
    not), then counts a window's requests."""
    time.sleep(IDLE_WAIT_S)
    return _window(a, path)


def _joined_then_window(a, path, fw, n):
    """Waits until the server holds (almost) none of the n idle tunnels'
    requests (before the watch: a pull each, always), lets the requests of the
    joining settle (HTTP/2 logs a request when its stream is cleaned up, which
    may come a watch later), then counts a window's requests."""
    held = harness.wait_held_at_most(a, 3, IDLE_WAIT_S + 15, samples=2)
    assert held <= 3, ("%d idle tunnels: the server still holds %d requests after %d s "
                       "(before the watch: a pull each)\nclient -v:\n%s"
                       % (n, held, IDLE_WAIT_S + 15, fw.stderr_text()))
    time.sleep(POLL_S)
    return _window(a, path)


def _report(what, n, window, lat):
    print("%s: %d idle tunnels, %d s window: %s; target's bytes after idle: median %.3f s, "
          "max %.3f s" % (what, n, WINDOW_S, dict(sorted(window.items())),
                          statistics.median(lat), max(lat)))


def _forward(client_bin, url, tls, *args):
    return Forward(client_bin, url, "echo", cacert=tls["ca"], env=im.clean_env(),
                   extra_args=["--transport", "batch"] + list(args))


def _check_watched(fw, window, n):
    # before: n pulls per poll period, 2 * n in the window
    assert window.get("pull", 0) <= n // 10, (
        "idle batch tunnels still long-poll: %s in %d s for %d tunnels\nclient -v:\n%s"
        % (window, WINDOW_S, n, fw.stderr_text()))
    assert window.get("watch", 0) >= 1, window
    # one group: a watch per poll period, and a few more as the set grows
    assert window.get("watch", 0) <= WINDOW_S // POLL_S + 6, window


def _watched_round(a, fw, target, n, what):
    """n tunnels idle into the watch; then the target's bytes and local bytes move."""
    socks = harness.open_tunnels(fw.port, n)
    window, _ = _joined_then_window(a, "/wr", fw, n)
    _check_watched(fw, window, n)
    lat = harness.target_sends(target, socks)
    _report(what, n, window, lat)
    assert max(lat) < 10, lat
    harness.local_sends(socks)
    _close(socks)


def _close(socks):
    for s in socks:
        s.close()


@pytest.mark.rh_timeout(240)
def test_idle_batch_tunnels_wait_in_one_watch(module_apache, target, client_bin, tls):
    n = 150
    a = module_apache
    with _forward(client_bin, a.base_url + "/wr", tls) as fw:
        socks = harness.open_tunnels(fw.port, n)
        window, statuses = _joined_then_window(a, "/wr", fw, n)
        _check_watched(fw, window, n)
        assert set(statuses) <= {200}, statuses
        lat = harness.target_sends(target, socks)
        _report("watch", n, window, lat)
        assert max(lat) < 10, lat
        # and the tunnels go back to the watch, then local bytes go up
        window, _ = _joined_then_window(a, "/wr", fw, n)
        _check_watched(fw, window, n)
        up = harness.local_sends(socks)
        print("local bytes after idle: every echo back in %.3f s" % up)
        _close(socks)


@pytest.mark.rh_timeout(200)
def test_without_the_watch_tunnels_long_poll(module_apache, target, client_bin, tls):
    """Side by side, in the same idle time: /old answers .../watch 404 like a
    module older than the endpoint (one watch, then the tunnels long-poll as
    before, and bytes still move), and --no-watch on /wr never watches."""
    n_old, n_nw = 30, 20
    a = module_apache
    with _forward(client_bin, a.base_url + "/old", tls) as fw_old, \
            _forward(client_bin, a.base_url + "/wr", tls, "--no-watch") as fw_nw:
        socks_old = harness.open_tunnels(fw_old.port, n_old)
        socks_nw = harness.open_tunnels(fw_nw.port, n_nw)
        time.sleep(IDLE_WAIT_S)
        before = {p: _requests(a, p)[0] for p in ("/old", "/wr")}
        time.sleep(WINDOW_S)
        window = {p: _diff(_requests(a, p)[0], before[p]) for p in ("/old", "/wr")}
        _, statuses = _requests(a, "/old")
        assert statuses and set(statuses) == {404} and len(statuses) <= 2, (
            "the client tried no watch, or went on after the 404: %s" % statuses)
        assert window["/old"].get("pull", 0) >= n_old * (WINDOW_S // POLL_S - 1), window
        assert any("no watch endpoint" in l for l in fw_old.lines()), fw_old.stderr_text()
        assert window["/wr"].get("watch", 0) == 0, window
        assert window["/wr"].get("pull", 0) >= n_nw * (WINDOW_S // POLL_S - 1), window
        lat = harness.target_sends(target, socks_old + socks_nw)
        _report("no watch (404)", n_old, window["/old"], lat[:n_old])
        _report("--no-watch", n_nw, window["/wr"], lat[n_old:])
        harness.local_sends(socks_old)
        _close(socks_old + socks_nw)


@pytest.mark.rh_timeout(240)
def test_watch_through_squid_connect(module_apache, target, client_bin, tls, workdir):
    n = 40
    a = module_apache
    squid = im.Squid(os.path.join(workdir, "squid"), connect_ports=[a.port])
    squid.start()
    try:
        with _forward(client_bin, a.base_url + "/wr", tls, "--proxy", squid.url) as fw:
            _watched_round(a, fw, target, n, "watch through squid")
        assert any("CONNECT" in l for l in squid.access_lines()), squid.describe()
    finally:
        squid.stop()


@pytest.mark.rh_timeout(240)
def test_watch_through_buffering_nginx(module_apache, target, client_bin, tls, workdir,
                                       plain_port):
    """nginx buffers request bodies and (ignoring X-Accel-Buffering) responses:
    a watch is a complete request and a complete answer, as a long-poll."""
    n = 40
    a = module_apache
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
def test_cut_or_dead_watch_loses_no_wake(module_apache, target, client_bin, tls, mode):
    """Every connection of the forward fails at once while its tunnels wait in
    the watch (reset; or a black hole: nothing passes, nothing ends), and the
    target writes right then: the watch is sent again (at once after a reset,
    15 s past the poll time when silent), and every tunnel gets its bytes."""
    from faultproxy import FaultProxy
    n = 30
    a = module_apache
    with FaultProxy(a.port, mode=mode, min_life=3600, max_life=3600, hold=600) as fp:
        url = "https://127.0.0.1:%d/wr" % fp.port
        with _forward(client_bin, url, tls) as fw:
            socks = harness.open_tunnels(fw.port, n)
            window, _ = _joined_then_window(a, "/wr", fw, n)
            _check_watched(fw, window, n)
            before, _ = _requests(a, "/wr")
            assert fp.fire() >= 1
            lat = harness.target_sends(target, socks, timeout=90)
            after, _ = _requests(a, "/wr")
            _report("watch, every connection failed (%s)" % mode, n, window, lat)
            assert _diff(after, before).get("watch", 0) >= 1, (before, after)
            assert max(lat) < (10 if mode == "rst" else 75), lat
            harness.local_sends(socks)
            _close(socks)
