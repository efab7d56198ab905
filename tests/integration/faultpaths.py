"""Fault-soak paths beyond `relay-https forward -> FaultProxy -> Apache` (issue 10,
issue 16; bench/soak.py, test_fault_paths.py). Each is a run_transfer() of
faultproxy.py with the pieces around it:

  nginx-front    batch through a buffering nginx (it also ignores X-Accel-Buffering):
                 client -> FaultProxy -> nginx -> Apache (TLS)
  nginx-back     batch through a stock buffering nginx: client -> nginx ->
                 FaultProxy -> Apache (plain HTTP, so header cuts land in headers)
  nginx-restart  nginx-front, while Apache is restarted gracefully (SIGUSR1) and
                 its children (never a relay core) SIGKILLed, one or the other
                 every 0.5 to 1.5 s
  socks          `relay-https proxy` (SOCKS5, stream over plain HTTP): 4
                 connections at once to the TCP echo, each with a range of the
                 offset pattern of its own, so a byte handed to the wrong one
                 shows as a jump into another's range
  udp            `relay-https proxy` UDP ASSOCIATE: 3 associations at once to a
                 UDP echo. docs/PROTOCOL.md (Datagrams) promises: a datagram
                 whole or not at all; each session's stream exactly once and in
                 order, so datagrams come back in the order sent, never twice,
                 never to another association; only losses are allowed (queues
                 that overflow drop the oldest datagram; a session that ends
                 loses what was in flight)

Apache needs apache_conf(...) (a /px location that lets the TCP and the UDP echo
through) and a plain HTTP vhost (im.plain_http_vhost_conf).
"""

import os
import random
import signal
import socket
import struct
import threading
import time

import harness
import intermediaries as im
from faultproxy import run_transfer
from pattern import PatternChecker, pattern_bytes, pump_pattern
from test_udp import UdpEcho  # noqa: F401 (the UDP echo of soak.py and the tests)

PATHS = ("nginx-front", "nginx-back", "nginx-restart", "socks", "udp")
BATCH = ["--transport", "batch", "--http1.1"]
STREAM = ["--transport", "stream", "--http1.1"]
SOCKS_CONNS = 4
UDP_ASSOCS = 3
UDP_WINDOW = 32            # datagrams in flight per association
UDP_TAG = struct.Struct(">IIH")   # association, sequence number, payload length


def apache_conf(tcp_port, udp_port):
    """The /px location `relay-https proxy` opens destinations under."""
    return "\n".join(["", "<Location /px>", "    SetHandler relay-https",
                      "    RelayAllow 127.0.0.1 %d,udp/%d" % (tcp_port, udp_port),
                      "</Location>", ""])


# ---------------------------------------------------------------------------
# disturbances of Apache itself
# ---------------------------------------------------------------------------

def restarts_and_kills(apache, seed, every=(0.5, 1.5)):
    """disturb() for run_transfer: graceful restarts and SIGKILLed children (never
    the parent or a relay core), in turn, until the stop event."""
    rng = random.Random(seed ^ 0x5a5a)

    def disturb(stop):
        n = {"graceful": 0, "killed": 0}
        turn = 0
        while not stop.wait(rng.uniform(*every)):
            if not apache.running():
                break
            if turn % 2 == 0:
                apache.proc.send_signal(signal.SIGUSR1)
                n["graceful"] += 1
            else:
                cores = set(apache.core_pids().values())
                pool = [p for p in apache.pids() if p != apache.proc.pid and p not in cores]
                if pool:
                    try:
                        os.kill(rng.choice(pool), signal.SIGKILL)
                        n["killed"] += 1
                    except ProcessLookupError:
                        pass
            turn += 1
        return "%d graceful restarts, %d children killed" % (n["graceful"], n["killed"])
    return disturb


# ---------------------------------------------------------------------------
# SOCKS5 by hand
# ---------------------------------------------------------------------------

def _recv_exact(s, n, what):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise OSError("%s: the proxy closed after %d of %d bytes" % (what, len(b), n))
        b += chunk
    return b


def socks_connect(port, dport, timeout=30):
    """A SOCKS5 CONNECT to 127.0.0.1:dport: the socket once the reply said 0."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"\x05\x01\x00")
        if _recv_exact(s, 2, "method") != b"\x05\x00":
            raise OSError("SOCKS5: no method accepted")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", dport))
        rep = _recv_exact(s, 10, "reply")
        if rep[1] != 0:
            raise OSError("SOCKS5 reply %d" % rep[1])
    except OSError:
        s.close()
        raise
    return s


def socks_associate(port, timeout=30):
    """SOCKS5 UDP ASSOCIATE: (control socket, bound UDP socket, relay address)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        c.sendall(b"\x05\x01\x00")
        if _recv_exact(c, 2, "method") != b"\x05\x00":
            raise OSError("SOCKS5: no method accepted")
        c.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
        rep = _recv_exact(c, 10, "associate reply")
        if rep[:4] != b"\x05\x00\x00\x01":
            raise OSError("UDP ASSOCIATE refused: %r" % rep)
    except OSError:
        c.close()
        raise
    relay = (socket.inet_ntoa(rep[4:8]), struct.unpack(">H", rep[8:10])[0])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    u.bind(("127.0.0.1", 0))
    return c, u, relay


