"""Idle stream and duplex tunnels wait in the watch (issue 17; docs/PROTOCOL.md,
watch; ARCHITECTURE.md, the client's watch).

An idle stream tunnel held a stream pull on the server (a TLS connection with
a heartbeat every 20 s) and, until --idle-push parked it, a push. Now, once
both directions are quiet for --idle-push with every byte confirmed, the
tunnel gives its down request up and joins its route's watch, as an idle batch
tunnel does. Checked with the real client and the server's own count of the
requests it holds (the status page's numConnections): N idle tunnels of each
transport go from N held requests to the watch's one, make no pulls, pushes,
acks or duplexes while idle, and bytes either way after the idle time arrive
intact; the target's bytes also while the server still holds the given-up
response (written into a connection nobody reads: sent again from the ack).
"""

import os
import socket
import time

import pytest

import harness
import intermediaries as im
from harness import Forward

POLL_S = 3
IDLE_PUSH_S = 2
N = 30


@pytest.fixture(scope="module")
def target():
    srv = harness.EchoServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def module_apache_conf(target):
    return ("<Location /ws>\n    SetHandler relay-https\n    RelayTarget echo 127.0.0.1:%d\n"
            "    RelayPollTimeout %d\n    RelayIdleTimeout 120\n</Location>\n"
            % (target.port, POLL_S) + harness.STATUS_LOCATION)


def _requests(a):
    counts = {}
    for _, _, line, _status in a.relay_log_entries():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("/ws/"):
            ep = parts[1].rsplit("/", 1)[-1]
            counts[ep] = counts.get(ep, 0) + 1
    return counts


def _wait_watched(a, fw, n, timeout=45):
    """The server holds (almost) none of the tunnels' requests any more: the
    watch and maybe a request not yet noticed as gone. Returns the count."""
    held = harness.wait_held_at_most(a, 3, timeout)
    assert held <= 3, ("%d idle tunnels: the server still holds %d requests after %d s "
                       "(before: one pull or duplex each)\nclient -v:\n%s"
                       % (n, held, timeout, fw.stderr_text()[-6000:]))
    return held


def _quiet_window(a, seconds=POLL_S + 1):
    # an HTTP/2 request is logged when its stream is cleaned up, which may come
    # a watch or two later: the last requests before joining settle first
    time.sleep(POLL_S)
    before = _requests(a)
    time.sleep(seconds)
    after = _requests(a)
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    busy = {k: v for k, v in diff.items() if k != "watch" and v}
    assert not busy, "idle watched tunnels made requests: %s\n%s" % (diff, "\n".join(
        "%s %s" % (l, st) for _, _, l, st in a.relay_log_entries()[-20:]))
    return diff


