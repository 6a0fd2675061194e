"""Update throughput, side by side: gitdns, BIND and Knot in one interleaved run (issue 7).

Each update is TSIG-signed, adds one A record, and goes over a new TCP connection (as nsupdate
sends it); every server makes its change durable before answering (gitdns: its journal, fsync'd;
BIND and Knot: their journals). Rounds are interleaved (gitdns, BIND, Knot, gitdns, ...), each
server pinned to core 0 and the clients to core 1; medians are printed with ratios to BIND.
A last part kills gitdns with SIGKILL in the middle of an 8-client burst, restarts it, and checks
that every update it acknowledged is in the git remote.

    python bench/updates.py [--records 10000] [--updates 300] [--rounds 3] [--big]

`--big` adds the 1.2M-record zone (slow to generate and load). Writes bench/UPDATES.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.interop.peers import _spawn as spawn  # noqa: E402
from tests.interop.peers import free_port, wait_ready  # noqa: E402

ZONE = "bench.test"
KEYNAME = "bench._update.bench.test"
SECRET = base64.b64encode(b"b" * 32).decode()
KEY = dns.tsig.Key(KEYNAME, SECRET, dns.tsig.HMAC_SHA256)


def zone_text(records: int) -> str:
    lines = [f"$ORIGIN {ZONE}.", "$TTL 300", "@ SOA ns1 hostmaster 1 3600 600 86400 60",
             "@ NS ns1", "ns1 A 192.0.2.1"]
    lines += [f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(records)]
    return "\n".join(lines) + "\n"


def taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() >= 2 else []


# -- the servers ----------------------------------------------------------------------------


def start_gitdns(work: Path, text: str, port: int):
    seed = work / "seed"
    seed.mkdir()
    (seed / ZONE).write_text(text)
    (seed / "_keys").write_text(f"{KEYNAME}. DNSKEY 0 3 163 {SECRET}\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=seed, check=True)
    subprocess.run([*git, "add", "-A"], cwd=seed, check=True)
    subprocess.run([*git, "commit", "-qm", "zone"], cwd=seed, check=True)
    bare = work / "zones.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True)
    argv = [*taskset(0), sys.executable, "-m", "gitdns", "--log-level", "warning", "serve",
            "--remote", str(bare), "--listen", f"127.0.0.1:{port}", "--data-dir",
            str(work / "data"), "--notify", "explicit"]
    peer = spawn("gitdns", argv, work / "gitdns.log", port)
    wait_ready(peer, [ZONE], timeout=600)
    return peer, bare


def start_bind(work: Path, text: str, port: int):
    (work / f"{ZONE}.zone").write_text(text)
    conf = work / "named.conf"
    conf.write_text(f"""options {{ directory "{work}"; pid-file none; recursion no;
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; notify no;
  dnssec-validation no; session-keyfile "{work}/s.key"; managed-keys-directory "{work}"; }};
controls {{ }};
key "{KEYNAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "{ZONE}" {{ type primary; file "{work}/{ZONE}.zone"; allow-update {{ key "{KEYNAME}"; }}; }};
""")
    peer = spawn("named", [*taskset(0), "/usr/sbin/named", "-g", "-n", "1", "-c", str(conf)],
                 work / "named.log", port)
    wait_ready(peer, [ZONE], timeout=600)
    return peer


def start_knot(work: Path, text: str, port: int):
    (work / f"{ZONE}.zone").write_text(text)
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
zone:
  - domain: {ZONE}
    acl: upd
""")
    peer = spawn("knotd", [*taskset(0), "/usr/sbin/knotd", "-c", str(conf)], work / "knot.log",
                 port)
    wait_ready(peer, [ZONE], timeout=600)
    return peer


# -- the clients ----------------------------------------------------------------------------


async def one_update(port: int, name: str) -> float:
    """Send one signed update over a new TCP connection; its latency in seconds."""
    message = dns.update.UpdateMessage(ZONE, keyring=KEY)
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


async def burst(port: int, clients: int, per_client: int, prefix: str, acked: list | None = None):
    latencies: list[float] = []

    async def client(c: int):
        for i in range(per_client):
            name = f"{prefix}-{c}-{i}"
            latencies.append(await one_update(port, name))
            if acked is not None:
                acked.append(name)

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return clients * per_client / elapsed, latencies[int(len(latencies) * 0.99) - 1]