# ---------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------

def _merge(results, nbytes):
    """One pump_pattern()-shaped result for pumps that ran side by side."""
    out = {"sent": 0, "received": 0, "first_bad_offset": None, "shape": None,
           "detail": None, "jump_from": None, "jump_to": None, "elapsed": 0.0,
           "error": None, "end": None, "max_gap": 0.0, "stalls": [], "first_byte": None}
    details, errors, ends = [], [], []
    for i, r in enumerate(results):
        out["sent"] += r["sent"]
        out["received"] += r["received"]
        out["elapsed"] = max(out["elapsed"], r["elapsed"] or 0.0)
        out["max_gap"] = max(out["max_gap"], r["max_gap"])
        out["stalls"] += r["stalls"]
        ends.append(r["end"])
        if r["first_bad_offset"] is not None and out["first_bad_offset"] is None:
            for k in ("first_bad_offset", "shape", "jump_from", "jump_to"):
                out[k] = r[k]
        details.append("#%d %s" % (i, r["detail"]))
        if r["error"]:
            errors.append("#%d %s" % (i, r["error"]))
    out["detail"] = "; ".join(details)
    out["error"] = "; ".join(errors) or None
    out["end"] = ",".join(sorted(set(str(e) for e in ends)))
    return out


def socks_workload(dport, nbytes, rate, timeout, conns=SOCKS_CONNS):
    """workload(fw) for run_transfer: `conns` SOCKS connections at once, nbytes
    and rate shared out, connection i carrying the pattern from i << 40 on."""
    share, each_rate = nbytes // conns, max(1, rate // conns)

    def work(fw):
        results = [None] * conns

        def one(i):
            def connect():
                return socks_connect(fw.port, dport, timeout=min(timeout, 30))
            n = share if i < conns - 1 else nbytes - share * (conns - 1)
            results[i] = pump_pattern("127.0.0.1", 0, n, rate=each_rate, timeout=timeout,
                                      connect=connect, start_offset=i << 40)
        ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout + 30)
        return _merge([r or {"sent": 0, "received": 0, "first_bad_offset": None,
                             "shape": None, "detail": "hung", "jump_from": None,
                             "jump_to": None, "elapsed": timeout, "error": "hung",
                             "end": "timeout", "max_gap": timeout, "stalls": []}
                       for r in results], nbytes)
    return work


class _Assoc:
    """One UDP association's sender and checker."""

    def __init__(self, idx, port, echo_port, total, rate, deadline, rng):
        self.idx = idx
        self.ctl, self.u, self.relay = socks_associate(port)
        self.hdr = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + \
            struct.pack(">H", echo_port)
        self.total, self.rate, self.deadline, self.rng = total, rate, deadline, rng
        self.sizes = []            # payload length of each datagram sent
        self.sent_bytes = 0
        self.last = -1             # sequence number of the last good datagram back
        self.got = 0
        self.got_bytes = 0
        self.bad = []              # (synthetic offset, text)
        self.last_rx = time.monotonic()
        self.max_gap = 0.0
        self.done_sending = threading.Event()

    @staticmethod
    def base(idx, seq):
        return (idx << 40) + (seq << 16)

    def payload(self, seq, n):
        return UDP_TAG.pack(self.idx, seq, n) + pattern_bytes(self.base(self.idx, seq),
                                                             self.base(self.idx, seq) + n)

    def send_loop(self):
        start = time.monotonic()
        seq = 0
        try:
            while self.sent_bytes < self.total and time.monotonic() < self.deadline:
                now = time.monotonic()
                if self.sent_bytes > self.rate * (now - start):
                    time.sleep(0.002)
                    continue
                if seq - self.last > UDP_WINDOW and now - self.last_rx < 1.0:
                    time.sleep(0.002)
                    continue
                n = self.rng.randint(0, 1400)
                self.sizes.append(n)      # before the echo can come back
                self.u.sendto(self.hdr + self.payload(seq, n), self.relay)
                self.sent_bytes += n
                seq += 1
        except OSError as e:
            self.bad.append((self.base(self.idx, seq), "send: %r" % (e,)))
        self.done_sending.set()

    def check(self, data):
        """One datagram back: names the echo, is whole, is ours, comes after the last."""
        if data[:len(self.hdr)] != self.hdr:
            return "header %s is not the echo's" % data[:10].hex()
        body = data[len(self.hdr):]
        if len(body) < UDP_TAG.size:
            return "%d bytes, shorter than a tag" % len(body)
        idx, seq, n = UDP_TAG.unpack(body[:UDP_TAG.size])
        if idx != self.idx:
            return "datagram %d of association %d delivered to association %d" % (
                seq, idx, self.idx)
        if seq >= len(self.sizes) or self.sizes[seq] != n or len(body) != UDP_TAG.size + n:
            return "datagram %d: %d bytes, tag says %d, sent %s" % (
                seq, len(body) - UDP_TAG.size, n,
                self.sizes[seq] if seq < len(self.sizes) else "never")
        chk = PatternChecker(total=n, start=self.base(idx, seq))
        chk.feed(body[UDP_TAG.size:])
        if not chk.finish():
            return "datagram %d corrupted: %s" % (seq, chk.describe())
        if seq == self.last:
            return "datagram %d delivered twice" % seq
        if seq < self.last:
            return "datagram %d came after %d (reordered)" % (seq, self.last)
        self.last = seq
        self.got += 1
        self.got_bytes += n
        return None

    def recv_loop(self, quiet):
        self.u.settimeout(0.2)
        while time.monotonic() < self.deadline:
            try:
                data = self.u.recv(65536)
            except socket.timeout:
                now = time.monotonic()
                if self.done_sending.is_set() and (self.last >= len(self.sizes) - 1
                                                   or now - self.last_rx > quiet):
                    return
                continue
            except OSError as e:
                self.bad.append((None, "recv: %r" % (e,)))
                return
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - self.last_rx)
            self.last_rx = now
            why = self.check(data)
            if why:
                self.bad.append((self.base(self.idx, max(self.last, 0)), why))

    def close(self):
        for s in (self.u, self.ctl):
            try:
                s.close()
            except OSError:
                pass


