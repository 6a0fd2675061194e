"""The secondary daemon: follows primaries by SOA checks, transfers and NOTIFY, serves what it got.

Rules this module keeps:
- A zone is served only from a copy that arrived whole and verified (xfrin.py) or that we wrote
  ourselves to disk after such a transfer; it stops being served (SERVFAIL, as BIND and Knot do)
  once `expire` seconds pass without a successful refresh, and the log says why.
- Only the zone's primary is obeyed: a NOTIFY starts a refresh when it is signed with one of our
  keys that covers the zone, or comes from the primary's address (BIND and Knot send NOTIFY
  unsigned); a refresh asks the primary itself, signed, so a NOTIFY can never inject data.
- Timers, NOTIFY acceptance, the choice of primaries and the disk format are plain functions of
  their inputs (a clock is passed in); `Secondary` runs them at the edge with asyncio.

UPDATE is forwarded to the primary (RFC 2136 section 6), not answered NOTAUTH: operators point
update clients at any name server of the zone, and TSIG survives forwarding (the MAC covers the
Original ID field, RFC 8945 4.2), so the signed message is relayed unchanged but for its ID and the
primary's signed answer comes back under the client's ID; the primary alone decides. Only signed
UPDATEs are forwarded: an unsigned one would reach the primary from our address and could pass an
address-based ACL there, the classic hole of update forwarding; those get REFUSED.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from gitdns import core
from gitdns.history import ZoneHistory
from gitdns.keys import Key, KeyStore
from gitdns.net.client import send_notify
from gitdns.net.server import TCP_IDLE_TIMEOUT, DnsServer, ListenAddress, bind_sockets
from gitdns.notify import NotifyTarget, notify_message
from gitdns.querylog import log_query
from gitdns.serial import serial_gt
from gitdns.store import Store, ZoneSet
from gitdns.tsig import TsigFailure, error_reply, parse_request
from gitdns.xfrin import (
    InboundTransfer,
    IxfrMismatch,
    TransferFailed,
    TransferRefused,
    primary_soa,
    soa_query,
)
from gitdns.xfrout import serve_transfer
from gitdns.zone import Zone
from gitdns.zonefile import render_zone

try:  # the answer cache of the hot path, when this build has it
    from gitdns.fastpath import FastPath
except ImportError:  # pragma: no cover
    FastPath = None  # type: ignore[assignment,misc]

log = logging.getLogger("gitdns.secondary")

Address = tuple[str, int]
Clock = Callable[[], float]

SOA_UDP_TIMEOUTS = (1.0, 2.0, 2.0)  # then one try over TCP
TCP_TIMEOUT = 10.0  # connecting, and between two messages of a transfer
TRANSFER_LIFETIME = 3600.0  # a transfer that takes longer is dropped
UPDATE_TIMEOUT = 30.0  # the primary answers an update once it is committed
MAX_PARALLEL_REFRESHES = 16
WATCH_KEEPALIVE = 4.0  # below the primary's TCP idle timeout (10 s by default)
WATCH_BACKOFF_MAX = 30.0
SCHEDULER_TICK = 1.0  # the scheduler wakes at least this often (expiry, a clock that jumps)


class ConfigError(ValueError):
    """A command line that names no zone, or a zone without a primary; the message says how."""


# -- which zones, from which primary -------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where one zone comes from: the primary's address and the key to talk to it with."""

    origin: dns.name.Name
    primary: Address
    key: Key | None
    discovered: bool = False  # added by a signed NOTIFY under a root key

    def __str__(self) -> str:
        host, port = self.primary
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{addr} ({self.key.name if self.key else 'unsigned'})"


@dataclass(frozen=True)
class Plan:
    """The zones we follow, and the root keys under which a primary may announce more."""

    sources: dict[dns.name.Name, Source]
    roots: list[Source]  # origin is the root; zones they cover are added by NOTIFY


def _transfer_keys(keys: Iterable[Key]) -> list[Key]:
    return [k for k in keys if k.zone is not None and k.allows("transfer", k.zone)]


def plan_sources(
    keys: Iterable[Key], zones: Iterable[dns.name.Name] = (), primary: Address | None = None
) -> Plan:
    """Zones and primaries from the key names (PRODUCT.md), `--zone` and `--primary`.

    Each `_transfer` (or `_update`) key names a zone; its address labels name the primary, on
    port 53. `--zone` adds zones that keys only cover. `--primary` overrides the address and
    port for every zone (a key names no port, and BIND or Knot keys name no address). A zone
    talks to its primary with the most specific key covering it, a key naming a primary first,
    then the first given; when none covers it, with the first key whose name grants nothing
    (a BIND or Knot key name such as `secondary-key`). A key for the root zone makes a root
    source instead: the primary then announces its zones by NOTIFY.
    """
    keys = list(keys)
    transfer_keys = _transfer_keys(keys)
    foreign = [k for k in keys if k.operation is None]
    wanted: dict[dns.name.Name, None] = {}
    for k in transfer_keys:
        if k.zone != dns.name.root:
            wanted[k.zone] = None  # type: ignore[index]
    for z in zones:
        wanted[z] = None
    sources: dict[dns.name.Name, Source] = {}
    for origin in wanted:
        covering = [k for k in transfer_keys if k.allows("transfer", origin)]
        covering.sort(key=lambda k: (k.primary is None, -len(k.zone)))  # type: ignore[arg-type]
        key = covering[0] if covering else (foreign[0] if foreign else None)
        if primary is not None:
            address = primary
        elif key is not None and key.primary is not None:
            address = (key.primary, 53)
        else:
            raise ConfigError(
                f"no primary for zone {origin}: name it in the key "
                "(P1.P2.P3.P4.S1.S2.S3.S4._transfer.ZONE) or give --primary ADDR[:PORT]")
        sources[origin] = Source(origin, address, key)
    roots = []
    for k in transfer_keys:
        if k.zone != dns.name.root:
            continue
        if primary is not None:
            address = primary
        elif k.primary is not None:
            address = (k.primary, 53)
        else:
            raise ConfigError(f"no primary for the root key {k.name}: give --primary ADDR[:PORT]")
        roots.append(Source(dns.name.root, address, k))
    if not sources and not roots:
        raise ConfigError("no zone to follow: give a _transfer key for it "
                          "(NAME._transfer.ZONE, or NAME._transfer. for every zone) or --zone")
    return Plan(sources, roots)


