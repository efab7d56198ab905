#!/usr/bin/python3
"""Profile one transfer through a tunnel with perf (system-wide, with call graphs).

    bench/profile.py stream|duplex|batch [SECONDS] [up|down]   (as root, or with perf allowed)

Starts a throwaway Apache (event MPM) from the test harness with a discarding
(up, the default) or sending (down) target, a relay-https forward with the given
transport, and moves random data through it for SECONDS (default 8) while
`perf record -a -g` samples the machine.
Prints the throughput, then the CPU split by process and the top symbols; the
perf data stays in bench/results/perf-MODE.data for `perf report -i`.
RH_BUILD_DIR: the build tree (default: this tree)."""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("RH_BUILD_DIR", os.path.abspath(os.path.join(HERE, "..")))
import harness  # noqa: E402

MODES = {"stream": ["--transport", "stream", "--http1.1"],
         "duplex": ["--transport", "duplex", "--http2"],
         "batch": ["--transport", "batch", "--http1.1"]}


def target_server(way):
    """A target that discards what comes (up) or sends random data for ever (down)."""
    ls = harness.listener()
    buf = os.urandom(1 << 20)

    def serve(c):
        try:
            if way == "up":
                while c.recv(1 << 20):
                    pass
            else:
                while True:
                    c.sendall(buf)
        except OSError:
            pass
        c.close()

    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return ls.getsockname()[1]


def perf_table(data, sort, n):
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                          "-g", "none", "--stdio"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "%" in l and not l.startswith("#")][:n]


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        raise SystemExit(__doc__)
    mode = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    way = sys.argv[3] if len(sys.argv) > 3 else "up"
    if way not in ("up", "down"):
        raise SystemExit(__doc__)
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "perf-%s-%s.data" % (mode, way))
    root = tempfile.mkdtemp(prefix="rh-profile-")
    harness.make_traversable(root)
    ca, cert, key = harness.make_cert(root)
    a = harness.Apache(root + "/ap", cert, key, mpm="event", module=harness.module_path(),
                       targets={"sink": "127.0.0.1:%d" % target_server(way)})
    a.prepare()
    a.start()
    try:
        with harness.Forward(harness.client_path(), a.relay_url, "sink", cacert=ca,
                             extra_args=MODES[mode]) as fw:
            s = socket.create_connection(("127.0.0.1", fw.port))
            buf = os.urandom(1 << 20)
            t0 = time.monotonic()
            sent, perf, n0, t1 = 0, None, 0, 0.0
            while time.monotonic() - t0 < secs + 1.5:
                try:
                    if way == "up":
                        s.sendall(buf)
                        got = len(buf)
                    else:
                        got = len(s.recv(1 << 20))
                        if not got:
                            raise OSError("the tunnel ended")
                except OSError as e:
                    raise SystemExit("tunnel failed: %s\n%s" % (e, fw.stderr_text()[-2000:]))
                sent += got
                if perf is None and time.monotonic() - t0 > 1:
                    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-o", data, "--",
                                             "sleep", str(secs)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    n0, t1 = sent, time.monotonic()
            rate = (sent - n0) / (time.monotonic() - t1) / 1e6
            perf.wait()
            s.close()
        roles = {a.core_pid(): "relay core"}
        print("%s %s: %.0f MB/s during the %.0f s sampled" % (mode, "upload" if way == "up" else "download",
                                                            rate, secs))
        print("\nCPU by thread (relay core pid %s; other apache2: children's threads)"
              % a.core_pid())
        for line in perf_table(data, "pid", 12):
            pid = line.split()[1].split(":")[0]
            print(line + ("   <- " + roles[int(pid)] if pid.isdigit() and int(pid) in roles
                          else ""))
        print("\nCPU by program and library")
        print("\n".join(perf_table(data, "comm,dso", 14)))
        print("\nTop symbols")
        print("\n".join(perf_table(data, "sym", 14)))
        print("\nperf data: %s" % data)
    finally:
        a.stop()


if __name__ == "__main__":
    main()
