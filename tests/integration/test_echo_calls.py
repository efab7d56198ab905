"""The client's share of a small echo (issue 17): one-byte round trips through a
stream tunnel cost the client a fixed number of system calls, counted with
strace (counts, not time: the machine's load does not move them), and small
writes between bulk ones reach the target whole and in order, whatever the
client's send path does with a socket that fills (partial writes, EAGAIN)."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import Forward

STRACE = shutil.which("strace")


def _echo(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(len(data) - len(got))
        assert b, "the tunnel ended after %d of %d bytes" % (len(got), len(data))
        got += b
    return got


def _strace_calls(out):
    """Total calls from an `strace -c` summary."""
    for line in reversed(out.splitlines()):
        if line.strip().endswith("total"):
            f = line.split()
            return int(f[3])
    pytest.skip("strace could not count (ptrace not allowed?):\n%s" % out)


@pytest.mark.rh_timeout(120)
@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_stream_echo_client_calls(apache_factory, module_so, targets, client_bin, tls,
                                  tmp_path):
    """Before, a one-byte stream echo cost the client about 20 system calls
    (docs/BENCHMARKS.md, "Echo: the client's rounds"): the bytes went to curl
    only in the round after they were read, and the body paused only in a
    third round whose
    poll() returned for POLLOUT alone, each change of curl's interest an
    epoll_ctl. Now 11: a poll and an epoll_wait per wake, the local read, curl's
    look at the push's answer, the send; then the two reads of the TLS record,
    curl's look for more, the local write."""
    a = apache_factory.get("event", module=module_so, targets=targets)
    n = 300
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--transport", "stream", "--http1.1"]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
        try:
            for i in range(50):             # the tunnel up, its requests settled
                assert _echo(s, b"w") == b"w"
            out = str(tmp_path / "strace.txt")
            st = subprocess.Popen([STRACE, "-c", "-f", "-o", out, "-p", str(fw.proc.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)                 # attached
            for i in range(n):
                c = bytes([65 + i % 26])
                assert _echo(s, c) == c
            st.send_signal(signal.SIGINT)
            st.wait(timeout=30)
            with open(out) as f:
                summary = f.read()
        finally:
            s.close()
    calls = _strace_calls(summary)
    # one second of an idle tunnel costs a few calls (timers): well under one per echo
    assert calls <= 14 * n, "%.1f system calls per echo:\n%s" % (calls / n, summary)
    print("%.1f system calls per one-byte echo" % (calls / n))


@pytest.mark.rh_timeout(180)
@pytest.mark.parametrize("transport", ["stream", "batch"])
def test_small_writes_between_bulk(apache_factory, module_so, targets, client_bin, tls,
                                   transport):
    """Single bytes, then megabytes that fill the client's push socket (curl
    writes in part, meets EAGAIN), then single bytes again, echoed one after
    another: every byte comes back, in order. A body paused while curl still
    held bytes of it would never send them and an echo would hang here."""
    a = apache_factory.get("event", module=module_so, targets=targets)
    sizes = [1, 1, 3, 4 << 20, 1, 2, 1, 1 << 20, 7, 1, 3 << 20, 1]
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", transport, "--http1.1"]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=60)
        try:
            for k, size in enumerate(sizes):
                data = os.urandom(size)
                if size < 64:
                    assert _echo(s, data) == data, (k, size)
                    continue
                # bulk: write and read at once, so neither side waits on the other
                got = bytearray()
                sent = 0
                s.setblocking(False)
                t0 = time.monotonic()
                while len(got) < size:
                    assert time.monotonic() - t0 < 90, (k, size, sent, len(got),
                                                        fw.stderr_text())
                    if sent < size:
                        try:
                            sent += s.send(data[sent:sent + 262144])
                        except BlockingIOError:
                            pass
                    try:
                        b = s.recv(1 << 20)
                        assert b, "the tunnel ended after %d of %d bytes" % (len(got), size)
                        got += b
                    except BlockingIOError:
                        time.sleep(0.001)
                s.setblocking(True)
                s.settimeout(60)
                assert bytes(got) == data, (k, size)
        finally:
            s.close()


@pytest.mark.rh_timeout(90)
def test_quiet_acks_ride_in_the_push(apache_factory, module_so, targets, client_bin, tls):
    """A stream tunnel acknowledges down bytes once down is quiet (200 ms), so
    that the server frees what it keeps for a resume. That ack was a request of
    its own after every burst: an interactive session cost the server a request
    per keystroke echo, and a tunnel woken from the watch a third TLS
    connection. Now, while its push is open with every up byte confirmed, the
    ack is an A frame in the push body (docs/PROTOCOL.md, Resume). The server
    keeps at most RelayBufferSize + RelayResumeWindow (16 + 4 KiB here)
    unacknowledged:
    twelve 3 KiB echoes pass only if it read those frames, and no ack request
    is made."""
    conf = ("<Location /ackp>\n    SetHandler relay-https\n"
            "    RelayTarget echo %s\n    RelayBufferSize 16384\n"
            "    RelayResumeWindow 4096\n</Location>\n" % targets["echo"])
    a = apache_factory.get("event", module=module_so, targets=targets, extra_conf=conf)
    url = a.base_url + "/ackp"
    with Forward(client_bin, url, "echo", cacert=tls["ca"], verbose=False,
                 extra_args=["--transport", "stream", "--http1.1"]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=30)
        try:
            assert _echo(s, b"w") == b"w"
            time.sleep(0.5)         # its first ack, the push's connection up
            sid = [e[1] for e in a.relay_log_entries() if "/ackp/echo/open" in e[2]][-1]
            before = sum(1 for e in a.relay_log_entries()
                         if e[1] == sid and e[2].split()[1].endswith("/ack"))
            s.settimeout(5)
            for i in range(12):
                data = bytes([65 + i % 26]) * 3072
                assert _echo(s, data) == data, "echo %d" % i
                time.sleep(0.3)     # quiet: the ack goes
        finally:
            s.close()
    acks = sum(1 for e in a.relay_log_entries()
               if e[1] == sid and e[2].split()[1].endswith("/ack"))
    assert acks - before == 0, "%d ack requests for 12 quiet bursts" % (acks - before)
