"""A fault-injecting TCP proxy: the network failures a tunnel meets (issue 10).

    FaultProxy(upstream_port, mode="mix", seed=None, ...)

listens on 127.0.0.1 (`.port`) and carries every connection to the upstream
port (Apache, plain HTTP or TLS: it is only TCP). Every connection lives a
random time (min_life..max_life, default 0.5 to 3 s; or, with life_bytes=(lo,
hi), until a random number of bytes passed, whichever comes first) and then
suffers one failure of its mode:

  rst               cut at a random byte of the next chunk in flight (1 s
                    without one: cut between bytes), RST to both sides
  fin               the same with a FIN to both sides (what reaches the proxy
                    afterwards is read and dropped for up to 3 s)
  blackhole         bytes stop both ways, no RST, no FIN: a NAT that dropped
                    the connection's state. The sockets stay open (closed only
                    at stop(), or after `hold` s, default 120)
  halfdead          the timer thread closes both sockets (SO_LINGER 0) while
                    the forwarding threads are blocked in recv() on them. On
                    Linux that close does not wake them: nothing is forwarded
                    and nothing reset until bytes arrive on a socket (its recv
                    returns, the last reference goes, RST); a side that only
                    waits sees nothing at all
  stall_up          client -> server bytes stop (held, never delivered), the
  stall_down        other direction goes on; held until the connection ends
                    (or `hold` s, then RST)
  cut_req_headers   cut (RST or FIN, seeded) inside the N-th (N = 1..3, seeded)
  cut_resp_headers  HTTP request / response header block of the connection
                    (plain HTTP: a request or status line up to "\\r\\n\\r\\n").
                    On TLS the headers cannot be seen: half the connections are
                    cut at a random byte within the first tls_span bytes (default
                    1..700) of that direction (the handshake or the first request)
  delay             forwarding pauses 1-5 s (up, down or both, seeded); then
                    every byte is delivered, none lost
  refuse            a cut (RST or FIN), and for 1-4 s after it new connections
                    are refused (accepted and reset at once)
  mix               one of the above per connection, at random
  none              no failure: a plain relay (the baseline)

Everything random comes from random.Random(seed) (`.seed` is set even when
none is given), in accept order: a failing run is replayed from its seed (the
exact cut bytes also depend on how the kernel chunked the stream).

fire(select=None): every connection open now (or those select() picks) fails
at once, its mode's failure, for a test that picks the moment and the
connections (min_life/max_life far away: only those fail).

Counters: stats() (accepted, refused, faults by mode, ends by rst/fin, bytes
each way); events(): one line per fault (time, connection, mode, bytes so far).

The proxy itself never reorders, drops or alters a byte of a connection it
carries except where its mode says so: a connection is cut or stopped, never
corrupted. (Sockets are closed only once no thread uses them, except in
halfdead mode, where the descriptor is replaced by one on /dev/null with
dup2(), which closes the socket exactly as close() does, but never lets a new
socket reuse the number under a thread that still holds it.)
"""

import os
import random
import re
import select
import socket
import struct
import threading
import time

MODES = ("rst", "fin", "blackhole", "halfdead", "stall_up", "stall_down",
         "cut_req_headers", "cut_resp_headers", "delay", "refuse")
ALL_MODES = MODES + ("mix", "none")

UP, DOWN = "up", "down"
RECV = 262144
_LINGER0 = struct.pack("ii", 1, 0)

_REQ_LINE = re.compile(rb"(?:GET|POST|PUT|HEAD|OPTIONS|DELETE|PATCH|CONNECT) "
                       rb"[^ \r\n]{1,2048} HTTP/1\.[01]\r\n")
_RESP_LINE = re.compile(rb"HTTP/1\.[01] [1-5][0-9][0-9][^\r\n]{0,256}\r\n")


def _listener(backlog=512):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    return s


