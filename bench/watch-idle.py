#!/usr/bin/env python3
"""The server's CPU for idle batch sessions: one long-poll per session
(what an idle batch tunnel costs) against one watch for all of them
(docs/PROTOCOL.md, watch; docs/BENCHMARKS.md, "Idle sessions: long-polls
against one watch").

    RH_BUILD_DIR=<build> bench/watch-idle.py [--sessions 500] [--poll 5]
                                             [--window 20] [--rounds 2]

Starts an Apache (event MPM, the test harness's configuration) with a
location whose RelayPollTimeout is --poll, opens --sessions sessions to a
target that never sends, then alternates, --rounds times: every session
long-polls in a loop (a thread and a kept-alive HTTPS connection each), and
one watch of all the sessions in a loop, and nothing. For each it reads the CPU time of
every Apache process (children and relay cores, /proc/PID/stat) over
--window seconds, after one poll period to settle, and counts the requests
answered in the window; and, for the baseline, the same with no request at
all (the cores' and children's own beats)."""

import argparse
import http.client
import os
import signal
import ssl
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import harness  # noqa: E402


def _conn(port, ctx):
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=120)


def _post(c, path, headers, body=b""):
    h = {"Relay-Version": "1", "Content-Length": str(len(body))}
    h.update(headers)
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse()
    return r.status, r.getheader("Relay-Session"), r.read()


def _cpu(a):
    return sum(harness.proc_cpu_seconds(p) or 0 for p in a.pids())


class Loop:
    """Requests in a loop on threads until stopped; counts the answers."""

    def __init__(self, port, ctx, jobs):
        self.stop = False
        self.n = 0
        self.errors = 0
        self.mu = threading.Lock()
        self.ths = [threading.Thread(target=self._run, args=(port, ctx, j), daemon=True)
                    for j in jobs]
        for t in self.ths:
            t.start()

    def _run(self, port, ctx, job):
        c = _conn(port, ctx)
        path, headers, body = job
        while not self.stop:
            try:
                st, _, _ = _post(c, path, headers, body)
            except (OSError, http.client.HTTPException):
                st = 0
                c.close()
                c = _conn(port, ctx)
            with self.mu:
                self.n += 1
                self.errors += st != 200

    def end(self):
        self.stop = True
        for t in self.ths:
            t.join(120)


def measure(a, loop, settle, window):
    time.sleep(settle)
    n0, e0, c0, t0 = loop.n, loop.errors, _cpu(a), time.monotonic()
    time.sleep(window)
    n1, e1, c1, t1 = loop.n, loop.errors, _cpu(a), time.monotonic()
    loop.end()
    return n1 - n0, c1 - c0, t1 - t0, e1 - e0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--poll", type=int, default=5)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hot", action="store_true",
                    help="only a watch of all the sessions that one of them answers at once "
                         "(its target sent a byte): the cost of a watch request itself")
    o = ap.parse_args()
    # a SIGTERM stops the Apache it started, too (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    tmp = tempfile.mkdtemp(prefix="rh-watch-idle-")
    ca, cert, key = harness.make_cert(tmp)
    harness.make_traversable(tmp)
    target = harness.listener(backlog=1024)
    # every long-poll waits at once: no budget refuses one (harness: 100 % of 250)
    # and event keeps them all (parked: RelayAsync, on by default)
    conf = ("RelayMaxSessions %d\nRelayMaxWorkers 100000\nAsyncRequestWorkerFactor 200\n"
            "LogLevel warn\n<Location /wrelay>\n    SetHandler relay-https\n"
            "    RelayTarget w 127.0.0.1:%d\n    RelayPollTimeout %d\n</Location>\n"
            % (max(1024, 2 * o.sessions), target.getsockname()[1], o.poll))
    a = harness.Apache(os.path.join(tmp, "apache"), cert, key, mpm="event",
                       module=harness.module_path(), extra_conf=conf, log_level_debug=False)
    a.prepare()
    a.start()
    ctx = ssl.create_default_context(cafile=ca)
    held = []
    try:
        c = _conn(a.port, ctx)
        toks = []
        for _ in range(o.sessions):
            st, tok, _ = _post(c, "/wrelay/w/open", {})
            assert st == 201, st
            toks.append(tok)
            held.append(target.accept()[0])
        c.close()
        polls = [("/wrelay/w/pull", {"Relay-Session": t, "Relay-Ack": "0",
                                     "Relay-Mode": "batch"}, b"") for t in toks]
        watch = [("/wrelay/w/watch", {"Content-Type": "text/plain"},
                  "".join("%s 0\n" % t for t in toks).encode())]
        print("%d idle sessions, RelayPollTimeout %d s, windows of %d s" %
              (o.sessions, o.poll, o.window))
        modes = (("long-polls", polls), ("one watch", watch), ("nothing", []))
        if o.hot:
            held[0].sendall(b"x")
            modes = (("hot watch", watch),)
        for rnd in range(o.rounds):
            for name, jobs in modes:
                n, cpu, dt, err = measure(a, Loop(a.port, ctx, jobs), o.poll + 1, o.window)
                per = cpu / n * 1e6 if n else 0
                print("round %d %-10s: %5d requests (%d not 200), server CPU %6.0f ms = "
                      "%5.2f %% of a core, %4.0f us per request" %
                      (rnd + 1, name, n, err, cpu * 1000, cpu / dt * 100, per))
                sys.stdout.flush()
    finally:
        for s in held:
            s.close()
        a.stop()
        target.close()


if __name__ == "__main__":
    main()
