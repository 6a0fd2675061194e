"""`gitdns letsencrypt`: a hidden secondary that turns CSRs in DNS into certificates (ACME DNS-01).

Rules this module keeps:
- It learns of changes only from the primary: a TCP connection carrying a signed SOA query (the
  primary NOTIFYs it there, also behind NAT), transfers (AXFR first, IXFR after) and a daily look;
  it changes the zones only by signed UPDATEs to the primary.
- A name is worked on by one job at a time. A job either stores leaf + chain and removes its
  challenge TXT in one UPDATE guarded by the TLSA RRset it read, or removes what it added and is
  retried with backoff; a CSR we must not act on is logged once and never sent to the CA.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from gitdns import certdns
from gitdns.certdns import CHAIN, CSR, LEAF, Csr, Decision
from gitdns.keys import Key

log = logging.getLogger("gitdns.letsencrypt")

DAY = 86400.0


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class ServiceConfig:
    """What `gitdns letsencrypt` was told; times in seconds unless they are timedeltas."""

    key: Key  # an _update key, which may also transfer
    primary: tuple[str, int]
    directory: str
    data_dir: Path
    ca_bundle: str | None = None
    email: str | None = None
    ns_check: list[tuple[str, int]] = field(default_factory=list)
    renew_before: datetime.timedelta = certdns.RENEW_BEFORE
    retry_first: float = 60.0
    retry_max: float = 3600.0
    propagation_timeout: float = 300.0
    order_timeout: float = 120.0
    daily: float = DAY
    keepalive: float = 4.0  # below the primary's default TCP idle timeout (10 s)
    min_reissue: float = 3600.0  # never order twice for one CSR within this (a hot loop guard)
    challenge_ttl: int = 60
    max_jobs: int = 4  # orders in flight at once (CAs rate-limit per account)
    dns_timeout: float = 10.0


class UpdateRefused(Exception):
    """The primary answered an UPDATE with an error rcode."""

    def __init__(self, rcode: int, what: str):
        super().__init__(f"the primary answered {dns.rcode.to_text(rcode)} to {what}")
        self.rcode = rcode


class Superseded(Exception):
    """The CSR we worked for is gone from DNS: the certificate is not stored (not a failure)."""


class AcmeFailure(Exception):
    """A call to the CA failed; the message is the CA's error (or why it could not be reached)."""


class NotServed(Exception):
    """A name server did not serve the challenge in time; the message names it."""


@dataclass
class _Failures:
    csr: str  # fingerprint of the CSR the failures were for; a new CSR starts afresh
    count: int
    retry_at: float  # loop time


@dataclass
class _Job:
    task: asyncio.Task
    names: set[str]


