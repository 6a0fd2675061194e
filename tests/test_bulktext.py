"""ZoneText built by bulktext edits exactly as the one the general loader builds."""

from __future__ import annotations

import random

import dns.name
import pytest

from gitdns.bulktext import bulk_zone_text
from gitdns.fastload import parse_zone_fast
from gitdns.zonefile import parse_zone
from gitdns.zonetext import F_OWNER, written
from tests.test_zonetext import (
    ORIGIN,
    big_zone,
    both,
    lease_diffs,
    run_sequence,
    styled_zone,
)


def run(text: str, origin: dns.name.Name, rnd: random.Random, steps: int) -> bool:
    """Random diffs applied through the bulk index, each compared with edit_zone_text."""
    zt = bulk_zone_text(text, origin)
    if zt is None:
        return False
    general = parse_zone_fast(text, origin)[2]
    # What every entry holds is what the general loader read.
    for e in range(len(general._flags)):
        assert zt._start[e] == general._start[e] and zt._ttl[e] == general._ttl[e]
        assert zt._flags[e] == written(general._etext(e), general._flags[e] & F_OWNER)
        assert zt._owner[e] == general._owner[e] and zt._rd[e] == general._rd[e]
    assert len(zt._flags) == len(general._flags) and zt._soa == general._soa
    run_sequence(text, origin, rnd, steps, zt)
    return True


def without_quoted_parentheses(text: str) -> str:
    """styled_zone's text without its TXT records in parentheses (which bulktext leaves)."""
    out = []
    skip = False
    for line in text.splitlines(keepends=True):
        if skip:
            skip = False
            continue
        if '( "' in line:
            skip = True
            continue
        out.append(line)
    return "".join(out)


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_to_files_in_many_styles(seed: int) -> None:
    rnd = random.Random(5000 + seed)
    taken = 0
    for _ in range(3):
        text = styled_zone(rnd, rnd.choice([10, 30, 80]))
        if "\r" not in text:
            text = without_quoted_parentheses(text)
        taken += run(text, ORIGIN, rnd, steps=6)
    assert taken


def test_leases_on_a_generated_zone() -> None:
    text = big_zone(3000)
    zt = bulk_zone_text(text, ORIGIN)
    assert zt is not None
    zone = parse_zone(text, ORIGIN)[0]
    for diff in lease_diffs(zone, 60):
        want, got = both(text, ORIGIN, diff, zt)
        assert got == want
        text = got[1]


def test_files_it_cannot_index_are_left_to_the_general_loader() -> None:
    base = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
    assert bulk_zone_text(base, ORIGIN) is not None
    for extra in ("$GENERATE 1-3 h$ A 192.0.2.$\n", "x TXT \"a\\\"b\"\n", "x TXT ( \"a\" )\n",
                  "$INCLUDE other\n", "x CAA 0 issue \"ca\"\n"):
        assert bulk_zone_text(base + extra, ORIGIN) is None, extra
