"""Generic helpers for the abuse tests (test_abuse.py): hand-made HTTP/1.1
requests over TLS that a well-behaved client would never send (headers and no
body, one byte every few seconds, a response never read), a flood target, and a
probe of the website beside the relay that runs in a process of its own (so
that the attackers' threads in the test process cannot slow its measurements).

Every socket has a timeout and every loop a deadline: nothing here can hang.

Run as a script, `attack.py probe PORT PATH MARKER INTERVAL MAX_SECONDS`, it is
that probe: one GET on a fresh TLS connection every INTERVAL seconds, one JSON
line per probe on stdout ([start, latency, ok, error]), until its stdin closes
or MAX_SECONDS pass.
"""

import json
import math
import os
import re
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

PROBE_TIMEOUT = 5.0      # a probe of the site slower than this counts as failed


def frame(kind, payload=b""):
    """A wire-protocol frame: type byte, 24-bit big-endian length, payload."""
    return kind + struct.pack(">I", len(payload))[1:] + payload


def parse_frames(body):
    """[(type, payload)] of the complete frames in body (a cut tail is ignored)."""
    out, i = [], 0
    while i + 4 <= len(body):
        n = int.from_bytes(body[i + 1:i + 4], "big")
        if i + 4 + n > len(body):
            break
        out.append((body[i:i + 1], body[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def client_ctx(alpn=("http/1.1",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


_CTX = client_ctx()


def src_ip(group, i):
    """A distinct loopback source address (127.G.x.y) per attacker i of group G:
    the module tells clients apart by address, and all of 127/8 reaches 127.0.0.1."""
    return "127.%d.%d.%d" % (group, 1 + i // 250, 1 + i % 250)


def p99(values):
    """Nearest-rank 99th percentile (the maximum below 100 samples)."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(0.99 * len(v)) - 1)]


# --------------------------------------------------------------------------
# Hand-made HTTP/1.1 over TLS
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def header(self, name):
        return self.headers.get(name.lower())

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "Response(%s, %.2fs, %r, %r)" % (self.status, self.elapsed,
                                                {k: v for k, v in self.headers.items()
                                                 if k in ("retry-after", "allow",
                                                          "relay-offset", "connection")},
                                                self.body[:200])


class Raw:
    """One TLS connection on which requests are written by hand.

    source: the local address to bind (see src_ip); rcvbuf: a small SO_RCVBUF,
    for a client that does not read (the server's writes then block soon)."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10.0, rcvbuf=None):
        self.t0 = time.monotonic()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                s.bind((source, 0))
            s.settimeout(timeout)
            s.connect((host, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = _CTX.wrap_socket(s)
        except BaseException:
            s.close()
            raise
        self.buf = b""
        self.closed = False
        self.sent_at = None

    # -- writing --
    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, path, headers=(), body=None, chunked=False,
                content_length=None):
        """Send a request head (and body, if given). content_length: a
        Content-Length to announce whatever body follows (or does not)."""
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
        lines += list(headers)
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif content_length is not None:
            lines.append("Content-Length: %d" % content_length)
        elif body is not None:
            lines.append("Content-Length: %d" % len(body))
        elif method == "POST":
            lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if body:
            data += body
        self.sent_at = time.monotonic()
        self.send(data)

    def send_chunk(self, data):
        self.send(b"%x\r\n%s\r\n" % (len(data), data))

    # -- reading --
    def readable(self, timeout):
        """True when bytes (or EOF, or a reset) wait on the socket."""
        if self.sock.pending():
            return True
        try:
            r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            return True
        return bool(r)

    def _recv_nowait(self):
        """Take in what has arrived, without waiting; False once the server closed."""
        self.sock.settimeout(0.0)
        try:
            while True:
                b = self.sock.recv(65536)
                if not b:
                    return False
                self.buf += b
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError,
                InterruptedError):
            return True

    def wait_answer(self, timeout):
        """Wait up to timeout seconds for the server to answer (a whole response
        head arrived: 'answer') or to go away ('closed'); None if neither.
        (Readable alone means nothing: TLS 1.3 session tickets arrive unasked.)"""
        deadline = time.monotonic() + timeout
        while True:
            if b"\r\n\r\n" in self.buf:
                return "answer"
            if not self.readable(deadline - time.monotonic()):
                return None
            try:
                alive = self._recv_nowait()
            except (OSError, ssl.SSLError):
                alive = False
            if not alive:
                return "answer" if b"\r\n\r\n" in self.buf else "closed"
            if time.monotonic() >= deadline and b"\r\n\r\n" not in self.buf:
                return None

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(left)
        b = self.sock.recv(65536)
        if not b:
            raise EOFError("connection closed by the server")
        self.buf += b

    def read_head(self, timeout=10.0):
        """(status, {lower-case name: value}); raises on EOF/timeout before a head."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise ValueError("not an HTTP status line: %r" % lines[0])
        headers = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return int(m.group(1)), headers

    def read_body(self, headers, timeout=10.0, limit=1 << 20, head_only=False):
        """The body after a head: by Content-Length, chunked (until the last chunk,
        or limit bytes, or the deadline), or until the server closes."""
        if head_only:
            return b""
        deadline = time.monotonic() + timeout
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill(deadline)
            body, self.buf = self.buf[:n], self.buf[n:]
            return body
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = b""
            while len(out) < limit:
                while b"\r\n" not in self.buf:
                    self._fill(deadline)
                size_line, rest = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    self._fill(deadline)
                    size_line, rest = self.buf.split(b"\r\n", 1)
                out += rest[:size]
                self.buf = rest[size + 2:]
                if size == 0:
                    break
            return out
        out = b""
        try:
            while len(out) + len(self.buf) < limit:
                self._fill(deadline)
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def response(self, timeout=10.0, head_only=False, stream=False):
        """Read one response (status, headers, body). stream: a 200 with a
        chunked body (a stream pull) is left unread after its head."""
        t = time.monotonic()
        status, headers = self.read_head(timeout)
        if stream and status == 200 and "chunked" in headers.get("transfer-encoding", ""):
            head_only = True
        if status in (204, 304) or status < 200:
            head_only = True        # no body, whatever the headers say
        body = self.read_body(headers, max(0.5, timeout - (time.monotonic() - t)),
                              head_only=head_only)
        return Response(status, headers, body, time.monotonic() - (self.sent_at or t))

    def close(self, rst=False):
        """Go away: FIN (a plain close, no TLS close_notify) or RST."""
        if self.closed:
            return
        self.closed = True
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


def raw_request(port, method, path, headers=(), body=None, source=None, timeout=10.0,
                head_only=False, stream=False):
    """One request on a connection of its own, closed after the answer (a
    stream=True 200 after its head); the Response, or the exception."""
    r = None
    try:
        r = Raw(port, source=source, timeout=timeout)
        r.request(method, path, headers, body)
        return r.response(timeout, head_only=head_only, stream=stream)
    except (OSError, EOFError, ValueError, ssl.SSLError) as e:
        return e
    finally:
        if r:
            r.close()


def run_threads(fn, args_list, timeout):
    """fn(*args) for every args in threads; their results (or the exception, or
    'timeout' for one still running after timeout seconds), in order."""
    results = [None] * len(args_list)

    def run(i, args):
        try:
            results[i] = fn(*args)
        except BaseException as e:   # reported by the caller
            results[i] = e
    ts = [threading.Thread(target=run, args=(i, a), daemon=True)
          for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for i, t in enumerate(ts):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            results[i] = "timeout"
    return results


# --------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------

class FloodServer:
    """A target that sends bytes as fast as its peer takes them, for at most
    max_seconds per connection, and reads (and drops) what it is sent."""

    def __init__(self, max_seconds=60):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.active = 0
        self.accepted = 0
        self.sent = 0
        self._stop = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.active += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        block = b"\0" * 65536
        end = time.monotonic() + self.max_seconds
        c.settimeout(0.5)
        try:
            while not self._stop and time.monotonic() < end:
                try:
                    n = c.send(block)
                    with self.lock:
                        self.sent += n
                except socket.timeout:
                    pass
                try:
                    r, _, _ = select.select([c], [], [], 0)
                    if r and not c.recv(65536):
                        break
                except OSError:
                    break
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# The website beside the relay
# --------------------------------------------------------------------------

def busy_workers(port, timeout=5):
    """BusyWorkers from mod_status (/server-status?auto), or None."""
    r = raw_request(port, "GET", "/server-status?auto", timeout=timeout)
    if not isinstance(r, Response) or r.status != 200:
        return None
    m = re.search(r"^BusyWorkers: (\d+)", r.text(), re.M)
    return int(m.group(1)) if m else None


class SiteProbe:
    """GETs a static page of the same Apache on a fresh TLS connection every
    interval seconds, from a process of its own; samples (start, latency, ok,
    error) with start on the system-wide monotonic clock (time.monotonic())."""

    def __init__(self, port, path="/index.html", marker="mod_relay_https test site",
                 interval=0.05, max_seconds=300):
        self.port = port
        self.lock = threading.Lock()
        self.samples = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "probe", str(port), path, marker,
             str(interval), str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            try:
                t, lat, ok, err = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.samples.append((t, lat, ok, err))

    def between(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] < t1]

    def wait_until(self, t, timeout=10):
        """Wait until a probe that started at or after t has finished."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if any(s[0] >= t for s in self.samples):
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def baseline(self, seconds=1.5):
        """Probe the unloaded site for `seconds`; returns its stats (and checks
        that the site works at all)."""
        t0 = time.monotonic()
        time.sleep(seconds)
        self.wait_until(time.monotonic(), timeout=PROBE_TIMEOUT + 2)
        st = stats(self.between(t0, time.monotonic()))
        assert st["n"] >= 5 and not st["failed"], \
            "the static page does not even answer before the attack: %s" % fmt_stats(st)
        return st

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=PROBE_TIMEOUT + 3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stats(samples):
    lats = [s[1] for s in samples if s[2]]
    failed = [s for s in samples if not s[2]]
    return {"n": len(samples), "failed": failed, "p99": p99(lats),
            "max": max(lats) if lats else None,
            "median": sorted(lats)[len(lats) // 2] if lats else None}


def fmt_stats(st):
    def ms(v):
        return "-" if v is None else "%.0f ms" % (v * 1000)
    s = "%d probes, %d failed, median %s, p99 %s, max %s" % (
        st["n"], len(st["failed"]), ms(st["median"]), ms(st["p99"]), ms(st["max"]))
    if st["failed"]:
        s += "; failures: %s" % "; ".join("%.1fs: %s" % (f[1], f[3]) for f in st["failed"][:3])
    return s


def latency_limit(base, factor=3.0, floor=0.2):
    return max(factor * (base["p99"] or 0), floor)


def check_site(probe, base, phases, latency=True, factor=3.0, floor=0.2, min_samples=3):
    """Problems (a list of strings, empty when the site was fine) in each
    (name, t0, t1) phase: every probe answered 200 with the page, and (latency)
    p99 within max(factor x the baseline p99, floor)."""
    probe.wait_until(max(t1 for _, _, t1 in phases), timeout=PROBE_TIMEOUT + 2)
    limit = latency_limit(base, factor, floor)
    problems = []
    for name, t0, t1 in phases:
        st = stats(probe.between(t0, t1))
        what = "static page %s (%.1f s): %s [baseline: %s; latency limit %.0f ms]" % (
            name, t1 - t0, fmt_stats(st), fmt_stats(base), limit * 1000)
        print(what)
        if st["n"] < min_samples:
            problems.append("too few probes answered: " + what)
        elif st["failed"]:
            problems.append("failed probes: " + what)
        elif latency and st["p99"] > limit:
            problems.append("too slow: " + what)
    return problems


# --------------------------------------------------------------------------
# The probe process
# --------------------------------------------------------------------------

def _probe_once(ctx, port, path, marker):
    deadline = time.monotonic() + PROBE_TIMEOUT
    s = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT)
    try:
        s = ctx.wrap_socket(s)
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                   % path).encode())
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, "no complete answer within %.0f s (%d bytes)" % (
                    PROBE_TIMEOUT, len(data))
            s.settimeout(left)
            b = s.recv(65536)
            if not b:
                break
            data += b
        if not data.startswith(b"HTTP/1.1 200"):
            return False, "answer: %r" % data[:80]
        if marker.encode() not in data:
            return False, "page without its text: %r" % data[:200]
        return True, ""
    finally:
        s.close()


def _probe_main(port, path, marker, interval, max_seconds):
    stop = threading.Event()

    def watch_stdin():
        try:
            sys.stdin.buffer.read()
        except OSError:
            pass
        stop.set()
    threading.Thread(target=watch_stdin, daemon=True).start()
    ctx = client_ctx()
    end = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < end:
        t = time.monotonic()
        try:
            ok, err = _probe_once(ctx, port, path, marker)
        except Exception as e:      # any failure is a failed probe
            ok, err = False, repr(e)
        lat = time.monotonic() - t
        try:
            sys.stdout.write(json.dumps([t, lat, ok, err]) + "\n")
            sys.stdout.flush()
        except OSError:
            return
        stop.wait(max(0.0, t + interval - time.monotonic()))


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "probe":
        _probe_main(int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]),
                    float(sys.argv[6]))
    else:
        sys.exit("usage: attack.py probe PORT PATH MARKER INTERVAL MAX_SECONDS")
