#!/usr/bin/env python3
"""Update throughput, side by side: gitdns, BIND and Knot in one interleaved run (issue 7).

Each update is TSIG-signed, adds one A record, and goes over a new TCP connection (as nsupdate
sends it); every server makes its change durable before answering (gitdns: its journal, fsync'd,
then folded into git in the background; BIND: its journal; Knot: its journal, and with its
default `zonefile-sync: 0` the whole zone file rewritten after each change, which is why a
second Knot, `knot-journal`, runs with `zonefile-sync: -1`: the journal only, as BIND).
Every server is pinned to core 0, this script (the clients) to core 1; rounds are interleaved
(gitdns, BIND, Knot, ..., gitdns, ...), and medians are reported with ratios to BIND and Knot.

    python bench/updates.py [--sizes 10k,1.2M] [--clients 1,8] [--updates 480] [--rounds 3]
                            [--timeline 30] [--load-timeout 1800] [--with-queries] [--quick]

Parts (each replaces its own section of bench/UPDATES.md, with the date and the command):
- sizes (`--sizes`, default 10k,1.2M; "" skips it): for each zone size, a zone of that many
  records from bench/workload.big_zone_lines (the same generator at every size, so only the
  size differs). The servers are started and polled until they answer the zone's SOA
  (bounded by `--load-timeout`; gitdns may take minutes on 1.2M records). Then, first, a
  *timeline*: `--timeline` seconds of one client sending updates back to back right after the
  load, per server, with gitdns's CPU split by thread every second (its event loop, which
  answers updates, versus its worker threads, where the journal's fsync and the background
  fold of the journal into git run: the first fold after a start re-parses the whole zone
  file, later folds re-render and compress it). Then the rounds: bursts of `--updates`
  updates (bounded by `--burst-seconds`) with 1 and 8 clients; updates/s and p99 latency.
  Last, a kill -9 of gitdns in the middle of an 8-client burst on the first size, a restart,
  and a check that every update it acknowledged is in the git remote.
- queries (`--with-queries`): the query benchmark's 10k-host zone and query mix (bench/run.py,
  bench/workload.py); dnsperf's UDP q/s (server on core 0, dnsperf on core 1) alone and while
  `--update-clients` clients send signed updates at `--update-rate` per second in total (0: as
  fast as they go) from core 1, for each server in turn; q/s with and without, the update rate
  achieved meanwhile and its p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if _VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
    os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), __file__, *sys.argv[1:]])  # its dnspython
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.tsig  # noqa: E402
import dns.update  # noqa: E402

from bench import workload  # noqa: E402
from bench.run import (  # noqa: E402
    CLK_TCK,
    dnsperf,
    parse_size,
    warm_until_steady,
    write_section,
)
from tests.interop.peers import _spawn as spawn  # noqa: E402
from tests.interop.peers import free_port, wait_ready  # noqa: E402

UPDATES = ROOT / "bench" / "UPDATES.md"
PREAMBLE = ("# Update throughput\n\nWritten by `python bench/updates.py` (see its docstring for "
            "what is measured and how); each part replaces its own section.\n")
KEYNAME = "bench._update.bench.test"  # may update bench.test and the zones below it
SECRET = base64.b64encode(b"b" * 32).decode()
KEY = dns.tsig.Key(KEYNAME, SECRET, dns.tsig.HMAC_SHA256)
SERVER_CORE, CLIENT_CORE = 0, 1
ALL_SERVERS = ("gitdns", "bind", "knot", "knot-journal")
LABELS = {"gitdns": "gitdns", "bind": "BIND", "knot": "Knot",
          "knot-journal": "Knot, zonefile-sync -1"}


def taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() >= 2 else []


# -- the servers ----------------------------------------------------------------------------


def start_gitdns(work: Path, origin: str, zone: Path, port: int, timeout: float):
    seed = work / "seed"
    seed.mkdir(parents=True)
    shutil.copyfile(zone, seed / origin)
    (seed / "_keys").write_text(f"{KEYNAME}. DNSKEY 0 3 163 {SECRET}\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=seed, check=True)
    subprocess.run([*git, "add", "-A"], cwd=seed, check=True)
    subprocess.run([*git, "commit", "-qm", "zone"], cwd=seed, check=True)
    bare = work / "zones.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    shutil.rmtree(seed)
    return serve_gitdns(work, origin, bare, port, timeout, "gitdns.log"), bare


def serve_gitdns(work: Path, origin: str, bare: Path, port: int, timeout: float, log: str):
    argv = [*taskset(SERVER_CORE), sys.executable, "-m", "gitdns", "--log-level", "warning",
            "serve", "--remote", str(bare), "--listen", f"127.0.0.1:{port}", "--data-dir",
            str(work / "data"), "--notify", "explicit"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    peer = spawn("gitdns", argv, work / log, port, env=env)
    wait_ready(peer, [origin], timeout=timeout)  # polls; stops the server on failure
    return peer


def start_bind(work: Path, origin: str, zone: Path, port: int, timeout: float):
    shutil.copyfile(zone, work / f"{origin}.zone")
    conf = work / "named.conf"
    conf.write_text(f"""options {{ directory "{work}"; pid-file none; recursion no;
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; notify no;
  dnssec-validation no; session-keyfile "{work}/s.key"; managed-keys-directory "{work}"; }};
