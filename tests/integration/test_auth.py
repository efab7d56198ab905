"""Apache's own authentication in front of the relay, unchanged: Basic auth from an
htpasswd file (AuthType Basic, AuthUserFile, Require valid-user) on a <Location>, and
client certificates (SSLVerifyClient require) on a TLS vhost of its own."""

import os

import pytest

import harness
import intermediaries as im
from harness import Forward, assert_sessions_closed, curl, pump, run_stdio

MB = 1024 * 1024
USER, PASSWORD = "relayuser", "relay-P4ss"


@pytest.fixture(scope="module")
def creds_dir(tmp_path_factory):
    return harness.www_tmpdir(tmp_path_factory, "auth")


@pytest.fixture(scope="module")
def htpasswd(creds_dir):
    return im.write_htpasswd(os.path.join(creds_dir, "htpasswd"), {USER: PASSWORD})


@pytest.fixture(scope="module")
def client_cert(creds_dir):
    return im.make_client_cert(os.path.join(creds_dir, "client-cert"))


@pytest.fixture(scope="module")
def cert_ports():
    return {"tls1.3": harness.free_port(), "tls1.2": harness.free_port()}


@pytest.fixture(scope="module")
def _auth_conf(targets, htpasswd, client_cert, cert_ports, tls):
    return "\n".join([
        im.basic_auth_location_conf("/relay-auth", targets, htpasswd),
        # the default protocols (TLS 1.3 here): the certificate is checked after the
        # client's Finished; and TLS 1.2 only, where a missing one fails the handshake
        im.client_cert_vhost_conf(cert_ports["tls1.3"], tls["cert"], tls["key"],
                                  client_cert["ca"]),
        im.client_cert_vhost_conf(cert_ports["tls1.2"], tls["cert"], tls["key"],
                                  client_cert["ca"], protocol="-all +TLSv1.2"),
    ])


@pytest.fixture
def apache(apache_factory, module_so, targets, _auth_conf):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=_auth_conf)


def _auth_url(a):
    return a.base_url + "/relay-auth"


# ---------------------------------------------------------------------------
# Basic
# ---------------------------------------------------------------------------

def test_basic_curl_without_credentials_401(apache):
    a = apache
    mark = a.error_log_mark()
    r = curl(_auth_url(a) + "/echo/open")
    assert r.status == 401, r
    assert (r.header("WWW-Authenticate") or "").lower().startswith("basic"), r
    r = curl(_auth_url(a) + "/echo/open", extra=["-u", "%s:wrong" % USER])
    assert r.status == 401, r
    opened, _ = a.sessions(mark)
    assert not opened, "a session was opened without valid credentials: %s" % opened
    # with them, the relay answers (and the session is closed again at once)
    r = curl(_auth_url(a) + "/echo/open", extra=["-u", "%s:%s" % (USER, PASSWORD)])
    assert r.status == 201, r
    token = r.header("Relay-Session")
    c = curl(_auth_url(a) + "/echo/close", headers=["Relay-Session: " + token],
             extra=["-u", "%s:%s" % (USER, PASSWORD)])
    assert c.status == 204, c
    # the unprotected /relay next to it is unaffected
    assert curl(a.relay_url + "/", method="GET").status == 200


@pytest.mark.rh_timeout(60)
@pytest.mark.parametrize("user", [None, "%s:wrong" % USER], ids=["no-user", "wrong-password"])
def test_basic_client_refused_exit_5(apache, client_bin, tls, user):
    a = apache
    mark = a.error_log_mark()
    args = ["--user", user] if user else []
    s = run_stdio(client_bin, _auth_url(a), "echo", b"hello\n", cacert=tls["ca"], timeout=40,
                  extra_args=args, env=im.clean_env())
    assert not s["timed_out"], "relay-https stdio hung: %s" % s
    assert s["rc"] == 5, ("expected exit 5 (authentication refused by the server), got %r:\n%s"
                          % (s["rc"], s["stderr"]))
    msg = s["stderr"]
    assert "401" in msg, "the message should name the 401: %r" % msg
    if user is None:
        assert "-u" in msg or "--user" in msg or "credentials" in msg.lower(), \
            "the message should say the server wants credentials: %r" % msg
    assert s["stdout"] == b""
    assert not a.sessions(mark)[0]


@pytest.mark.rh_timeout(120)
def test_basic_client_with_user_works(apache, client_bin, tls):
    a = apache
    mark = a.error_log_mark()
    with open(a.access_log, "rb") as f:
        f.seek(0, 2)
        acc_start = f.tell()
    with Forward(client_bin, _auth_url(a), "echo", cacert=tls["ca"],
                 extra_args=["--user", "%s:%s" % (USER, PASSWORD)], env=im.clean_env()) as fw:
        res = pump("127.0.0.1", fw.port, nbytes=2 * MB, timeout=90)
        assert res["error"] is None and res["received"] == 2 * MB, (res, fw.stderr_text())
        assert res["recv_sha"] == res["sent_sha"], res
        assert_sessions_closed(a, mark, timeout=15, min_opened=1)
        assert PASSWORD not in "\n".join(fw.lines()), "the -v output shows the password"
    def lines():
        with open(a.access_log, "r", errors="replace") as f:
            f.seek(acc_start)
            l = [x for x in f.read().splitlines() if "/relay-auth/echo/" in x]
        return l if any("/relay-auth/echo/open" in x for x in l) else None
    l = harness.wait_for(lines, 10, interval=0.2)
    assert l, harness._read(a.access_log)[-2000:]
    # %u in the combined log: every relay request was authenticated as USER
    assert all((" %s [" % USER) in x for x in l), "\n".join(l)


