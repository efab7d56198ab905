"""Configuration traps that httpd's own syntax check lets through are refused
at `apache2 -t`, naming the file and line (mod_rh_check.c): a RelayTarget that
no relay <Location> serves, and a RelayIdleTimeout at or below the
RelayPollTimeout in force. Left unset, the poll timeout follows a short idle
timeout at run time, so an idle batch session is not closed under its poll."""

import os
import time

import pytest

import harness
from harness import curl


def _configtest(apache_factory, module_so, targets, extra):
    a = apache_factory.get("event", module=module_so, targets=targets, start=False,
                           extra_conf="# configcheck %d" % time.monotonic_ns())
    text = a.config_text(extra_locations=extra)
    path = os.path.join(a.root, "conf", "check.conf")
    with open(path, "w") as f:
        f.write(text)
    return text, path, a.configtest(path)


def _line_of(text, needle):
    hits = [i + 1 for i, l in enumerate(text.splitlines()) if l.strip() == needle]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def _refused(r, tag, text, path, needle):
    assert r.returncode != 0, "configtest passed a trap (%s):\n%s" % (needle, r.stdout)
    assert tag in r.stdout, "expected %s in:\n%s" % (tag, r.stdout)
    where = "%s:%d" % (path, _line_of(text, needle))
    assert where in r.stdout, "the message does not name %s:\n%s" % (where, r.stdout)


def test_target_in_location_without_handler(apache_factory, module_so, targets):
    extra = "<Location /nohandler>\n    RelayTarget lost 127.0.0.1:1\n</Location>"
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    _refused(r, "RH3001", text, path, "RelayTarget lost 127.0.0.1:1")
    assert "/nohandler" in r.stdout, r.stdout


def test_target_in_directory(apache_factory, module_so, targets, tmp_path):
    extra = "<Directory %s>\n    RelayTarget lost 127.0.0.1:1\n</Directory>" % tmp_path
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    _refused(r, "RH3002", text, path, "RelayTarget lost 127.0.0.1:1")


def test_target_in_vhost_without_relay_location(apache_factory, module_so, targets):
    port = harness.free_port()
    extra = ("Listen 127.0.0.1:%d\n<VirtualHost 127.0.0.1:%d>\n    ServerName other\n"
             "    RelayTarget lost 127.0.0.1:1\n</VirtualHost>" % (port, port))
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    _refused(r, "RH3003", text, path, "RelayTarget lost 127.0.0.1:1")


def test_idle_not_above_poll(apache_factory, module_so, targets):
    extra = ("<Location /short>\n    SetHandler relay-https\n    RelayTarget echo2 127.0.0.1:1\n"
             "    RelayIdleTimeout 20\n    RelayPollTimeout 25\n</Location>")
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    _refused(r, "RH3004", text, path, "RelayIdleTimeout 20")
    assert "%s:%d" % (path, _line_of(text, "RelayPollTimeout 25")) in r.stdout, r.stdout


def test_idle_below_server_level_poll(apache_factory, module_so, targets):
    """The poll timeout in force may come from the server level."""
    extra = ("RelayPollTimeout 30\n<Location /short>\n    SetHandler relay-https\n"
             "    RelayTarget echo2 127.0.0.1:1\n    RelayIdleTimeout 30\n</Location>")
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    _refused(r, "RH3004", text, path, "RelayIdleTimeout 30")


@pytest.mark.parametrize("extra", [
    # the handler in another section of the same path
    "<Location /split>\n    SetHandler relay-https\n</Location>\n"
    "<Location /split>\n    RelayTarget split 127.0.0.1:1\n</Location>",
    # at server level, inherited by the server's relay location (/relay)
    "RelayTarget global 127.0.0.1:1",
    # inside conditions, as the shipped examples do
    "<IfModule relay_https_module>\n<Location /cond>\n    <IfModule relay_https_module>\n"
    "    SetHandler relay-https\n    </IfModule>\n    RelayTarget c 127.0.0.1:1\n"
    "</Location>\n</IfModule>",
    # timeouts the right way round, and a short idle timeout with the poll unset
    "<Location /ok>\n    SetHandler relay-https\n    RelayTarget ok 127.0.0.1:1\n"
    "    RelayIdleTimeout 60\n    RelayPollTimeout 25\n</Location>\n"
    "<Location /ok2>\n    SetHandler relay-https\n    RelayTarget ok 127.0.0.1:1\n"
    "    RelayIdleTimeout 5\n</Location>",
    # a false condition is not read: what is in it cannot be a trap
    "<IfDefine NEVER_DEFINED_X>\n<Location /never>\n    RelayTarget n 127.0.0.1:1\n"
    "</Location>\n</IfDefine>",
], ids=["same-path", "server-level", "conditions", "timeouts-ok", "false-ifdefine"])
def test_good_configs_pass(apache_factory, module_so, targets, extra):
    text, path, r = _configtest(apache_factory, module_so, targets, extra)
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stdout


@pytest.mark.rh_timeout(60)
def test_short_idle_keeps_batch_sessions(apache_factory, module_so, targets):
    """/idle has RelayIdleTimeout 2 and no RelayPollTimeout: a batch long-poll
    answers within the idle time, so a client that keeps polling keeps its
    session (it used to be closed under a 25 s poll)."""
    a = apache_factory.get("event", module=module_so, targets=targets)
    r = curl(a.idle_url + "/echo/open")
    assert r.status == 201, r
    token = r.header("Relay-Session")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        t1 = time.monotonic()
        p = curl(a.idle_url + "/echo/pull", headers=["Relay-Session: " + token,
                                                     "Relay-Ack: 0", "Relay-Mode: batch"])
        took = time.monotonic() - t1
        assert p.status == 200, "batch poll %.1f s into a session with idle 2 s: %r" % (
            time.monotonic() - t0, p)
        assert took < 1.9, "a batch poll took %.1f s with RelayIdleTimeout 2" % took
    c = curl(a.idle_url + "/echo/close", headers=["Relay-Session: " + token])
    assert c.status == 204, c


def test_relay_socket_too_long_is_refused(apache_factory, module_so, targets):
    """A RelaySocket that leaves no room for the suffix an upgrade or a second
    core adds is refused by apache2 -t, not at a graceful restart (which would
    stop the whole server)."""
    long_path = "/tmp/" + "s" * 100
    text, path, r = _configtest(apache_factory, module_so, targets,
                                "RelaySocket %s" % long_path)
    assert r.returncode != 0, r.stdout
    assert "RelaySocket: the path %s is too long" % long_path in r.stdout, r.stdout
    assert "at most 100 characters" in r.stdout, r.stdout
    ok = "/tmp/" + "s" * 95
    text, path, r = _configtest(apache_factory, module_so, targets, "RelaySocket %s" % ok)
    assert r.returncode == 0, r.stdout