# -- timers (RFC 1035 3.3.13, 4.3.5) ---------------------------------------------------------------


@dataclass(frozen=True)
class TimerBounds:
    """Limits on the SOA's refresh, retry and expire, so a careless SOA can neither hammer the
    primary nor keep a zone for years. The minimums are Knot's (a test zone can expire in
    seconds); expire is at least refresh + retry, as BIND makes it."""

    min_refresh: float = 2.0
    max_refresh: float = 7 * 86400.0
    min_retry: float = 2.0
    max_retry: float = 86400.0
    min_expire: float = 3.0
    max_expire: float = 24 * 7 * 86400.0
    first_retry: float = 2.0  # without a copy there is no SOA: back off from here
    max_no_copy_retry: float = 300.0


def soa_timers(soa: dns.rrset.RRset, bounds: TimerBounds) -> tuple[float, float, float]:
    """(refresh, retry, expire) of a zone's SOA, within `bounds`."""
    rd = soa[0]
    refresh = min(max(rd.refresh, bounds.min_refresh), bounds.max_refresh)
    retry = min(max(rd.retry, bounds.min_retry), bounds.max_retry)
    expire = min(max(rd.expire, bounds.min_expire, refresh + retry), bounds.max_expire)
    return refresh, retry, expire


@dataclass
class ZoneStatus:
    """One followed zone: its copy, when it was last confirmed, and when to ask again.

    Times are seconds of the clock passed in (wall time: `refreshed` is kept on disk)."""

    source: Source
    zone: Zone | None = None
    refreshed: float | None = None  # the last successful refresh (transfer or same serial)
    next_check: float = 0.0
    failures: int = 0
    last_error: str = ""
    expired: bool = False

    @property
    def origin(self) -> dns.name.Name:
        return self.source.origin

    def timers(self, bounds: TimerBounds) -> tuple[float, float, float] | None:
        return soa_timers(self.zone.soa, bounds) if self.zone is not None else None

    def succeeded(self, now: float, bounds: TimerBounds) -> None:
        """A refresh confirmed (or brought) the current copy: next check after `refresh`."""
        self.refreshed = now
        self.failures = 0
        self.last_error = ""
        self.expired = False
        timers = self.timers(bounds)
        self.next_check = now + (timers[0] if timers else bounds.first_retry)

    def failed(self, now: float, bounds: TimerBounds, why: str) -> None:
        """A refresh failed: try again after `retry` (backing off while we have no copy)."""
        self.failures += 1
        self.last_error = why
        timers = self.timers(bounds)
        if timers is not None:
            delay = timers[1]
        else:
            delay = min(bounds.first_retry * 2 ** min(self.failures - 1, 16),
                        bounds.max_no_copy_retry)
        self.next_check = now + delay

    def notified(self, now: float) -> None:
        self.next_check = min(self.next_check, now)

    def expires_at(self, bounds: TimerBounds) -> float | None:
        timers = self.timers(bounds)
        if timers is None or self.refreshed is None:
            return None
        return self.refreshed + timers[2]

    def is_expired(self, now: float, bounds: TimerBounds) -> bool:
        at = self.expires_at(bounds)
        return at is not None and now >= at

    def due(self, now: float) -> bool:
        return now >= self.next_check


# -- NOTIFY in (RFC 1996) ------------------------------------------------------------------------


class NotifyVerdict(NamedTuple):
    """The answer to a NOTIFY and what it makes us do ("refresh", "add" or None), and why."""

    rcode: int
    action: str | None
    why: str


