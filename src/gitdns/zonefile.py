"""Master files (RFC 1035 section 5) to zones, with the checks a primary must make.

Rules this module keeps:
- Parsing is dnspython's `dns.zonefile.Reader`; we only feed it a sink that remembers the line of
  every record, so each error names the file and the line an operator has to fix.
- `$INCLUDE` is refused (the repository is the only source); `$ORIGIN`, `$TTL`, `$GENERATE` work.
- A zone that breaks a rule is returned with its errors and is never served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.zonefile

from gitdns.zone import Zone

A, AAAA, NS, SOA, CNAME, MX, SRV, DNAME = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.NS,
    dns.rdatatype.SOA,
    dns.rdatatype.CNAME,
    dns.rdatatype.MX,
    dns.rdatatype.SRV,
    dns.rdatatype.DNAME,
)
_SINGLETONS = {SOA, CNAME, DNAME}  # RFC 1035 3.3.13, RFC 2181 10.1, RFC 6672 2.4
# Types that may stand beside a CNAME (RFC 2181 10.1, RFC 4035 2.5).
_CNAME_COMPANIONS = {CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.KEY}


@dataclass(frozen=True)
class ZoneError:
    """One problem in a master file, with where it is."""

    filename: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}" if self.line else self.filename
        return f"{where}: {self.message}"


class ZoneLoadError(Exception):
    """A master file that cannot be served; `errors` says why, with file and line."""

    def __init__(self, errors: list[ZoneError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class ReaderSink:
    """What `dns.zonefile.Reader` asks of a transaction (and of its manager), and no more:
    subclasses say what `add(name, ttl, rdata)` keeps. dnspython's own transactions check
    CNAME-and-other-data without a line number and look nodes up in linear time."""

    def __init__(self, origin: dns.name.Name):
        self.manager = self
        self._origin = origin

    def origin_information(self) -> tuple[dns.name.Name, bool, dns.name.Name]:
        return (self._origin, False, self._origin)

    def get_class(self) -> dns.rdataclass.RdataClass:
        return dns.rdataclass.IN

    def check_put_rdataset(self, _check) -> None:
        """The checks are made after reading, where lines are known."""

    def _set_origin(self, _origin) -> None:
        """The zone's origin is fixed by its file name; `$ORIGIN` only moves relative names."""

    def add_unicode(self, _value) -> None:
        """`$UNICODE` changes nothing that is kept."""

    def add(self, name: dns.name.Name, ttl: int, rdata) -> None:
        raise NotImplementedError


class _RecordSink(ReaderSink):
    """Collects RRsets and the line of each; the checks below use them."""

    def __init__(self, origin: dns.name.Name):
        super().__init__(origin)
        self.line = 0  # where the record being read starts; set by _LineReader
        self.rrsets: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
        self.lines: dict[tuple[dns.name.Name, int, int], int] = {}
        self.record_lines: dict[tuple[dns.name.Name, object], int] = {}
        self.singleton_dupes: list[tuple[dns.name.Name, int, int]] = []
        self.out_of_zone: list[tuple[dns.name.Name, int, object]] = []
        self.ttl_conflicts: list[tuple[dns.name.Name, int, int]] = []

    def add(self, name: dns.name.Name, ttl: int, rdata) -> None:
        line = self.line
        if not name.is_subdomain(self._origin):
            self.out_of_zone.append((name, line, rdata))
            return
        key = (name, rdata.rdtype, rdata.covers())
        rrset = self.rrsets.get(key)
        if rrset is None:
            rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdata.rdtype, rdata.covers())
            self.rrsets[key] = rrset
            self.lines[key] = line
        elif rdata.rdtype in _SINGLETONS and rdata not in rrset:
            # dnspython would silently replace the first; a second SOA/CNAME/DNAME is an error.
            self.singleton_dupes.append((name, rdata.rdtype, line))
            return
        elif rrset.ttl != ttl:
            # RFC 2181 5.2: one TTL per RRset; like BIND 9.18 we keep the first and warn.
            self.ttl_conflicts.append((name, rdata.rdtype, line))
            ttl = rrset.ttl
        rrset.add(rdata, ttl)
        self.record_lines.setdefault((name, rdata), line)


class _RecordError(Exception):
    """A record that does not parse, with the line where it starts."""

    def __init__(self, line: int, detail: str):
        super().__init__(detail)
        self.line = line


