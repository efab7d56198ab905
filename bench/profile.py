#!/usr/bin/python3
"""Profile one transfer through a tunnel with perf (system-wide, with call graphs).

    bench/profile.py stream|duplex|batch|rendezvous-stream [SECONDS] [up|down] [--strace|--syscalls|--cpu]
    (as root, or with perf allowed)

Starts a throwaway Apache (event MPM) from the test harness with a discarding
(up, the default) or sending (down) target, a relay-https forward with the given
transport, and moves random data through it for SECONDS (default 8) while
`perf record -a -g` samples the machine. rendezvous-stream: the forward goes to
a RelayService that a relay-https serve (stream, next to the target) offers.
Prints the throughput, the CPU seconds per GB of each process group (relay
core, Apache's children, the forward, the serve) from /proc, then perf's CPU
split by process and the top symbols; the perf data stays in
bench/results/perf-MODE.data for `perf report -i`. --strace: `strace -c -f` of
every process instead of perf (syscall counts per GB; slows them down);
--syscalls: counts of the common syscalls per GB of each group from perf's
syscall tracepoints (counting only: they barely slow anything, unlike strace);
--cpu: the CPU split alone, nothing sampling beside it.
RH_BUILD_DIR: the build tree (default: this tree). RH_PROFILE_CONF: more server
configuration (e.g. "H2WindowSize 65535"), appended to the Apache's."""

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
         "duplex": ["--transport", "duplex"],
         "batch": ["--transport", "batch", "--http1.1"],
         "rendezvous-stream": ["--transport", "stream", "--http1.1"]}
SERVICE = "profsvc"


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


def cpu_s(pid):
    """utime + stime of a process and its threads, in seconds (0 once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0


def groups(a, fw, sv):
    """The processes by role: relay core, Apache's children, forward, serve."""
    core = a.core_pid()
    g = {"relay core": [core], "apache children": [p for p in a.pids() if p != core
                                                  and p != a.proc.pid],
         "forward": [fw.proc.pid]}
    if sv:
        g["serve"] = [sv.pid]
    return g


def cpu_table(g):
    return {k: sum(cpu_s(p) for p in v) for k, v in g.items()}


def strace_start(g, out_dir):
    procs = []
    for role, pids in g.items():
        for p in pids:
            o = os.path.join(out_dir, "strace-%s-%d.txt" % (role.replace(" ", "-"), p))
            procs.append((role, o, subprocess.Popen(["strace", "-c", "-f", "-o", o, "-p", str(p)],
                                                    stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.DEVNULL)))
    return procs


def strace_report(procs, gb):
    import signal
    for role, o, pr in procs:
        pr.send_signal(signal.SIGINT)
    for role, o, pr in procs:
        pr.wait()
    for role, o, pr in procs:
        with open(o) as f:
            lines = [l for l in f.read().splitlines() if l.strip()]
        print("\n%s (%s): syscalls per GB" % (role, os.path.basename(o)))
        for l in lines[2:12]:
            f = l.split()
            if len(f) >= 5 and f[3].isdigit():
                print("  %-16s %10.0f  (%s)" % (f[-1], int(f[3]) / gb, l.strip()))


SYSCALLS = ("poll", "ppoll", "epoll_wait", "read", "readv", "recvfrom", "recvmsg", "write",
            "writev", "sendto", "sendmsg", "ioctl", "futex", "getsockopt", "clock_gettime",
            "mmap", "munmap", "madvise")


