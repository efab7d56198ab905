#!/usr/bin/python3
"""Fault-injection soak (issue 10: never a wrong byte).

Runs the offset pattern (tests/integration/pattern.py) through
`relay-https forward` -> FaultProxy (tests/integration/faultproxy.py) -> Apache
(event MPM) -> echo target, again and again for --minutes, with a random seed
per run, across transports (stream and batch over plain HTTP, duplex over TLS
with HTTP/2) and failure modes. Each run's echo is checked byte for byte; a
failing run prints its seed and the command that replays it.

More paths (tests/integration/faultpaths.py), as "transports": nginx-front,
nginx-back (batch through a buffering nginx, the fault proxy in front of it or
behind it), nginx-restart (nginx-front with graceful restarts and killed
children), socks (4 SOCKS5 connections of `relay-https proxy` at once), udp (3
SOCKS5 UDP associations at once: datagrams may be lost, never corrupted,
doubled, reordered or handed to another association; their bytes per run are
--bytes / 8).

    bench/soak.py                      30 minutes, every transport x mode
    bench/soak.py --quick              CI size: each transport x mode once, 8 MiB
    bench/soak.py --seed 123 --transport stream --mode halfdead
                                       replay one run
    bench/soak.py --transport nginx-front,nginx-back,nginx-restart,socks,udp
                                       only the paths of faultpaths.py
    make soak SOAK_ARGS='--minutes 120'

The last line is the summary: runs, bytes, cuts (failures the proxy injected),
resumes (the client's lines about going on after a cut), integrity failures
(wrong bytes found by the pattern checker; sessions the client ended with an
integrity error), stalls (the echo stood still > 5 s, or a run hung). Exit
status 1 if any run failed. With udp, a line more: datagrams sent and back, and
where a full receive buffer dropped some (/proc/net/udp's drop counts of the
client's association sockets, the echo's, the relay core's sockets to the echo,
the checker's own), so a loss of the relay shows apart from one of the echo.
A failed run's whole client stderr goes to the work directory (client-runN.log;
every run's with --keep).

RH_BUILD_DIR: the build tree with the module and the client (default: this
tree); both are copied first, so a rebuild during the soak does not change them.
"""

import argparse
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402
import intermediaries as im  # noqa: E402
import faultpaths  # noqa: E402
from faultproxy import MODES, run_transfer  # noqa: E402

MB = 1000 * 1000
MiB = 1024 * 1024

