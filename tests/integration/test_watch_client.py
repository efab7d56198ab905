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
            + "".join(_location(p, target.port) for p in ("/wr", "/wn", "/wb", "/old"))
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


def _windows(a, paths):
    """{path: {endpoint: count}} of the requests of a window of WINDOW_S."""
    before = {p: _requests(a, p)[0] for p in paths}
    time.sleep(WINDOW_S)
    return {p: _diff(_requests(a, p)[0], before[p]) for p in paths}


def _joined_then_windows(a, routes):
    """routes: [(path, forward, n idle tunnels)]. Waits until the server holds
    (almost) none of the tunnels' requests (before the watch: a pull each,
    always; after it: a watch per forward), lets the requests of the joining
    settle (HTTP/2 logs a request when its stream is cleaned up, which may come
    a watch later), then counts a window's requests per path."""
    limit = 2 + len(routes)
    held = harness.wait_held_at_most(a, limit, IDLE_WAIT_S + 15, samples=2)
    assert held <= limit, ("%d idle tunnels: the server still holds %d requests after %d s "
                           "(before the watch: a pull each)\n%s"
                           % (sum(n for _, _, n in routes), held, IDLE_WAIT_S + 15,
                              "\n".join("client -v (%s):\n%s" % (p, fw.stderr_text())
                                        for p, fw, _ in routes)))
    time.sleep(POLL_S)
    return _windows(a, [p for p, _, _ in routes])


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


def _watched_round(a, routes, target, n):
    """routes: [(path, forward, what)]; n tunnels each idle into the watch, side
    by side; then the target's bytes and local bytes move."""
    socks = {p: harness.open_tunnels(fw.port, n) for p, fw, _ in routes}
    windows = _joined_then_windows(a, [(p, fw, n) for p, fw, _ in routes])
    for p, fw, _ in routes:
        _check_watched(fw, windows[p], n)
    every = [s for p, _, _ in routes for s in socks[p]]
    lat = harness.target_sends(target, every)
    for i, (p, _, what) in enumerate(routes):
        _report(what, n, windows[p], lat[i * n:(i + 1) * n])
    assert max(lat) < 10, lat
    harness.local_sends(every)
    _close(every)


def _close(socks):
    for s in socks:
        s.close()


@pytest.mark.rh_timeout(240)
def test_idle_batch_tunnels_wait_in_one_watch(module_apache, target, client_bin, tls):
    n = 150
    a = module_apache
    with _forward(client_bin, a.base_url + "/wr", tls) as fw:
        socks = harness.open_tunnels(fw.port, n)
        window = _joined_then_windows(a, [("/wr", fw, n)])["/wr"]
        _check_watched(fw, window, n)
        _, statuses = _requests(a, "/wr")
        assert set(statuses) <= {200}, statuses
        lat = harness.target_sends(target, socks)
        _report("watch", n, window, lat)
        assert max(lat) < 10, lat
        # and the tunnels go back to the watch, then local bytes go up
        window = _joined_then_windows(a, [("/wr", fw, n)])["/wr"]
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
        time.sleep(IDLE_WAIT_S)         # what joining the watch would take
        window = _windows(a, ("/old", "/wr"))
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
def test_watch_through_squid_and_buffering_nginx(module_apache, target, client_bin, tls,
                                                 workdir, plain_port):
    """Side by side, in the same idle time: tunnels through squid (CONNECT) to
    /wr, and through an nginx to /wn that buffers request bodies and (ignoring
    X-Accel-Buffering) responses: there a watch is a complete request and a
    complete answer, as a long-poll."""
    n = 40
    a = module_apache
    squid = im.Squid(os.path.join(workdir, "squid"), connect_ports=[a.port])
    ng = im.Nginx(os.path.join(workdir, "nginx"), plain_port, upstream_scheme="http",
                  ignore_accel_buffering=True)
    try:
        squid.start()
        ng.start()
        with _forward(client_bin, a.base_url + "/wr", tls, "--proxy", squid.url) as fw_sq, \
                Forward(client_bin, ng.url + "/wn", "echo", env=im.clean_env(),
                        extra_args=["--transport", "batch"]) as fw_ng:
            _watched_round(a, [("/wr", fw_sq, "watch through squid"),
                               ("/wn", fw_ng, "watch through nginx (buffering)")], target, n)
        assert any("CONNECT" in l for l in squid.access_lines()), squid.describe()
    finally:
        ng.stop()
        squid.stop()


@pytest.mark.rh_timeout(300)
def test_cut_or_dead_watch_loses_no_wake(module_apache, target, client_bin, tls):
    """Side by side, each forward through its own fault proxy: every connection
    of a forward fails at once while its tunnels wait in the watch (/wr: reset;
    /wb: a black hole, nothing passes, nothing ends), and the target writes right
    then: the watch is sent again (at once after a reset, 15 s past the poll time
    when silent), and every tunnel gets its bytes."""
    from faultproxy import FaultProxy
    n = 30
    a = module_apache
    modes = (("/wr", "rst", 10), ("/wb", "blackhole", 75))
    with FaultProxy(a.port, mode="rst", min_life=3600, max_life=3600, hold=600) as fp_rst, \
            FaultProxy(a.port, mode="blackhole", min_life=3600, max_life=3600,
                       hold=600) as fp_bh, \
            _forward(client_bin, "https://127.0.0.1:%d/wr" % fp_rst.port, tls) as fw_rst, \
            _forward(client_bin, "https://127.0.0.1:%d/wb" % fp_bh.port, tls) as fw_bh:
        fws = {"/wr": fw_rst, "/wb": fw_bh}
        socks = {p: harness.open_tunnels(fw.port, n) for p, fw in fws.items()}
        windows = _joined_then_windows(a, [(p, fw, n) for p, fw in fws.items()])
        for p, fw in fws.items():
            _check_watched(fw, windows[p], n)
        before = {p: _requests(a, p)[0] for p in fws}
        assert fp_rst.fire() >= 1 and fp_bh.fire() >= 1
        every = socks["/wr"] + socks["/wb"]
        lat = harness.target_sends(target, every, timeout=90)
        for i, (p, mode, bound) in enumerate(modes):
            after, _ = _requests(a, p)
            mine = lat[i * n:(i + 1) * n]
            _report("watch, every connection failed (%s)" % mode, n, windows[p], mine)
            assert _diff(after, before[p]).get("watch", 0) >= 1, (mode, before[p], after)
            assert max(mine) < bound, (mode, mine)
        harness.local_sends(every)
        _close(every)