class LetsEncrypt:
    """The service: watcher, transfers, scanning, and one job per name that needs a certificate."""

    def __init__(self, config: ServiceConfig, acme,
                 clock: Callable[[], datetime.datetime] = utcnow):
        self.config = config
        self.key = config.key
        self.acme = acme  # gitdns.acmeclient.AcmeAccount (or a stand-in in tests)
        self.clock = clock
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self.jobs: dict[dns.name.Name, _Job] = {}
        self.failures: dict[dns.name.Name, _Failures] = {}
        self.issued: dict[dns.name.Name, tuple[str, float, bytes]] = {}  # CSR, when, leaf
        self.reported: dict[dns.name.Name, str] = {}
        self._refresh_wanted: set[dns.name.Name] = set()
        self._refresh_event = asyncio.Event()
        self._refresh_failures: dict[dns.name.Name, int] = {}
        self._wake = asyncio.Event()
        self._next_due: float | None = None
        self._stop = asyncio.Event()
        self._primary_text = _where(*config.primary)

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def watch_name(self) -> dns.name.Name:
        """What the watch query asks for: the key's zone (the root for a root key)."""
        return self.key.zone or dns.name.root

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        if self.watch_name != dns.name.root:
            self.request_refresh(self.watch_name)
        tasks = [asyncio.create_task(c) for c in (self._watch(), self._refresher(),
                                                   self._scheduler())]
        log.info("gitdns letsencrypt: hidden secondary of %s for %s with key %s; ACME directory "
                 "%s", self._primary_text, self.watch_name, self.key.name,
                 self.config.directory)
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            jobs = [j.task for j in self.jobs.values()]
            for task in [*tasks, *jobs]:
                task.cancel()
            await asyncio.gather(*tasks, *jobs, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    # -- the watch connection ------------------------------------------------------------------

    def _watch_query(self, signed: bool) -> dns.message.Message:
        query = dns.message.make_query(self.watch_name, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        if signed:
            query.use_tsig(self.key.tsig)
        return query

    async def _watch(self) -> None:
        """Keep one TCP connection to the primary with our signed SOA query on it; reconnect
        with backoff. Every (re)connection re-checks every zone, so a NOTIFY the primary sent
        while we were away is not missed."""
        loop = asyncio.get_running_loop()
        host, port = self.config.primary
        delay = 1.0
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                        self.config.dns_timeout)
            except (OSError, TimeoutError) as e:
                log.warning("cannot connect to the primary %s: %s; trying again in %.0f s",
                            self._primary_text, _why(e), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            started = loop.time()
            log.info("connected to the primary %s; registered for NOTIFY of %s",
                     self._primary_text, self.watch_name)
            keepalive = asyncio.create_task(self._keepalive(writer))
            try:
                _write(writer, self._watch_query(signed=True).to_wire())
                for origin in list(self.zones):
                    self.request_refresh(origin)
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    self._on_message(await reader.readexactly(size), writer)
            except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
                log.info("the connection to the primary %s closed (%s); reconnecting",
                         self._primary_text, _why(e))
            finally:
                keepalive.cancel()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            if loop.time() - started > 30:  # a connection that lived: reconnect at once
                delay = 1.0
                await asyncio.sleep(0.1)
            else:  # one the primary drops at once must not become a busy loop
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        """An unsigned SOA query now and then, so the primary's idle timeout keeps the
        connection (and with it our place in its NOTIFY list)."""
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                await asyncio.sleep(self.config.keepalive)
                _write(writer, self._watch_query(signed=False).to_wire())

    def _on_message(self, wire: bytes, writer: asyncio.StreamWriter) -> None:
        if len(wire) < 12:
            return
        response = bool(wire[2] & 0x80)
        opcode = (wire[2] >> 3) & 0xF
        if not response and opcode == dns.opcode.NOTIFY:
            try:
                message = dns.message.from_wire(wire, keyring=self.key.tsig)
            except Exception as e:
                log.warning("ignoring a NOTIFY that does not verify with our key: %s", e)
                return
            if not message.had_tsig or len(message.question) != 1:
                log.warning("ignoring an unsigned or malformed NOTIFY from the primary")
                return
            reply = dns.message.make_response(message)
            reply.flags |= dns.flags.AA
            with contextlib.suppress(OSError, ConnectionError):
                _write(writer, reply.to_wire())
            origin = message.question[0].name
            serial = _soa_serial(message.answer, origin)
            log.debug("NOTIFY for %s serial %s", origin, serial)
            if self.key.allows("transfer", origin):
                self._maybe_refresh(origin, serial)
            return
        if response and opcode == dns.opcode.QUERY:
            try:
                message = dns.message.from_wire(wire, keyring=False)
            except Exception:
                return
            rcode = message.rcode()
            if rcode == dns.rcode.NOERROR:
                for rrset in message.answer:
                    if rrset.rdtype == dns.rdatatype.SOA and \
                            self.key.allows("transfer", rrset.name):
                        self._maybe_refresh(rrset.name, rrset[0].serial)
            elif rcode == dns.rcode.NOTAUTH or (message.had_tsig and message.tsig_error):
                log.error("the primary %s rejected our key %s (%s): check that its _keys "
                          "holds the same secret", self._primary_text,
                          self.key.name, dns.rcode.to_text(rcode))
                # We are not registered for NOTIFY: reconnect (with backoff) to ask again.
                raise ConnectionResetError("our key was rejected")

    # -- transfers -----------------------------------------------------------------------------

    def request_refresh(self, origin: dns.name.Name) -> None:
        self._refresh_wanted.add(origin)
        self._refresh_event.set()

    def _maybe_refresh(self, origin: dns.name.Name, serial: int | None) -> None:
        zone = self.zones.get(origin)
        if zone is not None and serial is not None and _zone_serial(zone) == serial:
            return
        self.request_refresh(origin)

    async def _refresher(self) -> None:
        while True:
            await self._refresh_event.wait()
            self._refresh_event.clear()
            while self._refresh_wanted:
                origin = min(self._refresh_wanted)  # any order; min for determinism
                self._refresh_wanted.discard(origin)
                await self._refresh(origin)

    async def _refresh(self, origin: dns.name.Name) -> None:
        """Bring our copy of `origin` up to date; a failure is logged and retried later."""
        old = self.zones.get(origin)
        old_serial = _zone_serial(old) if old is not None else None
        try:
            zone, how = await self._transfer(origin, old)
        except dns.xfr.TransferError as e:
            if e.rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
                if self.zones.pop(origin, None) is not None:
                    log.warning("the primary no longer lets us transfer %s (%s): forgotten",
                                origin, dns.rcode.to_text(e.rcode))
                else:
                    log.debug("%s not transferable: %s", origin, dns.rcode.to_text(e.rcode))
                return
            self._refresh_failed(origin, f"the primary answered {dns.rcode.to_text(e.rcode)}")
            return
        except (OSError, EOFError, TimeoutError, dns.exception.DNSException, ValueError) as e:
            self._refresh_failed(origin, _why(e))
            return
        self._refresh_failures.pop(origin, None)
        self.zones[origin] = zone
        serial = _zone_serial(zone)
        if serial != old_serial:
            log.info("zone %s serial %s (%s)", origin, serial, how)
            self._wake.set()

    def _refresh_failed(self, origin: dns.name.Name, why: str) -> None:
        count = self._refresh_failures.get(origin, 0) + 1
        self._refresh_failures[origin] = count
        delay = certdns.retry_delay(count, 1.0, 300.0)
        log.warning("transfer of %s from %s failed: %s; trying again in %.0f s", origin,
                    self._primary_text, why, delay)
        asyncio.get_running_loop().call_later(delay, self.request_refresh, origin)

    async def _transfer(self, origin: dns.name.Name, zone: dns.zone.Zone | None
                        ) -> tuple[dns.zone.Zone, str]:
        """IXFR into our copy when we have one (a broken or refused IXFR falls back to AXFR),
        AXFR into a fresh zone otherwise. The old copy is never left half-updated: dnspython
        applies a transfer in one transaction."""
        host, port = self.config.primary
        if zone is not None:
            try:
                query, _ = dns.xfr.make_query(zone, keyring=self.key.tsig)
                await dns.asyncquery.inbound_xfr(host, zone, query, port=port,
                                                 timeout=self.config.dns_timeout,
                                                 lifetime=self.config.dns_timeout * 6)
                return zone, "IXFR"
            except dns.xfr.TransferError as e:
                if e.rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
                    raise
                log.info("IXFR of %s failed (%s); trying AXFR", origin, _why(e))
            except (dns.exception.DNSException, ValueError, EOFError) as e:
                log.info("IXFR of %s failed (%s); trying AXFR", origin, _why(e))
        fresh = dns.zone.Zone(origin)
        query, _ = dns.xfr.make_query(fresh, serial=None, keyring=self.key.tsig)
        await dns.asyncquery.inbound_xfr(host, fresh, query, port=port,
                                         timeout=self.config.dns_timeout,
                                         lifetime=self.config.dns_timeout * 6)
        return fresh, "AXFR"

    # -- deciding ------------------------------------------------------------------------------

    async def _scheduler(self) -> None:
        """Scan on every change, when a renewal or retry falls due, and once a day (after
        refreshing every zone, in case a NOTIFY was lost)."""
        loop = asyncio.get_running_loop()
        daily_at = loop.time() + self.config.daily
        while True:
            wait = daily_at - loop.time()
            if self._next_due is not None:
                wait = min(wait, self._next_due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
            self._wake.clear()
            if loop.time() >= daily_at:
                daily_at = loop.time() + self.config.daily
                log.info("daily check of %d zones", len(self.zones))
                for origin in list(self.zones):
                    self.request_refresh(origin)
            self._next_due = self.scan()

    def requests(self) -> list[tuple[dns.name.Name, dns.name.Name, list[dns.rdata.Rdata]]]:
        """(zone, host, TLSA records) of every `_letsencrypt._tcp` name in our copies."""
        found = []
        for origin, zone in self.zones.items():
            for rel, rdataset in zone.iterate_rdatasets(dns.rdatatype.TLSA):
                name = rel.derelativize(origin)
                host = certdns.host_of(name)
                if host is not None:
                    found.append((origin, host, list(rdataset)))
        return found

    def scan(self) -> float | None:
        """Start a job for every name that needs a certificate; return the seconds until the
        next renewal or retry falls due (None: nothing scheduled)."""
        loop = asyncio.get_running_loop()
        now = self.clock()
        due: list[float] = []
        present = set()
        for _zone, host, rdatas in self.requests():
            present.add(host)
            decision = certdns.decide(host, rdatas, now, self.config.renew_before)
            if decision.action == "none":
                continue
            if decision.action == "refuse":
                self._report(host, decision.reason, decision.csr)
                continue
            if decision.action == "ok":
                assert decision.due is not None
                due.append((decision.due - now).total_seconds())
                self.reported.pop(host, None)
                continue
            assert decision.csr is not None
            problems = certdns.uncovered(decision.csr.names, self.zones,
                                         lambda z: self.key.allows("update", z))
            if problems:
                self._report(host, "refused, not sent to the CA: " + "; ".join(problems),
                             decision.csr)
                continue
            if host in self.jobs:
                continue
            fp = certdns.fingerprint(decision.csr.der)
            issued = self.issued.get(host)
            if issued and issued[0] == fp and loop.time() - issued[1] < self.config.min_reissue:
                wait = self.config.min_reissue - (loop.time() - issued[1])
                if decision.current is not None and decision.current.der == issued[2]:
                    # Our fresh certificate is already due: never loop ordering certificates.
                    self._report(host, f"{decision.reason} right after we stored it (is "
                                 "--renew-before longer than the CA's certificate lifetime?); "
                                 f"not ordering again for {wait:.0f} s", decision.csr, warn=True)
                # else our copy of the zone predates our own update: the transfer follows.
                due.append(wait)
                continue
            failed = self.failures.get(host)
            if failed and failed.csr == fp and loop.time() < failed.retry_at:
                due.append(failed.retry_at - loop.time())
                continue
            # A job holds its host and the challenge names it will write (a name and its
            # wildcard share one): no two jobs ever touch the same records.
            names = {certdns.normalize(host.to_text()),
                     *(certdns.challenge_name(n).to_text() for n in decision.csr.names)}
            if any(names & job.names for job in self.jobs.values()):
                continue  # another job has one of these names; we look again when it ends
            if len(self.jobs) >= self.config.max_jobs:
                continue  # likewise when a job ends
            self._start(host, decision, names)
        for host in set(self.failures) - present:
            del self.failures[host]
        for host in set(self.reported) - present:
            del self.reported[host]
        return min(due) if due else None

    def _report(self, host: dns.name.Name, reason: str, csr: Csr | None,
                warn: bool = False) -> None:
        """Log a refusal once per CSR and reason (every scan would repeat it otherwise)."""
        tag = (certdns.fingerprint(csr.der) if csr else "-") + reason.split(";")[0]
        if self.reported.get(host) == tag:
            return
        self.reported[host] = tag
        (log.warning if warn else log.error)("%s: %s", certdns.tlsa_name(host), reason)

    def _start(self, host: dns.name.Name, decision: Decision, names: set[str]) -> None:
        task = asyncio.get_running_loop().create_task(self._job(host, decision))
        self.jobs[host] = _Job(task, names)

    # -- one certificate -----------------------------------------------------------------------

    async def _job(self, host: dns.name.Name, decision: Decision) -> None:
        loop = asyncio.get_running_loop()
        csr = decision.csr
        assert csr is not None
        fp = certdns.fingerprint(csr.der)
        published: dict[dns.name.Name, dict[dns.name.Name, list[str]]] = {}
        try:
            log.info("%s: %s; ordering a certificate for %s", certdns.tlsa_name(host),
                     decision.reason, ", ".join(csr.names))
            order, pending = await self._acme(self.acme.new_order, csr.pem)
            if pending:
                groups = self._group(pending)
                for zone, records in groups.items():
                    await self._publish(zone, records)
                    published[zone] = records
                await self._wait_served(groups)
                await self._acme(self.acme.answer, pending)
            fullchain = await self._acme(self.acme.finalize, order, self.config.order_timeout)
            ders = certdns.split_pem_chain(fullchain)
            if not ders:
                raise ValueError("the CA sent no certificate")
            leaf = certdns.parse_cert(ders[0])
            if leaf.public_key != csr.public_key:
                raise ValueError("the CA's certificate is not for the CSR's key")
            await self._store(host, csr, leaf, ders[1:], published)
            published = {}
            self.failures.pop(host, None)
            self.issued[host] = (fp, loop.time(), leaf.der)
            log.info("%s: certificate stored (serial %x, valid until %s)",
                     certdns.tlsa_name(host), leaf.serial, f"{leaf.not_after:%Y-%m-%d %H:%M}Z")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._unpublish(published), 5)
            raise
        except Superseded as e:
            log.info("%s: %s", certdns.tlsa_name(host), e)
            await self._unpublish(published)
        except Exception as e:
            self.acme.reset()
            previous = self.failures.get(host)
            count = previous.count + 1 if previous and previous.csr == fp else 1
            delay = certdns.retry_delay(count, self.config.retry_first, self.config.retry_max)
            self.failures[host] = _Failures(fp, count, loop.time() + delay)
            log.error("%s: certificate request failed (attempt %d): %s; retrying in %.0f s",
                      certdns.tlsa_name(host), count, _describe(e), delay)
            await self._unpublish(published)
        finally:
            self.jobs.pop(host, None)
            self._wake.set()

    async def _acme(self, call, *args):
        """One blocking ACME call in a worker thread; its failure as an AcmeFailure that says
        what the CA answered (an HTTP error must not read as trouble with the primary)."""
        try:
            return await asyncio.to_thread(call, *args)
        except Exception as e:
            from gitdns.acmeclient import describe

            raise AcmeFailure(describe(e)) from e

    def _group(self, pending) -> dict[dns.name.Name, dict[dns.name.Name, list[str]]]:
        """Challenge TXT values by zone and name (a name and its wildcard share one name)."""
        groups: dict[dns.name.Name, dict[dns.name.Name, list[str]]] = {}
        for challenge in pending:
            name = dns.name.from_text(challenge.name)
            zone = certdns.zone_of(name, self.zones)
            if zone is None:
                raise ValueError(f"{name} is in no zone we transfer")
            groups.setdefault(zone, {}).setdefault(name, []).append(challenge.validation)
        return groups

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(zone, keyring=self.key.tsig)

    async def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        host, port = self.config.primary
        reply = await dns.asyncquery.tcp(update, host, port=port,
                                         timeout=self.config.dns_timeout * 3)
        if reply.rcode() != dns.rcode.NOERROR:
            raise UpdateRefused(reply.rcode(), what)

    async def _publish(self, zone: dns.name.Name,
                       records: dict[dns.name.Name, list[str]]) -> None:
        update = self._update(zone)
        for name, values in records.items():
            update.delete(name, dns.rdatatype.TXT)  # a leftover of an interrupted attempt
            update.add(name, self.config.challenge_ttl, *[_txt(v) for v in values])
        await self._send(update, "the challenge update")
        log.info("published %s", ", ".join(f"{n} TXT" for n in records))

    async def _unpublish(self, published: dict[dns.name.Name, dict[dns.name.Name, list[str]]]
                         ) -> None:
        for zone, records in published.items():
            update = self._update(zone)
            for name in records:
                update.delete(name, dns.rdatatype.TXT)
            try:
                await self._send(update, "the challenge removal")
                log.info("removed %s", ", ".join(f"{n} TXT" for n in records))
            except Exception as e:
                log.error("could not remove %s: %s (the next attempt replaces it)",
                          ", ".join(f"{n} TXT" for n in records), _describe(e))

    async def _wait_served(self, groups: dict[dns.name.Name, dict[dns.name.Name, list[str]]]
                           ) -> None:
        """Return once every name server of each zone (or every --ns-check server) answers
        each challenge TXT with our values: a CA asking a lagging secondary fails the order."""
        checks = []
        for zone, records in groups.items():
            servers = self.config.ns_check or await self._name_servers(zone)
            if not servers:
                raise NotServed(f"no address for any name server of {zone}")
            for server in servers:
                for name, values in records.items():
                    checks.append(self._served(server, name, set(values)))
        results = await asyncio.gather(*checks)
        lagging = [r for r in results if r]
        if lagging:
            raise NotServed("not served in time: " + "; ".join(lagging))
        log.info("every name server serves the challenge (%d checks); answering it", len(checks))

    async def _served(self, server: tuple[str, int], name: dns.name.Name,
                      values: set[str]) -> str:
        """Poll one server for one TXT; "" once it serves `values`, else what it last said."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.propagation_timeout
        last = "no answer"
        delay = 0.2
        while True:
            query = dns.message.make_query(name, dns.rdatatype.TXT)
            query.flags &= ~dns.flags.RD
            try:
                reply = await dns.asyncquery.udp(query, server[0], port=server[1], timeout=2.0)
                if reply.flags & dns.flags.TC:
                    reply = await dns.asyncquery.tcp(query, server[0], port=server[1],
                                                     timeout=2.0)
                found = {b"".join(rd.strings).decode(errors="replace")
                         for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT
                         for rd in rrset}
                if values <= found:
                    log.debug("%s serves %s TXT", _where(*server), name)
                    return ""
                last = dns.rcode.to_text(reply.rcode()) + (" with other values" if found else "")
            except (OSError, dns.exception.DNSException) as e:
                last = _why(e)
            if loop.time() + delay > deadline:
                return f"{_where(*server)} {name} TXT ({last})"
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    async def _name_servers(self, zone: dns.name.Name) -> list[tuple[str, int]]:
        """Addresses of the zone's NS hosts, on port 53: from our copies when we have them
        (glue, in-zone hosts), else from the system resolver."""
        copy = self.zones.get(zone)
        ns = copy.get_rdataset(zone, dns.rdatatype.NS) if copy is not None else None
        loop = asyncio.get_running_loop()
        out: list[tuple[str, int]] = []
        for rd in ns or ():
            target = rd.target.derelativize(zone)
            found = []
            holder = certdns.zone_of(target, self.zones)
            if holder is not None:
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    rds = self.zones[holder].get_rdataset(target, rdtype)
                    found += [r.address for r in rds or ()]
            if not found:
                try:
                    infos = await loop.getaddrinfo(target.to_text(), 53, type=socket.SOCK_DGRAM)
                    found = list(dict.fromkeys(i[4][0] for i in infos))
                except OSError as e:
                    log.warning("cannot resolve the name server %s of %s: %s", target, zone, e)
            out += [(a, 53) for a in found]
        return list(dict.fromkeys(out))

    async def _store(self, host: dns.name.Name, csr: Csr, leaf: certdns.Cert,
                     chain: list[bytes],
                     published: dict[dns.name.Name, dict[dns.name.Name, list[str]]]) -> None:
        """One UPDATE: leaf as 3 0 0, chain as 2 0 0 (old ones removed), the challenge TXT in
        that zone removed, all on condition that the TLSA RRset is still the one we read."""
        name = certdns.tlsa_name(host)
        zone = certdns.zone_of(name, self.zones)
        if zone is None:
            raise ValueError(f"{name} is in no zone we transfer")
        for attempt in range(3):
            current, ttl = await self._tlsa_at_primary(name)
            if csr.der not in certdns.of_kind(current, CSR):
                raise Superseded("the CSR was replaced while we worked; certificate not stored")
            update = self._update(zone)
            update.present(name, *current)
            for rd in current:
                if certdns.kind_of(rd) in (LEAF, CHAIN):
                    update.delete(name, rd)
            update.add(name, ttl, certdns.tlsa(LEAF, leaf.der),
                       *[certdns.tlsa(CHAIN, der) for der in chain])
            for txt in published.get(zone, {}):
                update.delete(txt, dns.rdatatype.TXT)
            try:
                await self._send(update, "the certificate update")
                break
            except UpdateRefused as e:
                if e.rcode != dns.rcode.NXRRSET or attempt == 2:
                    raise
                log.info("%s changed while we stored the certificate; reading it again", name)
        self.request_refresh(zone)
        rest = {z: r for z, r in published.items() if z != zone}
        if rest:
            await self._unpublish(rest)

    async def _tlsa_at_primary(self, name: dns.name.Name) -> tuple[list[dns.rdata.Rdata], int]:
        host, port = self.config.primary
        query = dns.message.make_query(name, dns.rdatatype.TLSA)
        query.flags &= ~dns.flags.RD
        reply = await dns.asyncquery.tcp(query, host, port=port, timeout=self.config.dns_timeout)
        for rrset in reply.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA:
                return list(rrset), rrset.ttl
        return [], 3600


# -- small helpers ---------------------------------------------------------------------------------


def _write(writer: asyncio.StreamWriter, wire: bytes) -> None:
    writer.write(len(wire).to_bytes(2, "big") + wire)


def _txt(value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')


def _soa_serial(rrsets, origin: dns.name.Name) -> int | None:
    for rrset in rrsets:
        if rrset.rdtype == dns.rdatatype.SOA and rrset.name == origin and len(rrset):
            return rrset[0].serial
    return None


def _zone_serial(zone: dns.zone.Zone) -> int | None:
    try:
        return zone.get_soa().serial
    except (KeyError, dns.exception.DNSException):
        return None


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _describe(exc: BaseException) -> str:
    """The cause of a failed job: the CA's error, the primary's answer, or the network."""
    if isinstance(exc, UpdateRefused | NotServed | Superseded | AcmeFailure):
        return str(exc)
    if isinstance(exc, dns.tsig.PeerError):
        return f"the primary rejected our signature ({type(exc).__name__})"
    if isinstance(exc, OSError | dns.exception.DNSException | EOFError | TimeoutError):
        return f"talking to the primary: {_why(exc)}"
    return f"{type(exc).__name__}: {exc}"


# -- the command -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    import sys

    from gitdns.acmeclient import (
        LETSENCRYPT_PRODUCTION,
        LETSENCRYPT_STAGING,
        AcmeAccount,
        load_or_create_account_key,
    )
    from gitdns.cli import _default_data_dir, _host_port, _run
    from gitdns.keys import KeyError_, read_key_option

    def fail(message: str) -> int:
        print(f"gitdns letsencrypt: {message}", file=sys.stderr)
        return 2

    try:
        key = read_key_option(args.key)
    except KeyError_ as e:
        return fail(str(e))
    if key.operation != "update":
        return fail(f"the key {key.name} is not an _update key: the service must update the "
                    "zones (challenges, certificates) and transfer them")
    try:
        primary = _host_port(args.primary, 53)
        ns_check = [_host_port(a, 53) for a in args.ns_check or []]
    except ValueError as e:
        return fail(f"bad address: {e}")
    if args.renew_before < 0 or args.retry_min <= 0 or args.retry_max < args.retry_min:
        return fail("--renew-before must be >= 0 and 0 < --retry-min <= --retry-max")
    directory = args.directory or (LETSENCRYPT_PRODUCTION if args.production
                                   else LETSENCRYPT_STAGING)
    data_dir = Path(args.data_dir or _default_data_dir() / "letsencrypt").absolute()
    try:
        account_key = load_or_create_account_key(data_dir)
    except (OSError, ValueError) as e:
        print(f"gitdns letsencrypt: account key in {data_dir}: {e}", file=sys.stderr)
        return 1
    config = ServiceConfig(
        key=key, primary=primary, directory=directory, data_dir=data_dir,
        ca_bundle=args.ca_bundle, email=args.email, ns_check=ns_check,
        renew_before=datetime.timedelta(days=args.renew_before),
        retry_first=args.retry_min, retry_max=args.retry_max,
        propagation_timeout=args.propagation_timeout,
    )
    acme = AcmeAccount(directory, account_key, email=args.email, ca_bundle=args.ca_bundle)

    async def go() -> None:
        await LetsEncrypt(config, acme).run()

    _run(go())
    return 0