class _LineReader(dns.zonefile.Reader):
    """dnspython's Reader, telling the sink on which line each record starts.

    dnspython reports a bad record at the line where its tokenizer stopped, which is often the
    next one; errors are caught here and reported at the record's own first line instead.
    """

    def _rr_line(self) -> None:
        self.txn.line = line = self.tok.line_number
        try:
            super()._rr_line()
        except (dns.exception.DNSException, ValueError, UnicodeError) as e:
            raise _RecordError(line, _describe(e)) from None

    def _generate_line(self) -> None:
        self.txn.line = line = self.tok.line_number
        try:
            super()._generate_line()
        except (dns.exception.DNSException, ValueError, UnicodeError) as e:
            raise _RecordError(line, _describe(e)) from None


def _describe(e: Exception) -> str:
    text = str(e).strip().rstrip(".")
    if isinstance(e, dns.exception.SyntaxError) or not text:
        return f"syntax error: {text or type(e).__name__}"
    return f"{type(e).__name__}: {text}"


def _decode(text: str | bytes, filename: str) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ZoneLoadError([ZoneError(filename, None, f"not UTF-8 text: {e}")]) from None
    return text


def _read(
    text: str, origin: dns.name.Name, filename: str, sink, default_ttl: int | None = None
) -> None:
    """Run dnspython's reader over `text` into `sink`; errors become ZoneLoadError with lines."""
    tok = dns.tokenizer.Tokenizer(text, filename)
    reader = _LineReader(
        tok, dns.rdataclass.IN, sink, allow_include=False, default_ttl=default_ttl  # type: ignore[arg-type]
    )
    # The Reader silently drops records outside the zone; we want to report them instead,
    # so it is told that every name is inside and the sink sorts them out.
    reader.zone_origin = dns.name.root
    try:
        reader.read()
    except _RecordError as e:
        lines = text.splitlines()
        record = lines[e.line - 1].strip() if 0 < e.line <= len(lines) else ""
        raise ZoneLoadError([ZoneError(filename, e.line, f"{e} in `{record}`")]) from None
    except dns.exception.SyntaxError as e:
        msg = str(e)
        prefix = f"{filename}:"
        line: int | None = None
        if msg.startswith(prefix):
            rest = msg[len(prefix) :]
            num, _, detail = rest.partition(":")
            if num.isdigit():
                line, msg = int(num), detail.strip()
        raise ZoneLoadError([ZoneError(filename, line, msg)]) from None
    except (dns.exception.DNSException, ValueError, UnicodeError) as e:
        raise ZoneLoadError(
            [ZoneError(filename, tok.line_number, f"{type(e).__name__}: {e}")]
        ) from None


def parse_zone(
    text: str | bytes, origin: dns.name.Name | str, filename: str = "<zone>"
) -> tuple[Zone, list[str]]:
    """Parse and check one master file; returns the zone and warnings, or raises ZoneLoadError."""
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    text = _decode(text, filename)
    sink = _RecordSink(origin)
    _read(text, origin, filename, sink)
    errors, warnings = check_records(
        origin, sink.rrsets, filename, sink.lines, sink.out_of_zone, sink.ttl_conflicts,
        sink.record_lines, sink.singleton_dupes,
    )
    if errors:
        raise ZoneLoadError(errors)
    outside: dict[dns.name.Name, list[str]] = {}
    for name, _line, rdata in sink.out_of_zone:
        outside.setdefault(name, []).append(rdata.address)
    return Zone(origin, sink.rrsets.values(), outside), warnings


class _ListSink(_RecordSink):
    """Every record in file order with its line, in or out of the origin (for `_keys` files)."""

    def __init__(self, origin: dns.name.Name):
        super().__init__(origin)
        self.records: list[tuple[dns.name.Name, object, int]] = []

    def add(self, name: dns.name.Name, ttl: int, rdata) -> None:
        self.records.append((name, rdata, self.line))


def read_records(
    text: str | bytes, origin: dns.name.Name, filename: str
) -> list[tuple[dns.name.Name, object, int]]:
    """(owner, rdata, line) of every record of a master file, unchecked; ZoneLoadError if the
    file does not parse."""
    text = _decode(text, filename)
    sink = _ListSink(origin)
    _read(text, origin, filename, sink, default_ttl=0)  # `_keys` files carry no TTLs
    return sink.records