class UdpDrops:
    """Where datagrams died in a kernel's full receive buffer: samples
    /proc/net/udp (every socket's drop count) every `every` s while a udp run
    goes and keeps each socket's largest count, by where it stands: "client"
    (the associations' sockets of `relay-https proxy`: up), "echo" (the UDP
    echo: up), "core" (the relay core's sockets connected to the echo: down),
    "ours" (the checker's sockets: down). A socket that closes between two
    looks loses its last drops from the figure: a lower bound."""

    WHERE = ("client", "echo", "core", "ours")

    def __init__(self, echo_port, every=0.05):
        self.echo_port = echo_port
        self.client, self.ours = set(), set()
        self.every = every
        self.seen = {}              # inode -> (where, drops)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _where(self, lport, rport):
        if lport == self.echo_port:
            return "echo"
        if rport == self.echo_port:
            return "core"
        if lport in self.client:
            return "client"
        if lport in self.ours:
            return "ours"
        return None

    def look(self):
        try:
            with open("/proc/net/udp") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            return
        for row in rows:
            col = row.split()
            if len(col) < 13:
                continue
            where = self._where(int(col[1].split(":")[1], 16), int(col[2].split(":")[1], 16))
            if where is not None:
                key = (col[9], col[1], col[2])     # inode, and its ends
                drops = int(col[12])
                if drops >= self.seen.get(key, (where, 0))[1]:
                    self.seen[key] = (where, drops)

    def _loop(self):
        while not self.stop_ev.wait(self.every):
            self.look()

    def start(self):
        self.look()
        self.base = dict(self.seen)   # the echo's drops before this run
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join(2)
        self.look()

    def totals(self):
        out = dict.fromkeys(self.WHERE, 0)
        for key, (where, drops) in self.seen.items():
            out[where] += drops - self.base.get(key, (where, 0))[1]
        return out


