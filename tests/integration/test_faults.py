"""No byte lost: fault injection with the real parts (docs/PROTOCOL.md, Resume).

A chaos proxy cuts the client's connections at random points; graceful restarts,
SIGKILLed children and a SIGKILLed relay core hit a transfer in flight; the far
end closes or resets. Every byte arrives once and in order, or the tunnel ends
with a clear error and never with wrong bytes.
"""
import hashlib
import os
import re
import random
import signal
import socket
import struct
import threading
import time

import pytest

import harness
from chaos import ChaosProxy
from harness import Forward, curl, pump
from test_skeleton import open_session

MB = 1024 * 1024
CLOSED_RE = re.compile(r"session ([0-9a-f]{16}) closed \(([^)]*)\) target=\S+ up=(\d+) down=(\d+)")


def _closed(a, mark):
    """{sid: (reason, up, down)} of the sessions closed since mark."""
    out = {}
    for m in CLOSED_RE.finditer(a.error_log_text(mark)):
        out[m.group(1)] = (m.group(2), int(m.group(3)), int(m.group(4)))
    return out


def _transfer(fw_port, payload, result, timeout, rate=None):
    pump("127.0.0.1", fw_port, payload=payload, timeout=timeout, rate=rate, res=result)


def _start_transfer(fw, size, rate, timeout):
    """A paced echo transfer of size random bytes in a thread: (thread, payload,
    result), returned once its first echoed bytes are back, so that a fault the
    caller causes next lands in an open session (on a loaded machine the
    session's open alone took seconds, and a core killed before it tested
    nothing)."""
    payload = os.urandom(size)
    res = {}
    t = threading.Thread(target=_transfer, args=(fw.port, payload, res, timeout, rate))
    t.start()
    assert harness.wait_for(lambda: res.get("received", 0) > 0 or not t.is_alive(), 60), \
        "no echoed byte within 60 s: %s\n%s" % (res, fw.stderr_text())
    return t, payload, res


def _resumes(fw):
    """The client's lines that tell of a cut request it went on from."""
    marks = ("resum", "trying again", "going on from", "sending it again")
    return [l for l in fw.lines() if any(m in l for m in marks)]


def _assert_intact(res, size, fw):
    if res["error"] is not None or res["received"] != size:
        # whole, in the captured output: an assertion's message is cut short
        print("--- client stderr ---\n" + fw.stderr_text())
    assert res["error"] is None, (res, fw.stderr_text())
    assert res["received"] == res["sent"] == size, (res, fw.stderr_text())
    assert res["recv_sha"] == res["sent_sha"], res


# ---------------------------------------------------------------------------
# A chaos proxy between the client and Apache
# ---------------------------------------------------------------------------

TRANSPORTS = [
    ("stream", ["--transport", "stream", "--http1.1"]),
    ("batch", ["--transport", "batch", "--http1.1"]),
    ("duplex", ["--transport", "duplex", "--http2"]),
    # a bulk upload leaves the duplex for an HTTP/1.1 stream push (duplex_split)
    ("duplex-split", ["--transport", "duplex"]),
]