controls {{ }};
key "{KEYNAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "{origin}" {{ type primary; file "{work}/{origin}.zone";
  allow-update {{ key "{KEYNAME}"; }}; }};
""")
    peer = spawn("named", [*taskset(SERVER_CORE), "/usr/sbin/named", "-g", "-n", "1", "-c",
                           str(conf)], work / "named.log", port)
    wait_ready(peer, [origin], timeout=timeout)
    return peer


def start_knot(work: Path, origin: str, zone: Path, port: int, timeout: float,
               zonefile_sync: int = 0):
    shutil.copyfile(zone, work / f"{origin}.zone")
    (work / "db").mkdir()
    conf = work / "knot.conf"
    conf.write_text(f"""server:
  listen: 127.0.0.1@{port}
  rundir: "{work}"
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: warning
database:
  storage: "{work}/db"
key:
  - id: {KEYNAME}
    algorithm: hmac-sha256
    secret: {SECRET}
acl:
  - id: upd
    key: {KEYNAME}
    action: update
template:
  - id: default
    storage: "{work}"
    file: "%s.zone"
    zonefile-sync: {zonefile_sync}
    semantic-checks: off
zone:
  - domain: {origin}
    acl: upd
""")
    peer = spawn("knotd", [*taskset(SERVER_CORE), "/usr/sbin/knotd", "-c", str(conf)],
                 work / "knot.log", port)
    wait_ready(peer, [origin], timeout=timeout)
    return peer


def start(name: str, work: Path, origin: str, zone: Path, timeout: float):
    """Start `name` on a fresh port, polled until it serves `origin`; (peer, seconds)."""
    work.mkdir(parents=True)
    port = free_port()
    started = time.monotonic()
    if name == "gitdns":
        peer, _ = start_gitdns(work, origin, zone, port, timeout)
    elif name == "bind":
        peer = start_bind(work, origin, zone, port, timeout)
    else:
        peer = start_knot(work, origin, zone, port, timeout, -1 if name == "knot-journal" else 0)
    return peer, time.monotonic() - started


# -- the clients ----------------------------------------------------------------------------


async def one_update(port: int, origin: str, name: str) -> float:
    """Send one signed update over a new TCP connection; its latency in seconds."""
    message = dns.update.UpdateMessage(origin, keyring=KEY)
    message.add(name, 300, "A", "192.0.2.9")
    wire = message.to_wire()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = dns.message.from_wire(await reader.readexactly(size), keyring={KEY.name: KEY},
                                      request_mac=message.mac)
    finally:
        writer.close()
    if reply.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"update {name} answered {dns.rcode.to_text(reply.rcode())}")
    return time.perf_counter() - started


@dataclass
class Stream:
    """Updates sent by `clients` clients; each one's (finish time, latency)."""

    done: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    def rate(self, since: float | None = None, until: float | None = None) -> float:
        since, until = since or self.started, until or self.ended
        n = sum(1 for t, _ in self.done if since <= t <= until)
        return n / (until - since) if until > since else 0.0

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return sorted(lat for t, lat in self.done if since <= t <= until)


