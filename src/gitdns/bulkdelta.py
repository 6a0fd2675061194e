"""A new version of a big regular zone from the lines that changed in its file.

Why: after a commit that changes a few lines of a 1.2M-record zone, parsing the whole 35 MB file
again costs about 2 s (`bulkload`) and comparing the versions for IXFR another 0.3 s. Here the
two files are compared as bytes (64 KB slices at a time: C speed), only the changed lines and
the other lines of the names they touch are parsed (with `bulkload`'s scanner), and the new
version is the old one with those names replaced (`CompactZone.with_changes`), so that the
difference for IXFR costs time in proportion to the change too.

Rules this module keeps:
- `load_changed` returns exactly what `repository.load_zone(new_data)` returns (the same nodes,
  owners and case, RRset order and TTLs, names, cuts, record count, referrers) with no warnings,
  or None when it is not sure: the caller then loads the whole file, which also gives every
  error and warning.
- `old` must be exactly what `bulkload` (or this module) made of `old_data`: a warning-free
  load with one record a line (the general loader merges a record given twice silently, and
  the lines of a name are counted against its records). The caller's promise: repository
  keeps the pair it loaded and uses it only while that zone is still the one in service.
- Sure means: every line of the new file is a statement of its own (no parentheses,
  backslashes or control characters; no changed line and no line after a change starts with
  blanks, so no record takes its owner from the line before; directives only before the first
  record and never changed, with a `$TTL`, so a line means the same wherever it is); the
  change is small; every changed line is one `bulkload` reads; and for every name touched all
  its lines lie near each other (the order of its RRsets and records, and its owner's case,
  depend on where each of its lines is, so its node is parsed again from those lines). Then
  every rule `bulkload` checks is checked again for the changed names: one TTL per RRset, no
  record twice, CNAME alone, SOA only at the apex and there, NS, MX and SRV targets with
  addresses, also when a name others point at loses its addresses. A changed NS record or a
  change at or below a delegation is left to the full load.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.name

from gitdns.bulkload import (
    AAAA,
    NS,
    SOA,
    A,
    _NotSure,
    _Scanner,
    _types_of,
    _under_cut,
)
from gitdns.compactzone import CompactZone, blob_owner, decode_node, iter_records

_SLICE = 1 << 16  # bytes compared at a time while the versions agree
_ANCHOR = 160  # bytes that must agree for the versions to count as in step again
_NEAR = 48  # lines looked at on each side for where the versions are in step again
_FAR = 1 << 21  # bytes searched for the end of a long run of added or removed lines
_GAP = 16  # lines of other owners after which a name's lines are taken to be all found
_BLOCK = 4096  # lines at most looked at around a change for the lines of its name
_HEADER = 1000  # lines at most before the first record
MAX_LINES = 50_000  # changed lines beyond which the full load is about as quick
MAX_SHARE = 10  # ... or beyond this percentage of the zone's records
MIN_LINES = 1000  # (but so many are always few enough)
# Bytes a line of a regular file holds: printable ASCII and tab, but backslash and parentheses.
_PLAIN = bytes(c for c in range(32, 127) if c not in b"\\()") + b"\t\n"
_ADDRESSES = frozenset({A, AAAA})


@dataclass
class Change:
    """A zone made from the previous version and the lines that changed."""

    zone: CompactZone
    removed: int  # record lines of the old file not in the new one
    added: int  # record lines of the new file not in the old one
    names: int  # owner names whose node changed


def load_changed(old: CompactZone, old_data: bytes, new_data: bytes, origin: dns.name.Name,
                 filename: str = "<zone>") -> tuple[CompactZone, list[str]] | None:
    """The zone `repository.load_zone(new_data, origin, filename)` makes, made from `old` (what
    bulkload made of `old_data`) and the lines that changed; None when not sure."""
    change = load_change(old, old_data, new_data, origin)
    return None if change is None else (change.zone, [])


def load_change(old: CompactZone, old_data: bytes, new_data: bytes,
                origin: dns.name.Name) -> Change | None:
    """`load_changed` with what changed, for the log."""
    if not isinstance(old, CompactZone) or old.origin != origin or old.outside or old.signed:
        return None
    try:
        return _Delta(old, old_data, new_data).run()
    except _NotSure:
        return None


# -- comparing the files ---------------------------------------------------------------------


def _plain(data: bytes) -> bool:
    """Only bytes of a regular line (one C pass: translate deletes them all)."""
    return not data.translate(None, _PLAIN)


def _common(a: bytes, i: int, b: bytes, j: int) -> int:
    """The length of the common prefix of a[i:] and b[j:]: slices compared while they agree,
    then halved down to the first difference."""
    k, n = 0, min(len(a) - i, len(b) - j)
    size = _SLICE
    while k < n:
        s = min(size, n - k)
        if a[i + k : i + k + s] == b[j + k : j + k + s]:
            k += s
        elif s == 1:
            return k
        else:
            size = s // 2
    return k


def _line_starts(data: bytes, i: int, count: int) -> list[int]:
    """Where the lines from offset i (a line start) start, `count` lines ahead at most; the end
    of the data counts as a line start."""
    out = [i]
    n = len(data)
    while len(out) <= count and i < n:
        nl = data.find(b"\n", i)
        i = n if nl < 0 else nl + 1
        out.append(i)
    return out


def _agree(a: bytes, p: int, b: bytes, q: int) -> bool:
    return a[p : p + _ANCHOR] == b[q : q + _ANCHOR]


def _find_line(data: bytes, anchor: bytes, start: int, end: int) -> int:
    """The first line start in data[start:end] where `anchor` is, or -1."""
    for _ in range(64):
        pos = data.find(anchor, start, end + len(anchor))
        if pos < 0:
            return -1
        if pos == 0 or data[pos - 1] == 10:
            return pos
        start = pos + 1
    return -1


def _resync(a: bytes, i: int, b: bytes, j: int) -> tuple[int, int]:
    """Where the versions are in step again after lines that differ at (i, j): the nearest
    pair of line starts whose next bytes agree (a pair that agrees by chance only makes the
    next difference a hunk of its own); else the end of a long run of added or removed lines.
    Raises _NotSure for a long run of replaced lines (the full load is as quick)."""
    if i == len(a) or j == len(b):
        return len(a), len(b)
    ai = _line_starts(a, i, _NEAR)
    bj = _line_starts(b, j, _NEAR)
    for d in range(1, len(ai) + len(bj) - 1):
        for x in range(max(0, d - len(bj) + 1), min(d, len(ai) - 1) + 1):
            if _agree(a, ai[x], b, bj[d - x]):
                return ai[x], bj[d - x]
    # From the next line on: the lines at (i, j) differ (maybe beyond the anchor's bytes).
    q = _find_line(b, a[i : i + _ANCHOR], bj[1], j + _FAR)
    if q >= 0:
        return i, q  # lines added
    p = _find_line(a, b[j : j + _ANCHOR], ai[1], i + _FAR)
    if p >= 0:
        return p, j  # lines removed
    raise _NotSure


def hunks(a: bytes, b: bytes, max_lines: int) -> list[tuple[int, int, int, int]]:
    """(old start, old end, new start, new end) of each run of lines that differ, at line
    starts, in order; what lies between them is the same in both. Raises _NotSure beyond
    `max_lines` changed lines."""
    out = []
    i = j = lines = 0
    while True:
        k = _common(a, i, b, j)
        if i + k == len(a) and j + k == len(b):
            return out
        start = a.rfind(b"\n", i, i + k) + 1 or i
        j += start - i
        i = start
        ei, ej = _resync(a, i, b, j)
        out.append((i, ei, j, ej))
        lines += a.count(b"\n", i, ei) + b.count(b"\n", j, ej) + 2
        if lines > max_lines:
            raise _NotSure
        i, j = ei, ej


# -- lines -----------------------------------------------------------------------------------


def _record_lines(piece: bytes, offset: int) -> list[tuple[int, str]]:
    """(offset, line) of the record lines of a piece of a file (at line starts); raises
    _NotSure for a directive or a line that takes its owner from the line before."""
    if not _plain(piece):
        raise _NotSure
    out = []
    pos = offset
    for line in piece.decode("ascii").split("\n"):
        here = pos
        pos += len(line) + 1
        stripped = line.strip()
        if not stripped or stripped[0] == ";":
            continue
        if line[0] in " \t" or line[0] == "$":
            raise _NotSure
        out.append((here, line))
    return out


def _next_statement_blank(data: bytes, pos: int) -> bool:
    """Does the first statement from `pos` (a line start) take its owner from the line before?
    (Blank and comment lines skipped.)"""
    for _ in range(100):
        if pos >= len(data):
            return False
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end]
        stripped = line.strip()
        if stripped and stripped[:1] != b";":
            return line[:1] in (b" ", b"\t")
        pos = end + 1
    return True  # a hundred blank lines: not worth finding out


def _header(data: bytes) -> int:
    """Where the first record line starts (what comes before is blank lines, comments and
    directives); raises _NotSure for a directive after it."""
    pos = 0
    for _ in range(_HEADER):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        stripped = data[pos:end].strip()
        if stripped and stripped[:1] not in (b";", b"$"):
            break
        if nl < 0:
            pos = len(data)
            break
        pos = nl + 1
    else:
        raise _NotSure
    # "$" is rare in a zone file (one-byte search: quick); at a line start it is a directive.
    dollar = data.find(b"$", pos)
    for _ in range(1000):
        if dollar < 0:
            return pos
        if data[dollar - 1] == 10:
            raise _NotSure
        dollar = data.find(b"$", dollar + 1)
    raise _NotSure


def _first_token(line: bytes | str):
    parts = line.split(None, 1)
    return parts[0] if parts else None


# -- the new version -------------------------------------------------------------------------


class _Delta:
    def __init__(self, old: CompactZone, old_data: bytes, new_data: bytes):
        self.old = old
        self.origin = old.origin
        self.a = old_data
        self.b = new_data
        self.nodes = old.nodes  # CompactNodes
        self.cuts: frozenset[bytes] = old.cuts.keys  # type: ignore[attr-defined]
        self.header = ""

    def parse(self, lines: list[str]) -> _Scanner:
        """The records of `lines` (record lines of the new file) under the file's header."""
        scanner = _Scanner(self.origin)
        scanner.scan_lines(self.header + "\n".join(lines))
        return scanner

    def run(self) -> Change | None:
        a, b = self.a, self.b
        if not _plain(b):
            return None
        head = _header(b)
        self.header = b[:head].decode("ascii")
        if not self.header.endswith("\n") and self.header:
            self.header += "\n"
        probe = _Scanner(self.origin)
        probe.scan_lines(self.header)
        if probe.default_ttl is None:
            return None  # a record without a TTL would take the last one given: position
        limit = min(MAX_LINES, max(MIN_LINES, self.old.record_count * MAX_SHARE // 100))
        changes = hunks(a, b, limit)
        removed: list[tuple[int, str]] = []  # (new offset of its hunk, line)
        added: list[tuple[int, str]] = []  # (new offset, line)
        for i, ei, j, ej in changes:
            removed += [(j, line) for _o, line in _record_lines(a[i:ei], i)]
            added += _record_lines(b[j:ej], j)
            if _next_statement_blank(b, ej) or _next_statement_blank(a, ei):
                return None
        return self.apply(removed, added)

    def keys(self, lines: list[tuple[int, str]], where: dict[bytes, int],
             tokens: dict[bytes, set[bytes]]) -> None:
        """Note the key of each line's owner, its first position and its owner's spelling."""
        scanner = _Scanner(self.origin)
        scanner.scan_lines(self.header)
        key_of = scanner.key_of
        name_wire = scanner.name_wire
        for pos, line in lines:
            tok = _first_token(line)
            got = key_of(name_wire(tok))
            if got is None:
                raise _NotSure
            key = got[0]
            if pos < where.get(key, pos + 1):
                where[key] = pos
            tokens.setdefault(key, set()).add(tok.encode())

    def apply(self, removed: list[tuple[int, str]], added: list[tuple[int, str]]) -> Change:
        gone = self.parse([line for _p, line in removed])
        new = self.parse([line for _p, line in added])
        if gone.cuts or new.cuts or any(NS in _types_of(blob) for scanner in (gone, new)
                                        for blob in scanner.table.values()):
            raise _NotSure  # NS records: delegations and their glue are the full load's
        where: dict[bytes, int] = {}
        tokens: dict[bytes, set[bytes]] = {}
        self.keys(removed, where, tokens)
        self.keys(added, where, tokens)
        blobs: dict[bytes, bytes | None] = {}
        for key in where:
            if key in self.cuts or _under_cut(key, self.cuts):
                raise _NotSure
            blobs[key] = self.node(key, gone.table.get(key), new.table.get(key), where[key],
                                   tokens[key])
        self.check(blobs, new)
        changes = {}
        lost_addresses = []
        for key, blob in blobs.items():
            old_blob = self.nodes.raw(key)
            if blob is None:
                changes[blob_owner(old_blob, key, self.origin)] = None
            else:
                owner = blob_owner(blob, key, self.origin)
                changes[owner] = decode_node(blob, owner)
            if old_blob is not None and _ADDRESSES & set(_types_of(old_blob)) and (
                    blob is None or not _ADDRESSES & set(_types_of(blob))):
                lost_addresses.append(blob_owner(old_blob, key, self.origin))
        zone = self.old.with_changes(changes)
        referrers = zone.referrers()
        if any(referrers.get(name, 0) > 0 for name in lost_addresses):
            raise _NotSure  # an NS, MX or SRV target without an address: an error to give
        return Change(zone, len(removed), len(added), len(changes))

    def node(self, key: bytes, gone: bytes | None, new: bytes | None, pos: int,
             tokens: set[bytes]) -> bytes | None:
        """The new blob of a changed owner (None: no records left)."""
        old_blob = self.nodes.raw(key)
        old_records = set() if old_blob is None else set(_records(old_blob))
        removed = [] if gone is None else _records(gone)
        if not old_records.issuperset(removed):
            raise _NotSure  # not the old zone's file after all
        count = len(old_records) - len(removed) + (0 if new is None else len(_records(new)))
        if count == 0:
            return None
        if old_blob is None:
            return new  # all its lines are added lines, parsed in their order
        blob = self.block(key, pos, tokens, count)
        if blob is None:
            raise _NotSure
        return blob

    def block(self, key: bytes, pos: int, tokens: set[bytes], count: int) -> bytes | None:
        """An owner's blob parsed from its lines around `pos` in the new file, when these are
        all its lines (`count` of them): the order of its RRsets and records and its owner's
        case depend on where each line is."""
        b = self.b
        before: list[bytes] = []
        start, gap = pos, 0
        while start > 0 and gap < _GAP and len(before) < _BLOCK:
            prev = b.rfind(b"\n", 0, start - 1) + 1
            line = b[prev : start - 1]
            start = prev
            if self.take(line, tokens, before):
                gap = 0
            else:
                gap += 1
        after: list[bytes] = []
        end, gap = pos, 0
        while end < len(b) and gap < _GAP and len(after) < _BLOCK:
            nl = b.find(b"\n", end)
            stop = len(b) if nl < 0 else nl
            line = b[end:stop]
            end = stop + 1
            if self.take(line, tokens, after):
                gap = 0
            else:
                gap += 1
        lines = before[::-1] + after
        if len(lines) != count:
            return None
        scanner = self.parse([line.decode("ascii") for line in lines])
        if scanner.record_count != count or list(scanner.table) != [key]:
            return None
        return scanner.table[key]

    @staticmethod
    def take(line: bytes, tokens: set[bytes], out: list[bytes]) -> bool:
        """Keep `line` when its owner is spelt as one of `tokens`."""
        if line[:1] in (b" ", b"\t") and line.strip() and line.strip()[:1] != b";":
            raise _NotSure  # takes its owner from the line before
        tok = _first_token(line)
        if tok is not None and tok in tokens:
            out.append(line)
            return True
        return False

    def check(self, blobs: dict[bytes, bytes | None], new: _Scanner) -> None:
        """The zone-level rules of `bulkload._finish`, for what changed."""
        if b"" in blobs:
            apex = blobs[b""]
            if apex is None or _types_of(apex).count(SOA) != 1 or NS not in _types_of(apex):
                raise _NotSure
        for tkey, _rdtype in new.targets:  # MX and SRV (NS changes went to the full load)
            if tkey in self.cuts or _under_cut(tkey, self.cuts):
                continue
            blob = blobs[tkey] if tkey in blobs else self.nodes.raw(tkey)
            if blob is None or not _ADDRESSES & set(_types_of(blob)):
                raise _NotSure  # a target without an address: an error to give


def _records(blob: bytes) -> list[bytes]:
    """Each record of a blob as bytes (type, class, TTL, length, rdata)."""
    return [blob[start - 10 : end] for _t, _l, start, end in iter_records(blob)]
