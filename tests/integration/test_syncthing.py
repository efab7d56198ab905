"""Two unmodified Syncthing devices sync a folder through strelaysrv behind the
relay, each through a corporate-style proxy (the brief's first scenario).

Everything is Debian's own: syncthing (the devices), syncthing-relaysrv
(strelaysrv, the relay), squid (CONNECT to the site's TLS port only, Basic
proxy authentication). strelaysrv listens on 127.0.0.1:P, a port only the
Apache host reaches; the site offers it as `RelayTarget syncthing`. Each device
has its own `relay-https forward` through squid, listening on a loopback
address of its own at the same port P (127.0.0.2:P, 127.0.0.3:P), and knows
the relay only as relay://127.0.0.N:P/?id=... (its certificate pinned). The
relay advertises session connections with no address of their own
(-ext-address :P), so each device makes its session connection to the host
it reached the relay on: its own forward. The devices have no other way to
each other (no TCP listener, no discovery, no NAT traversal).

A file written on each side arrives on the other with the same sha256, and
a file written after that too (the held connection); with the default
transport (auto) and with batch (GET/POST only), and with the proxy's
connections to the site cut every few seconds; the devices report relay
connections that never closed; strelaysrv's /status counts the bytes it
proxied; squid and the relay saw the tunnels."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET

import pytest

import harness
import intermediaries as im
from faultproxy import FaultProxy
from test_ssh import sha256_file

SYNCTHING = shutil.which("syncthing")
STRELAYSRV = shutil.which("strelaysrv")
PROXY_USER, PROXY_PASS = "stproxyuser", "st-proxy-S3cret"
MB = 1024 * 1024
SYNC_TIMEOUT = 240
# faults that end a connection soon (test_faults.py has the silent ones)
FAULTS = ("rst", "fin", "delay", "cut_req_headers", "cut_resp_headers")

pytestmark = pytest.mark.skipif(not (SYNCTHING and STRELAYSRV),
                                reason="needs Debian's syncthing and syncthing-relaysrv")


def write_random(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return sha256_file(path)


class Strelaysrv:
    """strelaysrv on 127.0.0.1:port, no pool, /status on its own port."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.port = harness.free_port()
        self.status_port = harness.free_port()
        self.log = os.path.join(root, "strelaysrv.log")
        self.proc = None
        self.id = None

    def start(self):
        cmd = [STRELAYSRV, "-keys", self.root, "-listen", "127.0.0.1:%d" % self.port,
               "-ext-address", ":%d" % self.port, "-pools=",
               "-status-srv", "127.0.0.1:%d" % self.status_port]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True)
        harness._register(self.proc)

        def ready():
            m = re.search(r"relay://\S*\?id=([A-Z0-9-]+)", harness._read(self.log))
            if m:
                self.id = m.group(1)
            return self.proc.poll() is not None or (self.id and self.status() is not None)
        harness.wait_for(ready, 30, interval=0.2)
        assert self.proc.poll() is None and self.id, "strelaysrv did not start:\n" + self.text()
        return self

    def status(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/status" % self.status_port,
                                        timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def text(self):
        return harness._read(self.log)[-4000:]

    def stop(self):
        if self.proc:
            harness.kill_proc(self.proc)


class Device:
    """One syncthing with its own home, a GUI/REST port on 127.0.0.1 and a folder."""

    def __init__(self, root, name):
        self.name = name
        self.home = os.path.join(root, name)
        self.folder = os.path.join(root, name + "-sync")
        os.makedirs(self.folder, exist_ok=True)
        self.log = os.path.join(root, name + ".log")
        self.gui_port = harness.free_port()
        self.apikey = secrets.token_hex(16)
        self.proc = None
        out = subprocess.run([SYNCTHING, "generate", "--home=" + self.home, "--no-default-folder",
                              "--skip-port-probing"], stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=120, env=self._env())
        text = (out.stdout + out.stderr).decode(errors="replace")
        m = re.search(r"Device ID: ([A-Z0-9-]+)", text)
        assert out.returncode == 0 and m, "syncthing generate failed:\n" + text
        self.id = m.group(1)

    def _env(self):
        env = dict(os.environ, HOME=os.path.dirname(self.home), STNOUPGRADE="1",
                   STNODEFAULTFOLDER="1", STTRACE="relay")
        env.pop("all_proxy", None)
        env.pop("https_proxy", None)
        env.pop("http_proxy", None)
        return env

    def configure(self, listen, peer, peer_address, folder_id):
        """Only a relay listener, the peer reachable only through the relay,
        nothing that finds or reaches devices another way."""
        path = os.path.join(self.home, "config.xml")
        tree = ET.parse(path)
        top = tree.getroot()
        gui = top.find("gui")
        gui.find("address").text = "127.0.0.1:%d" % self.gui_port
        gui.find("apikey").text = self.apikey
        opts = top.find("options")
        for key, value in (("listenAddress", listen), ("globalAnnounceEnabled", "false"),
                           ("localAnnounceEnabled", "false"), ("relaysEnabled", "true"),
                           ("natEnabled", "false"), ("urAccepted", "-1"),
                           ("startBrowser", "false"), ("crashReportingEnabled", "false"),
                           ("autoUpgradeIntervalH", "0"), ("reconnectionIntervalS", "5"),
                           ("relayReconnectIntervalM", "1"), ("stunServer", ""),
                           ("minHomeDiskFree", "0")):
            el = opts.find(key)
            if el is None:
                el = ET.SubElement(opts, key)
            el.text = value
        dev = ET.SubElement(top, "device", id=peer.id, name=peer.name, compression="metadata",
                            introducer="false", skipIntroductionRemovals="false",
                            introducedBy="")
        ET.SubElement(dev, "address").text = peer_address
        folder = ET.Element("folder", id=folder_id, label=folder_id, path=self.folder,
                            type="sendreceive", rescanIntervalS="2", fsWatcherEnabled="false",
                            fsWatcherDelayS="1", ignorePerms="false", autoNormalize="true")
        ET.SubElement(folder, "filesystemType").text = "basic"
        for d in (self.id, peer.id):
            ET.SubElement(folder, "device", id=d, introducedBy="")
        ET.SubElement(folder, "minDiskFree", unit="%").text = "0"
        top.insert(0, folder)
        tree.write(path)

    def start(self):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [SYNCTHING, "serve", "--home=" + self.home, "--no-browser", "--no-restart",
                 "--no-upgrade", "--logflags=3"], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, env=self._env())
        harness._register(self.proc)
        harness.wait_for(lambda: self.proc.poll() is not None or self.rest("system/ping"),
                         60, interval=0.3)
        assert self.proc.poll() is None, "syncthing %s exited:\n%s" % (self.name, self.text())
        return self

    def rest(self, what):
        req = urllib.request.Request("http://127.0.0.1:%d/rest/%s" % (self.gui_port, what),
                                     headers={"X-API-Key": self.apikey})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def text(self):
        return harness._read(self.log)[-6000:]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            harness.kill_proc(self.proc)


