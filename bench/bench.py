#!/usr/bin/python3
"""The mod_relay_https benchmark harness (issue #5).

Measures, in one run on one machine, side by side:

  raw         loopback TCP, straight to the target (the limit)
  tls         TLS alone: stunnel4 client -> stunnel4 server -> target
  connect     Apache's CONNECT over TLS (mod_proxy_connect), client side proxytunnel
  connect-squid  the same reached through squid (proxytunnel -p squid -r Apache -X):
              what CONNECT gives a user behind that proxy, auto-squid's like-for-like
  websocket   websockify behind Apache (mod_proxy_http upgrade=websocket), client
              side our TCP-to-WebSocket bridge (rhbench wsbridge)
  httptunnel  GNU httptunnel htc -> hts (plain HTTP, no TLS)
  duplex      relay-https --transport duplex (HTTP/2)
  stream      relay-https --transport stream (HTTP/1.1)
  batch       relay-https --transport batch (HTTP/1.1)
  batch-nginx relay-https --transport batch through the buffering nginx of the proxy tests
  rendezvous  relay-https forward --transport duplex to a RelayService that a
              relay-https serve --transport duplex --to TARGET offers (issue #15):
              both legs through Apache, paired in the relay core
  rendezvous-stream  the same with --transport stream on both legs
  auto-squid  relay-https with its default transport (auto) through squid (CONNECT), a
              new forward for every figure: what a Syncthing user behind a proxy gets
  socks       relay-https proxy (SOCKS5, --transport duplex: what auto takes on HTTP/2)
              to a destination its /proxy location's RelayAllow lists (issue 16)
  ssh-d       ssh -D (OpenSSH's SOCKS5) whose connection to a loopback sshd goes
              through the same Apache CONNECT (proxytunnel as ProxyCommand)

each straight on loopback and through the harness's delay proxy (rhbench delay,
20 ms each way between the client side and the server side). Figures per path:
single-stream throughput up and down, one-byte echo round trip (median, p99),
100 concurrent streams, idle tunnels held, server memory per idle tunnel, server
CPU seconds per GB. Output: results.csv, results.md, plots (gnuplot) in the
output directory; --update-docs rewrites the generated block of docs/BENCHMARKS.md.

Everything it starts runs on 127.0.0.1 from a temporary directory and is stopped
at exit. Run as root or not (Apache then drops to www-data).
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402
import intermediaries as im  # noqa: E402

PATHS = ["raw", "tls", "connect", "connect-squid", "websocket", "httptunnel",
         "duplex", "stream", "batch", "batch-nginx", "auto-squid", "socks", "ssh-d",
         "rendezvous", "rendezvous-stream"]
OURS = ("duplex", "stream", "batch", "batch-nginx", "auto-squid", "socks",
        "rendezvous", "rendezvous-stream")
# paths whose entry is a SOCKS5 proxy: rhbench connects through it (RHBENCH_SOCKS5)
SOCKS_PATHS = ("socks", "ssh-d")
# a rendezvous path and the forward-to-target path it is measured against
RDV_OF = {"rendezvous": "duplex", "rendezvous-stream": "stream"}
VARIANTS = ["loopback", "delay"]
FIGURES = ["up", "down", "multi", "echo", "setup", "idle", "idle-async", "serve-idle", "site"]
SITE_REQUESTS = 400         # figure site: static page requests timed during a bulk download
# idle tunnels with RelayAsync (issue 17): parked in each child's reactor
ASYNC_PATHS = ("stream", "batch")

TARGET_NAME = "bench"
SERVICE_NAME = "benchsvc"   # the rendezvous path's RelayService
SERVE_IDLE_S = 10           # serve-idle: CPU of an idle relay-https serve over this long
# a forward takes up to its descriptor limit's worth of tunnels (client/rhc_forward.c):
# the idle ramp spreads over forwarders
MAX_TUNNELS_PER_FORWARD = 1000
# tunnels one rhbench idle (or target) process holds: each is a descriptor, and a
# process may hold at most RLIMIT_NOFILE (20,000 in the container)
IDLE_PER_PROC = 8000
MB = 1000 * 1000

# Idle tunnels: how far each path's ramp goes, and why not further.
IDLE_CAP = {
    "socks": (0, "the same sessions as duplex; not measured"),
    "ssh-d": (0, "one ssh connection multiplexes every channel; not measured"),
    "websocket": (300, "websockify forks one Python process per connection"),
    "httptunnel": (1, "hts serves one tunnel at a time"),
    "batch-nginx": (0, "same server cost as batch, plus nginx; not measured"),
    "rendezvous": (0, "two duplex sessions per tunnel; not measured"),
    "rendezvous-stream": (0, "two stream sessions per tunnel; not measured"),
    "auto-squid": (0, "duplex or stream, as measured; not measured apart"),
    "connect-squid": (0, "the same Apache CONNECT as connect, plus squid; not measured"),
}

STUNNEL = "/usr/bin/stunnel4"
PROXYTUNNEL = "/usr/bin/proxytunnel"
WEBSOCKIFY = "/usr/bin/websockify"
HTC = "/usr/bin/htc"
HTS = "/usr/bin/hts"
GNUPLOT = "/usr/bin/gnuplot"
PEER_BINS = {"tls": [STUNNEL], "connect": [PROXYTUNNEL], "websocket": [WEBSOCKIFY],
             "httptunnel": [HTC, HTS], "batch-nginx": [im.NGINX], "auto-squid": [im.SQUID],
             "connect-squid": [PROXYTUNNEL, im.SQUID],
             "ssh-d": ["/usr/sbin/sshd", "/usr/bin/ssh", PROXYTUNNEL]}

# Event MPM settings for thousands of held requests (each open pull or push holds a
# worker thread; see docs/BENCHMARKS.md); the listen queue as in ASYNC_CONF.
EVENT_CONF = """
ListenBacklog 4096
<IfModule mpm_event_module>
    ServerLimit 48
    ThreadLimit 256
    ThreadsPerChild 256
    MaxRequestWorkers 12288
    StartServers 2
    MinSpareThreads 128
    MaxSpareThreads 12288
    ThreadStackSize {stack}
    MaxConnectionsPerChild 0
    AsyncRequestWorkerFactor 4
</IfModule>
H2MaxWorkers {h2max}
H2MinWorkers {h2min}
{maxmemfree}
"""


# RelayAsync: few worker threads (16 children, so that none holds more descriptors than
# a process may: two per parked request), parked requests count as event's connections
# (AsyncRequestWorkerFactor), the relay's budget sized for connections, not threads.
# ListenBacklog: thousands of tunnels waking at once connect at once; Apache's
# default queue (511) overflowed by 9,000 connects in a 20,000-tunnel wake, each a
# SYN sent again a second or more later (docs/BENCHMARKS.md).
ASYNC_CONF = """
ListenBacklog 4096
<IfModule mpm_event_module>
    ServerLimit 16
    ThreadsPerChild 16
    MaxRequestWorkers 256
    StartServers 16
    MinSpareThreads 32
    MaxSpareThreads 256
    MaxConnectionsPerChild 0
    AsyncRequestWorkerFactor 400
</IfModule>
RelayAsync On
RelayMaxWorkers {maxworkers}
{maxmemfree}
"""


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# processes: /proc readings
# --------------------------------------------------------------------------

def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


# the kernel's CFS weight of each nice value (sched_prio_to_weight)
NICE_WEIGHT = [1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87, 70, 56, 45, 36,
               29, 23, 18, 15]


def one_client_machine(pids):
    """With sched_autogroup (this kernel: /proc/sys/kernel/sched_autogroup_enabled),
    CPU is shared fairly between sessions first, and every client-side process here
    is a session of its own (setsid): 66 forwarders and rhbench processes against the
    server's one session left Apache 1/68 of the CPU during an idle ramp, its cores'
    beats aged past 3 s and the tunnels collapsed. Weight the client sessions so that
    together they weigh about one session: one client machine against one server."""
    pids = list(pids)
    if not pids:
        return None
    nice = next((i for i, w in enumerate(NICE_WEIGHT) if w * len(pids) <= 1024), 19)
    for pid in pids:
        try:
            with open("/proc/%d/autogroup" % pid, "w") as f:
                f.write(str(nice))
        except OSError:
            return None
    return nice


def proc_tree(roots):
    """roots and all their descendants (live), as a set of pids."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:   # zombies too: their CPU counts until they are reaped
                parent[int(d)] = int(st[1])
    out = set(p for p in roots if p in parent)
    changed = True
    while changed:
        changed = False
        for p, pp in parent.items():
            if pp in out and p not in out:
                out.add(p)
                changed = True
    return out


def cpu_seconds(pids):
    """utime + stime + reaped children's, summed."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        st = _stat(p)
        if st:
            total += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total / tck


def pss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def proc_field(path, key, missing_ok=False):
    """The number after "key:" in a /proc file such as /proc/meminfo; 0 without
    one (or, missing_ok, without the file: a process that has ended)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        if not missing_ok:
            raise
    return 0


