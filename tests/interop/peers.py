"""Real DNS servers on loopback for interop tests: BIND's `named`, and `gitdns serve` itself.

Rules this module keeps:
- Every server runs in the foreground on 127.0.0.1 and an unprivileged port, with its config
  and its log in a directory the caller owns; every wait is bounded, and a server that does not
  come up is stopped and reported with the tail of its log.
- A handle (`Peer`) is a context manager; `stop()` is idempotent and always reaps the process
  (SIGTERM, then SIGKILL after a timeout). Tests hold handles in fixtures with finalizers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

NAMED = "/usr/sbin/named"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# Lines of named's log that mean it will never serve what it was given.
NAMED_FATAL = re.compile(
    r"^.*(not loaded due to errors|loading configuration: .*|exiting \(due to fatal error\)).*$",
    re.MULTILINE,
)


def read_frame(sock: socket.socket) -> bytes:
    """One length-prefixed DNS message from a TCP socket (ConnectionError once it closes)."""
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    return exact(int.from_bytes(exact(2), "big"))


def free_port() -> int:
    """A port that is free on 127.0.0.1 for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


@dataclass
class Peer:
    """A running server process: where it listens and where it logs."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    host: str = LOOPBACK
    _log_file: object = field(default=None, repr=False)

    def log_text(self, tail: int = 60) -> str:
        """The last `tail` lines of the server's log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-tail:])

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Terminate and reap the process (kill after `timeout`); returns its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        return self.proc.returncode

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def soa_probe(host: str, port: int, zone: str, tcp: bool = False, timeout: float = 0.3):
    """One SOA query for `zone`; the response, or None when nothing came back in time."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    try:
        if tcp:
            return dns.query.tcp(query, host, port=port, timeout=timeout)
        return dns.query.udp(query, host, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError, EOFError, dns.exception.DNSException):
        return None


def _serves(response, zone: str) -> bool:
    if response is None or response.rcode() != dns.rcode.NOERROR:
        return False
    if not response.flags & dns.flags.AA:
        return False
    origin = dns.name.from_text(zone)
    return any(r.rdtype == dns.rdatatype.SOA and r.name == origin for r in response.answer)


def wait_ready(
    peer: Peer,
    zones: Iterable[str],
    timeout: float = START_TIMEOUT,
    fatal: re.Pattern[str] | None = None,
) -> None:
    """Poll until every zone in `zones` answers its SOA authoritatively over UDP (the first one
    over TCP too); with no zones, until the peer answers anything over UDP and TCP. On timeout,
    exit, or a line of the log that matches `fatal`, stop the peer and raise with its log."""
    zones = list(zones)
    failed = None
    if zones:
        probes = [(z, False) for z in zones] + [(zones[0], True)]
    else:
        probes = [(".", False), (".", True)]
    deadline = time.monotonic() + timeout
    while probes and peer.running() and time.monotonic() < deadline:
        zone, tcp = probes[0]
        response = soa_probe(peer.host, peer.port, zone, tcp=tcp)
        if (response is not None) if not zones else _serves(response, zone):
            probes.pop(0)
            continue
        if fatal is not None and (failed := fatal.search(peer.log_text(tail=10_000))):
            break
        time.sleep(0.05)
    if not probes:
        return
    status = peer.proc.poll()
    peer.stop()
    if failed is not None:
        why = f"failed ({failed.group(0).strip()})"
    elif status is not None:
        why = f"exited with status {status}"
    else:
        why = f"not ready in {timeout}s"
    zone, tcp = probes[0]
    waiting = f" (waiting for the SOA of {zone} over {'TCP' if tcp else 'UDP'})"
    raise RuntimeError(f"{peer.name} on port {peer.port} {why}{waiting}; log:\n{peer.log_text()}")


def _spawn(name: str, argv: Sequence[str], log_path: Path, port: int, **kw) -> Peer:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Peer.stop
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, **kw
        )
    except BaseException:
        log_file.close()
        raise
    return Peer(name=name, proc=proc, port=port, log_path=log_path, _log_file=log_file)


@contextlib.contextmanager
def _stopped_on_error(peer: Peer):
    """Stop `peer` if the block raises anything (an interrupt included), then re-raise."""
    try:
        yield
    except BaseException:
        peer.stop()
        raise


def named_conf(workdir: Path, zones: Mapping[str, Path], port: int, extra_options: str = "") -> str:
    """named.conf for a non-recursive primary of `zones` on 127.0.0.1:`port`."""
    wd = str(workdir)
    zone_lines = "\n".join(
        f'zone "{name.rstrip(".") or "."}" {{ type primary; file "{Path(path).resolve()}"; }};'
        for name, path in zones.items()
    )
    return f"""options {{
    directory "{wd}";
    pid-file none;
    session-keyfile "{wd}/session.key";
    managed-keys-directory "{wd}";
    recursion no;
    dnssec-validation no;
    notify no;
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    minimal-responses no-auth;
    minimal-any yes;
    {extra_options}
}};
controls {{ }};
{zone_lines}
"""


def start_named(
    workdir: Path | str,
    zones: Mapping[str, Path],
    port: int,
    extra_options: str = "",
    timeout: float = START_TIMEOUT,
) -> Peer:
    """Start BIND as a primary of `zones` (zone name -> master file) on 127.0.0.1:`port` and
    wait until every zone answers its SOA. Runs as the current user (root here, without `-u`:
    named keeps its privileges and needs no `bind` user for a temp-dir config)."""
    if not os.access(NAMED, os.X_OK):
        raise RuntimeError(f"{NAMED} is not installed")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "named.conf"
    conf.write_text(named_conf(workdir, zones, port, extra_options))
    peer = _spawn("named", [NAMED, "-g", "-c", str(conf)], workdir / "named.log", port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout, fatal=NAMED_FATAL)
    return peer


def start_gitdns(
    repo_dir: Path | str,
    port: int,
    data_dir: Path | str,
    extra_args: Sequence[str] = (),
    *,
    zones: Iterable[str] = (),
    log_path: Path | str | None = None,
    timeout: float = START_TIMEOUT,
) -> Peer:
    """Run `python -m gitdns serve` on the git repository `repo_dir`, listening on
    127.0.0.1:`port`, and wait until each of `zones` answers its SOA (until it answers at all
    when `zones` is empty). The log goes to `log_path` (default: beside `data_dir`)."""
    data_dir = Path(data_dir)
    log = Path(log_path) if log_path else data_dir.parent / f"gitdns-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "gitdns",
        "serve",
        "--remote",
        str(repo_dir),
        "--listen",
        f"{LOOPBACK}:{port}",
        "--data-dir",
        str(data_dir),
        # Test zones name name servers at documentation addresses (192.0.2.x): NOTIFY goes only
        # to the --also-notify targets a test gives, never off loopback.
        "--notify",
        "explicit",
        *extra_args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    peer = _spawn("gitdns serve", argv, log, port, env=env)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout)
    return peer


def make_git_repo(
    path: Path | str, files: Mapping[str, str | bytes], message: str = "zones"
) -> Path:
    """A git repository at `path` (branch main) with `files` committed at its top level."""
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not installed")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ident = ["-c", "user.name=gitdns tests", "-c", "user.email=tests@gitdns.invalid"]
    ident += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]

    def run(*args: str) -> None:
        subprocess.run([git, *ident, *args], cwd=path, check=True, capture_output=True, timeout=30)

    run("init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    run("add", "-A")
    run("commit", "-q", "-m", message)
    return path


# -- real secondaries of a primary on loopback ---------------------------------------------------

KNOTD = "/usr/sbin/knotd"
NSD = "/usr/sbin/nsd"


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as the peers' configs spell it."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"

    @property
    def dig(self) -> str:
        return f"{self.algorithm}:{self.name}:{self.secret}"


def start_named_secondary(
    workdir: Path | str, port: int, primary_port: int, zones: Iterable[str], key: TsigKey,
    timeout: float = START_TIMEOUT,
) -> Peer:
    """BIND as a secondary of 127.0.0.1:`primary_port` for `zones`, transfers signed with `key`;
    it accepts NOTIFY from 127.0.0.1 and waits until every zone is served."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    zones = list(zones)
    zone_lines = "\n".join(
        f'zone "{z}" {{ type secondary; file "{workdir}/{z}.bk"; '
        f'primaries {{ 127.0.0.1 port {primary_port} key "{key.name}"; }}; '
        f"allow-notify {{ 127.0.0.1; }}; }};"
        for z in zones
    )
    conf = workdir / "named.conf"
    conf.write_text(f"""options {{
    directory "{workdir}"; pid-file none; session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}"; recursion no; dnssec-validation no; notify no;
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
}};
controls {{ }};
key "{key.name}" {{ algorithm {key.algorithm}; secret "{key.secret}"; }};
{zone_lines}
""")
    peer = _spawn("named (secondary)", [NAMED, "-g", "-c", str(conf)], workdir / "named.log",
                  port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout)
    return peer


