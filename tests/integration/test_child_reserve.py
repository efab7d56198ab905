"""RelayThreadReserve: relay requests that wait long never take the last
threads of an httpd child.

The event MPM serves a kept-alive connection only in the child that accepted
it. Duplex tunnels (HTTP/2 streams cannot park) each hold a thread of their
child; once they held all of them, the site's kept-alive connections in that
child, and the relay's own short requests on pooled connections, waited for
ever (the event MPM serves a kept-alive connection only in its child, and
accepts no new one into a child without a free thread) (the bench's duplex ramp stopped at 550-950 tunnels that way, "open:
timed out after 30 s"). One child of 8 threads here, a reserve of 2: six
tunnels get in, the others are answered 503 and try again, the site answers
on its kept-alive connection and on a new one, and a tunnel that ends makes
room for a waiting one. Without the reserve (RH_TEST_THREAD_RESERVE=0) the
site's requests time out. (The worker MPM holds a thread for every kept-alive
connection whatever the relay does: not tested here.)"""

import http.client
import os
import re
import select
import socket
import ssl
import time

import pytest

import harness
from harness import Forward

RESERVE = int(os.environ.get("RH_TEST_THREAD_RESERVE", "2"))   # 0: see it fail
ONE_CHILD = """
<IfModule mpm_event_module>
    StartServers 1
    ServerLimit 1
    ThreadsPerChild 8
    MaxRequestWorkers 8
    MinSpareThreads 1
    MaxSpareThreads 8
    # the relay's pooled connections must not close the listener (event's
    # connection limit, ThreadsPerChild + idle threads x this factor)
    AsyncRequestWorkerFactor 50
</IfModule>
<IfModule http2_module>
    H2MaxWorkers 16
</IfModule>
KeepAliveTimeout 60
RelayThreadReserve %d
RelayMaxWorkers 0
""" % RESERVE

LIMIT = 8 - RESERVE
TRIED = 10


def _site_get(conn):
    """GET / on a kept-alive connection. The event MPM may close idle
    kept-alive connections when its threads were all busy for a moment (a
    burst of refused requests); a browser then sends again on a new connection,
    and so does this, once."""
    for attempt in (1, 2):
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if attempt == 2:
                raise
            conn.close()


def _echoed(socks, pending, seconds, want=None):
    """Reads the echoes of the lines sent on socks (None: skipped) until
    seconds pass or want of them are back: the indexes that got theirs back
    whole. A tunnel the client gave up (refused too often) just closes."""
    done, closed = set(), set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (want is None or len(done) < want):
        live = [s for i, s in enumerate(socks)
                if i not in done and i not in closed and s is not None]
        if not live:
            break
        r, _, _ = select.select(live, [], [], 0.2)
        for s in r:
            i = socks.index(s)
            chunk = s.recv(4096)
            if not chunk:
                closed.add(i)
                continue
            assert pending[i].startswith(chunk), "tunnel %d: a wrong echo %r" % (i, chunk)
            pending[i] = pending[i][len(chunk):]
            if not pending[i]:
                done.add(i)
    return done


@pytest.mark.rh_timeout(120)
def test_duplex_tunnels_leave_the_reserve_free(apache_factory, module_so, targets, client_bin,
                                               tls):
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=ONE_CHILD)
    ctx = ssl.create_default_context(cafile=tls["ca"])
    site = http.client.HTTPSConnection("127.0.0.1", a.port, context=ctx, timeout=5)
    assert _site_get(site) == 200          # kept alive from here on, in the one child
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex", "--http2"]) as fw:
        socks = [socket.create_connection(("127.0.0.1", fw.port), timeout=30)
                 for _ in range(TRIED)]
        lines = [b"tunnel %02d\n" % i for i in range(TRIED)]
        for s, line in zip(socks, lines):
            s.sendall(line)
        pending = list(lines)
        first = _echoed(socks, pending, 5.0)
        # the site answers on its kept-alive connection and on a new one
        try:
            st_kept = _site_get(site)
        except (socket.timeout, OSError) as e:
            st_kept = "no answer (%s)" % e
        st_new, _, _ = harness.https_get(a.port, "/", timeout=5, cafile=tls["ca"])
        assert st_kept == 200, "kept-alive site connection: %s" % st_kept
        assert st_new == 200, "new site connection: %s" % st_new
        assert len(first) == LIMIT, ("%d tunnels echoed, the child may give %d: %s"
                                     % (len(first), LIMIT, fw.stderr_text()[-3000:]))
        # two tunnels end: two of the waiting ones get their threads
        for i in sorted(first)[:2]:
            socks[i].close()
            socks[i] = None
        rest = [s if i not in first else None for i, s in enumerate(socks)]
        later = _echoed(rest, pending, 20.0, want=2)
        assert len(later) == 2, ("after two tunnels ended %d more echoed: %s"
                                 % (len(later), fw.stderr_text()[-3000:]))
        for s in socks:
            if s is not None:
                s.close()
    site.close()
    log = harness._read(a.relay_log)
    refused = re.findall(r'"POST /relay/echo/duplex HTTP/2.0" 503', log)
    assert refused, "no duplex was refused 503:\n" + log[-2000:]


