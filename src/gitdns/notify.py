"""NOTIFY out (RFC 1996): who is told of a zone change, and the message that tells them.

Rules this module keeps:
- Targets are the zone's NS hosts (addresses from the zone file: glue, in-zone hosts, or address
  records of out-of-zone hosts) except the SOA MNAME host, the secondary address of every
  `_transfer` key covering the zone (signed with that key), and every --also-notify address.
- A target is one (address, port); when several sources name it, the signed one wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gitdns.keys import Key, KeyStore
from gitdns.zone import Zone

NOTIFY_MODES = ("yes", "explicit", "no")


@dataclass(frozen=True)
class NotifyTarget:
    host: str
    port: int = 53
    key: Key | None = None
    why: str = ""

    def __str__(self) -> str:
        addr = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"{addr} ({self.why}{', signed with ' + str(self.key.name) if self.key else ''})"


def notify_targets(
    zone: Zone,
    keys: KeyStore,
    also_notify: list[tuple[str, int]] = (),  # type: ignore[assignment]
    mode: str = "yes",
) -> list[NotifyTarget]:
    """Everyone to tell that `zone` changed, by `mode` as BIND's `notify` option: "yes" (NS hosts,
    key secondaries, also-notify), "explicit" (also-notify only), "no" (nobody)."""
    if mode == "no":
        return []
    found: dict[tuple[str, int], NotifyTarget] = {}

    def add(target: NotifyTarget) -> None:
        old = found.get((target.host, target.port))
        if old is None or (old.key is None and target.key is not None):
            found[(target.host, target.port)] = target

    if mode == "yes":
        mname = zone.soa[0].mname
        ns = zone.get(zone.origin, dns.rdatatype.NS)
        for rd in ns or ():
            if rd.target == mname:
                continue
            for address in zone.addresses_of(rd.target):
                add(NotifyTarget(address, 53, None, f"NS {rd.target}"))
        for key in keys.covering(zone.origin, "transfer"):
            if key.secondary:
                add(NotifyTarget(key.secondary, 53, key, "secondary of its key"))
    for host, port in also_notify:
        add(NotifyTarget(host, port, None, "also-notify"))
    return list(found.values())


def notify_message(
    origin: dns.name.Name, soa: dns.rrset.RRset | None, key: Key | None
) -> dns.message.Message:
    """A NOTIFY for `origin` carrying its current SOA (RFC 1996 3.7), signed with `key`."""
    message = dns.message.make_query(origin, dns.rdatatype.SOA)
    message.flags = dns.flags.AA  # the whole flags word: the opcode is set after it
    message.set_opcode(dns.opcode.NOTIFY)
    if soa is not None:
        message.answer.append(soa)
    if key is not None:
        message.use_tsig(key.tsig)
    return message
