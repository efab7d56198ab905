"""A client that runs late must not blame the server (docs/BENCHMARKS.md, item
18: thousands of idle tunnels in one forward).

A loaded `relay-https forward` reads its sockets late. Heartbeats the server
sent on time then wait in the kernel, and a tunnel whose pull showed nothing
for three busy heartbeat intervals was judged silent and resumed on a new
connection, though its bytes were there to read. With thousands of tunnels on
a loaded machine every such resume made the client later still, until most
tunnels no longer echoed (and said nothing). Here the lateness is made
exactly: the forward is stopped (SIGSTOP) for six seconds while 320 stream
tunnels are busy, so that on SIGCONT more sockets are ready than one batch of
the loop's events takes (RHC_EVENTS_MAX, 256). Every tunnel must go on on its
own connection: no resume, and every tunnel echoes after."""

import os
import signal
import socket
import time

import pytest

import harness
from harness import Forward

EVENT_CONF = """
<IfModule mpm_event_module>
    StartServers 2
    ServerLimit 8
    ThreadsPerChild 8
    MaxRequestWorkers 16
    MinSpareThreads 1
    MaxSpareThreads 16
    AsyncRequestWorkerFactor 200
</IfModule>
RelayAsync On
RelayMaxWorkers 4000
RelayMaxSessions 2048
"""

N_TUNNELS = 320     # more than RHC_EVENTS_MAX (256) pulls ready at once
STOP_S = 6.0        # twice the busy silence limit (3 s: three 1 s heartbeats)


def _sockets_with_bytes_waiting(server_port):
    """Connections to server_port (the client's ends, on loopback) with bytes
    in their receive queue: /proc/net/tcp's rx_queue."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            col = line.split()
            rem_port = int(col[2].split(":")[1], 16)
            rx = int(col[4].split(":")[1], 16)
            if col[3] == "01" and rem_port == server_port and rx > 0:
                n += 1
    return n


@pytest.fixture
def event_apache(apache_factory, module_so, targets):
    return apache_factory.get("event", module=module_so, targets=targets,
                              extra_conf=EVENT_CONF)


@pytest.mark.rh_timeout(180)
def test_a_stopped_client_resumes_no_tunnel_whose_heartbeats_wait(event_apache, client_bin,
                                                                  tls):
    a = event_apache
    with Forward(client_bin, a.relay_url, "echo", cacert=tls["ca"], verbose=True,
                 extra_args=["--http1.1", "--transport", "stream"]) as fw:
        socks = [socket.create_connection(("127.0.0.1", fw.port), timeout=60)
                 for _ in range(N_TUNNELS)]
        try:
            harness.echo_all(socks, b"open")
            harness.echo_all(socks, b"busy")     # every tunnel busy: a heartbeat a second
            os.kill(fw.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(STOP_S)
                waiting = _sockets_with_bytes_waiting(a.port)
            finally:
                os.kill(fw.proc.pid, signal.SIGCONT)
            time.sleep(2.0)
            harness.echo_all(socks, b"after")
        finally:
            for s in socks:
                s.close()
        resumed = [l for l in fw.lines() if "nothing from the server" in l]
    # the premise: the server's heartbeats were there to read, in more sockets
    # than one batch of events takes
    assert waiting > 256, "only %d of the client's sockets had bytes waiting" % waiting
    assert not resumed, ("%d tunnels judged silent though their heartbeats waited in "
                         "the socket, e.g. %s" % (len(resumed), resumed[:2]))
