"""conf.d-examples/ is what operators copy: it must pass `apache2 -t` with the module."""

import os
import re
import subprocess

import pytest

import harness

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "conf.d-examples"))


def _read(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def test_load_file_points_at_debian_module_dir():
    text = _read("relay_https.load")
    assert re.search(r"^LoadModule relay_https_module /usr/lib/apache2/modules/mod_relay_https\.so$",
                     text, re.M), text


@pytest.mark.parametrize("uncomment,loaded", [(False, True), (True, True), (True, False)],
                         ids=["as-shipped", "all-uncommented", "after-a2dismod"])
def test_examples_pass_configtest(tmp_path, module_so, tls, uncomment, loaded):
    """With the module, and without it (after a2dismod the site must still pass
    configtest, or every reload is refused)."""
    m = harness.APACHE_MODULES
    logs = tmp_path / "logs"
    logs.mkdir()
    load = _read("relay_https.load").replace(
        "/usr/lib/apache2/modules/mod_relay_https.so", module_so)
    conf = _read("relay_https.conf")
    vhost = (_read("example-vhost.conf")
             .replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", tls["cert"])
             .replace("/etc/ssl/private/ssl-cert-snakeoil.key", tls["key"]))
    if uncomment:
        un = lambda t: re.sub(r"^(\s*)#((?:Relay\w+|LogLevel|LogFormat|CustomLog)\b)", r"\1\2", t,
                              flags=re.M)
        conf, vhost = un(conf), un(vhost)
        assert "\n    RelayMaxSessions" in conf and "\n            RelayIdleTimeout" in vhost
        conf = conf.replace("/var/run/apache2/", str(tmp_path) + "/")
    base = "\n".join([
        'ServerRoot "%s"' % tmp_path,
        "ServerName 127.0.0.1",
        "Listen 127.0.0.1:%d" % harness.free_port(),
        "Listen 127.0.0.1:%d https" % harness.free_port(),
        'DefaultRuntimeDir "%s"' % tmp_path,
        'PidFile "%s/apache2.pid"' % tmp_path,
        'ErrorLog "%s/error.log"' % logs,
        "Define APACHE_LOG_DIR %s" % logs,
        "LoadModule mpm_event_module %s/mod_mpm_event.so" % m,
    ] + ["LoadModule %s_module %s/mod_%s.so" % (x, m, x) for x in (
        "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user",
        "mime", "dir", "socache_shmcb", "ssl", "http2")])
    path = tmp_path / "httpd.conf"
    path.write_text("\n".join([base, load if loaded else "", conf, vhost]) + "\n")
    r = subprocess.run([harness.APACHE_BIN, "-t", "-f", str(path)], env=harness.apache_env(),
                       stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stdout