@pytest.mark.rh_timeout(300)
@pytest.mark.parametrize("mpm", ["event"])
@pytest.mark.parametrize("name,args", TRANSPORTS, ids=[t[0] for t in TRANSPORTS])
def test_chaos_cuts(relay_apache, mpm, client_bin, tls, name, args):
    """100 MB each way while every connection is cut after 0.5 to 3 s (RST or
    FIN, at random): sha256 equal, and the target saw each byte exactly once."""
    a = relay_apache
    mark = a.error_log_mark()
    size = 100 * MB
    payload = os.urandom(size)
    with ChaosProxy(a.port, seed=hash(name) & 0xffff) as chaos:
        url = "https://127.0.0.1:%d/relay" % chaos.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"], extra_args=args) as fw:
            # paced at 10 MB/s: at full loopback speed the 100 MB would be
            # through before the first cut
            res = pump("127.0.0.1", fw.port, payload=payload, timeout=250, rate=10 * MB)
            _assert_intact(res, size, fw)
            resumed = _resumes(fw)
            stats = chaos.stats()
    print("%s: 100 MB each way in %.1f s through %d cuts; client: %d resumes" % (
        name, res["elapsed"], stats["cuts"], len(resumed)))
    # the check could not fail if nothing had been cut in the middle of things:
    # every cut lands inside a chunk of bytes in flight (chaos.py). (Not every
    # cut shows in the client's log: curl itself resends a request whose reused
    # connection died before any answer.)
    assert stats["cuts"] >= 3 and stats["cut_bytes"] > 0, stats
    # the echo target got (and sent back) each byte exactly once
    assert harness.wait_for(lambda: _closed(a, mark), 15), a.error_log_tail(30, mark)
    (reason, up, down), = _closed(a, mark).values()
    assert (up, down) == (size, size), (reason, up, down)


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("mpm", ["event"])
def test_path_down_for_20s(relay_apache, mpm, client_bin, tls):
    """The path to the server goes down for 20 s (every connection reset, new
    ones refused) in the middle of a transfer: the client keeps trying with
    backoff and goes on where it was; the local connection notices nothing."""
    a = relay_apache
    size = 30 * MB
    with ChaosProxy(a.port, min_life=1000, max_life=1000) as chaos:
        url = "https://127.0.0.1:%d/relay" % chaos.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"]) as fw:
            t, payload, res = _start_transfer(fw, size, 10 * MB, 100)
            time.sleep(1.0)
            assert t.is_alive(), res
            chaos.blackout(20)
            t.join(100)
            assert not t.is_alive(), "transfer hung after the path came back"
            _assert_intact(res, size, fw)
    assert res["elapsed"] > 20, res


# ---------------------------------------------------------------------------
# Graceful restarts, dying children, a dying core
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", harness.MPMS)
def test_five_graceful_restarts_during_transfer(relay_apache, mpm, client_bin, tls):
    """apachectl -k graceful five times during one transfer (paced, so that
    every restart lands in the middle of it): every byte arrives once, in order."""
    a = relay_apache
    mark = a.error_log_mark()
    size = 60 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        t, payload, res = _start_transfer(fw, size, 6 * MB, 200)
        for i in range(5):
            time.sleep(0.6)
            assert t.is_alive(), "transfer ended before the restarts: %s" % res
            a.proc.send_signal(signal.SIGUSR1)      # apachectl -k graceful
            # one at a time: httpd folds a restart asked for during another
            assert harness.wait_for(lambda: a.error_log_text(mark).count(
                "kept across the restart") > i, 30), a.error_log_tail(20, mark)
        t.join(210)
        assert not t.is_alive(), "transfer hung across graceful restarts"
        _assert_intact(res, size, fw)
    log = a.error_log_text(mark)
    assert log.count("kept across the restart") >= 5, a.error_log_tail(40, mark)
    assert "died" not in log, a.error_log_tail(30, mark)
    token, _ = open_session(a.relay_url)
    assert curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token]).status == 204


@pytest.mark.rh_timeout(120)
def test_new_targets_apply_after_graceful(apache_factory, module_so, targets, client_bin, tls):
    """A reload with a changed RelayTarget list: a tunnel opened before goes on
    (its target stays what it was), sessions opened after see the new list."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="# reload test")
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        t, payload, res = _start_transfer(fw, 20 * MB, 8 * MB, 100)
        time.sleep(0.5)
        mark = a.error_log_mark()
        a.targets = {"echo2": targets["echo"], "refused": targets["refused"]}
        a.prepare()
        a.proc.send_signal(signal.SIGUSR1)          # apachectl -k graceful
        assert harness.wait_for(lambda: "resuming normal operations" in
                                a.error_log_text(mark), 15), a.error_log_tail(20, mark)
        t.join(100)
        assert not t.is_alive(), "transfer hung across the reload"
        _assert_intact(res, 20 * MB, fw)
    token, _ = open_session(a.relay_url, target="echo2")
    assert curl(a.relay_url + "/echo2/close", headers=["Relay-Session: " + token]).status == 204
    r = curl(a.relay_url + "/echo/open")
    assert r.status == 404 and b"mod_relay_https:" in r.body, r


@pytest.mark.rh_timeout(120)
def test_stream_push_beyond_a_body_limit(apache_factory, module_so, targets, client_bin, tls):
    """LimitRequestBody (httpd's default is 1 GiB; proxies often allow less) set to
    4 MB on the relay: a 30 MB stream tunnel gets 413 once, after 4 MB went
    through, then keeps its pushes below half of that, and every byte arrives once."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="<Location /relay>\n    LimitRequestBody 4000000\n"
                                      "</Location>")
    mark = a.error_log_mark()
    size = 30 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "stream", "--http1.1"]) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=size, timeout=90)
        _assert_intact(res, size, fw)
        said = [l for l in fw.lines() if "HTTP 413 after" in l]
        assert len(said) == 1, fw.stderr_text()
    text = harness.wait_for(lambda: "closed (" in a.error_log_text(mark)
                            and a.error_log_text(mark), 15)
    assert text and "up=%d down=%d" % (size, size) in text, a.error_log_tail(20, mark)