TRANSPORTS = {
    "stream": (["--transport", "stream", "--http1.1"], "http"),
    "batch": (["--transport", "batch", "--http1.1"], "http"),
    "duplex": (["--transport", "duplex", "--http2"], "https"),
}
PATHS = faultpaths.PATHS
UDP_SHARE = 8            # a udp run carries --bytes / UDP_SHARE (datagrams are slow)
ALL_MODES = MODES + ("mix",)
STALL_GAP = 5.0          # seconds without an echoed byte that count as a stall
STALL_FACTOR = 10.0      # a run is stopped after this many times its no-cut time...
STALL_FLOOR = 20.0       # ...and at least this many seconds
CRASH_RE = re.compile(r"AH00052|exit signal|relay core .*(died|exited)|Segmentation fault")
STUCK_RE = re.compile(r"RH2003|no answer from the relay core")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    ap.add_argument("--quick", action="store_true",
                    help="CI size: every transport x mode once, 8 MiB each, connections "
                         "living 0.3 to 1.5 s")
    ap.add_argument("--seed", type=int, help="replay: this run's seed (with --transport "
                    "and --mode: one run); without them, the soak's master seed")
    ap.add_argument("--transport", help="comma list of transports and paths (default: "
                    "%s)" % ",".join(list(TRANSPORTS) + list(PATHS)))
    ap.add_argument("--mode", help="comma list of failure modes (default: %s)"
                    % ",".join(ALL_MODES))
    ap.add_argument("--runs", type=int, help="stop after this many runs")
    ap.add_argument("--bytes", type=int, default=None,
                    help="bytes per run (default 32 MiB, --quick 8 MiB)")
    ap.add_argument("--life", default=None,
                    help="MIN,MAX seconds a proxied connection lives before its failure "
                         "(default 0.5,3; --quick 0.3,1.5)")
    ap.add_argument("--rate", type=int, default=5 * MB, help="bytes/s (default 5 MB/s)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds a run may take (default %gx its no-cut time, at least "
                         "%g s)" % (STALL_FACTOR, STALL_FLOOR))
    ap.add_argument("--stop-on-failure", action="store_true", help="stop at the first failure")
    ap.add_argument("--verbose", action="store_true", help="print every failure in full "
                    "(default: the first 3), and each udp run's datagram figures")
    ap.add_argument("--client-args", default="",
                    help="more options for relay-https, one string (it runs with -v "
                         "already): e.g. --client-args='-v --stats 1'")
    ap.add_argument("--tmpdir", default=None, help="where the work directory goes")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (kept anyway when a run failed) and "
                         "every run's client stderr in it (client-runN.log)")
    a = ap.parse_args(argv)
    a.transports = (a.transport.split(",") if a.transport
                    else list(TRANSPORTS) + list(PATHS))
    a.modes = a.mode.split(",") if a.mode else list(ALL_MODES)
    for t in a.transports:
        if t not in TRANSPORTS and t not in PATHS:
            ap.error("unknown transport %r" % t)
    for m in a.modes:
        if m not in ALL_MODES + ("none",):
            ap.error("unknown mode %r" % m)
    a.client_args = shlex.split(a.client_args)
    if a.bytes is None:
        a.bytes = 8 * MiB if a.quick else 32 * MiB
    if a.life is None:
        a.life = "0.3,1.5" if a.quick else "0.5,3"
    try:
        a.life = tuple(float(x) for x in a.life.split(","))
        assert len(a.life) == 2 and 0 < a.life[0] <= a.life[1]
    except (ValueError, AssertionError):
        ap.error("--life wants MIN,MAX seconds")
    a.replay = a.seed is not None and len(a.transports) == 1 and len(a.modes) == 1
    if a.replay and a.runs is None:
        a.runs = 1
    if a.quick and a.runs is None:
        a.runs = len(a.transports) * len(a.modes)
    return a


class Soak:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="rh-soak-", dir=args.tmpdir)
        harness.make_traversable(self.work)
        os.chmod(self.work, 0o755)
        self.apache = None
        self.echo = None
        self.udp_echo = None
        self.restarts = 0

    def setup(self):
        bd = harness.build_dir()
        so = os.path.join(bd, "mod_relay_https", ".libs", "mod_relay_https.so")
        cl = os.path.join(bd, "client", "relay-https")
        for f in (so, cl):
            if not os.path.exists(f):
                raise SystemExit("soak: %s is missing: run make first (RH_BUILD_DIR=%s)"
                                 % (f, bd))
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir)
        os.chmod(bindir, 0o755)
        self.module = os.path.join(bindir, "mod_relay_https.so")
        self.client = os.path.join(bindir, "relay-https")
        shutil.copy2(so, self.module)
        shutil.copy2(cl, self.client)
        certdir = os.path.join(self.work, "cert")
        self.ca, self.cert, self.key = harness.make_cert(certdir)
        harness.make_traversable(certdir)
        self.echo = harness.EchoServer()
        self.udp_echo = faultpaths.UdpEcho()
        self.plain_port = harness.free_port()
        self.start_apache()

    def start_apache(self):
        root = os.path.join(self.work, "apache-%d" % self.restarts)
        self.apache = harness.Apache(root, self.cert, self.key, mpm="event", module=self.module,
                                     targets={"echo": "127.0.0.1:%d" % self.echo.port},
                                     extra_conf=im.plain_http_vhost_conf(self.plain_port)
                                     + faultpaths.apache_conf(self.echo.port,
                                                              self.udp_echo.port),
                                     idle_location=False)
        self.apache.prepare()
        self.apache.start(timeout=60)

    def crashes(self):
        # children the nginx-restart path SIGKILLs itself are no crash
        return [l for l in self.apache.error_log_text().splitlines()
                if CRASH_RE.search(l) and "exit signal Killed (9)" not in l]

    def stuck(self):
        """error_log lines of requests the relay core did not answer in time"""
        return [l for l in self.apache.error_log_text().splitlines() if STUCK_RE.search(l)]

    def stop(self):
        if self.apache:
            self.apache.stop()
        if self.echo:
            self.echo.stop()
        if self.udp_echo:
            self.udp_echo.stop()

    def path_env(self):
        return {"client": self.client, "apache": self.apache, "plain_port": self.plain_port,
                "ca": self.ca, "echo_port": self.echo.port, "udp_port": self.udp_echo.port,
                "work": self.work}


