"""Answers a path holds back (issue 10: never a hang): a request went through
whole, the server answered it, and the answer never comes back (a proxy that
stalls a connection's down direction, a NAT that black-holes it). The bytes it
carried are confirmed by other requests; the tunnel must go on without its
answer, every byte once and in order (pattern.py names the first wrong offset).

And an open that waits (for a serve) while its HTTP/2 connection is closed
under it: it goes again, as after any cut before its answer.

The fault proxy (faultproxy.py) stalls the down direction of every connection
open at a moment the test picks (FaultProxy.fire), and a target that stops
reading after a few MiB (GatedEcho) makes sure the requests in flight then are
the ones whose answers it holds.
"""

import socket
import threading
import time

import pytest

import harness
import intermediaries as im
from faultproxy import FaultProxy
from harness import Forward
from pattern import fmt_offset, pattern_bytes, pump_pattern, summarize
from test_rendezvous import Serve

MiB = 1024 * 1024


class GatedEcho:
    """An echo target that stops reading once a connection brought gate_at bytes
    (reached is set), until release is set; then it echoes everything as usual."""

    def __init__(self, gate_at):
        self.gate_at = gate_at
        self.reached = threading.Event()
        self.release = threading.Event()
        self.sock = harness.listener()
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        got = 0
        try:
            c.settimeout(300)
            while True:
                if got >= self.gate_at and not self.release.is_set():
                    self.reached.set()
                    self.release.wait(300)
                data = c.recv(min(65536, self.gate_at - got) if got < self.gate_at else 65536)
                if not data:
                    break
                got += len(data)
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.release.set()
        for s in [self.sock] + self.conns:
            try:
                s.close()
            except OSError:
                pass


def test_batch_pushes_confirmed_but_never_answered(apache_factory, module_so, targets,
                                                   client_bin):
    """Batch pushes in flight (up to eight) whose connections then stall down:
    their bodies reach the server, their answers never come back, and a new
    pull's A frame confirms their bytes. Before, they kept their slots until
    their connections died (a holding proxy: never; a black hole: TCP
    keepalive, minutes), and the up direction stood still: nothing was left
    unconfirmed for the up liveness check to give up. Now a push confirmed
    without its answer for 3 s is given up, and the rest of the bytes go."""
    gate = GatedEcho(gate_at=2 * MiB)
    plain = harness.free_port()
    a = apache_factory.get("event", module=module_so,
                           targets=dict(targets, gated="127.0.0.1:%d" % gate.port),
                           extra_conf=im.plain_http_vhost_conf(plain))
    size = 24 * MiB
    res = {}
    try:
        with FaultProxy(plain, mode="stall_down", min_life=3600, max_life=3600,
                        hold=600) as fp:
            with Forward(client_bin, "http://127.0.0.1:%d/relay" % fp.port, "gated",
                         extra_args=["--transport", "batch", "--http1.1", "-vv"]) as fw:
                th = threading.Thread(target=lambda: res.update(
                    pump_pattern("127.0.0.1", fw.port, size, timeout=60)))
                th.start()
                assert gate.reached.wait(30), "the target never got 2 MiB: %s" % res
                time.sleep(1.5)     # the client fills its push slots meanwhile
                # the connections that carry a push body (not the pull's, not idle ones)
                stalled = fp.fire(select=lambda c: c["up_run"] > 65536)
                gate.release.set()
                th.join(70)
                lines = fw.lines()
                tail = "\n".join(l for l in lines if " > " not in l and " < " not in l
                                 and ": * " not in l)[-6000:]
                assert not th.is_alive(), "the pump hung"
                assert res["first_bad_offset"] is None, "%s\n%s" % (summarize(res), tail)
                assert res["received"] == size and not res["error"], \
                    "%s (%d connections stalled)\n%s\n%s" % (summarize(res), stalled,
                                                             fp.describe(), tail)
                print("%s; %d connections stalled; %d pushes given up unanswered"
                      % (summarize(res), stalled,
                         sum(1 for l in lines if "never came" in l)))
    finally:
        gate.stop()


def _echo_chunk(s, start, n, timeout):
    """Send the pattern's bytes [start, start + n) on s and read n back: None, or
    what went wrong (the first wrong offset named)."""
    want = pattern_bytes(start, start + n)
    s.sendall(want)
    got = b""
    s.settimeout(timeout)
    try:
        while len(got) < n:
            d = s.recv(n - len(got))
            if not d:
                return "the connection ended after %d of bytes [%d, %d)" % (len(got), start,
                                                                             start + n)
            got += d
    except OSError as e:
        return "%r after %d of bytes [%d, %d)" % (e, len(got), start, start + n)
    if got != want:
        i = next(i for i in range(n) if got[i] != want[i])
        return "first wrong byte at offset %s" % fmt_offset(start + i)
    return None