def test_stream_push_next_asked_for_ahead(apache_factory, module_so, targets, client_bin, tls):
    """Each stream push ends at a data offset fixed when it starts, and the next one
    is asked for before that end (it waits on the server until the body before it
    is complete): with pushes kept under a 4 MB body limit, a 30 MB tunnel goes
    through a dozen ends, some of them such hand-overs, every byte once, none of
    them going back."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="<Location /relay>\n    LimitRequestBody 4000000\n"
                                      "</Location>")
    size = 30 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "stream", "--http1.1", "-vv"]) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=size, timeout=90)
        _assert_intact(res, size, fw)
        lines = fw.lines()
        ahead = [l for l in lines if "asked for ahead" in l and "from offset" in l]
        # a body that goes out whole before its first A frame gets no early
        # successor (nothing says yet how fast it goes): some, not all, do
        assert ahead, fw.stderr_text()[-4000:]
        assert not [l for l in lines if "did not get through whole" in l], fw.stderr_text()


def _vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(harness.SANITIZERS, reason="ASan keeps freed memory in quarantine and "
                    "pads every block: RSS then measures ASan, not the rings")
@pytest.mark.rh_timeout(180)
def test_memory_bounded_by_configured_buffers(apache_factory, module_so, targets, client_bin,
                                              tls):
    """Peak RSS of the relay core and the children over 100 MB each way, per
    transport: the core grows by no more than its configured rings (RelayBufferSize
    up, RelayBufferSize + RelayResumeWindow down) plus allocator slack."""
    window = 4 * MB
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="<Location /relay>\n    RelayResumeWindow %d\n"
                                      "</Location>" % window)
    core = a.core_pid()
    base = _vm_hwm_kib(core)
    # a ring grows by doubling (realloc) up to its cap; where glibc serves the
    # smaller sizes from its heap, the blocks left behind are still resident:
    # up to twice the rings, plus 4 MiB for everything else (measured: the
    # stream run peaked at +10.1 to +11.4 MiB of these 13.5)
    bound_kib = (256 * 1024 * 2 + window) * 2 // 1024 + 4096
    for xp in (["--transport", "stream"], ["--transport", "batch"],
               ["--transport", "duplex", "--http2"]):
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], extra_args=xp) as fw:
            res = pump("127.0.0.1", fw.port, nbytes=100 * MB, timeout=120)
            _assert_intact(res, 100 * MB, fw)
        peak = _vm_hwm_kib(core)
        kids = [p for p in a.pids() if p not in (a.proc.pid, core)]
        print("%s: core peak RSS %d KiB (idle %d KiB, bound +%d KiB); children peak %s KiB"
              % (xp[1], peak, base, bound_kib, sorted(_vm_hwm_kib(p) for p in kids)))
        assert peak - base <= bound_kib, (xp, peak, base, bound_kib)


def _serving_children(a):
    """Apache children that hold an established TCP connection on Apache's port."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if int(p[1].rsplit(":", 1)[1], 16) == a.port and p[3] == "01":
                        inodes.add(p[9])
        except OSError:
            pass
    core = a.core_pid()
    out = []
    for pid in a.pids():
        if pid in (a.proc.pid, core):
            continue
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    out.append(pid)
                    break
        except OSError:
            continue
    return out


