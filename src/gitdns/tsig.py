"""TSIG (RFC 8945) on requests: verification with the repository's keys, and error answers.

Rules this module keeps:
- Verification is dnspython's (`dns.tsig.validate`: HMAC compared in constant time, then the
  time checked against the fudge); this module maps its failures to RFC 8945 errors.
- BADKEY and BADSIG answers are unsigned with an empty MAC (5.3.2); BADTIME and BADTRUNC answers
  are signed with the request's key, BADTIME carrying our time (5.2.3).
- We accept no truncated MAC (the local minimum of 5.2.2.1 is the full length): BADTRUNC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

from gitdns.keys import Key, KeyStore

FUDGE = 300
_DIGEST_SIZE = {
    dns.tsig.HMAC_SHA1: 20,
    dns.tsig.HMAC_SHA224: 28,
    dns.tsig.HMAC_SHA256: 32,
    dns.tsig.HMAC_SHA384: 48,
    dns.tsig.HMAC_SHA512: 64,
}


class TsigFailure(Exception):
    """A signed request that failed verification; `error` is the RFC 8945 error code."""

    def __init__(self, error: int, query: dns.message.Message, key: Key | None):
        super().__init__(dns.rcode.to_text(error))
        self.error = error
        self.query = query  # parsed without verification, for the error answer
        self.key = key


@dataclass(frozen=True)
class Verified:
    """A parsed request and the key that signed it (None when unsigned)."""

    message: dns.message.Message
    key: Key | None


def parse_request(wire: bytes, keys: KeyStore, one_rr_per_rrset: bool = False) -> Verified:
    """Parse `wire`, verifying its TSIG if it has one.

    Raises TsigFailure for a signature we must refuse, or the parser's exception for a malformed
    message (the caller answers FORMERR).
    """
    found: list[Key | None] = []

    def keyring(_message, name: dns.name.Name):
        key = keys.get(name)
        found.append(key)
        return key.tsig if key is not None else None

    try:
        message = dns.message.from_wire(wire, keyring=keyring, one_rr_per_rrset=one_rr_per_rrset)
    except dns.message.UnknownTSIGKey:
        raise TsigFailure(dns.rcode.BADKEY, _unverified(wire, one_rr_per_rrset), None) from None
    except (dns.tsig.BadAlgorithm, dns.tsig.BadKey):
        raise TsigFailure(dns.rcode.BADKEY, _unverified(wire, one_rr_per_rrset), None) from None
    except dns.tsig.BadSignature:
        query = _unverified(wire, one_rr_per_rrset)
        key = found[-1] if found else None
        error = dns.rcode.BADSIG
        if key is not None and len(query.tsig[0].mac) < _DIGEST_SIZE.get(key.algorithm, 0):
            error = dns.rcode.BADTRUNC
        raise TsigFailure(error, query, key if error == dns.rcode.BADTRUNC else None) from None
    except dns.tsig.BadTime:
        query = _unverified(wire, one_rr_per_rrset)
        raise TsigFailure(dns.rcode.BADTIME, query, found[-1] if found else None) from None
    except dns.tsig.PeerError:
        # A request carrying a TSIG error code: not a request any client sends.
        raise dns.exception.FormError("TSIG error code set in a request") from None
    key = found[-1] if (found and message.had_tsig) else None
    return Verified(message, key)


def _unverified(wire: bytes, one_rr_per_rrset: bool) -> dns.message.Message:
    """The request parsed without checking its signature (so the error answer can echo it)."""
    return dns.message.from_wire(
        wire, keyring=lambda _m, _n: False, one_rr_per_rrset=one_rr_per_rrset
    )


def error_reply(failure: TsigFailure, now: int) -> bytes:
    """NOTAUTH with the TSIG error (RFC 8945 5.2, 5.3.2)."""
    query = failure.query
    response = dns.message.make_response(query, our_payload=1232, pad=0)
    response.set_rcode(dns.rcode.NOTAUTH)
    request_tsig = query.tsig[0]
    if failure.key is not None and failure.error in (dns.rcode.BADTIME, dns.rcode.BADTRUNC):
        other = struct.pack("!Q", now)[2:] if failure.error == dns.rcode.BADTIME else b""
        response.use_tsig(
            failure.key.tsig,
            fudge=FUDGE,
            original_id=query.id,
            tsig_error=failure.error,
            other_data=other,
            algorithm=failure.key.algorithm,
        )
        response.request_mac = request_tsig.mac
    else:
        rdata = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            request_tsig.algorithm,
            request_tsig.time_signed,
            request_tsig.fudge,
            b"",
            query.id,
            failure.error,
            b"",
        )
        response.tsig = dns.rrset.from_rdata(query.tsig.name, 0, rdata)
    return response.to_wire()
