"""Real intermediaries for the integration tests: squid, nginx, haproxy.

Each one runs as its own instance from a generated configuration in a temporary
directory, listens on a free 127.0.0.1 port, logs into that directory, is started in
the foreground (its own process group, registered with the harness so that it is
killed at exit) and stopped at teardown.  Every wait is bounded.

Also: Apache configuration snippets (a plain-HTTP vhost, a Basic-auth location, a
client-certificate vhost, a log of Relay-Mode), password files, client certificates,
and helpers that read the client's -v output.
"""

import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time

import harness

SQUID = os.environ.get("RH_SQUID", "/usr/sbin/squid")
SQUID_NCSA_AUTH = os.environ.get("RH_SQUID_NCSA_AUTH", "/usr/lib/squid/basic_ncsa_auth")
NGINX = os.environ.get("RH_NGINX", "/usr/sbin/nginx")
HAPROXY = os.environ.get("RH_HAPROXY", "/usr/sbin/haproxy")

# The proxy environment variables a client may pick up; tests that do not want a proxy
# remove them all (so that the developer's own settings never leak into a test).
PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
             "ALL_PROXY", "no_proxy", "NO_PROXY")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV}
    env.update(extra)
    return env


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path, n=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError:
        return "(no %s)" % path


def _chown_tree(path, user):
    for dirpath, dirnames, filenames in os.walk(path):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            try:
                shutil.chown(n, user, user)
            except (LookupError, OSError):
                pass


class Daemon:
    """A foreground server process with a generated config in its own directory."""

    name = "daemon"
    host = "127.0.0.1"          # where it listens (a subclass may take another loopback)

    def __init__(self, root):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = harness.free_port()
        self.proc = None
        self.stdout_path = os.path.join(self.root, "stdout.log")
        self._out = None

    # subclasses: write_config(), command(), log_paths()
    def log_paths(self):
        return [self.stdout_path]

    def describe(self):
        parts = ["%s on %s:%d (config %s)" % (self.name, self.host, self.port, self.conf_path)]
        for p in self.log_paths():
            parts.append("--- %s ---\n%s" % (p, _tail(p)))
        return "\n".join(parts)

    def start(self, timeout=30):
        self.write_config()
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        harness._register(self.proc)
        ok = harness.wait_for(lambda: self.proc.poll() is not None
                              or _port_open(self.port, self.host), timeout, interval=0.1)
        if not ok or self.proc.poll() is not None:
            rc = self.proc.poll()
            self.stop()
            raise AssertionError("%s did not listen on %s:%d within %ss (exit code %r)\n"
                                 "--- config ---\n%s\n%s"
                                 % (self.name, self.host, self.port, timeout, rc,
                                    harness._read(self.conf_path), self.describe()))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=10):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # helpers (squid's auth helpers, nginx workers) share the process group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        harness._unregister(self.proc)
        if self._out:
            self._out.close()
            self._out = None
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# squid: forward proxy (CONNECT and plain HTTP), optional Basic proxy auth
# --------------------------------------------------------------------------

