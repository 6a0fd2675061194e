"""A big regular master file indexed for editing (`ZoneText`) in a second and a few megabytes.

Why: the fold writes updates into the operator's file through `ZoneText`, which the general
loader (`fastload.parse_zone_fast`) builds with a dnspython owner and rdata for every record:
35 s and 1.1 GB for the 1.2M-record benchmark zone, in the middle of a burst of updates. Here one
pass over the lines keeps, per record statement, only what ZoneText reads of every entry (where
it starts, its TTL, how it is written) and a 64-bit hash of its owner; the owner and rdata of an
entry are read by dnspython when an edit reaches it (`_LazyOwners`, `_LazyRdatas`), and the
index from owner to entries is filled per owner on first use from the hashes (`_LazyIndex`).

Rules this module keeps:
- `bulk_zone_text` gives a ZoneText that edits exactly as the one `parse_zone_fast` gives, or
  None: it reads the files the bulk loader reads (`bulkload`: ASCII, no backslashes, quotes
  only without parentheses, only `$ORIGIN` and `$TTL`, TTLs known for every record), else the
  caller uses the general loader.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.ttl

from gitdns.bulkload import _ODD, _TTL, _TYPES
from gitdns.zonetext import (
    F_CLASS,
    F_KNOWN,
    F_ONELINE,
    F_OWNER,
    F_TTL,
    NameKey,
    ZoneText,
    _State,
    _Window,
)

_IN = frozenset({"IN", "in", "In", "iN"})
_LENGTH = tuple(bytes((n,)) for n in range(64))


class _Unsure(Exception):
    pass


def key_wire(key: NameKey) -> bytes:
    """The lowercase wire form of a name given by its index key."""
    return b"".join(_LENGTH[len(label)] + label.lower() for label in key)


def bulk_zone_text(data: bytes | str, origin: dns.name.Name) -> ZoneText | None:
    """The file's text indexed for edits, or None (see the module docstring)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if not text.isascii() or _ODD.search(text):
        return None
    try:
        return _build(text, origin)
    except (_Unsure, dns.exception.DNSException, ValueError):
        return None


def _build(text: str, origin: dns.name.Name) -> ZoneText:
    starts = array("q")
    ttls = array("L")
    flags = bytearray()
    hashes: list[int] = []  # per entry with a written owner: hash of the owner's wire form
    owned = array("q")  # those entries
    origin_events: list[tuple[int, dns.name.Name]] = []
    ttl_events: list[tuple[int, tuple[int, bool, bool]]] = []
    current = origin
    cur_wire = origin.to_wire().lower()
    default_ttl: int | None = None
    soa_entry = None
    pos = 0
    pending: list[str] | None = None
    pending_start = 0
    pending_blank = False
    for line in text.split("\n"):
        off = pos
        pos += len(line) + 1
        oneline = True
        if pending is not None:
            if '"' in line or "(" in line:
                raise _Unsure
            c = line.find(";")
            body = line[:c] if c >= 0 else line
            close = body.find(")")
            if close < 0:
                pending.extend(body.split())
                continue
            if body[close + 1 :].strip():
                raise _Unsure
            pending.extend(body[:close].split())
            toks, off, blank, pending = pending, pending_start, pending_blank, None
            oneline = False
        else:
            if not line or line[0] == ";":
                continue
            blank = line[0] in " \t"
            if '"' in line:
                if "(" in line or ")" in line:
                    raise _Unsure
                q = line.find('"')
                head = line[:q]
                if ";" in head:
                    raise _Unsure
                toks = head.split() + ['"']  # the strings: rdata, read when needed
            else:
                c = line.find(";")
                body = line[:c] if c >= 0 else line
                if "(" in body or ")" in body:
                    open_ = body.find("(")
                    if open_ < 0 or body.count("(") != 1:
                        raise _Unsure
                    close = body.find(")")
                    if close < 0:
                        pending = (body[:open_] + " " + body[open_ + 1 :]).split()
                        pending_start, pending_blank = off, blank
                        continue
                    if close < open_ or body.count(")") != 1 or body[close + 1 :].strip():
                        raise _Unsure
                    body = body[:open_] + " " + body[open_ + 1 : close]
                toks = body.split()
                if not toks:
                    continue
        first = toks[0]
        if not blank and first[0] == "$":
            word = first.upper()
            if word == "$TTL" and len(toks) == 2 and _TTL.fullmatch(toks[1]):
                default_ttl = dns.ttl.from_text(toks[1])
                ttl_events.append((off, (default_ttl, True, False)))
            elif word == "$ORIGIN" and len(toks) == 2 and toks[1].endswith("."):
                current = dns.name.from_text(toks[1], None)
                cur_wire = current.to_wire().lower()
                origin_events.append((off, current))
            else:
                raise _Unsure
            continue
        i = 0 if blank else 1
        f = F_KNOWN | (F_ONELINE if oneline else 0)
        ttl = None
        n = len(toks)
        if i < n and toks[i][0].isdigit():
            ttl = dns.ttl.from_text(toks[i])
            i += 1
            f |= F_TTL
            if i < n and toks[i] in _IN:
                i += 1
                f |= F_CLASS
        elif i < n and toks[i] in _IN:
            i += 1
            f |= F_CLASS
            if i < n and toks[i][0].isdigit():
                ttl = dns.ttl.from_text(toks[i])
                i += 1
                f |= F_TTL
        if i >= n or toks[i] not in _TYPES:
            raise _Unsure
        if toks[i].upper() == "SOA":
            soa_entry = len(flags)
        if ttl is None:
            if default_ttl is None:
                raise _Unsure
            ttl = default_ttl
        if not blank:
            f |= F_OWNER
            owned.append(len(flags))
            hashes.append(hash(_owner_wire(first, current, cur_wire)))
        elif not flags:
            raise _Unsure
        starts.append(off)
        ttls.append(ttl)
        flags.append(f)
    if pending is not None or soa_entry is None:
        raise _Unsure
    order = sorted(range(len(hashes)), key=hashes.__getitem__)
    sorted_hashes = array("q", (hashes[k] for k in order))
    sorted_entries = array("q", (owned[k] for k in order))
    del hashes, order
    zt = ZoneText(text, origin, None, starts, ttls, flags, [], [], {}, {}, origin_events,
                  ttl_events, [], None, [])
    original = bytes(flags)  # flags as read: edits change zt._flags, not what was read
    zt._owner = _LazyOwners(zt, original)
    zt._rd = _LazyRdatas(zt, original)
    zt._by_owner = _LazyIndex(zt, original, sorted_hashes, sorted_entries)
    zt._soa = zt._rd[soa_entry]
    return zt