def _quiet(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


class _HeaderScan:
    """Finds HTTP/1.x header blocks (start line .. CRLFCRLF) in one direction
    of a connection, chunk by chunk."""

    def __init__(self, start_re):
        self.start_re = start_re
        self.tail = b""         # unscanned end of the previous chunk (matches across chunks)
        self.in_block = False   # a block began and its CRLFCRLF has not come yet
        self.count = 0          # header blocks that began so far

    def spans(self, chunk):
        """[(n, start, end)]: the header bytes in chunk (chunk indices, end
        exclusive; end == len(chunk) when the block goes on in the next chunk),
        n numbering the blocks of the direction from 1."""
        out = []
        t = len(self.tail)
        data = self.tail + chunk
        i = 0
        if self.in_block:
            e = data.find(b"\r\n\r\n")
            if e < 0:
                out.append((self.count, 0, len(chunk)))
                self.tail = data[-3:]
                return out
            if e + 4 > t:
                out.append((self.count, 0, e + 4 - t))
            self.in_block = False
            i = e + 4
        while True:
            m = self.start_re.search(data, i)
            if not m:
                break
            self.count += 1
            s = max(m.start(), t)
            e = data.find(b"\r\n\r\n", m.end() - 2)
            if e < 0:
                self.in_block = True
                out.append((self.count, s - t, len(chunk)))
                break
            if e + 4 > t:
                out.append((self.count, s - t, e + 4 - t))
            i = e + 4
        if self.in_block:
            self.tail = data[-3:]
        else:
            self.tail = data[max(i, len(data) - 64):]
        return out


class _Conn:
    def __init__(self, proxy, cid, c, u, rng, mode):
        self.proxy, self.id, self.c, self.u, self.rng, self.mode = proxy, cid, c, u, rng, mode
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.phase = "live"     # live, armed, stall, delay, blackhole, halfdead, cut, ended
        self.bytes = {UP: 0, DOWN: 0}
        self.up_run = 0         # bytes up since the last byte down (a request in flight)
        self.threads = 2
        self.closing = threading.Event()
        self.timers = []
        self.kind = None        # rst / fin for the cutting modes (drawn)
        self.cut_kind = None    # how it was cut in the end
        self.stalled = False    # the stalled direction has stopped reading
        self.tls = None         # known once the client sent its first byte
        self.budget = None
        self.stall_dir = None
        self.delay_dirs = ()
        self.delay_until = 0.0
        self.hdr_n = None
        self.hdr_dir = None
        self.tls_cut = None     # (direction byte offset) for header modes on TLS
        self.scan = None
        self.life = None

    def total(self):
        return self.bytes[UP] + self.bytes[DOWN]

    def where(self):
        return "after %.2f s, up %d down %d" % (time.monotonic() - self.t0, self.bytes[UP],
                                                self.bytes[DOWN])


class FaultProxy:
    def __init__(self, upstream_port, mode="mix", seed=None, min_life=0.5, max_life=3.0,
                 life_bytes=None, upstream_host="127.0.0.1", mix_modes=MODES, hold=120.0,
                 delay_range=(1.0, 5.0), refuse_range=(1.0, 4.0), idle_cut=1.0,
                 fin_drain=3.0, tls_span=(1, 700), tls_cut_share=0.5, max_events=500):
        if mode not in ALL_MODES:
            raise ValueError("unknown mode %r (one of %s)" % (mode, ", ".join(ALL_MODES)))
        self.upstream = (upstream_host, upstream_port)
        self.mode = mode
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.min_life, self.max_life = min_life, max_life
        self.life_bytes = life_bytes
        self.mix_modes = tuple(mix_modes)
        self.hold = hold
        self.delay_range, self.refuse_range = delay_range, refuse_range
        self.idle_cut, self.fin_drain = idle_cut, fin_drain
        self.tls_span, self.tls_cut_share = tls_span, tls_cut_share
        self.max_events = max_events
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self._events = []
        self.accepted = 0
        self.refused = 0
        self.faults = {}            # mode -> failures applied
        self.ends = {"rst": 0, "fin": 0}
        self.fault_bytes = 0        # bytes the failed connections had carried
        self.total_bytes = {UP: 0, DOWN: 0}
        self.refuse_until = 0.0
        self.conns = {}
        self.faulting = True
        self._stopped = False
        self._null = os.open(os.devnull, os.O_RDWR)
        self.sock = _listener()
        self.port = self.sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept",
                                          daemon=True)
        self._acceptor.start()

    # ------------------------------------------------------------------ bookkeeping

    def _event(self, conn, what):
        line = "%7.2f conn#%d %s: %s" % (time.monotonic() - self.t0,
                                         conn.id if conn else 0,
                                         conn.mode if conn else "-", what)
        with self.lock:
            self._events.append(line)
            if len(self._events) > self.max_events:
                del self._events[:len(self._events) - self.max_events]

    def events(self, last=None):
        with self.lock:
            ev = list(self._events)
        return ev[-last:] if last else ev

    def _count_fault(self, conn, label, end=None):
        with self.lock:
            self.faults[label] = self.faults.get(label, 0) + 1
            if end:
                self.ends[end] += 1
            self.fault_bytes += conn.total()

    def stats(self):
        with self.lock:
            return {"seed": self.seed, "mode": self.mode, "accepted": self.accepted,
                    "refused": self.refused, "faults": sum(self.faults.values()),
                    "cuts": sum(self.faults.values()), "by_mode": dict(self.faults),
                    "ends": dict(self.ends), "fault_bytes": self.fault_bytes,
                    "cut_bytes": self.fault_bytes,
                    "bytes_up": self.total_bytes[UP], "bytes_down": self.total_bytes[DOWN],
                    "active": len(self.conns)}

    def describe(self):
        s = self.stats()
        return ("faultproxy :%d mode=%s seed=%d: %d accepted, %d refused, %d faults %s, "
                "ends %s, %d bytes up, %d down"
                % (self.port, s["mode"], s["seed"], s["accepted"], s["refused"], s["faults"],
                   s["by_mode"], s["ends"], s["bytes_up"], s["bytes_down"]))

    # ------------------------------------------------------------------ accept

    def _accept_loop(self):
        while not self._stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self._stopped:
                _quiet(c.close)
                return
            now = time.monotonic()
            if now < self.refuse_until and self.faulting:
                _quiet(c.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                _quiet(c.close)
                with self.lock:
                    self.refused += 1
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _quiet(c.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                _quiet(c.close)
                continue
            for s in (c, u):
                s.settimeout(None)
                _quiet(s.setsockopt, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                cid = self.accepted
                crng = random.Random(self.rng.getrandbits(64))
                mode = self.mode
                if mode == "mix":
                    mode = self.rng.choice(self.mix_modes)
                conn = _Conn(self, cid, c, u, crng, mode)
                self.conns[cid] = conn
            self._plan(conn)
            for d in (UP, DOWN):
                threading.Thread(target=self._copy, args=(conn, d),
                                 name="faultproxy-%d-%s" % (cid, d), daemon=True).start()

    def _plan(self, conn):
        """Draw everything this connection's failure needs, in a fixed order."""
        r, m = conn.rng, conn.mode
        conn.life = r.uniform(self.min_life, self.max_life)
        if self.life_bytes:
            conn.budget = r.randint(*self.life_bytes)
        kind = r.choice(("rst", "fin"))
        conn.kind = m if m in ("rst", "fin") else kind
        conn.stall_dir = UP if m == "stall_up" else DOWN
        conn.delay_dirs = {"up": (UP,), "down": (DOWN,), "both": (UP, DOWN)}[
            r.choice(("up", "down", "both"))]
        conn.delay_secs = r.uniform(*self.delay_range)
        conn.refuse_secs = r.uniform(*self.refuse_range)
        conn.hdr_n = r.choice((1, 2, 3))
        conn.tls_cut = r.randrange(*self.tls_span) if r.random() < self.tls_cut_share else None
        if m in ("cut_req_headers", "cut_resp_headers"):
            conn.hdr_dir = UP if m == "cut_req_headers" else DOWN
            conn.scan = _HeaderScan(_REQ_LINE if conn.hdr_dir == UP else _RESP_LINE)
        elif m != "none":
            self._timer(conn, conn.life, self._fire, conn)

    def _timer(self, conn, secs, fn, *args):
        t = threading.Timer(secs, fn, args=args)
        t.daemon = True
        conn.timers.append(t)
        t.start()

    # ------------------------------------------------------------------ failures

    def _fire(self, conn):
        """The connection's life is over: its failure starts now."""
        with conn.lock:
            if conn.phase != "live" or not self.faulting:
                return
            m = conn.mode
            if m in ("rst", "fin", "refuse"):
                conn.phase = "armed"
            elif m == "blackhole":
                conn.phase = "blackhole"
            elif m in ("stall_up", "stall_down"):
                conn.phase = "stall"
            elif m == "delay":
                conn.phase = "delay"
                conn.delay_until = time.monotonic() + conn.delay_secs
            elif m == "halfdead":
                conn.phase = "halfdead"
            else:
                return
        if m in ("rst", "fin", "refuse"):
            self._timer(conn, self.idle_cut, self._idle_cut, conn)
        elif m == "blackhole":
            self._count_fault(conn, m)
            self._event(conn, "black hole (%s)" % conn.where())
            self._timer(conn, self.hold, self._teardown, conn, "rst")
        elif m in ("stall_up", "stall_down"):
            self._count_fault(conn, m)
            self._event(conn, "%s stalls (%s)" % (conn.stall_dir, conn.where()))
            self._timer(conn, self.hold, self._teardown, conn, "rst")
        elif m == "delay":
            self._count_fault(conn, m)
            self._event(conn, "%s held %.1f s (%s)" % ("+".join(conn.delay_dirs),
                                                     conn.delay_secs, conn.where()))
        elif m == "halfdead":
            self._halfdead(conn)

    def _idle_cut(self, conn):
        with conn.lock:
            if conn.phase != "armed":
                return
        self._cut(conn, conn.kind, "between bytes")

    def _halfdead(self, conn):
        """Close both sockets (SO_LINGER 0) under the threads blocked in recv()."""
        self._count_fault(conn, "halfdead")
        self._event(conn, "half-dead: both sockets closed under the blocked readers (%s)"
                    % conn.where())
        for s in (conn.c, conn.u):
            _quiet(s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        for s in (conn.c, conn.u):
            try:
                fd = s.fileno()
                if fd >= 0 and self._null >= 0:
                    os.dup2(self._null, fd)     # = close(fd), without reuse of fd
            except OSError:
                pass

    def _cut(self, conn, kind, where):
        """End the connection now: RST or FIN to both sides."""
        with conn.lock:
            if conn.phase in ("cut", "ended", "halfdead"):
                return False
            conn.phase = "cut"
            conn.cut_kind = kind
            mode = conn.mode
        label = mode if mode not in ("rst", "fin") else kind
        self._count_fault(conn, label, kind)
        self._event(conn, "%s %s (%s)" % (kind.upper(), where, conn.where()))
        if mode == "refuse":
            self.refuse_until = time.monotonic() + conn.refuse_secs
            self._event(conn, "refusing new connections for %.1f s" % conn.refuse_secs)
        if kind == "rst":
            self._abort(conn)
        else:
            for s in (conn.c, conn.u):
                _quiet(s.shutdown, socket.SHUT_WR)
            self._timer(conn, self.fin_drain, self._abort, conn)
        return True

    def _abort(self, conn):
        """RST both sockets: SO_LINGER 0, and wake the readers (SHUT_RD sends
        nothing); the last thread out closes them."""
        with conn.lock:
            if conn.phase != "cut":
                conn.phase = "ended"
        for s in (conn.c, conn.u):
            _quiet(s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        for s in (conn.c, conn.u):
            _quiet(s.shutdown, socket.SHUT_RD)
        conn.closing.set()

    def _teardown(self, conn, how):
        """Held connections (black hole, stall): end them after `hold` s, or at stop."""
        with conn.lock:
            if conn.phase in ("halfdead",):
                return
            conn.phase = "ended"
        if how == "rst":
            for s in (conn.c, conn.u):
                _quiet(s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            for s in (conn.c, conn.u):
                _quiet(s.shutdown, socket.SHUT_RD)
        else:
            for s in (conn.c, conn.u):
                _quiet(s.shutdown, socket.SHUT_RDWR)
        conn.closing.set()

    # ------------------------------------------------------------------ forwarding

    def _send(self, conn, dst, data):
        """Send all of data unless the connection is cut meanwhile (never blocks
        for long: a cut must not wait behind a peer that does not read)."""
        mv = memoryview(data)
        while mv:
            if conn.phase in ("cut", "ended", "halfdead") or conn.closing.is_set():
                return False
            try:
                n = dst.send(mv, socket.MSG_DONTWAIT)
            except BlockingIOError:
                try:
                    po = select.poll()
                    po.register(dst, select.POLLOUT)
                    po.poll(100)
                except (OSError, ValueError):
                    return False
                continue
            except OSError:
                return False
            mv = mv[n:]
        return True

    def _cut_point(self, conn, d, b):
        """Called with conn.lock held, for chunk b of direction d while the
        connection forwards normally. Returns None, (index, what) for a cut
        inside b, or ("budget", index) when the byte budget runs out in b."""
        if conn.phase == "armed":
            return conn.rng.randrange(len(b) + 1), "at a random byte"
        if conn.phase != "live":
            return None
        if conn.scan is not None:
            if d != conn.hdr_dir or conn.tls is None:
                return None
            if conn.tls:
                pos = conn.bytes[d]
                if conn.tls_cut is not None and pos <= conn.tls_cut < pos + len(b):
                    return (conn.tls_cut - pos,
                            "at byte %d of the %s direction (TLS)" % (conn.tls_cut, d))
                return None
            for n, s, e in conn.scan.spans(b):
                if n == conn.hdr_n and e - s >= 2:
                    return (conn.rng.randrange(s + 1, e),
                            "inside %s header block #%d" % ("request" if d == UP
                                                           else "response", n))
            return None
        if conn.budget is not None and conn.mode != "none":
            if conn.total() + len(b) > conn.budget:
                return "budget", conn.budget - conn.total()
        return None

    def _copy(self, conn, d):
        """One direction of a connection: recv (blocking: halfdead needs the
        thread inside recv), then forward, or fail as the mode says."""
        src, dst = (conn.c, conn.u) if d == UP else (conn.u, conn.c)
        try:
            while True:
                if conn.phase == "blackhole" or (conn.phase == "stall" and
                                                 conn.stall_dir == d and conn.stalled):
                    conn.closing.wait()         # no more reading: the bytes stay put
                    break
                try:
                    b = src.recv(RECV)
                except OSError:
                    b = None                    # a reset (by the peer, or our own abort)
                ph = conn.phase
                if ph in ("halfdead", "ended"):
                    break
                if ph == "cut":
                    if b and conn.cut_kind == "fin":
                        continue                # read and drop what comes after our FIN
                    break
                if ph == "blackhole":
                    continue                    # b is dropped; the loop parks
                if not b:
                    self._peer_ended(conn, d, dst, reset=b is None)
                    break
                if conn.tls is None and d == UP:
                    conn.tls = b[0] == 0x16
                held = None
                with conn.lock:
                    if conn.phase == "stall" and d == conn.stall_dir:
                        held = conn.rng.randrange(len(b) + 1)
                        conn.stalled = True
                        cut = None
                    else:
                        cut = self._cut_point(conn, d, b)
                if held is not None:            # a prefix passes, the rest is held
                    self._forward(conn, d, dst, b[:held])
                    self._event(conn, "%s stalled: %d of a %d-byte chunk passed, the rest "
                                "held (%s)" % (d, held, len(b), conn.where()))
                    continue
                if conn.phase == "delay" and d in conn.delay_dirs:
                    while time.monotonic() < conn.delay_until and not conn.closing.is_set():
                        time.sleep(min(0.05, max(0.0, conn.delay_until - time.monotonic())))
                if cut is None:
                    if not self._forward(conn, d, dst, b):
                        break
                    continue
                if cut[0] == "budget":
                    k = max(0, min(len(b), cut[1]))
                    with conn.lock:
                        conn.budget = None
                    if conn.mode in ("rst", "fin", "refuse"):
                        self._forward(conn, d, dst, b[:k])
                        self._cut(conn, conn.kind, "when its byte budget ran out: %s %d of "
                                  "%d bytes passed" % (d, k, len(b)))
                        continue
                    if not self._forward(conn, d, dst, b):
                        break
                    if conn.mode == "halfdead":
                        # from a timer thread, once this thread is back in recv()
                        self._timer(conn, 0.02, self._fire, conn)
                    else:
                        self._fire(conn)
                    continue
                k, what = cut
                self._forward(conn, d, dst, b[:k])
                self._cut(conn, conn.kind, "%s: %s %d of %d bytes passed" % (what, d, k, len(b)))
                # (the loop drains after a FIN, and ends after a RST)
        finally:
            self._thread_done(conn)

    def _forward(self, conn, d, dst, data):
        if not data:
            return True
        ok = self._send(conn, dst, data)
        if ok:
            with conn.lock:
                conn.bytes[d] += len(data)
                conn.up_run = conn.up_run + len(data) if d == UP else 0
            with self.lock:
                self.total_bytes[d] += len(data)
        return ok

    def _peer_ended(self, conn, d, dst, reset):
        """The source side ended: a FIN passes on as a half-close, a reset as RST."""
        if not reset:
            _quiet(dst.shutdown, socket.SHUT_WR)
            if conn.phase == "stall":
                conn.closing.set()      # the held direction will never go on: end it
            return
        with conn.lock:
            if conn.phase in ("cut", "halfdead", "ended"):
                return
            conn.phase = "ended"
        for s in (conn.c, conn.u):
            _quiet(s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
        for s in (conn.c, conn.u):
            _quiet(s.shutdown, socket.SHUT_RD)
        conn.closing.set()

    def _thread_done(self, conn):
        with conn.lock:
            conn.threads -= 1
            last = conn.threads == 0
        if not last:
            return
        for t in conn.timers:
            t.cancel()
        for s in (conn.c, conn.u):
            _quiet(s.close)
        with self.lock:
            self.conns.pop(conn.id, None)

    # ------------------------------------------------------------------ control

    def blackout(self, seconds):
        """The path goes down: every connection is reset now, and new ones are
        refused (reset) for `seconds`."""
        self.refuse_until = time.monotonic() + seconds
        with self.lock:
            conns = list(self.conns.values())
        for conn in conns:
            self._cut(conn, "rst", "blackout")

    def fire(self, select=None):
        """Every connection open now suffers its mode's failure at once, whatever
        is left of its life (a test's chosen moment: with min_life and max_life
        far away, only the connections open at the call fail); with select, only
        those for which select({"id", "up", "down", "up_run"}) is true (up_run:
        bytes up since the last byte down, a request body in flight, say).
        Returns how many."""
        with self.lock:
            conns = list(self.conns.values())
        if select is not None:
            conns = [c for c in conns if select({"id": c.id, "up": c.bytes[UP],
                                                 "down": c.bytes[DOWN], "up_run": c.up_run})]
        for conn in conns:
            if conn.mode == "halfdead":
                self._timer(conn, 0.0, self._fire, conn)
            else:
                self._fire(conn)
        return len(conns)

    def stop(self):
        """Stop accepting, stop faulting, tear every connection down (a
        half-dead one is left to its blocked readers: they return when a byte
        or a FIN arrives, as they would in the real thing)."""
        self._stopped = True
        self.faulting = False
        # close() alone does not wake a thread blocked in accept() (Linux): the
        # join below waited out its 2 s after every proxy; shutdown() wakes it
        _quiet(self.sock.shutdown, socket.SHUT_RDWR)
        _quiet(self.sock.close)
        with self.lock:
            conns = list(self.conns.values())
        for conn in conns:
            for t in conn.timers:
                t.cancel()
            if conn.phase != "halfdead":
                self._teardown(conn, "fin")
        self._acceptor.join(2)
        null, self._null = self._null, -1
        _quiet(os.close, null)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------
# One pattern transfer through a fault proxy (test_integrity.py, bench/soak.py)
# ---------------------------------------------------------------------------

# the client's -v lines that tell of a cut request it went on from (as test_faults.py)
RESUME_MARKS = ("resum", "trying again", "going on from", "sending it again")


def resume_lines(lines):
    # --stats lines say "resumes N": not a resume
    return [l for l in lines if any(m in l for m in RESUME_MARKS) and " stats: " not in l]


def integrity_lines(lines):
    return [l for l in lines if "integrity" in l.lower()]


def _no_transfer(error):
    return {"sent": 0, "received": 0, "first_bad_offset": None, "shape": None,
            "detail": "no transfer", "elapsed": 0.0, "error": error, "end": "error",
            "max_gap": 0.0, "stalls": [], "first_byte": None,
            "jump_from": None, "jump_to": None}


def run_transfer(client_bin, upstream_port, scheme, transport_args, mode, seed, nbytes,
                 rate, timeout, cacert=None, target="echo", proxy_kw=None, max_elapsed=None,
                 via=None, workload=None, command="forward", disturb=None):
    """A relay-https forward to `target` (an echo) through a FaultProxy(mode,
    seed) in front of upstream_port (scheme "http" or "https"), and the offset
    pattern pumped through it (pump_pattern). Every wait is bounded by timeout.

    Other paths (tests/integration/faultpaths.py): via(fp) returns (url,
    cleanup) when something stands between the client and the proxy, or behind
    it (nginx); command "proxy" with target None runs `relay-https proxy`;
    workload(fw) replaces the single pump (several SOCKS connections, UDP) and
    returns a result of pump_pattern's shape (plus "extra": a line for the
    report); disturb(stop_event) runs in a thread during the workload (graceful
    restarts, killed children) and returns a line for the report.

    Returns a dict: the pump_pattern() result plus seed, mode, stats, events,
    client (stderr tail), lines (all of it), resumes, integrity (client lines), wrong (a wrong
    byte came), problems ([text]), ok, report (one line), message (a failure
    report with the seed, the first wrong offset and shape, the proxy's events
    and the client's stderr tail)."""
    import harness          # tests/integration
    from pattern import pump_pattern, summarize

    out = {"seed": seed, "mode": mode, "nbytes": nbytes, "rate": rate}
    fw = None
    cleanup = None
    disturbed = []
    with FaultProxy(upstream_port, mode=mode, seed=seed, **(proxy_kw or {})) as fp:
        url = "%s://127.0.0.1:%d/relay" % (scheme, fp.port)
        stop = threading.Event()
        dt = None
        try:
            if via is not None:
                url, cleanup = via(fp)
            fw = harness.Forward(client_bin, url, target, cacert=cacert,
                                 extra_args=transport_args, command=command)
            if disturb is not None:
                dt = threading.Thread(target=lambda: disturbed.append(disturb(stop)),
                                      daemon=True)
                dt.start()
            if workload is not None:
                res = workload(fw)
            else:
                res = pump_pattern("127.0.0.1", fw.port, nbytes, rate=rate, timeout=timeout)
            time.sleep(0.2)         # the client's last lines about this tunnel
            lines = fw.lines()
        except AssertionError as e:  # the forward did not start
            res = _no_transfer(str(e))
            lines = []
        finally:
            stop.set()
            if dt is not None:
                dt.join(30)
            if fw is not None:
                fw.stop()
            if cleanup is not None:
                cleanup()
        out["stats"] = fp.stats()
        out["events"] = fp.events()
        out["proxy"] = fp.describe()
    out.update(res)
    out["cmd"] = " ".join(fw.cmd) if fw is not None else None
    out["client"] = lines[-40:]
    out["lines"] = lines
    out["resumes"] = len(resume_lines(lines))
    out["integrity"] = integrity_lines(lines)
    out["wrong"] = res["first_bad_offset"] is not None
    problems = list(res.get("problems", ()))
    if out["wrong"]:
        problems.append("WRONG BYTE: " + res["detail"])
    elif res["received"] != nbytes and not res.get("lossy"):
        problems.append("incomplete: " + res["detail"])
    if res["error"] and not out["wrong"]:
        problems.append("error: %s" % res["error"])
    if out["integrity"]:
        problems.append("client reports an integrity error: %s" % out["integrity"][-1])
    if max_elapsed is not None and res["elapsed"] > max_elapsed:
        problems.append("too slow: %.1f s > %.1f s (stall bound)" % (res["elapsed"],
                                                                     max_elapsed))
    out["problems"] = problems
    out["ok"] = not problems
    extra = [x for x in [res.get("extra")] + disturbed if x]
    out["report"] = "seed=%d mode=%s: %s; %d faults %s, %d resumes%s" % (
        seed, mode, summarize(res), out["stats"]["faults"], out["stats"]["by_mode"],
        out["resumes"], "".join("; " + x for x in extra))
    out["message"] = "\n".join(
        ["%s (replay: RH_FAULT_SEED=%d)" % (" / ".join(problems) or "ok", seed),
         out["report"], out["proxy"], "--- fault proxy events (last 20) ---"]
        + out["events"][-20:]
        + ["--- client stderr (last 40 lines): %s ---" % out["cmd"]] + out["client"])
    return out
