"""The recent history of every served zone, as the chains of differences IXFR sends.

Rules this module keeps:
- A zone's history is one unbroken chain (each difference starts at the serial the one before it
  ends at); anything that would break it (a gap, a serial that did not increase) drops the older
  part, so a client is never sent a difference that does not start from the zone it holds.
- Memory is bounded per zone, in differences and in records; the oldest go first. Older history
  can always be rebuilt from git (`diffs_from_git`), after a restart too.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

import dns.name

from gitdns.diff import ZoneDiff, records, soa_record, zone_diff
from gitdns.gitrepo import GitRepo
from gitdns.serial import serial_gt
from gitdns.zone import Zone
from gitdns.zonefile import ZoneLoadError, parse_zone


class _Chain:
    """One zone's differences, oldest first, and how many records they hold."""

    __slots__ = ("diffs", "size")

    def __init__(self) -> None:
        self.diffs: deque[ZoneDiff] = deque()
        self.size = 0


class ZoneHistory:
    """The recent differences of every served zone, for IXFR; bounded in memory.

    Thread-safe: the server records new versions from its writer while transfers read.
    """

    def __init__(self, max_diffs_per_zone: int = 100, max_records_per_zone: int = 200_000):
        if max_diffs_per_zone < 1 or max_records_per_zone < 1:
            raise ValueError("the history bounds must be positive")
        self.max_diffs = max_diffs_per_zone
        self.max_records = max_records_per_zone
        self._chains: dict[dns.name.Name, _Chain] = {}
        self._lock = threading.Lock()

    def record(self, old: Zone, new: Zone, diff: ZoneDiff | None = None) -> None:
        """A new version of a zone was swapped in; remember how it differs from the old one.

        A version whose serial did not increase (RFC 1982) breaks the chain: the history is
        dropped, as no older serial leads to the new content any more. The difference is computed
        outside the lock, so transfers are not held up by a big zone.
        """
        if old.origin != new.origin:
            raise ValueError(f"versions of two zones: {old.origin} and {new.origin}")
        if old is new:
            return
        if diff is not None and (diff.old_serial, diff.new_serial) != (old.serial, new.serial):
            raise ValueError(
                f"the difference goes from {diff.old_serial} to {diff.new_serial}, "
                f"the versions from {old.serial} to {new.serial}"
            )
        if not serial_gt(new.serial, old.serial):
            if new.serial == old.serial and _same_content(old, new):
                return  # nothing changed (a reload of the same content)
            self.forget(new.origin)
            return
        if diff is None:
            diff = zone_diff(old, new)
        with self._lock:
            chain = self._chains.setdefault(new.origin, _Chain())
            if chain.diffs and chain.diffs[-1].new_serial != diff.old_serial:
                chain.diffs.clear()  # a gap: a version we were not told about
                chain.size = 0
            chain.diffs.append(diff)
            chain.size += len(diff)
            self._evict(new.origin, chain)

    def diffs_since(
        self, origin: dns.name.Name, serial: int, current_serial: int
    ) -> list[ZoneDiff] | None:
        """The chain from `serial` to `current_serial`, oldest first ([] when they are equal);
        None when there is no unbroken chain (the answer is then a full transfer)."""
        if serial == current_serial:
            return []
        with self._lock:
            chain = self._chains.get(origin)
            if chain is None or not chain.diffs or chain.diffs[-1].new_serial != current_serial:
                return None
            diffs = chain.diffs
            # From the newest back: should a serial recur (wrap-around), the shortest chain wins.
            for i in range(len(diffs) - 1, -1, -1):
                if diffs[i].old_serial == serial:
                    return [diffs[j] for j in range(i, len(diffs))]
        return None

    def forget(self, origin: dns.name.Name) -> None:
        """Drop a zone's history (the zone was dropped, or its serial went backwards)."""
        with self._lock:
            self._chains.pop(origin, None)

    def add_older(self, origin: dns.name.Name, diffs: Iterable[ZoneDiff]) -> None:
        """Prepend older differences (oldest first, e.g. from git) to a zone's history.

        Only the part that joins the known chain is kept: the differences up to the one that ends
        where the chain starts (those that overlap the chain are skipped), and of those only the
        unbroken tail. Differences that do not join are ignored. With no history yet, the
        unbroken tail of `diffs` becomes the history. The bounds then drop the oldest.
        """
        older = list(diffs)
        with self._lock:
            chain = self._chains.get(origin)
            if chain is not None and chain.diffs:
                start = chain.diffs[0].old_serial
                joins = [i for i, d in enumerate(older) if d.new_serial == start]
                if not joins:
                    return
                older = older[: joins[-1] + 1]
            first = len(older)
            while first > 0 and _links(older[first - 1], older[first : first + 1]):
                first -= 1
            older = older[first:]
            if not older:
                return
            if chain is None:
                chain = self._chains[origin] = _Chain()
            chain.diffs.extendleft(reversed(older))
            chain.size += sum(len(d) for d in older)
            self._evict(origin, chain)

    def _evict(self, origin: dns.name.Name, chain: _Chain) -> None:
        """Drop the oldest differences until the zone's history is within its bounds."""
        while chain.diffs and (len(chain.diffs) > self.max_diffs or chain.size > self.max_records):
            chain.size -= len(chain.diffs.popleft())
        if not chain.diffs:
            del self._chains[origin]