# ---------------------------------------------------------------------------
# Client certificates
# ---------------------------------------------------------------------------

@pytest.mark.rh_timeout(60)
@pytest.mark.parametrize("proto", ["tls1.3", "tls1.2"])
def test_client_cert_missing_exit_4(apache, client_bin, tls, cert_ports, proto):
    """SSLVerifyClient require and no --cert: the documented code for a failed TLS
    handshake (4), with a message."""
    a = apache
    mark = a.error_log_mark()
    url = "https://127.0.0.1:%d/relay" % cert_ports[proto]
    s = run_stdio(client_bin, url, "echo", b"hello\n", cacert=tls["ca"], timeout=40,
                  env=im.clean_env())
    assert not s["timed_out"], "relay-https stdio hung: %s" % s
    # TLS 1.3 sends the refusal after the handshake; when the server's close wins
    # the race, libcurl sees a dropped connection, not the alert (documented: 3)
    allowed = (4,) if proto == "tls1.2" else (4, 3)
    assert s["rc"] in allowed, ("expected exit %s (TLS handshake failed: the server "
                                "requires a client certificate), got %r:\n%s"
                                % (allowed, s["rc"], s["stderr"]))
    assert s["stderr"].strip() and s["stdout"] == b"", s
    assert not a.sessions(mark)[0]


@pytest.mark.rh_timeout(60)
def test_client_cert_untrusted_fails(apache, client_bin, tls, cert_ports):
    """A certificate from another CA (the server's own) is refused too."""
    url = "https://127.0.0.1:%d/relay" % cert_ports["tls1.2"]
    s = run_stdio(client_bin, url, "echo", b"hello\n", cacert=tls["ca"], timeout=40,
                  extra_args=["--cert", tls["cert"], "--key", tls["key"]], env=im.clean_env())
    assert not s["timed_out"], s
    assert s["rc"] == 4, (s["rc"], s["stderr"])


@pytest.mark.rh_timeout(120)
@pytest.mark.parametrize("proto", ["tls1.3", "tls1.2"])
def test_client_cert_works(apache, client_bin, tls, client_cert, cert_ports, proto):
    a = apache
    mark = a.error_log_mark()
    url = "https://127.0.0.1:%d/relay" % cert_ports[proto]
    payload = os.urandom(1 * MB)
    s = run_stdio(client_bin, url, "echo", payload, cacert=tls["ca"], timeout=90,
                  extra_args=["--cert", client_cert["cert"], "--key", client_cert["key"]],
                  env=im.clean_env())
    assert not s["timed_out"], s
    assert s["rc"] == 0, (s["rc"], s["stderr"])
    assert s["stdout"] == payload, (len(s["stdout"]), s["stderr"])
    assert_sessions_closed(a, mark, timeout=15, min_opened=1)


# ---------------------------------------------------------------------------
# Relay URLs name no file: <Location> applies, <Directory> and .htaccess do not
# ---------------------------------------------------------------------------

def test_location_auth_applies_directory_and_htaccess_do_not(apache_factory, module_so,
                                                               targets, htpasswd):
    """httpd's directory and file walks are skipped for relay URLs
    (map_to_storage, as mod_proxy does): a <Files> section that denies the
    path's first segment (what the file walk would test: /relay maps to
    DOCROOT/relay), or an .htaccess in the document root that httpd cannot
    even parse, leaves the relay location as its <Location> configures it,
    Basic auth included; the website's own pages keep both."""
    conf = "\n".join([
        "<Directory />", "    AllowOverride All", "</Directory>",
        '<Files "relay">', "    Require all denied", "</Files>",
        '<Files "forbidden.html">', "    Require all denied", "</Files>",
        im.basic_auth_location_conf("/relay-auth", targets, htpasswd),
    ])
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=conf)
    r = curl(a.base_url + "/forbidden.html", method="GET")
    assert r.status == 403, r
    r = curl(a.relay_url + "/echo/check", method="GET")
    assert r.status == 200, r
    htaccess = os.path.join(a.docroot, ".htaccess")
    with open(htaccess, "w") as f:
        f.write("NotADirective here\n")
    os.chmod(htaccess, 0o644)
    try:
        r = curl(a.base_url + "/index.html", method="GET")
        assert r.status == 500, r        # the page's walk reads the .htaccess
        r = curl(a.relay_url + "/echo/open")
        assert r.status == 201, r
        c = curl(a.relay_url + "/echo/close",
                 headers=["Relay-Session: " + r.header("Relay-Session")])
        assert c.status == 204, c
        # the <Location>'s own authentication still holds
        r = curl(_auth_url(a) + "/echo/open")
        assert r.status == 401, r
        r = curl(_auth_url(a) + "/echo/open", extra=["-u", "%s:%s" % (USER, PASSWORD)])
        assert r.status == 201, r
        c = curl(_auth_url(a) + "/echo/close",
                 headers=["Relay-Session: " + r.header("Relay-Session")],
                 extra=["-u", "%s:%s" % (USER, PASSWORD)])
        assert c.status == 204, c
    finally:
        os.unlink(htaccess)