# -- the run --------------------------------------------------------------------------------


def measure(records: int, updates: int, rounds: int, work: Path) -> dict:
    text = zone_text(records)
    servers = {}
    ports = {name: free_port() for name in ("gitdns", "BIND", "Knot")}
    for name, start in (("gitdns", None), ("BIND", start_bind), ("Knot", start_knot)):
        d = work / f"{name}-{records}"
        d.mkdir()
        if name == "gitdns":
            servers[name], _bare = start_gitdns(d, text, ports[name])
        else:
            servers[name] = start(d, text, ports[name])
    results: dict = {name: {1: [], 8: []} for name in servers}
    try:
        for r in range(rounds):
            for clients in (1, 8):
                for name in servers:
                    rate, p99 = asyncio.run(burst(ports[name], clients, updates // clients,
                                                  f"r{r}c{clients}"))
                    results[name][clients].append((rate, p99))
                    print(f"  {records} records, {clients} client(s), {name}: {rate:.0f}/s, "
                          f"p99 {p99 * 1000:.1f} ms", flush=True)
    finally:
        for peer in servers.values():
            peer.stop()
    return results


def kill9_check(work: Path, records: int) -> str:
    """SIGKILL gitdns during an 8-client burst; every acknowledged update must reach git."""
    d = work / "kill9"
    d.mkdir()
    port = free_port()
    peer, bare = start_gitdns(d, zone_text(records), port)
    acked: list[str] = []

    async def run():
        task = asyncio.ensure_future(burst(port, 8, 10_000, "k", acked))
        while len(acked) < 200:
            await asyncio.sleep(0.01)
        os.kill(peer.proc.pid, signal.SIGKILL)
        try:
            await task
        except (OSError, RuntimeError, asyncio.IncompleteReadError):
            pass

    asyncio.run(run())
    peer.stop()
    argv = [sys.executable, "-m", "gitdns", "--log-level", "warning", "serve", "--remote",
            str(bare), "--listen", f"127.0.0.1:{port}", "--data-dir", str(d / "data"),
            "--notify", "explicit"]
    peer = spawn("gitdns", argv, d / "gitdns2.log", port)
    try:
        wait_ready(peer, [ZONE], timeout=600)
        deadline = time.monotonic() + 120
        missing = acked
        while time.monotonic() < deadline:
            text = subprocess.run(["git", "--git-dir", str(bare), "show", f"main:{ZONE}"],
                                  capture_output=True, text=True).stdout
            present = {line.split()[0] for line in text.splitlines() if line[:2] == "k-"}
            missing = [n for n in acked if n not in present]
            if not missing:
                break
            time.sleep(0.5)
    finally:
        peer.stop()
    verdict = "all in git" if not missing else f"{len(missing)} MISSING"
    return f"{len(acked)} updates acknowledged before SIGKILL; after restart: {verdict}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--updates", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also the 1.2M-record zone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitdns-bench-updates-"))
    sizes = [args.records] + ([1_200_000] if args.big else [])
    lines = [f"# Update throughput ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `python bench/updates.py {' '.join(sys.argv[1:])}`", "",
             "Signed updates adding one A record each, a new TCP connection per update; server "
             "on core 0, clients on core 1; medians of the rounds.", "",
             "| zone records | clients | server | updates/s | p99 ms | vs BIND |",
             "|---|---|---|---|---|---|"]
    try:
        for records in sizes:
            results = measure(records, args.updates, args.rounds, work)
            for clients in (1, 8):
                bind_rate = statistics.median(r for r, _ in results["BIND"][clients])
                for name in results:
                    rate = statistics.median(r for r, _ in results[name][clients])
                    p99 = statistics.median(p for _, p in results[name][clients])
                    lines.append(f"| {records} | {clients} | {name} | {rate:.0f} | "
                                 f"{p99 * 1000:.1f} | {rate / bind_rate:.2f} |")
        lines += ["", "Kill -9 in the middle of an 8-client burst (gitdns): "
                  + kill9_check(work, args.records), ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    (ROOT / "bench" / "UPDATES.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