@pytest.mark.rh_timeout(180)
def test_serve_leg_batch_poll_answer_held(apache_factory, module_so, targets, client_bin, tls,
                                          echo_server):
    """Rendezvous, the serve's leg on batch through a proxy that then stalls its
    connections' down direction, while the session is idle: the serve leg's
    long-poll is answered (bytes from the client) into the stall, and the serve
    only notices after the idle bound (the poll time and 15 s). The server takes
    a serve unheard for 10 s for gone; before, it reset both legs 10 s in and
    the client's connection ended with a reset. Now the serve sends an ack every
    3.3 s while its poll is out, and the bytes come through once its pull gives
    the held answer up. (RelayPollTimeout 5: the serve gives up after 20 s, still
    twice the 10 s, instead of the default's 40 s.)"""
    conf = "\n".join(["<Location /rdvh>", "    SetHandler relay-https",
                      "    RelayService heldsvc", "    RelayIdleTimeout 300",
                      "    RelayPollTimeout 5", "</Location>"])
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=conf)
    to = "127.0.0.1:%d" % echo_server.port
    xp = ["--transport", "batch", "--http1.1"]
    with FaultProxy(a.port, mode="stall_down", min_life=3600, max_life=3600, hold=600) as fp:
        with Serve(client_bin, "https://127.0.0.1:%d/rdvh" % fp.port, "heldsvc", to,
                   cacert=tls["ca"], extra_args=xp + ["-vv"]) as sv, \
             Forward(client_bin, a.base_url + "/rdvh", "heldsvc", cacert=tls["ca"],
                     extra_args=xp) as fw:
            s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
            try:
                err = _echo_chunk(s, 0, 65536, 30)
                assert err is None, "%s\n%s" % (err, fw.stderr_text())
                time.sleep(16)          # idle: the server's busy window (15 s) is over
                stalled = fp.fire()
                err = _echo_chunk(s, 65536, 65536, 75)
                text = "\n".join(l for l in sv.lines() if ": > " not in l and ": < " not in l
                                 and ": * " not in l)[-4000:]
                assert err is None, "%s (%d serve connections stalled)\n--- forward ---\n%s\n" \
                    "--- serve ---\n%s" % (err, stalled, fw.stderr_text(), text)
            finally:
                s.close()


@pytest.mark.rh_timeout(120)
def test_open_of_service_cut_by_fin_under_http2(apache_factory, module_so, targets, client_bin,
                                                tls, echo_server):
    """An open of a service waits for a serve (up to 5 s): long enough for a
    proxy to close the connection (FIN) under its HTTP/2 stream before any
    answer. libcurl 7.88 reports that as CURLE_PARTIAL_FILE ("stream was not
    closed cleanly before end of the underlying stream"), which the open did not
    count as a cut: the tunnel failed at once ("server unreachable") instead of
    opening again on a new connection, as it does for every other cut."""
    conf = "\n".join(["<Location /rdvf>", "    SetHandler relay-https",
                      "    RelayService finsvc", "    RelayIdleTimeout 300", "</Location>"])
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=conf)
    to = "127.0.0.1:%d" % echo_server.port
    xp = ["--transport", "duplex", "--http2"]
    size = 4 * MiB
    with FaultProxy(a.port, mode="fin", min_life=3600, max_life=3600) as fp:
        with Forward(client_bin, "https://127.0.0.1:%d/rdvf" % fp.port, "finsvc",
                     cacert=tls["ca"], extra_args=xp) as fw:
            res = {}
            th = threading.Thread(target=lambda: res.update(
                pump_pattern("127.0.0.1", fw.port, size, timeout=60)))
            th.start()
            # the open waits for a serve: cut its connection (FIN) under it
            assert harness.wait_for(lambda: any(" open https" in l for l in fw.lines()), 15)
            time.sleep(0.5)
            fp.fire()
            time.sleep(1.5)         # the cut lands (1 s without a byte: between bytes)
            with Serve(client_bin, a.base_url + "/rdvf", "finsvc", to, cacert=tls["ca"],
                       extra_args=xp):
                th.join(70)
                assert not th.is_alive(), "the pump hung"
                assert res["first_bad_offset"] is None and res["received"] == size and \
                    not res["error"], "%s\n%s\n%s" % (summarize(res), fp.describe(),
                                                      fw.stderr_text())


@pytest.mark.rh_timeout(120)
def test_stream_push_stalled_until_the_server_gives_it_up(apache_factory, module_so, targets,
                                                          client_bin):
    """A proxy stops passing a stream push's body on (its up direction stalls,
    the connection stays): the server gives the body up after RelayFrameTimeout
    with 408. That is a cut like any other for a resumable session; before, the
    client took the 408 as a refusal and ended the tunnel with a reset (seen on a
    serve's leg, whose down direction had finished, so nothing else gave the
    stalled push up first)."""
    plain = harness.free_port()
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=im.plain_http_vhost_conf(plain) + "\nRelayFrameTimeout 1")
    size = 16 * MiB
    with FaultProxy(plain, mode="stall_up", min_life=3600, max_life=3600, hold=600) as fp:
        with Forward(client_bin, "http://127.0.0.1:%d/relay" % fp.port, "echo",
                     extra_args=["--transport", "stream", "--http1.1"]) as fw:
            res = {}
            th = threading.Thread(target=lambda: res.update(
                pump_pattern("127.0.0.1", fw.port, size, rate=4 * 1000 * 1000, timeout=60)))
            th.start()
            time.sleep(1.0)
            stalled = fp.fire(select=lambda c: c["up_run"] > 65536)  # the push's connection
            th.join(70)
            assert not th.is_alive(), "the pump hung"
            assert res["first_bad_offset"] is None and res["received"] == size and \
                not res["error"], "%s (%d connections stalled)\n%s" % (
                    summarize(res), stalled, fw.stderr_text())