def syscalls_start(g):
    """perf stat counting the syscalls of SYSCALLS, one per process group."""
    ev = ",".join("syscalls:sys_enter_" + n for n in SYSCALLS)
    return [(role, subprocess.Popen(["perf", "stat", "-x", ",", "-e", ev, "-p",
                                     ",".join(str(p) for p in pids)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for role, pids in g.items()]


def syscalls_report(procs, gb):
    import signal
    for role, pr in procs:
        pr.send_signal(signal.SIGINT)
    for role, pr in procs:
        counts = {}
        for line in pr.communicate()[1].splitlines():
            f = line.split(",")
            if len(f) > 2 and f[0].isdigit() and f[2].startswith("syscalls:sys_enter_"):
                counts[f[2][len("syscalls:sys_enter_"):]] = int(f[0])
        print("\n%s: syscalls per GB (%.0f in all)" % (role, sum(counts.values()) / gb))
        for n, k in sorted(counts.items(), key=lambda x: -x[1]):
            if k:
                print("  %-16s %10.0f" % (n, k / gb))


def start_serve(a, ca, port, extra):
    """relay-https serve of SERVICE next to the target, ready when it listens."""
    cmd = [harness.client_path(), "serve", "-v", "--cacert", ca] + extra + [
        "--accepts", "16", "--to", "127.0.0.1:%d" % port, a.base_url + "/rdvp", SERVICE]
    log = tempfile.NamedTemporaryFile(prefix="rh-profile-serve-", delete=False)
    sv = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=log, start_new_session=True)
    harness._register(sv)
    ok = harness.wait_for(lambda: sv.poll() is not None
                          or b"serving " in open(log.name, "rb").read(), 15)
    if not ok or sv.poll() is not None:
        raise SystemExit("serve did not start: %s" % open(log.name).read()[-2000:])
    return sv


def main():
    use_strace = "--strace" in sys.argv
    use_sc = "--syscalls" in sys.argv
    cpu_only = "--cpu" in sys.argv or use_sc
    argv = [x for x in sys.argv if x not in ("--strace", "--cpu", "--syscalls")]
    if len(argv) < 2 or argv[1] not in MODES:
        raise SystemExit(__doc__)
    mode = argv[1]
    secs = float(argv[2]) if len(argv) > 2 else 8.0
    way = argv[3] if len(argv) > 3 else "up"
    if way not in ("up", "down"):
        raise SystemExit(__doc__)
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "perf-%s-%s.data" % (mode, way))
    root = tempfile.mkdtemp(prefix="rh-profile-")
    harness.make_traversable(root)
    ca, cert, key = harness.make_cert(root)
    rdv = mode.startswith("rendezvous")
    tport = target_server(way)
    a = harness.Apache(root + "/ap", cert, key, mpm="event", module=harness.module_path(),
                       targets={"sink": "127.0.0.1:%d" % tport},
                       extra_conf="<Location /rdvp>\n    SetHandler relay-https\n"
                       "    RelayService %s\n    RelayIdleTimeout 600\n</Location>\n" % SERVICE
                       + os.environ.get("RH_PROFILE_CONF", "").replace("\\n", "\n"))
    a.prepare()
    a.start()
    sv = None
    try:
        if rdv:
            sv = start_serve(a, ca, tport, MODES[mode])
        with harness.Forward(harness.client_path(), a.base_url + "/rdvp" if rdv else a.relay_url,
                             SERVICE if rdv else "sink", cacert=ca,
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
                    g = groups(a, fw, sv)
                    c0 = cpu_table(g)
                    if use_sc:
                        perf = syscalls_start(g)
                    elif cpu_only:
                        perf = []
                    elif use_strace:
                        perf = strace_start(g, out_dir)
                    else:
                        perf = subprocess.Popen(["perf", "record", "-a", "-g", "-o", data, "--",
                                                 "sleep", str(secs)],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
                    n0, t1 = sent, time.monotonic()
                if (use_strace or cpu_only) and perf is not None and time.monotonic() - t1 > secs:
                    break
            rate = (sent - n0) / (time.monotonic() - t1) / 1e6
            c1 = cpu_table(g)
            gb = (sent - n0) / 1e9
            if not use_strace and not cpu_only:
                perf.wait()
            s.close()
        print("%s %s: %.0f MB/s, %.2f GB in the window; CPU s/GB by group:" % (
            mode, way, rate, gb))
        for k in c0:
            print("  %-16s %6.2f" % (k, (c1[k] - c0[k]) / gb))
        print("  %-16s %6.2f  server (core + children); clients %.2f" % (
            "", sum(c1[k] - c0[k] for k in ("relay core", "apache children")) / gb,
            sum(c1[k] - c0[k] for k in c0 if k in ("forward", "serve")) / gb))
        if use_strace:
            strace_report(perf, gb)
        if use_sc:
            syscalls_report(perf, gb)
        if use_strace or cpu_only:
            return
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
        if sv:
            harness.kill_proc(sv)
        a.stop()


if __name__ == "__main__":
    main()
