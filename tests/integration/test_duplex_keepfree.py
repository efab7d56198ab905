"""A duplex's connections keep what they free while it runs (mod_rh_keepfree.c).

With MaxMemFree 64 APR unmapped every block mod_http2 and mod_ssl freed past
64 KiB, and a duplex moving bulk mapped and unmapped one per piece of its body
(docs/BENCHMARKS.md, "Duplex and MaxMemFree"). While a duplex runs, its stream
connection and the HTTP/2 connection under it keep up to 2 MiB freed
(RH2331), and give it back when the duplex ends (RH2332). Throughput is not
asserted here (docs/BENCHMARKS.md has the figures); what is asserted is that
the lift happens on both connections, is undone when the tunnel ends, leaves
every byte intact, and does not happen without MaxMemFree.
"""
import re

import pytest

import harness
import intermediaries as im
from harness import Forward, assert_sessions_closed, pump

MB = 1024 * 1024
LOG = "\nLogLevel warn relay_https:trace1"


def _duplex_echo(a, client_bin, tls, size, tunnels=1):
    mark = a.error_log_mark()
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "duplex"], env=im.clean_env()) as fw:
        for _ in range(tunnels):
            res = pump("127.0.0.1", fw.port, nbytes=size, timeout=120)
            assert res["error"] is None, (res, fw.stderr_text())
            assert res["received"] == res["sent"] == size, (res, fw.stderr_text())
            assert res["recv_sha"] == res["sent_sha"], res
        assert_sessions_closed(a, mark, timeout=15, min_opened=tunnels)
    return mark


def _lines(a, mark, tag, what):
    return [l for l in a.error_log_text(mark).splitlines()
            if tag in l and what in l]


@pytest.mark.rh_timeout(180)
def test_duplex_lifts_maxmemfree_and_gives_back(apache_factory, module_so, targets,
                                                client_bin, tls):
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf="MaxMemFree 64" + LOG)
    mark = _duplex_echo(a, client_bin, tls, 8 * MB, tunnels=2)

    def over():
        ok = (len(_lines(a, mark, "RH2332", "the HTTP/2 connection")) >= 1
              and len(_lines(a, mark, "RH2332", "the request's connection")) >= 2)
        return ok or None
    harness.wait_for(over, 15, interval=0.2)
    log = a.error_log_text(mark)
    show = "\n".join(l for l in log.splitlines() if "RH233" in l) or log[-3000:]
    lifted_h2 = _lines(a, mark, "RH2331", "the HTTP/2 connection")
    lifted_req = _lines(a, mark, "RH2331", "the request's connection")
    given_h2 = _lines(a, mark, "RH2332", "the HTTP/2 connection")
    given_req = _lines(a, mark, "RH2332", "the request's connection")
    # each tunnel's duplex: its stream's connection lifted and given back
    assert len(lifted_req) >= 2 and len(given_req) >= 2, show
    # the HTTP/2 connection's own thread followed: lifted while the duplex ran,
    # given back after it (on its next read, before the connection closed)
    assert lifted_h2 and given_h2, show
    assert all("up to 2048 KiB freed (MaxMemFree 64 KiB)" in l for l in lifted_h2 + lifted_req), show
    assert all("MaxMemFree 64 KiB again" in l for l in given_h2 + given_req), show
    # what was kept came back: blocks were given back after the bulk moved
    blocks = [int(m.group(1)) for l in given_h2 + given_req
              for m in [re.search(r"gave back (\d+) free blocks", l)] if m]
    assert blocks and max(blocks) > 0, show


@pytest.mark.rh_timeout(120)
def test_duplex_without_maxmemfree_lifts_nothing(apache_factory, module_so, targets,
                                                 client_bin, tls):
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=LOG)
    mark = _duplex_echo(a, client_bin, tls, 2 * MB)
    log = a.error_log_text(mark)
    assert "RH2331" not in log and "RH2332" not in log, log[-3000:]
