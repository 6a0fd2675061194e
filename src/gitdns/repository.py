"""The zone repository: which files are zones, which hold keys, and loading what changed.

Rules this module keeps (PRODUCT.md, "The zone repository"):
- Every top-level regular file is a zone named by the file; `_keys` and `ZONE._keys` hold TSIG
  secrets and are never served; dot-files and folders are ignored (and never touched).
- A file whose content did not change is not parsed again. A file that fails to load never takes
  its zone down: the last good version stays served; at first start a broken zone is not served.
- A file that changed by a few lines is loaded as a change of the version it replaces
  (`bulkdelta`) when that version is still exactly what its file made (no update or serial
  raise served since): the same zone as a full load, in time in proportion to the change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name

from gitdns import memory
from gitdns.bulkdelta import load_change
from gitdns.bulkload import load_compact
from gitdns.compactzone import CompactZone
from gitdns.fastload import parse_zone_fast
from gitdns.keys import Key, KeyStore, load_key_file
from gitdns.store import ZoneSet
from gitdns.zone import Zone
from gitdns.zonecache import ZoneCache
from gitdns.zonefile import ZoneLoadError, zone_name_from_filename

log = logging.getLogger("gitdns.zones")

KEYS_FILE = "_keys"
#: Smaller files are loaded whole: as quick, and the old file need not be read.
_DELTA_MIN_BYTES = 1 << 20
#: A file read of this size or more is followed by a trim (memory.py): loading it made and
#: freed several times its size in a worker thread's arena.
TRIM_AFTER_BYTES = 8 << 20
KEYS_SUFFIX = "._keys"


def is_key_file(filename: str) -> bool:
    return filename == KEYS_FILE or filename.endswith(KEYS_SUFFIX)


@dataclass
class ZoneStatus:
    """What the last load made of one zone file."""

    filename: str
    source: bytes  # id of the file content (a git blob id) the served zone came from
    zone: Zone | None  # the version in service (None: never loaded successfully)
    errors: list[str] = field(default_factory=list)  # errors of the newest content, if broken
    broken_source: bytes | None = None
    # (source, zone) when `zone` was loaded from `source` without warnings, one record a line
    # (bulkload's or bulkdelta's work): while the zone in service is still that object (no
    # update, no serial raise since), the next version of the file can be loaded from the
    # lines that changed. Same objects as `source` and `zone`: nothing more is kept alive.
    loaded: tuple[bytes, Zone] | None = field(default=None, repr=False, compare=False)


@dataclass
class RepositoryState:
    """The loaded repository: served zones and, per zone, where they came from."""

    zones: ZoneSet = field(default_factory=ZoneSet)
    status: dict[dns.name.Name, ZoneStatus] = field(default_factory=dict)
    key_files: dict[str, bytes] = field(default_factory=dict)  # filename -> content id
    key_sets: dict[str, dict[dns.name.Name, Key]] = field(default_factory=dict)  # last good
    keys: KeyStore = field(default_factory=KeyStore)


@dataclass
class LoadReport:
    """What changed in a load, for the log and for NOTIFY."""

    loaded: list[dns.name.Name] = field(default_factory=list)
    dropped: list[dns.name.Name] = field(default_factory=list)
    failed: list[dns.name.Name] = field(default_factory=list)
    keys_changed: bool = False
    # origin -> (the version it was compared with, the ZoneDiff), when worked out early
    diffs: dict = field(default_factory=dict)

    @property
    def changed(self) -> list[dns.name.Name]:
        return self.loaded + self.dropped


def load_repository(
    files: Mapping[str, bytes],
    read: Callable[[bytes], bytes],
    previous: RepositoryState | None = None,
    cache: ZoneCache | None = None,
) -> tuple[RepositoryState, LoadReport]:
    """Load the zone files in `files` (name -> content id), reusing what `previous` has.

    `read(content_id)` returns a file's bytes; it is only called for new or changed files and
    not for those `cache` has compiled.
    """
    previous = previous or RepositoryState()
    report = LoadReport()
    status: dict[dns.name.Name, ZoneStatus] = {}
    key_files: dict[str, bytes] = {}
    for filename in sorted(files):
        source = files[filename]
        if filename.startswith("."):
            continue
        if is_key_file(filename):
            key_files[filename] = source
            continue
        try:
            origin = zone_name_from_filename(filename)
        except dns.exception.DNSException as e:
            log.error("%s: the file name is not a domain name (%s); file ignored", filename, e)
            continue
        if origin in status:
            log.error(
                "%s: zone %s is already loaded from %s; file ignored",
                filename, origin, status[origin].filename,
            )
            continue
        old = previous.status.get(origin)
        if old is not None and source in (old.source, old.broken_source):
            status[origin] = old  # unchanged since the last load (good or broken)
            continue
        status[origin] = _load_one(filename, origin, source, read, old, report, cache)
    for origin, old in previous.status.items():
        if origin not in status and old.zone is not None:
            log.info("zone %s: file %s is gone from the repository; zone dropped",
                     origin, old.filename)
            report.dropped.append(origin)
    report.keys_changed = key_files != previous.key_files
    if report.keys_changed:
        key_sets = _load_keys(key_files, read, previous)
        keys = _merge_keys(key_sets)
    else:
        key_sets, keys = previous.key_sets, previous.keys
    zones = ZoneSet({o: s.zone for o, s in status.items() if s.zone is not None})
    return RepositoryState(zones, status, key_files, key_sets, keys), report


def _load_keys(
    key_files: Mapping[str, bytes], read: Callable[[bytes], bytes], previous: RepositoryState
) -> dict[str, dict[dns.name.Name, Key]]:
    """Keys by file; a file that fails to parse keeps its last good keys (or has none)."""
    key_sets: dict[str, dict[dns.name.Name, Key]] = {}
    for filename, source in sorted(key_files.items()):
        if previous.key_files.get(filename) == source and filename in previous.key_sets:
            key_sets[filename] = previous.key_sets[filename]
            continue
        try:
            keys, problems = load_key_file(read(source), filename)
        except (ValueError, dns.exception.DNSException) as e:
            kept = previous.key_sets.get(filename)
            log.error("%s; %s", e, f"keeping its {len(kept)} previous keys" if kept
                      else "no keys from this file")
            if kept:
                key_sets[filename] = kept
            continue
        for problem in problems:
            log.warning("%s", problem)
        log.info("keys from %s: %s", filename, ", ".join(
            f"{k.name} ({k.operation or 'no right'})" for k in keys.values()) or "none")
        key_sets[filename] = keys
    for filename in previous.key_sets:
        if filename not in key_files:
            log.info("key file %s is gone from the repository; its keys are dropped", filename)
    return key_sets


def _merge_keys(key_sets: Mapping[str, dict[dns.name.Name, Key]]) -> KeyStore:
    """One store; a key name in two files keeps the secret of the zone's own file."""
    merged: dict[dns.name.Name, Key] = {}
    for filename in sorted(key_sets, key=lambda f: (f != "_keys", f)):  # zone files override
        for name, key in key_sets[filename].items():
            if name in merged and merged[name].secret != key.secret:
                log.warning("key %s has secrets in two files; the one in %s is used",
                            name, filename)
            merged[name] = key
    return KeyStore(merged)


