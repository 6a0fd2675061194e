"""In-process cost of one answer: FastPath.answer against core.handle, on the bench zone and mix.

No sockets: the time of the Python work per query, which bounds what any socket loop can do.
Reported per kind of the mix, warm (every question seen before) and cold (the first time).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import dns.message

from bench import workload
from gitdns import core
from gitdns.fastpath import FastPath
from gitdns.store import ZoneSet
from gitdns.zonefile import parse_zone


def _wires(items, edns: bool, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for name, qtype in items:
        q = dns.message.make_query(name, qtype, use_edns=0 if edns else False, payload=1232)
        q.id = rng.randrange(65536)
        out.append(q.to_wire())
    return out


def _kinds(count: int, hosts: int) -> list[tuple[str, tuple[str, str]]]:
    rng = random.Random(3)
    kinds = [kind for share, kind in workload.MIX for _ in range(share)]
    return [(kinds[i % 100], workload.query(kinds[i % 100], rng, hosts)) for i in range(count)]


def _per_call(fn, args: list, repeat: int = 5) -> float:
    """Best of `repeat` passes, seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for a in args:
            fn(*a)
        best = min(best, (time.perf_counter() - start) / len(args))
    return best


def run(hosts: int = 10_000, count: int = 20_000, quick: bool = False) -> dict:
    zone, _warnings = parse_zone(workload.zone_text(hosts), workload.ORIGIN, workload.ORIGIN)
    zones = ZoneSet({zone.origin: zone})
    state = core.ServerState(zones)
    if quick:
        count = 5000
    tagged = _kinds(count, hosts)
    results: dict = {"hosts": hosts, "queries": count}
    for label, edns, tcp in (("UDP, no EDNS (dnsperf's default)", False, False),
                             ("UDP, EDNS 1232", True, False), ("TCP, EDNS", True, True)):
        wires = _wires([q for _k, q in tagged], edns)
        fast = FastPath(zones)
        start = time.perf_counter()
        for w in wires:
            fast.answer(w, tcp)
        cold = (time.perf_counter() - start) / len(wires)
        assert all(fast.answer(w, tcp) is not None for w in wires), "a mix query declined"
        warm = _per_call(fast.answer, [(w, tcp) for w in wires])
        by_kind = defaultdict(list)
        for (kind, _q), w in zip(tagged, wires, strict=True):
            by_kind[kind].append((w, tcp))
        kinds = {k: _per_call(fast.answer, v) for k, v in by_kind.items()}
        sample = [(state, w, core.Request(tcp=tcp)) for w in wires[: 300 if quick else 1000]]
        ref = _per_call(core.handle, sample, repeat=1)
        results[label] = {"warm": warm, "cold": cold, "reference": ref, "kinds": kinds}
    # the first query of names never seen: a flood of random NXDOMAIN names, by class
    fast = FastPath(zones)
    rng = random.Random(5)
    nx = _wires([(f"{rng.getrandbits(40):x}.{workload.ORIGIN}", "A") for _ in range(5000)], False)
    fast.answer(nx[0], False)
    results["random NXDOMAIN, first query of each name"] = _per_call(
        fast.answer, [(w, False) for w in nx[1:]], repeat=1)
    return results


def report(results: dict) -> list[str]:
    us = 1e6
    lines = [f"Zone of {results['hosts']} hosts, {results['queries']} queries of the mix, "
             "Python " + _python() + ", one core, best of 5 passes.", "",
             "| transport | fast path, warm | first query (fills the cache) | reference path "
             "(core.handle) | speed-up |", "|---|---|---|---|---|"]
    for label in ("UDP, no EDNS (dnsperf's default)", "UDP, EDNS 1232", "TCP, EDNS"):
        r = results[label]
        lines.append(f"| {label} | {r['warm'] * us:.2f} us | {r['cold'] * us:.1f} us | "
                     f"{r['reference'] * us:.0f} us | {r['reference'] / r['warm']:.0f}x |")
    lines += ["", "Warm cost per kind (UDP, no EDNS):", "",
              "| " + " | ".join(k for _s, k in workload.MIX) + " |",
              "|" + "---|" * len(workload.MIX)]
    kinds = results["UDP, no EDNS (dnsperf's default)"]["kinds"]
    lines.append("| " + " | ".join(f"{kinds[k] * us:.2f} us" for _s, k in workload.MIX) + " |")
    lines += ["", "A flood of random NXDOMAIN names (each asked once, answered by class): "
              f"{results['random NXDOMAIN, first query of each name'] * us:.1f} us a query."]
    return lines


def _python() -> str:
    import platform

    return platform.python_version()


if __name__ == "__main__":
    print("\n".join(report(run())))
