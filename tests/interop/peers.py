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
