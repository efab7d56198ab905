"""Never a wrong byte (issue 10): real network failures between the client and
Apache, and a data pattern that names the first wrong byte.

Apache (event MPM) relays to the echo target; a FaultProxy (faultproxy.py)
sits between `relay-https forward` and Apache and makes every connection fail
after 0.5 to 3 s in one way per mode (RST, FIN, black hole, the half-dead
close under blocked readers, one direction stalled, cuts inside the header
blocks, delays, refused reconnects, or a mix). Through it the offset pattern
(pattern.py) goes out at 5 MB/s and comes back through the echo, checked byte
for byte: a failure names the first wrong offset and its shape (skip,
doubling, garbage), the seed that replays it, and the client's stderr.

stream and batch run over plain HTTP (so that the header cuts see the
headers), duplex over TLS with HTTP/2.

Environment (for long runs; the defaults keep the file at a few minutes):
  RH_FAULT_BYTES    bytes per run (default 8 MiB)
  RH_FAULT_RATE     bytes/s (default 5 MB/s)
  RH_FAULT_SEED     base seed (default: one per transport and mode); run i
                    uses seed + i
  RH_FAULT_RUNS     runs per transport and mode (default 1)
  RH_FAULT_TIMEOUT  seconds one run may take before it counts as hung
                    (default STALL_FACTOR x its no-cut time, at least 20 s)
  RH_FAULT_LIFE     "min,max" seconds a connection lives before its failure
                    (default 0.3,1.5: every run of the default size meets
                    several; the proxy's own default is 0.5,3)
  RH_FAULT_MODES / RH_FAULT_TRANSPORTS   comma lists to run a subset
"""

import os
import zlib

import pytest

import intermediaries as im
from faultproxy import MODES, run_transfer

MB = 1000 * 1000
MiB = 1024 * 1024

NBYTES = int(os.environ.get("RH_FAULT_BYTES", 8 * MiB))
RATE = int(os.environ.get("RH_FAULT_RATE", 5 * MB))
RUNS = int(os.environ.get("RH_FAULT_RUNS", "1"))
LIFE = tuple(float(x) for x in os.environ.get("RH_FAULT_LIFE", "0.3,1.5").split(","))
BASE_SEED = os.environ.get("RH_FAULT_SEED")

# What a paced run takes when nothing fails (the pacing dominates on loopback).
NO_CUT_TIME = NBYTES / RATE
# The liveness target: a run through cuts takes less than this many
# times the no-cut time. Reported (printed) for every run, not asserted.
LIVENESS_TARGET = 2.0
# Asserted: a run that takes longer than this many times the no-cut time (at
# least STALL_FLOOR s) has stalled somewhere (a 60 s wait on a dead pull).
STALL_FACTOR = 10.0
STALL_FLOOR = 15.0
MAX_ELAPSED = max(STALL_FLOOR, STALL_FACTOR * NO_CUT_TIME)
# A run is stopped after this long whatever happens (never a hang).
RUN_TIMEOUT = float(os.environ.get("RH_FAULT_TIMEOUT", MAX_ELAPSED + 5))

TRANSPORTS = {
    "stream": (["--transport", "stream", "--http1.1"], "http"),
    "batch": (["--transport", "batch", "--http1.1"], "http"),
    "duplex": (["--transport", "duplex", "--http2"], "https"),
    # no HTTP version given: a bulk upload leaves the duplex for an HTTP/1.1
    # stream push while down stays on the duplex (duplex_split)
    "duplex-split": (["--transport", "duplex"], "https"),
}
ALL = ("none",) + MODES + ("mix",)


def _subset(env, allowed):
    v = os.environ.get(env)
    return [x for x in v.split(",") if x in allowed] if v else list(allowed)


RUN_MODES = _subset("RH_FAULT_MODES", ALL)
RUN_TRANSPORTS = _subset("RH_FAULT_TRANSPORTS", tuple(TRANSPORTS))


def seed_for(transport, mode, run):
    if BASE_SEED:
        return int(BASE_SEED) + run
    return zlib.crc32(("%s/%s" % (transport, mode)).encode()) + run


@pytest.fixture(scope="module")
def plain_port():
    import harness
    return harness.free_port()


@pytest.fixture
def integrity_apache(apache_factory, module_so, targets, plain_port):
    """Apache, event MPM, the relay on TLS (its port) and on plain HTTP (plain_port)."""
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=im.plain_http_vhost_conf(plain_port))


@pytest.mark.rh_timeout(int(RUNS * (RUN_TIMEOUT + 30) + 30))
@pytest.mark.parametrize("mode", RUN_MODES)
@pytest.mark.parametrize("transport", RUN_TRANSPORTS)
def test_pattern_through_faults(integrity_apache, plain_port, client_bin, tls, transport,
                                mode):
    """The pattern at RATE through FaultProxy(mode): every byte echoed once, in
    order; the run completes, within STALL_FACTOR x the no-cut time."""
    a = integrity_apache
    args, scheme = TRANSPORTS[transport]
    upstream = plain_port if scheme == "http" else a.port
    failures = []
    for run in range(RUNS):
        seed = seed_for(transport, mode, run)
        r = run_transfer(client_bin, upstream, scheme, args, mode, seed, NBYTES, RATE,
                         RUN_TIMEOUT, cacert=tls["ca"] if scheme == "https" else None,
                         max_elapsed=MAX_ELAPSED,
                         proxy_kw={"min_life": LIFE[0], "max_life": LIFE[1]})
        ratio = r["elapsed"] / NO_CUT_TIME
        print("%s/%s %s: %.1f s = %.1fx the no-cut time %.1f s (liveness target < %.0fx: %s)%s"
              % (transport, mode, "ok" if r["ok"] else "FAIL", r["elapsed"], ratio,
                 NO_CUT_TIME, LIVENESS_TARGET, "met" if ratio < LIVENESS_TARGET else "missed",
                 "" if r["stats"]["faults"] or mode == "none" else
                 " [no fault was injected: this run proves nothing]"))
        print("    " + r["report"])
        if not r["ok"]:
            failures.append("%s/%s run %d: %s" % (transport, mode, run, r["message"]))
    assert not failures, ("%d of %d runs failed\n\n" % (len(failures), RUNS)
                          + "\n\n".join(failures))