TRANSPORTS = [
    ("stream", ["--transport", "stream"]),
    ("duplex", ["--transport", "duplex"]),
    ("auto", []),
]


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("name,args", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_idle_tunnels_wait_in_the_watch(module_apache, target, client_bin, tls, name, args):
    a = module_apache
    with Forward(client_bin, a.base_url + "/ws", "echo", cacert=tls["ca"], env=im.clean_env(),
                 extra_args=args + ["--idle-push", str(IDLE_PUSH_S)]) as fw:
        socks = harness.open_tunnels(fw.port, N)
        busy = harness.relay_held(a)
        held = _wait_watched(a, fw, N)
        window = _quiet_window(a)
        assert window.get("watch", 0) >= 1, window
        print("%s: %d tunnels; the server held %d requests with data moving, %d once idle; "
              "a quiet window: %s" % (name, N, busy, held, window))
        harness.target_sends(target, socks)
        # idle again, then the local side speaks first
        _wait_watched(a, fw, N)
        harness.local_sends(socks)
        # and once more, the target's bytes just after the tunnels joined (the
        # given-up responses may still be held by the server: their bytes go
        # into connections nobody reads, and come again from the ack)
        _wait_watched(a, fw, N)
        harness.target_sends(target, socks)
        for s in socks:
            s.close()


@pytest.mark.rh_timeout(180)
def test_worker_mpm_and_the_first_bytes_after_joining(apache_factory, module_so, targets,
                                                     module_apache_conf, target, client_bin,
                                                     tls):
    """The worker MPM waits with a thread per request (no reactor): the given-up
    pulls end there too, and the target's bytes right after the tunnels joined
    (whether or not the server has noticed yet: the core pumps into a pull until
    its handler hears the client went; tests/unit test_watch_beside_a_given_up_
    stream_pull covers that order) reach every tunnel intact."""
    a = apache_factory.get("worker", module=module_so, targets=targets,
                           extra_conf=module_apache_conf)
    n = 12
    with Forward(client_bin, a.base_url + "/ws", "echo", cacert=tls["ca"], env=im.clean_env(),
                 extra_args=["--transport", "stream", "--idle-push", str(IDLE_PUSH_S),
                             "-v"]) as fw:
        socks = harness.open_tunnels(fw.port, n)
        joined = lambda: sum("waits in the watch (no stream pull)" in l for l in fw.lines())
        assert harness.wait_for(lambda: joined() >= n, 30), (
            "%d of %d tunnels joined the watch\n%s" % (joined(), n, fw.stderr_text()))
        held = harness.relay_held(a)
        harness.target_sends(target, socks, nbytes=256 * 1024)
        print("worker: %d tunnels joined; the server held %d requests when the target "
              "wrote" % (n, held))
        _wait_watched(a, fw, n)
        harness.local_sends(socks)
        for s in socks:
            s.close()


FAULTS = [("stream", "rst"), ("stream", "blackhole"), ("duplex", "rst")]


@pytest.mark.rh_timeout(300)
@pytest.mark.parametrize("xp,mode", FAULTS, ids=["%s-%s" % f for f in FAULTS])
def test_faults_while_watched_lose_no_byte(module_apache, target, client_bin, tls, xp, mode):
    """Every connection of the forward fails at once (reset; or a black hole:
    nothing passes, nothing ends) while its idle stream or duplex tunnels wait
    in the watch, and the target writes right then: the watch goes again, and
    every tunnel gets the bytes intact; local bytes after it go up and back."""
    from faultproxy import FaultProxy
    a = module_apache
    n = 16
    with FaultProxy(a.port, mode=mode, min_life=3600, max_life=3600, hold=600) as fp:
        url = "https://127.0.0.1:%d/ws" % fp.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"], env=im.clean_env(),
                     extra_args=["--transport", xp, "--idle-push", str(IDLE_PUSH_S)]) as fw:
            socks = harness.open_tunnels(fw.port, n)
            _wait_watched(a, fw, n)
            assert fp.fire() >= 1
            harness.target_sends(target, socks, nbytes=128 * 1024, timeout=90)
            harness.local_sends(socks)
            for s in socks:
                s.close()


@pytest.mark.rh_timeout(180)
def test_duplex_after_a_bulk_upload_waits_in_the_watch(module_apache, target, client_bin, tls):
    """A duplex tunnel's bulk upload moves to a stream push (duplex_split): the
    duplex then carries down alone, its body ended. Idle after it, the tunnel
    joins the watch too, and bytes both ways after the idle time arrive."""
    import threading
    a = module_apache
    n = 3
    nbytes = 24 << 20
    with Forward(client_bin, a.base_url + "/ws", "echo", cacert=tls["ca"], env=im.clean_env(),
                 extra_args=["--transport", "duplex", "--idle-push", str(IDLE_PUSH_S),
                             "-v"]) as fw:
        socks = [socket.create_connection(("127.0.0.1", fw.port), timeout=60)
                 for _ in range(n)]
        payload = os.urandom(nbytes)
        senders = [threading.Thread(target=s.sendall, args=(payload,)) for s in socks]
        for th in senders:
            th.start()
        deadline = time.monotonic() + 90
        for i, s in enumerate(socks):
            got = harness.read_until(s, nbytes, deadline)
            assert got == payload, "tunnel %d: %d of %d bytes echoed" % (i, len(got), nbytes)
        for th in senders:
            th.join(10)
        assert any("the stream push goes on" in l for l in fw.lines()), (
            "no upload moved to a stream push:\n" + fw.stderr_text())
        joined = lambda: sum("waits in the watch (no duplex)" in l for l in fw.lines())
        assert harness.wait_for(lambda: joined() >= n, 30), (
            "%d of %d tunnels joined the watch\n%s" % (joined(), n, fw.stderr_text()))
        harness.target_sends(target, socks)
        harness.local_sends(socks)
        for s in socks:
            s.close()