def _owner_wire(tok: str, current: dns.name.Name, cur_wire: bytes) -> bytes:
    if tok == "@":
        return cur_wire
    if "." not in tok and len(tok) < 64:
        return _LENGTH[len(tok)] + tok.lower().encode() + cur_wire
    return dns.name.from_text(tok, current).to_wire().lower()


class _Lazy:
    """Per entry of the file, a value read from its text on first use; later entries (added by
    edits) and values set by edits are kept as given."""

    def __init__(self, zt: ZoneText, original: bytes):
        self.zt = zt
        self.original = original
        self.n0 = len(original)
        self.known: dict[int, object] = {}
        self.added: list[object] = []

    def __getitem__(self, e: int):
        if e >= self.n0:
            return self.added[e - self.n0]
        value = self.known.get(e, _MISSING)
        if value is _MISSING:
            value = self.known[e] = self.read(e)
        return value

    def __setitem__(self, e: int, value) -> None:
        if e >= self.n0:
            self.added[e - self.n0] = value
        else:
            self.known[e] = value

    def append(self, value) -> None:
        self.added.append(value)

    def __len__(self) -> int:
        return self.n0 + len(self.added)

    read: Callable[[int], object]


_MISSING = object()


class _LazyOwners(_Lazy):
    def read(self, e: int) -> dns.name.Name:
        zt = self.zt
        x = e
        while not self.original[x] & F_OWNER:
            x -= 1  # a blank owner: the owner of the statement before
        if x != e:
            return self[x]
        start = zt._start[x]
        end = zt._base.find("\n", start)
        tok = zt._base[start : end if end >= 0 else len(zt._base)].split(None, 1)[0]
        k = bisect.bisect_right(zt._origin_at, start)
        current = zt._origin_events[k - 1][1] if k else zt._origin
        return current if tok == "@" else dns.name.from_text(tok, current)


class _LazyRdatas(_Lazy):
    def read(self, e: int) -> dns.rdata.Rdata:
        zt = self.zt
        start = zt._start[e]
        k = bisect.bisect_right(zt._origin_at, start)
        current = zt._origin_events[k - 1][1] if k else zt._origin
        ttl = zt._ttl[e] if e < len(zt._ttl) else 0
        owner = zt._owner[e]
        state = _State(current, owner, ttl, True, ttl, True, False)
        records = _Window(zt._origin, state).read(zt._base[start : zt._end(e)])
        if len(records) != 1:
            raise ValueError(f"entry {e} reads as {len(records)} records")
        return records[0][2]


class _LazyIndex(dict):
    """NameKey -> entries (an int, or a list), as ZoneText keeps it, filled per key on first
    use: the entries of the file whose owner hashes alike, checked, with the statements of
    blank owner after them."""

    def __init__(self, zt: ZoneText, original: bytes, hashes: array, entries: array):
        super().__init__()
        self.zt = zt
        self.original = original
        self.hashes = hashes
        self.entries = entries
        self.done: set[NameKey] = set()

    def get(self, key, default=None):  # type: ignore[override]
        if key not in self.done:
            self.done.add(key)
            found = self._read(key)
            if found:
                self[key] = found[0] if len(found) == 1 else found
        return super().get(key, default)

    def _read(self, key: NameKey) -> list[int]:
        from gitdns.zonetext import name_key

        h = hash(key_wire(key))
        hashes, entries, zt, original = self.hashes, self.entries, self.zt, self.original
        found = []
        k = bisect.bisect_left(hashes, h)
        while k < len(hashes) and hashes[k] == h:
            x = entries[k]
            k += 1
            if name_key(zt._owner[x]) != key:
                continue
            found.append(x)
            x += 1
            while x < len(original) and not original[x] & F_OWNER:
                found.append(x)
                x += 1
        return sorted(found)
