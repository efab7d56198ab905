"""Resume rules of the server (docs/PROTOCOL.md, Resume), spoken with real curl:
kept down bytes, pull takeover and rewind, idempotent retried pushes, the ack
request, and the linger after a clean end."""
import os
import time

import pytest

import harness
from harness import curl
from test_skeleton import frame, parse_frames, open_session


def _data(body):
    return b"".join(p for t, p in parse_frames(body) if t == b"D")


def _batch_pull(a, token, ack):
    return curl(a.relay_url + "/echo/pull",
                headers=["Relay-Session: " + token, "Relay-Ack: %d" % ack,
                         "Relay-Mode: batch"], max_time=40)


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("mpm", ["event"])
def test_resume_rules(relay_apache, mpm):
    a = relay_apache
    token, r = open_session(a.relay_url, headers=["Relay-Resume: 1"])
    assert r.header("Relay-Resume") == "1", r
    sess = ["Relay-Session: " + token]
    data = os.urandom(150000)

    # a push, then a retry that overlaps it: the overlap is dropped, not doubled
    p1 = curl(a.relay_url + "/echo/push", headers=sess + ["Relay-Offset: 0"],
              data=frame(b"D", data[:60000]) + frame(b"D", data[60000:100000]))
    assert p1.status == 200 and p1.header("Relay-Offset") == "100000", p1
    p2 = curl(a.relay_url + "/echo/push", headers=sess + ["Relay-Offset: 50000"],
              data=frame(b"D", data[50000:110000]) + frame(b"D", data[110000:]))
    assert p2.status == 200 and p2.header("Relay-Offset") == "150000", p2

    # everything comes back once, in order (the echo target saw no duplicate)
    got = b""
    deadline = time.time() + 20
    while len(got) < len(data) and time.time() < deadline:
        q = _batch_pull(a, token, 0)
        assert q.status == 200, q
        assert q.header("Relay-Offset") == "0", q   # nothing acknowledged: from 0 again
        got = _data(q.body)
    assert got == data

    # a pull that only acknowledges part rewinds to that offset
    q = _batch_pull(a, token, 70000)
    assert q.status == 200 and q.header("Relay-Offset") == "70000", q
    assert _data(q.body) == data[70000:]

    # the ack request frees kept bytes; below them nothing can be resumed
    k = curl(a.relay_url + "/echo/ack", headers=sess + ["Relay-Ack: 150000"])
    assert k.status == 204, k
    k = curl(a.relay_url + "/echo/ack", headers=sess + ["Relay-Ack: 150001"])
    assert k.status == 416 and b"mod_relay_https:" in k.body, k
    k = curl(a.relay_url + "/echo/ack", headers=sess)
    assert k.status == 400, k
    q = _batch_pull(a, token, 100000)
    assert q.status == 416, q

    c = curl(a.relay_url + "/echo/close", headers=sess)
    assert c.status == 204, c
    assert curl(a.relay_url + "/echo/ack", headers=sess + ["Relay-Ack: 0"]).status == 410


@pytest.mark.rh_timeout(90)
@pytest.mark.parametrize("mpm", ["event"])
def test_resume_final_bytes_after_clean_end(relay_apache, mpm):
    """Both directions finished: the session lingers, so a client that missed the
    tail (and the F) pulls it again; close then ends it cleanly."""
    a = relay_apache
    mark = a.error_log_mark()
    token, _ = open_session(a.relay_url, headers=["Relay-Resume: 1"])
    sess = ["Relay-Session: " + token]
    p = curl(a.relay_url + "/echo/push", headers=sess + ["Relay-Offset: 0"],
             data=frame(b"D", b"hello") + frame(b"F"))
    assert p.status == 200, p
    q = _batch_pull(a, token, 0)
    kinds = [t for t, _ in parse_frames(q.body)]
    assert q.status == 200 and kinds[-1] == b"F", (q, kinds)
    # as if that answer was lost: ask again
    q2 = _batch_pull(a, token, 0)
    assert q2.status == 200 and _data(q2.body) == b"hello", q2
    assert [t for t, _ in parse_frames(q2.body)][-1] == b"F"
    assert curl(a.relay_url + "/echo/close", headers=sess).status == 204
    sid = token[:16]
    assert harness.wait_for(lambda: sid in a.sessions(mark)[1], 5, interval=0.1)
    assert "closed by both ends" in a.error_log_tail(50, mark)
