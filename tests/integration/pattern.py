"""An offset pattern that names the first wrong byte of a stream (issue 10).

Every 8 bytes of the stream are their own offset, as a big-endian u64: the
stream is struct.pack('>Q', 0) + struct.pack('>Q', 8) + struct.pack('>Q', 16)
+ ...  So any window of received bytes tells where in the stream it came from,
and a receiver can say not only *that* a byte is wrong but *how*: the data
skipped ahead (bytes lost), went back (bytes doubled), or is something else
(garbage, or a shift that is not a copy of the stream).

    pattern_bytes(start, end)   the stream's bytes [start, end), generated lazily
    PatternChecker              fed received bytes incrementally; finds the
                                first wrong offset and its shape
    pump_pattern(host, port, nbytes, rate, timeout)
                                sends the pattern through a local TCP port (a
                                relay-https forward to an echo target), paced,
                                and checks the echo as it arrives

No numpy: a 64 KiB block of the pattern is one bytes.join over precomputed
2-byte suffixes (about 1 GB/s), and nothing holds more than a few blocks.
"""

import socket
import threading
import time

BLOCK = 65536                  # bytes per generated block; words per block: 8192
_WORDS = BLOCK // 8
# In block n the word j is n * 65536 + 8 * j: its low 2 bytes are 8 * j (no carry,
# since 8 * j < 65536) and its high 6 bytes are n. A block is therefore
# P + S0 + P + S1 + ... + P + S8191 with P = n as 6 bytes: P + P.join(S).
_SUFFIXES = [(8 * j).to_bytes(2, "big") for j in range(_WORDS)]


def _block(n):
    p = n.to_bytes(6, "big")
    return p + p.join(_SUFFIXES)


def pattern_bytes(start, end):
    """The pattern stream's bytes at offsets [start, end)."""
    if end <= start:
        return b""
    first, last = start // BLOCK, (end - 1) // BLOCK
    if first == last:
        return _block(first)[start - first * BLOCK:end - first * BLOCK]
    data = b"".join(_block(n) for n in range(first, last + 1))
    return data[start - first * BLOCK:end - first * BLOCK]


def pattern_word(offset):
    """The 8 bytes of the (8-aligned) word at offset."""
    return (offset - offset % 8).to_bytes(8, "big")


