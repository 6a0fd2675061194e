"""Transfers out at the edge: AXFR/IXFR rendered in a worker thread, logged; the same for the
primary and the secondary (chaining).

Rules this module keeps:
- Rendering (transfer.py) runs in a worker thread: a big zone never stops the answering.
- IXFR differences come from the history in memory, then from `older` (the primary's git
  history) when given; without a chain, a full transfer in IXFR form.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import dns.rcode
import dns.rdatatype

from gitdns import core, memory, transfer
from gitdns.diff import ZoneDiff
from gitdns.history import ZoneHistory
from gitdns.zone import Zone

log = logging.getLogger("gitdns.transfer")

#: Transfers of more messages than this (of up to 64 KB each) are followed by a trim.
BIG_TRANSFER = 64

OlderDiffs = Callable[[Zone, int], "list[ZoneDiff] | None"]


async def serve_transfer(job: core.Deferred, history: ZoneHistory,
                         older: OlderDiffs | None = None) -> list[bytes] | bytes:
    """The messages answering the AXFR or IXFR in `job` (a FORMERR for a malformed IXFR)."""
    zone = job.zone
    assert zone is not None
    peer = job.request.peer[0] if job.request.peer else "?"
    keyname = job.key.name if job.key else "no key"
    started = time.monotonic()
    if job.query.question[0].rdtype == dns.rdatatype.AXFR:
        messages = await asyncio.to_thread(
            lambda: list(transfer.axfr_messages(zone, job.query, now=time.time())))
        kind = "AXFR"
    else:
        try:
            serial = transfer.client_serial(job.query)
        except ValueError as e:
            log.info("IXFR for %s from %s: %s", zone.origin, peer, e)
            return core.reply(job.query, dns.rcode.FORMERR, job.request, aa=False)
        diffs = history.diffs_since(zone.origin, serial, zone.serial)
        if diffs is None and serial != zone.serial and older is not None:
            diffs = await asyncio.to_thread(older, zone, serial)
        messages = await asyncio.to_thread(lambda: list(transfer.ixfr_messages(
            zone, diffs, job.query, tcp=job.request.tcp,
            udp_size=core.reply_size(job.query, job.request), now=time.time())))
        kind = f"IXFR from {serial} ({'incremental' if diffs else 'full or current'})"
    if len(messages) > BIG_TRANSFER:
        memory.trim_soon()  # the messages' pages back to the system once they are written
    log.info("%s of %s serial %d to %s (%s): %d messages, %.0f ms", kind, zone.origin,
             zone.serial, peer, keyname, len(messages), (time.monotonic() - started) * 1000)
    return messages
