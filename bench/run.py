#!/usr/bin/env python3
"""gitdns beside BIND, Knot and NSD on the same data, measured in interleaved rounds (issue 3).

    python bench/run.py [qps] [--quick]   UDP and TCP saturation, lost queries, CPU per query
                                          at a fixed load, p99 latency at half the maximum rate
    python bench/run.py bigzone           a 1.2M-record zone: start to first answer, memory, AXFR
    python bench/run.py micro             in-process cost of one answer (fast path, reference)

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

import dns.message  # noqa: E402
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
    "bind": "BIND 9 (named -n 1)",
    "knot": "Knot DNS (1 UDP + 1 TCP worker)",
    "nsd": "NSD (1 server)",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- servers


def _spawn(name: str, argv: list[str], log: Path, port: int, env=None) -> Peer:
    log_file = open(log, "wb")  # noqa: SIM115 - closed by Peer.stop
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *argv], stdin=subprocess.DEVNULL,
                            stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return Peer(name=name, proc=proc, port=port, log_path=log, _log_file=log_file)


def start_gitdns(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool) -> Peer:
    repo = wd / "repo"
    if not repo.exists():
        make_git_repo(repo, {origin: zone_file.read_bytes()})
    argv = [sys.executable, "-m", "gitdns", "serve", "--remote", str(repo), "--listen",
            f"127.0.0.1:{port}", "--data-dir", str(wd / "data"), "--notify", "explicit",
            "--log-level", "warning"]
    if xfr:
        argv.append("--axfr-unauthenticated")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return _spawn("gitdns", argv, wd / "gitdns.log", port, env)


def start_gitdns_fast(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool) -> Peer:
    argv = [sys.executable, "-m", "bench.fastserve", str(zone_file), origin, "--listen",
            f"127.0.0.1:{port}"] + (["--axfr-unauthenticated"] if xfr else [])
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'src'}")
    return _spawn("gitdns-fast", argv, wd / "fastserve.log", port, env)


def start_bind(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool) -> Peer:
    conf = wd / "named.conf"
    conf.write_text(named_conf(wd, {origin: zone_file}, port,
                               "allow-transfer { 127.0.0.1; };" if xfr else ""))
    return _spawn("bind", [NAMED, "-g", "-n", "1", "-c", str(conf)], wd / "named.log", port)


def start_knot(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool) -> Peer:
    (wd / "db").mkdir(exist_ok=True)
    conf = wd / "knot.conf"
    conf.write_text(f"""server:
  listen: 127.0.0.1@{port}
  rundir: "{wd}"
  udp-workers: 1
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
    return _spawn("knot", [KNOTD, "-c", str(conf)], wd / "knot.log", port)


def start_nsd(wd: Path, origin: str, zone_file: Path, port: int, xfr: bool) -> Peer:
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
  server-count: 1
  rrl-ratelimit: 0
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: {origin}
  zonefile: "{zone_file}"
  provide-xfr: 127.0.0.1 NOKEY
