"""The `gitdns` command: option parsing and the small client tools. The work is elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from gitdns import __version__

EXAMPLE_ZONE = """\
; example.test -- an example zone made by `gitdns init`.
; Every top-level file of this repository is one zone, named by the zone.
; Edit, raise the serial, commit and push; then `gitdns notify` (or SIGHUP) reloads the server.
$ORIGIN example.test.
$TTL 3600
@       IN SOA  ns1 hostmaster (
                1          ; serial: raise it on every change
                86400      ; refresh
                7200       ; retry
                1048576    ; expire
                300 )      ; minimum: negative answers are cached this long
        IN NS   ns1
        IN NS   ns2
        IN MX   10 mail
        IN TXT  "v=spf1 mx -all"
ns1     IN A    192.0.2.1       ; glue for the name servers
ns2     IN A    192.0.2.2
        IN AAAA 2001:db8::2
mail    IN A    192.0.2.25
        IN AAAA 2001:db8::25
www     IN A    192.0.2.80
        IN AAAA 2001:db8::80
web     IN CNAME www            ; an alias
*.users IN TXT  "any name under users.example.test answers this"
"""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # it logs every connection at INFO


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/gitdns")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "gitdns"


# -- serve --------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from gitdns.gitrepo import GitError
    from gitdns.net.server import ListenAddress
    from gitdns.primary import Primary, PrimaryConfig
    from gitdns.workers import default_workers

    if args.workers is not None and args.workers < 1:
        print("gitdns serve: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        listen = [ListenAddress.parse(a) for a in (args.listen or ["[::]:53", "0.0.0.0:53"])]
    except (ValueError, OSError) as e:
        print(f"gitdns serve: bad --listen address: {e}", file=sys.stderr)
        return 2
    try:
        also_notify = [_host_port(a, 53) for a in args.also_notify or []]
    except ValueError as e:
        print(f"gitdns serve: bad --also-notify address: {e}", file=sys.stderr)
        return 2
    config = PrimaryConfig(
        remote=args.remote,
        data_dir=Path(args.data_dir or _default_data_dir()).absolute(),
        listen=listen,
        branch=args.branch,
        log_queries=args.log_queries,
        poll=args.poll,
        tcp_idle_timeout=args.tcp_idle_timeout,
        notify=args.notify,
        also_notify=also_notify,
        axfr_unauthenticated=args.axfr_unauthenticated,
        serial_policy=args.serial_policy,
        committer=args.committer.encode() if args.committer else None,
        ssh_key=args.ssh_key,
        ssh_authenticator=args.ssh_authenticator,
        credentials_file=args.credentials_file,
        workers=args.workers if args.workers is not None else default_workers(),
    )
    primary = Primary(config)
    try:
        _run(primary.run())
    except GitError as e:
        logging.getLogger("gitdns").error("%s", e)
        return 1
    except PermissionError as e:
        logging.getLogger("gitdns").error(
            "%s: ports below 1024 need root or CAP_NET_BIND_SERVICE; try --listen 127.0.0.1:5353", e
        )
        return 1
    except OSError as e:
        logging.getLogger("gitdns").error("cannot listen: %s", e)
        return 1
    return 0


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    """An IP address with an optional port (`127.0.0.1:5300`, `[::1]:5300`, `::1`)."""
    import ipaddress

    from gitdns.net.server import split_host_port

    host, port = split_host_port(text, default_port)
    ipaddress.ip_address(host)
    if port == 0:
        raise ValueError("port 0 is not a port to send to")
    return host, port


def _run(coro) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# -- secondary ----------------------------------------------------------------------------------


def cmd_secondary(args: argparse.Namespace) -> int:
    """Follow primaries by SOA checks, AXFR/IXFR and NOTIFY; serve the zones (issue 6)."""
    import dns.exception
    import dns.name

    from gitdns.keys import KeyError_, read_key_option
    from gitdns.net.server import ListenAddress
    from gitdns.secondary import ConfigError, Secondary, SecondaryConfig

    try:
        keys = [read_key_option(k) for k in args.key]
        zones = [dns.name.from_text(z) for z in args.zone or []]
        primary = _host_port(args.primary, 53) if args.primary else None
        also_notify = [_host_port(a, 53) for a in args.also_notify or []]
        listen = [ListenAddress.parse(a) for a in (args.listen or ["[::]:53", "0.0.0.0:53"])]
    except (KeyError_, ValueError, OSError, dns.exception.DNSException) as e:
        print(f"gitdns secondary: {e}", file=sys.stderr)
        return 2
    config = SecondaryConfig(
        keys=keys,
        data_dir=Path(args.data_dir or _default_data_dir() / "secondary").absolute(),
        primary=primary,
        zones=zones,
        listen=listen,
        also_notify=also_notify,
        log_queries=args.log_queries,
        tcp_idle_timeout=args.tcp_idle_timeout,
    )
    try:
        secondary = Secondary(config)
    except ConfigError as e:
        print(f"gitdns secondary: {e}", file=sys.stderr)
        return 2
    try:
        _run(secondary.run())
    except PermissionError as e:
        logging.getLogger("gitdns").error(
            "%s: ports below 1024 need root or CAP_NET_BIND_SERVICE; try --listen 127.0.0.1:5353", e
        )
        return 1
    except OSError as e:
        logging.getLogger("gitdns").error("cannot listen or write the data directory: %s", e)
        return 1
    return 0


# -- init ---------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from dulwich import porcelain

    from gitdns.keys import dnskey_line, generate_secret

    path = Path(args.directory).absolute()  # dulwich reads relative paths from the repo root
    if (path / ".git").exists() or (path.exists() and any(path.iterdir())):
        print(f"gitdns init: {path} exists and is not empty; nothing done", file=sys.stderr)
        return 1
    path.mkdir(parents=True, exist_ok=True)
    keyname = "personal._update.example.test"
    secret = generate_secret(163)
    (path / "example.test").write_text(EXAMPLE_ZONE)
    (path / "_keys").write_text(
        "; TSIG secrets (never served). NAME._update.ZONE may update ZONE and the zones below it;\n"
        "; _transfer keys may transfer, _notify keys may only notify.\n"
        "; DNSKEY 0 3 163 = hmac-sha256.\n"
        + dnskey_line(keyname, secret, 163)
        + "\n"
    )
    repo = porcelain.init(str(path))
    try:
        porcelain.add(repo, [str(path / "example.test"), str(path / "_keys")])
        porcelain.commit(
            repo,
            message=b"gitdns init: example zone and an update key",
            author=b"gitdns <gitdns@localhost>",
            committer=b"gitdns <gitdns@localhost>",
        )
    finally:
        repo.close()
    port = args.port
    print(f"""Created the zone repository {path}/ with:
  example.test   an example zone (SOA, NS with glue, A, AAAA, MX, TXT, CNAME, wildcard)
  _keys          the TSIG key {keyname} (hmac-sha256)

