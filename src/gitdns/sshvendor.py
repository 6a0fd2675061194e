"""Credentials for git remotes: ssh through paramiko with the host key pinned, http(s) logins.

Rules this module keeps:
- A host key is trusted only when its `SHA256:` fingerprint equals the configured pin; with no pin
  nothing is trusted (the error names the fingerprint seen and how to pin it). No known_hosts, no
  agent, no ~/.ssh keys: only the key the operator configured is offered.
- Secrets (private keys, seeds, passwords) never appear in a message or a log; every network wait
  is bounded by a timeout. Configuration errors are ValueErrors raised at load time, not at use.
- paramiko and cryptography are imported inside the functions that use them, never at module
  import: they cost a start about 0.1 s (paramiko pulls in invoke), a start with a big zone is
  measured against BIND's, and only ssh remotes need them.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import io
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dulwich.client import GitClient, SSHGitClient, SSHVendor

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("gitdns.git")

#: Seconds any ssh step (TCP connect, banner, key exchange, auth, a read) may take.
DEFAULT_TIMEOUT = 30.0

_PIN = re.compile(r"^SHA256:([A-Za-z0-9+/]{43})=?$")
_SEED_PREFIX = "ed25519:"
#: Host key algorithms tried, one at a time, when the one negotiated first is not the pinned one:
#: a server has several host keys and the operator may have pinned any of them.
_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
)


class SSHError(Exception):
    """An ssh connection failed for a reason gitdns words itself (host key, login).

    Not based on paramiko's SSHException (raised for the protocol's own failures), so that this
    module imports without paramiko; gitrepo catches both.
    """


class HostKeyError(SSHError):
    """The server's host key is not the pinned one (or nothing is pinned): we did not log in."""


class LoginError(SSHError):
    """The server does not accept our key (or we have none to offer)."""