def check_zone(zone: Zone, filename: str = "") -> tuple[list[ZoneError], list[str]]:
    """The loader's rules on a zone built otherwise (an UPDATE's result, a transfer)."""
    rrsets = {
        (name, key[0], key[1]): rrset for name, node in zone.nodes.items()
        for key, rrset in node.items()
    }
    return check_records(zone.origin, rrsets, filename or zone.origin.to_text())


def check_records(
    origin: dns.name.Name,
    rrsets: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset],
    filename: str,
    lines: dict[tuple[dns.name.Name, int, int], int] | None = None,
    out_of_zone: list[tuple[dns.name.Name, int, object]] = (),  # type: ignore[assignment]
    ttl_conflicts: list[tuple[dns.name.Name, int, int]] = (),  # type: ignore[assignment]
    record_lines: dict[tuple[dns.name.Name, object], int] | None = None,
    singleton_dupes: list[tuple[dns.name.Name, int, int]] = (),  # type: ignore[assignment]
) -> tuple[list[ZoneError], list[str]]:
    """The rules a primary enforces before serving (as BIND's check-integrity does)."""
    errors: list[ZoneError] = []
    warnings: list[str] = []
    lines = _NoLines() if lines is None else lines

    def err(line: int | None, msg: str) -> None:
        errors.append(ZoneError(filename, line, msg))

    record_lines = record_lines or {}
    ns_hosts = {rd.target for (_n, t, _c), rrset in rrsets.items() if t == NS for rd in rrset}
    for name, line, rdata in out_of_zone:
        if rdata.rdtype in (A, AAAA) and name in ns_hosts:
            continue  # the address of an out-of-zone name server: kept for NOTIFY, not served
        err(line, f"{name} is outside the zone {origin}")
    for name, rdtype, line in singleton_dupes:
        tname = dns.rdatatype.to_text(rdtype)
        err(line, f"a second {tname} record at {name}; only one is allowed")
    for name, rdtype, line in ttl_conflicts:
        warnings.append(
            f"{filename}:{line}: TTL of {name} {dns.rdatatype.to_text(rdtype)} differs from "
            "the rest of its RRset; the first is used"
        )

    by_name: dict[dns.name.Name, set[int]] = {}
    for name, rdtype, _covers in rrsets:
        by_name.setdefault(name, set()).add(rdtype)

    soas = [(k, r) for k, r in rrsets.items() if k[1] == SOA]
    apex_soa = rrsets.get((origin, SOA, 0))
    if apex_soa is None:
        err(None, f"no SOA record at the zone apex {origin}")
    for key, _r in soas:
        if key[0] != origin:
            err(lines[key], f"SOA record at {key[0]}, below the apex of {origin}")
    if (origin, NS, 0) not in rrsets:
        err(None, f"no NS records at the zone apex {origin}")

    cuts = {n for n, types in by_name.items() if NS in types and n != origin}

    def below_cut(name: dns.name.Name) -> dns.name.Name | None:
        n = name
        while n != origin:
            if n in cuts and n != name:
                return n
            n = n.parent()
        return None

    for name, types in by_name.items():
        if CNAME in types and types - _CNAME_COMPANIONS:
            others = ", ".join(sorted(dns.rdatatype.to_text(t) for t in types - _CNAME_COMPANIONS))
            err(lines[(name, CNAME, 0)], f"CNAME at {name} beside other data ({others})")
        cut = below_cut(name)
        occluded = types - {A, AAAA}
        if cut is not None and occluded:
            kinds = ", ".join(sorted(dns.rdatatype.to_text(t) for t in occluded))
            line = min((lines.get((name, t, 0)) or 0) for t in occluded)
            where = f"{filename}:{line}" if line else filename
            warnings.append(
                f"{where}: {name} {kinds} lies below the delegation {cut} "
                "and is not served (only glue addresses are)"
            )

    def has_address(target: dns.name.Name) -> bool:
        types = by_name.get(target, ())
        return A in types or AAAA in types

    for (name, rdtype, _c), rrset in rrsets.items():
        if rdtype not in (NS, MX, SRV):
            continue
        for rd in rrset:
            target = rd.exchange if rdtype == MX else rd.target
            if rdtype != NS and target == dns.name.root:
                continue  # "null MX" (RFC 7505) and SRV "." name no host
            if not target.is_subdomain(origin):
                continue
            tname = dns.rdatatype.to_text(rdtype)
            # A mail or service target below a delegation is the child zone's business;
            # an NS target inside the zone always needs an address here (glue or not).
            if rdtype != NS and (below_cut(target) or target in cuts):
                continue
            if not has_address(target):
                err(record_lines.get((name, rd)) or lines[(name, rdtype, 0)],
                    _no_address(rdtype, name, target, origin))
    return errors, warnings


