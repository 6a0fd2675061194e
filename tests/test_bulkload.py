"""The bulk loader makes the zone the general loader makes, or leaves the file to it."""

from __future__ import annotations

import random
from pathlib import Path

import dns.name
import pytest

from bench import workload
from gitdns import bulkload
from gitdns.bulkload import load_compact
from gitdns.compactzone import CompactZone
from gitdns.zonefile import ZoneLoadError, parse_zone
from tests.test_zone import same

ZONES = Path(__file__).parent / "zones"
ORIGIN = dns.name.from_text("example.test.")


def general(text: str, origin: dns.name.Name):
    """parse_zone's zone and warnings, or None when it refuses the file."""
    try:
        return parse_zone(text, origin, "f")
    except ZoneLoadError:
        return None


def check(text: str, origin: dns.name.Name = ORIGIN) -> bool:
    """Compare both loaders on `text`; True when the bulk loader took the file."""
    bulk = load_compact(text.encode(), origin, "f")
    expected = general(text, origin)
    if bulk is None:
        return False
    assert expected is not None, f"the bulk loader took a file the general loader refuses:\n{text}"
    zone, warnings = bulk
    assert warnings == [] and expected[1] == [], f"{expected[1]}\n{text}"
    assert isinstance(zone, CompactZone)
    same(zone, expected[0])
    assert [(r.name.to_text(), r.rdtype, r.ttl, list(r)) for r in zone.rrsets()] == \
        [(r.name.to_text(), r.rdtype, r.ttl, list(r)) for r in expected[0].rrsets()]
    return True


def test_generated_zones_are_taken_and_equal():
    assert check(workload.zone_text(2000), dns.name.from_text(workload.ORIGIN))
    big = "".join(workload.big_zone_lines(20_000))
    assert check(big, dns.name.from_text(workload.BIG_ORIGIN))


def test_the_corpus_files_are_equal_or_left_to_the_general_loader():
    for path in sorted(ZONES.iterdir()):
        origin = dns.name.from_text(path.name)
        check(path.read_text(), origin)


HEAD = "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.1\n"

LINES = [
    "www A 192.0.2.{n}", "www 600 A 192.0.2.{n}", "www IN 600 A 192.0.2.{n}",
    "www 600 IN AAAA 2001:db8::{n}", "WWW a 192.0.2.{n}", "  A 192.0.2.{n}",
    "  600 TXT \"hello world {n}\"", "t{n} TXT plain words", "t{n} TXT \"a;b\" ; comment",
    "mail MX 10 mx{n}", "mx{n} A 198.51.100.{n}", "mx{n}.example.test. A 198.51.100.{n}",
    "alias{n} CNAME www", "alias{n} A 192.0.2.1", "sub NS ns.sub", "ns.sub A 192.0.2.{n}",
    "x.sub TXT below", "srv{n} SRV 1 2 {n} www", "srv{n} SRV 1 2 3 nowhere", "Mixed.Case A 1.2.3.4",
    "$ORIGIN other.example.test.", "$ORIGIN example.test.", "deep.er.name A 192.0.2.{n}",
    "out.of.zone. A 192.0.2.1", "bad A 1.2.3", "bad A 010.1.2.3", "www A 192.0.2.1 ; dup",
    "www 60 A 192.0.2.77", "www MX 5 www", "p{n} PTR www", "e{n} A 192.0.2.{n}",
    "(bad", "z{n} TXT \"un;closed", "@ MX 0 .", "w{n} DS 1 2 3 abcd", "caps IN A 192.0.2.5",
    "*.wild A 192.0.2.9", "soa2 SOA a b 1 2 3 4 5", "@ NS ns2", "ns2 AAAA 2001:db8::53",
    "paren ( A\n  192.0.2.8 )", "t{n} TXT \"x\" \"y\" ; two strings",
]


@pytest.mark.parametrize("seed", range(8))
def test_random_files_agree_with_the_general_loader(seed):
    rng = random.Random(seed)
    taken = 0
    for _ in range(60):
        lines = [rng.choice(LINES).format(n=rng.randrange(1, 40))
                 for _ in range(rng.randrange(1, 14))]
        if rng.random() < 0.3:
            lines = [line for line in lines if "bad" not in line and "out.of" not in line]
        taken += check(HEAD + "\n".join(lines) + "\n")
    assert taken > 5  # the scanner takes a good share of them