def sha256_fingerprint(blob: bytes) -> str:
    """`SHA256:...` of a public key blob, exactly as `ssh-keygen -l -E sha256` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
    return "SHA256:" + digest.rstrip("=")


def fingerprint_of_public_line(line: str) -> str:
    """The fingerprint of an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)."""
    try:
        return sha256_fingerprint(base64.b64decode(line.split()[1], validate=True))
    except (IndexError, binascii.Error) as e:
        raise ValueError("not an OpenSSH public key line") from e


def parse_pin(text: str) -> str:
    """The normalized pin for `--ssh-authenticator` (`SHA256:` + 43 base64 characters)."""
    match = _PIN.match(text.strip())
    if not match:
        raise ValueError(
            f"--ssh-authenticator {text.strip()!r} is not a SHA256 host key fingerprint; "
            "give it as `ssh-keygen -l -E sha256 -f HOSTKEY.pub` prints it (SHA256:43 characters)"
        )
    return "SHA256:" + match.group(1)


def load_private_key(spec: str) -> paramiko.PKey:
    """The client key from `--ssh-key`: an OpenSSH private key file (ed25519, RSA or ECDSA,
    unencrypted: the server starts unattended), or the seeds' `ed25519:BASE64` form, which is
    the 32-byte ed25519 private key (seed) in base64, as awa_gen_key prints it."""
    import paramiko  # here, not at module import: see the rules at the top

    if spec.startswith(_SEED_PREFIX) and not os.path.exists(spec):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        try:
            seed = base64.b64decode(spec[len(_SEED_PREFIX) :], validate=True)
        except binascii.Error:
            seed = b""
        if len(seed) != 32:
            raise ValueError(
                "--ssh-key ed25519:... must hold the 32-byte ed25519 seed in base64 "
                "(44 characters, as awa_gen_key prints it)"
            )
        pem = (
            ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            )
            .decode()
        )
        return paramiko.Ed25519Key(file_obj=io.StringIO(pem))
    path = Path(spec).expanduser()
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise ValueError(f"--ssh-key {path}: no such file") from None
    except PermissionError:
        raise ValueError(f"--ssh-key {path}: permission denied") from None
    except paramiko.PasswordRequiredException:
        raise ValueError(
            f"--ssh-key {path} is protected by a passphrase; the server cannot type it: "
            "remove it (ssh-keygen -p -N '' -f KEY) or make a key with `gitdns ssh-keygen`"
        ) from None
    except (paramiko.SSHException, ValueError, UnicodeDecodeError, IsADirectoryError) as e:
        raise ValueError(
            f"--ssh-key {path} is not an OpenSSH private key (ed25519, RSA or ECDSA): "
            f"{type(e).__name__}"
        ) from None


def public_key_line(key: paramiko.PKey, comment: str = "gitdns") -> str:
    """The authorized_keys line for `key`."""
    return f"{key.get_name()} {key.get_base64()} {comment}".rstrip()


def ssh_keygen(kind: str = "ed25519", comment: str = "gitdns") -> tuple[str, str]:
    """A new key pair for `gitdns ssh-keygen`: (the private key as an OpenSSH PEM, unencrypted,
    for --ssh-key; the public key line for the git server's authorized_keys)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    else:
        raise ValueError(f"unknown ssh key type {kind!r} (ed25519 or rsa)")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, f"{public.decode()} {comment}".rstrip()


def _host_label(host: str, port: int) -> str:
    """How OpenSSH names the host in known_hosts and messages."""
    return host if port == 22 else f"[{host}]:{port}"


def _family(name: str) -> str:
    """ssh-rsa, rsa-sha2-256 and rsa-sha2-512 are one key; others are their own family."""
    return "rsa" if "rsa" in name else name


class _Connection:
    """What dulwich's Protocol needs from a vendor: read(n) returns exactly n bytes (or fewer only
    at EOF), write, close, can_read, and stderr for the remote's error text."""

    def __init__(self, transport: paramiko.Transport, channel: paramiko.Channel) -> None:
        self._transport = transport
        self._channel = channel
        self.stderr = channel.makefile_stderr("rb")

    def can_read(self) -> bool:
        return self._channel.recv_ready()

    def write(self, data: bytes) -> None:
        self._channel.sendall(data)

    def read(self, n: int | None = None) -> bytes:
        if n is None:
            chunks = []
            while chunk := self._channel.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        buf = bytearray()
        while len(buf) < n:
            chunk = self._channel.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        try:
            self._channel.close()
        finally:
            self._transport.close()


class PinnedParamikoVendor(SSHVendor):
    """dulwich's ssh transport, through paramiko, trusting only the pinned host key.

    Given to each SSHGitClient (not installed process-wide), so two repositories with different
    keys can live in one process.
    """

    def __init__(
        self, pkey: paramiko.PKey | None, pin: str | None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.pkey = pkey
        self.pin = pin
        self.timeout = timeout
        self._key_type: str | None = None  # the host key algorithm that matched the pin

    def run_command(  # type: ignore[override]
        self,
        host: str,
        command: bytes | str,
        username: str | None = None,
        port: int | None = None,
        password: str | None = None,
        key_filename: str | None = None,
        ssh_command: str | None = None,
        protocol_version: int | None = None,
        **kwargs: Any,
    ) -> _Connection:
        """Connect, check the host key, log in with our key and run `command` (git-upload-pack
        or git-receive-pack); anything that goes wrong raises an SSHError, paramiko's
        SSHException or an OSError."""
        import paramiko  # here, not at module import: see the rules at the top

        port = port or 22
        user = username or getpass.getuser()
        transport = self._verified_transport(host, port)
        try:
            label = _host_label(host, port)
            if self.pkey is None:
                raise LoginError(
                    f"no --ssh-key given: gitdns needs a private key to log in to {label} as {user}"
                )
            try:
                transport.auth_publickey(user, self.pkey)
            except paramiko.AuthenticationException:
                raise LoginError(
                    f"the ssh server {label} does not accept key "
                    f"{sha256_fingerprint(self.pkey.asbytes())} ({self.pkey.get_name()}) for user "
                    f"{user}; add its public key to that user's authorized_keys"
                ) from None
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            if protocol_version and protocol_version > 0:
                channel.set_environment_variable("GIT_PROTOCOL", f"version={protocol_version}")
            channel.exec_command(command)
            return _Connection(transport, channel)
        except BaseException:
            transport.close()
            raise

    def _verified_transport(self, host: str, port: int) -> paramiko.Transport:
        """A transport past key exchange whose host key is the pinned one.

        The first try lets paramiko choose the host key type; if its key is not the pinned one,
        each other type the server may have is tried once, since the operator may have pinned
        any of the server's keys (the seeds' guide pins ED25519, older setups RSA).
        """
        import paramiko  # here, not at module import: see the rules at the top

        label = _host_label(host, port)
        seen: dict[str, str] = {}  # key type -> fingerprint
        tries: list[str | None] = [self._key_type]
        if self.pin is not None:
            tries += [a for a in _HOST_KEY_ALGORITHMS if a != self._key_type]
        for algorithm in tries:
            if algorithm is not None and _family(algorithm) in {_family(t) for t in seen}:
                continue
            try:
                transport = self._transport(host, port, algorithm)
            except paramiko.SSHException:
                if algorithm is None:
                    raise
                continue  # the server has no key of this type
            key = transport.get_remote_server_key()
            got = sha256_fingerprint(key.asbytes())
            if self.pin is not None and got == self.pin:
                self._key_type = algorithm
                return transport
            transport.close()
            seen[key.get_name()] = got
            if self.pin is None:
                break
        if not seen:
            raise HostKeyError(
                f"the ssh server {label} offers none of the host key types "
                f"{', '.join(_HOST_KEY_ALGORITHMS)}"
            )
        shown = ", ".join(f"{name} {fp}" for name, fp in seen.items())
        if self.pin is None:
            first = next(iter(seen.values()))
            raise HostKeyError(
                f"the ssh host key of {label} is {shown}, and no host key is pinned: gitdns never "
                f"trusts an unknown host key. If that is your git server's key (compare with "
                f"`ssh-keygen -l -E sha256 -f /etc/ssh/ssh_host_ed25519_key.pub` on the server), "
                f"pin it with --ssh-authenticator {first}"
            )
        raise HostKeyError(
            f"the ssh host key of {label} is {shown}, but --ssh-authenticator expects "
            f"{self.pin}; refusing to connect (the server's key changed, or someone is in the "
            "middle)"
        )

    def _transport(self, host: str, port: int, algorithm: str | None) -> paramiko.Transport:
        """TCP connect and ssh key exchange, every step bounded by the timeout."""
        import paramiko  # here, not at module import: see the rules at the top

        sock = socket.create_connection((host, port), timeout=self.timeout)
        try:
            transport = paramiko.Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.banner_timeout = self.timeout
            transport.handshake_timeout = self.timeout
            transport.auth_timeout = self.timeout
            if algorithm is not None:
                transport.get_security_options().key_types = (algorithm,)
            transport.start_client(timeout=self.timeout)
        except BaseException:
            transport.close()
            raise
        return transport


@dataclass(frozen=True)
class RemoteAuth:
    """How to log in to the remote: an ssh key and host key pin, or an http(s) user:password.

    Built once by `load` (at start, so a bad key file stops the server with a clear message);
    `prepare` then fits each dulwich client made for the remote.
    """

    pkey: paramiko.PKey | None = None
    pin: str | None = None
    http_user: str | None = None
    http_password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    _vendor: PinnedParamikoVendor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One vendor per remote, so the host key type that matched the pin is remembered.
        object.__setattr__(self, "_vendor", PinnedParamikoVendor(self.pkey, self.pin, self.timeout))

    @classmethod
    def load(
        cls,
        ssh_key: str | None = None,
        ssh_authenticator: str | None = None,
        credentials_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RemoteAuth:
        """Read and check the operator's settings; raises ValueError with a message fit for them
        (never holding a secret)."""
        pkey = load_private_key(ssh_key) if ssh_key else None
        pin = parse_pin(ssh_authenticator) if ssh_authenticator else None
        user = password = None
        if credentials_file:
            try:
                text = Path(credentials_file).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                reason = getattr(e, "strerror", None) or type(e).__name__
                raise ValueError(
                    f"cannot read credentials file {credentials_file}: {reason}"
                ) from None
            line = text.strip().splitlines()[0] if text.strip() else ""
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(
                    f"credentials file {credentials_file} must hold one line USER:PASSWORD"
                )
        return cls(pkey, pin, user, password, timeout)

    def client_kwargs(self, remote: str) -> dict[str, str]:
        """Extra arguments for dulwich's get_transport_and_path: the http(s) login from the
        credentials file, which takes precedence over one in the URL."""
        scheme = urlsplit(remote).scheme.lower() if "://" in remote else ""
        if scheme in ("http", "https") and self.http_user is not None:
            return {"username": self.http_user, "password": self.http_password or ""}
        return {}

    def prepare(self, client: GitClient) -> GitClient:
        """Give an ssh client our pinned vendor (never dulwich's default, which would run
        OpenSSH with the system's known_hosts)."""
        if isinstance(client, SSHGitClient):
            client.ssh_vendor = self._vendor
        return client