class Squid(Daemon):
    name = "squid"

    def __init__(self, root, connect_ports=(), auth=None, run_user="proxy"):
        """connect_ports: the TLS ports CONNECT may reach (SSL_ports);
        auth: (user, password) to require Basic proxy authentication."""
        super().__init__(root)
        self.connect_ports = list(connect_ports)
        self.auth = auth
        self.run_user = run_user if os.getuid() == 0 else None
        self.conf_path = os.path.join(self.root, "squid.conf")
        self.access_log = os.path.join(self.root, "access.log")
        self.cache_log = os.path.join(self.root, "cache.log")
        self.passwd = os.path.join(self.root, "passwd")

    def log_paths(self):
        return [self.cache_log, self.access_log, self.stdout_path]

    def write_config(self):
        L = []
        add = L.append
        add("# generated by tests/integration/intermediaries.py")
        add("http_port 127.0.0.1:%d" % self.port)
        add("visible_hostname rh-test-squid")
        add("pid_filename %s/squid.pid" % self.root)
        add("cache_log %s" % self.cache_log)
        add("access_log stdio:%s" % self.access_log)
        add("cache_store_log none")
        add("logfile_rotate 0")
        add("coredump_dir %s" % self.root)
        add("netdb_filename none")
        add("pinger_enable off")
        add("cache deny all")
        add("cache_mem 8 MB")
        add("shutdown_lifetime 1 seconds")
        add("max_filedescriptors 4096")
        if self.run_user:
            add("cache_effective_user %s" % self.run_user)
        # CONNECT only to the test's TLS ports (not 443 here), like SSL_ports on a stock squid
        add("acl rh_ssl_ports port %s" % (" ".join(str(p) for p in self.connect_ports) or "443"))
        add("acl rh_safe_ports port 80 443 1025-65535")
        add("acl rh_connect method CONNECT")
        add("acl rh_localhost src 127.0.0.1/32")
        add("http_access deny !rh_safe_ports")
        add("http_access deny rh_connect !rh_ssl_ports")
        if self.auth:
            user, pw = self.auth
            write_htpasswd(self.passwd, {user: pw})
            add("auth_param basic program %s %s" % (SQUID_NCSA_AUTH, self.passwd))
            add("auth_param basic children 2 startup=1 idle=1")
            add("auth_param basic realm rh-test-proxy")
            add("auth_param basic credentialsttl 1 hour")
            add("acl rh_authed proxy_auth REQUIRED")
            add("http_access deny !rh_authed")
        add("http_access allow rh_localhost")
        add("http_access deny all")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(L) + "\n")
        if self.run_user:
            harness.make_traversable(self.root)
            _chown_tree(self.root, self.run_user)

    def command(self):
        return [SQUID, "-N", "-d", "1", "-f", self.conf_path]

    def access_lines(self):
        try:
            with open(self.access_log, "r", errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


# --------------------------------------------------------------------------
# nginx: reverse proxy in front of Apache's TLS port
# --------------------------------------------------------------------------

class Nginx(Daemon):
    name = "nginx"

    def __init__(self, root, upstream_port, read_timeout=None, send_timeout=None,
                 ignore_accel_buffering=False, extra_location="", upstream_scheme="https"):
        """A buffering reverse proxy (proxy_buffering on, proxy_request_buffering on)
        listening on plain HTTP and proxying to https://127.0.0.1:upstream_port
        (upstream_scheme "http": to a plain HTTP port).

        ignore_accel_buffering: also ignore the module's `X-Accel-Buffering: no`, so
        that nginx buffers responses too (a proxy that buffers both directions)."""
        super().__init__(root)
        self.upstream_port = upstream_port
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout
        self.ignore_accel_buffering = ignore_accel_buffering
        self.extra_location = extra_location
        self.upstream_scheme = upstream_scheme
        self.conf_path = os.path.join(self.root, "nginx.conf")
        self.error_log = os.path.join(self.root, "error.log")
        self.access_log = os.path.join(self.root, "access.log")

    def log_paths(self):
        return [self.error_log, self.access_log, self.stdout_path]

    def write_config(self):
        r = self.root
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(r, "tmp", d), exist_ok=True)
            os.chmod(os.path.join(r, "tmp", d), 0o777)
        os.chmod(os.path.join(r, "tmp"), 0o755)
        harness.make_traversable(os.path.join(r, "tmp"))
        L = []
        add = L.append
        add("# generated by tests/integration/intermediaries.py")
        add("daemon off;")
        add("worker_processes 1;")
        add("pid %s/nginx.pid;" % r)
        add("error_log %s info;" % self.error_log)
        add("events { worker_connections 1024; }")
        add("http {")
        add("    access_log %s;" % self.access_log)
        add("    client_body_temp_path %s/tmp/body;" % r)
        add("    proxy_temp_path %s/tmp/proxy;" % r)
        add("    fastcgi_temp_path %s/tmp/fastcgi;" % r)
        add("    uwsgi_temp_path %s/tmp/uwsgi;" % r)
        add("    scgi_temp_path %s/tmp/scgi;" % r)
        add("    upstream apache {")
        add("        server 127.0.0.1:%d;" % self.upstream_port)
        add("        keepalive 16;")
        add("    }")
        add("    server {")
        add("        listen 127.0.0.1:%d;" % self.port)
        add("        location / {")
        add("            proxy_pass %s://apache;" % self.upstream_scheme)
        add("            proxy_http_version 1.1;")
        add('            proxy_set_header Connection "";')
        add("            proxy_set_header Host $http_host;")
        add("            proxy_ssl_verify off;")
        add("            proxy_buffering on;")
        add("            proxy_request_buffering on;")
        if self.ignore_accel_buffering:
            add("            proxy_ignore_headers X-Accel-Buffering;")
        if self.read_timeout:
            add("            proxy_read_timeout %ds;" % self.read_timeout)
        if self.send_timeout:
            add("            proxy_send_timeout %ds;" % self.send_timeout)
        if self.extra_location:
            add(self.extra_location)
        add("        }")
        add("    }")
        add("}")
        with open(self.conf_path, "w") as f:
            f.write("\n".join(L) + "\n")

    def command(self):
        return [NGINX, "-p", self.root + "/", "-c", self.conf_path, "-e", self.error_log]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


