"""The client as a daily tool (issue 14): a config file with three tunnels (TCP,
batch, a UNIX socket) in one process, credentials from the config file, .netrc,
the environment and a password prompt on a real pty, and secrets kept out of
argv (ps) and out of files others can read. Apache asks for Basic auth."""

import os
import pty
import re
import select
import signal
import socket
import stat
import subprocess
import time

import pytest

import harness
import intermediaries as im
from harness import EchoServer, pump, run_stdio, wait_for

MB = 1024 * 1024
USER, PASSWORD = "dailyuser", "d4ily-P4ss"
TARGETS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def echoes():
    servers = {name: EchoServer() for name in TARGETS}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def apache(apache_factory, module_so, echoes, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("daily"))
    harness.make_traversable(d)
    htpasswd = im.write_htpasswd(os.path.join(d, "htpasswd"), {USER: PASSWORD})
    targets = {name: "127.0.0.1:%d" % s.port for name, s in echoes.items()}
    conf = im.basic_auth_location_conf("/relay-auth", targets, htpasswd)
    return apache_factory.get("event", module=module_so, targets=targets, extra_conf=conf)


def _url(a):
    return a.base_url + "/relay-auth"


def _write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def _start(client_bin, args, env=None):
    p = subprocess.Popen([client_bin] + args, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True, env=env or im.clean_env())
    harness._register(p)
    return p


def _stderr_after(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return err.decode("utf-8", "replace")


def _listening(p, n, timeout=20):
    """Reads stderr until n 'listening on' lines came; returns the lines read."""
    lines, buf = [], b""
    deadline = time.monotonic() + timeout
    while sum("listening on" in l for l in lines) < n and time.monotonic() < deadline:
        if p.poll() is not None:
            break
        r, _, _ = select.select([p.stderr], [], [], 0.2)
        if r:
            chunk = os.read(p.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [l.decode("utf-8", "replace") for l in done]
    assert sum("listening on" in l for l in lines) >= n, \
        "exit %r; stderr:\n%s" % (p.poll(), "\n".join(lines))
    return lines


def _unix_echo(path, nbytes):
    """1 round of nbytes through a UNIX socket forward; returns (sent, received)."""
    data = os.urandom(nbytes)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    got = bytearray()
    view = memoryview(data)
    while view:
        n = s.send(view[:65536])
        view = view[n:]
        while True:
            r, _, _ = select.select([s], [], [], 0)
            if not r:
                break
            got += s.recv(1 << 20)
    s.shutdown(socket.SHUT_WR)
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    s.close()
    return data, bytes(got)


@pytest.mark.rh_timeout(120)
def test_config_file_three_tunnels(apache, client_bin, tls, echoes, tmp_path):
    """One process, three tunnels from a config file: each reaches its own target,
    the UNIX socket is 0600 and goes away at the end, SIGUSR1 names three routes,
    and the password (in the file only) is in no argv."""
    ports = [harness.free_port(), harness.free_port()]
    sock = str(tmp_path / "gamma.sock")
    cfg = _write(str(tmp_path / "relay.conf"), "\n".join([
        "# three tunnels, one server",
        "url = %s" % _url(apache),
        "user = %s:%s" % (USER, PASSWORD),
        "cacert = \"%s\"" % tls["ca"],
        "",
        "[alpha]",
        "listen = 127.0.0.1:%d" % ports[0],
        "[beta]",
        "listen = 127.0.0.1:%d" % ports[1],
        "transport = batch",
        "[gamma]",
        "listen = unix:%s" % sock,
        "",
    ]))
    before = {n: s.accepted for n, s in echoes.items()}
    p = _start(client_bin, ["forward", "-K", cfg, "-v"])
    try:
        _listening(p, 3)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            assert PASSWORD.encode() not in f.read()
        for port in ports:
            res = pump("127.0.0.1", port, nbytes=MB, timeout=60)
            assert res["error"] is None and res["recv_sha"] == res["sent_sha"], res
        sent, got = _unix_echo(sock, MB)
        assert got == sent, "unix socket tunnel: %d of %d bytes back" % (len(got), len(sent))
        for n in TARGETS:
            assert wait_for(lambda n=n: echoes[n].accepted == before[n] + 1, 10), \
                "%s: %d connections, want %d" % (n, echoes[n].accepted, before[n] + 1)
        p.send_signal(signal.SIGUSR1)
        time.sleep(1)
    finally:
        err = _stderr_after(p)
    routes = re.findall(r"stats: route (\w+) ", err)
    assert sorted(routes) == sorted(TARGETS), err[-3000:]
    assert re.search(r"beta #1 127\.0\.0\.1:\d+: transport: batch", err), err[-3000:]
    assert not os.path.exists(sock), "the UNIX socket was left behind"
    assert PASSWORD not in err


@pytest.mark.parametrize("mode,why", [
    (0o644, "holds secrets but others can read it (mode 644); chmod 600"),
    (0o620, "others can write it (mode 620)"),
])
def test_config_file_others_may_read_refused(client_bin, tmp_path, apache, mode, why):
    cfg = _write(str(tmp_path / "open.conf"),
                 "url = %s\nuser = %s:%s\n[alpha]\nlisten = 0\n" % (_url(apache), USER,
                                                                   PASSWORD), mode)
    r = subprocess.run([client_bin, "forward", "-K", cfg], capture_output=True, text=True,
                       timeout=20, env=im.clean_env())
    assert r.returncode == 2, r
    assert why in r.stderr, r.stderr
    assert "listening" not in r.stderr


def test_netrc_file(apache, client_bin, tls, tmp_path):
    """curl's .netrc: the entry of the URL's host gives user and password; a
    wrong password there is the server's 401 (exit 5) at start."""
    good = _write(str(tmp_path / "netrc"),
                  "machine other.example login x password y\n"
                  "machine 127.0.0.1\n  login %s\n  password \"%s\"\n" % (USER, PASSWORD))
    payload = os.urandom(256 * 1024)
    res = run_stdio(client_bin, _url(apache), "alpha", payload,
                    cacert=tls["ca"], extra_args=["--netrc-file", good])
    assert res["rc"] == 0 and res["stdout"] == payload, res["stderr"]
    bad = _write(str(tmp_path / "netrc-bad"),
                 "default login %s password wrong\n" % USER)
    r = subprocess.run([client_bin, "forward", "-L", "127.0.0.1:0", "--cacert", tls["ca"],
                        "--netrc-file", bad, _url(apache), "alpha"],
                       capture_output=True, text=True, timeout=30, env=im.clean_env())
    assert r.returncode == 5, r
    assert "listening" not in r.stderr


def test_environment_credentials(apache, client_bin, tls):
    env = im.clean_env(RELAY_HTTPS_USER=USER, RELAY_HTTPS_PASSWORD=PASSWORD)
    payload = os.urandom(128 * 1024)
    res = run_stdio(client_bin, _url(apache), "beta", payload, cacert=tls["ca"], env=env)
    assert res["rc"] == 0 and res["stdout"] == payload, res["stderr"]


def test_user_without_password_and_no_terminal(apache, client_bin, tls):
    r = subprocess.run([client_bin, "forward", "-L", "127.0.0.1:0", "--cacert", tls["ca"],
                        "-u", USER, _url(apache), "alpha"], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL, start_new_session=True,
                       env=im.clean_env())
    assert r.returncode == 2, r
    assert "-u %s: no password given and no terminal to ask for it" % USER in r.stderr


@pytest.mark.rh_timeout(60)
def test_password_prompt_on_a_pty(apache, client_bin, tls):
    """-u USER on a terminal: the prompt comes on the tty, what is typed is not
    echoed, and the forward then works with it."""
    port = harness.free_port()
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(client_bin, [client_bin, "forward", "-L", "127.0.0.1:%d" % port, "--cacert",
                               tls["ca"], "-u", USER, _url(apache), "gamma"], im.clean_env())
    out = b""
    try:
        deadline = time.monotonic() + 15
        while b"password for user" not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 4096)
        assert b"Enter server password for user '%s'" % USER.encode() in out, out
        os.write(fd, PASSWORD.encode() + b"\n")
        while b"listening on" not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 4096)
        assert b"listening on" in out, out
        assert PASSWORD.encode() not in out, "the password was echoed"
        res = pump("127.0.0.1", port, nbytes=256 * 1024, timeout=30)
        assert res["error"] is None and res["recv_sha"] == res["sent_sha"], res
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_proxy_password_masked_in_ps(apache, client_bin, tls):
    """A password in -x's URL is masked in argv as -u's is (ps shows argv)."""
    p = _start(client_bin, ["forward", "-L", "127.0.0.1:0", "--retry-start", "--cacert",
                            tls["ca"], "-x", "http://bob:pr0xy-secret@127.0.0.1:9",
                            "-u", "%s:%s" % (USER, PASSWORD), _url(apache), "alpha"])
    try:
        assert wait_for(lambda: p.poll() is None and
                        b"*" in open("/proc/%d/cmdline" % p.pid, "rb").read(), 5)
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            argv = f.read().split(b"\0")
    finally:
        err = _stderr_after(p)
    assert b"http://bob:************@127.0.0.1:9" in argv, argv
    assert ("%s:%s" % (USER, "*" * len(PASSWORD))).encode() in argv, argv
    assert not any(b"pr0xy-secret" in a or PASSWORD.encode() in a for a in argv)
    assert "pr0xy-secret" not in err and PASSWORD not in err


