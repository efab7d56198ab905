"""Smoke test of the benchmark harness (bench/bench.py, docs/BENCHMARKS.md).

Runs the harness in its seconds-long --quick mode on a few paths, straight and
through its delay proxy, and checks what it produces: every selected path has
positive figures in results.csv and a row in the markdown table. Timings are
never asserted (CI machines vary); only that the harness still works.
"""

import csv
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import harness

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(REPO, "bench", "bench.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

PATHS = ["raw", "connect", "stream", "duplex", "batch"]
PEERS = {"connect": "/usr/bin/proxytunnel"}
FIGURES = ("thr_up", "thr_down", "thr_multi", "echo_median", "echo_p99")


@pytest.mark.rh_timeout(240)
def test_bench_quick(module_so, client_bin):
    missing = [b for p, b in PEERS.items() if p in PATHS and not os.path.exists(b)]
    if missing:
        pytest.skip("peer programs missing (./quickstart installs them): %s" % missing)
    if not shutil.which("gcc"):
        pytest.skip("gcc missing: the harness builds its C helper")
    # not pytest's tmp_path: www-data must reach Apache's files below it
    out = tempfile.mkdtemp(prefix="rh-bench-smoke-", dir="/tmp")
    try:
        env = dict(os.environ, RH_BUILD_DIR=harness.build_dir())
        cmd = [PYTHON, BENCH, "--quick", "--paths", ",".join(PATHS),
               "--variants", "loopback,delay", "--figures", "up,down,multi,echo,idle",
               "--idle", "10", "--out", out]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=220, env=env)
        assert p.returncode == 0, "bench.py failed (%d):\n%s" % (p.returncode, p.stdout[-4000:])

        with open(os.path.join(out, "results.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        errors = [r for r in rows if r["metric"] == "error"]
        assert not errors, "the harness reported failures: %s\n%s" % (errors, p.stdout[-3000:])
        got = {(r["path"], r["variant"], r["metric"]): r for r in rows}
        for variant in ("loopback", "delay"):
            for path in PATHS:
                for m in FIGURES:
                    r = got.get((path, variant, m))
                    assert r is not None, "no %s figure for %s / %s in results.csv:\n%s" % (
                        m, path, variant, p.stdout[-3000:])
                    assert float(r["value"]) > 0, "%s / %s %s is not positive: %r" % (
                        path, variant, m, r)
        # ratios to the CONNECT path and to raw are filled in
        r = got[("stream", "loopback", "thr_up")]
        assert float(r["ratio_to_connect"]) > 0 and float(r["ratio_to_raw"]) > 0, r
        # through the delay proxy an echo costs at least the 2 x 20 ms it adds
        assert float(got[("raw", "delay", "echo_median")]["value"]) >= 40.0
        # idle tunnels: the ramp reached its (small) goal on our transports
        for path in ("stream", "duplex", "batch"):
            r = got.get((path, "loopback", "idle_held"))
            assert r is not None and float(r["value"]) == 10, (path, r)
            assert (path, "loopback", "mem_per_idle") in got, path

        with open(os.path.join(out, "results.md")) as f:
            md = f.read()
        for path in PATHS:
            assert "| %s |" % path in md, "no row for %s in results.md:\n%s" % (path, md)
        assert "#### Targets" in md and "| target | figure | wanted | met |" in md, md
        assert p.stdout.strip(), "bench.py printed nothing"
    finally:
        shutil.rmtree(out, ignore_errors=True)