def pct(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


async def stream(port: int, origin: str, clients: int, prefix: str, *, count: int | None = None,
                 seconds: float | None = None, rate: float = 0.0,
                 stop: threading.Event | None = None, acked: list | None = None,
                 out: Stream | None = None) -> Stream:
    """`clients` clients sending updates until `count` are done, `seconds` have passed or
    `stop` is set; `rate` > 0 paces them to that many a second in total."""
    out = out or Stream()
    out.started = time.perf_counter()
    deadline = out.started + seconds if seconds else float("inf")
    issued = 0

    def more() -> bool:
        return ((count is None or issued < count) and time.perf_counter() < deadline
                and not (stop is not None and stop.is_set()))

    async def client(c: int) -> None:
        nonlocal issued
        while more():
            n = issued
            issued += 1
            if rate:
                delay = out.started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            name = f"{prefix}-{n}"
            try:
                latency = await one_update(port, origin, name)
            except (OSError, RuntimeError, EOFError, asyncio.IncompleteReadError) as e:
                if acked is not None:
                    return  # the kill -9 check: the server is gone
                out.errors.append(f"{name}: {e}")
                await asyncio.sleep(0.01)
                continue
            out.done.append((time.perf_counter(), latency))
            if acked is not None:
                acked.append(name)

    await asyncio.gather(*(client(c) for c in range(clients)))
    out.ended = time.perf_counter()
    return out


@contextlib.contextmanager
def background_stream(port: int, origin: str, clients: int, rate: float, prefix: str):
    """Updates streaming from a thread of this process while the block runs."""
    stop, out = threading.Event(), Stream()
    thread = threading.Thread(target=lambda: asyncio.run(
        stream(port, origin, clients, prefix, rate=rate, stop=stop, out=out)), daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join(timeout=60)


# -- CPU by thread --------------------------------------------------------------------------


def thread_ticks(pid: int) -> tuple[int, int]:
    """(CPU ticks of the main thread, of all the other threads) of process `pid`."""
    main = other = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks = int(fields[11]) + int(fields[12])
                if int(tid) == pid:
                    main += ticks
                else:
                    other += ticks
    return main, other


def wait_pushed(bare: Path, origin: str, prefix: str, expected: int, most: float = 90.0) -> float:
    """Seconds until the remote's zone file holds `expected` names starting with `prefix`
    (gitdns folded the burst into git and pushed it), polled, at most `most`."""
    started = time.monotonic()
    while time.monotonic() - started < most:
        text = subprocess.run(["git", "--git-dir", str(bare), "show", f"main:{origin}"],
                              capture_output=True, timeout=60).stdout
        if text.count(b"\n" + prefix.encode() + b"-") >= expected:
            break
        time.sleep(0.25)
    return time.monotonic() - started


def process_ticks(pid: int) -> int:
    """CPU ticks (user + system) of process `pid`, all its threads, ended ones included."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def wait_idle(pid: int, quiet: float = 1.0, most: float = 60.0) -> float:
    """Wait until process `pid` used under 5% of a CPU for `quiet` seconds (at most `most`);
    the seconds waited. Between bursts: the work a server leaves for later (gitdns's folds and
    pushes, BIND's and Knot's journal and zone-file writes) must not land on the next server's
    burst, which shares its core."""
    started = time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    last, since = process_ticks(pid), time.monotonic()
    while time.monotonic() - started < most:
        time.sleep(0.1)
        now = process_ticks(pid)
        if now - last > 0.05 * hz * (time.monotonic() - since) + 1:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return time.monotonic() - started


@contextlib.contextmanager
def cpu_sampler(pid: int, every: float = 1.0):
    """Samples (time, main-thread ticks, other-thread ticks) every `every` s while it runs."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def run() -> None:
        while True:
            samples.append((time.perf_counter(), *thread_ticks(pid)))
            if stop.wait(every):
                samples.append((time.perf_counter(), *thread_ticks(pid)))
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)


# -- the sizes part -------------------------------------------------------------------------


@dataclass
class SizeResult:
    records: int
    load: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, tuple[Stream, list]] = field(default_factory=dict)
    commits: int | None = None  # gitdns's commits (folds) pushed for the timeline's updates
    bursts: dict[tuple[str, int], list[tuple[float, float | None]]] = field(default_factory=dict)
    pushed: list[float] = field(default_factory=list)  # gitdns: burst end to the remote having it


