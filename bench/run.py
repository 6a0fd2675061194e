#!/usr/bin/env python3
"""gitdns beside BIND, Knot and NSD on the same data, measured in interleaved rounds (issue 3).

    python bench/run.py [qps] [--quick]   UDP and TCP saturation, lost queries, CPU per query
                                          at a fixed load, p99 latency at half the maximum rate
    python bench/run.py bigzone           a 1.2M-record zone: start to first answer, memory, AXFR
    python bench/run.py bigzone --server-cpus 0,1
                                          the same with every server free to use both CPUs
    python bench/run.py micro             in-process cost of one answer (fast path, reference)
    python bench/run.py reload [--sizes 10k,1.2M] [--reload-rate 10000]
                                          queries lost while the zone is reloaded under a fixed
                                          load, and the reload time (request to new serial)
    python bench/run.py latency           max UDP q/s, then p50/p99/p99.9 at half that rate
                                          (dnsperf -Q and -v)
    python bench/run.py workers [--workers 1,2] [--server-cpus LIST]
                                          UDP q/s with N workers (gitdns serve --workers N,
                                          named -n N, Knot udp-workers N); dnsperf on one CPU,
                                          the servers on the others; gitdns is skipped with a
                                          message while `serve` lacks --workers

Everything is generated here, deterministically (bench/workload.py), in a temporary directory:
the 10k-host zone, a git repository of it for `gitdns serve`, the query file, and each server's
configuration. Every server is a primary of the same master file on 127.0.0.1 and an
unprivileged port, pinned to CPU 0 (`taskset -c 0`) with one worker thread; dnsperf runs pinned
to CPU 1. Each round runs every test against every server in turn (A B C D, A B C D ...), and
the report gives medians over the rounds with the ratio to BIND. Results are printed and written
into bench/RESULTS.md, each sub-command replacing its own section, with the date and the command.

Servers: gitdns (`python -m gitdns serve --notify explicit` on a git repository of the zone),
BIND 9 (`named -n 1`), Knot (`knotd`, one UDP and one TCP worker), NSD (`nsd`, one server
process); on request (`--servers ...,gitdns-fast`) bench/fastserve.py, the fast path behind a
minimal socket loop, to tell the cost of gitdns's listeners from the cost of answering.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if _VENV_PYTHON.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
    os.execv(str(_VENV_PYTHON), [str(_VENV_PYTHON), __file__, *sys.argv[1:]])  # its dnspython
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402

from bench import workload  # noqa: E402
from tests.interop.peers import (  # noqa: E402
    KNOTD,
    NAMED,
    NSD,
    Peer,
    free_port,
    make_git_repo,
    named_conf,
    wait_ready,
)

RESULTS = ROOT / "bench" / "RESULTS.md"
SERVER_CPU, CLIENT_CPU = "0", "1"
ALL_SERVERS = ("gitdns", "gitdns-fast", "bind", "knot", "nsd")
DEFAULT_SERVERS = ("gitdns", "bind", "knot", "nsd")
LABELS = {
    "gitdns": "gitdns serve",
    "gitdns-fast": "gitdns fast path (bench/fastserve.py)",
    "gitdns-parse": "gitdns serve, parsing the file",
    "bind": "BIND 9 (named -n 1)",
    "knot": "Knot DNS (1 UDP + 1 TCP worker)",
    "nsd": "NSD (1 server)",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- servers


def _spawn(name: str, argv: list[str], log: Path, port: int, env=None,
           cpus: str | None = None) -> Peer:
    log_file = open(log, "wb")  # noqa: SIM115 - closed by Peer.stop
    proc = subprocess.Popen(["taskset", "-c", cpus or SERVER_CPU, *argv],
                            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                            env=env)
    return Peer(name=name, proc=proc, port=port, log_path=log, _log_file=log_file)


def compile_gitdns() -> None:
    """Byte-compile gitdns's modules, as installing the package does: a server started from
    this checkout otherwise compiles every module from source at each start (about 0.1 s of a
    start) where PYTHONDONTWRITEBYTECODE is set, as it is on some machines."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "gitdns")],
                   env=env, check=True, stdout=subprocess.DEVNULL, timeout=120)


def gitdns_has_workers() -> bool:
    """Whether `gitdns serve` takes --workers (being added while this bench was written)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-m", "gitdns", "serve", "--help"], env=env,
                         capture_output=True, text=True, timeout=60).stdout
    return "--workers" in out


def start_gitdns(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool,
                 workers: int | None = None, cpus: str | None = None) -> Peer:
    repo = wd / "repo"
    if not repo.exists():
        make_git_repo(repo, {origin: zone_file.read_bytes()})
    argv = [sys.executable, "-m", "gitdns", "serve", "--remote", str(repo), "--listen",
            f"127.0.0.1:{port}", "--data-dir", str(wd / "data"), "--notify", "explicit",
            "--log-level", "warning"]
    if xfr:
        argv.append("--axfr-unauthenticated")
    if workers is not None:
        argv += ["--workers", str(workers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return _spawn("gitdns", argv, wd / "gitdns.log", port, env, cpus)


def start_gitdns_fast(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool,
                      workers: int | None = None, cpus: str | None = None) -> Peer:
    argv = [sys.executable, "-m", "bench.fastserve", str(zone_file), origin, "--listen",
            f"127.0.0.1:{port}"] + (["--axfr-unauthenticated"] if xfr else [])
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    return _spawn("gitdns-fast", argv, wd / "fastserve.log", port, env, cpus)


def start_bind(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool,
               workers: int | None = None, cpus: str | None = None) -> Peer:
    conf = wd / "named.conf"
    conf.write_text(named_conf(wd, {origin: zone_file}, port,
                               "allow-transfer { 127.0.0.1; };" if xfr else ""))
    return _spawn("bind", [NAMED, "-g", "-n", str(workers or 1), "-c", str(conf)],
                  wd / "named.log", port, cpus=cpus)


def start_knot(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool,
               workers: int | None = None, cpus: str | None = None) -> Peer:
    (wd / "db").mkdir(exist_ok=True)
    conf = wd / "knot.conf"
    conf.write_text(f"""server:
  listen: 127.0.0.1@{port}
  rundir: "{wd}"
  udp-workers: {workers or 1}
  tcp-workers: 1
  background-workers: 1
