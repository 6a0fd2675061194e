"""`gitdns certify HOSTNAME`: get a certificate through DNS (the seeds' ocertify) into files.

Rules this module keeps:
- The private key never leaves this machine: it is made (or read) here and written (0600) before
  anything is sent; only its CSR goes into DNS, as TLSA 3 255 0 at `_letsencrypt._tcp.HOSTNAME`.
- A certificate in DNS for the same key and names, valid for at least a day, is used without
  asking again (unless --force); otherwise one signed UPDATE replaces the TLSA records there with
  the CSR, and DNS is polled with backoff until the certificate appears or the timeout passes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.tsig
import dns.update

from gitdns import certdns
from gitdns.certdns import CSR, LEAF

#: TTL of the CSR record: certificates change rarely, and the client asks the primary directly.
CSR_TTL = 3600
QUERY_TIMEOUT = 5.0


class CertifyError(Exception):
    """Something that ends the command with status 1; the message is for the user."""


@dataclass
class Request:
    host: str
    server: tuple[str, int]
    key: object  # gitdns.keys.Key
    additional: list[str]
    key_file: Path
    cert_file: Path
    timeout: float = 300.0
    force: bool = False
    key_type: str = "ecdsa"
    bits: int = 2048


def query_tlsa(server: tuple[str, int], name: dns.name.Name) -> list[dns.rdata.Rdata]:
    """The TLSA records at `name` as `server` serves them (over TCP: a CSR with a certificate
    and its chain does not fit a UDP answer)."""
    query = dns.message.make_query(name, dns.rdatatype.TLSA)
    query.flags &= ~dns.flags.RD
    reply = dns.query.tcp(query, server[0], port=server[1], timeout=QUERY_TIMEOUT)
    rcode = reply.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise CertifyError(f"{_where(server)} answered {dns.rcode.to_text(rcode)} for {name} "
                           "TLSA; does it serve that zone?")
    return [rd for rrset in reply.answer
            if rrset.name == name and rrset.rdtype == dns.rdatatype.TLSA for rd in rrset]


def zone_of(server: tuple[str, int], name: dns.name.Name) -> dns.name.Name:
    """The zone `server` holds `name` in, from the SOA of its answer to `name` SOA."""
    query = dns.message.make_query(name, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    reply = dns.query.tcp(query, server[0], port=server[1], timeout=QUERY_TIMEOUT)
    for rrset in (*reply.answer, *reply.authority):
        if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
            return rrset.name
    raise CertifyError(f"{_where(server)} does not serve a zone holding {name} "
                       f"({dns.rcode.to_text(reply.rcode())})")


def waiting_csr(rdatas: list[dns.rdata.Rdata], public_key: bytes, names: list[str]) -> bool:
    """Is a CSR for this key and exactly these names already in DNS? Then we only wait."""
    wanted = {certdns.normalize(n) for n in names}
    for der in certdns.of_kind(rdatas, CSR):
        try:
            csr = certdns.parse_csr(der)
        except certdns.BadCsr:
            continue
        if csr.public_key == public_key and set(csr.names) == wanted:
            return True
    return False


def publish_csr(server: tuple[str, int], key, name: dns.name.Name, csr_der: bytes,
                timeout: float) -> dns.name.Name:
    """Replace every TLSA record at `name` by the CSR, in one signed UPDATE."""
    zone = zone_of(server, name)
    update = dns.update.UpdateMessage(zone, keyring=key.tsig)
    update.delete(name, dns.rdatatype.TLSA)
    update.add(name, CSR_TTL, certdns.tlsa(CSR, csr_der))
    try:
        reply = dns.query.tcp(update, server[0], port=server[1], timeout=timeout)
    except dns.tsig.PeerError as e:
        raise CertifyError(f"{_where(server)} refused the signature of key {key.name}: "
                           f"{type(e).__name__}") from None
    if reply.rcode() != dns.rcode.NOERROR:
        raise CertifyError(f"{_where(server)} answered {dns.rcode.to_text(reply.rcode())} to "
                           f"the update of {name} with key {key.name}; nothing changed")
    return zone


def load_or_make_key(req: Request, say: Callable[[str], None]) -> certdns.PrivateKey:
    """The key in --key-file, or a new one written there first (0600, never overwritten)."""
    path = req.key_file
    if path.exists():
        try:
            key = certdns.load_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as e:
            raise CertifyError(f"cannot use the key in {path}: {e}") from None
        say(f"using the private key in {path}")
        return key
    key = certdns.generate_key(req.key_type, req.bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(certdns.key_pem(key))
    what = "ECDSA P-256" if req.key_type == "ecdsa" else f"RSA {req.bits}"
    say(f"new {what} private key written to {path}")
    return key


def write_chain(path: Path, leaf: certdns.Cert, rdatas: list[dns.rdata.Rdata]) -> int:
    """The certificate and its chain (PEM, leaf first) to `path`, replaced atomically."""
    chain = certdns.order_chain(leaf, certdns.of_kind(rdatas, certdns.CHAIN))
    data = certdns.pem_chain([leaf.der, *chain])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return len(chain)


def certify(req: Request, say: Callable[[str], None] = print,
            clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
            ) -> str:
    """Do it; returns "reused" or "issued". Raises CertifyError (and network errors)."""
    names = list(dict.fromkeys(certdns.normalize(n) for n in [req.host, *req.additional]))
    name = certdns.tlsa_name(names[0])
    key = load_or_make_key(req, say)
    public_key = certdns.public_key_der(key)
    rdatas = query_tlsa(req.server, name)
    if not req.force:
        cert = certdns.matching_certificate(certdns.of_kind(rdatas, LEAF), public_key, names,
                                            clock(), certdns.REUSE_MIN_VALIDITY)
        if cert is not None:
            chain = write_chain(req.cert_file, cert, rdatas)
            say(f"certificate for {', '.join(names)} reused from DNS (serial {cert.serial:x}, "
                f"valid until {cert.not_after:%Y-%m-%d %H:%M}Z); written with {chain} chain "
                f"certificate(s) to {req.cert_file}")
            return "reused"
    started = time.monotonic()
    if not req.force and waiting_csr(rdatas, public_key, names):
        say(f"a CSR for this key and these names is already at {name}; waiting for the "
            "certificate")
    else:
        csr = certdns.make_csr(key, names[0], names[1:])
        zone = publish_csr(req.server, req.key, name, csr, max(QUERY_TIMEOUT, req.timeout))
        say(f"CSR for {', '.join(names)} published at {name} (zone {zone}); waiting up to "
            f"{req.timeout:g} s for the certificate")
    deadline = started + req.timeout
    delay = 0.5
    while True:
        try:
            rdatas = query_tlsa(req.server, name)
        except (dns.exception.DNSException, OSError) as e:
            say(f"asking {_where(req.server)} failed ({e}); trying again")
            rdatas = []
        cert = certdns.matching_certificate(certdns.of_kind(rdatas, LEAF), public_key, names,
                                            clock(), certdns.REUSE_MIN_VALIDITY)
        if cert is not None:
            chain = write_chain(req.cert_file, cert, rdatas)
            say(f"certificate for {', '.join(names)} issued (serial {cert.serial:x}, valid "
                f"until {cert.not_after:%Y-%m-%d %H:%M}Z) after {time.monotonic() - started:.1f}"
                f" s; written with {chain} chain certificate(s) to {req.cert_file}")
            return "issued"
        left = deadline - time.monotonic()
        if left <= 0:
            raise CertifyError(
                f"no certificate at {name} after {req.timeout:g} s; the CSR stays in DNS (is "
                "gitdns letsencrypt running with a key for this zone? its log says why); run "
                "again to keep waiting")
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, 10.0)


def _where(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the command -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from gitdns.cli import _host_port
    from gitdns.keys import KeyError_, read_key_option

    try:
        key = read_key_option(args.key)
        server = _host_port(args.server, 53)
        host = certdns.normalize(args.hostname)
        for n in [host, *args.additional]:
            dns.name.from_text(certdns.normalize(n))
        if args.key_type == "rsa" and args.bits < 2048:
            raise ValueError("--bits must be at least 2048")
    except (KeyError_, ValueError, dns.exception.DNSException) as e:
        print(f"gitdns certify: {e}", file=sys.stderr)
        return 2
    req = Request(
        host=host, server=server, key=key, additional=list(args.additional),
        key_file=Path(args.key_file or f"{host}.key"),
        cert_file=Path(args.cert_file or f"{host}.pem"),
        timeout=args.timeout, force=args.force, key_type=args.key_type, bits=args.bits,
    )
    try:
        certify(req)
    except CertifyError as e:
        print(f"gitdns certify: {e}", file=sys.stderr)
        return 1
    except (dns.exception.DNSException, OSError) as e:
        print(f"gitdns certify: {_where(server)}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0
