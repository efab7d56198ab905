"""The relay core across restarts of httpd (issue 13, item 3): it re-opens its
log and takes the new LogLevel at every graceful restart, with a tunnel
running through it all (logrotate renames the log, then restarts gracefully)."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import harness
from harness import Forward, curl

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
STATUS = harness.STATUS_LOCATION


def _core_pid(a):
    r = curl(a.base_url + "/relay-status?json", method="GET")
    assert r.status == 200, r
    return json.loads(r.body)["core"]["pid"]


def _graceful(a):
    mark = a.error_log_mark()
    a.proc.send_signal(signal.SIGUSR1)          # apachectl -k graceful
    assert harness.wait_for(lambda: "resuming normal operations" in a.error_log_text(mark)
                            or "resuming normal operations" in a.error_log_text(0), 15), \
        a.error_log_tail(20)


def _logrotate(a, tmp_path):
    """The real logrotate, as Debian's /etc/logrotate.d/apache2 does it: the
    log renamed to .1, then a graceful restart from postrotate."""
    conf = tmp_path / "logrotate.conf"
    conf.write_text('"%s" {\n    rotate 5\n    missingok\n    nocompress\n'
                    '    postrotate\n        kill -USR1 %d\n    endscript\n}\n'
                    % (a.error_log, a.proc.pid))
    r = subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0, r.stdout
    assert os.path.exists(a.error_log + ".1"), os.listdir(os.path.dirname(a.error_log))
    assert harness.wait_for(lambda: "resuming normal operations" in a.error_log_text(0), 15), \
        a.error_log_tail(20)


def _open_close(a):
    r = curl(a.relay_url + "/echo/open")
    assert r.status == 201, r
    token = r.header("Relay-Session")
    assert curl(a.relay_url + "/echo/close", headers=["Relay-Session: " + token]).status == 204
    return token[:16]


@pytest.mark.rh_timeout(120)
def test_log_rotation_and_loglevel_on_graceful(tmp_path, tls, module_so, targets, client_bin):
    a = harness.Apache(str(tmp_path / "apache"), tls["cert"], tls["key"], mpm="event",
                       module=module_so, targets=targets, log_level_debug=False,
                       extra_conf=STATUS)
    harness.Apache.used.append(a)
    a.prepare()
    a.start()
    try:
        core = _core_pid(a)
        assert core > 0
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
            sock = harness.socket.create_connection(("127.0.0.1", fw.port), timeout=20)
            sock.sendall(b"before")
            assert sock.recv(100) == b"before"
            # at warn, the core does not log session opens
            sid = _open_close(a)
            time.sleep(0.5)
            assert sid not in a.error_log_text(), a.error_log_tail(10)

            # Debian's logrotate: rename, then a graceful restart (postrotate);
            # LogLevel raised in the configuration at the same time
            a.log_level_debug = True
            a.prepare()
            _logrotate(a, tmp_path)
            assert _core_pid(a) == core, "the core did not survive the graceful restart"

            sid = _open_close(a)
            opened = "core: session %s open target=echo" % sid
            assert harness.wait_for(lambda: opened in a.error_log_text(), 10), (
                "the core's line for a session opened after the rotation is not in the new "
                "error log:\nnew:\n%s\nold:\n%s" % (a.error_log_tail(15),
                                                    harness._read(a.error_log + ".1")[-1500:]))
            assert opened not in harness._read(a.error_log + ".1"), "written to the rotated log"
            assert harness.wait_for(lambda: os.path.exists(a.error_log), 5)
            # the core's stderr is the new file, not the renamed (or a deleted) one
            target = os.readlink("/proc/%d/fd/2" % core)
            assert target == a.error_log, target

            # a second rotation, and LogLevel back to warn: nothing of it reaches any log
            a.log_level_debug = False
            a.prepare()
            _logrotate(a, tmp_path)     # error.log.1 becomes .2, error.log .1
            sid = _open_close(a)
            time.sleep(1.0)
            for path in (a.error_log, a.error_log + ".1", a.error_log + ".2"):
                assert "core: session %s open" % sid not in harness._read(path), path
            assert os.readlink("/proc/%d/fd/2" % core) == a.error_log

            # the tunnel opened before all this still carries bytes
            sock.sendall(b"after")
            assert sock.recv(100) == b"after"
            sock.close()
    finally:
        a.stop()


@pytest.mark.rh_timeout(120)
def test_a2dismod_then_graceful_ends_the_core(tmp_path, tls, module_so, targets):
    """A restart without the module (a2dismod + graceful) leaves no relay core
    behind (it used to run on, unreachable); loading it again starts a new one."""
    a = harness.Apache(str(tmp_path / "apache"), tls["cert"], tls["key"], mpm="event",
                       module=module_so, targets=targets, extra_conf=STATUS)
    harness.Apache.used.append(a)
    a.prepare()
    a.start()
    try:
        core = _core_pid(a)
        r = curl(a.relay_url + "/echo/open")
        assert r.status == 201, r
        a.module = None
        a.extra_conf = ""
        a.prepare()
        t0 = time.monotonic()
        _graceful(a)
        gone = harness.wait_for(lambda: not os.path.exists("/proc/%d" % core)
                                or open("/proc/%d/stat" % core).read().split()[2] == "Z", 30)
        assert gone, "the relay core (pid %d) still runs %.0f s after a restart without the "\
                     "module:\n%s" % (core, time.monotonic() - t0, a.error_log_tail(10))
        assert "no longer loaded" in a.error_log_text(), a.error_log_tail(10)
        r = harness.https_get(a.port, "/")
        assert r[0] == 200, r        # the website goes on

        a.module = module_so
        a.extra_conf = STATUS
        a.prepare()
        _graceful(a)
        r = curl(a.relay_url + "/echo/open")
        assert r.status == 201, r
        assert _core_pid(a) not in (0, core), "no new core after the module came back"
    finally:
        a.stop()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _start_with_module_copy(tmp_path, tls, module_so, targets, extra_conf):
    """An event-MPM Apache that loads a copy of the module (so an upgrade can
    replace the file); started. Returns the copy's path and the Apache."""
    so = str(tmp_path / "mod_relay_https.so")
    shutil.copy(module_so, so)
    a = harness.Apache(str(tmp_path / "apache"), tls["cert"], tls["key"], mpm="event",
                       module=so, targets=targets, extra_conf=extra_conf)
    harness.Apache.used.append(a)
    a.prepare()
    a.start()
    return so, a


