"""Certificates kept in DNS (the seeds' dns-certify): TLSA encodings, CSRs, and what needs one.

Rules this module keeps:
- `_letsencrypt._tcp.HOST` holds TLSA 3 255 0 (a DER CSR), 3 0 0 (the leaf, DER) and 2 0 0 (the
  chain, DER). A certificate serves a CSR when it has the CSR's public key, names every name of
  the CSR, and is valid for long enough; nothing else about it is trusted.
- No sockets and no clock: the time is passed in (`now`, an aware UTC datetime), so the service's
  and the client's decisions are plain functions the unit tests drive.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

LABELS = (b"_letsencrypt", b"_tcp")
CSR = (3, 255, 0)  # usage 3 (domain-issued), selector 255 (private use: a CSR), full data
LEAF = (3, 0, 0)  # usage 3, full certificate, no hash
CHAIN = (2, 0, 0)  # usage 2 (trust anchor / CA), full certificate, no hash
#: The client reuses a certificate only if it stays valid this long (the issue: "at least a day").
REUSE_MIN_VALIDITY = datetime.timedelta(days=1)
#: The service renews this long before expiry (PRODUCT.md: 14 days).
RENEW_BEFORE = datetime.timedelta(days=14)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class BadCsr(ValueError):
    """A CSR that cannot be used; the message says why (for the log)."""


# -- names -------------------------------------------------------------------------------------


def tlsa_name(host: dns.name.Name | str) -> dns.name.Name:
    """`www.example.test` -> `_letsencrypt._tcp.www.example.test.`"""
    if isinstance(host, str):
        host = dns.name.from_text(host)
    return dns.name.Name(LABELS + host.labels)


def host_of(name: dns.name.Name) -> dns.name.Name | None:
    """The host a `_letsencrypt._tcp.HOST` name is for; None for any other name."""
    labels = name.labels
    rest = labels[2:]
    if any(rest) and tuple(label.lower() for label in labels[:2]) == LABELS:
        return dns.name.Name(rest)
    return None  # another name, or one for the root (no host to certify)


def normalize(name: str) -> str:
    """The form names are compared in: lower case, no final dot (as certificates spell them)."""
    return name.strip().rstrip(".").lower()


def zone_of(name: str | dns.name.Name, zones: Iterable[dns.name.Name]) -> dns.name.Name | None:
    """The deepest of `zones` that contains `name` (a wildcard `*.x` counts as in x's zone)."""
    if isinstance(name, str):
        name = dns.name.from_text(normalize(name))
    best = None
    for zone in zones:
        if name.is_subdomain(zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def uncovered(names: Iterable[str], zones: Iterable[dns.name.Name],
              may_update: Callable[[dns.name.Name], bool]) -> list[str]:
    """Why each of `names` cannot be validated with our key (empty: all can).

    A name is covered when a zone we transfer contains its `_acme-challenge` name and our key
    may update that zone: otherwise the DNS-01 record could not be published, and asking the CA
    would only burn its rate limit (and the CSR's owner may not be entitled to the name)."""
    zones = list(zones)
    problems = []
    for name in names:
        challenge = challenge_name(name)
        zone = zone_of(challenge, zones)
        if zone is None:
            problems.append(f"{name} is in no zone that this key may transfer")
        elif not may_update(zone):
            problems.append(f"{name} is in the zone {zone}, which this key may not update")
    return problems


def challenge_name(name: str) -> dns.name.Name:
    """Where the DNS-01 TXT for `name` goes (RFC 8555 8.4; a wildcard's goes at its base)."""
    text = normalize(name)
    if text.startswith("*."):
        text = text[2:]
    return dns.name.from_text("_acme-challenge." + text)


# -- TLSA records ------------------------------------------------------------------------------


def tlsa(kind: tuple[int, int, int], der: bytes) -> dns.rdtypes.ANY.TLSA.TLSA:
    """A TLSA rdata of `kind` (CSR, LEAF or CHAIN) carrying `der`."""
    usage, selector, mtype = kind
    return dns.rdtypes.ANY.TLSA.TLSA(dns.rdataclass.IN, dns.rdatatype.TLSA, usage, selector,
                                     mtype, der)


def kind_of(rd: dns.rdata.Rdata) -> tuple[int, int, int]:
    return (rd.usage, rd.selector, rd.mtype)  # type: ignore[attr-defined]


def of_kind(rdatas: Iterable[dns.rdata.Rdata], kind: tuple[int, int, int]) -> list[bytes]:
    """The data of every TLSA record of `kind`, in a stable order (sorted)."""
    return sorted(rd.cert for rd in rdatas if kind_of(rd) == kind)  # type: ignore[attr-defined]


def fingerprint(der: bytes) -> str:
    """A short name for a CSR or certificate in logs and in the service's memory."""
    return hashlib.sha256(der).hexdigest()[:16]


# -- CSRs and certificates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Csr:
    der: bytes
    names: tuple[str, ...]  # normalized; the subject CN first when there is one
    public_key: bytes  # SubjectPublicKeyInfo, DER

    @property
    def pem(self) -> bytes:
        body = x509.load_der_x509_csr(self.der).public_bytes(serialization.Encoding.PEM)
        return body


@dataclass(frozen=True)
class Cert:
    der: bytes
    names: tuple[str, ...]
    public_key: bytes
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    subject: bytes  # DER of the subject and issuer names, to link a chain
    issuer: bytes

    @property
    def lifetime(self) -> datetime.timedelta:
        return self.not_after - self.not_before

    def valid_for(self, now: datetime.datetime) -> datetime.timedelta:
        """How much longer it is valid (negative once expired, zero before it starts)."""
        if now < self.not_before:
            return datetime.timedelta(0)
        return self.not_after - now


def _names(subject: x509.Name, extensions: x509.Extensions) -> list[str]:
    names: list[str] = []
    for attr in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode()
        names.append(normalize(value))
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        if san.get_values_for_type(x509.IPAddress):
            raise BadCsr("it names IP addresses; only DNS names can be validated by DNS-01")
        names += [normalize(n) for n in san.get_values_for_type(x509.DNSName)]
    return list(dict.fromkeys(n for n in names if n))


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def parse_csr(der: bytes) -> Csr:
    """A CSR from DNS, checked as far as we can without the CA: it parses, its signature holds
    (whoever made it has the key), it names DNS names and only DNS names."""
    try:
        req = x509.load_der_x509_csr(der)
    except Exception as e:  # cryptography raises ValueError, but be sure nothing escapes
        raise BadCsr(f"not a DER certificate signing request ({e})") from None
    try:
        if not req.is_signature_valid:
            raise BadCsr("its signature does not verify")
        names = _names(req.subject, req.extensions)
        public_key = _spki(req.public_key())
    except BadCsr:
        raise
    except Exception as e:
        raise BadCsr(f"unusable content ({e})") from None
    if not names:
        raise BadCsr("it names no host")
    for name in names:
        try:
            dns.name.from_text(name)
        except Exception:
            raise BadCsr(f"{name!r} is not a DNS name") from None
    return Csr(der, tuple(names), public_key)


def parse_cert(der: bytes) -> Cert:
    """A certificate's facts that matter here. Raises ValueError on anything unparsable."""
    cert = x509.load_der_x509_certificate(der)
    try:
        names = tuple(_names(cert.subject, cert.extensions))
    except BadCsr:
        names = ()
    return Cert(
        der=der,
        names=names,
        public_key=_spki(cert.public_key()),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        subject=cert.subject.public_bytes(),
        issuer=cert.issuer.public_bytes(),
    )


def _parsed(ders: Iterable[bytes]) -> Iterator[Cert]:
    for der in ders:
        try:
            yield parse_cert(der)
        except Exception:  # a broken record must not hide a good one beside it
            continue


def matching_certificate(leaves: Iterable[bytes], public_key: bytes, names: Iterable[str],
                         now: datetime.datetime, min_validity: datetime.timedelta
                         ) -> Cert | None:
    """The certificate among `leaves` for `public_key` that names every one of `names` and is
    valid now and for at least `min_validity`; the longest-lived one if several."""
    wanted = {normalize(n) for n in names}
    best = None
    for cert in _parsed(leaves):
        if cert.public_key != public_key or not wanted <= set(cert.names):
            continue
        if cert.not_before > now or cert.not_after - now < min_validity:
            continue
        if best is None or cert.not_after > best.not_after:
            best = cert
    return best


def order_chain(leaf: Cert, chain: Iterable[bytes]) -> list[bytes]:
    """The chain certificates in issuing order from `leaf` upwards (an RRset has no order).
    Certificates that do not link are left out; if none links, all are kept as given."""
    certs = list(_parsed(chain))
    ordered: list[bytes] = []
    current = leaf
    while True:
        parent = next((c for c in certs if c.subject == current.issuer and c.der not in ordered),
                      None)
        if parent is None or parent.der == current.der:
            break
        ordered.append(parent.der)
        if parent.subject == parent.issuer:
            break
        current = parent
    return ordered or [c.der for c in certs]


def split_pem_chain(pem: str | bytes) -> list[bytes]:
    """A PEM bundle (the CA's full chain: leaf first) as DER certificates, in order."""
    data = pem.encode() if isinstance(pem, str) else pem
    return [c.public_bytes(serialization.Encoding.DER)
            for c in x509.load_pem_x509_certificates(data)]


def pem_chain(ders: Iterable[bytes]) -> bytes:
    """DER certificates as one PEM bundle."""
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM)
                    for d in ders)


