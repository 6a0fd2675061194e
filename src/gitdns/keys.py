"""TSIG keys: secrets from `_keys` files, the key-name grammar, and who may do what.

Rules this module keeps (PRODUCT.md, as dns-primary-git has them):
- A secret is `NAME DNSKEY 0 3 ALG BASE64`, ALG 161 hmac-sha1 .. 165 hmac-sha512.
- A key's rights come from its name alone: the right-most `_update`/`_transfer`/`_notify` label
  is the operation, the labels right of it the zone; rights nest and cover every zone below.
- Keys in `ZONE._keys` must lie inside ZONE; the root `_keys` accepts any name.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.tsig

# DNSKEY algorithm number -> TSIG algorithm, as dns-primary-git (ocaml-dns) numbers them.
ALGORITHM_NUMBERS: dict[int, dns.name.Name] = {
    161: dns.tsig.HMAC_SHA1,
    162: dns.tsig.HMAC_SHA224,
    163: dns.tsig.HMAC_SHA256,
    164: dns.tsig.HMAC_SHA384,
    165: dns.tsig.HMAC_SHA512,
}
SECRET_BYTES = {161: 20, 162: 28, 163: 32, 164: 48, 165: 64}
NUMBER_BY_NAME = {alg.to_text().rstrip("."): num for num, alg in ALGORITHM_NUMBERS.items()}


def algorithm_number(name: str) -> int:
    """`hmac-sha256` (or `sha256`) -> 163."""
    key = name.lower().rstrip(".")
    if not key.startswith("hmac-"):
        key = "hmac-" + key
    try:
        return NUMBER_BY_NAME[key]
    except KeyError:
        known = ", ".join(sorted(NUMBER_BY_NAME))
        raise ValueError(f"unknown TSIG algorithm {name!r}; use one of {known}") from None


def generate_secret(number: int = 163) -> str:
    """A fresh base64 secret for the algorithm `number`."""
    return base64.b64encode(secrets.token_bytes(SECRET_BYTES[number])).decode()


def dnskey_line(keyname: str, secret: str, number: int = 163) -> str:
    """The line that stores `secret` in a `_keys` file."""
    name = keyname if keyname.endswith(".") else keyname + "."
    return f"{name} DNSKEY 0 3 {number} {secret}"


# -- the key store -----------------------------------------------------------------------------

OPERATIONS = ("notify", "transfer", "update")  # each right includes those before it
_OPERATION_LABELS = {f"_{op}".encode(): op for op in OPERATIONS}
_RANK = {op: i for i, op in enumerate(OPERATIONS)}


class KeyError_(ValueError):
    """A key string or key record that cannot be used; the message says why."""


@dataclass(frozen=True)
class Key:
    """A TSIG key and what its name grants (PRODUCT.md: `NAME._OPERATION.ZONE`)."""

    name: dns.name.Name
    algorithm: dns.name.Name
    secret: bytes
    operation: str | None  # None: the name holds no operation label and grants nothing
    zone: dns.name.Name | None
    primary: str | None = None  # address labels in a _transfer key name
    secondary: str | None = None

    @property
    def tsig(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, self.algorithm)

    def allows(self, operation: str, zone: dns.name.Name) -> bool:
        """May this key do `operation` on `zone`? Rights nest; a key covers its zone and below."""
        if self.operation is None or self.zone is None:
            return False
        return _RANK[self.operation] >= _RANK[operation] and zone.is_subdomain(self.zone)


def make_key(name: dns.name.Name, algorithm: dns.name.Name, secret: bytes) -> Key:
    """A Key with the rights and addresses its name encodes."""
    operation, zone, left = parse_key_name(name)
    primary = secondary = None
    if operation == "transfer":
        primary, secondary = _addresses(left)
    return Key(name, algorithm, secret, operation, zone, primary, secondary)


def parse_key_name(
    name: dns.name.Name,
) -> tuple[str | None, dns.name.Name | None, tuple[bytes, ...]]:
    """(operation, zone, labels left of the operation) of a key name.

    The right-most `_update`, `_transfer` or `_notify` label is the operation; everything right
    of it is the zone (`personal._update.mirage.` -> update, `mirage.`).
    """
    labels = name.labels
    for i in range(len(labels) - 1, -1, -1):
        op = _OPERATION_LABELS.get(labels[i].lower())
        if op is not None:
            return op, dns.name.Name(labels[i + 1 :]), labels[:i]
    return None, None, labels


def _addresses(left: tuple[bytes, ...]) -> tuple[str | None, str | None]:
    """`P1.P2.P3.P4.S1.S2.S3.S4` -> (P, S); `x.P1.P2.P3.P4` -> (P, None)."""

    def ipv4(labels: tuple[bytes, ...]) -> str | None:
        if len(labels) != 4:
            return None
        try:
            text = ".".join(label.decode("ascii") for label in labels)
            return str(ipaddress.IPv4Address(text))
        except (UnicodeDecodeError, ValueError):
            return None

    if len(left) >= 8:
        p, s = ipv4(left[-8:-4]), ipv4(left[-4:])
        if p and s:
            return p, s
    if len(left) >= 4:
        p = ipv4(left[-4:])
        if p:
            return p, None
    return None, None


def parse_key_string(text: str) -> Key:
    """A key from a command line: `NAME:ALG:SECRET`, the seeds' `NAME:SHA256:SECRET`, or
    BIND's `hmac-sha256:NAME:SECRET`."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise KeyError_(
            "a key is NAME:ALGORITHM:SECRET (or hmac-sha256:NAME:SECRET); got "
            f"{len(parts)} fields"
        )
    a, b, secret = parts
    # BIND's form puts the algorithm first; ours and the seeds' put the name first.
    name_text, alg_text = (b, a) if _is_algorithm(a) and not _is_algorithm(b) else (a, b)
    try:
        number = algorithm_number(alg_text)
    except ValueError as e:
        raise KeyError_(str(e)) from None
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_(f"the secret of key {name_text} is not valid base64") from None
    if not raw:
        raise KeyError_(f"the secret of key {name_text} is empty")
    try:
        name = dns.name.from_text(name_text)
    except dns.exception.DNSException as e:
        raise KeyError_(f"bad key name {name_text!r}: {e}") from None
    return make_key(name, ALGORITHM_NUMBERS[number], raw)


