"""RelayNice: the relay's work runs at a lower CPU priority than the site.

The relay cores run at the site's nice value plus RelayNice, for good. While
a tunnel is open, the child thread that serves its pull (waiting on it) runs
niced too, where httpd's parent could let its children come back
(RLIMIT_NICE; root without CAP_SYS_RESOURCE, as in some containers, cannot:
RH2111 says so, and then no child thread is niced at all). Once the tunnel
ends every thread of every child is back at the site's value, so that no site
request is served by a thread the relay left niced. RelayNice 0 nices
nothing. Read from /proc/PID/task/TID/stat (field 19, nice) of the real
Apache."""

import socket
import time

import pytest

import harness
from harness import Forward


def _nice_of(pid, tid=None):
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path, "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[16])


def _thread_nices(a):
    """{(pid, tid): nice} of every thread of every Apache process but the cores."""
    cores = set(a.core_pids().values())
    out = {}
    for pid in a.pids():
        if pid in cores:
            continue
        try:
            for tid in harness.os.listdir("/proc/%d/task" % pid):
                out[(pid, int(tid))] = _nice_of(pid, int(tid))
        except OSError:
            continue
    return out


@pytest.mark.parametrize("mpm", ["event", "prefork"])
@pytest.mark.parametrize("nice", [7, 0])
def test_relay_threads_niced_and_given_back(apache_factory, module_so, targets, client_bin,
                                            tls, mpm, nice):
    a = apache_factory.get(mpm, module=module_so, targets=targets,
                           extra_conf="RelayNice %d\nRelayAsync Off\n" % nice)
    base = _nice_of(a.proc.pid)
    cores = a.core_pids()
    assert cores, "no relay core started:\n" + a.error_log_tail()
    for k, pid in cores.items():
        # the parent logs "core started" right after fork; the core nices
        # itself once it has dropped privileges, a moment later
        got = _nice_of(pid)
        deadline = time.monotonic() + 10
        while got != base + nice and time.monotonic() < deadline:
            time.sleep(0.05)
            got = _nice_of(pid)
        assert got == base + nice, "core %d: nice %d, wanted %d" % (k, got, base + nice)
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"],
                 extra_args=["--transport", "stream", "--http1.1"]) as fw:
        s = socket.create_connection(("127.0.0.1", fw.port), timeout=10)
        s.sendall(b"ping\n")
        assert s.recv(16) == b"ping\n"
        # the tunnel is open and idle: its pull waits on a child's thread
        niced = lambda: [k for k, v in _thread_nices(a).items() if v == base + nice]
        can = "RH2111" not in a.error_log_text()
        if nice and can:
            assert harness.wait_for(lambda: niced(), 5), (
                "no child thread at nice %d while a tunnel is open: %s"
                % (base + nice, sorted(set(_thread_nices(a).values()))))
        else:
            time.sleep(0.5)
            assert set(_thread_nices(a).values()) == {base}, (
                "a child thread niced although %s" % ("RelayNice is 0" if not nice else
                                                     "its child could not come back"))
        s.close()
    # the tunnel ended: its requests ended, their threads are the site's again
    back = lambda: set(_thread_nices(a).values()) == {base}
    assert harness.wait_for(back, 15), "threads still niced after the tunnel ended: %s" % (
        sorted(set(_thread_nices(a).values())))
    st, _, _ = harness.https_get(a.port, "/", timeout=5, cafile=tls["ca"])
    assert st == 200
