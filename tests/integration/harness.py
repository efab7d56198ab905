"""Integration-test harness for mod_relay_https.

Starts a real Debian apache2 with a generated configuration, a TCP echo backend,
the relay-https client, and moves random bytes through tunnels.

Everything that waits has a timeout, and every process started here is
registered so that it is killed at teardown (and at interpreter exit).
"""

import atexit
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

# --------------------------------------------------------------------------
# Paths and constants (adjust here, not in the tests)
# --------------------------------------------------------------------------

APACHE_BIN = os.environ.get("RH_APACHE_BIN", "/usr/sbin/apache2")

# ./configure --enable-sanitizers: the module and client are built with ASan and
# UBSan (make check sets RH_SANITIZERS=1). apache2 itself is not, so libasan is
# preloaded into it; every process writes its reports under SAN_DIR, which the
# test session checks at its end (conftest.py).
SANITIZERS = os.environ.get("RH_SANITIZERS") == "1"
SAN_DIR = os.environ.get("RH_SAN_DIR") or os.path.join(tempfile.gettempdir(),
                                                       "rh-sanitizers-%d" % os.getpid())


def sanitizer_setup():
    """With SANITIZERS: the report directory, and the environment every child
    process (apache2, the client) inherits. Returns the directory or None."""
    if not SANITIZERS:
        return None
    os.makedirs(SAN_DIR, exist_ok=True)
    os.chmod(SAN_DIR, 0o1777)       # apache's children run as www-data
    lib = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                         text=True).stdout.strip()
    if lib and os.path.isabs(lib):
        os.environ["RH_ASAN_PRELOAD"] = lib
    # leaks: httpd frees its pools at exit only in part, by design
    os.environ["ASAN_OPTIONS"] = "detect_leaks=0:log_path=%s/asan" % SAN_DIR
    os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=%s/ubsan" % SAN_DIR
    return SAN_DIR


