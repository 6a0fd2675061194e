"""The benchmark's data: a zone of 10k hosts, the issue-3 query mix, and a 1.2M-record zone.

Everything is a pure function of its arguments (a seeded `random.Random`), so every run and
every server gets the same bytes.

The mix (issue 3): 60% A, 10% AAAA, 10% NXDOMAIN, 5% NODATA, 5% CNAME, 5% MX, 5% referral and
wildcard (half each). The zone has, beside the hosts, what those answers need: aliases, mail
domains with MX and mail hosts (additional-section addresses), delegations with in-domain glue,
and a wildcard.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

ORIGIN = "bench.test"
BIG_ORIGIN = "big.bench.test"

MIX = (  # (share in percent, kind)
    (60, "A"),
    (10, "AAAA"),
    (10, "NXDOMAIN"),
    (5, "NODATA"),
    (5, "CNAME"),
    (5, "MX"),
    (3, "referral"),
    (2, "wildcard"),
)

ALIASES_PER_HOSTS = 10  # one alias (CNAME) per ten hosts
MAIL_DOMAINS_PER_HOSTS = 20
DELEGATIONS_PER_HOSTS = 50
MAIL_HOSTS = 10


def _soa(origin: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 3600\n"
            "@ SOA ns1 hostmaster 2024010101 3600 600 1209600 300\n"
            "@ NS ns1\n@ NS ns2\n@ MX 10 mail1\n@ MX 20 mail2\n"
            "ns1 A 192.0.2.1\nns1 AAAA 2001:db8::1\nns2 A 192.0.2.2\n")


def _v4(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _v6(i: int) -> str:
    return f"2001:db8:{(i >> 16) & 0xFFFF:x}:{i & 0xFFFF:x}::1"


def zone_text(hosts: int = 10_000) -> str:
    """The 10k-host zone: host1..hostN (A; every other one AAAA too), aliases, mail domains,
    delegations with glue, a wildcard."""
    out = [_soa(ORIGIN)]
    for m in range(1, MAIL_HOSTS + 1):
        out.append(f"mail{m} A 192.0.2.{100 + m}\nmail{m} AAAA 2001:db8::{100 + m:x}\n")
    for i in range(1, hosts + 1):
        out.append(f"host{i} A {_v4(i)}\n")
        if i % 2 == 0:
            out.append(f"host{i} AAAA {_v6(i)}\n")
    for i in range(1, hosts // ALIASES_PER_HOSTS + 1):
        out.append(f"www{i} CNAME host{i * ALIASES_PER_HOSTS - 3}\n")
    for i in range(1, hosts // MAIL_DOMAINS_PER_HOSTS + 1):
        a, b = (i % MAIL_HOSTS) + 1, ((i + 3) % MAIL_HOSTS) + 1
        out.append(f"dept{i} MX 10 mail{a}\ndept{i} MX 20 mail{b}\ndept{i} A {_v4(i)}\n")
    for i in range(1, hosts // DELEGATIONS_PER_HOSTS + 1):
        out.append(f"sub{i} NS ns1.sub{i}\nsub{i} NS ns2.sub{i}\n"
                   f"ns1.sub{i} A 192.0.2.{i % 250 + 1}\nns2.sub{i} A 198.51.100.{i % 250 + 1}\n")
    out.append("*.wild A 192.0.2.99\n*.wild AAAA 2001:db8::99\n")
    return "".join(out)


def _label(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def query(kind: str, rng: random.Random, hosts: int) -> tuple[str, str]:
    """One (name, type) of the given kind."""
    if kind == "A":
        return f"host{rng.randint(1, hosts)}.{ORIGIN}", "A"
    if kind == "AAAA":
        return f"host{2 * rng.randint(1, hosts // 2)}.{ORIGIN}", "AAAA"
    if kind == "NXDOMAIN":
        return f"{_label(rng, rng.randint(5, 12))}.{ORIGIN}", "A"
    if kind == "NODATA":
        return f"host{rng.randint(1, hosts)}.{ORIGIN}", "TXT"
    if kind == "CNAME":
        return f"www{rng.randint(1, hosts // ALIASES_PER_HOSTS)}.{ORIGIN}", "A"
    if kind == "MX":
        return f"dept{rng.randint(1, hosts // MAIL_DOMAINS_PER_HOSTS)}.{ORIGIN}", "MX"
    if kind == "referral":
        return f"www.sub{rng.randint(1, hosts // DELEGATIONS_PER_HOSTS)}.{ORIGIN}", "A"
    if kind == "wildcard":
        return f"{_label(rng, rng.randint(4, 10))}.wild.{ORIGIN}", "A"
    raise ValueError(kind)


def queries(count: int = 100_000, hosts: int = 10_000, seed: int = 3) -> list[tuple[str, str]]:
    """`count` queries of the mix, shuffled (deterministic)."""
    rng = random.Random(seed)
    kinds = [kind for share, kind in MIX for _ in range(share)]
    return [query(kinds[i % 100], rng, hosts) for i in _shuffled(count, rng)]


def _shuffled(count: int, rng: random.Random) -> list[int]:
    order = list(range(count))
    rng.shuffle(order)
    return order


def query_file_text(items: list[tuple[str, str]]) -> str:
    """dnsperf's input format: one `name TYPE` a line."""
    return "".join(f"{name} {qtype}\n" for name, qtype in items)