@pytest.mark.rh_timeout(240)
@pytest.mark.parametrize("mpm", harness.MPMS)
def test_sigkill_children_during_transfer(relay_apache, mpm, client_bin, tls):
    """Children SIGKILLed in the middle of requests (the ones serving the
    tunnel, and random others): the client resumes, the session goes on intact."""
    a = relay_apache
    mark = a.error_log_mark()
    size = 60 * MB
    rng = random.Random(7)
    killed = []
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        t, payload, res = _start_transfer(fw, size, 12 * MB, 200)
        for i in range(6):
            time.sleep(0.6)
            if not t.is_alive():
                break
            serving = _serving_children(a)
            others = [p for p in a.pids() if p not in (a.proc.pid, a.core_pid())]
            pool = serving if (i % 2 == 0 and serving) else others
            if pool:
                victim = rng.choice(pool)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append((victim, victim in serving))
                except ProcessLookupError:
                    pass
        t.join(210)
        assert not t.is_alive(), "transfer hung after children were killed"
        _assert_intact(res, size, fw)
        resumed = _resumes(fw)
    assert any(s for _, s in killed), "no child serving the tunnel was killed: %s" % killed
    assert resumed, fw.stderr_text()
    (reason, up, down), = _closed(a, mark).values()
    assert (up, down) == (size, size), (reason, up, down)
    token, _ = open_session(a.relay_url)
    assert curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token]).status == 204


@pytest.mark.rh_timeout(180)
@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_sigkill_core(relay_apache, mpm, client_bin, tls):
    """The relay core SIGKILLed: httpd starts a new one; the tunnels it held end
    with a clear error (a reset, never wrong bytes), new sessions work at once."""
    a = relay_apache
    old_core = a.core_pid()
    assert old_core, a.error_log_tail(20)
    size = 60 * MB
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        t, payload, res = _start_transfer(fw, size, 10 * MB, 120)
        time.sleep(1.0)
        assert t.is_alive(), res
        os.kill(old_core, signal.SIGKILL)
        assert harness.wait_for(lambda: a.core_pid() not in (None, old_core), 10), \
            a.error_log_tail(20)
        # new sessions work at once, on the same running client
        small = pump("127.0.0.1", fw.port, nbytes=MB, timeout=30)
        assert small["error"] is None and small["recv_sha"] == small["sent_sha"], \
            (small, fw.stderr_text())
        t.join(130)
        assert not t.is_alive(), "the tunnel of the killed core hung"
        # the old tunnel ended with an error, and what did arrive is exactly the
        # start of what was sent
        assert res["received"] < size, res
        assert res["error"] or res["received"] < res["sent"], res
        got = hashlib.sha256(payload[:res["received"]]).hexdigest()
        assert got == res["recv_sha"], "wrong bytes after the core died"
        assert harness.wait_for(lambda: any("session" in l and ("lost" in l or "gone" in l or
                                                                 "410" in l)
                                            for l in fw.lines()), 10), fw.stderr_text()


# ---------------------------------------------------------------------------
# The far end: FIN as FIN, RST as an error, after every byte
# ---------------------------------------------------------------------------

class ScriptedTarget:
    """A target that sends `send` bytes, then ends with FIN or RST (`end`),
    and records what it received and how its peer ended."""

    def __init__(self, send, end, wait_before_end=0.5):
        self.sock = harness.listener(8)
        self.port = self.sock.getsockname()[1]
        self.payload = os.urandom(send)
        self.end, self.wait = end, wait_before_end
        self.received = hashlib.sha256()
        self.nreceived = 0
        self.peer_end = None        # "fin" or "rst"
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        c, _ = self.sock.accept()
        reader = threading.Thread(target=self._read, args=(c,), daemon=True)
        reader.start()
        try:
            c.sendall(self.payload)
            time.sleep(self.wait)
            if self.end == "fin":
                c.shutdown(socket.SHUT_WR)
                reader.join(60)
            else:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # the reader thread's recv holds the socket open past close():
                # wake it first (SHUT_RD sends nothing), so close() resets now
                c.shutdown(socket.SHUT_RD)
                reader.join(5)
                c.close()
        except OSError:
            pass

    def _read(self, c):
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    self.peer_end = "fin"
                    break
                self.received.update(b)
                self.nreceived += len(b)
        except ConnectionResetError:
            self.peer_end = "rst"
        except OSError:
            pass
        self.done.set()

    def stop(self):
        self.sock.close()


