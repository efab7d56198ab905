"""The Debian packages, end to end, on a throwaway machine (issue 13, item 5).

Skipped unless RH_TEST_PACKAGE=1 (CI sets it), running as root, with
dpkg-buildpackage available: this test installs packages into the system,
enables a site in the system Apache, (re)starts it and purges the packages
again. Never run it on a machine whose Apache matters.

Builds libapache2-mod-relay-https and relay-https from this tree (or takes the
.debs in RH_DEB_DIR), checks lintian reports no error and no warning, installs
them with dpkg -i, checks the module is enabled by the package, serves a relay
location on a free loopback port from the system apache2 (apache2ctl), carries
bytes through the installed /usr/bin/relay-https in stdio mode to a local echo
server, then purges both packages and checks that the module, its conffiles
and the client are gone and that apache2 still passes configtest.
"""

import glob
import os
import shutil
import socket
import subprocess

import pytest

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES = ("libapache2-mod-relay-https", "relay-https")
MODULE_SO = "/usr/lib/apache2/modules/mod_relay_https.so"
CONFFILES = ("/etc/apache2/mods-available/relay_https.load",
             "/etc/apache2/mods-available/relay_https.conf")
CLIENT = "/usr/bin/relay-https"
UNIT = "/lib/systemd/system/relay-https-forward@.service"
SITE = "rh-pkgtest"
SITE_FILE = "/etc/apache2/sites-available/%s.conf" % SITE
SITE_LOG = "/var/log/apache2/%s-error.log" % SITE

pytestmark = [
    pytest.mark.skipif(os.environ.get("RH_TEST_PACKAGE") != "1",
                       reason="installs packages into the system: set RH_TEST_PACKAGE=1"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (dpkg -i, apache2ctl)"),
    pytest.mark.skipif(not shutil.which("dpkg-buildpackage"),
                       reason="dpkg-buildpackage is not installed (dpkg-dev)"),
    pytest.mark.rh_timeout(360),
]


def run(cmd, timeout=120, check=True, env=None, cwd=None):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check:
        assert r.returncode == 0, "%s: rc %d\n%s\n%s" % (" ".join(cmd), r.returncode,
                                                        r.stdout[-4000:], r.stderr[-4000:])
    return r


# --------------------------------------------------------------------------
# Building (or finding) the packages
# --------------------------------------------------------------------------

def _copy_source(dest):
    """The tree as git sees it (tracked and new files, not build products), so
    that the package is built as from a clean clone."""
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True, timeout=60)
    assert r.returncode == 0, ("git ls-files failed in %s (not a git checkout? build the "
                               ".debs and point RH_DEB_DIR at them): %s" % (ROOT, r.stderr))
    for rel in filter(None, r.stdout.decode().split("\0")):
        src = os.path.join(ROOT, rel)
        if not os.path.lexists(src):        # deleted in the work tree
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)


def _build(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_source(str(src))
    # the unit tests run in `make check`; here only the packaging is at stake
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=%d" % (os.cpu_count() or 2))
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], timeout=240, check=False, env=env,
            cwd=str(src))
    assert r.returncode == 0, "dpkg-buildpackage failed:\n%s\n%s" % (r.stdout[-6000:],
                                                                      r.stderr[-3000:])
    return str(tmp_path)


def _debs(directory):
    debs = {}
    for p in PACKAGES:
        found = sorted(glob.glob(os.path.join(directory, "%s_*.deb" % p)))
        assert found, "no %s_*.deb in %s" % (p, directory)
        debs[p] = found[-1]
    return debs


def _lintian(directory, debs):
    if not shutil.which("lintian"):
        pytest.fail("lintian is not installed", pytrace=False)
    changes = sorted(glob.glob(os.path.join(directory, "*.changes")))
    targets = changes[-1:] if changes else list(debs.values())
    r = run(["lintian", "--no-tag-display-limit"] + targets, timeout=180, check=False)
    bad = [l for l in r.stdout.splitlines() if l.startswith(("E:", "W:"))]
    assert not bad, "lintian on %s:\n%s" % (" ".join(targets), "\n".join(bad))
    assert r.returncode == 0, "lintian: rc %d\n%s" % (r.returncode, r.stderr[-3000:])


# --------------------------------------------------------------------------
# The system Apache
# --------------------------------------------------------------------------

def _apache_pidfile():
    r = run(["sh", "-c", ". /etc/apache2/envvars && echo \"$APACHE_PID_FILE\""])
    return r.stdout.strip() or "/var/run/apache2/apache2.pid"


def _apache_running():
    try:
        with open(_apache_pidfile()) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], check=False)
    return r.returncode == 0 and r.stdout.strip() not in ("", "not-installed", "config-files")