# -- keys and CSRs of the client ---------------------------------------------------------------


def generate_key(kind: str = "ecdsa", bits: int = 2048) -> PrivateKey:
    """A fresh private key: ECDSA P-256 (the default, as ocertify), or RSA of `bits` bits."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        if bits < 2048:
            raise ValueError("RSA keys shorter than 2048 bits are refused by CAs")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise ValueError(f"unknown key type {kind!r}; use ecdsa or rsa")


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError("only ECDSA and RSA keys can be certified")
    return key


def public_key_der(key: PrivateKey) -> bytes:
    return _spki(key.public_key())


def make_csr(key: PrivateKey, host: str, additional: Iterable[str] = ()) -> bytes:
    """A DER CSR for `host` (the subject CN and the first SAN) and the `additional` names."""
    names = list(dict.fromkeys(normalize(n) for n in [host, *additional]))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    ).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# -- what the service does about one name ------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one `_letsencrypt._tcp` name needs.

    action: "ok" (a valid certificate is there; `due` says when to renew), "issue" (no
    certificate for the CSR), "renew" (it expires within the renewal window), "refuse" (a CSR we
    must not act on: `reason` says why), "none" (no CSR, only certificates)."""

    host: dns.name.Name
    action: str
    reason: str
    csr: Csr | None = None
    due: datetime.datetime | None = None
    current: Cert | None = None