# --------------------------------------------------------------------------
# haproxy: HTTP-mode reverse proxy that cuts anything idle for 30 s
# --------------------------------------------------------------------------

class HAProxy(Daemon):
    name = "haproxy"

    def __init__(self, root, upstream_port, timeout_s=30, hold_responses_s=None,
                 no_delay=False):
        """hold_responses_s: `http-response wait-for-body`: hold every response until its
        body is complete, haproxy's buffer is full, or that many seconds passed (a proxy
        that scans or buffers whole responses).  no_delay: `option http-no-delay`."""
        super().__init__(root)
        self.upstream_port = upstream_port
        self.timeout_s = timeout_s
        self.hold_responses_s = hold_responses_s
        self.no_delay = no_delay
        self.conf_path = os.path.join(self.root, "haproxy.cfg")
        self.log_path = os.path.join(self.root, "haproxy.log")   # stdout/stderr

    def log_paths(self):
        return [self.stdout_path]

    def write_config(self):
        t = self.timeout_s
        L = [
            "# generated by tests/integration/intermediaries.py",
            "global",
            "    pidfile %s/haproxy.pid" % self.root,
            "    maxconn 1000",
            "    log stderr format short local0 info",
            "defaults",
            "    mode http",
            "    log global",
            "    option httplog",
            "    timeout connect 5s",
            "    timeout client %ds" % t,
            "    timeout server %ds" % t,
            "    timeout http-request %ds" % t,
            "    timeout http-keep-alive 10s",
        ]
        if self.no_delay:
            L.append("    option http-no-delay")
        L += [
            "frontend fe",
            "    bind 127.0.0.1:%d" % self.port,
            "    default_backend be",
            "backend be",
        ]
        if self.hold_responses_s:
            L.append("    http-response wait-for-body time %ds at-least 100m"
                     % self.hold_responses_s)
        L.append("    server apache 127.0.0.1:%d ssl verify none alpn http/1.1"
                 % self.upstream_port)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(L) + "\n")

    def command(self):
        return [HAPROXY, "-db", "-f", self.conf_path]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port


# --------------------------------------------------------------------------
# Credentials and certificates
# --------------------------------------------------------------------------

