"""How `relay-https stdio` ends on a signal (issue 14): a signal after the local
side closed is the end ssh asks for (quiet, exit 0, the session closed cleanly
when the target ends too); a signal while the local side still talks is an
interruption (a message, exit 1). test_ssh.py does the same with real ssh."""

import os
import signal
import subprocess
import threading
import time

import pytest

import harness
import intermediaries as im

CLEAN = harness.SESSION_CLEAN_END


class SilentServer(harness.ResetServer):
    """Accepts connections and keeps them open, reading and ignoring every byte
    and the end of them: a target whose end never comes."""

    def __init__(self):
        self.conns = []
        super().__init__(delay=0)

    def _reset(self, c):        # instead of the reset: hold it
        self.conns.append(c)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass

    def stop(self):
        super().stop()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def silent_server():
    s = SilentServer()
    yield s
    s.stop()


@pytest.fixture
def apache(apache_factory, module_so, targets, silent_server):
    t = dict(targets, silent="127.0.0.1:%d" % silent_server.port)
    return apache_factory.get("event", module=module_so, targets=t)


def start(client_bin, apache, tls, target):
    cmd = [client_bin, "stdio", "--cacert", tls["ca"], apache.relay_url, target]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True, env=im.clean_env())
    harness._register(p)
    return p


def wait_opened(apache, mark, timeout=10):
    ok = harness.wait_for(lambda: apache.sessions(mark)[0], timeout)
    assert ok, "no session opened:\n%s" % apache.error_log_tail(20, mark)
    return ok[0]


def end_reason(apache, mark, sid, timeout=10):
    harness.wait_for(lambda: sid in harness.session_ends(apache, mark), timeout)
    return harness.session_ends(apache, mark).get(sid)


def hang_up(p):
    """What ssh does at its end: close both pipes, SIGHUP at once; then finish."""
    p.stdin.close()
    p.stdout.close()
    p.send_signal(signal.SIGHUP)
    return finish(p)


def finish(p, timeout=15):
    """Waits for the exit; returns (exit code, seconds, stderr)."""
    t0 = time.monotonic()
    try:
        rc = p.wait(timeout=timeout)
    finally:
        harness.kill_proc(p)
    took = time.monotonic() - t0
    return rc, took, p.stderr.read().decode(errors="replace")


@pytest.mark.rh_timeout(60)
def test_signal_after_both_pipes_closed_is_a_clean_end(apache, client_bin, tls):
    """What ssh does: close stdin and stdout, SIGHUP at once. The echo target ends
    when it sees the F: exit 0, nothing said, a clean end on the server."""
    mark = apache.error_log_mark()
    p = start(client_bin, apache, tls, "echo")
    p.stdin.write(b"x" * 1000)
    p.stdin.flush()
    sid = wait_opened(apache, mark)
    time.sleep(0.3)
    rc, took, err = hang_up(p)
    assert rc == 0 and err == "", (rc, err)
    assert took < 2.0, "took %.2f s" % took
    assert end_reason(apache, mark, sid) == CLEAN


@pytest.mark.rh_timeout(60)
def test_signal_after_stdin_end_delivers_the_rest(apache, client_bin, tls):
    """stdin ends and SIGTERM comes while the echo is on its way back: the
    session may end on its own; every byte arrives, exit 0, nothing said. (64 KiB:
    open, echo and end fit the 1.5 s the client waits, on a loaded machine too.)"""
    data = os.urandom(64 * 1024)
    mark = apache.error_log_mark()
    p = start(client_bin, apache, tls, "echo")
    got = []
    reader = threading.Thread(target=lambda: got.append(p.stdout.read()), daemon=True)
    reader.start()
    p.stdin.write(data)
    p.stdin.flush()
    sid = wait_opened(apache, mark)    # (the handlers are set by then)
    p.stdin.close()
    p.send_signal(signal.SIGTERM)
    rc, took, err = finish(p)
    reader.join(5)
    assert rc == 0 and err == "", (rc, err)
    assert got and got[0] == data, "got %d of %d bytes" % (len(got[0]) if got else 0, len(data))
    assert end_reason(apache, mark, sid) == CLEAN


@pytest.mark.rh_timeout(60)
def test_signal_while_stdin_open_interrupts(apache, client_bin, tls):
    """SIGINT while stdin is open: an interruption, said so, exit 1."""
    mark = apache.error_log_mark()
    p = start(client_bin, apache, tls, "echo")
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    p.stdin.write(b"y" * 1000)
    p.stdin.flush()
    wait_opened(apache, mark)
    p.send_signal(signal.SIGINT)
    rc, took, err = finish(p)
    assert rc == 1, (rc, err)
    assert "stopped by a signal" in err, err


@pytest.mark.rh_timeout(60)
def test_signal_after_stdin_end_target_silent(apache, client_bin, tls):
    """stdin ended but stdout is still read, and the target never ends: after
    the bounded wait that is an interruption (bytes may be missing): exit 1."""
    mark = apache.error_log_mark()
    p = start(client_bin, apache, tls, "silent")
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    wait_opened(apache, mark)
    p.stdin.close()
    time.sleep(0.3)
    p.send_signal(signal.SIGHUP)
    rc, took, err = finish(p)
    assert rc == 1 and "stopped by a signal" in err, (rc, err)
    assert 1.0 < took < 4.0, "took %.2f s" % took


@pytest.mark.rh_timeout(60)
def test_signal_after_both_closed_target_silent(apache, client_bin, tls):
    """Both pipes closed and the target never ends: nothing is left to deliver,
    so the tunnel ends quietly with 0 after the bounded wait; the server resets
    the unfinished session."""
    mark = apache.error_log_mark()
    p = start(client_bin, apache, tls, "silent")
    sid = wait_opened(apache, mark)
    rc, took, err = hang_up(p)
    assert rc == 0 and err == "", (rc, err)
    assert took < 2.5, "took %.2f s" % took
    assert end_reason(apache, mark, sid) not in (None, CLEAN)
