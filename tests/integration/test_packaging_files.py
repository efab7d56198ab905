"""What packagers and operators install, checked without installing it:
the hardened relay-https-forward@.service (systemd-analyze security, and a
forward still working under the unit's system call filter, address families
and W^X rule) and `make install`, which must keep an edited
mods-available/relay_https.conf."""

import os
import re
import shutil
import subprocess
import sys

import pytest

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(ROOT, "conf.d-examples", "relay-https-forward@.service")
MAX_EXPOSURE = 2.0


def _offline_security(path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", path],
                       capture_output=True, text=True, timeout=60)
    if "offline" in r.stderr and r.returncode != 0 and "Unknown option" in r.stderr:
        pytest.skip("systemd-analyze has no --offline (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, "no score from systemd-analyze:\n%s\n%s" % (r.stdout[-2000:], r.stderr[-2000:])
    return float(m.group(1)), r.stdout


def test_forward_unit_is_hardened(tmp_path):
    # an instance name, as `systemctl start relay-https-forward@x` would see it
    path = tmp_path / "relay-https-forward@x.service"
    shutil.copy(UNIT, path)
    score, report = _offline_security(str(path))
    assert score <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (
        score, MAX_EXPOSURE, "\n".join(l for l in report.splitlines() if "\u2717" in l))


def test_forward_unit_keeps_what_a_forward_needs():
    text = open(UNIT).read()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    # the network (relay, proxy, DNS) and nothing that would forbid listening
    assert settings["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "PrivateNetwork" not in settings and "IPAddressDeny" not in settings
    assert settings["DynamicUser"] == "yes" and settings["CapabilityBoundingSet"] == ""
    assert re.search(r"^ExecStart=\S*/relay-https forward -L \$\{LISTEN\} ", text, re.M)
    # the score measured is written down in the unit
    assert re.search(r"scores this\s*\n?#?\s*unit \d+\.\d+", text), "no recorded score"


@pytest.fixture
def configured_build():
    d = harness.build_dir()
    if not os.path.isfile(os.path.join(d, "Makefile")):
        pytest.skip("no configured build tree in %s (./configure)" % d)
    if not os.path.isfile(harness.module_path()):
        pytest.skip("module not built: %s" % harness.module_path())
    return d


def test_make_install_keeps_an_edited_relay_https_conf(configured_build, tmp_path):
    dest = str(tmp_path / "root")
    sysconf = subprocess.run(["apxs", "-q", "SYSCONFDIR"], capture_output=True, text=True,
                             timeout=30).stdout.strip() or "/etc/apache2"
    conf = dest + sysconf + "/mods-available/relay_https.conf"
    shipped = open(os.path.join(ROOT, "conf.d-examples", "relay_https.conf")).read()

    def install():
        r = subprocess.run(["make", "-C", configured_build, "install", "DESTDIR=" + dest],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    install()
    assert open(conf).read() == shipped and not os.path.exists(conf + ".dist")
    with open(conf, "a") as f:
        f.write("RelayMaxSessions 100\n")
    out = install()
    assert open(conf).read() == shipped + "RelayMaxSessions 100\n", "the edit was overwritten"
    assert open(conf + ".dist").read() == shipped
    assert "relay_https.conf.dist" in out and "left as it is" in out, out


# ---------------------------------------------------------------------------
# The forward under the unit's restrictions, without systemd: the client runs
# as nobody with no_new_privs and a seccomp filter made from the unit's
# SystemCallFilter= (errors EPERM), RestrictAddressFamilies= and
# MemoryDenyWriteExecute=, as systemd would apply them. (The mount, user and
# /proc namespaces are not reproduced: a forward reads only its CA file and the
# system's TLS and resolver configuration.)
# ---------------------------------------------------------------------------

SANDBOX = r"""
import errno, json, os, sys
import seccomp
spec = json.load(open(os.environ["RH_SANDBOX_SPEC"]))
os.setgroups([]); os.setgid(65534); os.setuid(65534)
extra = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for fam in range(0, 64):
    if fam not in spec["families"]:
        extra.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket",
                       seccomp.Arg(0, seccomp.EQ, fam))
if spec["mdwe"]:
    W, X = 0x2, 0x4
    extra.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, W | X))
    for call in ("mprotect", "pkey_mprotect"):
        extra.add_rule(seccomp.ERRNO(errno.EPERM), call, seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
allow = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for call in spec["allow"]:
    try:
        allow.add_rule(seccomp.ALLOW, call)
    except Exception:          # unknown to this libseccomp or architecture
        pass
extra.load()                   # both set no_new_privs
allow.load()
os.execv(spec["client"], [spec["client"]] + sys.argv[1:])
"""


def _syscall_group(name, seen=None):
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True,
                         text=True, timeout=30).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            calls |= _syscall_group(line) if line.startswith("@") else {line}
    return calls


def _unit_seccomp_spec(text):
    """systemd's reading of SystemCallFilter= lines: the first allow-list sets
    what is allowed, a ~list takes away from it."""
    allow = None
    for value in re.findall(r"^SystemCallFilter=(.*)$", text, re.M):
        deny = value.startswith("~")
        names = set()
        for n in value.lstrip("~").split():
            names |= _syscall_group(n) if n.startswith("@") else {n}
        if deny:
            assert allow is not None, "a deny-list first is not modelled here"
            allow -= names
        else:
            allow = names if allow is None else allow | names
    assert allow, "the unit has no SystemCallFilter allow-list"
    fams = re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1).split()
    import socket as so
    return {"allow": sorted(allow), "families": [getattr(so, f) for f in fams],
            "mdwe": bool(re.search(r"^MemoryDenyWriteExecute=yes$", text, re.M))}


@pytest.mark.parametrize("transport", ["auto", "stream", "batch"])
def test_forward_works_under_the_units_restrictions(tmp_path, transport, apache_factory,
                                                    module_so, client_bin, targets, tls):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    if subprocess.run([sys.executable, "-c", "import seccomp"], capture_output=True).returncode:
        pytest.skip("python3-seccomp is not installed")
    import json
    spec = _unit_seccomp_spec(open(UNIT).read())
    assert len(spec["allow"]) > 200 and "setrlimit" not in spec["allow"], len(spec["allow"])
    spec["client"] = client_bin
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    wrapper = tmp_path / "sandboxed-relay-https"
    wrapper.write_text("#!%s\n%s" % (sys.executable, SANDBOX))
    wrapper.chmod(0o755)
    harness.make_traversable(str(tmp_path))
    env = dict(os.environ, RH_SANDBOX_SPEC=str(spec_path))

    a = apache_factory.get("event", module=module_so, targets=targets)
    url = a.relay_url.replace("127.0.0.1", "localhost")     # a name to resolve
    with harness.Forward(str(wrapper), url, "echo", cacert=tls["ca"], env=env,
                         extra_args=["--transport", transport]) as fw:
        r = harness.pump("127.0.0.1", fw.port, nbytes=1 << 20, timeout=60)
        assert r["error"] is None and r["recv_sha"] == r["sent_sha"], (r, fw.stderr_text())
