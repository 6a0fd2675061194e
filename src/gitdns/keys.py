"""TSIG secrets as the repository stores them: DNSKEY 0 3 ALG BASE64 in `_keys` files.

Rules this module keeps:
- The algorithm numbers are the seeds' (161 hmac-sha1 .. 165 hmac-sha512), never others.
- A secret is random bytes as long as the hash output (RFC 8945 6: at least that long).
"""

from __future__ import annotations

import base64
import secrets

import dns.name
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
