"""The ACME side of `gitdns letsencrypt` (RFC 8555 through the `acme` package), blocking calls.

Rules this module keeps:
- One account key per data directory, made once (ECDSA P-256, mode 0600) and reused; the account
  is looked up or created on first use and again after any failure (a CA that restarted or
  forgot us), so a retry never depends on state a failure may have spoiled.
- Every call is bounded (HTTP timeout, a deadline for polling) and blocking: the service runs
  them in worker threads. Errors are ACME's own; `describe` turns them into one log line.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gitdns import __version__

log = logging.getLogger("gitdns.letsencrypt")

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
HTTP_TIMEOUT = 30
ACCOUNT_KEY_FILE = "account-key.pem"


@dataclass(frozen=True)
class Challenge:
    """One pending DNS-01 challenge: publish `validation` as TXT at `name`, then answer it."""

    identifier: str  # the name the CA validates (a wildcard's base name)
    name: str  # _acme-challenge.IDENTIFIER, absolute, no final dot
    validation: str
    body: messages.ChallengeBody


def load_or_create_account_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The account key of this data directory; a new one the first time (kept: the CA knows
    the account by it, and rate limits and authorizations belong to the account)."""
    path = data_dir / ACCOUNT_KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: the account key must be an ECDSA P-256 key")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    log.info("created the ACME account key %s", path)
    return key


class AcmeAccount:
    """An account at one ACME directory; the `acme` client is made lazily and dropped on error."""

    def __init__(self, directory: str, key: ec.EllipticCurvePrivateKey,
                 email: str | None = None, ca_bundle: str | None = None):
        self.directory = directory
        self.jwk = jose.JWKEC(key=key)
        self.email = email
        self.verify: bool | str = ca_bundle or True
        self._client: client.ClientV2 | None = None

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        net = client.ClientNetwork(self.jwk, alg=jose.ES256, verify_ssl=self.verify,  # type: ignore[arg-type]
                                   user_agent=f"gitdns/{__version__}", timeout=HTTP_TIMEOUT)
        acme = client.ClientV2(client.ClientV2.get_directory(self.directory, net), net=net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(registration)
            log.info("ACME account %s created at %s", regr.uri, self.directory)
        except errors.ConflictError as e:  # the key is known: RFC 8555 7.3.1, 200 + Location
            net.account = messages.RegistrationResource(uri=str(e.location), body=registration)
            log.debug("ACME account %s in use", e.location)
        self._client = acme
        return acme

    def reset(self) -> None:
        """Forget the client: the next call looks the account up again."""
        self._client = None

    def new_order(self, csr_pem: bytes) -> tuple[messages.OrderResource, list[Challenge]]:
        """Place an order for the CSR's names; the DNS-01 challenges still to solve."""
        acme = self._connect()
        order = acme.new_order(csr_pem)
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA remembers a recent validation (pebble does half the time)
            chall = next((c for c in authz.body.challenges
                          if isinstance(c.chall, challenges.DNS01)), None)
            if chall is None:
                raise RuntimeError(
                    f"the CA offers no dns-01 challenge for {authz.body.identifier.value}")
            _response, validation = chall.response_and_validation(self.jwk)
            identifier = authz.body.identifier.value
            name = chall.chall.validation_domain_name(identifier)
            pending.append(Challenge(identifier, name.rstrip("."), validation, chall))
        return order, pending

    def answer(self, pending: list[Challenge]) -> None:
        """Tell the CA the records are in place."""
        acme = self._connect()
        for c in pending:
            acme.answer_challenge(c.body, c.body.chall.response(self.jwk))

    def finalize(self, order: messages.OrderResource, seconds: float) -> str:
        """Wait for validation, finalize with the CSR, and return the full chain (PEM)."""
        acme = self._connect()
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=seconds)
        done = acme.poll_and_finalize(order, deadline=deadline)
        if not done.fullchain_pem:
            raise RuntimeError("the CA finished the order without a certificate")
        return done.fullchain_pem


def describe(exc: BaseException) -> str:
    """One line with the cause: the CA's problem document, the failed challenge, or the network."""
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    parts.append(f"{authzr.body.identifier.value}: {_one_line(chall.error)}")
        return "challenge failed: " + ("; ".join(parts) or "no detail from the CA")
    if isinstance(exc, messages.Error):
        return "the CA answered " + _one_line(exc)
    if isinstance(exc, errors.IssuanceError):
        return "the CA refused to issue: " + _one_line(exc.error)
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish the order in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS to the ACME server failed (--ca-bundle?): {_root(exc)}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot reach the ACME server: {_root(exc)}"
    if isinstance(exc, requests.exceptions.RequestException):
        return f"HTTP error talking to the ACME server: {_root(exc)}"
    if isinstance(exc, errors.ClientError):
        return f"unexpected answer from the ACME server: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _one_line(err: object) -> str:
    return " ".join(str(err).split())


def _root(exc: BaseException) -> str:
    """The innermost cause (requests nests urllib3 errors several levels deep)."""
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if nxt is None or nxt is seen:
            break
        seen = nxt
    text = str(seen)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return _one_line(text)