@pytest.fixture
def workdir(tmp_path_factory):
    return harness.www_tmpdir(tmp_path_factory, "syncthing")


@pytest.fixture
def relay(workdir):
    r = Strelaysrv(os.path.join(workdir, "strelaysrv")).start()
    yield r
    r.stop()


def peer_drops(dev, peer):
    """How often dev's log says its connection to peer closed."""
    return sum(1 for l in harness._read(dev.log).splitlines()
               if "Connection to %s" % peer.id in l and "closed" in l)


@pytest.mark.rh_timeout(600)
@pytest.mark.parametrize("transport,cuts", [("auto", False), ("batch", False), ("auto", True)],
                         ids=["auto", "batch", "auto-cuts"])
def test_two_syncthing_devices_sync_through_strelaysrv(apache_factory, module_so, targets,
                                                       relay, client_bin, tls, workdir,
                                                       transport, cuts):
    """cuts: the proxy's connections to the site pass a fault proxy that resets,
    closes, delays and cuts them inside their headers every 1-4 s (or 0.5-6 MB):
    the tunnels resume and Syncthing's connection never notices."""
    apache = apache_factory.get("event", module=module_so,
                                targets=dict(targets, syncthing="127.0.0.1:%d" % relay.port))
    fp = None
    site_port = apache.port
    if cuts:
        seed = int(os.environ.get("RH_FAULT_SEED", secrets.randbelow(1 << 31)))
        fp = FaultProxy(apache.port, seed=seed, mode="mix", mix_modes=FAULTS, min_life=1.0,
                        max_life=4.0, life_bytes=(512 * 1024, 6 * MB))
        print("fault proxy seed %d (replay: RH_FAULT_SEED=%d)" % (seed, seed))
        site_port = fp.port
    squid = im.Squid(os.path.join(workdir, "squid"), connect_ports=[site_port],
                     auth=(PROXY_USER, PROXY_PASS)).start()
    fwds, devs = [], []
    try:
        url = "https://127.0.0.1:%d/relay" % site_port
        args = ["-x", squid.url, "-U", "%s:%s" % (PROXY_USER, PROXY_PASS),
                "--transport", transport]
        for host in ("127.0.0.2", "127.0.0.3"):
            fwds.append(harness.Forward(client_bin, url, "syncthing", cacert=tls["ca"],
                                        port=relay.port, host=host, extra_args=args,
                                        env=im.clean_env()))
        a, b = Device(workdir, "alpha"), Device(workdir, "beta")
        devs = [a, b]
        uri = "relay://%s:%d/?id=%s"
        a.configure(uri % ("127.0.0.2", relay.port, relay.id), b,
                    uri % ("127.0.0.2", relay.port, relay.id), "rhsync")
        b.configure(uri % ("127.0.0.3", relay.port, relay.id), a,
                    uri % ("127.0.0.3", relay.port, relay.id), "rhsync")
        want_b = {"from-alpha.bin": write_random(os.path.join(a.folder, "from-alpha.bin"),
                                                 16 * MB),
                  "small.txt": write_random(os.path.join(a.folder, "small.txt"), 1000)}
        want_a = {"from-beta.bin": write_random(os.path.join(b.folder, "from-beta.bin"), 4 * MB)}
        a.start()
        b.start()

        def synced():
            for dev, want in ((b, want_b), (a, want_a)):
                for name, digest in want.items():
                    p = os.path.join(dev.folder, name)
                    if not os.path.exists(p) or sha256_file(p) != digest:
                        return False
            return True
        t0 = time.monotonic()
        ok = harness.wait_for(synced, SYNC_TIMEOUT, interval=1.0)
        took = time.monotonic() - t0
        if ok:
            # a change made later travels the connection the devices already hold
            want_a["later.bin"] = write_random(os.path.join(b.folder, "later.bin"), 2 * MB)
            ok = harness.wait_for(synced, SYNC_TIMEOUT, interval=1.0)
        conns = {d.name: d.rest("system/connections") for d in devs}
        status = relay.status()
        report = ("alpha:\n%s\nbeta:\n%s\nstrelaysrv:\n%s\nforwards:\n%s\n%s\nconnections: %s"
                  % (a.text(), b.text(), relay.text(), fwds[0].stderr_text(),
                     fwds[1].stderr_text(), conns))
        assert ok, "not synced within %d s\n%s" % (SYNC_TIMEOUT, report)
        print("synced both ways through strelaysrv in %.1f s" % took)
        # the devices are connected to each other through the relay, nothing else,
        # and their connection held (through the cuts too)
        for dev, peer in ((a, b), (b, a)):
            c = (conns[dev.name] or {}).get("connections", {}).get(peer.id, {})
            assert c.get("connected") and c.get("type", "").startswith("relay"), report
            assert peer_drops(dev, peer) == 0, report
        if fp:
            print(fp.describe())
            assert fp.stats()["faults"] > 0, fp.describe()
        # strelaysrv carried the files (both ways: 22 MB and more)
        assert status and status["bytesProxied"] >= 22 * MB, status
        assert status["numActiveSessions"] >= 1, status
        # each device reached the relay only through its own forward, through squid
        for f in fwds:
            assert any("session" in l and "opened" in l for l in f.lines()), f.stderr_text()
            if transport == "batch":
                assert im.last_transport(f.lines()) == "batch", f.stderr_text()
        # squid logs a tunnel when it ends: authenticated CONNECTs to the site
        for d in devs:
            d.stop()
        for f in fwds:
            f.stop()
        tunnel = "TCP_TUNNEL/200 "
        harness.wait_for(lambda: tunnel in harness._read(squid.access_log), 15, interval=0.2)
        log = harness._read(squid.access_log)
        assert any(tunnel in l and "CONNECT 127.0.0.1:%d %s " % (site_port, PROXY_USER) in l
                   for l in log.splitlines()), log[-2000:]
    finally:
        for d in devs:
            d.stop()
        for f in fwds:
            f.stop()
        squid.stop()
        if fp:
            fp.stop()
