"""Never a wrong byte on the paths of faultpaths.py (issue 10, issue 16): batch
through a real buffering nginx with the fault proxy behind it (between nginx and
Apache) or in front of it, and Apache restarted gracefully and its children
SIGKILLed meanwhile; `relay-https proxy` with 4 SOCKS5 connections at once; 3
SOCKS5 UDP associations at once (datagrams may be lost, never corrupted,
doubled, reordered or handed to another association). Seeds are fixed; a
failure prints the seed, the first wrong offset and the client's stderr tail.

bench/soak.py runs the same paths for as long as one likes (--transport
nginx-front,nginx-back,nginx-restart,socks,udp)."""

import pytest

import faultpaths
import harness
import intermediaries as im

MB = 1000 * 1000
MiB = 1024 * 1024
NBYTES = 8 * MiB
RATE = 2 * MB
NO_CUT = NBYTES / RATE
MAX_ELAPSED = 10 * NO_CUT
TIMEOUT = MAX_ELAPSED + 5
LIFE = {"min_life": 0.3, "max_life": 1.2}


@pytest.fixture(scope="module")
def udp_echo():
    e = faultpaths.UdpEcho()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def plain_port():
    return harness.free_port()


@pytest.fixture
def path_env(apache_factory, module_so, targets, echo_server, udp_echo, plain_port, tls,
             client_bin, tmp_path):
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=im.plain_http_vhost_conf(plain_port)
                           + faultpaths.apache_conf(echo_server.port, udp_echo.port))
    work = str(tmp_path)
    harness.make_traversable(work)
    return {"client": client_bin, "apache": a, "plain_port": plain_port, "ca": tls["ca"],
            "echo_port": echo_server.port, "udp_port": udp_echo.port, "work": work}


def _run(path, env, mode, seed, nbytes=NBYTES, rate=RATE):
    r = faultpaths.run_path(path, env, mode, seed, nbytes, rate, TIMEOUT, proxy_kw=LIFE,
                            max_elapsed=MAX_ELAPSED)
    print("%s/%s: %s" % (path, mode, r["report"]))
    assert r["ok"], r["message"]
    return r


def _said(r, words):
    return [l for l in r["lines"] if words in l]


@pytest.mark.rh_timeout(int(2 * TIMEOUT + 60))
def test_batch_through_nginx_cut_behind_it(path_env):
    """Connections between nginx and Apache reset in the middle of requests:
    nginx answers the push or pull it was carrying with its own 502 (an HTML
    page, not the module's words). That is a cut, not the tunnel's end (the
    client ended the tunnel on it: 7 of 10 nginx-back soak runs failed)."""
    r = _run("nginx-back", path_env, "rst", 1616)
    assert r["stats"]["faults"] > 0, r["proxy"]
    gw = _said(r, "from a gateway in front of the server")
    assert gw, ("no 502 of nginx was met, so the case was not exercised: %s"
                % "\n".join(r["lines"][-30:]))


@pytest.mark.rh_timeout(int(TIMEOUT + 60))
def test_open_through_nginx_cut_behind_it(path_env):
    """The open's request cut in its headers between nginx and Apache: nginx
    answers 502; the open goes again (the tunnel failed at once, the local
    connection closed with nothing echoed)."""
    r = _run("nginx-back", path_env, "cut_req_headers", 342004876)
    gw = _said(r, "open: HTTP 502 from a gateway")
    assert gw, ("the open met no 502 of nginx, so the case was not exercised: %s"
                % "\n".join(r["lines"][:30]))


@pytest.mark.rh_timeout(int(TIMEOUT + 60))
def test_batch_through_nginx_apache_restarted_and_children_killed(path_env):
    """nginx in front, its connections to the client cut, while Apache restarts
    gracefully and its children are SIGKILLed (nginx's 502s again)."""
    r = _run("nginx-restart", path_env, "fin", 2727)
    assert "graceful restarts" in r["report"], r["report"]


@pytest.mark.rh_timeout(int(TIMEOUT + 60))
def test_socks_connections_side_by_side_through_cuts(path_env):
    """4 SOCKS5 connections at once, each with a pattern range of its own:
    every byte back once, in order, on its own connection."""
    r = _run("socks", path_env, "mix", 3131)
    assert r["stats"]["faults"] > 0, r["proxy"]


@pytest.mark.rh_timeout(int(TIMEOUT + 60))
def test_udp_associations_through_cuts(path_env):
    """3 UDP associations at once through cuts: datagrams lost perhaps, but
    none corrupted, doubled, reordered or delivered to another association."""
    r = _run("udp", path_env, "mix", 4141, nbytes=NBYTES // 4, rate=RATE // 4)
    sent, got, wrong = r["datagrams"]
    assert sent > 0 and got > 0 and wrong == 0, r["report"]
    assert r["stats"]["faults"] > 0, r["proxy"]


def test_udp_checker_sees_a_misdelivered_datagram():
    """The UDP checker itself: a datagram of another association, one twice, one
    out of order and a corrupted one are each caught."""
    a = faultpaths._Assoc.__new__(faultpaths._Assoc)
    a.idx, a.hdr, a.sizes, a.last, a.got, a.got_bytes = 1, b"H" * 10, [5, 7, 9], -1, 0, 0
    b = faultpaths._Assoc.__new__(faultpaths._Assoc)
    b.idx = 2
    assert a.check(a.hdr + a.payload(0, 5)) is None
    assert "delivered to association 1" in a.check(a.hdr + b.payload(1, 7))
    assert "twice" in a.check(a.hdr + a.payload(0, 5))
    assert a.check(a.hdr + a.payload(2, 9)) is None
    assert "reordered" in a.check(a.hdr + a.payload(1, 7))
    bad = bytearray(a.payload(1, 7))
    bad[-1] ^= 1
    assert "corrupted" in a.check(a.hdr + bytes(bad))
