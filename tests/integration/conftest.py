"""pytest fixtures for the mod_relay_https integration tests.

Run:  cd tests/integration && RH_BUILD_DIR=/abs/builddir /usr/bin/python3 -m pytest
(`make check` does this.)  Without a built module / client, the tests that need
them are skipped with the path that is missing; everything else still runs.
"""

import os
import signal
import warnings

import pytest

import harness

DEFAULT_TEST_TIMEOUT = int(os.environ.get("RH_TEST_TIMEOUT", "180"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rh_timeout(seconds): per-test time limit (default %d s, SIGALRM)"
        % DEFAULT_TEST_TIMEOUT)


# ---------------------------------------------------------------------------
# Per-test time limit without pytest-timeout: SIGALRM in the main thread.
# ---------------------------------------------------------------------------

class TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("rh_timeout")
    seconds = m.args[0] if m else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded its %s s time limit" % seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("call", "setup"):
        for a in list(dict.fromkeys(harness.Apache.used)):
            rep.sections.append(
                ("apache %s :%d error_log (tail, %s)" % (a.mpm, a.port, a.error_log),
                 a.error_log_tail(40)))


@pytest.fixture(scope="session", autouse=True)
def _sanitizer_reports():
    """--enable-sanitizers builds: any ASan/UBSan report of any process fails the run."""
    harness.sanitizer_setup()
    yield
    reports = harness.sanitizer_reports()
    if reports:
        pytest.fail("sanitizer reports in %s:\n%s" % (harness.SAN_DIR, "\n".join(
            "--- %s ---\n%s" % (n, t[:4000]) for n, t in reports[:5])), pytrace=False)


@pytest.fixture(autouse=True)
def _reset_used_apaches():
    harness.Apache.used.clear()
    yield


# ---------------------------------------------------------------------------
# Build artifacts
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def module_so():
    p = harness.module_path()
    if not os.path.isfile(p):
        pytest.skip("module not built: %s is missing (run ./configure && make; "
                    "RH_BUILD_DIR=%s)" % (p, harness.build_dir()))
    return p


@pytest.fixture(scope="session")
def client_bin():
    p = harness.client_path()
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        pytest.skip("client not built: %s is missing (run ./configure && make; "
                    "RH_BUILD_DIR=%s)" % (p, harness.build_dir()))
    return p


# ---------------------------------------------------------------------------
# Certificates, backends
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca, cert, key = harness.make_cert(str(d))
    harness.make_traversable(str(d))
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="session")
def echo_server():
    srv = harness.EchoServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def reset_server():
    srv = harness.ResetServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def refused_port():
    return harness.free_port()


@pytest.fixture(scope="session")
def targets(echo_server, refused_port, reset_server):
    return {"echo": "127.0.0.1:%d" % echo_server.port,
            "refused": "127.0.0.1:%d" % refused_port,
            "reset": "127.0.0.1:%d" % reset_server.port}


# ---------------------------------------------------------------------------
# Apache instances: one per (MPM, options) per test module
# ---------------------------------------------------------------------------

class ApacheFactory:
    def __init__(self, tmp_path_factory, tls):
        self.tmp = tmp_path_factory
        self.tls = tls
        self.cache = {}

    def get(self, mpm, module=None, targets=None, keepalive=True, prefork_children=8,
            extra_conf="", start=True, env=None):
        key = (mpm, module, tuple(sorted((targets or {}).items())), keepalive,
               prefork_children, extra_conf, tuple(sorted((env or {}).items())))
        a = self.cache.get(key)
        if a is not None and a.running():
            harness.Apache.used.append(a)
            return a
        root = str(self.tmp.mktemp("apache-%s" % mpm))
        a = harness.Apache(root, self.tls["cert"], self.tls["key"], mpm=mpm, module=module,
                           targets=targets, keepalive=keepalive,
                           prefork_children=prefork_children, extra_conf=extra_conf,
                           env=env)
        a.prepare()
        if start:
            a.start()
        self.cache[key] = a
        harness.Apache.used.append(a)
        return a

    def stop_all(self):
        leftovers = []
        for a in self.cache.values():
            a.stop()
            if a.leftovers:
                leftovers.append((a, a.leftovers))
        self.cache.clear()
        return leftovers


@pytest.fixture(scope="module")
def apache_factory(tmp_path_factory, tls):
    f = ApacheFactory(tmp_path_factory, tls)
    yield f
    leftovers = f.stop_all()
    if leftovers:
        msg = "; ".join("apache %s (%s): %s still running 5 s after the parent exited "
                        "on SIGTERM (SIGKILLed)" % (a.mpm, a.conf_path, ", ".join(pids))
                        for a, pids in leftovers)
        # test_clean_stop fails on this explicitly; here it is only reported, since a
        # failure raised while pytest tears down the session (e.g. after -x) is unreadable.
        warnings.warn(pytest.PytestWarning("processes left behind after stopping apache: "
                                           + msg))


@pytest.fixture(params=harness.MPMS)
def mpm(request):
    return request.param


@pytest.fixture
def relay_apache(apache_factory, mpm, module_so, targets):
    """A running apache (the parametrized MPM) with the module under /relay and /idle."""
    return apache_factory.get(mpm, module=module_so, targets=targets)


# One Apache (event MPM) shared by the tests of a module: the module defines a
# module-scoped fixture `module_apache_conf` (its extra configuration).
@pytest.fixture(scope="module")
def _module_apache(apache_factory, module_so, targets, module_apache_conf):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=module_apache_conf)


@pytest.fixture
def module_apache(apache_factory, module_so, targets, module_apache_conf, _module_apache):
    """The module's shared Apache, registered again for each test (so that a
    failure shows its error_log); one that died is not replaced unnoticed."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=module_apache_conf)
    assert a is _module_apache, "the module's apache is not the one it started (it died?)"
    return a
