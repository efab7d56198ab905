#!/usr/bin/python3
"""auto's trial through squid and the 20 ms delay proxy (docs/BENCHMARKS.md, "Auto
through squid: the trial times downloads"): a new relay-https forward's first
100 MB transfer (stream, which auto times) and its second (the duplex trial),
against CONNECT through the same squid, up then down. bench.py's set-up and
rhbench thr; RH_BUILD_DIR as for bench/run.sh; RH_BENCH_CLIENT_ARGS=-v adds the
client's auto lines."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

N = 100 * 1000 * 1000


def thr(b, entry, direction):
    r = b.tool_run(["thr", "127.0.0.1:%d" % entry, direction, N, 1, 120], 130)
    return r.get("mbps") or 0.0


def main():
    a = bench.parse_args(["--paths", "connect-squid,auto-squid", "--variants", "delay",
                          "--figures", "up,down"])
    b = bench.Bench(a)
    out, log = [], ""
    try:
        b.build()
        b.start_base()
        for d in ("up", "down"):
            entry, _, _, stop = b.start_path("connect-squid", "delay")
            ref = thr(b, entry, d)
            stop()
            entry, _, _, stop = b.start_path("auto-squid", "delay")
            first, second = thr(b, entry, d), thr(b, entry, d)
            stop()
            out.append("%s: connect-squid %.0f, auto first %.0f (%.2f x), auto second %.0f "
                       "(%.2f x) MB/s" % (d, ref, first, first / max(ref, 1), second,
                                          second / max(ref, 1)))
        with open(os.path.join(b.logdir, "relay-https-auto-squid-delay-0.log"),
                  errors="replace") as f:
            log = f.read()
    finally:
        b.stop_all()
        shutil.rmtree(b.work, ignore_errors=True)
    print("\n".join(out))
    for line in log.splitlines():
        if ("auto: " in line and "not measured" not in line) or "duplex -> stream" in line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