def measure_size(args, size: str, servers: list[str], work: Path) -> SizeResult:
    work.mkdir(parents=True)
    zone = work / "zone"
    records = workload.write_big_zone(zone, parse_size(size))
    origin = workload.BIG_ORIGIN
    print(f"zone of {records} records ({zone.stat().st_size / 1e6:.1f} MB)", flush=True)
    result = SizeResult(records)
    peers = {}
    try:
        for name in servers:
            peers[name], took = start(name, work / name, origin, zone, args.load_timeout)
            result.load[name] = took
            print(f"  {name}: serving after {took:.1f} s", flush=True)
        if args.timeline:
            for name in servers:
                pid = peers[name].proc.pid
                with cpu_sampler(pid) as samples:
                    s = asyncio.run(stream(peers[name].port, origin, 1, f"t-{name}",
                                           seconds=args.timeline))
                result.timeline[name] = (s, samples)
                wait_idle(pid)
                if name == "gitdns":
                    result.commits = pushed_commits(work / name / "zones.git") - 1
                lat = s.latencies()
                print(f"  first {args.timeline:.0f} s after the load, 1 client, {name}: "
                      f"{len(s.done) / (s.ended - s.started):.0f}/s, p99 "
                      f"{ms(pct(lat, 0.99))} ms, max {ms(lat[-1] if lat else None)} ms"
                      + (f", {len(s.errors)} errors" if s.errors else ""), flush=True)
        for r in range(args.rounds):
            for clients in args.client_counts:
                for name in servers:
                    s = asyncio.run(stream(peers[name].port, origin, clients,
                                           f"r{r}c{clients}-{name}", count=args.updates,
                                           seconds=args.burst_seconds))
                    lat = s.latencies()
                    rate = len(s.done) / (s.ended - s.started)
                    result.bursts.setdefault((name, clients), []).append((rate, pct(lat, 0.99)))
                    pushed = ""
                    if name == "gitdns":
                        took = wait_pushed(work / name / "zones.git", origin,
                                           f"r{r}c{clients}-{name}", len(s.done))
                        result.pushed.append(took)
                        pushed = f"; in the git remote {took:.1f} s after the burst"
                    idle = wait_idle(peers[name].proc.pid)
                    print(f"  round {r + 1}, {clients} client(s), {name}: {rate:.0f}/s, p99 "
                          f"{ms(pct(lat, 0.99))} ms ({len(s.done)} updates"
                          + (f", {len(s.errors)} errors: {s.errors[0]}" if s.errors else "")
                          + f"){pushed}; then idle after {idle:.1f} s", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
    return result


def pushed_commits(bare: Path, settle: float = 3.0, most: float = 60.0) -> int:
    """Commits on the remote's main once gitdns has pushed what it folded (no new commit for
    `settle` seconds, at most `most`)."""
    def count() -> int:
        out = subprocess.run(["git", "--git-dir", str(bare), "rev-list", "--count", "main"],
                             capture_output=True, text=True, timeout=60).stdout
        return int(out.strip() or 0)

    last, since, deadline = count(), time.monotonic(), time.monotonic() + most
    while time.monotonic() < deadline and time.monotonic() - since < settle:
        time.sleep(0.5)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def size_report(args, servers: list[str], results: list[SizeResult]) -> list[str]:
    lines = [
        "Signed updates adding one A record each, a new TCP connection per update; zones from "
        "bench/workload.big_zone_lines; servers on core 0, clients on core 1. Bursts of "
        f"{args.updates} updates (at most {args.burst_seconds:.0f} s), {args.rounds} "
        "interleaved round(s), medians (every round in brackets). Knot runs twice: with its "
        "default `zonefile-sync: 0` (the zone file rewritten after every change) and with "
        "`zonefile-sync: -1` (changes kept in its journal only, as BIND until it dumps). "
        "After each burst the bench waits until gitdns's git remote holds every update of it "
        "(gitdns folds a burst into git once updates pause, then pushes), then until that "
        "server is idle (under 5% of a CPU for 1 s; for BIND and Knot: their journal and "
        "zone-file writes), so no server's deferred work lands on the next one's burst.", "",
        "| zone records | clients | server | updates/s | vs BIND | vs Knot | vs Knot, "
        "zonefile-sync -1 | p99 ms | load s |", "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for clients in args.client_counts:
            med = {name: statistics.median(r for r, _ in res.bursts[name, clients])
                   for name in servers}

            def vs(name: str, base: str, med=med) -> str:
                return f"{med[name] / med[base]:.2f}" if base in med and med[base] else "-"

            for name in servers:
                rs = res.bursts[name, clients]
                each = ", ".join(f"{r:.0f}" for r, _ in rs)
                p99 = statistics.median(p for _, p in rs if p is not None) if rs else None
                lines.append(f"| {res.records} | {clients} | {LABELS[name]} | {med[name]:.0f} "
                             f"({each}) | {vs(name, 'bind')} | {vs(name, 'knot')} | "
                             f"{vs(name, 'knot-journal')} | {ms(p99)} | "
                             f"{res.load[name]:.1f} |")
    for res in results:
        if res.pushed:
            lines.append(f"\n{res.records} records: gitdns's remote had each burst "
                         f"{statistics.median(res.pushed):.1f} s after its last update "
                         f"(median; {min(res.pushed):.1f} to {max(res.pushed):.1f} s).")
    if args.timeline:
        lines += ["", f"The first {args.timeline:.0f} s of updates after the load (one client, "
                  "back to back; for gitdns this includes the first fold of the journal into "
                  "git, which re-parses the zone file once to index it):", "",
                  "| zone records | server | updates/s | p99 ms | max ms | slowest second |",
                  "|---|---|---|---|---|---|"]
        for res in results:
            for name in servers:
                s, _ = res.timeline[name]
                lat = s.latencies()
                per_second = [len(b) for b in seconds_of(s)]
                lines.append(f"| {res.records} | {LABELS[name]} | "
                             f"{len(s.done) / (s.ended - s.started):.0f} | "
                             f"{ms(pct(lat, 0.99))} | {ms(lat[-1] if lat else None)} | "
                             f"{min(per_second) if per_second else '-'} updates |")
        for res in results:
            if "gitdns" not in res.timeline:
                continue
            s, samples = res.timeline["gitdns"]
            folds = (f" The {len(s.done)} updates of the timeline reached git in {res.commits} "
                     f"commit(s) (folds), {len(s.done) / res.commits:.0f} updates a fold, one "
                     f"fold every {(s.ended - s.started) / res.commits:.1f} s on average."
                     if res.commits else "")
            lines += ["", f"gitdns, second by second, {res.records} records: updates answered, "
                      "their p99 and max latency, and the CPU of its event loop (main thread: "
                      "answers updates and queries) and of its other threads (journal fsync, "
                      f"fold into git, push), in % of one core.{folds}", "",
                      "| second | updates | p99 ms | max ms | event loop CPU | other threads "
                      "CPU |", "|---|---|---|---|---|---|"]
            cpu = cpu_by_second(s, samples)
            for i, bucket in enumerate(seconds_of(s)):
                bucket.sort()
                main, other = cpu[i] if i < len(cpu) else (None, None)
                lines.append(f"| {i + 1} | {len(bucket)} | {ms(pct(bucket, 0.99))} | "
                             f"{ms(bucket[-1] if bucket else None)} | {pc(main)} | "
                             f"{pc(other)} |")
    return lines


def seconds_of(s: Stream) -> list[list[float]]:
    """Latencies of the updates answered in each whole second of the stream."""
    buckets: list[list[float]] = [[] for _ in range(int(s.ended - s.started))]
    for t, lat in s.done:
        i = int(t - s.started)
        if i < len(buckets):
            buckets[i].append(lat)
    return buckets


def cpu_by_second(s: Stream, samples: list) -> list[tuple[float, float]]:
    """(main, other) CPU share of each second of the stream, from the nearest samples."""
    out = []
    for i in range(int(s.ended - s.started)):
        a = min(samples, key=lambda x: abs(x[0] - (s.started + i)))
        b = min(samples, key=lambda x: abs(x[0] - (s.started + i + 1)))
        span = b[0] - a[0]
        if span <= 0:
            out.append((None, None))
            continue
        out.append(((b[1] - a[1]) / CLK_TCK / span, (b[2] - a[2]) / CLK_TCK / span))
    return out


def pc(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def kill9_check(work: Path, size: str, timeout: float) -> str:
    """SIGKILL gitdns during an 8-client burst; every acknowledged update must reach git."""
    work.mkdir(parents=True)
    zone = work / "zone"
    workload.write_big_zone(zone, parse_size(size))
    origin = workload.BIG_ORIGIN
    port = free_port()
    peer, bare = start_gitdns(work, origin, zone, port, timeout)
    acked: list[str] = []
    try:
        async def run():
            task = asyncio.ensure_future(stream(port, origin, 8, "k", acked=acked,
                                                seconds=120))
            while len(acked) < 200 and not task.done():
                await asyncio.sleep(0.01)
            os.kill(peer.proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError, RuntimeError, asyncio.IncompleteReadError):
                await task

        asyncio.run(run())
    finally:
        peer.stop()
    peer = serve_gitdns(work, origin, bare, port, timeout, "gitdns2.log")
    try:
        deadline = time.monotonic() + 120
        missing = acked
        while time.monotonic() < deadline:
            text = subprocess.run(["git", "--git-dir", str(bare), "show", f"main:{origin}"],
                                  capture_output=True, text=True).stdout
            present = {line.split()[0] for line in text.splitlines() if line[:2] == "k-"}
            missing = [n for n in acked if n not in present]
            if not missing:
                break
            time.sleep(0.5)
    finally:
        peer.stop()
    verdict = "all in git" if not missing else f"{len(missing)} MISSING"
    return (f"Kill -9 in the middle of an 8-client burst (gitdns, {size} zone): {len(acked)} "
            f"updates acknowledged before SIGKILL; after restart: {verdict}")


# -- the queries part -----------------------------------------------------------------------


def measure_queries(args, servers: list[str], work: Path) -> list[str]:
    work.mkdir(parents=True)
    origin = workload.ORIGIN
    zone = work / "zone"
    zone.write_text(workload.zone_text(args.hosts))
    qfile = work / "queries.txt"
    qfile.write_text(workload.query_file_text(workload.queries(args.queries, args.hosts)))
    peers = {}
    runs: dict[str, list] = {name: [] for name in servers}
    recovery: dict[str, list[float]] = {}
    try:
        for name in servers:
            peers[name], took = start(name, work / name, origin, zone, args.load_timeout)
            dnsperf(peers[name].port, qfile, 0, runs=1)  # warm up
            print(f"  {name}: serving after {took:.1f} s", flush=True)
        for r in range(args.rounds):
            for name in servers:
                peer = peers[name]
                warm_until_steady(peer.port, qfile, 1)  # over the previous round's updates
                alone = dnsperf(peer.port, qfile, args.duration, pid=peer.proc.pid)
                with background_stream(peer.port, origin, args.update_clients,
                                       args.update_rate, f"q{r}-{name}") as s:
                    time.sleep(0.5)  # the stream under way
                    since = time.perf_counter()
                    during = dnsperf(peer.port, qfile, args.duration, pid=peer.proc.pid)
                    until = time.perf_counter()
                rate = s.rate(since, until)
                p99 = pct(s.latencies(since, until), 0.99)
                runs[name].append((alone.qps, during.qps, rate, p99, during.lost))
                print(f"  round {r + 1} {name}: {alone.qps:,.0f} q/s alone, {during.qps:,.0f} "
                      f"q/s with {rate:.0f} updates/s (p99 {ms(p99)} ms, {during.lost} queries "
                      "lost" + (f", {len(s.errors)} update errors: {s.errors[0]}"
                                if s.errors else "") + ")", flush=True)
        for name in servers:  # one update, then q/s second by second until back to normal
            peer = peers[name]
            warm_until_steady(peer.port, qfile, 1)
            normal = statistics.median(a for a, *_ in runs[name])
            asyncio.run(one_update(peer.port, origin, f"one-{name}"))
            after = [dnsperf(peer.port, qfile, 1).qps]
            while after[-1] < 0.9 * normal and len(after) < args.recovery_limit:
                after.append(dnsperf(peer.port, qfile, 1).qps)
            recovery[name] = after
            print(f"  {name} after one update: " + ", ".join(f"{q:,.0f}" for q in after)
                  + " q/s, second by second", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
    offered = (f"{args.update_rate:.0f} updates/s offered in total" if args.update_rate
               else "updates back to back")
    lines = [
        f"The query benchmark's zone ({args.hosts} hosts) and mix (bench/workload.py), dnsperf "
        f"(`-c 16 -q 100 -T 1`, UDP) at full speed for {args.duration} s: alone, then while "
        f"{args.update_clients} client(s) send signed updates ({offered}, a new TCP connection "
        "each). Servers on core 0; dnsperf and the update clients on core 1. "
        f"{args.rounds} interleaved round(s), medians (every round in brackets).", "",
        "| server | q/s alone | q/s with updates | with / alone | vs BIND (with updates) | "
        "updates/s meanwhile | update p99 ms | queries lost |", "|---|---|---|---|---|---|---|---|",
    ]
    base = statistics.median(d for _, d, _, _, _ in runs["bind"]) if "bind" in runs else None
    for name in servers:
        rs = runs[name]
        alone = statistics.median(a for a, _, _, _, _ in rs)
        during = statistics.median(d for _, d, _, _, _ in rs)
        p99s = [p for _, _, _, p, _ in rs if p is not None]
        lines.append(
            f"| {LABELS[name]} | {alone:,.0f} ({', '.join(f'{a:,.0f}' for a, *_ in rs)}) | "
            f"{during:,.0f} ({', '.join(f'{d:,.0f}' for _, d, *_ in rs)}) | "
            f"{during / alone:.2f} | {f'{during / base:.2f}' if base else '-'} | "
            f"{statistics.median(u for _, _, u, _, _ in rs):.0f} | "
            f"{ms(statistics.median(p99s) if p99s else None)} | "
            f"{statistics.median(lost for *_, lost in rs):.0f} |")
    lines += ["", "After one single update (each server warmed up again first): dnsperf's q/s in "
              "1-second runs until back within 90% of its median alone (at most "
              f"{args.recovery_limit} s):", ""]
    for name in servers:
        after = recovery.get(name, [])
        back = (f"back after {len(after)} s" if after and after[-1] >= 0.9 * statistics.median(
            a for a, *_ in runs[name]) else f"not back after {len(after)} s")
        lines.append(f"- {LABELS[name]}: {back}: " + ", ".join(f"{q:,.0f}" for q in after))
    return lines


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,1.2M",
                        help="zone sizes for the update bursts, comma-separated (10k, 200k, "
                        "1.2M); empty: skip that part")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS),
                        help=f"comma-separated, from {','.join(ALL_SERVERS)}")
    parser.add_argument("--clients", default="1,8", help="client counts of the bursts")
    parser.add_argument("--updates", type=int, default=480, help="updates a burst")
    parser.add_argument("--burst-seconds", type=float, default=20.0,
                        help="a burst stops after this long even if not all were answered")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeline", type=float, default=30.0,
                        help="seconds of updates, one client, right after each load, with "
                        "gitdns's CPU by thread every second (0: skip)")
    parser.add_argument("--load-timeout", type=float, default=1800.0,
                        help="seconds a server may take to load a zone (polled)")
    parser.add_argument("--no-kill9", action="store_true", help="skip the kill -9 check")
    parser.add_argument("--with-queries", action="store_true",
                        help="also: dnsperf's UDP q/s with and without a stream of updates")
    parser.add_argument("--update-rate", type=float, default=100.0,
                        help="with-queries: updates/s offered in total (0: back to back)")
    parser.add_argument("--update-clients", type=int, default=4,
                        help="with-queries: update clients")
    parser.add_argument("--recovery-limit", type=int, default=30,
                        help="with-queries: most 1-second runs after one update")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="with-queries: seconds per dnsperf run")
    parser.add_argument("--hosts", type=int, default=10_000, help="with-queries: zone hosts")
    parser.add_argument("--queries", type=int, default=50_000,
                        help="with-queries: lines of the query file")
    parser.add_argument("--quick", action="store_true",
                        help="short: sizes 10k,200k, 1 round, 120 updates a burst, a 10 s "
                        "timeline, 2 s dnsperf runs")
    parser.add_argument("--records", type=int, help="(old) one size of this many records")
    parser.add_argument("--big", action="store_true", help="(old) add the 1.2M-record zone")
    parser.add_argument("--no-write", action="store_true", help="do not update UPDATES.md")
    args = parser.parse_args(argv)
    if args.records:
        args.sizes = str(args.records) + (",1.2M" if args.big else "")
    if args.quick:
        args.sizes = "10k,200k" if args.sizes == "10k,1.2M" else args.sizes
        args.rounds, args.updates, args.timeline, args.duration = 1, 120, 10.0, 2.0
        args.queries = 20_000
    args.client_counts = [int(c) for c in args.clients.split(",") if c]
    servers = [s for s in args.servers.split(",") if s]
    if unknown := [s for s in servers if s not in ALL_SERVERS]:
        parser.error(f"unknown server(s): {', '.join(unknown)}")
    sizes = [s for s in args.sizes.split(",") if s]
    command = shlex.join(["python", "bench/updates.py",
                          *(sys.argv[1:] if argv is None else argv)])
    if os.cpu_count() >= 2:
        os.sched_setaffinity(0, {CLIENT_CORE})  # the clients; servers are pinned to core 0
    work = Path(tempfile.mkdtemp(prefix="gitdns-bench-updates-"))
    try:
        if sizes:
            results = [measure_size(args, size, servers, work / f"size-{size}")
                       for size in sizes]
            lines = size_report(args, servers, results)
            if not args.no_kill9 and "gitdns" in servers:
                lines += ["", kill9_check(work / "kill9", sizes[0], args.load_timeout)]
            print("\n".join(lines), flush=True)
            if not args.no_write:
                write_section("updates", lines, command, UPDATES, PREAMBLE)
        if args.with_queries:
            lines = measure_queries(args, servers, work / "queries")
            print("\n".join(lines), flush=True)
            if not args.no_write:
                write_section("updates-with-queries", lines, command, UPDATES, PREAMBLE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        print(f"\nwritten to {UPDATES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