def write_htpasswd(path, users):
    """An htpasswd file ($apr1$ MD5, read by Apache's mod_authn_file and squid's
    basic_ncsa_auth), hashes made with `openssl passwd -apr1`."""
    lines = []
    for user, pw in users.items():
        h = subprocess.run([harness.OPENSSL, "passwd", "-apr1", pw], check=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=30).stdout.strip()
        lines.append("%s:%s" % (user, h))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def make_client_cert(directory, cn="relay-test-client"):
    """A client CA and a client certificate it signs (extendedKeyUsage clientAuth).

    Returns dict(ca=client CA cert (for SSLCACertificateFile), cert=, key=)."""
    os.makedirs(directory, exist_ok=True)
    p = lambda n: os.path.join(directory, n)
    run = lambda args: subprocess.run([harness.OPENSSL] + args, check=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      timeout=60)
    run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("client-ca.key"),
         "-out", p("client-ca.crt"), "-days", "3", "-subj", "/CN=mod_relay_https client CA"])
    run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("client.key"),
         "-out", p("client.csr"), "-subj", "/CN=%s" % cn])
    with open(p("client.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n")
    run(["x509", "-req", "-in", p("client.csr"), "-CA", p("client-ca.crt"),
         "-CAkey", p("client-ca.key"), "-CAcreateserial", "-out", p("client.crt"),
         "-days", "3", "-extfile", p("client.ext")])
    for n in ("client-ca.crt", "client.crt", "client.key"):
        os.chmod(p(n), 0o644)
    harness.make_traversable(directory)
    return {"ca": p("client-ca.crt"), "cert": p("client.crt"), "key": p("client.key")}


# --------------------------------------------------------------------------
# Apache configuration snippets (for ApacheFactory.get(extra_conf=...))
# --------------------------------------------------------------------------

# A log that tells the transports apart on the server side: the request line (duplex,
# push, pull), the protocol, and the Relay-Mode header (batch long-polls).
MODE_LOGFORMAT = '%P %{relay-session}n \\"%r\\" %>s mode=%{Relay-Mode}i'
MODE_LOG_RE = re.compile(r'^(\d+) (\S+) "([^"]*)" (\d{3}) mode=(\S+)$')


def mode_log_conf():
    return ('LogFormat "%s" relaymode\nCustomLog "logs/relay_mode.log" relaymode'
            % MODE_LOGFORMAT)


def mode_log_entries(apache):
    """[(pid, session, request line, status, Relay-Mode or '-')]"""
    out = []
    try:
        with open(os.path.join(apache.root, "logs", "relay_mode.log"), errors="replace") as f:
            for line in f:
                m = MODE_LOG_RE.match(line.rstrip("\n"))
                if m:
                    out.append((int(m.group(1)), m.group(2), m.group(3), int(m.group(4)),
                                m.group(5)))
    except OSError:
        pass
    return out


def plain_http_vhost_conf(port):
    """Apache also listens on plain HTTP; the server-wide <Location /relay> applies."""
    return "\n".join([
        "Listen 127.0.0.1:%d http" % port,
        "<VirtualHost 127.0.0.1:%d>" % port,
        "    ServerName 127.0.0.1",
        "    SSLEngine off",
        "    Protocols http/1.1",
        "</VirtualHost>",
    ])


def basic_auth_location_conf(path, targets, htpasswd):
    lines = ["<Location %s>" % path, "    SetHandler relay-https"]
    for name, addr in targets.items():
        lines.append("    RelayTarget %s %s" % (name, addr))
    lines += ["    AuthType Basic",
              '    AuthName "relay test"',
              '    AuthUserFile "%s"' % htpasswd,
              "    Require valid-user",
              "</Location>"]
    return "\n".join(lines)


def client_cert_vhost_conf(port, cert, key, client_ca, protocol=None):
    """A TLS vhost on its own port that requires a client certificate for everything
    (SSLVerifyClient require at vhost level: checked in the handshake)."""
    lines = ["Listen 127.0.0.1:%d https" % port,
             "<VirtualHost 127.0.0.1:%d>" % port,
             "    ServerName 127.0.0.1",
             "    SSLEngine on",
             '    SSLCertificateFile "%s"' % cert,
             '    SSLCertificateKeyFile "%s"' % key,
             '    SSLCACertificateFile "%s"' % client_ca,
             "    SSLVerifyClient require",
             "    SSLVerifyDepth 2"]
    if protocol:
        lines.append("    SSLProtocol %s" % protocol)
    lines += ["</VirtualHost>"]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The client's -v output
# --------------------------------------------------------------------------

TRANSPORTS = ("duplex", "stream", "batch")
_TRANSPORT_WORD = re.compile(r"\b(duplex|stream|batch)\b", re.I)
# "relay-https: #3 127.0.0.1:4711: transport: push stream, pull batch (why ...)"
_TRANSPORT_LINE = re.compile(r"(#\d+)?[^#]*?\btransport: (.*?)(?: \(|$)")
_T = r"(duplex|stream|batch)"


def transport_lines(lines):
    return [l for l in lines if _TRANSPORT_LINE.search(l) and "transport: " in l]


def session_transports(lines):
    """{session label ('#N', or '' when the line has none): [up, down]} from the -v lines
    'transport: X', 'transport: push X, pull Y', 'transport: push X -> Y',
    'transport: pull X -> Y', 'transport: X -> Y' (the reason in parentheses ignored)."""
    state = {}
    for l in lines:
        m = _TRANSPORT_LINE.search(l)
        if not m or "transport: " not in l:
            continue
        label, what = m.group(1) or "", m.group(2).strip().lower()
        cur = state.setdefault(label, [None, None])
        mm = re.fullmatch(_T, what)
        if mm:
            cur[0] = cur[1] = mm.group(1)
            continue
        mm = re.fullmatch(r"push %s, pull %s" % (_T, _T), what)
        if mm:
            cur[0], cur[1] = mm.group(1), mm.group(2)
            continue
        mm = re.fullmatch(r"(push|pull) %s -> %s" % (_T, _T), what)
        if mm:
            cur[0 if mm.group(1) == "push" else 1] = mm.group(3)
            continue
        mm = re.fullmatch(r"%s -> %s" % (_T, _T), what)
        if mm:
            cur[0] = cur[1] = mm.group(2)
            continue
        words = _TRANSPORT_WORD.findall(what)
        if words:                       # an unknown wording: the last name mentioned
            cur[0] = cur[1] = words[-1].lower()
    return state


def last_transport(lines):
    """The transport(s) of the last session the client reported on: 'batch', or
    'push X, pull Y' when the directions differ; None when -v says nothing."""
    state = session_transports(lines)
    if not state:
        return None
    last = None
    for l in lines:                     # the label of the last transport line
        m = _TRANSPORT_LINE.search(l)
        if m and "transport: " in l:
            last = m.group(1) or ""
    up, down = state[last]
    return up if up == down else "push %s, pull %s" % (up, down)


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------

def http_rtts(port, path="/index.html", n=20, host="127.0.0.1", timeout=10):
    """Round-trip times (s) of n GETs on one kept-alive plain-HTTP connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    out = []
    try:
        for _ in range(n + 2):
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            dt = time.perf_counter() - t0
            assert r.status == 200 and body, (r.status, body[:200])
            out.append(dt)
    finally:
        conn.close()
    return out[2:]      # the first two set up the connections (client and upstream)


def echo_rtts(port, n=20, warmup=3, timeout=30, host="127.0.0.1"):
    """Round-trip times (s) of n one-byte echoes on one connection to a local forward."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    try:
        for i in range(warmup + n):
            b = bytes([65 + i % 26])
            t0 = time.perf_counter()
            s.sendall(b)
            got = s.recv(1)
            dt = time.perf_counter() - t0
            assert got == b, "echo %d: sent %r, got %r" % (i, b, got)
            if i >= warmup:
                out.append(dt)
        s.shutdown(socket.SHUT_WR)
        rest = s.recv(16)
        assert rest == b"", rest
    finally:
        s.close()
    return out


def median_ms(values):
    return statistics.median(values) * 1000.0


def exchange(sock, payload, timeout=60):
    """On an open connection to an echo tunnel: send payload while reading; return the
    bytes read once len(payload) have come back (fewer on EOF or timeout, with a reason)."""
    import threading
    deadline = time.monotonic() + timeout
    errors = []

    def sender():
        try:
            mv = memoryview(payload)
            off = 0
            while off < len(mv):
                if time.monotonic() > deadline:
                    raise TimeoutError("send timed out after %d of %d bytes" % (off, len(mv)))
                try:
                    off += sock.send(mv[off:off + 65536])
                except socket.timeout:
                    continue
        except Exception as e:
            errors.append("send: %r" % (e,))

    old = sock.gettimeout()
    sock.settimeout(1.0)
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = bytearray()
    why = None
    try:
        while len(got) < len(payload):
            if time.monotonic() > deadline:
                why = "timed out after %ss" % timeout
                break
            try:
                b = sock.recv(min(262144, len(payload) - len(got)))
            except socket.timeout:
                continue
            except OSError as e:
                why = "recv: %r" % (e,)
                break
            if not b:
                why = "EOF (the tunnel closed the local connection)"
                break
            got += b
    finally:
        t.join(max(1.0, deadline - time.monotonic()))
        sock.settimeout(old)
    if errors:
        why = "; ".join(filter(None, [why] + errors))
    return bytes(got), why