def _cycles(port, seconds, seed, out):
    """One tunnel: pattern bytes up in bursts of 1-64 KiB, each echo checked as
    it comes (the first wrong offset named), quiet gaps of 0-2.5 s between
    (past --idle-push 1 s the tunnel joins the watch, and the next burst wakes
    it), until `seconds` have passed."""
    import random
    from pattern import PatternChecker, pattern_bytes
    rng = random.Random(seed)
    chk = PatternChecker()
    off = 0
    end = time.monotonic() + seconds
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        while time.monotonic() < end and chk.ok:
            k = rng.randint(1, 64 << 10)
            s.sendall(pattern_bytes(off, off + k))
            got = harness.read_until(s, k, time.monotonic() + 60)
            chk.feed(got)
            off += k
            if len(got) < k:
                out["error"] = "%d of %d echoed at offset %d" % (len(got), k, off - k)
                break
            time.sleep(rng.choice((0, 0, 0.2, 1.5, 2.5)))
        s.close()
    except OSError as e:
        out["error"] = "offset %d: %s" % (off, e)
    out["bytes"] = off
    if not chk.ok:
        out["error"] = "first wrong byte at offset %d (%s)" % (chk.first_bad, chk.shape)


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("xp", ["stream", "duplex"])
def test_idle_and_wake_cycles_under_faults(module_apache, client_bin, tls, xp):
    """Bursts and quiet gaps past --idle-push through a fault proxy that cuts
    every connection after 0.5-3 s (reset, FIN, black hole, half-dead, cuts
    inside headers): tunnels go into the watch and out again many times,
    while their pulls, pushes, duplexes and watches are cut; every byte of
    every tunnel's echo is checked against the offset pattern, and every
    burst must come back within 60 s. (It found a push ended to park whose
    answer a black hole took: the up direction waited a minute for it,
    park_unstick.)"""
    import threading
    from faultproxy import FaultProxy
    a = module_apache
    n = 4
    with FaultProxy(a.port, mode="mix", seed=1234 + len(xp),
                    mix_modes=("rst", "fin", "blackhole", "halfdead", "cut_req_headers",
                               "cut_resp_headers")) as fp:
        url = "https://127.0.0.1:%d/ws" % fp.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"], env=im.clean_env(),
                     extra_args=["--transport", xp, "--idle-push", "1", "-v"]) as fw:
            outs = [{} for _ in range(n)]
            ths = [threading.Thread(target=_cycles, args=(fw.port, 12, 77 + i, outs[i]))
                   for i in range(n)]
            for th in ths:
                th.start()
            for th in ths:
                th.join(200)
            joins = sum("waits in the watch (no " in l for l in fw.lines())
            wakes = sum("leaves the watch" in l for l in fw.lines())
            print("%s: %d tunnels, bytes %s, %d joins, %d wakes, faults %s"
                  % (xp, n, [o.get("bytes") for o in outs], joins, wakes, fp.stats()))
            bad = [(i, o["error"]) for i, o in enumerate(outs) if o.get("error")]
            assert not bad, "%s (seed %d)\n%s" % (bad, fp.seed, fw.stderr_text())
            assert joins >= n and wakes >= n, (joins, wakes, fw.stderr_text())
