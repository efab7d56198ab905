"""What packagers and operators install, checked without installing it:
the hardened relay-https-forward@.service (systemd-analyze security) and
`make install`, which must keep an edited mods-available/relay_https.conf."""

import os
import re
import shutil
import subprocess

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