Serve it on an unprivileged port:
  gitdns serve --remote {path} --listen 127.0.0.1:{port} --data-dir {path}-data

Then try:
  dig @127.0.0.1 -p {port} www.example.test A
  dig @127.0.0.1 -p {port} example.test MX
  dig @127.0.0.1 -p {port} anything.users.example.test TXT
  dig @127.0.0.1 -p {port} nope.example.test A +tcp

The update key, for the client tools (keep it secret):
  {keyname}:hmac-sha256:{secret}
  hmac-sha256:{keyname}:{secret}     (dig -y, nsupdate -y)""")
    return 0


# -- check --------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    import dns.exception

    from gitdns.zonefile import ZoneLoadError, check_serial_increase, parse_zone
    from gitdns.zonefile import zone_name_from_filename as origin_of

    path = Path(args.zonefile)
    try:
        origin = origin_of(args.zone) if args.zone else origin_of(path.name)
    except dns.exception.DNSException as e:
        print(f"{path}: cannot tell the zone name ({e}); give it with --zone", file=sys.stderr)
        return 1
    try:
        text = path.read_bytes()
    except OSError as e:
        print(f"{path}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        zone, warnings = parse_zone(text, origin, str(path))
    except ZoneLoadError as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.old:
        old_path = Path(args.old)
        try:
            old, _ = parse_zone(old_path.read_bytes(), origin, str(old_path))
        except OSError as e:
            print(f"{old_path}: {e.strerror}", file=sys.stderr)
            return 1
        except ZoneLoadError:
            old = None  # the old version was broken: any good new version is an improvement
        if old is not None and _zone_content(old) != _zone_content(zone):
            problem = check_serial_increase(old, zone)
            if problem:
                print(f"{path}: {problem}; raise the serial so secondaries see the change",
                      file=sys.stderr)
                return 1
    print(f"{path}: zone {origin} OK, serial {zone.serial}, {zone.record_count} records")
    return 0


def _zone_content(zone) -> set:
    """Every record except the SOA serial, to tell whether the zone changed at all."""
    out = set()
    for rrset in zone.rrsets():
        for rd in rrset:
            text = rd.to_text()
            if rrset.rdtype == 6:
                text = text.split()[:2] + text.split()[3:]
                text = " ".join(text)
            out.add((rrset.name, rrset.rdtype, rrset.ttl, text))
    return out


# -- notify -------------------------------------------------------------------------------------


def cmd_notify(args: argparse.Namespace) -> int:
    """Send one signed NOTIFY and say what came back (the seeds' onotify)."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.rrset

    from gitdns.keys import KeyError_, read_key_option
    from gitdns.notify import notify_message

    try:
        key = read_key_option(args.key_file and "@" + args.key_file or args.key)
        host, port = _host_port(args.server, 53)
    except (KeyError_, ValueError) as e:
        print(f"gitdns notify: {e}", file=sys.stderr)
        return 2
    origin = dns.name.from_text(args.zone)
    soa = None
    if args.serial is not None:
        soa = dns.rrset.from_text(origin, 0, "IN", "SOA", f". . {args.serial} 0 0 0 0")
    message = notify_message(origin, soa, key)
    if not _exchange("notify", message, args.server, (host, port), args.timeout, tcp=False):
        return 1
    print(f"NOTIFY {origin} acknowledged by {args.server} (signed reply verified)")
    return 0


def _exchange(command: str, message, server: str, address: tuple[str, int], timeout: float,
              tcp: bool, failed: str = "") -> bool:
    """Send a signed request and verify the signed answer; says on stderr what went wrong."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.tsig

    host, port = address
    send = dns.query.tcp if tcp else dns.query.udp
    try:
        reply = send(message, host, port=port, timeout=timeout)
    except dns.exception.Timeout:
        print(f"gitdns {command}: no answer from {server} in {timeout} s", file=sys.stderr)
        return False
    except dns.tsig.PeerError as e:
        print(f"gitdns {command}: {server} refused the signature: {type(e).__name__}",
              file=sys.stderr)
        return False
    except (dns.exception.DNSException, OSError) as e:
        print(f"gitdns {command}: {server}: {e}", file=sys.stderr)
        return False
    if reply.rcode() != dns.rcode.NOERROR:
        print(f"gitdns {command}: {server} answered {dns.rcode.to_text(reply.rcode())}{failed}",
              file=sys.stderr)
        return False
    return True


# -- update -------------------------------------------------------------------------------------


def parse_changes(words: list[str], zone: str) -> list[tuple]:
    """`add NAME TTL TYPE DATA... delete NAME [TYPE [DATA...]] ...` -> change tuples.

    DATA runs until the next `add`/`delete` word, so several changes fit on one command line.
    """
    import dns.rdatatype

    changes: list[tuple] = []
    i = 0
    while i < len(words):
        verb = words[i].lower()
        j = i + 1
        while j < len(words) and words[j].lower() not in ("add", "delete"):
            j += 1
        args = words[i + 1 : j]
        if verb == "add":
            if len(args) < 4 or not args[1].isdigit():
                raise ValueError(f"`add` needs NAME TTL TYPE DATA, got: {' '.join(args)!r}")
            dns.rdatatype.from_text(args[2])
            changes.append(("add", args[0], int(args[1]), args[2].upper(), " ".join(args[3:])))
        elif verb == "delete":
            if not args:
                raise ValueError("`delete` needs a NAME")
            rtype = args[1].upper() if len(args) > 1 else None
            if rtype:
                dns.rdatatype.from_text(rtype)
            data = " ".join(args[2:]) or None
            changes.append(("delete", args[0], rtype, data))
        else:
            raise ValueError(f"expected `add` or `delete`, got {words[i]!r}")
        i = j
    if not changes:
        raise ValueError("no change given: add NAME TTL TYPE DATA | delete NAME [TYPE [DATA]]")
    return changes


def cmd_update(args: argparse.Namespace) -> int:
    """Send one signed UPDATE with every change given (the seeds' oupdate, several at once)."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.update

    from gitdns.keys import KeyError_, read_key_option

    try:
        key = read_key_option(args.key_file and "@" + args.key_file or args.key)
        host, port = _host_port(args.server, 53)
        changes = parse_changes(args.changes, args.zone)
    except (KeyError_, ValueError, dns.exception.DNSException) as e:
        print(f"gitdns update: {e}", file=sys.stderr)
        return 2
    zone = dns.name.from_text(args.zone)
    message = dns.update.UpdateMessage(zone, keyring=key.tsig, keyalgorithm=key.algorithm)
    try:
        for change in changes:
            name = dns.name.from_text(change[1], zone)
            if change[0] == "add":
                message.add(name, change[2], change[3], change[4])
            elif change[3] is not None:
                message.delete(name, change[2], change[3])
            elif change[2] is not None:
                message.delete(name, change[2])
            else:
                message.delete(name)
    except dns.exception.DNSException as e:
        print(f"gitdns update: bad record data: {e}", file=sys.stderr)
        return 2
    if not _exchange("update", message, args.server, (host, port), args.timeout, tcp=True,
                     failed="; nothing changed"):
        return 1
    for change in changes:
        print(("+ " if change[0] == "add" else "- ") + " ".join(str(c) for c in change[1:] if c))
    print(f"update of {zone} accepted by {args.server}")
    return 0


# -- ssh-keygen ---------------------------------------------------------------------------------


def cmd_ssh_keygen(args: argparse.Namespace) -> int:
    """A key pair for an ssh git remote: private key to a file (0600), public key printed."""
    from gitdns.sshvendor import ssh_keygen

    path = Path(args.file)
    if path.exists():
        print(f"gitdns ssh-keygen: {path} exists; not overwritten", file=sys.stderr)
        return 1
    private, public = ssh_keygen(args.type)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private)
    print(f"; private key written to {path} (give it to gitdns serve --ssh-key {path})")
    print("; public key, for the git server's authorized keys:")
    print(public)
    return 0


# -- keygen -------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from gitdns.keys import ALGORITHM_NUMBERS, algorithm_number, dnskey_line, generate_secret

    try:
        number = algorithm_number(args.algorithm)
    except ValueError as e:
        print(f"gitdns keygen: {e}", file=sys.stderr)
        return 2
    name = args.name.rstrip(".")
    alg = ALGORITHM_NUMBERS[number].to_text().rstrip(".")
    secret = generate_secret(number)
    print(f"; for a _keys file of the zone repository:\n{dnskey_line(name, secret, number)}")
    print(f"; for gitdns --key:\n{name}:{alg}:{secret}")
    print(f"; for dig -y / nsupdate -y:\n{alg}:{name}:{secret}")
    return 0


# -- certify, letsencrypt ----------------------------------------------------------------------


def cmd_certify(args: argparse.Namespace) -> int:
    from gitdns import certify

    return certify.main(args)


def cmd_letsencrypt(args: argparse.Namespace) -> int:
    from gitdns import letsencrypt

    return letsencrypt.main(args)


# -- the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitdns", description="An authoritative DNS server whose zones live in git."
    )
    parser.add_argument("--version", action="version", version=f"gitdns {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"], help="default: info")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the primary server on a git repository of zones")
    p.add_argument("--remote", required=True,
                   help="the zone repository: a local path, file://, http(s)://, ssh://")
    p.add_argument("--branch", help="branch to serve (default: the remote's default branch)")
    p.add_argument("--listen", action="append", metavar="ADDR:PORT",
                   help="address to answer on, UDP and TCP; repeatable "
                        "(default: [::]:53 and 0.0.0.0:53)")
    p.add_argument("--data-dir", help="where the local clone lives "
                   "(default: /var/lib/gitdns as root, else ~/.local/state/gitdns)")
    p.add_argument("--poll", type=float, metavar="SECONDS", help="also pull on this timer")
    p.add_argument("--log-queries", action="store_true", help="log every query and its rcode")
    p.add_argument("--tcp-idle-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close TCP connections idle this long (default: 10)")
    p.add_argument("--notify", choices=["yes", "explicit", "no"], default="yes",
                   help="whom to NOTIFY of changes: yes = the zone's NS hosts, the secondaries "
                        "named by _transfer keys and --also-notify; explicit = --also-notify "
                        "only; no = nobody (hidden secondaries are always told)")
    p.add_argument("--also-notify", action="append", metavar="ADDR[:PORT]",
                   help="also NOTIFY this secondary of every change (repeatable)")
    p.add_argument("--axfr-unauthenticated", action="store_true",
                   help="allow AXFR/IXFR without a TSIG key")
    p.add_argument("--serial-policy", choices=["increment", "date"], default="increment",
                   help="how updates raise the SOA serial: +1, or keep a YYYYMMDDnn form")
    p.add_argument("--committer", metavar="'NAME <EMAIL>'",
                   help="committer of the commits gitdns makes (default: gitdns <gitdns@HOST>)")
    p.add_argument("--ssh-key", metavar="FILE|ed25519:SEED",
                   help="private key for an ssh remote: an OpenSSH key file (ed25519 or RSA) "
                        "or the seeds' ed25519:BASE64SEED")
    p.add_argument("--ssh-authenticator", metavar="SHA256:FINGERPRINT",
                   help="the ssh server's host key fingerprint (ssh-keygen -l -E sha256)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes answering queries on the same addresses (SO_REUSEPORT): "
                   "this one and N-1 workers (default: one per CPU this process may use)")
    p.add_argument("--credentials-file", metavar="FILE",
                   help="USER:PASSWORD for an http(s) remote (keeps it out of ps)")
    p.add_argument("--log-level", default=argparse.SUPPRESS,
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("secondary", help="run a secondary server that transfers zones from a "
                       "primary (gitdns, BIND, Knot) and serves them")
    p.add_argument("--key", action="append", required=True, metavar="KEY",
                   help="TSIG key NAME:ALG:SECRET (or ALG:NAME:SECRET, or @FILE); repeatable. "
                        "P1.P2.P3.P4.S1.S2.S3.S4._transfer.ZONE names ZONE and its primary P; "
                        "NAME._transfer. (the root) follows every zone the primary announces")
    p.add_argument("--primary", metavar="ADDR[:PORT]",
                   help="the primary, for keys that name none (BIND, Knot) or another port")
    p.add_argument("--zone", action="append", metavar="ZONE",
                   help="also follow ZONE (repeatable), with the key covering it")
    p.add_argument("--listen", action="append", metavar="ADDR:PORT",
                   help="address to answer on, UDP and TCP; repeatable "
                        "(default: [::]:53 and 0.0.0.0:53)")
    p.add_argument("--data-dir", help="where the last good copy of each zone is kept "
                   "(default: /var/lib/gitdns/secondary as root, else "
                   "~/.local/state/gitdns/secondary)")
    p.add_argument("--also-notify", action="append", metavar="ADDR[:PORT]",
                   help="NOTIFY this secondary of ours of every new version (repeatable)")
    p.add_argument("--log-queries", action="store_true", help="log every query and its rcode")
    p.add_argument("--tcp-idle-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close TCP connections idle this long (default: 10)")
    p.add_argument("--log-level", default=argparse.SUPPRESS,
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_secondary)

    p = sub.add_parser("notify", help="send a signed NOTIFY (makes a gitdns primary pull)")
    p.add_argument("zone")
    p.add_argument("--server", required=True, metavar="HOST[:PORT]")
    p.add_argument("--key", help="NAME:ALG:SECRET, ALG:NAME:SECRET, or @FILE holding one")
    p.add_argument("--key-file", help="a file holding the key string (keeps it out of ps)")
    p.add_argument("--serial", type=int, help="the serial to announce")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("init", help="create a demo zone repository")
    p.add_argument("directory")
    p.add_argument("--port", type=int, default=5353, help="port shown in the instructions")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("check", help="check a zone file (usable as a git pre-commit hook)")
    p.add_argument("zonefile")
    p.add_argument("--old", help="the previous version: the serial must have increased")
    p.add_argument("--zone", help="zone name (default: the file name)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "update", help="send a signed dynamic update",
        description="Changes: add NAME TTL TYPE DATA | delete NAME [TYPE [DATA]]; several may "
                    "follow each other and go in one update. Names are relative to --zone "
                    "unless they end with a dot.")
    p.add_argument("--server", required=True, metavar="HOST[:PORT]")
    p.add_argument("--zone", required=True)
    p.add_argument("--key", help="NAME:ALG:SECRET, ALG:NAME:SECRET, or @FILE holding one")
    p.add_argument("--key-file", help="a file holding the key string (keeps it out of ps)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("changes", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("ssh-keygen", help="make an ssh key pair for an ssh git remote")
    p.add_argument("file", help="where to write the private key")
    p.add_argument("--type", choices=["ed25519", "rsa"], default="ed25519")
    p.set_defaults(func=cmd_ssh_keygen)

    p = sub.add_parser("keygen", help="make a TSIG secret")
    p.add_argument("name", help="key name, e.g. personal._update.example.test")
    p.add_argument("--algorithm", default="hmac-sha256")
    p.set_defaults(func=cmd_keygen)

    # Certificates through DNS (issue 8). Their options are here rather than in certify.py and
    # letsencrypt.py, whose imports (cryptography's x509, the ACME service) would cost every
    # start of `serve` 40 ms; each module is imported when its command runs.
    p = sub.add_parser(
        "certify", help="get a TLS certificate through DNS (needs gitdns letsencrypt)",
        description="Makes or reuses a private key, puts a CSR for HOSTNAME into DNS "
                    "(TLSA 3 255 0 at _letsencrypt._tcp.HOSTNAME) by a signed update, waits for "
                    "the certificate (TLSA 3 0 0, chain 2 0 0) and writes it. A valid certificate "
                    "already in DNS for the same key is reused. Exit status: 0 certificate "
                    "written, 1 failure or timeout, 2 bad usage.")
    p.add_argument("hostname")
    p.add_argument("--server", required=True, metavar="ADDR[:PORT]", help="the primary")
    p.add_argument("--key", required=True,
                   help="TSIG key allowed to update the zone: NAME:ALG:SECRET or @FILE")
    p.add_argument("--additional", action="append", default=[], metavar="NAME",
                   help="another name for the certificate (repeatable)")
    p.add_argument("--key-file", metavar="FILE",
                   help="private key (PEM): used if it exists, else made (default: HOSTNAME.key)")
    p.add_argument("--cert-file", metavar="FILE",
                   help="where the certificate and chain go (PEM; default: HOSTNAME.pem)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the certificate (default: 300)")
    p.add_argument("--force", action="store_true",
                   help="ask for a new certificate even if DNS holds a valid one")
    p.add_argument("--type", dest="key_type", choices=["ecdsa", "rsa"], default="ecdsa",
                   help="type of a new private key (default: ecdsa, P-256)")
    p.add_argument("--bits", type=int, default=2048, help="size of a new RSA key (default: 2048)")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser(
        "letsencrypt", help="get certificates from an ACME CA for CSRs in DNS (hidden secondary)",
        description="A hidden secondary of the primary: on every change (NOTIFY on a TCP "
                    "connection it keeps open) and once a day it finds CSRs at "
                    "_letsencrypt._tcp.HOST (TLSA 3 255 0) without a valid certificate, solves "
                    "DNS-01 through signed UPDATEs and stores the certificate as TLSA 3 0 0 "
                    "and the chain as TLSA 2 0 0.")
    p.add_argument("--key", required=True,
                   help="an _update key (NAME:ALG:SECRET or @FILE); its zone is what we serve "
                        "(a root key: every zone)")
    p.add_argument("--primary", required=True, metavar="ADDR[:PORT]")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--directory", metavar="URL",
                       help="ACME directory (default: Let's Encrypt staging)")
    where.add_argument("--production", action="store_true",
                       help="use Let's Encrypt's production directory")
    p.add_argument("--ca-bundle", metavar="FILE",
                   help="CA certificates to trust for the ACME server's HTTPS")
    p.add_argument("--email", help="contact address for the ACME account")
    p.add_argument("--data-dir", help="where the account key is kept (default: the gitdns "
                   "state directory + /letsencrypt)")
    p.add_argument("--ns-check", action="append", metavar="ADDR[:PORT]",
                   help="wait until this server serves the challenge, instead of the zone's "
                        "name servers on port 53 (repeatable)")
    p.add_argument("--renew-before", type=float, default=14.0, metavar="DAYS",
                   help="renew this long before expiry (default: 14)")
    p.add_argument("--retry-min", type=float, default=60.0, metavar="SECONDS",
                   help="first wait after a failure; doubles per failure (default: 60)")
    p.add_argument("--retry-max", type=float, default=3600.0, metavar="SECONDS",
                   help="longest wait between attempts (default: 3600)")
    p.add_argument("--propagation-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long the name servers may take to serve a challenge (default: 300)")
    p.add_argument("--log-level", default=argparse.SUPPRESS,
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_letsencrypt)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("notify", "update") and not (args.key or args.key_file):
        parser.error(f"{args.command} needs --key or --key-file")
    _setup_logging(args.log_level)
    return args.func(args)