def check_changes(zone: Zone, names: Iterable[dns.name.Name]) -> list[ZoneError]:
    """The loader's rules for a version that differs from a checked one only at `names`
    (an update): the changed names, and the names whose addresses others point at."""
    errors: list[ZoneError] = []
    origin = zone.origin
    filename = origin.to_text()

    def err(msg: str) -> None:
        errors.append(ZoneError(filename, None, msg))

    apex = zone.nodes.get(origin) or {}
    if (SOA, 0) not in apex:
        err(f"no SOA record at the zone apex {origin}")
    if (NS, 0) not in apex:
        err(f"no NS records at the zone apex {origin}")

    def below_cut(name: dns.name.Name) -> bool:
        n = name
        while len(n) > len(origin):
            if n in zone.cuts:
                return True
            n = n.parent()
        return False

    def has_address(name: dns.name.Name) -> bool:
        node = zone.nodes.get(name) or {}
        return (A, 0) in node or (AAAA, 0) in node

    referrers = zone.referrers()
    for name in names:
        node = zone.nodes.get(name) or {}
        types = {key[0] for key in node}
        if CNAME in types and types - _CNAME_COMPANIONS:
            others = ", ".join(sorted(dns.rdatatype.to_text(t) for t in types - _CNAME_COMPANIONS))
            err(f"CNAME at {name} beside other data ({others})")
        if SOA in types and name != origin:
            err(f"SOA record at {name}, below the apex of {origin}")
        for rdtype in (NS, MX, SRV):
            for rd in node.get((rdtype, 0)) or ():
                target = rd.exchange if rdtype == MX else rd.target
                if rdtype != NS and target == dns.name.root:
                    continue
                if not target.is_subdomain(origin) or has_address(target):
                    continue
                if rdtype != NS and below_cut(target):
                    continue
                err(_no_address(rdtype, name, target, origin))
        if referrers.get(name, 0) and not has_address(name):
            # Who points here? Only on this error path is the zone searched.
            for owner, other in zone.nodes.items():
                for rdtype in (NS, MX, SRV):
                    for rd in other.get((rdtype, 0)) or ():
                        target = rd.exchange if rdtype == MX else rd.target
                        if target == name and (rdtype == NS or not below_cut(target)):
                            err(_no_address(rdtype, owner, target, origin))
    return errors


def _no_address(rdtype: int, owner: dns.name.Name, target: dns.name.Name,
                origin: dns.name.Name) -> str:
    kind = "glue" if rdtype == NS and owner != origin else "address"
    return (f"{dns.rdatatype.to_text(rdtype)} {owner} -> {target}: the target is inside the zone "
            f"but has no {kind} (A or AAAA) record")


class _NoLines(dict):
    """Line numbers of a zone that was not read from text: unknown (None) everywhere."""

    def __missing__(self, key):
        return None


def zone_name_from_filename(filename: str) -> dns.name.Name:
    """`example.com` -> `example.com.`; the repository names every zone file after its zone."""
    return dns.name.from_text(filename.rstrip("."), dns.name.root)


def check_serial_increase(old: Zone, new: Zone) -> str | None:
    """None if `new` is a valid successor of `old` (RFC 1982 serial arithmetic), else why not."""
    from gitdns.serial import serial_gt

    if not serial_gt(new.serial, old.serial):
        return f"SOA serial {new.serial} is not greater than the old serial {old.serial}"
    return None


def format_errors(errors: Iterable[ZoneError]) -> str:
    return "\n".join(str(e) for e in errors)


def render_zone(zone: Zone) -> str:
    """The whole zone as a master file (used only where an edit in place is impossible)."""
    lines = [f"$ORIGIN {zone.origin}"]
    for rrset in zone.rrsets():
        lines.append(rrset.to_text(origin=zone.origin, relativize=True))
    return "\n".join(lines) + "\n"