def start_knot_secondary(
    workdir: Path | str, port: int, primary_port: int, zones: Iterable[str], key: TsigKey,
    timeout: float = START_TIMEOUT,
) -> Peer:
    """Knot DNS as a secondary (it asks IXFR once it has a copy)."""
    workdir = Path(workdir)
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    zones = list(zones)
    zone_lines = "\n".join(
        f"  - domain: {z}\n    master: primary\n    acl: notify_from_primary" for z in zones
    )
    conf = workdir / "knot.conf"
    conf.write_text(f"""server:
  listen: 127.0.0.1@{port}
  rundir: "{workdir}"
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: info
database:
  storage: "{workdir}/db"
key:
  - id: {key.name}
    algorithm: {key.algorithm}
    secret: {key.secret}
remote:
  - id: primary
    address: 127.0.0.1@{primary_port}
    key: {key.name}
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
zone:
{zone_lines}
""")
    peer = _spawn("knotd (secondary)", [KNOTD, "-c", str(conf)], workdir / "knot.log", port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout)
    return peer


def start_nsd_secondary(
    workdir: Path | str, port: int, primary_port: int, zones: Iterable[str], key: TsigKey,
    timeout: float = START_TIMEOUT,
) -> Peer:
    """NSD as a secondary (AXFR; NSD has no dynamic update)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    zones = list(zones)
    zone_lines = "\n".join(
        f"zone:\n  name: {z}\n  request-xfr: AXFR 127.0.0.1@{primary_port} {key.name}\n"
        f"  allow-notify: 127.0.0.1 NOKEY\n  zonefile: {z}.zone"
        for z in zones
    )
    conf = workdir / "nsd.conf"
    conf.write_text(f"""server:
  port: {port}
  ip-address: 127.0.0.1
  zonesdir: "{workdir}"
  pidfile: ""
  username: ""
  database: ""
  xfrdfile: "{workdir}/xfrd.state"
  zonelistfile: "{workdir}/zone.list"
  verbosity: 2