def apache_env(extra=None):
    """The environment apache2 runs in: libasan preloaded in sanitizer builds,
    plus extra (a test switch of the relay core, say)."""
    env = dict(os.environ)
    if os.environ.get("RH_ASAN_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["RH_ASAN_PRELOAD"]
    env.update(extra or {})
    return env


def sanitizer_reports():
    """(file, text) of every report written so far."""
    out = []
    if SANITIZERS and os.path.isdir(SAN_DIR):
        for n in sorted(os.listdir(SAN_DIR)):
            out.append((n, _read(os.path.join(SAN_DIR, n))))
    return out
APACHE_MODULES = os.environ.get("RH_APACHE_MODULES", "/usr/lib/apache2/modules")
CURL = os.environ.get("RH_CURL", "/usr/bin/curl")
OPENSSL = os.environ.get("RH_OPENSSL", "/usr/bin/openssl")
MIME_TYPES = "/etc/mime.types"

MPMS = ("prefork", "worker", "event")

# The module logs, at `LogLevel relay_https:debug`, one line when a session is
# created and one when it is freed.  These two patterns are the only place the
# tests depend on their wording; group 1 must capture the 16-hex session id.
SESSION_OPEN_RE = re.compile(
    r"\[relay_https:[a-z0-9]+\].*\bsession ([0-9a-f]{16}) open(?:ed)?\b")
SESSION_CLOSED_RE = re.compile(
    r"\[relay_https:[a-z0-9]+\].*\bsession ([0-9a-f]{16}) (?:closed|freed)\b")

# ... and the core says why it freed it: "closed by both ends" for a clean end
# (both directions finished), anything else is a reset.
SESSION_END_RE = re.compile(
    r"\[relay_https:[a-z0-9]+\].*\bsession ([0-9a-f]{16}) closed \(([^)]*)\)")
SESSION_CLEAN_END = "closed by both ends"

# The module logs (at debug) the pid of its relay core process when it starts it.
CORE_STARTED_RE = re.compile(r"\[relay_https:[a-z0-9]+\].*relay core started, pid (\d+)")
# ... and which of several cores (RelayCoreProcesses) it is
CORE_INDEX_RE = re.compile(r"\[relay_https:[a-z0-9]+\].*relay core started, pid (\d+) "
                           r"\(core (\d+) of (\d+)\)")

# The access-log format that shows which child served which session's request.
RELAY_LOGFORMAT = '%P %{relay-session}n \\"%r\\" %>s'
RELAY_LOG_RE = re.compile(r'^(\d+) (\S+) "([^"]*)" (\d{3})$')

STATIC_BODY = "<html><body><h1>mod_relay_https test site</h1></body></html>\n"


def build_dir():
    """The build tree (RH_BUILD_DIR), default: the repository root."""
    d = os.environ.get("RH_BUILD_DIR")
    if d:
        return os.path.abspath(d)
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def module_path():
    return os.path.join(build_dir(), "mod_relay_https", ".libs", "mod_relay_https.so")


def client_path():
    return os.path.join(build_dir(), "client", "relay-https")


# --------------------------------------------------------------------------
# Process bookkeeping: everything we start gets killed at exit
# --------------------------------------------------------------------------

_live_procs = set()
_live_lock = threading.Lock()


def _register(proc):
    with _live_lock:
        _live_procs.add(proc)


def _unregister(proc):
    with _live_lock:
        _live_procs.discard(proc)


def kill_proc(proc, grace=5.0):
    """Terminate a Popen (and its process group when it leads one)."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.terminate()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    _unregister(proc)


@atexit.register
def _kill_everything():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        kill_proc(p, grace=2.0)
    for a in list(Apache.instances):
        try:
            a.stop()
        except Exception:
            pass


def echo_all(socks, tag):
    """A line through every tunnel of an echo target (all sent, then all read):
    each comes back."""
    for i, s in enumerate(socks):
        s.sendall(b"%s %05d\n" % (tag, i))
    for i, s in enumerate(socks):
        want = b"%s %05d\n" % (tag, i)
        got = b""
        while len(got) < len(want):
            chunk = s.recv(len(want) - len(got))
            assert chunk, "tunnel %d closed before its echo (%s)" % (i, tag)
            got += chunk
        assert got == want, (i, got)


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Poll predicate() until it returns a truthy value; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# --------------------------------------------------------------------------
# Ports, certificates
# --------------------------------------------------------------------------

def free_port():
    """A loopback TCP port that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory):
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost (openssl CLI).

    Returns (ca_cert, server_cert, server_key); clients use --cacert ca_cert."""
    os.makedirs(directory, exist_ok=True)
    p = lambda n: os.path.join(directory, n)
    run = lambda args: subprocess.run([OPENSSL] + args, check=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, timeout=60)
    run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"),
         "-out", p("ca.crt"), "-days", "3", "-subj", "/CN=mod_relay_https test CA"])
    run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("server.key"),
         "-out", p("server.csr"), "-subj", "/CN=127.0.0.1"])
    with open(p("server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(["x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
         "-CAcreateserial", "-out", p("server.crt"), "-days", "3", "-extfile", p("server.ext")])
    for n in ("ca.crt", "server.crt", "server.key"):
        os.chmod(p(n), 0o644)
    return p("ca.crt"), p("server.crt"), p("server.key")


def make_traversable(path):
    """Let www-data walk down to path (pytest's base temp dir is 0700)."""
    path = os.path.abspath(path)
    while path not in ("/", ""):
        try:
            st = os.stat(path)
            if st.st_uid == os.getuid():
                os.chmod(path, st.st_mode | 0o005)
        except OSError:
            pass
        path = os.path.dirname(path)


_RUN_BASE = []


def short_run_dir(path):
    """path, or a short directory in /tmp when path is long: the relay's
    socket lives there and a unix socket's name has at most 107 bytes (a
    long pytest tmp path made Apache refuse its graceful restart)."""
    if len(path) <= 48:
        return path
    if not _RUN_BASE:
        base = tempfile.mkdtemp(prefix="rh-run-")
        os.chmod(base, 0o755)
        atexit.register(shutil.rmtree, base, True)
        _RUN_BASE.append(base)
    return tempfile.mkdtemp(dir=_RUN_BASE[0])


def www_tmpdir(tmp_path_factory, name):
    """A new temporary directory (a str) that www-data may walk down to."""
    d = str(tmp_path_factory.mktemp(name))
    make_traversable(d)
    return d


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

def listener(backlog=256):
    """A TCP socket listening on a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


class EchoServer:
    """Threaded TCP echo server on 127.0.0.1.

    Half-close aware: when the peer shuts down its write side, every byte read
    so far is echoed, then the server shuts down its write side and closes.
    """

    def __init__(self):
        self.sock = listener()
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.finished = 0        # connections that ended with a clean half-close
        self.active = 0
        self.conns = set()
        self._stop = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.active += 1
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        clean = False
        try:
            c.settimeout(600)
            while True:
                data = c.recv(65536)
                if not data:
                    clean = True
                    break
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1
                if clean:
                    self.finished += 1
                self.conns.discard(c)

    def stop(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass


class ResetServer:
    """Accepts connections and resets them at once (RST: SO_LINGER 0, close)."""

    def __init__(self, delay=0.2):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.delay = delay
        self.accepted = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Timer(self.delay, self._reset, args=(c,)).start()

    @staticmethod
    def _reset(c):
        try:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        except OSError:
            pass

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds (None if it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------
# Apache
# --------------------------------------------------------------------------

class ApacheStartError(AssertionError):
    pass


class Apache:
    """One apache2 instance in its own directory, with its own config."""

    instances = set()
    used = []   # instances handed to the current test (for failure reports)

    def __init__(self, root, cert, key, mpm="event", module=None, targets=None,
                 keepalive=True, prefork_children=8, extra_conf="",
                 idle_location=True, log_level_debug=True, run_user=None,
                 port=None, env=None, wrap=None):
        assert mpm in MPMS, mpm
        self.root = os.path.abspath(root)
        self.cert, self.key = cert, key
        self.mpm = mpm
        self.module = module
        self.targets = targets or {}
        self.keepalive = keepalive
        self.prefork_children = prefork_children
        self.extra_conf = extra_conf
        self.idle_location = idle_location
        self.log_level_debug = log_level_debug
        if run_user is None and os.getuid() == 0:
            run_user = "www-data"
        self.run_user = run_user
        self.port = port or free_port()
        self.env = env
        self.wrap = wrap or []      # a command apache2 runs under (unshare, say)
        self.proc = None
        self.conf_path = os.path.join(self.root, "conf", "httpd.conf")
        self.error_log = os.path.join(self.root, "logs", "error.log")
        self.relay_log = os.path.join(self.root, "logs", "relay_access.log")
        self.access_log = os.path.join(self.root, "logs", "access.log")
        self.common_log = os.path.join(self.root, "logs", "access_common.log")
        self.docroot = os.path.join(self.root, "htdocs")
        self.run_dir = short_run_dir(os.path.join(self.root, "run"))
        self.lock_dir = os.path.join(self.root, "lock")
        self.leftovers = []
        self.exit_code = None

    # ---- URLs ----
    @property
    def base_url(self):
        return "https://127.0.0.1:%d" % self.port

    @property
    def relay_url(self):
        return self.base_url + "/relay"

    @property
    def idle_url(self):
        return self.base_url + "/idle"

    # ---- config ----
    def config_text(self, extra_locations=""):
        m = APACHE_MODULES
        lines = []
        add = lines.append
        add("# generated by tests/integration/harness.py")
        add('ServerRoot "%s"' % self.root)
        add("ServerName 127.0.0.1")
        add("Listen 127.0.0.1:%d https" % self.port)
        add('DefaultRuntimeDir "%s"' % self.run_dir)
        add('PidFile "%s/apache2.pid"' % self.run_dir)
        add("Mutex file:%s default" % self.lock_dir)
        add('ErrorLog "%s"' % self.error_log)
        add("LoadModule mpm_%s_module %s/mod_mpm_%s.so" % (self.mpm, m, self.mpm))
        for name, so in (("authz_core", "mod_authz_core"), ("authz_host", "mod_authz_host"),
                         ("authn_core", "mod_authn_core"), ("authn_file", "mod_authn_file"),
                         ("auth_basic", "mod_auth_basic"), ("authz_user", "mod_authz_user"),
                         ("mime", "mod_mime"), ("dir", "mod_dir"),
                         ("reqtimeout", "mod_reqtimeout"), ("status", "mod_status"),
                         ("socache_shmcb", "mod_socache_shmcb"), ("ssl", "mod_ssl"),
                         ("http2", "mod_http2")):
            add("LoadModule %s_module %s/%s.so" % (name, m, so))
        if self.module:
            add("LoadModule relay_https_module %s" % self.module)
        if self.module and self.log_level_debug:
            add("LogLevel warn relay_https:debug")
        else:
            add("LogLevel warn")
        if self.run_user:
            add("User %s" % self.run_user)
            add("Group %s" % self.run_user)
        add("Timeout 60")
        # Debian's mods-available/reqtimeout.conf, kept on as on a stock server
        add("RequestReadTimeout header=20-40,minrate=500")
        add("RequestReadTimeout body=10,minrate=500")
        add("KeepAlive %s" % ("On" if self.keepalive else "Off"))
        add("MaxKeepAliveRequests 0")
        add("KeepAliveTimeout 5")
        add("TypesConfig %s" % MIME_TYPES)
        add('DocumentRoot "%s"' % self.docroot)
        add('<Directory "%s">' % self.docroot)
        add("    Require all granted")
        add("</Directory>")
        add("DirectoryIndex index.html")
        add('LogFormat "%s" relay' % RELAY_LOGFORMAT)
        add('LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined')
        add('LogFormat "%h %l %u %t \\"%r\\" %>s %b" common')
        add('CustomLog "%s" relay' % self.relay_log)
        add('CustomLog "%s" combined' % self.access_log)
        add('CustomLog "%s" common' % self.common_log)
        add("SSLEngine on")
        add('SSLCertificateFile "%s"' % self.cert)
        add('SSLCertificateKeyFile "%s"' % self.key)
        add("SSLSessionCache shmcb:%s/ssl_scache(512000)" % self.run_dir)
        add("Protocols h2 http/1.1")
        add("<IfModule http2_module>")
        add("    H2WindowSize 16777216")
        add("</IfModule>")
        n = max(int(self.prefork_children), 1)
        add("<IfModule mpm_prefork_module>")
        add("    StartServers %d" % n)
        add("    MinSpareServers %d" % n)
        add("    MaxSpareServers %d" % (n + 16))
        add("    ServerLimit 200")
        add("    MaxRequestWorkers 200")
        add("    MaxConnectionsPerChild 0")
        add("</IfModule>")
        for mpm in ("worker", "event"):
            add("<IfModule mpm_%s_module>" % mpm)
            add("    StartServers 2")
            add("    ServerLimit 10")
            add("    ThreadsPerChild 25")
            add("    MaxRequestWorkers 250")
            add("    MinSpareThreads 25")
            add("    MaxSpareThreads 250")
            add("    MaxConnectionsPerChild 0")
            add("</IfModule>")
        add("<Location /server-status>")
        add("    SetHandler server-status")
        add("    Require ip 127.0.0.1")
        add("</Location>")
        if self.module:
            add("RelayMaxSessions 1024")
            # The functional tests open hundreds of tunnels from one address:
            # no budget gets in their way (test_abuse.py sets its own).
            add("RelayMaxWorkers 100%")
            add("RelayMaxSessionsPerClient 0")
            add("RelayMaxRequestsPerClient 0")
            add("RelayOpenRate 0")
            # RH_RELAY_ASYNC=on|off runs the suite with RelayAsync set that way
            if os.environ.get("RH_RELAY_ASYNC"):
                add("RelayAsync %s" % os.environ["RH_RELAY_ASYNC"])
            # RH_CORE_PROCESSES=N runs the suite over N relay cores (shards)
            if os.environ.get("RH_CORE_PROCESSES"):
                add("RelayCoreProcesses %s" % os.environ["RH_CORE_PROCESSES"])
            add("<Location /relay>")
            add("    SetHandler relay-https")
            for name, addr in self.targets.items():
                add("    RelayTarget %s %s" % (name, addr))
            add("    RelayBufferSize 262144")
            add("    RelayIdleTimeout 300")
            add("    RelayConnectTimeout 5")
            add("</Location>")
            if self.idle_location:
                add("<Location /idle>")
                add("    SetHandler relay-https")
                for name, addr in self.targets.items():
                    add("    RelayTarget %s %s" % (name, addr))
                add("    RelayIdleTimeout 2")
                add("</Location>")
        if extra_locations:
            add(extra_locations)
        if self.extra_conf:
            add(self.extra_conf)
        return "\n".join(lines) + "\n"

    def prepare(self, conf_text=None):
        for d in ("conf", "logs", "htdocs", "run", "lock"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        with open(os.path.join(self.docroot, "index.html"), "w") as f:
            f.write(STATIC_BODY)
        with open(self.conf_path, "w") as f:
            f.write(conf_text if conf_text is not None else self.config_text())
        make_traversable(self.root)
        for d in ("conf", "htdocs", "run", "logs"):
            os.chmod(os.path.join(self.root, d), 0o755)
        os.chmod(os.path.join(self.docroot, "index.html"), 0o644)
        os.chmod(self.conf_path, 0o644)
        # Like Debian's /var/lock/apache2: owned by the run user.
        if self.run_user and os.getuid() == 0:
            try:
                shutil.chown(self.lock_dir, self.run_user, self.run_user)
            except (LookupError, OSError):
                os.chmod(self.lock_dir, 0o777)
        return self.conf_path

    # ---- start / stop ----
    def configtest(self, conf_path=None):
        """apache2 -t; returns CompletedProcess (text)."""
        return subprocess.run([APACHE_BIN, "-t", "-f", conf_path or self.conf_path],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60, env=apache_env(self.env))

    def start(self, timeout=30):
        if not os.path.exists(self.conf_path):
            self.prepare()
        self._errlog_fh = open(os.path.join(self.root, "logs", "stderr.log"), "ab")
        self.proc = subprocess.Popen(
            self.wrap + [APACHE_BIN, "-f", self.conf_path, "-DFOREGROUND"],
            stdin=subprocess.DEVNULL, stdout=self._errlog_fh, stderr=subprocess.STDOUT,
            start_new_session=True, env=apache_env(self.env))
        _register(self.proc)
        Apache.instances.add(self)
        ok = wait_for(self._ready, timeout, interval=0.1)
        if not ok or self.proc.poll() is not None:
            rc = self.proc.poll()
            self.stop()
            raise ApacheStartError(
                "apache2 (%s) did not become ready on port %d within %ss (exit code %r)\n"
                "--- config %s ---\n%s\n--- stderr ---\n%s\n--- error_log ---\n%s"
                % (self.mpm, self.port, timeout, rc, self.conf_path,
                   _read(self.conf_path), _read(os.path.join(self.root, "logs", "stderr.log")),
                   self.error_log_text()))
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            return True  # fail fast: start() sees the exit below
        try:
            st, _, _ = https_get(self.port, "/", timeout=2)
            return st == 200
        except (OSError, http.client.HTTPException, ssl.SSLError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        """All live processes started from our config (parent, children, helpers)."""
        out = []
        needle = self.conf_path.encode()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read()
                with open("/proc/%s/stat" % d, "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in cmd and state != b"Z":
                out.append(int(d))
        return out

    def describe_pid(self, pid):
        """'pid N (user, ppid): error_log lines naming it' -- for leftover reports."""
        try:
            with open("/proc/%d/status" % pid) as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            who = "uid %s, ppid %s" % (st.get("Uid", "?").split()[0], st.get("PPid", "?").strip())
        except OSError:
            who = "gone"
        named = [l for l in self.error_log_text().splitlines()
                 if re.search(r"\bpid %d\b" % pid, l) and "[pid %d:" % pid not in l]
        return "pid %d (%s)%s" % (pid, who, (": " + " | ".join(named[-2:])) if named else "")

    def stop(self, timeout=15):
        """Stop apache (SIGTERM), wait for every process of it to go, SIGKILL leftovers.

        Records in self.leftovers the processes that survived the graceful wait."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.exit_code = self.proc.poll()   # None: did not exit within timeout
        gone = wait_for(lambda: not self.pids(), 5, interval=0.1)
        if not gone:
            self.leftovers = [self.describe_pid(p) for p in self.pids()]
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        wait_for(lambda: not self.pids(), 5, interval=0.1)
        _unregister(self.proc)
        Apache.instances.discard(self)
        try:
            self._errlog_fh.close()
        except Exception:
            pass
        self.proc = None

    # ---- logs ----
    def error_log_text(self, start=0):
        try:
            with open(self.error_log, "r", errors="replace") as f:
                f.seek(start)
                return f.read()
        except OSError:
            return "(no error_log)"

    def error_log_mark(self):
        try:
            return os.path.getsize(self.error_log)
        except OSError:
            return 0

    def error_log_tail(self, n=60, start=0):
        return "\n".join(self.error_log_text(start).splitlines()[-n:])

    def sessions(self, start=0):
        """(distinct opened ids in order, closed ids set) from the error_log since mark start."""
        text = self.error_log_text(start)
        opened = list(dict.fromkeys(m.group(1) for m in SESSION_OPEN_RE.finditer(text)))
        closed = set(m.group(1) for m in SESSION_CLOSED_RE.finditer(text))
        return opened, closed

    def core_pids(self):
        """{core index: pid} of the relay cores (the last start of each)."""
        out = {}
        for pid, k, _ in CORE_INDEX_RE.findall(self.error_log_text()):
            out[int(k)] = int(pid)
        return out

    def core_pid(self):
        """The pid of the module's relay core (last 'relay core started' line), or None."""
        pids = CORE_STARTED_RE.findall(self.error_log_text())
        return int(pids[-1]) if pids else None

    def relay_log_entries(self):
        """[(pid, session-note, request line, status)] from the %P/%{relay-session}n log."""
        out = []
        try:
            with open(self.relay_log, "r", errors="replace") as f:
                for line in f:
                    m = RELAY_LOG_RE.match(line.rstrip("\n"))
                    if m:
                        out.append((int(m.group(1)), m.group(2), m.group(3), int(m.group(4))))
        except OSError:
            pass
        return out


def _read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return "(missing)"


def assert_sessions_closed(apache, start, timeout=15, min_opened=0):
    """Every session opened (per error_log since mark start) gets a 'closed' line.

    Returns the list of opened ids."""
    def check():
        opened, closed = apache.sessions(start)
        if len(opened) >= min_opened and not (set(opened) - closed):
            return opened or True
        return None
    ok = wait_for(check, timeout, interval=0.2)
    opened, closed = apache.sessions(start)
    if not ok:
        leaked = sorted(set(opened) - closed)
        raise AssertionError(
            "session registry: %d opened, %d still open after %ss (expected >= %d opened, "
            "all closed); leaked: %s\n(pattern open=%r closed=%r)\n--- error_log tail ---\n%s"
            % (len(opened), len(leaked), timeout, min_opened, leaked[:10],
               SESSION_OPEN_RE.pattern, SESSION_CLOSED_RE.pattern,
               apache.error_log_tail(80, start)))
    return opened


def session_ends(apache, start=0):
    """{session id: why the core freed it} since mark start (SESSION_END_RE)."""
    return dict(SESSION_END_RE.findall(apache.error_log_text(start)))


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------

def https_get(port, path, timeout=5, cafile=None, host="127.0.0.1"):
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


class CurlResult:
    def __init__(self, rc, status, headers, body, stderr):
        self.rc, self.status, self.headers, self.body, self.stderr = rc, status, headers, body, stderr

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return ("CurlResult(rc=%r, status=%r, headers=%r, body=%r, stderr=%r)"
                % (self.rc, self.status, self.headers, self.body[:300], self.stderr[-300:]))


def curl(url, method="POST", headers=(), data=None, max_time=10, extra=(), cacert=None):
    """Run the real curl; returns status (from -w %{http_code}), headers and body."""
    fd, body_path = tempfile.mkstemp(prefix="rh-curl-")
    os.close(fd)
    cmd = [CURL, "-sS", "--max-time", str(max_time), "-X", method, "-D", "-",
           "-o", body_path, "-w", "%{http_code}"]
    if cacert:
        cmd += ["--cacert", cacert]
    else:
        cmd += ["-k"]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    elif method == "POST":
        cmd += ["-H", "Content-Length: 0"]
    cmd += list(extra)
    cmd.append(url)
    try:
        p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=max_time + 10)
        with open(body_path, "rb") as f:
            body = f.read()
    finally:
        os.unlink(body_path)
    out = p.stdout.decode("latin-1")
    # stdout = all header blocks (-D -), then the -w code (last 3 chars)
    status = int(out[-3:]) if out[-3:].isdigit() else 0
    head = out[:-3]
    headers = {}
    blocks = [b for b in re.split(r"\r?\n\r?\n", head) if b.strip()]
    if blocks:
        for line in blocks[-1].splitlines()[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
    return CurlResult(p.returncode, status, headers, body,
                      p.stderr.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------

class Forward:
    """A running `relay-https forward -L 127.0.0.1:PORT URL TARGET` (command
    "proxy" and target None: `relay-https proxy -L 127.0.0.1:PORT URL`)."""

    def __init__(self, client, url, target, cacert=None, insecure=False, verbose=True,
                 port=None, extra_args=(), ready_timeout=15, env=None, host="127.0.0.1",
                 command="forward"):
        self.port = port or free_port()
        self.host = host
        cmd = [client, command, "-L", "%s:%d" % (host, self.port)]
        if cacert:
            cmd += ["--cacert", cacert]
        if insecure:
            cmd += ["-k"]
        if verbose:
            cmd += ["-v"]
        cmd += list(extra_args) + [url] + ([target] if target is not None else [])
        self.cmd = cmd
        self.stderr_lines = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, env=env)
        _register(self.proc)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        ready = "listening on" if command == "forward" else "proxy (SOCKS5, HTTP CONNECT) on"
        ok = wait_for(lambda: self.proc.poll() is not None or
                      any(ready in l for l in self.lines()), ready_timeout)
        if not ok or self.proc.poll() is not None:
            rc = self.proc.poll()
            self.stop()
            raise AssertionError("relay-https %s did not say %r within %ss "
                                 "(exit code %r); cmd=%s; stderr:\n%s"
                                 % (command, ready, ready_timeout, rc, " ".join(cmd),
                                    self.stderr_text()))

    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self._lock:
                self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def lines(self):
        with self._lock:
            return list(self.stderr_lines)

    def stderr_text(self):
        return "\n".join(self.lines()[-100:])

    def stop(self):
        kill_proc(self.proc)
        self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def read_until(s, n, deadline):
    """Up to n bytes from socket s, until time.monotonic() passes deadline or
    the peer ends; fewer when it ends or times out (socket.timeout raised)."""
    got = bytearray()
    while len(got) < n:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return bytes(got)


STATUS_LOCATION = ("<Location /relay-status>\n    SetHandler relay-https-status\n"
                   "    Require ip 127.0.0.1\n</Location>\n")


def relay_held(a):
    """The requests the relay core of apache a holds (its STATUS_LOCATION page's
    numConnections, brought up to date at the core's 1 s beat)."""
    r = curl(a.base_url + "/relay-status?json", method="GET")
    assert r.status == 200, r
    return json.loads(r.body)["numConnections"]


def wait_held_at_most(a, limit, timeout, samples=1):
    """Waits until relay_held(a) <= limit in `samples` readings in a row (1 s
    apart: the page changes at the core's beat), at most timeout seconds.
    Returns the last reading (above limit: it timed out)."""
    deadline = time.monotonic() + timeout
    held, run = relay_held(a), 0
    while True:
        run = run + 1 if held <= limit else 0
        if run >= samples or time.monotonic() >= deadline:
            return held if run >= samples else max(held, limit + 1)
        time.sleep(1)
        held = relay_held(a)


def open_tunnels(port, n, tag=b"hello"):
    """n local connections to a forward of an echo target, each checked with an echo."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
    echo_all(socks, tag)
    return socks


def target_sends(target, socks, nbytes=65536, timeout=30):
    """The EchoServer target writes nbytes (the same random bytes) on each of its
    connections at once; every tunnel of socks must get them intact (read side
    by side, so that no tunnel waits for another). Returns the latencies."""
    payload = os.urandom(nbytes)
    with target.lock:
        conns = list(target.conns)
    assert len(conns) >= len(socks), (len(conns), len(socks))
    lat, got_n = [None] * len(socks), [0] * len(socks)
    t0 = time.monotonic()
    for c in conns:
        try:
            c.sendall(payload)
        except OSError:
            pass        # a connection of a tunnel that ended before this test
    deadline = t0 + timeout

    def reader(i, s):
        try:
            got = read_until(s, nbytes, deadline)
        except OSError:
            return
        got_n[i] = len(got)
        if got == payload:
            lat[i] = time.monotonic() - t0

    threads = [threading.Thread(target=reader, args=(i, s)) for i, s in enumerate(socks)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout + 5)
    bad = ["tunnel %d: %d bytes" % (i, got_n[i]) for i, v in enumerate(lat) if v is None]
    assert not bad, "%d of %d tunnels did not get the target's %d bytes intact: %s" % (
        len(bad), len(socks), nbytes, ", ".join(bad[:10]))
    return lat


def local_sends(socks, nbytes=4096, timeout=30):
    """Each tunnel to an echo target sends nbytes up; every echo comes back
    intact. Returns the seconds until the last one."""
    t0 = time.monotonic()
    payloads = [os.urandom(nbytes) for _ in socks]
    for s, p in zip(socks, payloads):
        s.sendall(p)
    deadline = t0 + timeout
    for i, (s, p) in enumerate(zip(socks, payloads)):
        assert read_until(s, nbytes, deadline) == p, "tunnel %d: no intact echo" % i
    return time.monotonic() - t0


def pump(host, port, nbytes=None, payload=None, timeout=120, chunk=65536, rate=None,
         res=None):
    """Connect, send payload (or nbytes random bytes) while reading concurrently;
    at most `rate` bytes/s when given (so that faults land in the middle).

    After sending everything, shut down the write side; read until EOF.
    Returns dict(sent_sha, recv_sha, sent, received, error, elapsed); when `res`
    is given, it is that dict, filled as the transfer goes ("received" counts
    live, so another thread can wait for bytes to flow)."""
    if payload is None:
        payload = os.urandom(nbytes)
    start = time.monotonic()
    deadline = start + timeout
    if res is None:
        res = {}
    res.update({"sent_sha": hashlib.sha256(payload).hexdigest(), "sent": len(payload),
                "received": 0, "recv_sha": None, "error": None})
    s = socket.create_connection((host, port), timeout=min(timeout, 30))
    s.settimeout(1.0)
    h = hashlib.sha256()
    errors = []
    done_sending = threading.Event()

    def sender():
        mv = memoryview(payload)
        off = 0
        try:
            while off < len(mv):
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError("send timed out after %d of %d bytes" % (off, len(mv)))
                if rate and off > rate * (now - start):
                    time.sleep(min(0.05, off / rate - (now - start)))
                    continue
                try:
                    n = s.send(mv[off:off + chunk])
                except socket.timeout:
                    continue
                off += n
            s.shutdown(socket.SHUT_WR)
        except Exception as e:  # reported by the caller
            errors.append("send: %r" % (e,))
        finally:
            done_sending.set()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("receive timed out after %d of %d bytes"
                                   % (res["received"], len(payload)))
            try:
                b = s.recv(262144)
            except socket.timeout:
                continue
            if not b:
                break
            h.update(b)
            res["received"] += len(b)
    except Exception as e:
        errors.append("recv: %r" % (e,))
    t.join(max(1.0, deadline - time.monotonic()))
    try:
        s.close()
    except OSError:
        pass
    res["recv_sha"] = h.hexdigest()
    res["elapsed"] = time.monotonic() - start
    res["error"] = "; ".join(errors) or None
    return res


def run_stdio(client, url, target, payload, cacert=None, timeout=120, extra_args=(), env=None):
    """Run `relay-https stdio`, feed payload on stdin (then EOF), read stdout to EOF.

    Returns dict(rc, stdout, stderr, elapsed)."""
    cmd = [client, "stdio"]
    if cacert:
        cmd += ["--cacert", cacert]
    cmd += list(extra_args) + [url, target]
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True, env=env)
    _register(p)
    out_chunks, err_chunks = [], []

    def writer():
        try:
            mv = memoryview(payload)
            for i in range(0, len(mv), 65536):
                p.stdin.write(mv[i:i + 65536])
            p.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
        finally:
            try:
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass

    def reader(stream, sink):
        for b in iter(lambda: stream.read1(65536), b""):
            sink.append(b)

    ts = [threading.Thread(target=writer, daemon=True),
          threading.Thread(target=reader, args=(p.stdout, out_chunks), daemon=True),
          threading.Thread(target=reader, args=(p.stderr, err_chunks), daemon=True)]
    for t in ts:
        t.start()
    timed_out = False
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_proc(p, grace=2)
    for t in ts:
        t.join(5)
    _unregister(p)
    return {"rc": None if timed_out else p.returncode, "timed_out": timed_out,
            "stdout": b"".join(out_chunks),
            "stderr": b"".join(err_chunks).decode("utf-8", "replace"),
            "elapsed": time.monotonic() - start, "cmd": " ".join(cmd)}