def _same_address(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped:
        y = y.ipv4_mapped
    return x == y


def judge_notify(
    statuses: Mapping[dns.name.Name, ZoneStatus],
    roots: Iterable[Source],
    origin: dns.name.Name,
    key: Key | None,
    peer: str | None,
    serial: int | None = None,
) -> NotifyVerdict:
    """Whether a NOTIFY for `origin` (already TSIG-verified: `key` signed it) comes from the
    zone's primary, and what to do about it.

    From the primary: signed with one of our keys that covers the zone or with the key we use
    with its primary (only we and the primary hold it), or unsigned from the primary's address.
    A NOTIFY for a zone we do not follow adds it when a root key signed it. A NOTIFY announcing
    a serial we already hold changes nothing (a hidden-secondary connection hears every zone at
    each reconnect).
    """
    status = statuses.get(origin)
    if status is None:
        for root in roots:
            if key is not None and root.key is not None and key.name == root.key.name:
                return NotifyVerdict(dns.rcode.NOERROR, "add",
                                     f"a new zone announced under the root key {key.name}")
        return NotifyVerdict(dns.rcode.NOTAUTH, None, "not a zone we follow")
    own = status.source.key
    signed_ok = key is not None and (key.allows("notify", origin)
                                     or (own is not None and key.name == own.name))
    if key is not None and not signed_ok:
        return NotifyVerdict(dns.rcode.NOTAUTH, None, f"the key {key.name} does not cover it")
    if not signed_ok and not _same_address(peer, status.source.primary[0]):
        return NotifyVerdict(dns.rcode.REFUSED, None,
                             f"unsigned and not from the primary {status.source.primary[0]}")
    if (serial is not None and status.zone is not None and not status.expired
            and not serial_gt(serial, status.zone.serial)):
        return NotifyVerdict(dns.rcode.NOERROR, None, f"we already have serial {serial}")
    return NotifyVerdict(dns.rcode.NOERROR, "refresh", "from the primary")


# -- the copy on disk ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedZone:
    """A zone as read back from the data directory, with when it was last refreshed."""

    zone: Zone
    refreshed: float
    primary: str
    key: str | None


def zone_file_stem(origin: dns.name.Name) -> str:
    """A file name for a zone: its name where that is a plain one, else hex of its wire form."""
    text = origin.to_text(omit_final_dot=True).lower()
    if origin != dns.name.root and text and text[0] not in ".-" and all(
        c.isascii() and (c.isalnum() or c in "-._") for c in text
    ):
        return text
    return "x-" + origin.canonicalize().to_wire().hex()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `path` so that a crash leaves the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _meta(zone: Zone, refreshed: float, source: Source) -> bytes:
    return (json.dumps({
        "zone": zone.origin.to_text(),
        "serial": zone.serial,
        "refreshed": refreshed,
        "refreshed_utc": datetime.datetime.fromtimestamp(refreshed, datetime.UTC)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "primary": str(source).split(" ", 1)[0],
        "key": source.key.name.to_text() if source.key else None,
    }, indent=1) + "\n").encode()


def save_zone(directory: Path, zone: Zone, refreshed: float, source: Source) -> None:
    """The zone as a master file, then the time of its refresh (a JSON beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = zone_file_stem(zone.origin)
    when = datetime.datetime.fromtimestamp(refreshed, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    header = (f"; {zone.origin} serial {zone.serial}, transferred from {source} at {when}\n"
              "; written by gitdns secondary after each transfer; edits here are overwritten\n")
    _atomic_write(directory / f"{stem}.zone", (header + render_zone(zone)).encode())
    _atomic_write(directory / f"{stem}.json", _meta(zone, refreshed, source))


def save_refreshed(directory: Path, zone: Zone, refreshed: float, source: Source) -> None:
    """A refresh that found the same serial: only the time changes."""
    stem = zone_file_stem(zone.origin)
    if not (directory / f"{stem}.zone").exists():
        save_zone(directory, zone, refreshed, source)
        return
    _atomic_write(directory / f"{stem}.json", _meta(zone, refreshed, source))


def load_saved(directory: Path) -> tuple[list[SavedZone], list[str]]:
    """Every zone saved in `directory`, and the problems found (files skipped)."""
    found: list[SavedZone] = []
    problems: list[str] = []
    if not directory.is_dir():
        return found, problems
    for meta_path in sorted(directory.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text())
            origin = dns.name.from_text(meta["zone"])
            zone_path = meta_path.with_suffix(".zone")
            text = zone_path.read_text()
            loaded = dns.zone.from_text(text, origin, relativize=False, check_origin=True)
            rrsets = [dns.rrset.from_rdata_list(name, rds.ttl, list(rds))
                      for name, rds in loaded.iterate_rdatasets()]
            zone = Zone(origin, rrsets)
            if zone.serial != meta["serial"]:
                raise ValueError(f"the zone file has serial {zone.serial}, "
                                 f"the record of its refresh {meta['serial']}")
            found.append(SavedZone(zone, float(meta["refreshed"]), str(meta.get("primary")),
                                   meta.get("key")))
        except (OSError, ValueError, KeyError, TypeError, dns.exception.DNSException) as e:
            problems.append(f"{meta_path}: {type(e).__name__}: {e}; not loaded")
    return found, problems


# -- the daemon ----------------------------------------------------------------------------------


@dataclass
class SecondaryConfig:
    keys: list[Key]
    data_dir: Path
    primary: Address | None = None
    zones: list[dns.name.Name] = field(default_factory=list)
    listen: list[ListenAddress] = field(default_factory=list)
    also_notify: list[Address] = field(default_factory=list)
    log_queries: bool = False
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT
    bounds: TimerBounds = field(default_factory=TimerBounds)


@dataclass
class _Watcher:
    """A downstream hidden secondary: a TCP connection that asked our SOA with a transfer key."""

    connection: object
    key: Key
    origin: dns.name.Name


class Secondary:
    """One running secondary server."""

    def __init__(self, config: SecondaryConfig, clock: Clock = time.time):
        self.config = config
        self.clock = clock
        self.bounds = config.bounds
        self.plan = plan_sources(config.keys, config.zones, config.primary)
        self.keys = KeyStore({k.name: k for k in config.keys})
        self.status: dict[dns.name.Name, ZoneStatus] = {
            origin: ZoneStatus(source) for origin, source in self.plan.sources.items()
        }
        self.store = Store()
        self.view = core.ServerState(self.store.zones, self.keys)
        self.fast = FastPath(self.store.zones) if FastPath is not None else None
        self.history = ZoneHistory()
        self.watchers: list[_Watcher] = []
        self.server: DnsServer | None = None
        # Names of zones we follow but do not serve (no copy yet, or expired): SERVFAIL.
        self.unavailable: dict[tuple[bytes, ...], str] = {}
        self._served_labels: set[tuple[bytes, ...]] = set()
        self._refreshing: set[dns.name.Name] = set()
        self._again: set[dns.name.Name] = set()
        self._wake: asyncio.Event | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._sem: asyncio.Semaphore | None = None
        for st in self.status.values():
            self._mark_unavailable(st.origin, "not transferred yet")

    # -- answering -------------------------------------------------------------------------

    def handle(self, wire: bytes, request: core.Request):
        """One request in: NOTIFY and UPDATE are ours; queries go to the fast path and core."""
        if len(wire) >= 12 and not wire[2] & 0x80:
            opcode = (wire[2] >> 3) & 0xF
            if opcode == dns.opcode.NOTIFY:
                return self._notify_in(wire, request)
            if opcode == dns.opcode.UPDATE:
                return self._update_in(wire, request)
            if self.unavailable and opcode == dns.opcode.QUERY:
                reply = self._unavailable_reply(wire, request)
                if reply is not None:
                    return reply
        outcome = None
        if self.fast is not None:
            outcome = self.fast.answer(wire, request.tcp)
        if outcome is None:
            outcome = core.handle(self.view, wire, request, int(time.time()))
        if isinstance(outcome, core.Deferred):
            return self._deferred(outcome)
        if self.config.log_queries:
            log_query(wire, outcome, request)
        return outcome

    def _unavailable_reply(self, wire: bytes, request: core.Request) -> bytes | None:
        """SERVFAIL for a name whose closest enclosing zone is one we follow but cannot serve
        (RFC 1035 4.3.5: an expired zone is no longer authoritative data)."""
        labels = _question_labels(wire)
        if labels is None:
            return None
        for i in range(len(labels) + 1):
            suffix = labels[i:]
            if suffix in self._served_labels:
                return None
            why = self.unavailable.get(suffix)
            if why is not None:
                break
        else:
            return None
        try:
            query = parse_request(wire, self.keys).message
        except Exception:
            return None  # the core answers it (FORMERR, a TSIG error)
        if len(query.question) != 1 or query.question[0].rdclass != dns.rdataclass.IN:
            return None
        reply = core.reply(query, dns.rcode.SERVFAIL, request, aa=False)
        if self.config.log_queries:
            log_query(wire, reply, request, f" ({why})")
        return reply

    async def _deferred(self, job: core.Deferred):
        try:
            if job.kind == "transfer":
                return await self._transfer_out(job)
            if job.kind == "watch":
                self._watch(job)
                return job.reply
            return core.reply(job.query, dns.rcode.REFUSED, job.request, aa=False)
        except Exception:
            log.exception("%s for %s failed; answering SERVFAIL", job.kind, job.origin)
            return core.reply(job.query, dns.rcode.SERVFAIL, job.request, aa=False)

    async def _transfer_out(self, job: core.Deferred) -> list[bytes] | bytes:
        """AXFR/IXFR to a downstream secondary (chaining), IXFR from what we transferred in."""
        return await serve_transfer(job, self.history)

    # -- NOTIFY and UPDATE in --------------------------------------------------------------

    def _notify_in(self, wire: bytes, request: core.Request) -> bytes | None:
        try:
            verified = parse_request(wire, self.keys)
        except TsigFailure as failure:
            log.warning("NOTIFY from %s with a bad signature (%s): ignored", _who(request),
                        failure)
            return error_reply(failure, int(time.time()))
        except Exception:
            return core.handle(self.view, wire, request)  # FORMERR, as for any bad message
        query, key = verified.message, verified.key
        if len(query.question) != 1 or query.question[0].rdtype != dns.rdatatype.SOA:
            return core.reply(query, dns.rcode.FORMERR, request, aa=False)
        origin = query.question[0].name
        serial = None
        for rrset in query.answer:
            if rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin and len(rrset):
                serial = rrset[0].serial
        verdict = judge_notify(self.status, self.plan.roots, origin, key,
                               request.peer[0] if request.peer else None, serial)
        signer = f"signed with {key.name}" if key else "unsigned"
        if verdict.action == "add":
            root = next(r for r in self.plan.roots if r.key and key and r.key.name == key.name)
            self._follow(Source(origin, root.primary, root.key, discovered=True))
        if verdict.action is not None:
            log.info("NOTIFY for %s serial %s from %s (%s): %s; refreshing now", origin,
                     serial if serial is not None else "?", _who(request), signer, verdict.why)
            self._request_refresh(origin)
        elif verdict.rcode == dns.rcode.NOERROR:
            log.debug("NOTIFY for %s from %s: %s", origin, _who(request), verdict.why)
        else:
            log.warning("NOTIFY for %s from %s (%s) not acted on: %s; answering %s", origin,
                        _who(request), signer, verdict.why, dns.rcode.to_text(verdict.rcode))
        return core.reply(query, verdict.rcode, request)

    def _update_in(self, wire: bytes, request: core.Request):
        """RFC 2136 section 6: a signed UPDATE for a zone we follow goes to its primary."""
        try:
            query = dns.message.from_wire(wire, keyring=lambda _m, _n: False,
                                          one_rr_per_rrset=True)
        except Exception:
            return core.handle(self.view, wire, request)  # FORMERR
        if len(query.question) != 1 or query.question[0].rdtype != dns.rdatatype.SOA:
            return _bare_reply(wire, dns.rcode.FORMERR)
        origin = query.question[0].name
        status = self.status.get(origin)
        if status is None:
            return _bare_reply(wire, dns.rcode.NOTAUTH)
        if not query.had_tsig:
            log.warning("unsigned UPDATE for %s from %s: refused (only signed updates are "
                        "forwarded to the primary)", origin, _who(request))
            return _bare_reply(wire, dns.rcode.REFUSED)
        return self._forward_update(wire, status.source, request, query.tsig.name)

    async def _forward_update(self, wire: bytes, source: Source, request: core.Request,
                              keyname: dns.name.Name) -> bytes:
        host, port = source.primary
        forwarded_id = secrets.randbelow(0x10000)
        try:
            reply = await tcp_query(host, port, forwarded_id.to_bytes(2, "big") + wire[2:],
                                    UPDATE_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.warning("UPDATE for %s from %s (%s): forwarding to %s failed (%s); SERVFAIL",
                        source.origin, _who(request), keyname, source, e or type(e).__name__)
            return _bare_reply(wire, dns.rcode.SERVFAIL)
        if len(reply) < 12 or int.from_bytes(reply[:2], "big") != forwarded_id or \
                not reply[2] & 0x80 or (reply[2] >> 3) & 0xF != dns.opcode.UPDATE:
            log.warning("UPDATE for %s: the primary %s sent back something else; SERVFAIL",
                        source.origin, source)
            return _bare_reply(wire, dns.rcode.SERVFAIL)
        log.info("UPDATE for %s from %s (%s) forwarded to %s: %s", source.origin,
                 _who(request), keyname, source, dns.rcode.to_text(reply[3] & 0xF))
        return wire[:2] + reply[2:]

    # -- hidden secondaries downstream -----------------------------------------------------

    def _watch(self, job: core.Deferred) -> None:
        conn = job.request.connection
        self.watchers = [w for w in self.watchers if getattr(w.connection, "open", False)]
        if job.key is None:
            return
        if not any(w.connection is conn and w.origin == job.origin for w in self.watchers):
            self.watchers.append(_Watcher(conn, job.key, job.origin))
            log.info("hidden secondary %s registered for NOTIFY of %s (%s)", _who(job.request),
                     job.origin, job.key.name)
        if job.zone is None:
            asyncio.get_running_loop().call_soon(self._notify_all_zones, conn, job.key)

    def _notify_all_zones(self, conn, key: Key) -> None:
        for origin, zone in self.store.zones.items():
            if key.allows("transfer", origin):
                conn.send(notify_message(origin, zone.soa, key).to_wire())

    def _notify_downstream(self, origin: dns.name.Name) -> None:
        zone = self.store.zones.get(origin)
        if zone is None:
            return
        for target in self.downstream(origin):
            self._spawn(send_notify(target, origin, zone.soa))
        self.watchers = [w for w in self.watchers if getattr(w.connection, "open", False)]
        for w in self.watchers:
            if origin.is_subdomain(w.origin) and w.key.allows("transfer", origin):
                w.connection.send(notify_message(origin, zone.soa, w.key).to_wire())  # type: ignore[attr-defined]

    def downstream(self, origin: dns.name.Name) -> list[NotifyTarget]:
        """Our secondaries for `origin`: the secondary of every transfer key covering it that
        names another primary than ours (a key naming our primary, by --primary or by the key we
        use with it, names us as its secondary), signed with that key, and every --also-notify
        address."""
        status = self.status.get(origin)
        upstream = {status.source.primary[0]} if status else set()
        if status and status.source.key and status.source.key.primary:
            upstream.add(status.source.key.primary)
        ours = {(a.host, a.port) for a in self.config.listen}
        found: dict[Address, NotifyTarget] = {}
        for key in self.keys.covering(origin, "transfer"):
            if key.secondary and not any(_same_address(key.primary, u) for u in upstream) \
                    and (key.secondary, 53) not in ours:
                found.setdefault((key.secondary, 53),
                                 NotifyTarget(key.secondary, 53, key, "secondary of its key"))
        for host, port in self.config.also_notify:
            found.setdefault((host, port), NotifyTarget(host, port, None, "also-notify"))
        return list(found.values())

    # -- following zones -------------------------------------------------------------------

    def _follow(self, source: Source) -> ZoneStatus:
        status = self.status.get(source.origin)
        if status is None:
            status = self.status[source.origin] = ZoneStatus(source)
            self._mark_unavailable(source.origin, "not transferred yet")
            log.info("following %s from %s%s", source.origin, source,
                     " (announced under a root key)" if source.discovered else "")
        return status

    def _request_refresh(self, origin: dns.name.Name) -> None:
        status = self.status.get(origin)
        if status is None:
            return
        if origin in self._refreshing:
            self._again.add(origin)  # a NOTIFY during a refresh: one more after it
        status.notified(self.clock())
        if self._wake is not None:
            self._wake.set()

    def refresh_all(self) -> None:
        """Check every zone now (SIGHUP)."""
        for origin in list(self.status):
            self._request_refresh(origin)

    def _mark_unavailable(self, origin: dns.name.Name, why: str) -> None:
        self.unavailable[_label_key(origin)] = why

    def _swap(self, zones: ZoneSet) -> None:
        self.store.swap(zones)
        self.view = core.ServerState(zones, self.keys)
        if FastPath is not None:
            self.fast = FastPath(zones, previous=self.fast)
        self._served_labels = {_label_key(o) for o in zones}

    def serve(self, origin: dns.name.Name, zone: Zone) -> None:
        """Answer for `origin` from `zone` from now on."""
        self.unavailable.pop(_label_key(origin), None)
        self._swap(self.store.zones.replace({origin: zone}))

    def unserve(self, origin: dns.name.Name, why: str) -> None:
        """Stop answering for `origin` (it expired): SERVFAIL from now on."""
        self._mark_unavailable(origin, why)
        if origin in self.store.zones:
            self._swap(self.store.zones.replace({origin: None}))

    def check_expiry(self, now: float) -> None:
        """Stop serving every zone whose expire time passed without a successful refresh."""
        for st in self.status.values():
            if st.zone is None or st.expired or not st.is_expired(now, self.bounds):
                continue
            st.expired = True
            timers = st.timers(self.bounds)
            assert timers is not None and st.refreshed is not None
            since = datetime.datetime.fromtimestamp(st.refreshed, datetime.UTC)
            why = (f"expired: no successful refresh from {st.source} since "
                   f"{since:%Y-%m-%d %H:%M:%SZ} (SOA expire {timers[2]:.0f} s)")
            log.error("zone %s serial %d %s; last error: %s; answering SERVFAIL until the "
                      "primary answers again", st.origin, st.zone.serial, why,
                      st.last_error or "none")
            self.unserve(st.origin, why)

    def load_from_disk(self, now: float) -> None:
        """Serve the zones saved by an earlier run that have not expired, before any refresh."""
        saved, problems = load_saved(self.config.data_dir)
        for problem in problems:
            log.warning("%s", problem)
        for item in saved:
            origin = item.zone.origin
            status = self.status.get(origin)
            if status is None:
                root = next((r for r in self.plan.roots
                             if r.key is not None and r.key.allows("transfer", origin)
                             and (item.key is None or item.key == r.key.name.to_text())), None)
                if root is None:
                    log.info("%s in %s is not a zone we follow any more; not served",
                             origin, self.config.data_dir)
                    continue
                status = self._follow(Source(origin, root.primary, root.key, discovered=True))
            status.zone = item.zone
            status.refreshed = item.refreshed
            status.next_check = now  # ask the primary at once; serve meanwhile
            age = now - item.refreshed
            if status.is_expired(now, self.bounds):
                status.expired = True
                self._expired_on_disk(status, age)
                continue
            self.serve(origin, item.zone)
            log.info("serving %s serial %d from disk (last refreshed %.0f s ago, expires in "
                     "%.0f s without a refresh)", origin, item.zone.serial, age,
                     (status.expires_at(self.bounds) or now) - now)

    def _expired_on_disk(self, status: ZoneStatus, age: float) -> None:
        timers = status.timers(self.bounds)
        assert timers is not None and status.zone is not None
        why = (f"expired: the copy on disk was last refreshed {age:.0f} s ago "
               f"(SOA expire {timers[2]:.0f} s)")
        log.error("zone %s serial %d %s; answering SERVFAIL until the primary answers",
                  status.origin, status.zone.serial, why)
        self._mark_unavailable(status.origin, why)

    async def _scheduler(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()  # before looking: a wake-up from now on is not lost
            now = self.clock()
            self.check_expiry(now)
            for origin, st in list(self.status.items()):
                if st.due(now) and origin not in self._refreshing:
                    self._refreshing.add(origin)
                    self._spawn(self._refresh(st))
            waiting = [st.next_check for o, st in self.status.items()
                       if o not in self._refreshing]
            delay = min([SCHEDULER_TICK, *(t - now for t in waiting)])
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            else:
                await asyncio.sleep(0)

    async def _refresh(self, st: ZoneStatus) -> None:
        origin = st.origin
        try:
            assert self._sem is not None
            async with self._sem:
                await self.refresh(st)
        except Exception:
            log.exception("refresh of %s failed unexpectedly", origin)
            st.failed(self.clock(), self.bounds, "internal error")
        finally:
            self._refreshing.discard(origin)
            if origin in self._again:
                self._again.discard(origin)
                st.notified(self.clock())
            if self._wake is not None:
                self._wake.set()

    async def refresh(self, st: ZoneStatus) -> None:
        """One refresh: SOA query, then IXFR (or AXFR) when the primary has a newer serial."""
        source = st.source
        try:
            query = soa_query(st.origin, source.key)
            wire = await soa_exchange(*source.primary, query.to_wire())
            soa = primary_soa(query, wire)
            serial = soa[0].serial
            if st.zone is not None and not serial_gt(serial, st.zone.serial):
                if serial != st.zone.serial:
                    log.warning("%s: the primary %s has serial %d, older than our %d "
                                "(RFC 1982); keeping ours", st.origin, source, serial,
                                st.zone.serial)
                await self._confirmed(st)
                return
            await self._transfer_in(st, serial)
        except (TransferFailed, OSError, TimeoutError, asyncio.IncompleteReadError,
                dns.exception.DNSException) as e:
            why = _describe(e)
            st.failed(self.clock(), self.bounds, why)
            if st.zone is not None and not st.expired:
                serving = f"still serving serial {st.zone.serial}"
            else:
                serving = "nothing served"
            log.warning("refresh of %s from %s failed: %s; %s; next try in %.0f s", st.origin,
                        source, why, serving, st.next_check - self.clock())

    async def _confirmed(self, st: ZoneStatus) -> None:
        """The primary has what we have: the expire timer starts again."""
        was_expired = st.expired
        st.succeeded(self.clock(), self.bounds)
        assert st.zone is not None and st.refreshed is not None
        await self._save(save_refreshed, st)
        if was_expired or st.origin not in self.store.zones:
            log.info("%s serial %d confirmed by %s: serving it again", st.origin,
                     st.zone.serial, st.source)
            self.serve(st.origin, st.zone)

    async def _transfer_in(self, st: ZoneStatus, serial: int) -> None:
        source = st.source
        old = st.zone
        started = time.monotonic()
        incremental = old is not None
        try:
            result = await self._run_transfer(st, incremental)
        except (IxfrMismatch, TransferRefused) as e:
            if not incremental or (isinstance(e, TransferRefused) and e.rcode not in (
                    dns.rcode.NOTIMP, dns.rcode.FORMERR, dns.rcode.SERVFAIL)):
                raise
            log.info("IXFR of %s from %s: %s; falling back to AXFR", st.origin, source,
                     _describe(e))
            result = await self._run_transfer(st, False)
        ms = (time.monotonic() - started) * 1000
        if result.zone is None:
            log.info("%s: %s says serial %d is current", st.origin, source, serial)
            await self._confirmed(st)
            return
        zone = result.zone
        if old is not None:
            await asyncio.to_thread(self.history.record, old, zone, result.diff)
        if result.diff is not None:
            detail = (f"{len(result.diff.deleted)} records deleted, "
                      f"{len(result.diff.added)} added")
        else:
            detail = f"{zone.record_count} records"
        # Logged before it is served: whoever sees the new data finds the line in the log.
        log.info("transfer of %s from %s: %s serial %s -> %d, %d messages, %s, %.0f ms; "
                 "serving serial %d", st.origin, source, result.style,
                 old.serial if old is not None else "none", zone.serial, result.messages, detail,
                 ms, zone.serial)
        st.zone = zone
        st.succeeded(self.clock(), self.bounds)
        self.serve(st.origin, zone)
        await self._save(save_zone, st)
        self._notify_downstream(st.origin)

    async def _save(self, how: Callable[[Path, Zone, float, Source], None],
                    st: ZoneStatus) -> None:
        """Write the copy (or its refresh time) to disk; a failure is logged, never fatal: the
        zone is served from memory and the next refresh writes again."""
        assert st.zone is not None and st.refreshed is not None
        try:
            await asyncio.to_thread(how, self.config.data_dir, st.zone, st.refreshed, st.source)
        except OSError as e:
            log.error("%s: cannot write the copy to %s (%s); serving it from memory, a restart "
                      "would need the primary", st.origin, self.config.data_dir, e)

    async def _run_transfer(self, st: ZoneStatus, incremental: bool):
        xfr = InboundTransfer(st.origin, st.source.key, st.zone, incremental=incremental)
        host, port = st.source.primary
        await transfer_exchange(host, port, xfr)
        return await asyncio.to_thread(xfr.result)

    # -- root keys: a hidden-secondary connection to the primary ---------------------------

    async def _watch_primary(self, root: Source) -> None:
        """Keep a TCP connection to the primary open with a signed SOA query for the root: a
        gitdns primary answers with NOTIFY for every zone the key covers, then for each change
        (the seeds' protocol); NOTIFYs that come in are handled like those over UDP."""
        backoff = 1.0
        while True:
            started = time.monotonic()
            try:
                await self._watch_once(root)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("watch connection to %s: %s", root, e or type(e).__name__)
            if time.monotonic() - started > 2 * WATCH_KEEPALIVE:
                backoff = 1.0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX)

    async def _watch_once(self, root: Source) -> None:
        host, port = root.primary
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TCP_TIMEOUT)
        try:
            query = soa_query(dns.name.root, root.key)
            _write_message(writer, query.to_wire())
            log.info("asking %s for NOTIFY of every zone %s covers", root, root.key.name
                     if root.key else "?")
            keepalive = self._spawn(self._keepalive(writer))
            try:
                request = core.Request(tcp=True, peer=(host, port))
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    message = await reader.readexactly(size)
                    if len(message) < 12 or message[2] & 0x80:
                        continue  # answers to our queries
                    if (message[2] >> 3) & 0xF == dns.opcode.NOTIFY:
                        reply = self._notify_in(message, request)
                        if reply:
                            _write_message(writer, reply)
            finally:
                keepalive.cancel()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        """An unsigned query now and then, so the primary does not close the connection idle
        (a signed one for the root would make it announce every zone again)."""
        while True:
            await asyncio.sleep(WATCH_KEEPALIVE)
            query = dns.message.make_query(dns.name.root, dns.rdatatype.SOA)
            query.flags = 0
            _write_message(writer, query.to_wire())
            await writer.drain()

    # -- life cycle ------------------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self) -> None:
        cfg = self.config
        sockets = bind_sockets(cfg.listen)  # fail early on a taken port
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self._wake = asyncio.Event()
            self._sem = asyncio.Semaphore(MAX_PARALLEL_REFRESHES)
            self.load_from_disk(self.clock())
            self.server = DnsServer(self.handle, cfg.listen, idle_timeout=cfg.tcp_idle_timeout)
            await self.server.start(sockets)
        except BaseException:
            for _a, u, t in sockets:
                u.close()
                t.close()
            raise
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.refresh_all)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [asyncio.create_task(self._scheduler())]
        tasks += [asyncio.create_task(self._watch_primary(root)) for root in self.plan.roots]
        roots = ", ".join(f"every zone {r.key.name if r.key else '?'} covers from {r}"
                          for r in self.plan.roots)
        log.info("gitdns secondary ready: following %d zones%s; %d served from disk",
                 len(self.status), f" and {roots}" if roots else "", len(self.store.zones))
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            for task in [*tasks, *self._tasks]:
                task.cancel()
            await self.server.stop()

    def stop(self) -> None:
        self._stop.set()


