"""The end-to-end check can fail (issue 10): a test switch of the relay core
(RELAY_HTTPS_TEST_FLIP=up:N or down:N) flips one byte after its CRC32C was
taken, as a bug or a broken intermediary would. The check must catch it, on
every transport, and end the session with the documented error (client exit
11, `integrity check failed` in the client's message and in Apache's error
log) having delivered only bytes that were right.
"""
import os
import re

import pytest

import harness
from harness import run_stdio

EXIT_INTEGRITY = 11
FLIP_AT = 300000            # the byte flipped (not on a frame boundary)
SIZE = 1 << 20

TRANSPORTS = {
    "stream": ["--transport", "stream", "--http1.1"],
    "batch": ["--transport", "batch", "--http1.1"],
    "duplex": ["--transport", "duplex", "--http2"],
}


def _payload():
    # a pattern whose every 8 bytes are their offset: a wrong byte is named
    return b"".join((8 * i).to_bytes(8, "big") for i in range(SIZE // 8))


def _flipped_apache(apache_factory, module_so, targets, direction):
    return apache_factory.get("event", module=module_so, targets=targets,
                              env={"RELAY_HTTPS_TEST_FLIP": "%s:%d" % (direction, FLIP_AT)})


def _first_wrong(got, want):
    for i in range(min(len(got), len(want))):
        if got[i] != want[i]:
            return i
    return None


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("direction", ["up", "down"])
def test_flipped_byte_is_caught(apache_factory, module_so, targets, client_bin, tls,
                                transport, direction):
    a = _flipped_apache(apache_factory, module_so, targets, direction)
    mark = a.error_log_mark()
    payload = _payload()
    s = run_stdio(client_bin, a.relay_url, "echo", payload, cacert=tls["ca"], timeout=60,
                  extra_args=TRANSPORTS[transport] + ["-v"])
    err = s["stderr"]
    out = s["stdout"]
    assert s["rc"] == EXIT_INTEGRITY, (s["rc"], err[-3000:])
    assert "integrity check failed" in err, err[-3000:]
    # only right bytes reached the local side, and none from the flipped frame on
    wrong = _first_wrong(out, payload)
    assert wrong is None, "byte %d delivered wrong (of %d delivered)" % (wrong, len(out))
    assert len(out) <= FLIP_AT, "%d bytes delivered, the flipped one at %d among them" % (
        len(out), FLIP_AT)
    # the server logs it as an integrity failure, whoever found it
    text = harness.wait_for(
        lambda: (lambda t: t if "integrity check failed" in t else None)(a.error_log_text(mark)),
        15, what="integrity failure in the error log")
    assert text, a.error_log_tail(40, mark)
    what = "up bytes" if direction == "up" else "down bytes, found by the client"
    assert re.search(r"\[relay_https:error\].*integrity check failed.*%s" % re.escape(what),
                     text), a.error_log_tail(40, mark)


def test_unflipped_offsets_pass(apache_factory, module_so, targets, client_bin, tls):
    """The switch flips only the byte it names: a transfer shorter than it is
    intact (so the tests above fail because of the flip, not the switch)."""
    a = _flipped_apache(apache_factory, module_so, targets, "down")
    payload = _payload()[:FLIP_AT - 1000]
    s = run_stdio(client_bin, a.relay_url, "echo", payload, cacert=tls["ca"], timeout=60,
                  extra_args=TRANSPORTS["stream"])
    assert s["rc"] == 0, s["stderr"][-2000:]
    assert s["stdout"] == payload
