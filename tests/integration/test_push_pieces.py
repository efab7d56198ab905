"""A batch push (Content-Length) whose body the handler finds whole, in part
or not at all when the request starts: a small whole body goes to the core
with its PUSH line (mod_rh_push.c, read_early), a part read early goes to the
upload once the core took the push. Every way, each byte reaches the target
once and in order, and the answer's Relay-Offset counts them.
"""
import time

import pytest

import harness
from attack import Raw, frame, parse_frames, raw_request

ASYNC_CONF = "RelayAsync On\n"


def _pull_all(a, tok, want, timeout=10.0):
    """Batch long-polls from offset 0 until want bytes and the F frame came."""
    got, ack, end = b"", 0, time.monotonic() + timeout
    while time.monotonic() < end:
        r = raw_request(a.port, "POST", "/relay/echo/pull",
                        ["Relay-Session: " + tok, "Relay-Ack: %d" % ack, "Relay-Mode: batch"],
                        timeout=timeout)
        assert r.status == 200, r
        assert int(r.header("Relay-Offset")) == ack, (r.header("Relay-Offset"), ack)
        frames = parse_frames(r.body)
        data = b"".join(p for t, p in frames if t == b"D")
        got += data
        ack += len(data)
        if any(t == b"F" for t, _ in frames):
            return got
        assert not any(t == b"R" for t, _ in frames), frames
    raise AssertionError("pull: %d of %d bytes, no F within %.0f s" % (len(got), want, timeout))


def _open(a):
    r = raw_request(a.port, "POST", "/relay/echo/open", [])
    assert r.status == 201, r
    return r.header("Relay-Session")


@pytest.mark.parametrize("relay_async", [False, True], ids=["blocking", "async"])
@pytest.mark.parametrize("split", ["whole", "half", "none"])
def test_small_push_body_in_pieces(apache_factory, module_so, targets, mpm, split,
                                   relay_async):
    if relay_async and mpm != "event":
        pytest.skip("RelayAsync parks on the event MPM only")
    a = apache_factory.get(mpm, module=module_so, targets=targets,
                           extra_conf=ASYNC_CONF if relay_async else "")
    tok = _open(a)
    # offsets in the bytes, so a doubled or lost piece names where it went wrong
    payload = b"".join(b"%08d" % i for i in range(0, 4000, 8))
    first = frame(b"D", payload[:1500])
    second = frame(b"D", payload[1500:]) + frame(b"F")
    body = first + second
    cut = {"whole": len(body), "half": len(first) + 7, "none": 0}[split]
    c = Raw(a.port, timeout=10)
    try:
        c.request("POST", "/relay/echo/push", ["Relay-Session: " + tok, "Relay-Offset: 0"],
                  content_length=len(body))
        if cut:
            c.send(body[:cut])
        if cut < len(body):
            time.sleep(0.3)   # the handler started with part of the body, or none
            c.send(body[cut:])
        r = c.response(timeout=10)
    finally:
        c.close()
    assert r.status == 200, r
    assert int(r.header("Relay-Offset")) == len(payload), r.headers
    got = _pull_all(a, tok, len(payload))
    for i in range(min(len(got), len(payload))):
        if got[i] != payload[i]:
            raise AssertionError("first wrong byte at offset %d: %r, expected %r" %
                                 (i, got[i:i + 16], payload[i:i + 16]))
    assert len(got) == len(payload), "%d bytes back, %d sent" % (len(got), len(payload))


@pytest.mark.parametrize("relay_async", [False, True], ids=["blocking", "async"])
def test_small_push_over_h2(apache_factory, module_so, targets, relay_async):
    """The same through real curl over HTTP/2 (mod_http2 hands the body on from
    another thread: whole, in part or not yet when the handler starts)."""
    a = apache_factory.get("event", module=module_so, targets=targets,
                           extra_conf=ASYNC_CONF if relay_async else "")
    for round_ in range(5):
        tok = _open(a)
        payload = b"".join(b"%08d" % i for i in range(0, 2000 + 800 * round_, 8))
        body = frame(b"D", payload[:700]) + frame(b"D", payload[700:]) + frame(b"F")
        r = harness.curl(a.relay_url + "/echo/push", data=body, extra=["--http2"],
                         headers=["Relay-Session: " + tok, "Relay-Offset: 0"])
        assert r.status == 200, (r.status, r.body[:200])
        assert int(r.headers["relay-offset"]) == len(payload), r.headers
        got = _pull_all(a, tok, len(payload))
        assert got == payload, "round %d: %d bytes back of %d, first difference at %d" % (
            round_, len(got), len(payload),
            next((i for i, (x, y) in enumerate(zip(got, payload)) if x != y),
                 min(len(got), len(payload))))
    with open(a.access_log) as f:
        h2_pushes = [l for l in f if '"POST /relay/echo/push HTTP/2.0" 200' in l]
    assert len(h2_pushes) >= 5, "the pushes did not go over HTTP/2"