def big_zone_lines(records: int = 1_200_000) -> Iterator[str]:
    """A zone of about `records` records (host A + AAAA pairs, with a CNAME, an MX and a TXT
    every 20 hosts), one record a line, as operators' generated zones are."""
    yield _soa(BIG_ORIGIN)
    yield "".join(f"mail{m} A 192.0.2.{100 + m}\n" for m in range(1, MAIL_HOSTS + 1))
    made = 3 + 4 + MAIL_HOSTS
    i = 0
    while made < records:
        i += 1
        yield f"host{i} A {_v4(i)}\nhost{i} AAAA {_v6(i)}\n"
        made += 2
        if i % 20 == 0:
            yield (f"alias{i} CNAME host{i}\n"
                   f"host{i} MX 10 mail{i % MAIL_HOSTS + 1}\n"
                   f'host{i} TXT "v=spf1 a mx -all"\n')
            made += 3


BIG_MIX = (  # (share in percent, kind) of the queries asked of the big zone
    (60, "A"),
    (15, "AAAA"),
    (10, "NXDOMAIN"),
    (5, "TXT"),
    (5, "MX"),
    (5, "CNAME"),
)


def big_queries(count: int = 100_000, records: int = 1_200_000,
                seed: int = 5) -> list[tuple[str, str]]:
    """`count` queries of the big zone of `records` records (big_zone_lines), shuffled: hosts'
    A and AAAA, names that do not exist, and the TXT, MX and CNAME every 20th host has."""
    hosts = max(20, (records - 17) * 20 // 43)  # 43 records every 20 hosts
    rng = random.Random(seed)
    kinds = [kind for share, kind in BIG_MIX for _ in range(share)]
    out = []
    for i in _shuffled(count, rng):
        kind = kinds[i % 100]
        if kind in ("A", "AAAA"):
            out.append((f"host{rng.randint(1, hosts)}.{BIG_ORIGIN}", kind))
        elif kind == "NXDOMAIN":
            out.append((f"{_label(rng, rng.randint(5, 12))}.{BIG_ORIGIN}", "A"))
        elif kind in ("TXT", "MX"):
            out.append((f"host{20 * rng.randint(1, hosts // 20)}.{BIG_ORIGIN}", kind))
        else:
            out.append((f"alias{20 * rng.randint(1, hosts // 20)}.{BIG_ORIGIN}", "A"))
    return out


def write_big_zone(path, records: int = 1_200_000) -> int:
    """big_zone_lines(records) written to `path`; the number of records written."""
    made = 0
    with open(path, "w") as f:
        for chunk in big_zone_lines(records):
            f.write(chunk)
            made += sum(1 for line in chunk.splitlines() if line and line[0] not in "$;")
    return made