def decide(host: dns.name.Name, rdatas: Iterable[dns.rdata.Rdata], now: datetime.datetime,
           renew_before: datetime.timedelta = RENEW_BEFORE) -> Decision:
    """The service's view of the TLSA RRset at `_letsencrypt._tcp.HOST`."""
    rdatas = list(rdatas)
    csrs = of_kind(rdatas, CSR)
    if not csrs:
        return Decision(host, "none", "no CSR")
    if len(csrs) > 1:
        return Decision(host, "refuse", f"{len(csrs)} CSRs (TLSA 3 255 0); exactly one is served")
    try:
        csr = parse_csr(csrs[0])
    except BadCsr as e:
        return Decision(host, "refuse", f"malformed CSR: {e}")
    hostname = normalize(host.to_text())
    if hostname not in csr.names:
        return Decision(host, "refuse", f"the CSR names {', '.join(csr.names)}, not {hostname}",
                        csr)
    leaves = of_kind(rdatas, LEAF)
    good = matching_certificate(leaves, csr.public_key, csr.names, now, renew_before)
    if good is not None:
        return Decision(host, "ok", f"certificate valid until {good.not_after:%Y-%m-%d %H:%M}Z",
                        csr, good.not_after - renew_before, good)
    expiring = matching_certificate(leaves, csr.public_key, csr.names, now,
                                    datetime.timedelta(0))
    if expiring is not None:
        return Decision(host, "renew",
                        f"the certificate expires {expiring.not_after:%Y-%m-%d %H:%M}Z, within "
                        f"{_days(renew_before)} days", csr, now, expiring)
    reason = "no certificate" if not leaves else "no valid certificate for the CSR's key and names"
    return Decision(host, "issue", reason, csr, now)


def _days(delta: datetime.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g}"


def retry_delay(failures: int, first: float, limit: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: doubling from `first`, capped."""
    return min(limit, first * 2 ** max(0, failures - 1))
