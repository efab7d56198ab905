"""Rate limits, named like strelaysrv's (issue 13): RelayRateLimit per session
and RelayGlobalRateLimit for all sessions, token buckets in bytes per second
with a burst of twice that. Every byte still arrives, in order, only later;
the status counts how often a session was held back."""

import hashlib
import json
import os
import threading
import time

import pytest

import harness
from harness import Forward, curl

RATE = 256 * 1024      # bytes per second
STATUS = harness.STATUS_LOCATION


def _echo_through(port, data, out):
    """Sends data through the forward's echo and keeps (seconds, sha256 of what came back)."""
    t0 = time.monotonic()
    s = harness.socket.create_connection(("127.0.0.1", port), timeout=60)
    got = bytearray()

    def reader():
        while len(got) < len(data):
            b = s.recv(65536)
            if not b:
                break
            got.extend(b)
    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    t.join(90)
    s.close()
    out.append((time.monotonic() - t0, hashlib.sha256(bytes(got)).hexdigest(), len(got)))


def _status(a):
    r = curl(a.base_url + "/relay-status?json", method="GET")
    assert r.status == 200, r
    return json.loads(r.body)


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("scope", ["session", "global"])
def test_rate_limit_holds_and_loses_nothing(apache_factory, module_so, targets, client_bin,
                                            tls, scope):
    directive = "RelayRateLimit" if scope == "session" else "RelayGlobalRateLimit"
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="%s %dK\n%s" % (directive, RATE // 1024, STATUS))
    d = _status(a)
    key = "perSessionRate" if scope == "session" else "globalRate"
    assert d["options"][key] == RATE, d["options"]
    before = d["throttled"]
    n = 1536 * 1024          # up and back: 3 MiB through the bucket(s)
    data = os.urandom(n)
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
        out = []
        workers = [threading.Thread(target=_echo_through, args=(fw.port, data, out))
                   for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(100)
    assert len(out) == 2, out
    for secs, sha, got in out:
        assert got == n and sha == hashlib.sha256(data).hexdigest(), (
            "bytes lost or changed under the rate limit: %d of %d" % (got, n))
    # both directions count: 2 x n per tunnel. Per session each tunnel has its
    # own bucket; globally the two share one. A burst of 2 s of rate comes first.
    per_bucket = 2 * n if scope == "session" else 4 * n
    floor = (per_bucket - 2 * RATE) / RATE
    slowest = max(secs for secs, _, _ in out)
    assert slowest >= 0.8 * floor, ("%s %d B/s: the transfer took %.1f s, the limit allows "
                                   "no less than %.1f s" % (directive, RATE, slowest, floor))
    assert _status(a)["throttled"] > before


def test_bad_rates_refused_at_configtest(apache_factory, module_so, targets):
    for bad in ("fast", "-1", "10X", "5G"):
        a = apache_factory.get("event", module=module_so, targets=targets, start=False,
                               extra_conf="RelayRateLimit %s\n# %s" % (bad, time.monotonic_ns()))
        path = os.path.join(a.root, "conf", "rate.conf")
        with open(path, "w") as f:
            f.write(a.config_text())
        r = a.configtest(path)
        assert r.returncode != 0 and "RelayRateLimit" in r.stdout, (bad, r.stdout)


def test_resume_memory_sizes_at_configtest(apache_factory, module_so, targets):
    """RelayResumeMemory takes K, M, G, T (binary) and refuses anything else."""
    for value, ok in (("512M", True), ("2g", True), ("1T", True), ("0", True),
                      ("lots", False), ("-1", False), ("10X", False), ("2048T", False)):
        a = apache_factory.get("event", module=module_so, targets=targets, start=False,
                               extra_conf="RelayResumeMemory %s\n# %s"
                               % (value, time.monotonic_ns()))
        path = os.path.join(a.root, "conf", "resume.conf")
        with open(path, "w") as f:
            f.write(a.config_text())
        r = a.configtest(path)
        if ok:
            assert r.returncode == 0, (value, r.stdout)
        else:
            assert r.returncode != 0 and "RelayResumeMemory" in r.stdout \
                and "not a size in bytes" in r.stdout, (value, r.stdout)