def _links(diff: ZoneDiff, newer: list[ZoneDiff]) -> bool:
    """True when `diff` is a step forward that leads to the first of `newer` (if any)."""
    if not serial_gt(diff.new_serial, diff.old_serial):
        return False
    return not newer or diff.new_serial == newer[0].old_serial


def _same_content(a: Zone, b: Zone) -> bool:
    return soa_record(a) == soa_record(b) and set(records(a)) == set(records(b))


def diffs_from_git(
    repo: GitRepo,
    filename: str,
    origin: dns.name.Name,
    current: Zone,
    want_serial: int,
    *,
    max_commits: int = 200,
) -> list[ZoneDiff] | None:
    """The chain of differences from the version with `want_serial` to `current`, from the zone
    file's git history; None when that serial is not found within `max_commits` versions.

    This is what lets IXFR serve a secondary after a restart, when the in-memory history is
    empty. Versions are read newest first and only as far as needed. A version that does not
    parse is skipped (it was never served). Consecutive versions with one serial are one step:
    the newest of them stands for the serial, except when it is the serial asked for and their
    contents differ, as the client may hold any of them: then None (a full transfer is safe).
    Versions newer than `current` (not yet loaded) are passed over; a serial that went backwards
    in the history ends the search.
    """
    if want_serial == current.serial:
        return []
    if not serial_gt(current.serial, want_serial):
        return None
    parsed: dict[bytes, Zone | None] = {}

    def version(blob: bytes) -> Zone | None:
        if blob not in parsed:
            try:
                parsed[blob], _warnings = parse_zone(repo.read_blob(blob), origin, filename)
            except ZoneLoadError:
                parsed[blob] = None
        return parsed[blob]

    newer = current  # the version standing for the newest serial not yet diffed against
    found_current = False
    steps: list[ZoneDiff] = []  # newest first
    for _commit, blob in repo.file_history(filename, max_commits):
        zone = version(blob)
        if zone is None:
            continue
        if zone.serial == newer.serial:
            found_current = True
            if newer.serial == want_serial and not _same_content(zone, newer):
                return None  # two contents under the serial asked for: which one has the client?
            continue
        if not serial_gt(newer.serial, zone.serial):
            if not found_current and not steps:
                continue  # a version committed after the one in service (not loaded yet)
            break  # the serial went backwards in the history: no chain past this point
        found_current = True
        if newer.serial == want_serial:
            break
        if serial_gt(want_serial, zone.serial):
            return None  # passed the serial asked for without meeting it
        steps.append(zone_diff(zone, newer))
        newer = zone
    if newer.serial != want_serial:
        return None
    steps.reverse()
    return steps