def _cleanup(started_apache):
    """Best effort, after a failure half-way: leave the machine as it was."""
    subprocess.run(["a2dissite", "-q", "--purge", SITE], capture_output=True, timeout=60)
    for f in (SITE_FILE, SITE_LOG):
        if os.path.exists(f):
            os.unlink(f)
    if started_apache and _apache_running():
        subprocess.run(["apache2ctl", "stop"], capture_output=True, timeout=60)
    subprocess.run(["dpkg", "--purge"] + list(PACKAGES), capture_output=True, timeout=120)


# --------------------------------------------------------------------------

def test_packages_build_lint_install_relay_purge(tmp_path):
    deb_dir = os.environ.get("RH_DEB_DIR")
    directory = os.path.abspath(deb_dir) if deb_dir else _build(tmp_path)
    debs = _debs(directory)
    _lintian(directory, debs)

    was_running = _apache_running()
    if not was_running:
        with socket.socket() as s:      # ports.conf's Listen 80 must be free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", 80))
            except OSError as e:
                pytest.fail("the system apache2 cannot start here: port 80 is taken (%s)" % e,
                            pytrace=False)
    echo = harness.EchoServer()
    done = False
    try:
        # ---- install: the module is enabled by the package itself
        run(["dpkg", "-i", debs["libapache2-mod-relay-https"], debs["relay-https"]],
            timeout=180)
        for p in PACKAGES:
            assert _installed(p), p
        assert os.path.isfile(MODULE_SO) and os.access(CLIENT, os.X_OK)
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}",
                         "libapache2-mod-relay-https"]).stdout
        for c in CONFFILES:
            assert c in conffiles, "%s is not a conffile:\n%s" % (c, conffiles)
        assert os.path.islink("/etc/apache2/mods-enabled/relay_https.load"), \
            "the package did not enable relay_https"
        run(["a2enmod", "-q", "relay_https"])        # and a2enmod agrees (no-op)
        # the template unit is installed, and no instance is enabled
        assert os.path.isfile(UNIT)
        with open(UNIT) as f:
            assert "ExecStart=/usr/bin/relay-https forward " in f.read()
        assert not glob.glob("/etc/systemd/system/*.wants/relay-https-forward@*")

        # ---- a relay site on a free loopback port, the system apache2
        port = harness.free_port()
        with open(SITE_FILE, "w") as f:
            f.write("Listen 127.0.0.1:%d\n"
                    "<VirtualHost 127.0.0.1:%d>\n"
                    "    ServerName 127.0.0.1\n"
                    "    ErrorLog %s\n"
                    "    <Location /relay>\n"
                    "        SetHandler relay-https\n"
                    "        RelayTarget echo 127.0.0.1:%d\n"
                    "        Require all granted\n"
                    "    </Location>\n"
                    "</VirtualHost>\n" % (port, port, SITE_LOG, echo.port))
        run(["a2ensite", "-q", SITE])
        run(["apache2ctl", "configtest"])
        run(["apache2ctl", "restart" if _apache_running() else "start"], timeout=60)
        assert harness.wait_for(lambda: _port_open(port), 30), \
            "the system apache2 does not listen on 127.0.0.1:%d" % port

        # ---- bytes through the installed client
        payload = os.urandom(1 << 20)
        r = harness.run_stdio(CLIENT, "http://127.0.0.1:%d/relay" % port, "echo", payload,
                              timeout=60)
        assert r["rc"] == 0 and r["stdout"] == payload, (
            "stdio through %s: rc %s, %d of %d bytes back\n%s"
            % (CLIENT, r["rc"], len(r["stdout"]), len(payload), r["stderr"][-3000:]))

        # ---- take the site away, stop what we started, purge
        run(["a2dissite", "-q", "--purge", SITE])   # --purge: no state left behind
        os.unlink(SITE_FILE)
        if not was_running:
            run(["apache2ctl", "stop"], timeout=60)
            assert harness.wait_for(lambda: not _apache_running(), 30), "apache2 did not stop"
        run(["dpkg", "--purge"] + list(PACKAGES), timeout=180)
        done = True
        for p in PACKAGES:
            assert not _installed(p), p
        for path in (MODULE_SO, CLIENT, UNIT) + CONFFILES:
            assert not os.path.lexists(path), "%s is still there after the purge" % path
        assert not os.path.lexists("/etc/apache2/mods-enabled/relay_https.load")
        assert not os.path.lexists("/etc/apache2/mods-enabled/relay_https.conf")
        run(["apache2ctl", "configtest"])
        if was_running:
            run(["apache2ctl", "graceful"], timeout=60)
    finally:
        echo.stop()
        if not done:
            _cleanup(not was_running)
        elif os.path.exists(SITE_LOG):
            os.unlink(SITE_LOG)