def threads_of(pid):
    return proc_field("/proc/%d/status" % pid, "Threads", missing_ok=True)


def mem_available_kib():
    return proc_field("/proc/meminfo", "MemAvailable")


def slab_kib():
    return proc_field("/proc/meminfo", "Slab")


# --------------------------------------------------------------------------
# helper processes
# --------------------------------------------------------------------------

class Proc:
    """A helper process in its own group, registered with the test harness so that
    it is killed at exit. Optionally waits for a "PORT n" line on stdout."""

    def __init__(self, cmd, name, logdir, want_port=False, stdin=False, ready_port=None,
                 timeout=20, env=None):
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = os.path.join(logdir, "%s.log" % name)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if want_port else self._log, stderr=self._log,
            start_new_session=True, env=env)
        harness._register(self.proc)
        self.port = None
        if want_port:
            line = _readline(self.proc.stdout, timeout)
            m = re.match(r"PORT (\d+)", line or "")
            if not m:
                self.stop()
                raise RuntimeError("%s did not report its port: %r; log:\n%s"
                                   % (name, line, self.log_tail()))
            self.port = int(m.group(1))
        if ready_port:
            ok = harness.wait_for(lambda: self.proc.poll() is not None or
                                  im._port_open(ready_port), timeout, interval=0.05)
            if not ok or self.proc.poll() is not None:
                rc = self.proc.poll()
                self.stop()
                raise RuntimeError("%s did not listen on %d (exit %r); cmd: %s; log:\n%s"
                                   % (name, ready_port, rc, " ".join(self.cmd), self.log_tail()))
            self.port = ready_port

    @property
    def pid(self):
        return self.proc.pid

    def log_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        harness.kill_proc(self.proc, grace=3)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def _readline(stream, timeout):
    """One line from a pipe, or None after timeout."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return None
        b = os.read(fd, 1)
        if not b:
            break
        buf += b
    return buf.decode("utf-8", "replace").strip()


def parse_kv(line):
    out = {}
    for m in re.finditer(r'(\w+)=("([^"]*)"|\S+)', line or ""):
        v = m.group(3) if m.group(3) is not None else m.group(2)
        try:
            v = float(v)
        except ValueError:
            pass
        out[m.group(1)] = v
    return out


# --------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="rh-bench-", dir=args.tmpdir)
        harness.make_traversable(self.work)
        os.chmod(self.work, 0o755)
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir)
        os.chmod(self.logdir, 0o777)
        self.bindir = os.path.join(self.work, "bin")
        os.makedirs(self.bindir)
        self.apache = None
        self.async_conf = False     # Apache with RelayAsync (ASYNC_CONF)
        self.nginx = None
        self.squid = None
        self.websockify = None
        self.target = None
        self.sshd = None
        self.socks_dest = None  # set while a SOCKS5 path runs: where rhbench asks to go
        self.helpers = []
        self.rows = []          # dicts: path, variant, metric, value, unit, note
        self.notes = []
        self.extra = {}         # (path, variant) -> dict of extra facts

    # ---- set-up ----
    def build(self):
        bd = harness.build_dir()
        so = os.path.join(bd, "mod_relay_https", ".libs", "mod_relay_https.so")
        cl = os.path.join(bd, "client", "relay-https")
        for f in (so, cl):
            if not os.path.exists(f):
                raise SystemExit("bench: %s is missing: run make first (RH_BUILD_DIR=%s)" % (f, bd))
        self.module = os.path.join(self.bindir, "mod_relay_https.so")
        self.client = os.path.join(self.bindir, "relay-https")
        shutil.copy2(so, self.module)
        shutil.copy2(cl, self.client)
        os.chmod(self.module, 0o755)
        self.tool = os.path.join(self.bindir, "rhbench")
        cmd = ["gcc", "-std=c99", "-O2", "-g", "-Wall", "-Wextra", "-o", self.tool,
               os.path.join(HERE, "rhbench.c"), "-lssl", "-lcrypto", "-lpthread"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0 or "warning" in r.stdout:
            raise SystemExit("bench: building rhbench failed:\n%s" % r.stdout)
        self.client_version = subprocess.run([self.client, "--version"], stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True).stdout.strip()

    def start_base(self):
        certdir = os.path.join(self.work, "cert")
        self.ca, self.cert, self.key = harness.make_cert(certdir)
        harness.make_traversable(certdir)
        # a process holds at most RLIMIT_NOFILE connections (20,000 here): the target
        # of an idle ramp runs as several processes on one socket
        nserv = 1 + max(self.args.idle, self.args.idle_async) // IDLE_PER_PROC
        self.target = Proc([self.tool, "server", 0, nserv], "target", self.logdir,
                           want_port=True)
        self.helpers.append(self.target)
        self.ws_port = harness.free_port()
        self.apache_port = harness.free_port()
        if self.wants("ssh-d"):
            import sshd as sshmod
            self.sshd = sshmod.Sshd(os.path.join(self.work, "sshd")).start()
        self.start_apache()
        if self.wants("websocket"):
            self.websockify = Proc([WEBSOCKIFY, "127.0.0.1:%d" % self.ws_port,
                                    "127.0.0.1:%d" % self.target.port],
                                   "websockify", self.logdir, ready_port=self.ws_port)
            self.helpers.append(self.websockify)
        if self.wants("batch-nginx"):
            self.nginx = im.Nginx(os.path.join(self.work, "nginx"), self.apache_port)
            self.nginx.start()
        if self.wants("auto-squid") or self.wants("connect-squid"):
            self.squid = im.Squid(os.path.join(self.work, "squid"),
                                  connect_ports=[self.apache_port])
            self.squid.start()

    def wants(self, path):
        return path in self.args.paths

    def apache_conf(self):
        m = harness.APACHE_MODULES
        maxmemfree = "MaxMemFree %d" % self.args.max_mem_free if self.args.max_mem_free else ""
        return "\n".join([
            "LoadModule proxy_module %s/mod_proxy.so" % m,
            "LoadModule proxy_connect_module %s/mod_proxy_connect.so" % m,
            "LoadModule proxy_http_module %s/mod_proxy_http.so" % m,
            "RelayMaxSessions %d" % max(8192, self.args.idle_async + 1000),
            (ASYNC_CONF.format(maxworkers=3 * self.args.idle_async, maxmemfree=maxmemfree)
             if self.async_conf else
             EVENT_CONF.format(stack=self.args.thread_stack, h2min=self.args.h2_min_workers,
                               h2max=self.args.h2_max_workers, maxmemfree=maxmemfree)),
            "# Apache's own CONNECT path: a TLS forward proxy that may only reach the target",
            "ProxyRequests On",
            "AllowCONNECT %d%s" % (self.target.port,
                                   " %d" % self.sshd.port if self.sshd else ""),
            "<Proxy \"*\">",
            "    Require ip 127.0.0.1",
            "</Proxy>",
            "# RH_BENCH_CONF: more server configuration, for experiments",
            os.environ.get("RH_BENCH_CONF", "").replace("\\n", "\n"),
            "# the WebSocket path: websockify behind mod_proxy_http",
            "ProxyPass /ws/ http://127.0.0.1:%d/ upgrade=websocket" % self.ws_port,
            "<Location /relay>",
            "    RelayIdleTimeout 600",
            "    RelayService %s" % SERVICE_NAME,
            "</Location>",
            "# the SOCKS5 path: destinations named per connection, the target only",
            "<Location /proxy>",
            "    SetHandler relay-https",
            "    RelayAllow 127.0.0.1 %d" % self.target.port,
            "    RelayIdleTimeout 600",
            "</Location>",
        ])

    def start_apache(self):
        root = os.path.join(self.work, "apache")
        if os.path.isdir(root):
            shutil.rmtree(root)
        self.apache = harness.Apache(root, self.cert, self.key, mpm="event", module=self.module,
                                     targets={TARGET_NAME: "127.0.0.1:%d" % self.target.port},
                                     log_level_debug=False, idle_location=False,
                                     extra_conf=self.apache_conf(), port=self.apache_port)
        self.apache.prepare()
        self.apache.start(timeout=60)

    def restart_apache(self):
        self.apache.stop()
        self.start_apache()

    def stop_all(self):
        for h in reversed(self.helpers):
            h.stop()
        self.helpers = []
        if self.nginx:
            self.nginx.stop()
        if self.sshd:
            self.sshd.stop()
        if self.squid:
            self.squid.stop()
        if self.apache:
            self.apache.stop()

    # ---- process sets ----
    def apache_pids(self):
        return set(self.apache.pids()) if self.apache else set()

    def core_pids(self):
        """The relay cores (RelayCoreProcesses): the Apache parent's single-threaded
        children."""
        pids = self.apache_pids()
        parent = self.apache.proc.pid if self.apache.proc else None
        return sorted(p for p in pids
                      if (_stat(p) or [0, 0])[1] == str(parent) and threads_of(p) == 1)

    def core_pid(self):
        """The first relay core."""
        pids = self.core_pids()
        return pids[0] if pids else None

    def cpu_groups(self, idle_procs, client):
        """The processes of an idle hold by group, for CPU seconds per group: Apache's
        parent, its children, the relay cores, the relay-https clients and the rhbench
        idle processes (which hold the tunnels' local ends)."""
        parent = self.apache.proc.pid if self.apache and self.apache.proc else None
        return {"apache-parent": [parent] if parent else [],
                "apache-children": self.apache_children(), "relay-cores": self.core_pids(),
                "clients": sorted(proc_tree(client)),
                "rhbench-idle": [p.pid for p in idle_procs]}

    def apache_children(self):
        """The Apache children (not the parent, not the relay cores)."""
        parent = self.apache.proc.pid if self.apache and self.apache.proc else None
        cores = set(self.core_pids())
        return [p for p in self.apache_pids() if p != parent and p not in cores]

    # ---- a path ----
    def start_path(self, path, variant, tunnels=1, per_forward=MAX_TUNNELS_PER_FORWARD):
        """Start the client and server sides of path; returns (entry_port, server_roots,
        client_roots, stop_fn). self.entries: every entry port (relay-https forward takes
        at most MAX_TUNNELS_PER_FORWARD tunnels: more tunnels, more forwarders)."""
        procs = []

        def helper(*a, **kw):
            p = Proc(*a, **kw)
            procs.append(p)
            return p

        def upstream(port, label):
            """The server side as the client side sees it: port, or a delay proxy to it."""
            if variant == "loopback":
                return port
            d = helper([self.tool, "delay", 0, "127.0.0.1:%d" % port, self.args.delay_ms,
                        self.args.delay_window], "delay-%s-%s" % (path, label), self.logdir,
                       want_port=True)
            return d.port

        tgt = self.target.port
        server, client = set(), set()
        self.entries = None
        self.socks_dest = "127.0.0.1:%d" % tgt if path in SOCKS_PATHS else None
        if path == "raw":
            entry = upstream(tgt, "target")
        elif path == "tls":
            sport = harness.free_port()
            conf = os.path.join(self.work, "stunnel-server.conf")
            with open(conf, "w") as f:
                f.write("foreground = yes\npid =\nsyslog = no\ndebug = 3\n"
                        "[srv]\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\n"
                        "cert = %s\nkey = %s\n" % (sport, tgt, self.cert, self.key))
            s = helper([STUNNEL, conf], "stunnel-server-%s" % variant, self.logdir,
                       ready_port=sport)
            server.add(s.pid)
            up = upstream(sport, "stunnel")
            entry = harness.free_port()
            conf = os.path.join(self.work, "stunnel-client.conf")
            with open(conf, "w") as f:
                f.write("foreground = yes\npid =\nsyslog = no\ndebug = 3\n"
                        "[cli]\nclient = yes\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\n"
                        % (entry, up))
            c = helper([STUNNEL, conf], "stunnel-client-%s" % variant, self.logdir,
                       ready_port=entry)
            client.add(c.pid)
        elif path == "connect":
            up = upstream(self.apache_port, "apache")
            entry = harness.free_port()
            c = helper([PROXYTUNNEL, "-a", entry, "-E", "-z", "-q",
                        "-p", "127.0.0.1:%d" % up, "-d", "127.0.0.1:%d" % tgt],
                       "proxytunnel-%s" % variant, self.logdir, ready_port=entry)
            client.add(c.pid)
            server |= self.apache_pids()
        elif path == "connect-squid":
            # the delay sits between the client and squid, as for auto-squid; squid
            # CONNECTs to Apache, then TLS to Apache and CONNECT to the target in it
            sq = upstream(self.squid.port, "squid")
            entry = harness.free_port()
            c = helper([PROXYTUNNEL, "-a", entry, "-X", "-z", "-q",
                        "-p", "127.0.0.1:%d" % sq, "-r", "127.0.0.1:%d" % self.apache_port,
                        "-d", "127.0.0.1:%d" % tgt],
                       "proxytunnel-squid-%s" % variant, self.logdir, ready_port=entry)
            client.add(c.pid)
            server |= self.apache_pids()
        elif path == "websocket":
            up = upstream(self.apache_port, "apache")
            c = helper([self.tool, "wsbridge", 0, "127.0.0.1:%d" % up, "/ws/"],
                       "wsbridge-%s" % variant, self.logdir, want_port=True)
            entry = c.port
            client.add(c.pid)
            server |= self.apache_pids() | {self.websockify.pid}
        elif path == "httptunnel":
            hport = harness.free_port()
            s = helper([HTS, "-w", "-F", "127.0.0.1:%d" % tgt, "127.0.0.1:%d" % hport],
                       "hts-%s" % variant, self.logdir, ready_port=hport)
            server.add(s.pid)
            up = upstream(hport, "hts")
            entry = harness.free_port()
            c = helper([HTC, "-w", "-F", entry, "127.0.0.1:%d" % up],
                       "htc-%s" % variant, self.logdir, ready_port=entry)
            client.add(c.pid)
        elif path == "socks":
            up = upstream(self.apache_port, "apache")
            entry = harness.free_port()
            c = helper([self.client, "proxy", "-L", "127.0.0.1:%d" % entry, "--cacert", self.ca,
                        "--transport", "duplex", "--http2",
                        "https://127.0.0.1:%d/proxy" % up],
                       "relay-https-proxy-%s" % variant, self.logdir, ready_port=entry,
                       env=im.clean_env())
            client.add(c.pid)
            server |= self.apache_pids()
        elif path == "ssh-d":
            up = upstream(self.apache_port, "apache")
            entry = harness.free_port()
            pcmd = "%s -E -z -q -p 127.0.0.1:%d -d 127.0.0.1:%d" % (PROXYTUNNEL, up,
                                                                   self.sshd.port)
            c = helper(["/usr/bin/ssh"] + self.sshd.ssh_options(port=self.sshd.port)
                       + ["-N", "-D", "127.0.0.1:%d" % entry, "-o", "ProxyCommand=" + pcmd,
                          "%s@127.0.0.1" % self.sshd.user],
                       "ssh-d-%s" % variant, self.logdir, ready_port=entry, timeout=40)
            client.add(c.pid)
            server |= self.apache_pids() | {self.sshd.proc.pid}
        elif path in OURS:
            proxy = []
            if path == "batch-nginx":
                up = upstream(self.nginx.port, "nginx")
                url = "http://127.0.0.1:%d/relay" % up
                server |= {self.nginx.proc.pid}
            elif path == "auto-squid":
                # the delay sits between relay-https and squid, which CONNECTs to Apache
                proxy = ["-x", "http://127.0.0.1:%d" % upstream(self.squid.port, "squid")]
                url = "https://127.0.0.1:%d/relay" % self.apache_port
            else:
                up = upstream(self.apache_port, "apache")
                url = "https://127.0.0.1:%d/relay" % up
            transport = "batch" if path == "batch-nginx" else RDV_OF.get(path, path)
            if path == "auto-squid":
                extra = proxy           # the defaults: auto, HTTP/2 where ALPN gives it
            else:
                extra = ["--transport", transport]
                # duplex asks for HTTP/2 itself (ALPN); no version given, so
                # that its bulk uploads may go on an HTTP/1.1 stream push
                extra += [] if transport == "duplex" else ["--http1.1"]
            nfwd = max(1, -(-tunnels // per_forward))
            name = TARGET_NAME
            if path in RDV_OF:
                # the serve sits next to the server (the delay is the client's path)
                name = SERVICE_NAME
                sv = helper([self.client, "serve", "--cacert", self.ca] + extra
                            + ["--accepts", "16", "--to", "127.0.0.1:%d" % tgt,
                               "https://127.0.0.1:%d/relay" % self.apache_port, name],
                            "relay-https-serve-%s" % variant, self.logdir, env=im.clean_env())
                client.add(sv.pid)
            entries = []
            for i in range(nfwd):
                entry = harness.free_port()
                cmd = [self.client, "forward", "-L", "127.0.0.1:%d" % entry]
                if url.startswith("https"):
                    cmd += ["--cacert", self.ca]
                # RH_BENCH_CLIENT_ARGS: more options for every forward (-v, say)
                cmd += extra + os.environ.get("RH_BENCH_CLIENT_ARGS", "").split()
                cmd += [url, name]
                c = helper(cmd, "relay-https-%s-%s-%d" % (path, variant, i), self.logdir,
                           ready_port=entry, env=im.clean_env())
                client.add(c.pid)
                entries.append(entry)
            entry = entries[0]
            self.entries = entries
            server |= self.apache_pids()
        else:
            raise ValueError(path)

        def stop():
            for p in reversed(procs):
                p.stop()
        return entry, server, client, stop

    # ---- measurements ----
    def record(self, path, variant, metric, value, unit, note=""):
        self.rows.append({"path": path, "variant": variant, "metric": metric,
                          "value": value, "unit": unit, "note": note})

    def tool_run(self, args, timeout):
        env = dict(os.environ)
        env.pop("RHBENCH_SOCKS5", None)
        if self.socks_dest:
            env["RHBENCH_SOCKS5"] = self.socks_dest
        try:
            r = subprocess.run([self.tool] + [str(a) for a in args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": "timed out after %ss" % timeout}
        kv = parse_kv(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
        if r.returncode != 0 and "error" not in kv:
            kv["error"] = (r.stderr.strip() or "exit %d" % r.returncode)[-300:]
        return kv

    def measure_thr(self, path, variant, entry, direction, streams, server, client):
        a = self.args
        cap = a.seconds
        timeout = cap * 3 + 60
        # probe: a short transfer to size the real one (>= bytes, or about cap seconds)
        probe_bytes = max(min(a.bytes // 10, 20 * MB), 1 * MB)
        pr = self.tool_run(["thr", "127.0.0.1:%d" % entry, direction, probe_bytes,
                            streams, a.probe_timeout], a.probe_timeout + 10)
        if pr.get("error") or not pr.get("mbps"):
            return None, "probe: %s" % pr.get("error", "no figure")
        rate = pr["mbps"] * MB
        nbytes = int(min(a.bytes, max(probe_bytes, rate * cap)))
        s0, c0 = cpu_seconds(proc_tree(server)), cpu_seconds(proc_tree(client))
        r = self.tool_run(["thr", "127.0.0.1:%d" % entry, direction, nbytes, streams, timeout],
                          timeout + 10)
        s1, c1 = cpu_seconds(proc_tree(server)), cpu_seconds(proc_tree(client))
        if r.get("error") or not r.get("mbps"):
            return None, r.get("error", "no figure")
        r["server_cpu"] = s1 - s0
        r["client_cpu"] = c1 - c0
        return r, None

    def measure_request_rtt(self, n):
        """One HTTPS request on a kept-alive connection to this Apache (curl, the static
        page, HTTP/1.1): what every batch push pays on top of the bytes' own trip, so
        CONNECT echo + this is the floor of a batch echo."""
        url = "https://127.0.0.1:%d/index.html" % self.apache_port
        n = max(n // 2, 20)
        cmd = ["curl", "-s", "--cacert", self.ca, "-w", "%{time_total}\n"]
        cmd += ["-o", "/dev/null", url] * n
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=n + 60).stdout
            ts = sorted(float(x) for x in out.split()[n // 10:])   # the first ones warm up
        except (subprocess.SubprocessError, ValueError) as e:
            log("request round trip: %s" % e)
            return
        if ts:
            self.record("connect", "loopback", "req_rtt", ts[len(ts) // 2] * 1000, "ms",
                        "one HTTPS request, kept-alive connection, curl, static page")
            log("connect / loopback: HTTPS request round trip %.3f ms" %
                (ts[len(ts) // 2] * 1000))

    def measure_path(self, path, variant):
        a = self.args
        log("%s / %s: starting" % (path, variant))
        try:
            entry, server, client, stop = self.start_path(path, variant)
        except Exception as e:  # a path that cannot start is reported, not fatal
            log("%s / %s: cannot start: %s" % (path, variant, e))
            self.record(path, variant, "error", 0, "", "cannot start: %s" % str(e)[:300])
            return
        state = {"entry": entry, "stop": stop}

        def fresh():
            """hts serves one tunnel at a time, and a stuck one blocks it: httptunnel
            gets a new htc/hts pair for every measurement. auto-squid gets a new
            forward, so that every figure pays for auto's measuring."""
            if path in ("httptunnel", "auto-squid"):
                state["stop"]()
                state["entry"], s2, c2, state["stop"] = self.start_path(path, variant)
                server.clear(); server.update(s2)
                client.clear(); client.update(c2)
            return state["entry"]
        try:
            # warm-up and check: a few echoes
            w = self.tool_run(["echo", "127.0.0.1:%d" % entry, 5, 1, 30], 60)
            if w.get("error"):
                self.record(path, variant, "error", 0, "", "echo check: %s" % w["error"])
                log("%s / %s: echo check failed: %s" % (path, variant, w["error"]))
                return
            if "setup" in a.figures:
                self.measure_setup(path, variant, fresh())
            if "echo" in a.figures:
                entry = fresh()
                n = a.echo_count if variant == "loopback" else a.echo_count_delay
                e = self.tool_run(["echo", "127.0.0.1:%d" % entry, n, max(n // 20, 3), 60],
                                  n * 2 + 120)
                if e.get("error"):
                    self.record(path, variant, "error", 0, "", "echo: %s" % e["error"])
                else:
                    self.record(path, variant, "echo_median", e["median_us"] / 1000, "ms")
                    self.record(path, variant, "echo_p99", e["p99_us"] / 1000, "ms")
                    self.record(path, variant, "setup", e["setup_us"] / 1000, "ms",
                                "connect to first echo byte")
                log("%s / %s: echo median %.3f ms p99 %.3f ms" % (
                    path, variant, e.get("median_us", 0) / 1000, e.get("p99_us", 0) / 1000))
                if path == "connect" and variant == "loopback":
                    self.measure_request_rtt(n)
            moved, scpu, ccpu = 0, 0.0, 0.0
            for direction in ("up", "down"):
                if direction not in a.figures:
                    continue
                entry = fresh()
                r, err = self.measure_thr(path, variant, entry, direction, 1, server, client)
                if err:
                    self.record(path, variant, "error", 0, "", "%s: %s" % (direction, err))
                    log("%s / %s: %s failed: %s" % (path, variant, direction, err))
                    continue
                self.record(path, variant, "thr_" + direction, r["mbps"], "MB/s",
                            "%.0f MB in %.2f s" % (r["bytes"] / MB, r["seconds"]))
                moved += r["bytes"]
                scpu += r["server_cpu"]
                ccpu += r["client_cpu"]
                log("%s / %s: %s %.1f MB/s (%.0f MB; server cpu %.2f s, client cpu %.2f s)" % (
                    path, variant, direction, r["mbps"], r["bytes"] / MB, r["server_cpu"],
                    r["client_cpu"]))
            if moved and server:
                self.record(path, variant, "server_cpu_per_gb", scpu / (moved / 1e9), "s/GB",
                            "single-stream up + down")
            if moved and client:
                self.record(path, variant, "client_cpu_per_gb", ccpu / (moved / 1e9), "s/GB",
                            "single-stream up + down")
            if "site" in a.figures and variant == "loopback" and path != "httptunnel":
                self.measure_site_bulk(path, variant, fresh())
            if "multi" in a.figures:
                if path == "httptunnel":
                    self.record(path, variant, "thr_multi", None, "MB/s",
                                "n/a: one tunnel per htc/hts pair")
                else:
                    entry = fresh()
                    r, err = self.measure_thr(path, variant, entry, "down", a.streams,
                                              server, client)
                    if err:
                        self.record(path, variant, "error", 0, "", "multi: %s" % err)
                        log("%s / %s: multi failed: %s" % (path, variant, err))
                    else:
                        self.record(path, variant, "thr_multi", r["mbps"], "MB/s",
                                    "%d streams down, %.0f MB" % (a.streams, r["bytes"] / MB))
                        log("%s / %s: %d streams %.1f MB/s" % (path, variant, a.streams,
                                                                r["mbps"]))
        finally:
            state["stop"]()

    def measure_site_bulk(self, path, variant, entry):
        """The website beside the relay during a bulk download through the path: the
        static page's p99 (kept-alive curl, SITE_REQUESTS) while 100 streams pull as
        fast as they can, against the same on the quiet server (recorded once, as
        connect's site_p99_quiet). The download is stopped once the page is timed."""
        if value(self.rows, "connect", "loopback", "site_p99_quiet") is None:
            q = self.site_latency(SITE_REQUESTS)
            if q:
                self.record("connect", "loopback", "site_p99_quiet", q[1], "ms",
                            "static page, no transfer: median %.2f ms" % q[0])
        self.wait_server_quiet()
        bulk = subprocess.Popen([self.tool, "thr", "127.0.0.1:%d" % entry, "down",
                                 str(100 * 1000 * MB), str(self.args.streams), "120"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_bulk_moving(bulk)
            lo0, t0 = lo_bytes(), time.time()
            n = 50 if self.args.quick else SITE_REQUESTS
            site = self.site_latency(n) if bulk.poll() is None else None
            alive = bulk.poll() is None
            lo_mbps = (lo_bytes() - lo0) / MB / max(time.time() - t0, 1e-3)
        finally:
            bulk.kill()
            bulk.wait()
        if not site or not alive:
            self.record(path, variant, "error", 0, "", "site: %s" % (
                "the bulk download ended before the page was timed" if site else
                "no static page figure"))
            return
        self.record(path, variant, "site_p99_bulk", site[1], "ms",
                    "static page during a %d-stream bulk download: median %.2f ms; "
                    "loopback moved %.0f MB/s meanwhile" % (self.args.streams, site[0], lo_mbps))
        log("%s / %s: static page during bulk download: median %.2f ms p99 %.2f ms "
            "(loopback %.0f MB/s)" % (path, variant, site[0], site[1], lo_mbps))

    def wait_server_quiet(self, limit_s=40.0):
        """Wait until Apache and the relay cores are idle (under 5 % of a core for
        half a second), at most limit_s: what an earlier figure left running (a
        CONNECT thread lingering on its target, say) would be timed beside the page."""
        t0 = time.time()
        while True:
            pids = proc_tree(self.apache_pids())
            c0 = cpu_seconds(pids)
            time.sleep(0.5)
            busy = cpu_seconds(pids) - c0
            if busy < 0.025:
                break
            if time.time() - t0 > limit_s:
                log("site: the server still busy (%.2f s CPU in 0.5 s) after %.0f s"
                    % (busy, limit_s))
                return
        if time.time() - t0 > 1.0:
            log("site: waited %.1f s for the server to be idle" % (time.time() - t0))

    def wait_bulk_moving(self, bulk, limit_s=30.0, floor_mbps=20.0):
        """Wait until the bulk download moves (loopback above floor_mbps over half
        a second), at most limit_s: its streams start together once every one is
        open, and 100 of them through CONNECT took longer than the page's 400
        requests, which were then timed beside no transfer at all."""
        time.sleep(1.0)
        t0 = time.time()
        while bulk.poll() is None and time.time() - t0 < limit_s:
            b0 = lo_bytes()
            time.sleep(0.5)
            if (lo_bytes() - b0) / MB / 0.5 >= floor_mbps:
                break
        else:
            log("site: the bulk download did not move %.0f MB/s within %.0f s"
                % (floor_mbps, limit_s))
            return
        if time.time() - t0 > 0.6:
            log("site: the bulk download moved after %.1f s" % (1.0 + time.time() - t0))

    def measure_serve_idle(self):
        """An idle relay-https serve (its listens waiting, no client): its CPU time
        (utime + stime of /proc/PID/stat) and the server's over SERVE_IDLE_S."""
        log("rendezvous / loopback: an idle serve for %d s" % SERVE_IDLE_S)
        sv = Proc([self.client, "serve", "--cacert", self.ca, "--to",
                   "127.0.0.1:%d" % self.target.port,
                   "https://127.0.0.1:%d/relay" % self.apache_port, SERVICE_NAME],
                  "relay-https-serve-idle", self.logdir, env=im.clean_env())
        try:
            time.sleep(2.0)   # its listens are out and waiting
            server = proc_tree(self.apache_pids())
            c0, s0 = cpu_seconds([sv.pid]), cpu_seconds(server)
            time.sleep(SERVE_IDLE_S)
            c1, s1 = cpu_seconds([sv.pid]), cpu_seconds(server)
        finally:
            sv.stop()
        note = "relay-https serve, 4 listens waiting, no client, %d s" % SERVE_IDLE_S
        self.record("rendezvous", "loopback", "serve_idle_cpu", c1 - c0, "s", note)
        self.record("rendezvous", "loopback", "serve_idle_server_cpu", s1 - s0, "s",
                    "Apache and the relay core meanwhile (the listens' long-polls)")
        log("rendezvous / loopback: idle serve CPU %.3f s, server %.3f s in %d s"
            % (c1 - c0, s1 - s0, SERVE_IDLE_S))

    def measure_setup(self, path, variant, entry):
        """Connect latency: a new connection through the path until its first byte
        came back (SOCKS5 handshake and the relay's open included), --setup-count
        times one after another; median and p90."""
        ts = []
        for _ in range(self.args.setup_count):
            e = self.tool_run(["echo", "127.0.0.1:%d" % entry, 1, 0, 30], 60)
            if e.get("error") or "setup_us" not in e:
                self.record(path, variant, "error", 0, "", "setup: %s" % e.get("error"))
                return
            ts.append(e["setup_us"] / 1000)
        ts.sort()
        self.record(path, variant, "setup_median", ts[len(ts) // 2], "ms",
                    "new connection to first echo byte, %d in a row" % len(ts))
        self.record(path, variant, "setup_p90", ts[int(len(ts) * 0.9)], "ms")
        log("%s / %s: connect latency median %.2f ms p90 %.2f ms" % (
            path, variant, ts[len(ts) // 2], ts[int(len(ts) * 0.9)]))

    def site_latency(self, n=200):
        """The static page beside the relay, n requests on one kept-alive connection
        (curl): (median, p99) in ms, or None."""
        url = "https://127.0.0.1:%d/index.html" % self.apache_port
        cmd = ["curl", "-s", "--cacert", self.ca, "-w", "%{time_total}\n"]
        cmd += ["-o", "/dev/null", url] * n
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=n + 60).stdout
            ts = sorted(float(x) for x in out.split())
        except (subprocess.SubprocessError, ValueError) as e:
            log("site latency: %s" % e)
            return None
        if len(ts) < n // 2:
            return None
        return ts[len(ts) // 2] * 1000, ts[min(len(ts) - 1, int(len(ts) * 0.99))] * 1000

    def measure_idle(self, path, n=None, label=None, hold=None,
                     per_forward=MAX_TUNNELS_PER_FORWARD, settle=None):
        a = self.args
        cap, why = IDLE_CAP.get(path, (a.idle, ""))
        label = label or path
        hold = hold or a.idle_hold
        n = n if n is not None else min(a.idle, cap) if cap else 0
        if n == 0:
            self.record(label, "loopback", "idle_held", None, "tunnels", "n/a: %s" % why)
            return
        if path != "raw" and path != "tls" and path != "httptunnel":
            # a fresh Apache, so that children and threads left by another path do not count
            self.restart_apache()
        log("%s: idle ramp to %d" % (label, n))
        try:
            entry, server, client, stop = self.start_path(path, "loopback", tunnels=n,
                                                          per_forward=per_forward)
        except Exception as e:
            self.record(label, "loopback", "error", 0, "", "idle: cannot start: %s" % e)
            return
        try:
            w = self.tool_run(["echo", "127.0.0.1:%d" % entry, 3, 1, 30], 60)
            if w.get("error"):
                self.record(label, "loopback", "error", 0, "", "idle echo check: %s" % w["error"])
                return
            nclients = 1 + (n - 1) // IDLE_PER_PROC + len(client)
            time.sleep(1.0)
            stree = proc_tree(server)
            pss0 = pss_kib(stree)
            avail0 = mem_available_kib()
            core = self.core_pids() if path in OURS else None
            core0 = pss_kib(core) if core else 0
            kids = self.apache_children()
            kids0 = pss_kib(kids)
            threads0 = sum(threads_of(x) for x in stree)
            # several idle processes (a process holds at most RLIMIT_NOFILE tunnels),
            # each on ports of its own
            nproc = 1 + (n - 1) // IDLE_PER_PROC
            ports = self.entries or [entry]
            nproc = min(nproc, len(ports)) if path != "connect" else nproc
            procs = []
            t0 = time.monotonic()
            for j in range(nproc):
                share = n // nproc + (1 if j < n % nproc else 0)
                if path == "connect":
                    args = ["idle", "127.0.0.1:0", share, 1, 30, "connect-tls",
                            "127.0.0.1:%d" % self.apache_port, "127.0.0.1:%d" % self.target.port]
                else:
                    args = ["idle", "127.0.0.1:" + ",".join(str(x) for x in ports[j::nproc]),
                            share, a.idle_batch, 30]
                p = subprocess.Popen([self.tool] + [str(x) for x in args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
                harness._register(p)
                procs.append(p)
            nice = (one_client_machine(list(client) + [p.pid for p in procs])
                    if a.one_client_machine else None)
            if nice is not None:
                log("%s: %d client sessions at autogroup nice %d (one client machine)"
                    % (label, nclients, nice))
            try:
                held, errs = 0, []
                for p in procs:
                    line = _readline(p.stdout, a.idle_timeout) or ""
                    m = re.match(r"HELD (\d+)", line)
                    held += int(m.group(1)) if m else 0
                    e = parse_kv(line).get("error", "" if m else "no answer: %r" % line)
                    if not m:
                        e += " " + p.stderr.read1(2000).decode("utf-8", "replace").strip()
                    if e:
                        errs.append(e)
                ramp = time.monotonic() - t0
                err = "; ".join(errs)
                time.sleep(a.idle_settle if settle is None else settle)
                stree = proc_tree(server)
                ctree = proc_tree(client)
                pss1 = pss_kib(stree)
                avail1 = mem_available_kib()
                core1 = pss_kib(self.core_pids()) if core else 0
                kids1 = pss_kib(self.apache_children())
                nthreads = sum(threads_of(x) for x in stree)
                nprocs = len(stree)
                s0, c0 = cpu_seconds(stree), cpu_seconds(ctree)
                groups = self.cpu_groups(procs, client)
                g0 = {k: cpu_seconds(v) for k, v in groups.items()}
                time.sleep(hold)
                s1, c1 = cpu_seconds(proc_tree(server)), cpu_seconds(proc_tree(client))
                g1 = {k: cpu_seconds(v) for k, v in groups.items()}
                nthreads1 = sum(threads_of(x) for x in proc_tree(server))
                site = self.site_latency() if path in OURS else None
                # RH_BENCH_WAKE_CMD: a shell command started as every tunnel wakes
                # (a profiler: perf record -a -g -o FILE -- sleep 30)
                if os.environ.get("RH_BENCH_WAKE_CMD"):
                    subprocess.Popen(os.environ["RH_BENCH_WAKE_CMD"], shell=True)
                for p in procs:
                    try:
                        p.stdin.write(b"check\n")
                        p.stdin.flush()
                    except OSError:
                        pass
                alive, later, all_s = 0, 0, 0.0
                for p in procs:
                    line = _readline(p.stdout, 240) or ""
                    am = re.match(r"ALIVE (\d+)", line)
                    alive += int(am.group(1)) if am else 0
                    kv = parse_kv(line)
                    later += int(kv.get("later", 0))
                    all_s = max(all_s, float(kv.get("all_seconds", 0)))
                    if int(kv.get("closed", 0)) or int(kv.get("silent", 0)):
                        log("%s: no answer from %s closed and %s silent tunnels (entry "
                            "port:c|s, first ones): %s" % (label, int(kv.get("closed", 0)),
                                                            int(kv.get("silent", 0)),
                                                            kv.get("lost")))
            finally:
                for p in procs:
                    try:
                        p.stdin.close()
                    except OSError:
                        pass
                for p in procs:
                    try:
                        p.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        harness.kill_proc(p)
                    harness._unregister(p)
            # held: every tunnel that answered the check after the hold. The check
            # wakes all of them at once (each a TLS handshake or two): how many
            # answered within its first 30 s is said too, a figure of the wake
            note = "ramp %.1f s; %d alive after %.0f s idle" % (ramp, alive + later, hold)
            if later:
                note += " (%d answered within 30 s of all waking at once, the other %d " \
                        "within %.0f s)" % (alive, later, all_s)
            alive += later
            if nice is not None:
                note += "; client sessions at autogroup nice %d" % nice
            if err:
                note += "; stopped: %s" % err
            if held >= n and cap < a.idle:
                note += "; capped at %d: %s" % (cap, why)
            self.record(label, "loopback", "idle_held", alive, "tunnels", note)
            log("%s: held %d, alive %d (%s)" % (label, held, alive, note))
            if held and server:
                self.record(label, "loopback", "mem_per_idle", (pss1 - pss0) / held, "KiB",
                            "server PSS %d -> %d KiB; %d processes, %d threads"
                            % (pss0, pss1, nprocs, nthreads))
                self.record(label, "loopback", "idle_cpu", (s1 - s0), "s",
                            "server CPU seconds during %.0f s with %d idle tunnels"
                            % (hold, held))
                self.record(label, "loopback", "idle_cpu_pct", (s1 - s0) / hold * 100, "%",
                            "of one core, server, %.0f s hold" % hold)
                self.record(label, "loopback", "idle_cpu_groups", (s1 - s0), "s",
                            "CPU seconds over the %.0f s hold: %s" % (hold, ", ".join(
                                "%s %.2f" % (k, g1[k] - g0[k]) for k in sorted(groups))))
                self.record(label, "loopback", "idle_threads", nthreads1, "threads",
                            "server threads: %d before the ramp, %d after it, %d at the "
                            "hold's end" % (threads0, nthreads, nthreads1))
            if held and kids:
                self.record(label, "loopback", "child_mem_per_idle", (kids1 - kids0) / held,
                            "KiB", "Apache children's PSS only (smaps_rollup)")
            if site:
                self.record(label, "loopback", "site_p99", site[1], "ms",
                            "static page during the hold, kept-alive curl: median %.2f ms"
                            % site[0])
            if held:
                self.record(label, "loopback", "sys_mem_per_idle", (avail0 - avail1) / held, "KiB",
                            "MemAvailable drop / tunnel: both sides, target, kernel")
                self.record(label, "loopback", "client_idle_cpu", (c1 - c0), "s",
                            "client CPU seconds during the idle hold")
            if core:
                self.extra[(label, "core_kib_per_idle")] = (core1 - core0) / max(held, 1)
                self.record(label, "loopback", "core_mem_per_idle", (core1 - core0) / max(held, 1),
                            "KiB", "relay core PSS only")
        finally:
            stop()

    # ---- the run ----
    def run(self):
        a = self.args
        started = time.time()
        self.build()
        self.start_base()
        for variant in a.variants:
            for path in a.paths:
                if any(f in a.figures for f in ("up", "down", "multi", "echo", "site")):
                    self.measure_path(path, variant)
        if ("serve-idle" in a.figures and "loopback" in a.variants
                and any(p in RDV_OF for p in a.paths)):
            self.measure_serve_idle()
        if "idle" in a.figures and "loopback" in a.variants:
            for path in a.paths:
                self.measure_idle(path)
        if "idle-async" in a.figures and "loopback" in a.variants:
            self.async_conf = True
            for path in a.paths:
                if path in ASYNC_PATHS:
                    self.measure_idle(path, n=a.idle_async, label=path + "-async",
                                      hold=a.idle_async_hold, per_forward=a.idle_async_forward,
                                      settle=a.idle_async_settle)
            self.async_conf = False
        self.elapsed = time.time() - started


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------

COLUMNS = [  # metric, header, format, better
    ("thr_up", "up MB/s", "%.0f", "high"),
    ("thr_down", "down MB/s", "%.0f", "high"),
    ("thr_multi", "100 streams MB/s", "%.0f", "high"),
    ("echo_median", "echo median ms", "%.3f", "low"),
    ("echo_p99", "echo p99 ms", "%.3f", "low"),
    ("setup", "setup ms", "%.1f", "low"),
    ("setup_median", "connect ms", "%.2f", "low"),
    ("req_rtt", "HTTPS request ms", "%.3f", "low"),
    ("site_p99_quiet", "site p99 ms, quiet", "%.2f", "low"),
    ("site_p99_bulk", "site p99 ms, bulk", "%.2f", "low"),
    ("server_cpu_per_gb", "server CPU s/GB", "%.2f", "low"),
    ("client_cpu_per_gb", "client CPU s/GB", "%.2f", "low"),
    ("idle_held", "idle tunnels held", "%.0f", "high"),
    ("mem_per_idle", "server KiB/idle tunnel", "%.1f", "low"),
    ("idle_cpu", "server CPU s idle", "%.2f", "low"),
    ("serve_idle_cpu", "idle serve CPU s", "%.3f", "low"),
]


def lo_bytes():
    """Bytes sent on the loopback interface so far (all of this machine's)."""
    try:
        with open("/sys/class/net/lo/statistics/tx_bytes") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def value(rows, path, variant, metric):
    for r in rows:
        if r["path"] == path and r["variant"] == variant and r["metric"] == metric:
            return r["value"]
    return None


def ratio(v, ref):
    if v is None or ref in (None, 0):
        return None
    return v / ref


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "variant", "metric", "value", "unit", "ratio_to_connect",
                    "ratio_to_raw", "note"])
        for r in rows:
            if r["metric"] == "error":
                w.writerow([r["path"], r["variant"], "error", "", "", "", "", r["note"]])
                continue
            rc = ratio(r["value"], value(rows, "connect", r["variant"], r["metric"]))
            rr = ratio(r["value"], value(rows, "raw", r["variant"], r["metric"]))
            fmt = lambda x: "" if x is None else ("%.6g" % x)
            w.writerow([r["path"], r["variant"], r["metric"], fmt(r["value"]), r["unit"],
                        fmt(rc), fmt(rr), r["note"]])


def _cell(rows, path, variant, metric, fmt, with_ratio):
    v = value(rows, path, variant, metric)
    if v is None:
        return "-"
    s = fmt % v
    if with_ratio and path not in ("connect",):
        rc = ratio(v, value(rows, "connect", variant, metric))
        if rc is not None:
            s += " (%.2f C)" % rc
    return s


def targets(rows):
    """[(target text, figure, threshold text, met: True/False/None)]"""
    out = []

    def v(p, var, m):
        return value(rows, p, var, m)

    def check(text, num, den, factor, cmp="ge", unit="x"):
        if num is None or den is None or den == 0:
            out.append((text, "-", "no figure", None))
            return
        r = num / den
        met = r >= factor if cmp == "ge" else r <= factor
        out.append((text, "%.2f x" % r, "%s %.2f x" % (">=" if cmp == "ge" else "<=", factor),
                    met))

    for var in ("loopback", "delay"):
        for t in ("stream", "duplex"):
            for d in ("up", "down"):
                m = "thr_" + d
                check("%s %s throughput vs CONNECT (%s)" % (t, d, var), v(t, var, m),
                      v("connect", var, m), 0.9)
                check("%s %s throughput vs WebSocket (%s)" % (t, d, var), v(t, var, m),
                      v("websocket", var, m), 2.5)
    for d in ("up", "down"):
        m = "thr_" + d
        check("batch %s vs stream (loopback)" % d, v("batch", "loopback", m),
              v("stream", "loopback", m), 0.5)
        check("batch %s vs httptunnel (loopback)" % d, v("batch", "loopback", m),
              v("httptunnel", "loopback", m), 1.0)
        check("batch %s vs CONNECT (delay)" % d, v("batch", "delay", m),
              v("connect", "delay", m), 0.5)
        for var in ("loopback", "delay"):
            check("batch via nginx %s vs stream (%s)" % (d, var), v("batch-nginx", var, m),
                  v("stream", var, m), 0.25)
    for var in ("loopback", "delay"):
        for d in ("up", "down"):
            m = "thr_" + d
            check("auto through squid %s vs CONNECT (%s)" % (d, var),
                  v("auto-squid", var, m), v("connect", var, m), 0.9)
            check("auto through squid %s vs CONNECT through the same squid (%s)" % (d, var),
                  v("auto-squid", var, m), v("connect-squid", var, m), 0.9)
    for var in ("loopback", "delay"):
        for rdv, fwd in sorted(RDV_OF.items()):
            for d in ("up", "down"):
                m = "thr_" + d
                check("%s %s throughput vs %s to the target (%s)" % (rdv, d, fwd, var),
                      v(rdv, var, m), v(fwd, var, m), 0.8)
    # the website beside the relay keeps its latency while a tunnel moves bulk data:
    # no worse than while Apache's own CONNECT proxy moves the same
    for t in ("stream", "duplex", "batch"):
        check("static page p99 during a %s bulk download vs during CONNECT's (loopback)" % t,
              v(t, "loopback", "site_p99_bulk"), v("connect", "loopback", "site_p99_bulk"),
              1.2, "le")
    ic = v("rendezvous", "loopback", "serve_idle_cpu")
    out.append(("an idle relay-https serve's CPU (%d s)" % SERVE_IDLE_S,
                "-" if ic is None else "%.3f s" % ic, "~0 (< 0.05 s)",
                None if ic is None else ic < 0.05))
    for t, f in (("stream", 1.2), ("duplex", 1.5), ("batch", 3.0)):
        check("%s echo median vs CONNECT (loopback)" % t, v(t, "loopback", "echo_median"),
              v("connect", "loopback", "echo_median"), f, "le")
    # a batch echo is the bytes' trip (as CONNECT's) plus one HTTP request through
    # Apache: the floor no GET/POST transport goes under
    ce, rq = v("connect", "loopback", "echo_median"), v("connect", "loopback", "req_rtt")
    check("floor of a batch echo: CONNECT echo + one HTTPS request, vs CONNECT (loopback)",
          None if ce is None or rq is None else ce + rq, ce, 3.0, "le")
    check("batch echo vs its floor (CONNECT echo + one HTTPS request) (loopback)",
          v("batch", "loopback", "echo_median"), None if ce is None or rq is None else ce + rq,
          1.2, "le")
    for t in ("stream", "duplex", "batch", "batch-nginx"):
        e, c = v(t, "delay", "echo_median"), v("connect", "delay", "echo_median")
        if e is None or c is None:
            out.append(("%s echo within one extra round trip of CONNECT (delay)" % t, "-",
                        "no figure", None))
        else:
            out.append(("%s echo within one extra round trip of CONNECT (delay)" % t,
                        "%.1f ms vs %.1f ms" % (e, c), "<= CONNECT + 40 ms", e <= c + 40.0))
    for t in ("duplex", "stream", "batch"):
        h = v(t, "loopback", "idle_held")
        out.append(("%s: 5000 idle tunnels held (event MPM)" % t,
                    "-" if h is None else "%d" % h, ">= 5000", None if h is None else h >= 5000))
        mm = v(t, "loopback", "mem_per_idle")
        out.append(("%s: server memory per idle tunnel" % t,
                    "-" if mm is None else "%.1f KiB" % mm, "<= 128 KiB",
                    None if mm is None else mm <= 128))
        ic = v(t, "loopback", "idle_cpu")
        out.append(("%s: server CPU while idle" % t, "-" if ic is None else "%.2f s" % ic,
                    "~0 (< 0.05 s per hold)", None if ic is None else ic < 0.05))
    for p in ASYNC_PATHS:
        t = p + "-async"
        h = v(t, "loopback", "idle_held")
        if h is None:
            continue
        out.append(("%s: idle tunnels held with RelayAsync" % p, "%d" % h, ">= 20000",
                    h >= 20000))
        mm = v(t, "loopback", "mem_per_idle")
        out.append(("%s: server PSS per idle tunnel with RelayAsync" % p,
                    "-" if mm is None else "%.1f KiB" % mm, "<= 64 KiB",
                    None if mm is None else mm <= 64))
        pct = v(t, "loopback", "idle_cpu_pct")
        out.append(("%s: server CPU while idle with RelayAsync" % p,
                    "-" if pct is None else "%.2f %%" % pct, "<= 1 % of a core",
                    None if pct is None else pct <= 1.0))
    return out


def markdown(bench, rows):
    a = bench.args
    L = []
    add = L.append
    add("Run %s, %s; %.0f s in all." % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                                       "quick mode" if a.quick else "full mode",
                                       getattr(bench, "elapsed", 0)))
    add("")
    add("Command: `%s`" % a.command_line)
    add("")
    add("Machine: %s" % machine_text())
    add("")
    for var in a.variants:
        title = ("straight on loopback" if var == "loopback" else
                 "through the delay proxy (%s ms each way)" % a.delay_ms)
        add("#### %s" % title)
        add("")
        cols = [c for c in COLUMNS if any(value(rows, p, var, c[0]) is not None for p in a.paths)]
        add("| path | " + " | ".join(c[1] for c in cols) + " |")
        add("|---|" + "---|" * len(cols))
        for p in a.paths:
            cells = [_cell(rows, p, var, c[0], c[2], c[0] in ("thr_up", "thr_down", "thr_multi",
                                                                "echo_median"))
                     for c in cols]
            add("| %s | %s |" % (p, " | ".join(cells)))
        add("")
        add("(x C) = ratio to the CONNECT path on the same variant. Ratios to raw: results.csv.")
        add("")
    labels = [p + "-async" for p in ASYNC_PATHS
              if value(rows, p + "-async", "loopback", "idle_held") is not None]
    if labels:
        add("#### idle tunnels with RelayAsync (HTTP/1.1, TLS, parked in each child's reactor)")
        add("")
        add("| path | held | server KiB/tunnel | children KiB/tunnel | core KiB/tunnel | "
            "threads | idle CPU % of a core | static page p99 ms |")
        add("|---|---|---|---|---|---|---|---|")
        for p in labels:
            cells = [_cell(rows, p, "loopback", m, f, False) for m, f in (
                ("idle_held", "%.0f"), ("mem_per_idle", "%.1f"), ("child_mem_per_idle", "%.1f"),
                ("core_mem_per_idle", "%.1f"), ("idle_threads", "%.0f"),
                ("idle_cpu_pct", "%.2f"), ("site_p99", "%.2f"))]
            add("| %s | %s |" % (p, " | ".join(cells)))
        add("")
    errs = [r for r in rows if r["metric"] == "error"]
    notes = [r for r in rows if r["note"] and r["metric"] in ("idle_held", "mem_per_idle",
                                                               "thr_multi", "idle_threads",
                                                               "site_p99")]
    if notes or errs:
        add("Notes:")
        add("")
        for r in notes:
            add("- %s / %s %s: %s" % (r["path"], r["variant"], r["metric"], r["note"]))
        for r in errs:
            add("- %s / %s FAILED: %s" % (r["path"], r["variant"], r["note"]))
        add("")
    add("#### Targets")
    add("")
    add("| target | figure | wanted | met |")
    add("|---|---|---|---|")
    for text, fig, want, met in targets(rows):
        add("| %s | %s | %s | %s |" % (text, fig, want,
                                        {True: "yes", False: "**no**", None: "-"}[met]))
    add("")
    return "\n".join(L)


def machine_text():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    pk = []
    for p in ("apache2", "libcurl4", "libssl3", "nginx-light", "stunnel4", "proxytunnel",
              "websockify", "httptunnel"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        pk.append("%s %s" % (p, r.stdout.strip() or "?"))
    load = os.getloadavg()
    return ("%d cores (nproc), %s, %d MiB RAM, kernel %s, Debian %s; load average at the "
            "end %.2f %.2f %.2f; packages: %s" % (
                os.cpu_count(), cpu, mem, platform.release(), _debian_version(),
                load[0], load[1], load[2], ", ".join(pk)))


def _debian_version():
    try:
        with open("/etc/debian_version") as f:
            return f.read().strip()
    except OSError:
        return "?"


def plots(rows, outdir, variants, paths):
    """Throughput and echo bar charts (gnuplot, SVG); returns the files written."""
    if not os.path.exists(GNUPLOT):
        return []
    files = []
    dat = os.path.join(outdir, "plot.dat")
    with open(dat, "w") as f:
        f.write("# path " + " ".join("%s_%s" % (m, v) for v in variants
                                     for m in ("up", "down", "multi", "echo")) + "\n")
        for p in paths:
            vals = []
            for v in variants:
                for m in ("thr_up", "thr_down", "thr_multi", "echo_median"):
                    x = value(rows, p, v, m)
                    vals.append("%.6g" % x if x is not None else "NaN")
            f.write("%s %s\n" % (p, " ".join(vals)))
    for i, v in enumerate(variants):
        base = 2 + 4 * i
        if not any(value(rows, p, v, m) is not None for p in paths
                   for m in ("thr_up", "thr_down", "thr_multi", "echo_median")):
            continue
        thr = os.path.join(outdir, "throughput-%s.svg" % v)
        echo = os.path.join(outdir, "echo-%s.svg" % v)
        script = """
set terminal svg size 900,420 dynamic font "sans,11"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -30
set grid ytics
set key top right
set datafile missing "NaN"
set output "{thr}"
set title "Throughput, {v} (MB/s, higher is better)"
set ylabel "MB/s"
plot "{dat}" using {c1}:xtic(1) title "single stream up", "" using {c2} title "single stream down", "" using {c3} title "100 streams down"
set output "{echo}"
set title "One-byte echo round trip, {v} (median, ms, lower is better)"
set ylabel "ms"
set logscale y
plot "{dat}" using {c4}:xtic(1) title "echo median"
""".format(thr=thr, echo=echo, v=v, dat=dat, c1=base, c2=base + 1, c3=base + 2, c4=base + 3)
        r = subprocess.run([GNUPLOT], input=script, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode == 0:
            files += [thr, echo]
        else:
            log("gnuplot failed: %s" % r.stderr[-500:])
    return files


BEGIN, END = "<!-- bench:begin (generated by bench/bench.py) -->", "<!-- bench:end -->"


def update_docs(md, plot_files):
    doc = os.path.join(REPO, "docs", "BENCHMARKS.md")
    try:
        with open(doc) as f:
            text = f.read()
    except OSError:
        text = "# Benchmarks\n\n%s\n%s\n" % (BEGIN, END)
    block = md
    for p in plot_files:
        name = "bench-" + os.path.basename(p)
        shutil.copy2(p, os.path.join(REPO, "docs", name))
        block += "\n![%s](%s)\n" % (name, name)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + BEGIN + "\n" + block + "\n" + END + tail
    else:
        text += "\n" + BEGIN + "\n" + block + "\n" + END + "\n"
    with open(doc, "w") as f:
        f.write(text)
    log("updated %s" % doc)


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated subset of: %s" % ",".join(PATHS))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="loopback,delay")
    ap.add_argument("--figures", default=",".join(FIGURES),
                    help="comma-separated subset of: %s" % ",".join(FIGURES))
    ap.add_argument("--quick", action="store_true",
                    help="a seconds-long smoke: small transfers, few echoes, 20 idle tunnels")
    ap.add_argument("--bytes", type=int, default=200 * MB,
                    help="bytes per throughput figure (default 200 MB)")
    ap.add_argument("--seconds", type=float, default=30,
                    help="... or about this long, whichever comes first (default 30)")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--echo-count", type=int, default=2000)
    ap.add_argument("--setup-count", type=int, default=30,
                    help="new connections timed one after another (figure setup)")
    ap.add_argument("--echo-count-delay", type=int, default=200)
    ap.add_argument("--idle", type=int, default=5000, help="idle tunnels to ramp up to")
    ap.add_argument("--idle-batch", type=int, default=50)
    ap.add_argument("--idle-async", type=int, default=20000,
                    help="idle tunnels to ramp up to with RelayAsync (stream, batch)")
    ap.add_argument("--idle-async-hold", type=float, default=30.0,
                    help="seconds the RelayAsync idle tunnels are held while CPU is measured")
    ap.add_argument("--idle-async-forward", type=int, default=320,
                    help="tunnels per relay-https forward in the RelayAsync ramp (rhbench "
                         "idle spreads over 64 forwarders at most)")
    ap.add_argument("--idle-async-settle", type=float, default=80.0,
                    help="seconds between the RelayAsync ramp's end and the hold: the "
                         "client's watch takes an idle stream tunnel 60 s (--idle-push) "
                         "after its last byte, so the hold measures them waiting there")
    ap.add_argument("--idle-hold", type=float, default=10.0)
    ap.add_argument("--idle-settle", type=float, default=3.0)
    ap.add_argument("--idle-timeout", type=float, default=900.0)
    ap.add_argument("--no-one-client-machine", dest="one_client_machine",
                    action="store_false",
                    help="idle ramps: leave every client session its own autogroup weight "
                         "(see one_client_machine)")
    ap.add_argument("--probe-timeout", type=float, default=30.0,
                    help="seconds for the probe that sizes each transfer")
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--delay-window", type=int, default=16 * 1024 * 1024,
                    help="bytes the delay proxy holds per direction (default 16 MiB)")
    ap.add_argument("--thread-stack", type=int, default=262144,
                    help="Apache ThreadStackSize (65536 crashes children: docs/BENCHMARKS.md)")
    ap.add_argument("--h2-min-workers", type=int, default=16,
                    help="H2MinWorkers (per child: a high value times 40+ children "
                         "exhausts the machine's threads)")
    ap.add_argument("--h2-max-workers", type=int, default=512, help="H2MaxWorkers")
    ap.add_argument("--max-mem-free", type=int, default=64,
                    help="Apache MaxMemFree in KiB (0: not set, httpd's unlimited default); "
                         "set, it also makes mod_ssl release idle connections' buffers")
    ap.add_argument("--malloc-arena-max", type=int, default=2,
                    help="MALLOC_ARENA_MAX for every process of the run (0: glibc's default, "
                         "8 per core); see docs/BENCHMARKS.md, idle memory")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="output directory (default bench/results)")
    ap.add_argument("--tmpdir", default="/tmp")
    ap.add_argument("--update-docs", action="store_true",
                    help="rewrite the generated block of docs/BENCHMARKS.md and its plots")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args(argv)
    a.command_line = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], REPO)] + argv)
    a.paths = [p for p in a.paths.split(",") if p]
    a.variants = [v for v in a.variants.split(",") if v]
    a.figures = [f for f in a.figures.split(",") if f]
    for p in a.paths:
        if p not in PATHS:
            ap.error("unknown path %s" % p)
    for v in a.variants:
        if v not in VARIANTS:
            ap.error("unknown variant %s" % v)
    if a.quick:
        a.bytes = min(a.bytes, 20 * MB)
        a.seconds = min(a.seconds, 2)
        a.streams = min(a.streams, 10)
        a.echo_count = min(a.echo_count, 100)
        a.echo_count_delay = min(a.echo_count_delay, 10)
        a.idle = min(a.idle, 20)
        a.idle_async = min(a.idle_async, 20)
        a.idle_async_hold = min(a.idle_async_hold, 1)
        a.idle_hold = min(a.idle_hold, 1)
        a.idle_settle = min(a.idle_settle, 0.5)
        a.idle_async_settle = min(a.idle_async_settle, 0.5)
    return a


def _exit_on_signal(signum, frame):
    # SIGTERM or SIGHUP (a timeout, a closed terminal): unwind, so that the
    # finally below and the harness's atexit stop Apache, nginx and the peers
    raise SystemExit(128 + signum)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    missing = sorted(set(b for p in a.paths for b in PEER_BINS.get(p, []) if not os.path.exists(b)))
    if missing:
        raise SystemExit("bench: missing peer programs %s (./quickstart installs them)"
                         % " ".join(missing))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 12 * max(a.idle, a.idle_async) + 4096     # every side of every tunnel
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = min(want, int(f.read()))
        if want > hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))   # root only
    except (OSError, ValueError):
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * max(a.idle, a.idle_async) + 1000:
        log("RLIMIT_NOFILE is %d: the idle ramp may stop early (raise ulimit -Hn)" % soft)
    if a.malloc_arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(a.malloc_arena_max)
    b = Bench(a)
    log("working in %s" % b.work)
    try:
        b.run()
    finally:
        b.stop_all()
    os.makedirs(a.out, exist_ok=True)
    csv_path = os.path.join(a.out, "results.csv")
    write_csv(b.rows, csv_path)
    md = markdown(b, b.rows)
    md_path = os.path.join(a.out, "results.md")
    with open(md_path, "w") as f:
        f.write(md + "\n")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"rows": b.rows, "args": {k: v for k, v in vars(a).items()}}, f, indent=1)
    pf = plots(b.rows, a.out, a.variants, a.paths)
    if a.update_docs:
        update_docs(md, pf)
    if not a.keep:
        shutil.rmtree(b.work, ignore_errors=True)
    else:
        log("kept %s" % b.work)
    sys.stdout.write(md + "\n")
    log("wrote %s, %s%s" % (csv_path, md_path, "".join(", " + p for p in pf)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