def test_a_parenthesised_soa_and_comments_are_read_here():
    text = ("$ORIGIN example.test.\n$TTL 1h\n; a comment\n"
            "@ IN SOA ns1.example.test. h ( 2024 ; serial\n   3600 600 86400\n   60 )\n"
            "@ NS ns1\nns1 A 192.0.2.1 ; the server\n\n  AAAA ::1\n")
    assert check(text)


@pytest.mark.parametrize("records", [
    "www MX 10 mail\nWWW A 192.0.2.2\n",  # in one run
    "www MX 10 mail\nother A 192.0.2.3\nWWW A 192.0.2.2\n",  # the owner again, later
])
def test_an_owner_spelt_in_two_cases_is_left_to_the_general_loader(records):
    text = ("$TTL 300\n@ SOA ns hostmaster 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
            "mail A 192.0.2.9\n" + records)
    assert general(text, ORIGIN) is not None
    assert load_compact(text.encode(), ORIGIN, "f") is None


# Lines for the short branch of plain chunks (`owner A|AAAA address`) and what is next to it:
# owners seen again (with other types, the same type, a CNAME, another case), blank owners of
# three tokens, directives and comments that make a chunk not plain, one or two TXT strings.
PLAIN_LINES = [
    "h{n} A 192.0.2.{n}", "h{n} AAAA 2001:db8::{n}", "h{n} MX 10 h1", "h{n} TXT \"v=spf1 -all\"",
    "a{n} CNAME h{n}", "h{n} A 192.0.2.77", "H{n} A 192.0.2.{n}", "  300 A 192.0.2.9",
    "  A 192.0.2.{n}", "h{n} 300 A 192.0.2.{n}", "h{n} a 192.0.2.{n}", "h{n} A 192.0.2.{n} ; c",
    "$TTL 600", "h{n} TXT \"a\" \"b\"", "h{n} TXT \"x;y\"", "h{n} A 192.0.2.300", "h{n} A ::1",
    "h{n} AAAA 2001:db8::{n}", "h{n} A 192.0.2.{n}", "m{n} MX 5 h{n}", "p{n} PTR h{n}",
    "h{n}.example.test. A 192.0.2.{n}", "*.w A 192.0.2.1", "h{n} A 010.0.0.1", "",
    "t{n} TXT \"x\" junk", "t{n} TXT \"y\" ; note", "a{n} A 192.0.2.{n}",
]


@pytest.mark.parametrize("seed", range(12))
def test_plain_chunks_read_by_the_short_branch_agree_with_the_general_loader(seed, monkeypatch):
    # Chunks of a few lines, so that most files have plain chunks and runs across chunks.
    monkeypatch.setattr(bulkload, "_CHUNK", 1 + seed * 7)
    rng = random.Random(seed)
    taken = 0
    for _ in range(80):
        lines = [rng.choice(PLAIN_LINES).format(n=rng.randrange(1, 12))
                 for _ in range(rng.randrange(1, 30))]
        if rng.random() < 0.5:  # most files without what makes the bulk loader give up
            lines = [line for line in lines if "300" not in line and "010" not in line
                     and "A ::1" not in line and "H" not in line[:1] and "MX" not in line]
        taken += check(HEAD + "\n".join(lines) + "\n")
    assert taken > 10


def test_a_generated_zone_read_in_small_chunks_is_the_same():
    text = "".join(workload.big_zone_lines(3000))
    origin = dns.name.from_text(workload.BIG_ORIGIN)
    whole = load_compact(text.encode(), origin, "f")
    assert whole is not None
    for size in (40, 333, 4096):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(bulkload, "_CHUNK", size)
            again = load_compact(text.encode(), origin, "f")
            assert check(text, origin)
        assert again is not None
        assert again[0].nodes.table == whole[0].nodes.table  # type: ignore[attr-defined]