XP_ARGS = {name: args for name, args in TRANSPORTS}


def _far_end_apache(apache_factory, module_so, targets, target):
    t = dict(targets)
    t["scripted"] = "127.0.0.1:%d" % target.port
    return apache_factory.get("event", module=module_so, targets=t)


def _read_all(s, timeout=30):
    h, n, end = hashlib.sha256(), 0, None
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                end = "fin"
                break
            h.update(b)
            n += len(b)
    except ConnectionResetError:
        end = "rst"
    except socket.timeout:
        end = "silence for %d s" % timeout   # the assertions say what the client did
    return h.hexdigest(), n, end


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("xp", ["stream", "batch", "duplex"])
def test_target_fin_is_fin_and_half_close_goes_on(apache_factory, module_so, targets,
                                                  client_bin, tls, xp):
    """The target sends 3 MB and shuts its write side: the local side gets the 3 MB
    then EOF, and can still send; its own FIN then reaches the target as FIN."""
    tgt = ScriptedTarget(3 * MB, "fin")
    a = _far_end_apache(apache_factory, module_so, targets, tgt)
    with Forward(client_bin, a.relay_url, "scripted", cacert=tls["ca"],
                 extra_args=XP_ARGS[xp]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port))
        sha, n, end = _read_all(s)
        assert (n, end) == (len(tgt.payload), "fin"), (n, end, fw.stderr_text())
        assert sha == hashlib.sha256(tgt.payload).hexdigest()
        up = os.urandom(2 * MB)
        s.sendall(up)                   # after the far end's FIN: still carried
        s.shutdown(socket.SHUT_WR)
        assert tgt.done.wait(30), fw.stderr_text()
        assert tgt.peer_end == "fin" and tgt.nreceived == len(up), (tgt.peer_end, tgt.nreceived)
        assert tgt.received.hexdigest() == hashlib.sha256(up).hexdigest()
        s.close()
    tgt.stop()


# Known open bug (see the closing note of issue 13): in one run in four to eight
# the duplex's last frames (R, the stream's end) are never read by the client, and
# every resumed duplex (on a fresh connection; the server answers each 410 at
# once) stalls the same way. strace shows the client no longer polling that
# connection after a TLS session ticket arrives; the cause is not found yet. The
# local side then waits instead of getting its reset. Not a wrong byte: every
# byte arrives, the end does not. Kept running; xfail until it is fixed.
DUPLEX_END_STALL = pytest.mark.xfail(
    reason="duplex end after a target RST can stall in libcurl 7.88 (open bug)", strict=False)


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("xp", ["stream", "batch", pytest.param("duplex", marks=DUPLEX_END_STALL)])
def test_target_rst_is_an_error_after_every_byte(apache_factory, module_so, targets,
                                                 client_bin, tls, xp):
    """The target sends 3 MB and resets: the local side gets every byte, then a
    reset (not a clean EOF)."""
    tgt = ScriptedTarget(3 * MB, "rst")
    a = _far_end_apache(apache_factory, module_so, targets, tgt)
    with Forward(client_bin, a.relay_url, "scripted", cacert=tls["ca"],
                 extra_args=XP_ARGS[xp]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port))
        sha, n, end = _read_all(s)
        assert n == len(tgt.payload) and sha == hashlib.sha256(tgt.payload).hexdigest(), \
            (n, fw.stderr_text())
        assert end == "rst", (end, fw.stderr_text())
        s.close()
    tgt.stop()


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("xp", ["stream", "batch", "duplex"])
def test_local_rst_reaches_target_as_rst(apache_factory, module_so, targets, client_bin,
                                         tls, xp):
    """The local side sends 2 MB and resets: the target gets the bytes, then a reset."""
    tgt = ScriptedTarget(0, "fin", wait_before_end=60)
    a = _far_end_apache(apache_factory, module_so, targets, tgt)
    with Forward(client_bin, a.relay_url, "scripted", cacert=tls["ca"],
                 extra_args=XP_ARGS[xp]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port))
        up = os.urandom(2 * MB)
        s.sendall(up)
        assert harness.wait_for(lambda: tgt.nreceived == len(up), 30), \
            (tgt.nreceived, fw.stderr_text())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        assert tgt.done.wait(30), fw.stderr_text()
        assert tgt.peer_end == "rst", (tgt.peer_end, fw.stderr_text())
        assert tgt.received.hexdigest() == hashlib.sha256(up).hexdigest()
    tgt.stop()


