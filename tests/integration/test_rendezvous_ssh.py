"""Rendezvous (issue #15) end to end with real OpenSSH: an sshd bound to a loopback
address (127.0.0.2) that no RelayTarget of the relay names, so only the serve side
connects to it; `relay-https serve` offers it as a RelayService; ssh and scp reach
it with `relay-https stdio` as ProxyCommand through a real squid (CONNECT with Basic
proxy authentication). Both legs (the client's through squid, the serve's) pass a
fault proxy that cuts, resets and delays their connections every few seconds, so
both legs resume while the scp runs. The copy up and back down has the same
sha256. Size: RH_RDV_SCP_MB (default 16; the issue's figure is 100)."""

import os
import random
import subprocess

import pytest

import harness
import intermediaries as im
import sshd as sshmod
from faultproxy import FaultProxy
from test_rendezvous import Serve
from test_ssh import relay_lines, run, sha256_file

MB = 1024 * 1024
SCP_MB = int(os.environ.get("RH_RDV_SCP_MB", "16"))
PROXY_USER, PROXY_PASS = "rdvproxyuser", "rdv-proxy-S3cret"
SSH_HOST = "127.0.0.2"      # no RelayTarget names it: only the serve reaches it
# faults a connection meets after 1 to 4 s; not the ones that hold a connection
# silent for long (blackhole, halfdead, stalls): test_faults.py has those
FAULTS = ("rst", "fin", "delay", "cut_req_headers", "cut_resp_headers")
# a connection also fails once it carried this many bytes, so that a fast
# transfer (16 MB can take 1-2 s) meets faults too, not only a slow one
LIFE_BYTES_MIN, LIFE_BYTES_MAX = 512 * 1024, 6 * MB

pytestmark = pytest.mark.skipif(sshmod.missing() is not None,
                                reason=sshmod.missing() or "")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return harness.www_tmpdir(tmp_path_factory, "rdv-ssh")


@pytest.fixture(scope="module")
def sshd(workdir):
    s = sshmod.Sshd(os.path.join(workdir, "sshd"), host=SSH_HOST).start()
    yield s
    s.stop()


@pytest.fixture
def apache(apache_factory, module_so, targets):
    return apache_factory.get("event", module=module_so, targets=targets, extra_conf="\n".join([
        "<Location /rdvs>",
        "    SetHandler relay-https",
        "    RelayService sshsvc",
        "    RelayIdleTimeout 300",
        "</Location>"]))


@pytest.fixture
def faults(apache):
    seed = int(os.environ.get("RH_FAULT_SEED", random.SystemRandom().randrange(1 << 31)))
    kw = dict(mode="mix", mix_modes=FAULTS, min_life=1.0, max_life=4.0,
              life_bytes=(LIFE_BYTES_MIN, LIFE_BYTES_MAX))
    with FaultProxy(apache.port, seed=seed, **kw) as client_fp, \
         FaultProxy(apache.port, seed=seed + 1, **kw) as serve_fp:
        print("fault proxies: seed %d (replay: RH_FAULT_SEED=%d)" % (seed, seed))
        yield client_fp, serve_fp


@pytest.fixture
def squid(workdir, faults):
    s = im.Squid(os.path.join(workdir, "squid-%d" % faults[0].port),
                 connect_ports=[faults[0].port], auth=(PROXY_USER, PROXY_PASS))
    s.start()
    yield s
    s.stop()


@pytest.mark.rh_timeout(600)
def test_scp_through_service(apache, sshd, squid, faults, client_bin, tls, tmp_path):
    client_fp, serve_fp = faults
    # the relay itself cannot reach the sshd: no target, no destination names it
    r = harness.curl(apache.base_url + "/rdvs/*/open", cacert=tls["ca"],
                     headers=["Relay-Destination: %s:%d" % (SSH_HOST, sshd.port)])
    assert r.status in (403, 404), r
    src, back = str(tmp_path / "up.bin"), str(tmp_path / "back.bin")
    remote = str(tmp_path / "remote.bin")
    with open(src, "wb") as f:
        for _ in range(SCP_MB):
            f.write(os.urandom(MB))
    digest = sha256_file(src)
    to = "%s:%d" % (SSH_HOST, sshd.port)
    with Serve(client_bin, "https://127.0.0.1:%d/rdvs" % serve_fp.port, "sshsvc", to,
               cacert=tls["ca"]) as sv:
        pc = [client_bin, "stdio", "-x", squid.url, "-U", "%s:%s" % (PROXY_USER, PROXY_PASS),
              "--cacert", tls["ca"], "https://127.0.0.1:%d/rdvs" % client_fp.port, "sshsvc"]
        opts = sshd.ssh_options(pc)
        dest = "%s@%s" % (sshd.user, SSH_HOST)
        for way, args in (("up", [src, "%s:%s" % (dest, remote)]),
                          ("down", ["%s:%s" % (dest, remote), back])):
            try:
                p = run([sshmod.SCP] + opts + ["-q"] + args, timeout=60 + 6 * SCP_MB)
            except subprocess.TimeoutExpired:
                pytest.fail("scp %s timed out\nserve:\n%s\nclient proxy: %s\nserve proxy: %s"
                            % (way, sv.text(), client_fp.describe(), serve_fp.describe()))
            assert p.returncode == 0, "scp %s: exit %d\n%s\nserve:\n%s" % (
                way, p.returncode, p.stderr.decode(errors="replace")[-3000:], sv.text())
            assert not relay_lines(p.stderr), p.stderr.decode(errors="replace")[-3000:]
            print("scp %d MB %s through the service in %.1f s (%.1f MB/s)"
                  % (SCP_MB, way, p.elapsed, SCP_MB / p.elapsed))
        assert sv.accepted() >= 2, sv.text()
    assert sha256_file(remote) == digest, "the uploaded copy differs"
    assert sha256_file(back) == digest, "the downloaded copy differs"
    for name, fp in (("client leg", client_fp), ("serve leg", serve_fp)):
        st = fp.stats()
        print("%s: %s" % (name, fp.describe()))
        assert st["faults"] > 0, "%s: no fault happened: %s" % (name, st)
