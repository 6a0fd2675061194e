"""Compiled zones on disk, by git blob: a restart serves a big zone without parsing it again.

Why: parsing the 1.2M-record benchmark zone costs about 2 s of CPU even with the bulk loader;
reading back the wire bytes it made (`marshal`, all C) costs a fraction of that. A git blob id
names its content, so an entry is valid for as long as the file has that content: there is
nothing to invalidate, only old entries to remove. (BIND's `masterfile-format map` and Knot's
zone journal serve the same purpose.)

Rules this module keeps:
- Only a cache: a missing, unreadable, truncated or foreign file is ignored (and the zone
  parsed); entries are written to a temporary name and renamed, never fsync'd.
- An entry holds what the loader produced for (origin, blob): the compact table, the counts,
  cuts, record count, referrers, outside addresses and the load's warnings (logged again).
- One entry per zone: writing one removes that zone's others.
"""

from __future__ import annotations

import logging
import marshal
import os
import re
import threading
from pathlib import Path

import dns.name

from gitdns.compactzone import CompactNames, CompactNodes, CompactZone

log = logging.getLogger("gitdns.zones")

FORMAT = 2  # bump when compactzone's blob format or what an entry holds changes
ZONE_CACHE = "zonecache"  # its folder in the data directory
_OBJECT_ID = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
#: Smaller zones parse faster than the cache would pay for its disk.
MIN_RECORDS = 50_000


class ZoneCache:
    """Compiled zones in one directory (the data directory's `zonecache/`)."""

    def __init__(self, directory: Path, write: bool = True, held: bool = False):
        self.directory = Path(directory)
        self.write = write  # False: read only (the workers read what the main wrote)
        # Held: entries wait for `release()`. At start, marshalling a big zone holds the GIL
        # for a few hundred ms, and the first answers come first.
        self._held: list[tuple] | None = [] if held else None
        self._lock = threading.Lock()

    def _path(self, origin: dns.name.Name, source: bytes) -> Path | None:
        """`<origin>.<blob id>.zone`; None for a source that is not a git object id."""
        if not _OBJECT_ID.fullmatch(source):
            return None
        return self.directory / f"{origin.to_text()}{source.decode('ascii')}.zone"

    def get(self, origin: dns.name.Name, source: bytes) -> tuple[CompactZone, list[str]] | None:
        """The compiled zone and its warnings, or None."""
        got = self.get_entry(origin, source)
        return None if got is None else (got[0], got[1])

    def get_entry(self, origin: dns.name.Name,
                  source: bytes) -> tuple[CompactZone, list[str], bool] | None:
        """`get`, and whether the zone is exactly what the bulk loader makes of the file (one
        record a line: the next version can be loaded from the lines that change)."""
        path = self._path(origin, source)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            item = marshal.loads(data)
            fmt, origin_wire, table, counts, cuts, records, signed, referrers, outside, \
                warnings, exact = item
            if fmt != FORMAT or origin_wire != origin.to_wire():
                return None
            zone = CompactZone.build(
                origin, table, counts, cuts, records, signed,
                {dns.name.from_wire(w, 0)[0]: c for w, c in referrers},
                {dns.name.from_wire(w, 0)[0]: list(a) for w, a in outside})
        except Exception as e:  # a damaged entry is a cache miss, never an error
            log.warning("zone cache %s unreadable (%s); parsing the zone file", path, e)
            return None
        return zone, list(warnings), bool(exact)

    def put(self, origin: dns.name.Name, source: bytes, zone: CompactZone,
            warnings: list[str], exact: bool = False) -> None:
        """Write the entry in a background thread (the zone is immutable)."""
        if not self.write or zone.record_count < MIN_RECORDS:
            return
        with self._lock:
            if self._held is not None:
                self._held.append((origin, source, zone, warnings, exact))
                return
        threading.Thread(target=self._write, args=(origin, source, zone, warnings, exact),
                         name="zone-cache", daemon=True).start()

    def release(self) -> list[threading.Thread]:
        """Write what was held (the threads writing it), and from now on write at once."""
        with self._lock:
            held, self._held = self._held or [], None
        threads = [threading.Thread(target=self._write, args=args, name="zone-cache",
                                    daemon=True) for args in held]
        for thread in threads:
            thread.start()
        return threads

    def _write(self, origin: dns.name.Name, source: bytes, zone: CompactZone,
               warnings: list[str], exact: bool = False) -> None:
        path = self._path(origin, source)
        if path is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            names: CompactNames = zone.names  # type: ignore[assignment]
            nodes: CompactNodes = zone.nodes  # type: ignore[assignment]
            # A version made from its previous one (bulkdelta) is a shared table seen through
            # a layer of changes: the entry holds every node.
            table = dict(nodes.raw_items()) if nodes.delta else nodes.table
            item = (FORMAT, origin.to_wire(), table,
                    dict(names.counts), list(zone.cuts.keys),  # type: ignore[attr-defined]
                    zone.record_count, zone.signed,
                    [(n.to_wire(), c) for n, c in zone.referrers().items()],
                    [(n.to_wire(), list(a)) for n, a in zone.outside.items()], list(warnings),
                    exact)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(marshal.dumps(item))
            os.replace(tmp, path)
            prefix = origin.to_text()
            for other in self.directory.iterdir():
                if other != path and other.name.startswith(prefix) and \
                        other.name[len(prefix):].count(".") == 1:
                    other.unlink(missing_ok=True)
            log.info("zone %s: compiled copy kept in %s", origin, path)
        except Exception as e:
            log.warning("zone %s: could not keep a compiled copy in %s: %s", origin,
                        self.directory, e)
