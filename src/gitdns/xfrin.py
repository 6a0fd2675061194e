"""Zone transfers in (AXFR, RFC 5936; IXFR, RFC 1995) and the SOA check before them, sans-IO.

Rules this module keeps:
- Bytes in, a new Zone out: no sockets and no clock of our own (the TSIG time check is
  dnspython's). The edge sends `query_wire` and feeds each reply message to `receive` until it
  returns True; nothing is produced unless the whole transfer arrived and verified.
- Every message is verified against the query's key, chained to the one before (RFC 8945 5.3.1):
  the first and the last must be signed, at most 99 unsigned ones in a row between; any failure
  raises, and the caller's zone is never touched (a transfer works on a copy-on-write view).
- IXFR goes through dnspython's `dns.xfr.Inbound`; a difference that does not apply exactly
  (deleting a record that is not there, a wrong base serial, a broken sequence) raises
  IxfrMismatch, on which the caller falls back to AXFR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.transaction
import dns.tsig
import dns.xfr

from gitdns.diff import ZoneDiff, names_diff
from gitdns.keys import Key
from gitdns.zone import Zone

#: RFC 8945 5.3.1: a signed transfer carries a TSIG at least every 100 messages.
MAX_UNSIGNED_RUN = 99

_RRsetKey = tuple[dns.name.Name, int, int]  # (owner, rdtype, covers)


class TransferFailed(Exception):
    """A transfer or SOA check that gave nothing usable; the message says why."""


class TransferRefused(TransferFailed):
    """The primary answered with an error rcode."""

    def __init__(self, rcode: int, what: str = "transfer"):
        super().__init__(f"the primary answered the {what} with {dns.rcode.to_text(rcode)}")
        self.rcode = rcode


class BadTransferSignature(TransferFailed):
    """A reply whose TSIG is missing, does not verify, or reports an error of ours."""


class IxfrMismatch(TransferFailed):
    """An IXFR that does not apply cleanly to the zone we hold; a full transfer is needed."""


def _tsig_key(key: Key | dns.tsig.Key | None) -> dns.tsig.Key | None:
    return key.tsig if isinstance(key, Key) else key


# -- the SOA check -----------------------------------------------------------------------------


def soa_query(origin: dns.name.Name, key: Key | dns.tsig.Key | None) -> dns.message.Message:
    """The SOA query a secondary starts every refresh with (RFC 1035 4.3.5), signed with `key`.

    RD is clear: we ask the authority, not a resolver."""
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    tsig = _tsig_key(key)
    if tsig is not None:
        query.use_tsig(tsig)
    return query


def _parse_reply(query: dns.message.Message, wire: bytes, **kw) -> dns.message.Message:
    """Parse a reply to `query`, verifying its TSIG when the query was signed."""
    signed = query.had_tsig
    try:
        return dns.message.from_wire(
            wire, keyring=query.keyring if signed else False, request_mac=query.mac, **kw
        )
    except dns.tsig.PeerError as e:
        raise BadTransferSignature(
            f"the primary rejected our signature ({type(e).__name__}): check the key's secret"
        ) from None
    except (dns.message.UnknownTSIGKey, dns.tsig.BadKey, dns.tsig.BadAlgorithm) as e:
        raise BadTransferSignature(f"the reply is signed with another key ({e})") from None
    except dns.tsig.BadSignature:
        raise BadTransferSignature("the reply's signature does not verify") from None
    except dns.tsig.BadTime:
        raise BadTransferSignature("the reply's signature time is off by more than the fudge; "
                                   "check the clocks") from None
    except dns.exception.FormError as e:
        if signed and "TSIG" in str(e):
            raise BadTransferSignature("the reply is not signed") from None
        raise TransferFailed(f"malformed reply: {e}") from None
    except (dns.exception.DNSException, ValueError) as e:
        raise TransferFailed(f"malformed reply ({type(e).__name__}: {e})") from None


def primary_soa(query: dns.message.Message, wire: bytes) -> dns.rrset.RRset:
    """The zone's SOA from the primary's reply to `soa_query`; raises TransferFailed (or a
    subclass) when the reply is not an authoritative, verified answer for the zone."""
    reply = _parse_reply(query, wire)
    if not query.is_response(reply):
        raise TransferFailed("the reply does not answer our SOA query")
    if reply.rcode() != dns.rcode.NOERROR:
        raise TransferRefused(reply.rcode(), "SOA query")
    if reply.flags & dns.flags.TC:
        raise TransferFailed("truncated")
    if not reply.flags & dns.flags.AA:
        raise TransferFailed("the primary does not answer authoritatively for the zone")
    origin = query.question[0].name
    for rrset in reply.answer:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin and len(rrset) == 1:
            return rrset
    raise TransferFailed("the primary's answer holds no SOA for the zone")


# -- transfers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult:
    """What a finished transfer gives: the new version, or None when we were up to date."""

    zone: Zone | None
    style: str  # "AXFR", "IXFR", "IXFR in AXFR form", "up to date"
    diff: ZoneDiff | None  # the records an incremental transfer changed
    messages: int


class InboundTransfer:
    """One transfer of one zone: `query_wire` out, reply messages in, a `result()` at the end.

    With `current` and `incremental` it asks IXFR from `current.serial`, else AXFR.
    """

    def __init__(
        self,
        origin: dns.name.Name,
        key: Key | dns.tsig.Key | None,
        current: Zone | None = None,
        *,
        incremental: bool = True,
    ):
        self.origin = origin
        self.current = current
        self.incremental = current is not None and incremental
        self._versions = _Versions(origin, current if self.incremental else None)
        serial = current.serial if self.incremental and current is not None else None
        self.query, _ = dns.xfr.make_query(
            self._versions, serial=serial, keyring=_tsig_key(key)
        )
        self.rdtype = dns.rdatatype.IXFR if self.incremental else dns.rdatatype.AXFR
        self.query_wire = self.query.to_wire()
        self._inbound = dns.xfr.Inbound(self._versions, self.rdtype, serial)
        self._tsig_ctx = None
        self._unsigned_run = 0
        self.messages = 0
        self.done = False

    @property
    def kind(self) -> str:
        return "IXFR" if self.incremental else "AXFR"

    def receive(self, wire: bytes) -> bool:
        """Take the next reply message; True once the transfer is complete."""
        if self.done:
            raise TransferFailed("a message after the end of the transfer")
        message = _parse_reply(
            self.query, wire, xfr=True, origin=None, tsig_ctx=self._tsig_ctx, multi=True,
            one_rr_per_rrset=self.incremental,
        )
        if not self.query.is_response(message, xfr_continuation=self.messages > 0):
            raise TransferFailed("a message that does not answer our transfer query")
        self.messages += 1
        self._tsig_ctx = message.tsig_ctx
        if message.rcode() != dns.rcode.NOERROR:
            raise TransferRefused(message.rcode(), self.kind)
        if self.query.had_tsig:
            if message.had_tsig:
                self._unsigned_run = 0
            elif self.messages == 1:
                raise BadTransferSignature("the first message of the transfer is not signed")
            else:
                self._unsigned_run += 1
                if self._unsigned_run > MAX_UNSIGNED_RUN:
                    raise BadTransferSignature(
                        f"more than {MAX_UNSIGNED_RUN} unsigned messages in a row")
        try:
            self.done = self._inbound.process_message(message)
        except dns.xfr.SerialWentBackwards:
            raise TransferFailed(
                "the primary's serial is older than ours (RFC 1982); keeping ours") from None
        except (dns.exception.DNSException, ValueError) as e:
            if message.request_mac and not message.had_tsig and "TSIG" in str(e):
                raise BadTransferSignature("the last message of the transfer is not signed") \
                    from None
            if self._inbound.incremental:
                raise IxfrMismatch(f"the IXFR does not apply: {e or type(e).__name__}") from None
            raise TransferFailed(f"bad {self.kind} reply: {e or type(e).__name__}") from None
        if self.done:
            self._inbound.__exit__(None, None, None)
        return self.done

    def result(self) -> TransferResult:
        """The new version (built here, so an edge can run this in a worker thread)."""
        if not self.done:
            raise TransferFailed("the transfer is not complete")
        txn = self._versions.committed
        if txn is None:
            return TransferResult(None, "up to date", None, self.messages)
        incremental = txn.base is not None
        try:
            zone = txn.build_zone()
        except TransferFailed as e:
            if incremental:
                raise IxfrMismatch(str(e)) from None
            raise
        if incremental:
            assert self.current is not None
            diff = names_diff(self.current, zone, txn.changed_names())
            return TransferResult(zone, "IXFR", diff, self.messages)
        style = "IXFR in AXFR form" if self.rdtype == dns.rdatatype.IXFR else "AXFR"
        return TransferResult(zone, style, None, self.messages)


# -- a copy-on-write view of a Zone for dnspython's transactions --------------------------------


class _Versions(dns.transaction.TransactionManager):
    """The zone being transferred, as dnspython's `Inbound` wants it: a transaction manager.

    A writer records changes over the current Zone (never modifying it); the committed writer is
    kept for `InboundTransfer.result` to build the new Zone from."""

    def __init__(self, origin: dns.name.Name, base: Zone | None):
        self.origin = origin
        self.base = base
        self.committed: _Txn | None = None

    def reader(self) -> _Txn:
        return _Txn(self, replacement=False, read_only=True)

    def writer(self, replacement: bool = False) -> _Txn:
        return _Txn(self, replacement=replacement, read_only=False)

    def origin_information(self) -> tuple[dns.name.Name, bool, dns.name.Name]:
        return (self.origin, False, self.origin)

    def get_class(self) -> dns.rdataclass.RdataClass:
        return dns.rdataclass.IN


class _Txn(dns.transaction.Transaction):
    """Changes over a base Zone (none for a replacement, i.e. an AXFR)."""

    def __init__(self, manager: _Versions, replacement: bool, read_only: bool):
        super().__init__(manager, replacement, read_only)
        self.origin = manager.origin
        self.base: Zone | None = None if replacement else manager.base
        self.changes: dict[_RRsetKey, dns.rdataset.Rdataset | None] = {}

    def _base_keys(self, name: dns.name.Name) -> list[_RRsetKey]:
        node = self.base.nodes.get(name) if self.base is not None else None
        return [(name, t, c) for (t, c) in node] if node else []

    def _keys_at(self, name: dns.name.Name) -> list[_RRsetKey]:
        keys = dict.fromkeys(self._base_keys(name))
        keys.update(dict.fromkeys(k for k in self.changes if k[0] == name))
        return list(keys)

    def _get_rdataset(self, name, rdtype, covers):
        key = (name, rdtype, covers)
        if key in self.changes:
            return self.changes[key]
        return self.base.get(name, rdtype, covers) if self.base is not None else None

    def _put_rdataset(self, name, rdataset):
        self.changes[(name, rdataset.rdtype, rdataset.covers)] = rdataset

    def _delete_rdataset(self, name, rdtype, covers):
        self.changes[(name, rdtype, covers)] = None

    def _delete_name(self, name):
        for key in self._keys_at(name):
            self.changes[key] = None

    def _name_exists(self, name):
        return any(self._get_rdataset(*key) is not None for key in self._keys_at(name))

    def _changed(self):
        return bool(self.changes)

    def _end_transaction(self, commit):
        if commit and not self.read_only:
            self.manager.committed = self  # type: ignore[attr-defined]

    def _set_origin(self, origin):
        pass

    def _items(self) -> Iterator[tuple[_RRsetKey, dns.rdataset.Rdataset]]:
        """Every RRset of the new version: the base's in its order (changed ones in place, the
        SOA stays first), then the new ones in the order they came."""
        if self.base is not None:
            for name, node in self.base.nodes.items():
                for (t, c), rrset in node.items():
                    key = (name, t, c)
                    rds = self.changes.get(key, rrset)
                    if rds is not None and len(rds):
                        yield key, rds
        for key, rds in self.changes.items():
            if rds is not None and len(rds) and (
                self.base is None or self.base.get(*key) is None
            ):
                yield key, rds

    def _iterate_rdatasets(self):
        for (name, _t, _c), rds in self._items():
            yield name, rds

    def _iterate_names(self):
        return iter(dict.fromkeys(name for (name, _t, _c), _r in self._items()))

    def _get_node(self, name):
        node = dns.node.Node()
        for key in self._keys_at(name):
            rds = self._get_rdataset(*key)
            if rds is not None and len(rds):
                node.replace_rdataset(_as_rdataset(rds))
        return node if len(node) else None

    def build_zone(self) -> Zone:
        """The new version; TransferFailed when it is not a zone (no SOA or NS at the apex, or
        more than one SOA). Over a base (IXFR) it costs time in proportion to the changes:
        `Zone.with_changes` shares everything else with the version we serve."""
        if self.base is not None:
            by_name: dict[dns.name.Name, dict[tuple[int, int], dns.rdataset.Rdataset | None]] = {}
            for (name, t, c), rds in self.changes.items():
                by_name.setdefault(name, {})[(t, c)] = rds
            node_changes = {}
            for name, changed in by_name.items():
                node = dict(self.base.nodes.get(name) or {})
                for tc, rds in changed.items():
                    if rds is None or not len(rds):
                        node.pop(tc, None)
                    else:
                        node[tc] = _as_rrset(name, rds)
                node_changes[name] = node or None
            make = lambda: self.base.with_changes(node_changes)  # noqa: E731
        else:
            rrsets = [_as_rrset(name, rds) for (name, _t, _c), rds in self._items()]
            make = lambda: Zone(self.origin, rrsets)  # noqa: E731
        try:
            zone = make()
        except KeyError:
            raise TransferFailed("the transferred zone has no SOA at its apex") from None
        if zone.get(self.origin, dns.rdatatype.NS) is None:
            raise TransferFailed("the transferred zone has no NS at its apex")
        if len(zone.soa) != 1:
            raise TransferFailed("the transferred zone has more than one SOA record")
        return zone

    def changed_names(self) -> list[dns.name.Name]:
        return list(dict.fromkeys(name for name, _t, _c in self.changes))


def _as_rrset(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    if isinstance(rds, dns.rrset.RRset) and rds.name == name:
        return rds  # a base RRset, shared with the old version (Zones are never modified)
    rrset = dns.rrset.RRset(name, rds.rdclass, rds.rdtype, rds.covers)
    rrset.update(rds)
    return rrset


def _as_rdataset(rds: dns.rdataset.Rdataset) -> dns.rdataset.Rdataset:
    out = dns.rdataset.Rdataset(rds.rdclass, rds.rdtype, rds.covers)
    out.update(rds)
    return out