remote-control:
  control-enable: no
key:
  name: {key.name}
  algorithm: {key.algorithm}
  secret: "{key.secret}"
{zone_lines}
""")
    peer = _spawn("nsd (secondary)", [NSD, "-d", "-c", str(conf)], workdir / "nsd.log", port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout)
    return peer


@contextlib.contextmanager
def http_git_server(bare: Path, login: tuple[str, str] | None = None):
    """dulwich's smart-HTTP git server for the bare repository `bare`, in a thread on
    127.0.0.1, optionally behind HTTP basic auth; yields its URL."""
    import base64
    import threading
    from wsgiref.simple_server import make_server

    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_wsgi_chain

    served = Repo(str(bare))
    app = make_wsgi_chain(DictBackend({"/": served}))
    expected = "Basic " + base64.b64encode(":".join(login).encode()).decode() if login else None

    def with_login(environ, start_response):
        if expected and environ.get("HTTP_AUTHORIZATION") != expected:
            start_response("401 Unauthorized",
                           [("WWW-Authenticate", 'Basic realm="zones"'), ("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, with_login, handler_class=WSGIRequestHandlerLogger,
                         server_class=WSGIServerLogger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        served.close()


# -- an ACME server on loopback: pebble (Debian package `pebble`) ---------------------------------

PEBBLE = "/usr/bin/pebble"


@dataclass
class Pebble:
    """A running pebble: its ACME directory, the CA file that makes its HTTPS trusted, and its
    management port (the issuing root is at /roots/0 there, new on every start)."""

    peer: Peer
    port: int
    mgmt_port: int
    ca_bundle: Path

    @property
    def directory(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/dir"

    def root_pem(self) -> bytes:
        """The root that signs what this pebble issues (fetched: it changes on every start)."""
        import requests

        url = f"https://{LOOPBACK}:{self.mgmt_port}/roots/0"
        response = requests.get(url, verify=str(self.ca_bundle), timeout=5)
        response.raise_for_status()
        return response.content

    def stop(self) -> int | None:
        return self.peer.stop()

    def running(self) -> bool:
        return self.peer.running()

    def log_text(self, tail: int = 60) -> str:
        return self.peer.log_text(tail)


def make_pebble_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for pebble's HTTPS listener (the Debian package ships none): the leaf
    names 127.0.0.1, since every URL of the directory is built from the listen address.
    Returns (ca.pem, cert.pem, key.pem); made once per directory."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    workdir.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        return ca_path, cert_path, key_path
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test TLS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def start_pebble(
    workdir: Path | str, dns_port: int, *, port: int | None = None,
    mgmt_port: int | None = None, timeout: float = START_TIMEOUT,
) -> Pebble:
    """pebble on 127.0.0.1 (fresh ports unless given: pass the old ones to restart it), asking
    127.0.0.1:`dns_port` for DNS-01 records; no random validation sleeps, no nonce rejections.
    Waits until its directory answers over HTTPS."""
    import json

    import requests

    if not os.access(PEBBLE, os.X_OK):
        raise RuntimeError(f"{PEBBLE} is not installed (Debian package pebble)")
    workdir = Path(workdir)
    ca, cert, key = make_pebble_tls(workdir / "tls")
    port = port or free_port()
    mgmt_port = mgmt_port or free_port()
    config = workdir / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{LOOPBACK}:{port}",
        "managementListenAddress": f"{LOOPBACK}:{mgmt_port}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": free_port(), "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    log_path = workdir / f"pebble-{time.monotonic_ns()}.log"
    peer = _spawn("pebble", [PEBBLE, "-config", str(config), "-dnsserver",
                             f"{LOOPBACK}:{dns_port}"], log_path, port, env=env, cwd=workdir)
    pebble = Pebble(peer, port, mgmt_port, ca)
    with _stopped_on_error(peer):
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(pebble.directory, verify=str(ca), timeout=1).raise_for_status()
                break
            except requests.RequestException:
                pass
            if not peer.running() or time.monotonic() > deadline:
                peer.stop()
                raise RuntimeError(f"pebble on port {port} did not come up; log:\n"
                                   f"{peer.log_text()}")
            time.sleep(0.05)
    return pebble


def start_letsencrypt(
    workdir: Path | str, primary_port: int, key: str, pebble: Pebble,
    ns_check: Iterable[int] = (), extra_args: Sequence[str] = (), *,
    ready: str | None = "zone ", timeout: float = START_TIMEOUT,
) -> Peer:
    """`python -m gitdns letsencrypt` against the primary on 127.0.0.1:`primary_port` and
    `pebble`, checking propagation on the loopback ports `ns_check`; waits until its log shows
    `ready` (by default: a first zone transferred). The account key lives in `workdir`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "gitdns", "letsencrypt", "--key", key,
            "--primary", f"{LOOPBACK}:{primary_port}", "--directory", pebble.directory,
            "--ca-bundle", str(pebble.ca_bundle), "--data-dir", str(workdir / "data"),
            "--email", "hostmaster@example.test"]
    for port in ns_check:
        argv += ["--ns-check", f"{LOOPBACK}:{port}"]
    argv += list(extra_args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path = workdir / f"letsencrypt-{time.monotonic_ns()}.log"
    peer = _spawn("gitdns letsencrypt", argv, log_path, 0, env=env)
    with _stopped_on_error(peer):
        deadline = time.monotonic() + timeout
        while ready and ready not in peer.log_text(10_000):
            if not peer.running() or time.monotonic() > deadline:
                peer.stop()
                raise RuntimeError(f"gitdns letsencrypt not ready; log:\n{peer.log_text()}")
            time.sleep(0.05)
    return peer


# -- gitdns secondary, and BIND and Knot as primaries with updates and NOTIFY (issue 6) ----------


def start_gitdns_secondary(
    data_dir: Path | str,
    port: int,
    keys: Sequence[str],
    *,
    primary: str | None = None,
    zones: Iterable[str] = (),
    also_notify: Iterable[str] = (),
    extra_args: Sequence[str] = (),
    wait_for: Iterable[str] = (),
    log_path: Path | str | None = None,
    timeout: float = START_TIMEOUT,
) -> Peer:
    """Run `python -m gitdns secondary` on 127.0.0.1:`port` with `keys` (key strings), and wait
    until each zone of `wait_for` answers its SOA authoritatively (until it answers at all when
    `wait_for` is empty). The log goes to `log_path` (default: beside `data_dir`), appended to,
    so a restarted secondary keeps one log."""
    data_dir = Path(data_dir)
    log = Path(log_path) if log_path else data_dir.parent / f"secondary-{port}.log"
    argv = [sys.executable, "-m", "gitdns", "--log-level", "debug", "secondary",
            "--listen", f"{LOOPBACK}:{port}", "--data-dir", str(data_dir)]
    for key in keys:
        argv += ["--key", key]
    if primary:
        argv += ["--primary", primary]
    for zone in zones:
        argv += ["--zone", zone]
    for target in also_notify:
        argv += ["--also-notify", target]
    argv += list(extra_args)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log, "ab")  # noqa: SIM115 - closed by Peer.stop
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env)
    except BaseException:
        log_file.close()
        raise
    peer = Peer(name="gitdns secondary", proc=proc, port=port, log_path=log, _log_file=log_file)
    with _stopped_on_error(peer):
        wait_ready(peer, wait_for, timeout)
    return peer