log:
  - target: stderr
    any: warning
database:
  storage: "{wd}/db"
acl:
  - id: local_transfer
    address: 127.0.0.1
    action: transfer
template:
  - id: default
    storage: "{wd}"
    zonefile-sync: -1
    journal-content: none
    semantic-checks: off
zone:
  - domain: {origin}
    file: "{zone_file}"
    acl: local_transfer
""")
    return _spawn("knot", [KNOTD, "-c", str(conf)], wd / "knot.log", port, cpus=cpus)


def start_nsd(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool,
              workers: int | None = None, cpus: str | None = None) -> Peer:
    conf = wd / "nsd.conf"
    conf.write_text(f"""server:
  port: {port}
  ip-address: 127.0.0.1
  zonesdir: "{wd}"
  pidfile: ""
  username: ""
  database: ""
  xfrdfile: "{wd}/xfrd.state"
  zonelistfile: "{wd}/zone.list"
  server-count: {workers or 1}
  rrl-ratelimit: 0
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: {origin}
  zonefile: "{zone_file}"
  provide-xfr: 127.0.0.1 NOKEY
""")
    return _spawn("nsd", [NSD, "-d", "-c", str(conf)], wd / "nsd.log", port, cpus=cpus)


STARTERS: dict[str, Callable[..., Peer]] = {
    "gitdns": start_gitdns, "gitdns-fast": start_gitdns_fast, "bind": start_bind,
    "knot": start_knot, "nsd": start_nsd,
}


def start(name: str, wd: Path, origin: str, zone_file: Path, xfr: bool = False,
          timeout: float = 120.0, workers: int | None = None,
          cpus: str | None = None) -> tuple[Peer, float]:
    """Start a server and wait for its SOA over UDP and TCP; (peer, seconds to first answer).

    `timeout` bounds the wait (polled, not slept: a big zone may take minutes to load)."""
    wd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.monotonic()
    peer = STARTERS[name](wd, origin, zone_file, port, xfr, workers=workers, cpus=cpus)
    try:
        first = _first_answer(peer, origin, timeout)
        wait_ready(peer, [origin], timeout=timeout)
    except BaseException:
        peer.stop()
        raise
    return peer, first - started


def _first_answer(peer: Peer, origin: str, timeout: float) -> float:
    """The monotonic time of the first authoritative SOA answer over UDP (polled every 10 ms)."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA, use_edns=False)
    wire = query.to_wire()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.01)
        while time.monotonic() < deadline:
            if peer.proc.poll() is not None:
                raise RuntimeError(f"{peer.name} exited; log:\n{peer.log_text()}")
            with contextlib.suppress(OSError):
                sock.sendto(wire, ("127.0.0.1", peer.port))
                data = sock.recv(65535)
                now = time.monotonic()
                if data[:2] == wire[:2] and data[3] & 0xF == 0 and data[2] & 0x04:
                    return now
    raise RuntimeError(f"{peer.name} did not answer in {timeout} s; log:\n{peer.log_text()}")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (NSD forks its server and xfrd processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, peak RSS) of the process tree, in KiB."""
    rss = peak = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1])
    return rss, peak


def settled_memory_kib(pid: int, quiet: float = 1.0, limit: float = 20.0) -> tuple[int, int]:
    """memory_kib once the process tree has settled: the same processes and an RSS within 1%
    for `quiet` seconds (at most `limit` seconds). A server with workers starts them after its
    first answer (gitdns) and a server may write files after it: memory at the first answer
    would leave them out."""
    deadline = time.monotonic() + limit
    last = (len(process_tree(pid)), *memory_kib(pid))
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = (len(process_tree(pid)), *memory_kib(pid))
        if now[0] != last[0] or abs(now[1] - last[1]) > last[1] / 100:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last[1], last[2]


# --------------------------------------------------------------------------- dnsperf


@dataclass
class Perf:
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    interrupted: int = 0  # in flight when dnsperf was stopped by SIGINT (not lost)
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    cpu_us: float | None = None  # server CPU per completed query
    intervals: list[float] = field(default_factory=list)  # q/s each second (dnsperf -S 1)


def dnsperf_argv(port: int, query_file: Path, seconds: float, tcp: bool = False,
                 rate: float | None = None, latencies: bool = False, runs: int | None = None,
                 stats: bool = False, cpu: str | None = None) -> list[str]:
    argv = ["taskset", "-c", cpu or CLIENT_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", str(query_file), "-c", "16", "-q", "100", "-T", "1", "-t", "2"]
    argv += ["-n", str(runs)] if runs else ["-l", str(seconds)]
    if tcp:
        argv += ["-m", "tcp"]
    if rate:
        argv += ["-Q", str(int(rate))]
    if latencies:
        argv.append("-v")
    if stats:
        argv += ["-S", "1"]
    return argv


def parse_dnsperf(out: str, argv: list[str], latencies: bool = False) -> Perf:
    perf = Perf()
    for key, attr in (("Queries sent", "sent"), ("Queries completed", "completed"),
                      ("Queries lost", "lost"), ("Queries interrupted", "interrupted")):
        m = re.search(rf"{key}:\s+(\d+)", out)
        if m:
            setattr(perf, attr, int(m.group(1)))
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"dnsperf gave no result: {shlex.join(argv)}\n{out[-2000:]}")
    perf.qps = float(m.group(1))
    perf.intervals = [float(v) for v in re.findall(r"^\d+\.\d+: ([\d.]+)$", out, re.MULTILINE)]
    if latencies:
        values = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines()
                        if line.startswith("> ") and line.count(" ") >= 4
                        and line.rsplit(None, 1)[1][:1].isdigit())
        if values:
            def pct(q: float) -> float:
                return values[min(len(values) - 1, int(len(values) * q))] * 1000

            perf.p50_ms, perf.p99_ms, perf.p999_ms = pct(0.5), pct(0.99), pct(0.999)
    return perf


def dnsperf(port: int, query_file: Path, seconds: float, tcp: bool = False,
            rate: float | None = None, latencies: bool = False, runs: int | None = None,
            pid: int | None = None, cpu: str | None = None) -> Perf:
    argv = dnsperf_argv(port, query_file, seconds, tcp, rate, latencies, runs, cpu=cpu)
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120).stdout
    cpu_used = cpu_seconds(pid) - cpu_before if pid else None
    perf = parse_dnsperf(out, argv, latencies)
    if cpu_used is not None and perf.completed:
        perf.cpu_us = cpu_used * 1e6 / perf.completed
    return perf


# --------------------------------------------------------------------------- reporting


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _ratio(value: float | None, base: float | None, inverse: bool = False) -> str:
    if value is None or not base:
        return "-"
    return f"{(base / value if inverse else value / base):.2f}"


def environment() -> list[str]:
    def first_line(argv: list[str]) -> str:
        with contextlib.suppress(Exception):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (r.stdout + r.stderr).strip().splitlines()
            return next((line for line in text if re.search(r"\d+\.\d+", line)), "?").strip()
        return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    return [
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; gitdns at {commit}",
        f"- {first_line([NAMED, '-v'])}; {first_line([KNOTD, '-V'])}; "
        f"{first_line([NSD, '-v'])}; dnsperf {first_line(['dnsperf', '-h'])}",
    ]


def write_section(name: str, lines: list[str], command: str, results: Path = RESULTS,
                  preamble: str | None = None) -> None:
    """Replace the `name` section of `results` (bench/RESULTS.md; others and notes are kept);
    a file without sections starts again from `preamble`."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    body = "\n".join([begin, f"Measured {now} with `{command}`", "", *environment(), "",
                      *lines, end])
    preamble = preamble or (
        "# Benchmark results\n\nWritten by `python bench/run.py` (see bench/run.py for what is "
        "measured and how); each sub-command replaces its own section.\n")
    text = results.read_text() if results.exists() else preamble
    if "<!-- bench:" not in text:
        text = preamble
    if begin in text and end in text:
        text = text[: text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    results.write_text(text)


# --------------------------------------------------------------------------- qps


@dataclass
class Measured:
    udp: list[Perf] = field(default_factory=list)
    tcp: list[Perf] = field(default_factory=list)
    fixed: list[Perf] = field(default_factory=list)
    half: list[Perf] = field(default_factory=list)


def run_qps(args) -> list[str]:
    servers = [s for s in args.servers.split(",") if s]
    wd = Path(tempfile.mkdtemp(prefix="gitdns-bench-"))
    zone_file = wd / workload.ORIGIN
    zone_file.write_text(workload.zone_text(args.hosts))
    qfile = wd / "queries.txt"
    qfile.write_text(workload.query_file_text(workload.queries(args.queries, args.hosts)))
    peers: dict[str, Peer] = {}
    results = {s: Measured() for s in servers}
    try:
        for name in servers:
            peers[name], took = start(name, wd / name, workload.ORIGIN, zone_file)
            print(f"{name}: answering after {took:.2f} s (port {peers[name].port})", flush=True)
        for name in servers:  # warm up: the whole query file once, over UDP and over TCP
            t0 = time.monotonic()
            dnsperf(peers[name].port, qfile, 0, runs=1)
            dnsperf(peers[name].port, qfile, 0, tcp=True, runs=1)
            print(f"{name}: warmed up in {time.monotonic() - t0:.1f} s", flush=True)
        fixed_rate = args.fixed_rate
        for r in range(args.rounds):
            for name in servers:
                peer = peers[name]
                udp = dnsperf(peer.port, qfile, args.duration, pid=peer.proc.pid)
                tcp = dnsperf(peer.port, qfile, args.duration, tcp=True, pid=peer.proc.pid)
                results[name].udp.append(udp)
                results[name].tcp.append(tcp)
                print(f"round {r + 1} {name}: UDP {udp.qps:,.0f} q/s ({udp.lost} lost), "
                      f"TCP {tcp.qps:,.0f} q/s", flush=True)
            if fixed_rate is None:  # a load the servers sustain: half the slowest maximum
                fixed_rate = 0.5 * min(results[s].udp[0].qps for s in servers
                                       if s != "gitdns" or servers == ["gitdns"])
            for name in servers:
                peer = peers[name]
                half_rate = 0.5 * results[name].udp[-1].qps
                half = dnsperf(peer.port, qfile, args.duration, rate=half_rate, latencies=True,
                               pid=peer.proc.pid)
                fixed = dnsperf(peer.port, qfile, args.duration, rate=fixed_rate,
                                pid=peer.proc.pid)
                results[name].half.append(half)
                results[name].fixed.append(fixed)
                print(f"round {r + 1} {name}: p99 {_fmt(half.p99_ms, '.2f')} ms at "
                      f"{half_rate:,.0f} q/s; {_fmt(fixed.cpu_us, '.1f')} us CPU a query at "
                      f"{fixed_rate:,.0f} q/s", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return qps_report(args, servers, results, fixed_rate)


def qps_report(args, servers: list[str], results: dict[str, Measured],
               fixed_rate: float | None) -> list[str]:
    med = {s: {
        "udp": _median([p.qps for p in results[s].udp]),
        "busy": _median([p.cpu_us * p.qps / 1e4 if p.cpu_us else None for p in results[s].udp]),
        "tcp": _median([p.qps for p in results[s].tcp]),
        "lost": _median([p.lost for p in results[s].udp]),
        "lost_tcp": _median([p.lost for p in results[s].tcp]),
        "half_lost": _median([p.lost for p in results[s].half]),
        "p99": _median([p.p99_ms for p in results[s].half]),
        "half_rate": _median([0.5 * p.qps for p in results[s].udp]),
        "cpu": _median([p.cpu_us for p in results[s].fixed]),
        "fixed_lost": _median([p.lost for p in results[s].fixed]),
    } for s in servers}
    base = med.get("bind", {})
    lines = [
        f"Zone of {args.hosts} hosts; {args.queries} queries of the issue-3 mix "
        "(60% A, 10% AAAA, 10% NXDOMAIN, 5% NODATA, 5% CNAME, 5% MX, 3% referral, 2% wildcard), "
        f"no EDNS; {args.rounds} interleaved round(s) of {args.duration} s per test; medians. "
        "Server on CPU 0, dnsperf (`-c 16 -q 100 -T 1`, TCP: 16 connections) on CPU 1; "
        "each server warmed up by one pass of the query file over UDP and TCP. Server CPU busy: "
        "its CPU time during the UDP run over the run's length; below 100% the server was not "
        "the bottleneck (dnsperf was).",
        "",
        "| server | UDP q/s | vs BIND | server CPU busy | lost | TCP q/s | vs BIND | lost | "
        f"CPU a query at {_fmt(fixed_rate)} q/s | vs BIND | p99 at half its max | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        m = med[s]
        lines.append(
            f"| {LABELS[s]} | {_fmt(m['udp'])} | {_ratio(m['udp'], base.get('udp'))} | "
            f"{_fmt(m['busy'], '.0f', '%')} | {_fmt(m['lost'])} | {_fmt(m['tcp'])} | "
            f"{_ratio(m['tcp'], base.get('tcp'))} | "
            f"{_fmt(m['lost_tcp'])} | {_fmt(m['cpu'], '.1f', ' us')} "
            f"({_fmt(m['fixed_lost'])} lost) | {_ratio(m['cpu'], base.get('cpu'))} | "
            f"{_fmt(m['p99'], '.2f', ' ms')} at {_fmt(m['half_rate'])} q/s | "
            f"{_fmt(m['half_lost'])} |")
    lines += ["", "Per round (UDP q/s / TCP q/s):", ""]
    for s in servers:
        rounds = ", ".join(f"{u.qps:,.0f} / {t.qps:,.0f}"
                           for u, t in zip(results[s].udp, results[s].tcp, strict=True))
        lines.append(f"- {LABELS[s]}: {rounds}")
    return lines


# --------------------------------------------------------------------------- bigzone


def axfr(port: int, origin: str, expected: int, timeout: float = 600.0,
         idle: float = 3.0) -> tuple[float, int]:
    """Seconds from connecting to the last byte of a full AXFR, and the records received.

    The transfer is complete at `expected` records, or once the server, having started, has sent
    nothing for `idle` seconds (servers keep the connection open); it must end with the SOA.
    """
    query = dns.message.make_query(origin, dns.rdatatype.AXFR, use_edns=False)
    wire = query.to_wire()
    received = 0
    buf = bytearray()
    last_message = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = last_byte = time.monotonic()
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        while received < expected and time.monotonic() - started < timeout:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            last_byte = time.monotonic()
            sock.settimeout(idle)  # the first byte may take long (a server rendering it all)
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + ((buf[0] << 8) | buf[1]):
                size = (buf[0] << 8) | buf[1]
                message = bytes(buf[2 : 2 + size])
                del buf[: 2 + size]
                if message[3] & 0xF:
                    raise RuntimeError(f"AXFR refused (rcode {message[3] & 0xF})")
                received += (message[6] << 8) | message[7]
                last_message = message
    final = dns.message.from_wire(last_message) if last_message else None
    if final is None or not final.answer or final.answer[-1].rdtype != dns.rdatatype.SOA:
        raise RuntimeError(f"AXFR incomplete: {received} records, no closing SOA")
    return last_byte - started, received


def run_bigzone(args) -> list[str]:
    servers = [s for s in args.servers.split(",") if s]
    wd = Path(tempfile.mkdtemp(prefix="gitdns-bigzone-"))
    zone_file = wd / workload.BIG_ORIGIN
    records = 0
    with zone_file.open("w") as f:
        for chunk in workload.big_zone_lines(args.records):
            f.write(chunk)
            records += sum(1 for line in chunk.splitlines() if line and line[0] not in "$;")
    size_mb = zone_file.stat().st_size / 1e6
    print(f"zone of {records} records, {size_mb:.1f} MB", flush=True)
    rows = {}
    if "gitdns" in servers:
        # gitdns twice: parsing the file (its compiled copy removed before each start), then
        # from the compiled copy the parsing starts left in the data directory.
        servers.insert(servers.index("gitdns"), "gitdns-parse")
    try:
        for name in servers:
            starts, mems, xfrs = [], [], []
            for i in range(args.starts):
                kind = "gitdns" if name == "gitdns-parse" else name
                shutil.rmtree(wd / "gitdns" / "data" / "zonecache", ignore_errors=True) \
                    if name == "gitdns-parse" else None
                peer, took = start(kind, wd / kind, workload.BIG_ORIGIN, zone_file, xfr=True,
                                   timeout=args.timeout, cpus=args.server_cpus)
                try:
                    xfr_time, got = axfr(peer.port, workload.BIG_ORIGIN, records + 1)
                    rss, peak = settled_memory_kib(peer.proc.pid)
                finally:
                    peer.stop()
                starts.append(took)
                mems.append((rss, peak))
                xfrs.append(xfr_time)
                print(f"{name} start {i + 1}: first answer after {took:.2f} s, RSS "
                      f"{rss / 1024:.0f} MiB (peak {peak / 1024:.0f}), AXFR {xfr_time:.2f} s "
                      f"({got} records)", flush=True)
            rows[name] = (starts, mems, xfrs)
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    base = rows.get("bind")
    lines = [
        f"Zone of {records} records ({size_mb:.1f} MB master file); each server started "
        f"{args.starts} time(s) on CPU {args.server_cpus or SERVER_CPU} (of "
        f"{len(os.sched_getaffinity(0))}), medians. gitdns runs twice: \"parsing the file\" "
        "removes its compiled copy (data directory, zonecache/) before each start, so it reads "
        "and parses the master file from git (its first start also clones the repository); "
        "\"gitdns serve\" then starts from the compiled copy those starts left, as a restart "
        "does. Start: from exec to the first "
        "authoritative SOA answer over UDP (polled every 10 ms). AXFR: from connect to the "
        "last record, right after the first answer. Memory: RSS of the server's processes "
        "once settled after the AXFR (the same processes and RSS within 1% for 1 s: gitdns "
        "starts its workers after its first answer), with the sum of each process's peak "
        "in brackets.",
        "", "| server | start to first answer | vs BIND | RSS (peak) | vs BIND | AXFR | vs BIND |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (starts, mems, xfrs) in rows.items():
        st, rss = statistics.median(starts), statistics.median(m[0] for m in mems)
        peak, xf = statistics.median(m[1] for m in mems), statistics.median(xfrs)
        b = (statistics.median(base[0]), statistics.median(m[0] for m in base[1]),
             statistics.median(base[2])) if base else (None, None, None)
        each = ", ".join(f"{s:.2f}" for s in starts)
        lines.append(f"| {LABELS[name]} | {st:.2f} s ({each}) | {_ratio(st, b[0])} | "
                     f"{rss / 1024:.0f} MiB ({peak / 1024:.0f}) | {_ratio(rss, b[1])} | "
                     f"{xf:.2f} s | {_ratio(xf, b[2])} |")
    return lines


# --------------------------------------------------------------------------- shared


def parse_size(text: str) -> int:
    """`10k`, `200k`, `1.2M` or `50000` -> a number."""
    text = text.strip()
    scale = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


@dataclass
class ZoneCase:
    """A zone of a run: its label, origin, master file, query file, records."""

    label: str
    origin: str
    zone_file: Path
    query_file: Path
    records: int


def make_zone_case(wd: Path, size: str, hosts: int, queries: int) -> ZoneCase:
    """`10k`: the query benchmark's zone of `hosts` hosts and its query mix; any other size:
    the big zone of bench/workload.big_zone_lines with that many records and its mix."""
    wd.mkdir(parents=True, exist_ok=True)
    if size == "10k":
        zone_file = wd / workload.ORIGIN
        text = workload.zone_text(hosts)
        zone_file.write_text(text)
        records = sum(1 for line in text.splitlines() if line and line[0] not in "$;")
        qfile = wd / "queries.txt"
        qfile.write_text(workload.query_file_text(workload.queries(queries, hosts)))
        return ZoneCase(f"{hosts} hosts ({records} records)", workload.ORIGIN, zone_file, qfile,
                        records)
    wanted = parse_size(size)
    zone_file = wd / workload.BIG_ORIGIN
    records = workload.write_big_zone(zone_file, wanted)
    qfile = wd / "queries.txt"
    qfile.write_text(workload.query_file_text(workload.big_queries(queries, records)))
    return ZoneCase(f"{records} records", workload.BIG_ORIGIN, zone_file, qfile, records)


def soa_serial(port: int, origin: str, timeout: float = 0.2) -> int | None:
    """The SOA serial `port` answers for `origin` over UDP (None: no answer in time)."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA, use_edns=False)
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return None
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return rrset[0].serial
    return None


def wait_serial(port: int, origin: str, serial: int, timeout: float) -> float | None:
    """Poll (every 10 ms, bounded by `timeout`) until `serial` is answered; when, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if soa_serial(port, origin) == serial:
            return time.monotonic()
        time.sleep(0.01)
    return None


def dnsperf_during(port: int, query_file: Path, rate: float, action: Callable[[], object],
                   lead: float, tail: float, longest: float, out_dir: Path) -> tuple[Perf, object]:
    """dnsperf at `rate` q/s with a report every second; `lead` seconds in, `action()` runs;
    `tail` seconds after it returned (longer than dnsperf's 2 s query timeout, so every query
    sent before has been answered or lost), dnsperf is stopped with SIGINT (the queries still
    in flight then are counted as interrupted, not lost). (dnsperf's figures, what action
    returned)."""
    argv = dnsperf_argv(port, query_file, lead + longest + tail + 30, rate=rate, stats=True)
    out_path = out_dir / "dnsperf.out"  # a file, not a pipe: a lossy run prints a line a loss
    with out_path.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(lead)
            result = action()
            time.sleep(tail)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return parse_dnsperf(out_path.read_text(errors="replace"), argv), result


# --------------------------------------------------------------------------- reload


RELOAD_SERVERS = ("gitdns", "bind", "knot", "nsd")
RELOAD_HOW = {
    "gitdns": "a commit to its git remote, then SIGHUP (gitdns pulls and swaps the new version)",
    "bind": "the zone file rewritten, then SIGHUP (named reloads changed zones)",
    "knot": "the zone file rewritten, then `knotc zone-reload`",
    "nsd": "the zone file rewritten, then SIGHUP (nsd reloads changed zone files)",
}
KNOTC = "/usr/sbin/knotc"
BASE_SERIAL = 2024010101  # bench/workload.py's SOA


def zone_with_serial(data: bytes, serial: int) -> bytes:
    """The master file with its SOA serial replaced and one A record added (a real change)."""
    head, rest = data[:400], data[400:]
    if str(BASE_SERIAL).encode() not in head:
        raise RuntimeError("the zone's SOA serial is not where bench/workload.py puts it")
    head = head.replace(str(BASE_SERIAL).encode(), str(serial).encode(), 1)
    return head + rest + f"reload{serial} A 192.0.2.77\n".encode()


def trigger_reload(name: str, peer: Peer, swd: Path, origin: str, data: bytes) -> float:
    """Put the new zone in place for `name` and ask it to reload; when the request was made."""
    if name == "gitdns":
        repo = swd / "repo"
        (repo / origin).write_bytes(data)
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@bench.invalid",
                        "commit", "-qam", "reload"], cwd=repo, check=True, timeout=300)
        started = time.monotonic()
        os.kill(peer.proc.pid, signal.SIGHUP)
        return started
    zone = swd / origin
    tmp = swd / f"{origin}.new"
    tmp.write_bytes(data)
    os.replace(tmp, zone)
    started = time.monotonic()
    if name == "knot":
        subprocess.run([KNOTC, "-s", str(swd / "knot.sock"), "zone-reload", origin], check=True,
                       capture_output=True, timeout=60)
    else:
        os.kill(peer.proc.pid, signal.SIGHUP)
    return started


def run_reload(args) -> list[str]:
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in RELOAD_SERVERS]
    if unknown:
        raise SystemExit(f"reload: no reload for {', '.join(unknown)}")
    wd = Path(tempfile.mkdtemp(prefix="gitdns-bench-reload-"))
    lines = [
        f"Each server answers dnsperf at a fixed {args.reload_rate:,.0f} q/s (UDP, `-t 2`) while "
        f"its zone is reloaded: {args.lead:.0f} s in, the zone gets a new serial and one more "
        "record, and the server is asked to reload; the bench polls the SOA over UDP every "
        "10 ms until the new serial is answered (reload time: from the request to that "
        f"answer), waits {args.tail:.0f} s more (dnsperf's timeout is 2 s) and stops dnsperf "
        "with SIGINT. Lost: queries dnsperf sent and got no answer to within 2 s. The same run "
        "without a reload, as long, gives the loss the rate alone causes. "
        f"{args.rounds} interleaved round(s); medians, every round in brackets. Reload "
        "requests: " + "; ".join(f"{LABELS[s]}: {RELOAD_HOW[s]}" for s in servers) + ".",
        "",
    ]
    try:
        for size in [s for s in args.sizes.split(",") if s]:
            case = make_zone_case(wd / f"zone-{size}", size, args.hosts, args.queries)
            print(f"zone {case.label} ({case.zone_file.stat().st_size / 1e6:.1f} MB)", flush=True)
            lines += reload_size(args, servers, case, wd / f"servers-{size}")
    finally:
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    return lines


def reload_size(args, servers: list[str], case: ZoneCase, wd: Path) -> list[str]:
    peers: dict[str, Peer] = {}
    data = case.zone_file.read_bytes()
    runs: dict[str, list[tuple[Perf, float | None, Perf]]] = {s: [] for s in servers}
    serial = BASE_SERIAL
    try:
        for name in servers:
            swd = wd / name
            swd.mkdir(parents=True)
            own = swd / case.origin
            shutil.copyfile(case.zone_file, own)
            peers[name], took = start(name, swd, case.origin, own, timeout=args.timeout)
            print(f"{name}: answering after {took:.2f} s", flush=True)
            dnsperf(peers[name].port, case.query_file, 0, runs=1)  # warm up
        for r in range(args.rounds):
            for name in servers:
                peer, swd = peers[name], wd / name
                quiet, _ = dnsperf_during(peer.port, case.query_file, args.reload_rate,
                                          lambda: None, args.lead, args.tail, 0, swd)
                serial += 1
                new = zone_with_serial(data, serial)

                def reload(name=name, peer=peer, swd=swd, new=new, serial=serial):
                    asked = trigger_reload(name, peer, swd, case.origin, new)
                    seen = wait_serial(peer.port, case.origin, serial, args.timeout)
                    return None if seen is None else seen - asked

                perf, took = dnsperf_during(peer.port, case.query_file, args.reload_rate,
                                            reload, args.lead, args.tail, args.timeout, swd)
                runs[name].append((perf, took, quiet))
                worst = min(perf.intervals) if perf.intervals else None
                print(f"round {r + 1} {name}: reload {_fmt(took, '.2f', ' s')}, "
                      f"{perf.lost} lost of {perf.sent} (without reload: {quiet.lost} of "
                      f"{quiet.sent}), slowest second {_fmt(worst)} q/s", flush=True)
                if took is None:
                    print(f"  {name} never answered serial {serial}; log:\n"
                          f"{peer.log_text(10)}", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
    out = [f"Zone of {case.label}:", "",
           "| server | reload time | lost during the reload run | sent | lost without reload "
           "| slowest second of the reload run |", "|---|---|---|---|---|---|"]
    for name in servers:
        rs = runs[name]
        took = [t for _, t, _ in rs]
        each_t = ", ".join(_fmt(t, ".2f") for t in took)
        each_l = ", ".join(str(p.lost) for p, _, _ in rs)
        worst = _median([min(p.intervals) if p.intervals else None for p, _, _ in rs])
        out.append(f"| {LABELS[name]} | {_fmt(_median(took), '.2f', ' s')} ({each_t}) | "
                   f"{_fmt(_median([p.lost for p, _, _ in rs]))} ({each_l}) | "
                   f"{_fmt(_median([p.sent for p, _, _ in rs]))} | "
                   f"{_fmt(_median([q.lost for _, _, q in rs]))} | {_fmt(worst)} q/s |")
    return [*out, ""]


# --------------------------------------------------------------------------- latency


def run_latency(args) -> list[str]:
    """Saturation UDP q/s, then dnsperf -Q at half of it with -v: latency percentiles."""
    servers = [s for s in args.servers.split(",") if s]
    wd = Path(tempfile.mkdtemp(prefix="gitdns-bench-latency-"))
    case = make_zone_case(wd / "zone", "10k", args.hosts, args.queries)
    peers: dict[str, Peer] = {}
    runs: dict[str, list[tuple[Perf, Perf]]] = {s: [] for s in servers}
    try:
        for name in servers:
            peers[name], took = start(name, wd / name, case.origin, case.zone_file)
            dnsperf(peers[name].port, case.query_file, 0, runs=1)  # warm up
        for r in range(args.rounds):
            for name in servers:
                port = peers[name].port
                top = dnsperf(port, case.query_file, args.duration)
                half = dnsperf(port, case.query_file, args.duration, rate=top.qps / 2,
                               latencies=True)
                runs[name].append((top, half))
                print(f"round {r + 1} {name}: max {top.qps:,.0f} q/s; at {top.qps / 2:,.0f} "
                      f"q/s p50 {_fmt(half.p50_ms, '.2f')} ms, p99 {_fmt(half.p99_ms, '.2f')} "
                      f"ms, p99.9 {_fmt(half.p999_ms, '.2f')} ms, {half.lost} lost", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    base = _median([h.p99_ms for _, h in runs.get("bind", [])])
    lines = [
        f"Zone of {case.label}, the issue-3 query mix over UDP. Each round, for each server in "
        f"turn: dnsperf at full speed for {args.duration} s (its maximum), then dnsperf `-Q` at "
        f"half that rate for {args.duration} s with `-v` (every query's latency): percentiles "
        f"of those latencies. {args.rounds} interleaved round(s), medians. Server on CPU "
        f"{SERVER_CPU}, dnsperf (`-c 16 -q 100 -T 1`) on CPU {CLIENT_CPU}.",
        "", "| server | max UDP q/s | offered (half) | p50 | p99 | vs BIND | p99.9 | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in servers:
        rs = runs[name]
        p99 = _median([h.p99_ms for _, h in rs])
        lines.append(
            f"| {LABELS[name]} | {_fmt(_median([t.qps for t, _ in rs]))} | "
            f"{_fmt(_median([t.qps / 2 for t, _ in rs]))} | "
            f"{_fmt(_median([h.p50_ms for _, h in rs]), '.2f', ' ms')} | "
            f"{_fmt(p99, '.2f', ' ms')} | {_ratio(p99, base)} | "
            f"{_fmt(_median([h.p999_ms for _, h in rs]), '.2f', ' ms')} | "
            f"{_fmt(_median([h.lost for _, h in rs]))} |")
    return lines


# --------------------------------------------------------------------------- workers


WORKERS_SERVERS = ("gitdns", "bind", "knot")
WORKERS_NOTE = (
    "What this can show on a small machine: with dnsperf pinned to its own CPU and the "
    "server's processes to the others, N workers can only scale up to the number of CPUs the "
    "server was given; with 2 CPUs that is one, so N=2 measures the cost (or gain) of running "
    "two workers on one core (socket sharing, context switches, each worker's own event loop), "
    "not scaling across cores. Scaling needs at least N CPUs for the server plus enough for the "
    "load generator not to be the bottleneck (check the server-CPU-busy column: well below "
    "100% per CPU given, the client was the limit). Run with `--server-cpus` to let the "
    "server share dnsperf's CPU, which shows contention with the client rather than scaling.")


def warm_until_steady(port: int, query_file: Path, workers: int, most: int = 10) -> list[float]:
    """Warm up: SO_REUSEPORT spreads dnsperf's sockets over the workers by their source ports,
    new at every run, so each worker must see every name: 2N passes of the query file, then
    1-second runs until two in a row are within 10% (at most `most`); their q/s."""
    dnsperf(port, query_file, 0, runs=2 * workers)
    seen: list[float] = []
    for _ in range(most):
        seen.append(dnsperf(port, query_file, 1).qps)
        if len(seen) >= 2 and abs(seen[-1] - seen[-2]) <= 0.1 * max(seen[-2:]):
            break
    return seen


def run_workers(args) -> list[str]:
    counts = [int(n) for n in args.workers.split(",") if n]
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in WORKERS_SERVERS]
    if unknown:
        raise SystemExit(f"workers: no worker setting for {', '.join(unknown)}")
    all_cpus = sorted(os.sched_getaffinity(0))
    cpus = args.server_cpus or ",".join(str(c) for c in all_cpus if str(c) != CLIENT_CPU)
    if not cpus:
        raise SystemExit("workers: no CPU left for the server")
    notes = []
    if "gitdns" in servers and not gitdns_has_workers():
        servers.remove("gitdns")
        notes.append("gitdns skipped: `gitdns serve` has no --workers option yet (its "
                     "`serve --help` does not list it); rerun once it does.")
        print(notes[-1], flush=True)
    wd = Path(tempfile.mkdtemp(prefix="gitdns-bench-workers-"))
    case = make_zone_case(wd / "zone", "10k", args.hosts, args.queries)
    peers: dict[tuple[str, int], Peer] = {}
    runs: dict[tuple[str, int], list[Perf]] = {}
    try:
        for name in servers:
            for n in counts:
                peers[name, n], took = start(name, wd / f"{name}-{n}", case.origin,
                                             case.zone_file, workers=n, cpus=cpus)
                runs[name, n] = []
                warm_until_steady(peers[name, n].port, case.query_file, n)
                print(f"{name} with {n} worker(s) on CPU {cpus}: answering after {took:.2f} s, "
                      "warmed up", flush=True)
        for r in range(args.rounds):
            for key, peer in peers.items():
                perf = dnsperf(peer.port, case.query_file, args.duration, pid=peer.proc.pid)
                runs[key].append(perf)
                busy = perf.cpu_us * perf.qps / 1e4 if perf.cpu_us else None
                print(f"round {r + 1} {key[0]} x{key[1]}: {perf.qps:,.0f} q/s, server CPU "
                      f"{_fmt(busy, '.0f', '%')}, {perf.lost} lost", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
        if not args.keep:
            shutil.rmtree(wd, ignore_errors=True)
    med = {k: _median([p.qps for p in v]) for k, v in runs.items()}
    lines = [
        f"Zone of {case.label}, the issue-3 query mix over UDP, dnsperf (`-c 16 -q 100 -T 1`) "
        f"at full speed for {args.duration} s pinned to CPU {CLIENT_CPU}; every server's "
        f"processes pinned to CPU {cpus} (of {len(all_cpus)}). Workers: gitdns `serve "
        "--workers N`, BIND `named -n N`, Knot `udp-workers: N`. "
        f"{args.rounds} interleaved round(s), medians. Server CPU busy: its processes' CPU "
        "time over the run's length (100% = one CPU).",
        "", *notes, *([""] if notes else []),
        "| server | workers | UDP q/s | vs 1 worker | vs BIND, same workers | server CPU busy "
        "| lost |", "|---|---|---|---|---|---|---|",
    ]
    for (name, n), rs in runs.items():
        busy = _median([p.cpu_us * p.qps / 1e4 if p.cpu_us else None for p in rs])
        lines.append(f"| {LABELS[name].split(' (')[0]} | {n} | {_fmt(med[name, n])} | "
                     f"{_ratio(med[name, n], med.get((name, counts[0])))} | "
                     f"{_ratio(med[name, n], med.get(('bind', n)))} | "
                     f"{_fmt(busy, '.0f', '%')} | {_fmt(_median([p.lost for p in rs]))} |")
    return [*lines, "", WORKERS_NOTE]


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="gitdns beside BIND, Knot and NSD (issue 3).",
        epilog="Sub-commands: qps (default), bigzone, micro, reload, latency, workers.")
    parser.add_argument("command", nargs="?", default="qps",
                        choices=["qps", "bigzone", "micro", "reload", "latency", "workers"])
    parser.add_argument("--quick", action="store_true",
                        help="short runs: 1 round of 2 s, 20k queries (bigzone: 200k records; "
                        "reload: sizes 10k,200k)")
    parser.add_argument("--servers",
                        help=f"comma-separated, from {','.join(ALL_SERVERS)} (default: "
                        f"{','.join(DEFAULT_SERVERS)}; workers: {','.join(WORKERS_SERVERS)}; "
                        "gitdns-fast does no transfers and no reloads)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per dnsperf run")
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50_000, help="lines of the query file")
    parser.add_argument("--fixed-rate", type=float,
                        help="offered load for CPU per query (default: half the slowest max "
                        "of the servers but `gitdns serve`, which stays unwired and slow)")
    parser.add_argument("--records", type=int, default=1_200_000, help="bigzone: zone size")
    parser.add_argument("--starts", type=int, default=2, help="bigzone: starts per server")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="bigzone, reload: seconds a server may take to load (or reload) "
                        "a zone; polled, so a fast server is not held up")
    parser.add_argument("--sizes", default="10k,1.2M",
                        help="reload: zones, comma-separated: 10k = the query benchmark's zone "
                        "of --hosts hosts, any other size (200k, 1.2M) = the big zone of "
                        "bench/workload.big_zone_lines with that many records")
    parser.add_argument("--reload-rate", type=float, default=10_000,
                        help="reload: offered q/s while reloading (every server sustains it)")
    parser.add_argument("--lead", type=float, default=2.0,
                        help="reload: seconds of load before the reload")
    parser.add_argument("--tail", type=float, default=3.0,
                        help="reload: seconds of load after the new serial is answered")
    parser.add_argument("--workers", default="1,2",
                        help="workers: worker counts, comma-separated")
    parser.add_argument("--server-cpus",
                        help="workers: CPUs for the servers (taskset list; default: all but "
                        f"dnsperf's CPU {CLIENT_CPU}); bigzone: CPUs for the servers (default "
                        f"{SERVER_CPU}; another list writes the section bigzone-cpus)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.servers is None:
        args.servers = ",".join(WORKERS_SERVERS if args.command == "workers" else DEFAULT_SERVERS)
    if args.quick:
        args.rounds, args.duration, args.queries = 1, 2.0, 20_000
        if args.command == "bigzone":
            args.records, args.starts = min(args.records, 200_000), 1
        if args.command == "reload":
            args.sizes = "10k,200k"
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    missing = [tool for tool in ("dnsperf", "taskset", "git") if shutil.which(tool) is None]
    if missing and args.command != "micro":
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    compile_gitdns()
    if args.command == "micro":
        from bench import micro

        lines = micro.report(micro.run(hosts=args.hosts, quick=args.quick))
    elif args.command == "bigzone":
        lines = run_bigzone(args)
    elif args.command == "reload":
        lines = run_reload(args)
    elif args.command == "latency":
        lines = run_latency(args)
    elif args.command == "workers":
        lines = run_workers(args)
    else:
        lines = run_qps(args)
    print("\n".join(lines))
    if not args.no_write:
        # bigzone on other CPUs than the default one is a section of its own
        section = args.command
        if args.command == "bigzone" and args.server_cpus:
            section = "bigzone-cpus"
        write_section(section, lines, command)
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