""")
    return _spawn("nsd", [NSD, "-d", "-c", str(conf)], wd / "nsd.log", port)


STARTERS: dict[str, Callable[..., Peer]] = {
    "gitdns": start_gitdns, "gitdns-fast": start_gitdns_fast, "bind": start_bind,
    "knot": start_knot, "nsd": start_nsd,
}


def start(name: str, wd: Path, origin: str, zone_file: Path, xfr: bool = False,
          timeout: float = 120.0) -> tuple[Peer, float]:
    """Start a server and wait for its SOA over UDP and TCP; (peer, seconds to first answer)."""
    wd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.monotonic()
    peer = STARTERS[name](wd, origin, zone_file, port, xfr)
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


# --------------------------------------------------------------------------- dnsperf


@dataclass
class Perf:
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    p99_ms: float | None = None
    cpu_us: float | None = None  # server CPU per completed query


def dnsperf(port: int, query_file: Path, seconds: float, tcp: bool = False,
            rate: float | None = None, latencies: bool = False, runs: int | None = None,
            pid: int | None = None) -> Perf:
    argv = ["taskset", "-c", CLIENT_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
            str(query_file), "-c", "16", "-q", "100", "-T", "1", "-t", "2"]
    argv += ["-n", str(runs)] if runs else ["-l", str(seconds)]
    if tcp:
        argv += ["-m", "tcp"]
    if rate:
        argv += ["-Q", str(int(rate))]
    if latencies:
        argv.append("-v")
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120).stdout
    perf = Perf()
    if pid:
        perf.cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6
    for key, attr in (("Queries sent", "sent"), ("Queries completed", "completed"),
                      ("Queries lost", "lost")):
        m = re.search(rf"{key}:\s+(\d+)", out)
        if m:
            setattr(perf, attr, int(m.group(1)))
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"dnsperf gave no result: {shlex.join(argv)}\n{out[-2000:]}")
    perf.qps = float(m.group(1))
    if perf.cpu_us is not None:
        perf.cpu_us = perf.cpu_us / perf.completed if perf.completed else None
    if latencies:
        values = sorted(float(line.rsplit(None, 1)[1]) for line in out.splitlines()
                        if line.startswith("> ") and line.count(" ") >= 4
                        and line.rsplit(None, 1)[1][:1].isdigit())
        if values:
            perf.p99_ms = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
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


def write_section(name: str, lines: list[str], command: str) -> None:
    """Replace the `name` section of bench/RESULTS.md (others and notes are kept)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    body = "\n".join([begin, f"Measured {now} with `{command}`", "", *environment(), "",
                      *lines, end])
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nWritten by `python bench/run.py` (see bench/run.py for what is "
        "measured and how); each sub-command replaces its own section.\n")
    if begin in text and end in text:
        text = text[: text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    RESULTS.write_text(text)


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
    try:
        for name in servers:
            starts, mems, xfrs = [], [], []
            for i in range(args.starts):
                peer, took = start(name, wd / name, workload.BIG_ORIGIN, zone_file, xfr=True,
                                   timeout=args.timeout)
                try:
                    rss, peak = memory_kib(peer.proc.pid)
                    xfr_time, got = axfr(peer.port, workload.BIG_ORIGIN, records + 1)
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
        f"{args.starts} time(s) on CPU 0, medians (gitdns: the first start clones the git "
        "repository, the later ones reuse the clone). Start: from exec to the first "
        "authoritative SOA answer over UDP (polled every 10 ms). Memory: RSS of the server's "
        "processes once answering (peak in brackets). AXFR: from connect to the last record.",
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


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="gitdns beside BIND, Knot and NSD (issue 3).",
        epilog="Sub-commands: qps (default), bigzone, micro.")
    parser.add_argument("command", nargs="?", default="qps", choices=["qps", "bigzone", "micro"])
    parser.add_argument("--quick", action="store_true",
                        help="short runs: 1 round of 2 s, 20k queries (bigzone: 200k records)")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, from {','.join(ALL_SERVERS)} (default: "
                        f"{','.join(DEFAULT_SERVERS)}; gitdns-fast does no transfers)")
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
                        help="bigzone: seconds a server may take to load")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.queries = 1, 2.0, 20_000
        if args.command == "bigzone":
            args.records, args.starts = min(args.records, 200_000), 1
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    missing = [tool for tool in ("dnsperf", "taskset", "git") if shutil.which(tool) is None]
    if missing and args.command != "micro":
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.command == "micro":
        from bench import micro

        lines = micro.report(micro.run(hosts=args.hosts, quick=args.quick))
    elif args.command == "bigzone":
        lines = run_bigzone(args)
    else:
        lines = run_qps(args)
    print("\n".join(lines))
    if not args.no_write:
        write_section(args.command, lines, command)
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