def start_named_primary(
    workdir: Path | str,
    zones: Mapping[str, str],
    port: int,
    transfer_key: TsigKey,
    update_key: TsigKey,
    notify_ports: Iterable[int] = (),
    timeout: float = START_TIMEOUT,
) -> Peer:
    """BIND as the primary of `zones` (name -> master file text, written into `workdir`), with
    `allow-update` for `update_key`, `allow-transfer` for `transfer_key`, and `notify explicit`
    to 127.0.0.1 on each of `notify_ports` (unsigned NOTIFY, BIND's default)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    targets = " ".join(f"127.0.0.1 port {p};" for p in notify_ports)
    zone_lines = []
    for name, text in zones.items():
        path = workdir / f"{name}.db"
        path.write_text(text)
        zone_lines.append(
            f'zone "{name}" {{ type primary; file "{path}"; '
            f'allow-update {{ key "{update_key.name}"; }}; '
            f'allow-transfer {{ key "{transfer_key.name}"; }}; '
            f"also-notify {{ {targets} }}; }};")
    conf = workdir / "named.conf"
    conf.write_text(f"""options {{
    directory "{workdir}"; pid-file none; session-keyfile "{workdir}/session.key";
    managed-keys-directory "{workdir}"; recursion no; dnssec-validation no;
    notify explicit; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
}};
controls {{ }};
key "{transfer_key.name}" {{ algorithm {transfer_key.algorithm}; secret "{transfer_key.secret}"; }};
key "{update_key.name}" {{ algorithm {update_key.algorithm}; secret "{update_key.secret}"; }};
{chr(10).join(zone_lines)}
""")
    peer = _spawn("named (primary)", [NAMED, "-g", "-c", str(conf)], workdir / "named.log", port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout, fatal=NAMED_FATAL)
    return peer


def start_knot_primary(
    workdir: Path | str,
    zones: Mapping[str, str],
    port: int,
    transfer_key: TsigKey,
    update_key: TsigKey,
    notify_ports: Iterable[int] = (),
    timeout: float = START_TIMEOUT,
) -> Peer:
    """Knot DNS as the primary of `zones` (name -> master file text), accepting updates signed
    with `update_key`, transfers signed with `transfer_key`, and sending NOTIFY signed with
    `transfer_key` to 127.0.0.1 on each of `notify_ports`. IXFR comes from its journal."""
    workdir = Path(workdir)
    (workdir / "db").mkdir(parents=True, exist_ok=True)
    ports = list(notify_ports)
    remotes = "".join(
        f"  - id: secondary{i}\n    address: 127.0.0.1@{p}\n    key: {transfer_key.name}\n"
        for i, p in enumerate(ports))
    notify = f"    notify: [{', '.join(f'secondary{i}' for i in range(len(ports)))}]\n" \
        if ports else ""
    zone_lines = ""
    for name, text in zones.items():
        (workdir / f"{name}.zone").write_text(text)
        zone_lines += (f"  - domain: {name}\n    file: \"{workdir}/{name}.zone\"\n{notify}"
                       "    acl: [transfer, update]\n")
    conf = workdir / "knot.conf"
    conf.write_text(f"""server:
  listen: 127.0.0.1@{port}
  rundir: "{workdir}"
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: info
database:
  storage: "{workdir}/db"
key:
  - id: {transfer_key.name}
    algorithm: {transfer_key.algorithm}
    secret: {transfer_key.secret}
  - id: {update_key.name}
    algorithm: {update_key.algorithm}
    secret: {update_key.secret}
{"remote:" + chr(10) + remotes if ports else ""}acl:
  - id: transfer
    key: {transfer_key.name}
    action: transfer
  - id: update
    key: {update_key.name}
    action: update
template:
  - id: default
    storage: "{workdir}"
    zonefile-sync: -1
zone:
{zone_lines}""")
    peer = _spawn("knotd (primary)", [KNOTD, "-c", str(conf)], workdir / "knot.log", port)
    with _stopped_on_error(peer):
        wait_ready(peer, zones, timeout)
    return peer
