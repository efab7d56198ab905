"""A TCP proxy of the harness's own that cuts its connections at random points.

Put between the client and Apache: every connection lives for a random time
(0.5 to 3 s by default) and is then cut in the middle of the next chunk of
bytes it carries (part of the chunk goes on, the rest is lost), so the cut lands
inside a request or a response, not between them; with a reset (RST) or a plain
close (FIN) on both sides, at random.
The client must resume every time without losing, doubling or reordering a byte.
"""

import random
import socket
import struct
import threading
import time

import harness


class ChaosProxy:
    def __init__(self, upstream_port, min_life=0.5, max_life=3.0, seed=None,
                 upstream_host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.min_life, self.max_life = min_life, max_life
        self.rng = random.Random(seed)
        self.sock = harness.listener(512)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.cuts = 0            # connections cut while both sides were open
        self.cut_bytes = 0       # bytes that had passed through the cut connections
        self.active = {}
        self.cutting = True
        self.down_until = 0.0    # blackout: connections refused (reset) until then
        self._stop = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- plumbing -----------------------------------------------------------

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
                continue
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            for s in (c, u):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = {"c": c, "u": u, "bytes": 0, "open": 2, "cut": False, "armed": False}
            with self.lock:
                self.accepted += 1
                self.active[id(conn)] = conn
            life = self.rng.uniform(self.min_life, self.max_life)
            conn["rst"] = self.rng.random() < 0.5
            t = threading.Timer(life, self._arm, args=(conn,))
            t.daemon = True
            conn["timer"] = t
            t.start()
            threading.Thread(target=self._copy, args=(conn, c, u), daemon=True).start()
            threading.Thread(target=self._copy, args=(conn, u, c), daemon=True).start()

    def _copy(self, conn, src, dst):
        try:
            while True:
                b = src.recv(262144)
                if not b:
                    break
                if conn["armed"] and self.cutting:
                    with self.lock:
                        k = self.rng.randrange(len(b) + 1)
                    dst.sendall(b[:k])
                    conn["bytes"] += k
                    self._cut(conn, conn["rst"])
                    break
                dst.sendall(b)
                conn["bytes"] += len(b)
            dst.shutdown(socket.SHUT_WR)     # pass a clean half-close on
        except OSError:
            pass
        with self.lock:
            conn["open"] -= 1
            last = conn["open"] == 0
        if last:
            conn["timer"].cancel()
            self._close(conn, rst=False)

    def _close(self, conn, rst):
        for s in (conn["c"], conn["u"]):
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)   # wakes the copier without a FIN
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        with self.lock:
            self.active.pop(id(conn), None)

    def _arm(self, conn):
        conn["armed"] = True

    def _cut(self, conn, rst):
        with self.lock:
            # a connection already ending (one way closed) is left to finish
            if not self.cutting or conn["open"] < 2 or conn["cut"]:
                return
            conn["cut"] = True
            self.cuts += 1
            self.cut_bytes += conn["bytes"]
        self._close(conn, rst)

    # -- control ------------------------------------------------------------

    def blackout(self, seconds):
        """The path goes down: every connection is reset now, and new ones are
        reset at once for `seconds`."""
        self.down_until = time.monotonic() + seconds
        with self.lock:
            conns = list(self.active.values())
        for conn in conns:
            with self.lock:
                if conn["cut"]:
                    continue
                conn["cut"] = True
                self.cuts += 1
            self._close(conn, rst=True)

    def stats(self):
        with self.lock:
            return {"accepted": self.accepted, "cuts": self.cuts, "cut_bytes": self.cut_bytes}

    def stop(self):
        self._stop = True
        self.cutting = False
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