@pytest.mark.rh_timeout(300)
def test_small_body_limit_under_cuts(apache_factory, module_so, targets, client_bin, tls):
    """A body limit below a MiB (LimitRequestBody 1000000) on the relay, and every
    fault of the fault proxy: stream pushes shrink below the limit after one 413
    and end dozens of times in 40 MB (some with their successor asked for ahead)
    while connections are reset, closed, black-holed, stalled and cut inside their
    headers. Every byte arrives once, in order (the pump compares hashes; the core
    counts each direction's bytes). Before, a push's frames could pass its limit
    by a read (1,310,660-byte bodies against 1,000,000, refused for ever) and
    pushes never went below 1 MiB: the tunnel failed at the fourth 413."""
    from faultproxy import FaultProxy
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="<Location /relay>\n    LimitRequestBody 1000000\n"
                                      "</Location>")
    mark = a.error_log_mark()
    seed = int(os.environ.get("RH_FAULT_SEED", random.SystemRandom().randrange(1 << 31)))
    size = 40 * MB
    with FaultProxy(a.port, seed=seed, mode="mix", min_life=1.0, max_life=4.0,
                    life_bytes=(2 * MB, 12 * MB), hold=20.0) as fp:
        url = "https://127.0.0.1:%d/relay" % fp.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"],
                     extra_args=["--transport", "stream", "--http1.1", "-vv"]) as fw:
            res = pump("127.0.0.1", fw.port, nbytes=size, timeout=240)
            _assert_intact(res, size, fw)
            ahead = [l for l in fw.lines() if "asked for ahead" in l and "from offset" in l]
            print("seed %d: %d early pushes; %s" % (seed, len(ahead), fp.describe()))
            assert fp.stats()["faults"] > 0, fp.describe()
    text = harness.wait_for(lambda: "closed (" in a.error_log_text(mark)
                            and a.error_log_text(mark), 30)
    assert text and "up=%d down=%d" % (size, size) in text, a.error_log_tail(20, mark)


@pytest.mark.rh_timeout(90)
def test_push_closed_by_a_fin_goes_again_at_once(apache_factory, module_so, targets,
                                                 client_bin, tls):
    """A proxy (or the server) that closes an idle push's connection with a FIN:
    libcurl, whose body is paused, reads the end and stops watching the socket,
    and would notice only at a write that fails; a keystroke after the cut
    waited for the 3 s watchdog of unconfirmed up bytes. Now the client sees
    curl let go of an open push and sends it again at once: five cuts, five
    echoes, each well within the watchdog's 3 s."""
    from faultproxy import FaultProxy
    a = apache_factory.get("event", module=module_so, targets=targets)
    with FaultProxy(a.port, mode="fin", min_life=1e6, max_life=1e6, hold=20.0) as fp:
        url = "https://127.0.0.1:%d/relay" % fp.port
        with Forward(client_bin, url, "echo", cacert=tls["ca"],
                     extra_args=["--transport", "stream", "--http1.1", "-v"]) as fw:
            s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
            try:
                times = []
                for i in range(5):
                    s.sendall(b"k")
                    assert s.recv(1) == b"k"
                    time.sleep(0.5)             # the push idle, its body paused
                    fp.fire()                   # a FIN to every connection
                    time.sleep(0.5)             # the pull resumed on its own
                    t0 = time.monotonic()
                    s.sendall(b"x")
                    assert s.recv(1) == b"x", "echo %d after the cut" % i
                    times.append(time.monotonic() - t0)
            finally:
                s.close()
            print("echo after a FIN on the push: %s s" % ", ".join("%.2f" % x for x in times))
            assert max(times) < 2.0, (times, fw.stderr_text())