@pytest.mark.rh_timeout(180)
def test_routes_of_two_http_versions_share_no_busy_connection(apache, client_bin, tls,
                                                              tmp_path):
    """Two routes of one process to one server, one over HTTP/1.1 (batch: many
    short requests) and one over HTTP/2: libcurl before 8.5.0 marks the whole
    host multiplexable once an h2 connection exists and then puts an HTTP/1.1
    transfer on a connection another transfer still uses (HTTP/0.9 answers,
    wrong bytes). Every tunnel of both routes must carry its bytes intact."""
    ports = [harness.free_port(), harness.free_port()]
    cfg = _write(str(tmp_path / "mixed.conf"), "\n".join([
        "url = %s" % _url(apache),
        "user = %s:%s" % (USER, PASSWORD),
        "cacert = \"%s\"" % tls["ca"],
        "[alpha]",
        "listen = 127.0.0.1:%d" % ports[0],
        "http1.1",
        "transport = batch",
        "[beta]",
        "listen = 127.0.0.1:%d" % ports[1],
        "http2",
        "",
    ]))
    p = _start(client_bin, ["forward", "-K", cfg])
    results = []
    try:
        _listening(p, 2)
        import concurrent.futures as cf
        with cf.ThreadPoolExecutor(max_workers=8) as ex:
            futs = [ex.submit(pump, "127.0.0.1", ports[i % 2], nbytes=256 * 1024,
                              timeout=90) for i in range(24)]
            results = [f.result() for f in futs]
    finally:
        err = _stderr_after(p)
    bad = [(i, r) for i, r in enumerate(results)
           if r["error"] is not None or r["recv_sha"] != r["sent_sha"]]
    assert not bad, "%d of %d tunnels failed: %r\n%s" % (len(bad), len(results),
                                                         bad[:3], err[-3000:])
    assert "HTTP/0.9" not in err, err[-3000:]