WAITING = 2


@pytest.mark.rh_timeout(120)
def test_refused_duplex_goes_again_at_once(apache_factory, module_so, targets, client_bin, tls):
    """A duplex refused 503 (the child is full) while its body had nothing to
    send goes again after the Retry-After, not after the next heartbeat.
    libcurl 7.88 stops sending on an error answer but ends the transfer only
    once its send is unpaused; the client unpaused a quiet body only for its
    heartbeat, 20 s on, so a tunnel refused once or twice waited 20-40 s for
    its echo while other children had room (the bench's duplex ramp stopped at
    90-98 tunnels that way with ThreadsPerChild 32). Here: the child is full,
    two more tunnels are refused for a few seconds, two tunnels end, and both
    waiting ones must echo well before a heartbeat could have freed them."""
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=ONE_CHILD)
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex", "--http2", "-v"]) as fw:
        socks = [socket.create_connection(("127.0.0.1", fw.port), timeout=30)
                 for _ in range(LIMIT)]
        lines = [b"tunnel %02d\n" % i for i in range(LIMIT + WAITING)]
        for s, line in zip(socks, lines):
            s.sendall(line)
        pending = list(lines)
        first = _echoed(socks, pending, 10.0, want=LIMIT)
        assert len(first) == LIMIT, ("%d of %d tunnels echoed: %s"
                                     % (len(first), LIMIT, fw.stderr_text()[-3000:]))
        for i in range(LIMIT, LIMIT + WAITING):
            s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
            s.sendall(lines[i])
            socks.append(s)
        # refused, a few times each (Retry-After: 1)
        early = _echoed([None] * LIMIT + socks[LIMIT:], pending, 4.0)
        assert not early, "a tunnel got in while the child was full: %s" % sorted(early)
        for i in range(WAITING):
            socks[i].close()
            socks[i] = None
        # a heartbeat comes 20 s after the body's last bytes: 10 s tells the two apart
        later = _echoed([None] * LIMIT + socks[LIMIT:], pending, 10.0, want=WAITING)
        refusals = [l for l in fw.lines() if "duplex: HTTP 503" in l]
        assert len(later) == WAITING, (
            "%d of %d refused tunnels echoed within 10 s of the room freeing (%d refusals "
            "seen): %s" % (len(later), WAITING, len(refusals), fw.stderr_text()[-3000:]))
        for s in socks:
            if s is not None:
                s.close()
    log = harness._read(a.relay_log)
    assert re.findall(r'"POST /relay/echo/duplex HTTP/2.0" 503', log), log[-2000:]


def _spares_conf(min_spare):
    # four children of 8 threads at most; each takes 6 tunnels (reserve 2)
    return """
<IfModule mpm_event_module>
    StartServers 1
    ServerLimit 4
    ThreadsPerChild 8
    MaxRequestWorkers 32
    MinSpareThreads %d
    MaxSpareThreads 32
</IfModule>
RelayThreadReserve 2
""" % min_spare


@pytest.mark.rh_timeout(60)
def test_min_spare_threads_that_stop_new_children_are_named(apache_factory, module_so,
                                                            targets):
    """httpd counts a full child's reserved threads as spare: with MinSpareThreads
    at most RelayThreadReserve x (children - 1) it starts no more children once
    that many are full, and every new tunnel gets 503 until one ends (the bench's
    duplex ramp stopped at 299 tunnels: 10 children x 30, MinSpareThreads 16).
    The module says so at start; enough spare threads, and it says nothing."""
    low = apache_factory.get("event", module=module_so, targets=targets,
                             extra_conf=_spares_conf(4))
    text = low.error_log_text()
    assert "RH2101" in text and "MinSpareThreads 4" in text, text[-2000:]
    assert "MinSpareThreads 8 or more" in text, text[-2000:]
    low.stop()
    enough = apache_factory.get("event", module=module_so, targets=targets,
                                extra_conf=_spares_conf(8))
    assert "RH2101" not in enough.error_log_text()