@pytest.mark.rh_timeout(120)
def test_module_replaced_then_graceful(tmp_path, tls, module_so, targets, client_bin):
    """An upgrade (a new module file, then a graceful restart): a new core from
    the new file serves new sessions at once, the old core keeps the tunnel it
    carries until it ends, then exits. Before, the old code ran on for ever."""
    so, a = _start_with_module_copy(tmp_path, tls, module_so, targets, STATUS)
    try:
        old_core = _core_pid(a)
        with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"]) as fw:
            sock = harness.socket.create_connection(("127.0.0.1", fw.port), timeout=20)
            sock.sendall(b"before")
            assert sock.recv(100) == b"before"
            # make install: a new file in place of the old one
            shutil.copy(module_so, so + ".new")
            os.rename(so + ".new", so)
            mark = a.error_log_mark()
            _graceful(a)
            assert harness.wait_for(lambda: "RH1016" in a.error_log_text(mark), 10), \
                a.error_log_tail(20, mark)
            new_core = _core_pid(a)
            assert new_core != old_core, "no new core after the module file changed"
            assert _alive(old_core), "the old core did not wait for its session"
            # the tunnel opened before the upgrade goes on through its own core
            for word in (b"after", b"upgrade"):
                sock.sendall(word)
                assert sock.recv(100) == word
            # new sessions go to the new core
            sid = _open_close(a)
            assert harness.wait_for(
                lambda: "[pid %d" % new_core in "\n".join(
                    l for l in a.error_log_text(mark).splitlines() if sid in l), 5), \
                a.error_log_tail(20, mark)
            sock.close()
        # its last session over, the old core ends
        assert harness.wait_for(lambda: not _alive(old_core), 30), a.error_log_tail(20)
        # httpd's maintenance reaps it and the parent forgets its socket and table
        assert harness.wait_for(lambda: "RH1017" in a.error_log_text(), 10), \
            a.error_log_tail(20)
        assert _alive(new_core)
        r = curl(a.relay_url + "/echo/open")
        assert r.status == 201, r
    finally:
        a.stop()