def udp_workload(echo_port, nbytes, rate, timeout, seed, assocs=UDP_ASSOCS, quiet=15.0):
    """workload(fw) for run_transfer: `assocs` UDP associations at once, each
    sending datagrams of 0 to 1400 bytes (nbytes and rate shared out, at most
    UDP_WINDOW unanswered) to the echo and checking what comes back. Loss is
    allowed (res["lossy"]); the last tenth of an association's datagrams all
    lost is a problem (the association stopped carrying). An association waits
    `quiet` s for the rest after its last datagram went (refused reconnects of
    up to 4 s, one after the other, hold a session that long)."""
    def work(fw):
        start = time.monotonic()
        deadline = start + timeout
        rng = random.Random(seed)
        drops = UdpDrops(echo_port)
        try:
            al = [_Assoc(i, fw.port, echo_port, nbytes // assocs, max(1, rate // assocs),
                         deadline, random.Random(rng.getrandbits(64))) for i in range(assocs)]
        except OSError as e:
            return {"sent": 0, "received": 0, "first_bad_offset": None, "shape": None,
                    "detail": "no association", "jump_from": None, "jump_to": None,
                    "elapsed": 0.0, "error": "associate: %r" % (e,), "end": "error",
                    "max_gap": 0.0, "stalls": [], "lossy": True}
        for a in al:
            drops.client.add(a.relay[1])
            drops.ours.add(a.u.getsockname()[1])
        drops.start()
        ts = []
        for a in al:
            ts.append(threading.Thread(target=a.send_loop, daemon=True))
            ts.append(threading.Thread(target=a.recv_loop, args=(quiet,), daemon=True))
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout + 10)
        drops.stop()
        for a in al:
            a.close()
        kd = drops.totals()
        res = {"sent": sum(a.sent_bytes for a in al),
               "received": sum(a.got_bytes for a in al), "first_bad_offset": None,
               "shape": None, "jump_from": None, "jump_to": None,
               "elapsed": time.monotonic() - start, "error": None, "end": "fin",
               "max_gap": max(a.max_gap for a in al), "stalls": [], "lossy": True,
               "problems": []}
        sent = sum(len(a.sizes) for a in al)
        got = sum(a.got for a in al)
        bad = [(a.idx, off, why) for a in al for off, why in a.bad]
        wrong = [b for b in bad if not b[2].startswith(("send:", "recv:"))]
        if wrong:
            res["first_bad_offset"] = wrong[0][1] if wrong[0][1] is not None else 0
            res["shape"] = "datagram"
        for a in al:
            tail = max(1, len(a.sizes) // 10)
            if a.sizes and a.last < len(a.sizes) - tail:
                res["problems"].append(
                    "association %d stopped: the last datagram back is %d of %d sent"
                    % (a.idx, a.last, len(a.sizes)))
        if bad and not wrong:
            res["error"] = "; ".join("#%d %s" % (i, w) for i, _, w in bad[:3])
        res["detail"] = ("%d of %d datagrams back (%.2f%% lost; full receive buffers "
                         "dropped %s), %d wrong%s"
                         % (got, sent, 100.0 * (sent - got) / max(1, sent),
                            ", ".join("%s %d" % (w, kd[w]) for w in UdpDrops.WHERE),
                            len(wrong),
                            (": " + "; ".join("#%d %s" % (i, w) for i, _, w in wrong[:3]))
                            if wrong else ""))
        res["extra"] = "udp: " + res["detail"]
        res["datagrams"] = (sent, got, len(wrong))
        res["kernel_drops"] = kd
        return res
    return work


# ---------------------------------------------------------------------------
# one run of a path
# ---------------------------------------------------------------------------

def run_path(path, env, mode, seed, nbytes, rate, timeout, proxy_kw=None, max_elapsed=None,
             client_args=()):
    """One run of `path` (PATHS) with the FaultProxy in `mode`. env: client (the
    binary), apache (harness.Apache with apache_conf() and a plain vhost),
    plain_port, ca, echo_port (TCP echo), udp_port (UDP echo), work (a
    directory for nginx); client_args: more options for the client (-v, --stats
    1). Returns run_transfer()'s result."""
    kw = dict(proxy_kw=proxy_kw, max_elapsed=max_elapsed)
    batch, stream = BATCH + list(client_args), STREAM + list(client_args)
    a = env["apache"]
    if path in ("nginx-front", "nginx-restart"):
        ng = im.Nginx(os.path.join(env["work"], "nginx-%d" % seed), a.port,
                      ignore_accel_buffering=True)
        ng.start()
        try:
            return run_transfer(env["client"], ng.port, "http", batch, mode, seed, nbytes,
                                rate, timeout,
                                disturb=(restarts_and_kills(a, seed)
                                         if path == "nginx-restart" else None), **kw)
        finally:
            ng.stop()
    if path == "nginx-back":
        def via(fp):
            ng = im.Nginx(os.path.join(env["work"], "nginx-%d" % seed), fp.port,
                          upstream_scheme="http")
            ng.start()
            return ng.url + "/relay", ng.stop
        return run_transfer(env["client"], env["plain_port"], "http", batch, mode, seed,
                            nbytes, rate, timeout, via=via, **kw)
    if path == "socks":
        return run_transfer(env["client"], env["plain_port"], "http", stream, mode, seed,
                            nbytes, rate, timeout, target=None, command="proxy",
                            via=lambda fp: ("http://127.0.0.1:%d/px" % fp.port, None),
                            workload=socks_workload(env["echo_port"], nbytes, rate, timeout),
                            **kw)
    if path == "udp":
        return run_transfer(env["client"], env["plain_port"], "http", stream, mode, seed,
                            nbytes, rate, timeout, target=None, command="proxy",
                            via=lambda fp: ("http://127.0.0.1:%d/px" % fp.port, None),
                            workload=udp_workload(env["udp_port"], nbytes, rate, timeout,
                                                  seed), **kw)
    raise ValueError("unknown path %r" % path)