def one_run(soak, args, transport, mode, seed, timeout, max_elapsed):
    proxy_kw = {"min_life": args.life[0], "max_life": args.life[1]}
    if transport in PATHS:
        nbytes = args.bytes // UDP_SHARE if transport == "udp" else args.bytes
        rate = args.rate // UDP_SHARE if transport == "udp" else args.rate
        return faultpaths.run_path(transport, soak.path_env(), mode, seed, nbytes, rate,
                                   timeout, proxy_kw=proxy_kw, max_elapsed=max_elapsed,
                                   client_args=args.client_args)
    xargs, scheme = TRANSPORTS[transport]
    xargs = xargs + args.client_args
    upstream = soak.plain_port if scheme == "http" else soak.apache.port
    return run_transfer(soak.client, upstream, scheme, xargs, mode, seed, args.bytes,
                        args.rate, timeout, cacert=soak.ca if scheme == "https" else None,
                        max_elapsed=max_elapsed, proxy_kw=proxy_kw)


def replay_cmd(r, transport, args):
    return ("bench/soak.py --seed %d --transport %s --mode %s --bytes %d --rate %d --life %g,%g"
            % (r["seed"], transport, r["mode"], args.bytes, args.rate, *args.life))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    master = args.seed if (args.seed is not None and not args.replay) else \
        random.SystemRandom().randrange(1 << 32)
    rng = random.Random(master)
    no_cut = args.bytes / args.rate
    max_elapsed = max(STALL_FLOOR, STALL_FACTOR * no_cut)
    timeout = args.timeout or max_elapsed + 5
    soak = Soak(args)
    combos = [(t, m) for t in args.transports for m in args.modes]
    deadline = time.monotonic() + args.minutes * 60
    tot = {"runs": 0, "bytes": 0, "cuts": 0, "resumes": 0, "wrong": 0, "integrity": 0,
           "stall_runs": 0, "stalls": 0, "longest_gap": 0.0, "failed": 0, "elapsed": 0.0,
           "dgrams": [0, 0, 0], "kdrops": dict.fromkeys(faultpaths.UdpDrops.WHERE, 0)}
    per = {}
    failures = []
    print("soak: %s, %d bytes per run at %d B/s (no-cut time %.1f s, stopped after %.0f s), "
          "connections fail after %g-%g s, transports %s, modes %s, %s; work dir %s"
          % ("replay" if args.replay else "master seed %d" % master, args.bytes, args.rate,
             no_cut, timeout, args.life[0], args.life[1], ",".join(args.transports),
             ",".join(args.modes),
             ("%d runs" % args.runs) if args.runs else "%.0f minutes" % args.minutes,
             soak.work), flush=True)
    crashes, stuck, crashes0, stuck_seen = [], [], 0, 0
    try:
        soak.setup()
        crashes0 = len(soak.crashes())
        stuck_seen = len(soak.stuck())
        order = []
        while True:
            if args.runs is not None and tot["runs"] >= args.runs:
                break
            if args.runs is None and time.monotonic() >= deadline:
                break
            if not order:
                order = list(combos)
                if not args.quick:
                    rng.shuffle(order)
            transport, mode = order.pop(0)
            seed = args.seed if args.replay else rng.randrange(1 << 32)
            if not soak.apache.running():
                print("soak: apache is gone (exit %r); starting a new one"
                      % soak.apache.proc.poll(), flush=True)
                crashes += soak.crashes()[crashes0:]
                soak.restarts += 1
                soak.start_apache()
                crashes0 = stuck_seen = 0
            r = one_run(soak, args, transport, mode, seed, timeout, max_elapsed)
            tot["runs"] += 1
            tot["bytes"] += r["received"]
            tot["cuts"] += r["stats"]["faults"]
            tot["resumes"] += r["resumes"]
            tot["elapsed"] += r["elapsed"]
            tot["wrong"] += 1 if r["wrong"] else 0
            tot["integrity"] += 1 if r["integrity"] else 0
            for i, v in enumerate(r.get("datagrams", (0, 0, 0))):
                tot["dgrams"][i] += v
            for k, v in r.get("kernel_drops", {}).items():
                tot["kdrops"][k] += v
            stalls = list(r["stalls"])
            if r["end"] == "timeout" and not stalls:
                stalls.append((r["received"], round(r["max_gap"], 1)))
            if stalls:
                tot["stall_runs"] += 1
                tot["stalls"] += len(stalls)
            tot["longest_gap"] = max(tot["longest_gap"], r["max_gap"])
            p = per.setdefault((transport, mode), [0, 0])
            p[0] += 1
            if not r["ok"]:
                tot["failed"] += 1
                p[1] += 1
                failures.append((transport, r))
            print("%s run %d %s/%s seed=%d: %s %.1f s (%.1fx), %d faults, %d resumes%s"
                  % (time.strftime("%H:%M:%S"), tot["runs"], transport, mode, seed,
                     "ok" if r["ok"] else "FAIL", r["elapsed"], r["elapsed"] / no_cut,
                     r["stats"]["faults"], r["resumes"],
                     "" if r["ok"] else ": %s\n    replay: %s"
                     % (" / ".join(r["problems"]), replay_cmd(r, transport, args))),
                  flush=True)
            if r["ok"] and args.verbose and "datagrams" in r:
                print("    udp: " + r["detail"], flush=True)
            if not r["ok"] and (args.verbose or len(failures) <= 3):
                print("\n".join("    " + l for l in r["message"].splitlines()), flush=True)
            if not r["ok"] or args.keep:
                # the client's whole stderr, for what came before the report's tail
                with open(os.path.join(soak.work, "client-run%d.log" % tot["runs"]), "w") as f:
                    f.write("\n".join(r["lines"]) + "\n")
            cur = soak.stuck()
            new, stuck_seen = cur[stuck_seen:], len(cur)
            if new:
                stuck += new
                print("    apache error_log: %d requests the relay core did not answer "
                      "during this run, e.g. %s" % (len(new), new[0].strip()), flush=True)
            if not r["ok"] and args.stop_on_failure:
                break
    except KeyboardInterrupt:
        print("soak: interrupted", flush=True)
    finally:
        if soak.apache is not None:
            crashes += soak.crashes()[crashes0:]
        soak.stop()
    if per:
        print("per transport and mode: runs/failed")
        for t in args.transports:
            print("  %-7s %s" % (t, "  ".join("%s %d/%d" % (m, per[(t, m)][0], per[(t, m)][1])
                                            for m in args.modes if (t, m) in per)))
    if crashes:
        print("apache error_log: %d crash lines, e.g. %s" % (len(crashes), crashes[0]))
    if stuck:
        print("apache error_log: %d requests the relay core did not answer (stuck core), "
              "e.g. %s" % (len(stuck), stuck[0]))
    if failures:
        print("failed runs (replay with):")
        for transport, r in failures:
            print("  %s   # %s" % (replay_cmd(r, transport, args), " / ".join(r["problems"])))
    print("soak summary: %d runs, %d bytes echoed (%.1f MiB), %d cuts, %d resumes, "
          "integrity failures: %d wrong-byte runs + %d client integrity errors, "
          "stalls: %d (in %d runs, longest %.1f s), %d failed runs%s%s"
          % (tot["runs"], tot["bytes"], tot["bytes"] / MiB, tot["cuts"], tot["resumes"],
             tot["wrong"], tot["integrity"], tot["stalls"], tot["stall_runs"],
             tot["longest_gap"], tot["failed"],
             ", %d apache crash lines" % len(crashes) if crashes else "",
             ", %d unanswered core requests" % len(stuck) if stuck else ""), flush=True)
    if tot["dgrams"][0]:
        print("udp: %d datagrams sent, %d back (%.2f%% lost), %d wrong (corrupted, doubled, "
              "reordered or mis-delivered); full receive buffers dropped %s"
              % (tot["dgrams"][0], tot["dgrams"][1],
                 100.0 * (tot["dgrams"][0] - tot["dgrams"][1]) / tot["dgrams"][0],
                 tot["dgrams"][2], ", ".join("%s %d" % kv for kv in tot["kdrops"].items())),
              flush=True)
    if tot["failed"] or crashes or args.keep:
        print("work directory kept: %s" % soak.work)
    else:
        shutil.rmtree(soak.work, ignore_errors=True)
    return 1 if (tot["failed"] or crashes) else 0


if __name__ == "__main__":
    sys.exit(main())