def load_zone(data: bytes, origin: dns.name.Name, filename: str) -> tuple[Zone, list[str]]:
    """A zone file as a CompactZone (bytes per name: a big zone's memory and load time), by the
    bulk loader when the file is regular, else by the general loader; ZoneLoadError if broken."""
    zone, warnings, _bulk = _load_whole(data, origin, filename)
    return zone, warnings


def _load_whole(data: bytes, origin: dns.name.Name,
                filename: str) -> tuple[CompactZone, list[str], bool]:
    """`load_zone`, and whether the bulk loader made the zone: then every record is one line
    of the file, what loading a later version from its changed lines needs (the general
    loader merges a record given twice silently)."""
    bulk = load_compact(data, origin, filename)
    if bulk is not None:
        return bulk[0], bulk[1], True
    zone, warnings, _text = parse_zone_fast(data, origin, filename)
    return CompactZone.from_zone(zone), warnings, False


def _load_one(
    filename: str,
    origin: dns.name.Name,
    source: bytes,
    read: Callable[[bytes], bytes],
    old: ZoneStatus | None,
    report: LoadReport,
    cache: ZoneCache | None = None,
) -> ZoneStatus:
    started = time.monotonic()
    compiled = cache.get_entry(origin, source) if cache is not None else None
    how = " (compiled copy)" if compiled is not None else ""
    try:
        if compiled is not None:
            zone, warnings, exact = compiled
        else:
            data = read(source)
            change = _load_change(old, data, read, origin)
            if change is not None:
                zone, warnings, exact = change.zone, [], True
                how = (f" as a change of serial {old.zone.serial}"  # type: ignore[union-attr]
                       f" (-{change.removed} +{change.added} lines, {change.names} names)")
            else:
                zone, warnings, exact = _load_whole(data, origin, filename)
            if len(data) >= TRIM_AFTER_BYTES:
                memory.trim_soon()  # the file's text and lines, given back once freed
            if cache is not None and isinstance(zone, CompactZone):
                cache.put(origin, source, zone, warnings, exact and not warnings)
    except ZoneLoadError as e:
        errors = [str(err) for err in e.errors]
        for line in errors:
            log.error("zone %s: %s", origin, line)
        if old is not None and old.zone is not None:
            log.error("zone %s: keeping serial %d in service until the file is fixed",
                      origin, old.zone.serial)
        else:
            log.error("zone %s: not served until the file is fixed", origin)
        report.failed.append(origin)
        return ZoneStatus(
            filename,
            old.source if old else b"",
            old.zone if old else None,
            errors,
            broken_source=source,
        )
    for warning in warnings:
        log.warning("zone %s: %s", origin, warning)
    log.info(
        "zone %s loaded from %s%s: serial %d, %d records, %.1f ms",
        origin, filename, how, zone.serial, zone.record_count,
        (time.monotonic() - started) * 1000,
    )
    report.loaded.append(origin)
    # (A compiled copy says whether the bulk loader made it: after a restart too, the next
    # version of a big file is loaded from its changed lines.)
    exact = exact and not warnings
    return ZoneStatus(filename, source, zone, loaded=(source, zone) if exact else None)


def _load_change(old: ZoneStatus | None, data: bytes, read: Callable[[bytes], bytes],
                 origin: dns.name.Name):
    """The new version made from the served one and the lines that changed, or None (then the
    whole file is loaded). Only from a served zone that is exactly what its file made: after an
    update or a raised serial, `old.zone` differs from the file `old.source` names."""
    if old is None or old.loaded is None or not isinstance(old.zone, CompactZone):
        return None
    source, zone = old.loaded
    if zone is not old.zone or source != old.source or len(data) < _DELTA_MIN_BYTES:
        return None
    try:
        return load_change(old.zone, read(source), data, origin)
    except Exception:  # only a quicker way: the full load decides
        log.exception("zone %s: loading the change failed; loading the whole file", origin)
        return None