def _is_algorithm(text: str) -> bool:
    try:
        algorithm_number(text)
    except ValueError:
        return False
    return True


def read_key_option(value: str) -> Key:
    """`--key` value: a key string, or `@FILE` / a path holding one (keeps secrets out of ps)."""
    if value.startswith("@") or os.path.isfile(value):
        path = value[1:] if value.startswith("@") else value
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as e:
            raise KeyError_(f"cannot read key file {path}: {e.strerror}") from None
        return parse_key_string(text)
    return parse_key_string(value)


class KeyStore:
    """The keys of the repository, by name. Immutable; a reload builds a new one."""

    def __init__(self, keys: dict[dns.name.Name, Key] | None = None):
        self.keys: dict[dns.name.Name, Key] = dict(keys or {})

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, name: dns.name.Name) -> Key | None:
        return self.keys.get(name)

    def tsig_key(self, name: dns.name.Name) -> dns.tsig.Key | None:
        key = self.keys.get(name)
        return key.tsig if key else None

    def covering(self, zone: dns.name.Name, operation: str) -> list[Key]:
        """Every key with `operation` right on `zone`."""
        return [k for k in self.keys.values() if k.allows(operation, zone)]


def load_key_file(
    text: str | bytes, filename: str
) -> tuple[dict[dns.name.Name, Key], list[str]]:
    """The keys of one `_keys` or `ZONE._keys` file, and the problems found (for the log).

    Raises ValueError (from the master-file parser) when the file does not parse at all.
    """
    from gitdns.zonefile import ZoneLoadError, read_records

    zone = None if filename == "_keys" else dns.name.from_text(filename[: -len("._keys")])
    origin = zone or dns.name.root
    try:
        records = read_records(text, origin, filename)
    except ZoneLoadError as e:
        raise ValueError(str(e)) from None
    keys: dict[dns.name.Name, Key] = {}
    problems: list[str] = []
    for name, rdata, line in records:
        where = f"{filename}:{line}"
        if rdata.rdtype != dns.rdatatype.DNSKEY:
            problems.append(f"{where}: {name} {dns.rdatatype.to_text(rdata.rdtype)} is not a "
                            "DNSKEY record; ignored")
            continue
        if zone is not None and not name.is_subdomain(zone):
            problems.append(f"{where}: key {name} lies outside {zone} and is ignored; "
                            "keys for other zones belong in their own _keys file or in _keys")
            continue
        if rdata.flags != 0 or rdata.protocol != 3 or int(rdata.algorithm) not in ALGORITHM_NUMBERS:
            problems.append(
                f"{where}: key {name}: a TSIG secret is DNSKEY 0 3 ALG with ALG 161-165 "
                f"(got {rdata.flags} {rdata.protocol} {int(rdata.algorithm)}); ignored")
            continue
        if not rdata.key:
            problems.append(f"{where}: key {name} has an empty secret; ignored")
            continue
        if name in keys:
            problems.append(f"{where}: a second secret for key {name}; the first is kept")
            continue
        keys[name] = make_key(name, ALGORITHM_NUMBERS[int(rdata.algorithm)], rdata.key)
    return keys, problems