def _first_diff(a, b):
    """Index of the first differing byte of two equally long bytes-likes (or None)."""
    if a == b:
        return None
    lo, hi = 0, len(a)          # the first difference lies in [lo, hi)
    ma, mb = memoryview(a), memoryview(b)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if ma[lo:mid] == mb[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return None


def fmt_offset(o):
    return "%d (0x%x)" % (o, o) if o is not None else "None"


class PatternChecker:
    """Checks bytes received (fed in any pieces) against the pattern.

    At the first wrong byte it records `first_bad` (its stream offset) and, once
    it has seen up to SHAPE_BYTES more bytes (or at finish()), the `shape`:

      "skip"      the received bytes go on from a later offset of the stream
                  (bytes were lost): `jump_from` is where the received stream
                  breaks, `jump_to` the stream offset its bytes come from
      "doubling"  the same, from an earlier offset (bytes delivered twice)
      "garbage"   anything else (unaligned/garbage: no copy of the stream)
      "long"      every expected byte was right, then more bytes came
      "short"     (no wrong byte) the stream ended before `total` bytes

    Bytes after the first wrong one are only counted, never kept beyond
    SHAPE_BYTES."""

    SHAPE_BYTES = 4096
    MIN_MATCH = 16          # bytes a shifted copy must match to be called one

    def __init__(self, total=None, start=0):
        self.total = total
        self.start = start
        self.received = 0           # bytes fed
        self.first_bad = None       # stream offset of the first wrong byte
        self.shape = None
        self.jump_from = None
        self.jump_to = None
        self.finished = False
        self._after = None          # bytearray: received bytes from first_bad on

    @property
    def ok(self):
        return self.first_bad is None

    def feed(self, data):
        if not data:
            return
        n = len(data)
        pos = self.start + self.received     # stream offset of data[0]
        self.received += n
        if self.first_bad is not None:
            if self.shape is None and len(self._after) < self.SHAPE_BYTES:
                self._after += data[:self.SHAPE_BYTES - len(self._after)]
                if len(self._after) >= self.SHAPE_BYTES:
                    self._classify()
            return
        limit = n
        if self.total is not None and pos + n > self.start + self.total:
            limit = max(0, self.start + self.total - pos)
        i = _first_diff(data[:limit], pattern_bytes(pos, pos + limit)) if limit else None
        if i is None and limit == n:
            return
        if i is None:                       # all right, then more than expected
            self.first_bad = pos + limit
            self.shape = "long"
            return
        self.first_bad = pos + i
        self._after = bytearray(data[i:i + self.SHAPE_BYTES])
        if len(self._after) >= self.SHAPE_BYTES:
            self._classify()

    def finish(self):
        """The stream ended: classify what is pending, check the length.
        Returns self.ok (no wrong byte and, with total, exactly total bytes)."""
        self.finished = True
        if self.first_bad is not None and self.shape is None:
            self._classify()
        if self.first_bad is None and self.total is not None and self.received < self.total:
            self.shape = "short"
        return self.ok and (self.total is None or self.received == self.total)

    def _classify(self):
        p, rx = self.first_bad, bytes(self._after)
        best = None
        # a shifted copy of the stream has, at exactly one of the next 8
        # positions, a whole word that names its own source offset
        for s in range(min(8, max(0, len(rx) - 7))):
            v = int.from_bytes(rx[s:s + 8], "big")
            q = v - s                       # source offset of the byte at p
            if v % 8 or q < 0 or q == p:
                continue
            m = min(len(rx), 64)
            if m < self.MIN_MATCH or rx[:m] != pattern_bytes(q, q + m):
                continue
            best = q
            break
        if best is None:
            self.shape = "garbage"
            self.jump_from, self.jump_to = p, None
            return
        delta = best - p
        self.shape = "skip" if delta > 0 else "doubling"
        # (the break itself may lie a few bytes before p, where the old and the
        # new offsets share bytes; p is the first byte that shows it)
        self.jump_from, self.jump_to = p, best

    def describe(self):
        """One line: what is wrong (or 'intact ...')."""
        if self.first_bad is None:
            if self.shape == "short":
                return ("no wrong byte, but short: %d of %d bytes, ends at offset %s"
                        % (self.received, self.total, fmt_offset(self.start + self.received)))
            return "intact: %d bytes" % self.received
        head = "first wrong byte at offset %s" % fmt_offset(self.first_bad)
        if self.shape == "skip":
            return ("%s: skip: the data there is the stream's from offset %s on "
                    "(%d bytes missing)" % (head, fmt_offset(self.jump_to),
                                           self.jump_to - self.jump_from))
        if self.shape == "doubling":
            return ("%s: doubling: the data there is the stream's from offset %s on "
                    "(%d bytes again)" % (head, fmt_offset(self.jump_to),
                                          self.jump_from - self.jump_to))
        if self.shape == "long":
            return "%s: long: %d bytes received, %d expected" % (head, self.received, self.total)
        got = bytes(self._after[:16]) if self._after else b""
        want = pattern_bytes(self.first_bad, self.first_bad + len(got))
        return ("%s: unaligned/garbage: got %s, expected %s (%d bytes received in all)"
                % (head, got.hex(), want.hex(), self.received))


# ---------------------------------------------------------------------------
# Through a socket
# ---------------------------------------------------------------------------

def pump_pattern(host, port, nbytes, rate=None, timeout=120, chunk=65536, stall_gap=5.0,
                 connect=None, start_offset=0):
    """Connect to host:port, send the pattern's first nbytes (at most `rate`
    bytes/s when given, paced from the start) while another thread reads the
    echo and checks it; shut the write side down after the last byte, read to
    EOF. Every wait is bounded by `timeout` (seconds, for the whole run).

    Returns a dict: sent, received, first_bad_offset (None if no wrong byte),
    shape (None when intact; "skip", "doubling", "garbage", "long", "short"),
    detail (one line), jump_from, jump_to, elapsed, error (None or text),
    end ("fin", "rst", "timeout", "error"), max_gap (longest time, in s,
    without a received byte while the echo was behind), stalls (gaps longer
    than stall_gap s: [(at_offset, seconds)]), first_byte (s to the first echoed byte).
    connect: makes the connection instead (a SOCKS5 handshake first, say).
    start_offset: the stream's bytes are the pattern's from there on (a multiple
    of 8), so that connections carried side by side each have bytes of their own
    and a byte handed to the wrong one shows as a jump into another's range."""
    start = time.monotonic()
    deadline = start + timeout
    checker = PatternChecker(total=nbytes, start=start_offset)
    res = {"sent": 0, "received": 0, "first_bad_offset": None, "shape": None,
           "detail": None, "jump_from": None, "jump_to": None, "elapsed": None,
           "error": None, "end": None, "max_gap": 0.0, "stalls": [], "first_byte": None}
    errors = []
    stop = threading.Event()
    try:
        s = (connect() if connect
             else socket.create_connection((host, port), timeout=min(timeout, 30)))
    except OSError as e:
        res["error"] = "connect: %r" % (e,)
        res["end"] = "error"
        res["elapsed"] = time.monotonic() - start
        return res
    s.settimeout(0.5)
    sent = [0]

    def sender():
        off = 0
        buf, buf_off = b"", 0
        try:
            while off < nbytes and not stop.is_set():
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError("send timed out after %d of %d bytes" % (off, nbytes))
                if rate and off > rate * (now - start):
                    time.sleep(min(0.05, off / rate - (now - start)))
                    continue
                if buf_off >= len(buf):
                    buf = pattern_bytes(start_offset + off,
                                        start_offset + min(nbytes, off + chunk))
                    buf_off = 0
                try:
                    n = s.send(memoryview(buf)[buf_off:])
                except socket.timeout:
                    continue
                buf_off += n
                off += n
                sent[0] = off
            if off >= nbytes:
                s.shutdown(socket.SHUT_WR)
        except Exception as e:      # reported by the caller
            if not stop.is_set():
                errors.append("send: %r" % (e,))

    t = threading.Thread(target=sender, name="pump-send", daemon=True)
    t.start()
    last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                res["end"] = "timeout"
                raise TimeoutError("receive timed out after %.0f s: %d of %d bytes echoed "
                                   "(%d sent)" % (timeout, checker.received, nbytes, sent[0]))
            try:
                b = s.recv(262144)
            except socket.timeout:
                gap = time.monotonic() - last
                if checker.received < sent[0] and gap > res["max_gap"]:
                    res["max_gap"] = gap
                continue
            now = time.monotonic()
            gap = now - last
            if gap > res["max_gap"]:
                res["max_gap"] = gap
            if gap > stall_gap:
                res["stalls"].append((checker.received, round(gap, 1)))
            last = now
            if not b:
                res["end"] = "fin"
                break
            if res["first_byte"] is None:
                res["first_byte"] = now - start
            checker.feed(b)
    except ConnectionResetError as e:
        res["end"] = "rst"
        errors.append("recv: %r" % (e,))
    except Exception as e:
        res["end"] = res["end"] or "error"
        errors.append("recv: %r" % (e,))
    stop.set()
    t.join(max(1.0, min(5.0, deadline - time.monotonic())))
    try:
        s.close()
    except OSError:
        pass
    checker.finish()
    if res["end"] == "timeout" or (checker.received < nbytes and res["end"] != "fin"):
        gap = time.monotonic() - last
        res["max_gap"] = max(res["max_gap"], gap)
        if gap > stall_gap:
            res["stalls"].append((checker.received, round(gap, 1)))
    res.update(sent=sent[0], received=checker.received, first_bad_offset=checker.first_bad,
               shape=checker.shape, detail=checker.describe(), jump_from=checker.jump_from,
               jump_to=checker.jump_to, elapsed=time.monotonic() - start,
               error="; ".join(errors) or None)
    return res


def summarize(res):
    """One line for a pump_pattern() result."""
    return ("sent %d, echoed %d in %.1f s (end %s, longest gap %.1f s%s): %s%s"
            % (res["sent"], res["received"], res["elapsed"] or 0, res["end"],
               res["max_gap"], (", stalls %s" % res["stalls"]) if res["stalls"] else "",
               res["detail"], ("; error: %s" % res["error"]) if res["error"] else ""))


if __name__ == "__main__":
    # self-check: python3 pattern.py
    import struct
    ref = b"".join(struct.pack(">Q", 8 * i) for i in range(40000))
    for a, b in ((0, 1), (3, 70001), (65530, 65550), (100, 320000), (0, len(ref))):
        assert pattern_bytes(a, b) == ref[a:b], (a, b)
    n = 300000
    data = pattern_bytes(0, n)
    cases = {
        "intact": data,
        "skip": data[:100003] + pattern_bytes(165539, 165539 + n - 100003),
        "doubling": data[:200000] + pattern_bytes(150000, 150000 + n - 200000),
        "garbage": data[:123457] + b"\x00" * 1000 + data[124457:],
        "short": data[:250000],
        "long": data + b"xyz",
    }
    for name, d in cases.items():
        c = PatternChecker(total=n)
        for i in range(0, len(d), 7777):
            c.feed(d[i:i + 7777])
        c.finish()
        print("%-9s %s" % (name, c.describe()))
        want = None if name == "intact" else name
        assert c.shape == want, (name, c.shape)
    t = time.perf_counter()
    c = PatternChecker(total=64 << 20)
    for off in range(0, 64 << 20, 262144):
        c.feed(pattern_bytes(off, off + 262144))
    assert c.finish()
    print("generate + check 64 MiB: %.2f s" % (time.perf_counter() - t))