# -- network edges -------------------------------------------------------------------------------


def _write_message(writer: asyncio.StreamWriter, wire: bytes) -> None:
    writer.write(len(wire).to_bytes(2, "big") + wire)


async def tcp_query(host: str, port: int, wire: bytes, timeout: float = TCP_TIMEOUT) -> bytes:
    """One request over a fresh TCP connection, one reply message back."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TCP_TIMEOUT)
    try:
        _write_message(writer, wire)
        async with asyncio.timeout(timeout):
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


async def soa_exchange(host: str, port: int, wire: bytes,
                       timeouts: Iterable[float] = SOA_UDP_TIMEOUTS) -> bytes:
    """The SOA query over UDP, retried; over TCP when UDP stays silent or the reply is
    truncated (RFC 1035 4.2.1, RFC 7766)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Replies, remote_addr=(host, port))
    try:
        for timeout in timeouts:
            transport.sendto(wire)
            deadline = loop.time() + timeout
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                if len(data) >= 12 and data[:2] == wire[:2] and data[2] & 0x80:
                    if not data[2] & 0x02:  # TC clear
                        return data
                    return await tcp_query(host, port, wire)
    finally:
        transport.close()
    return await tcp_query(host, port, wire)


async def transfer_exchange(host: str, port: int, xfr: InboundTransfer,
                            message_timeout: float = TCP_TIMEOUT,
                            lifetime: float = TRANSFER_LIFETIME) -> None:
    """Run `xfr` over TCP to completion; parsing runs in a worker thread, message by message,
    so a large transfer never stalls the answers."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TCP_TIMEOUT)
    try:
        _write_message(writer, xfr.query_wire)
        await writer.drain()
        deadline = loop.time() + lifetime
        while True:
            left = min(message_timeout, deadline - loop.time())
            if left <= 0:
                raise TransferFailed(f"the transfer took longer than {lifetime:.0f} s")
            try:
                async with asyncio.timeout(left):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    message = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                raise TransferFailed("the primary closed the connection before the end of the "
                                     f"{xfr.kind} ({xfr.messages} messages)") from None
            except TimeoutError:
                raise TransferFailed(f"no message from the primary for {left:.0f} s during "
                                     f"the {xfr.kind}") from None
            if await asyncio.to_thread(xfr.receive, message):
                return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# -- small helpers -------------------------------------------------------------------------------


def _label_key(name: dns.name.Name) -> tuple[bytes, ...]:
    return tuple(label.lower() for label in name.labels)


def _question_labels(wire: bytes) -> tuple[bytes, ...] | None:
    """The lowercased labels of the question name (with the empty root label), or None when the
    message has no plain question to read."""
    if len(wire) < 17 or wire[4:6] != b"\x00\x01":
        return None
    labels = []
    i = 12
    while i < len(wire):
        n = wire[i]
        if n == 0:
            labels.append(b"")
            return tuple(labels)
        if n & 0xC0:
            return None
        labels.append(wire[i + 1 : i + 1 + n].lower())
        i += 1 + n
    return None


def _bare_reply(wire: bytes, rcode: int) -> bytes:
    """A header-only reply (for a request we may not sign: the key may be the primary's):
    the ID, QR, the opcode and RD copied, the rcode, no records."""
    return wire[:2] + bytes((0x80 | (wire[2] & 0x79), rcode & 0xF)) + b"\x00" * 8


def _who(request: core.Request) -> str:
    return request.peer[0] if request.peer else "?"


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return str(e) or "no answer in time"
    if isinstance(e, asyncio.IncompleteReadError):
        return "the primary closed the connection"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__

