"""Real ssh and scp through the relay (issue 14): Debian's OpenSSH client and
server, `relay-https stdio` as ssh's ProxyCommand (and `relay-https forward`),
reaching Apache through a real squid with Basic proxy authentication.

At its end ssh closes the ProxyCommand's pipes and sends it SIGHUP at once
(kill(pid, SIGHUP) within a millisecond, without waiting for it). The client
must take that as the end of the session, not as an interruption: nothing on
stderr, exit code 0, and a session the server closes cleanly ("closed by both
ends"), not with a reset.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest

import harness
import intermediaries as im
import sshd as sshmod

MB = 1024 * 1024
PROXY_USER, PROXY_PASS = "sshproxyuser", "ssh-proxy-S3cret"
EXITWRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exitwrap.py")
CLEAN_END = harness.SESSION_CLEAN_END
# the client must be gone this soon after ssh's SIGHUP (ssh does not wait for it)
EXIT_BOUND_S = 2.0

TRANSPORTS = {
    "stream": ["--http1.1", "--transport", "stream"],
    "duplex": ["--transport", "duplex"],
}

pytestmark = pytest.mark.skipif(sshmod.missing() is not None,
                                reason=sshmod.missing() or "")


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request):
    return request.param


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd in a directory of its own, next to which squid gets one too."""
    workdir = str(tmp_path_factory.mktemp("ssh"))
    harness.make_traversable(workdir)
    s = sshmod.Sshd(os.path.join(workdir, "sshd")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def _apache(apache_factory, module_so, sshd):
    return apache_factory.get("event", module=module_so,
                              targets={"ssh": "127.0.0.1:%d" % sshd.port})


@pytest.fixture
def apache(apache_factory, module_so, sshd, _apache):
    """The module's Apache (re-registered per test, so failures show its error_log)."""
    a = apache_factory.get("event", module=module_so,
                           targets={"ssh": "127.0.0.1:%d" % sshd.port})
    assert a is _apache
    return a


@pytest.fixture(scope="module")
def squid(sshd, _apache):
    s = im.Squid(os.path.join(os.path.dirname(sshd.root), "squid"), connect_ports=[_apache.port],
                 auth=(PROXY_USER, PROXY_PASS))
    s.start()
    yield s
    s.stop()


def client_args(squid, tls, transport):
    return (["-x", squid.url, "-U", "%s:%s" % (PROXY_USER, PROXY_PASS),
             "--cacert", tls["ca"]] + TRANSPORTS[transport])


def proxy_command(client_bin, apache, squid, tls, transport, note=None):
    """relay-https stdio as ssh runs it; with note, under exitwrap.py, which writes
    its exit code and the time it took after ssh's signal into that file."""
    cmd = [client_bin, "stdio"] + client_args(squid, tls, transport) + [apache.relay_url,
                                                                         "ssh"]
    if note:
        cmd = [sys.executable, EXITWRAP, note] + cmd
    return cmd


def run(cmd, timeout=120, **kw):
    """Runs cmd to its end. stderr is read to EOF, so it includes all the
    ProxyCommand wrote (it inherits ssh's stderr, and may outlive ssh)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=im.clean_env(), **kw)
    p.elapsed = time.monotonic() - t0
    return p


def wait_clean_ends(apache, mark, n, timeout=10):
    """Waits until n sessions opened since mark have ended; asserts each cleanly."""
    def ended():
        opened, _ = apache.sessions(mark)
        ends = harness.session_ends(apache, mark)
        return len(opened) >= n and all(s in ends for s in opened)
    harness.wait_for(ended, timeout, interval=0.1)
    opened, _ = apache.sessions(mark)
    ends = harness.session_ends(apache, mark)
    assert len(opened) >= n, "%d sessions opened, expected %d" % (len(opened), n)
    unclean = {s: ends.get(s, "(still open after %d s)" % timeout) for s in opened
               if ends.get(s) != CLEAN_END}
    assert not unclean, ("sessions not closed cleanly by the server: %s\n--- error_log ---\n%s"
                         % (unclean, apache.error_log_tail(40, mark)))
    return opened


def read_note(path, timeout=10):
    harness.wait_for(lambda: os.path.exists(path), timeout)
    with open(path) as f:
        rc, took = f.read().split()
    return int(rc), float(took)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MB), b""):
            h.update(b)
    return h.hexdigest()


def relay_lines(stderr):
    return [l for l in stderr.decode("utf-8", "replace").splitlines() if "relay-https" in l]


@pytest.mark.rh_timeout(180)
def test_ssh_true_ends_cleanly(apache, squid, sshd, client_bin, tls, transport, tmp_path):
    """`ssh -o ProxyCommand='relay-https stdio ...' host true`, 5 times: ssh exits 0,
    relay-https says nothing, exits 0 within EXIT_BOUND_S of ssh's SIGHUP, and the
    server closes every session cleanly."""
    timings = []
    for i in range(5):
        mark = apache.error_log_mark()
        note = str(tmp_path / ("exit-%d" % i))
        pc = proxy_command(client_bin, apache, squid, tls, transport, note=note)
        p = run([sshmod.SSH] + sshd.ssh_options(pc) + ["%s@relayed" % sshd.user, "true"])
        assert p.returncode == 0, ("run %d: ssh exit %d\nstderr:\n%s\n%s"
                                   % (i, p.returncode, p.stderr.decode(errors="replace"),
                                      sshd.describe()))
        assert not relay_lines(p.stderr), ("run %d: relay-https wrote to stderr:\n%s"
                                           % (i, p.stderr.decode(errors="replace")))
        rc, took = read_note(note)
        assert rc == 0, "run %d: relay-https exit code %d" % (i, rc)
        assert took <= EXIT_BOUND_S, ("run %d: relay-https took %.2f s to exit after ssh's "
                                      "signal" % (i, took))
        timings.append(took)
        wait_clean_ends(apache, mark, 1)
    print("%s: relay-https exited %s s after ssh's SIGHUP"
          % (transport, ", ".join("%.3f" % t for t in timings)))


@pytest.mark.rh_timeout(180)
def test_ssh_direct_proxycommand_quiet(apache, squid, sshd, client_bin, tls, transport):
    """relay-https itself as the ProxyCommand (no wrapper: it gets ssh's SIGHUP
    first hand): nothing on ssh's stderr, which stays open until relay-https
    exits, and a clean end on the server."""
    mark = apache.error_log_mark()
    pc = proxy_command(client_bin, apache, squid, tls, transport)
    p = run([sshmod.SSH] + sshd.ssh_options(pc) + ["%s@relayed" % sshd.user, "true"])
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert p.stderr == b"", "stderr: %r" % p.stderr
    wait_clean_ends(apache, mark, 1)


@pytest.mark.rh_timeout(180)
def test_ssh_cat_echoes_stdin(apache, squid, sshd, client_bin, tls, transport, tmp_path):
    """ssh ... cat, fed 1 MiB then EOF: the same bytes back, exit 0, clean end."""
    data = os.urandom(MB)
    mark = apache.error_log_mark()
    note = str(tmp_path / "exit-cat")
    pc = proxy_command(client_bin, apache, squid, tls, transport, note=note)
    p = run([sshmod.SSH] + sshd.ssh_options(pc) + ["%s@relayed" % sshd.user, "cat"],
            input=data)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert len(p.stdout) == len(data) and p.stdout == data, \
        "cat returned %d bytes of %d, equal: %s" % (len(p.stdout), len(data), p.stdout == data)
    assert not relay_lines(p.stderr), p.stderr.decode(errors="replace")
    rc, took = read_note(note)
    assert rc == 0 and took <= EXIT_BOUND_S, (rc, took)
    wait_clean_ends(apache, mark, 1)


def _scp_round_trip(sshd, opts, dest_host, tmp_path, what):
    src = str(tmp_path / "up.bin")
    back = str(tmp_path / "back.bin")
    remote = str(tmp_path / "remote.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(20 * MB))
    for way, args in (("up", opts + ["-q", src, "%s@%s:%s" % (sshd.user, dest_host, remote)]),
                      ("down", opts + ["-q", "%s@%s:%s" % (sshd.user, dest_host, remote), back])):
        p = run([sshmod.SCP] + args, timeout=240)
        assert p.returncode == 0, "%s: scp exit %d\n%s" % (what, p.returncode,
                                                          p.stderr.decode(errors="replace"))
        assert not relay_lines(p.stderr), p.stderr.decode(errors="replace")
        print("%s: 20 MB %s in %.2f s" % (what, way, p.elapsed))
    digest = sha256_file(src)
    assert sha256_file(remote) == digest, "%s: the uploaded copy differs" % what
    assert sha256_file(back) == digest, "%s: the downloaded copy differs" % what


@pytest.mark.rh_timeout(300)
def test_scp_20mb_proxycommand(apache, squid, sshd, client_bin, tls, transport, tmp_path):
    """scp of 20 MB up and back down through the ProxyCommand: the same sha256,
    two clean session ends."""
    mark = apache.error_log_mark()
    pc = proxy_command(client_bin, apache, squid, tls, transport)
    _scp_round_trip(sshd, sshd.ssh_options(pc), "relayed", tmp_path,
                    "scp via ProxyCommand (%s)" % transport)
    wait_clean_ends(apache, mark, 2)


@pytest.mark.rh_timeout(300)
def test_scp_20mb_forward(apache, squid, sshd, client_bin, tls, transport, tmp_path):
    """The same through `relay-https forward -L` and `scp -P PORT`."""
    mark = apache.error_log_mark()
    with harness.Forward(client_bin, apache.relay_url, "ssh", verbose=True,
                         extra_args=client_args(squid, tls, transport),
                         env=im.clean_env()) as fw:
        _scp_round_trip(sshd, sshd.ssh_options(port=fw.port), "127.0.0.1", tmp_path,
                        "scp via forward (%s)" % transport)
        wait_clean_ends(apache, mark, 2)
