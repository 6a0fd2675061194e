"""Issue 6 against the real programs: `gitdns secondary` fed by a gitdns primary, by BIND and by
Knot, feeding BIND in turn, serving through primary outages, expiring, refusing tampered
transfers, and answering the differential corpus as BIND does. Every peer runs on loopback,
started and stopped here; NOTIFY goes only to the loopback ports given."""

from __future__ import annotations

import base64
import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.interop.peers import (
    LOOPBACK,
    Peer,
    TsigKey,
    free_port,
    make_git_repo,
    start_gitdns,
    start_gitdns_secondary,
    start_knot_primary,
    start_named_primary,
    start_named_secondary,
)
from tests.interop.test_transfers import DIG, commit, dig, keys_text, serial_at

pytestmark = pytest.mark.skipif(DIG is None, reason="dig is installed by scripts/test")

# The key names the primary (127.0.0.1) and the secondary; the port comes from --primary.
XFR = TsigKey("127.0.0.1.127.0.0.1._transfer.example.test", base64.b64encode(b"t" * 32).decode())
NTF = TsigKey("ops._notify.example.test", base64.b64encode(b"n" * 32).decode())
UPD = TsigKey("personal._update.example.test", base64.b64encode(b"u" * 32).decode())
ROOT = TsigKey("hidden._transfer", base64.b64encode(b"r" * 32).decode())
# Keys as BIND and Knot operators name them: the name grants nothing, the primary's ACL does.
BIND_XFR = TsigKey("secondary-key", base64.b64encode(b"b" * 32).decode())
BIND_UPD = TsigKey("update-key", base64.b64encode(b"v" * 32).decode())


def arg(key: TsigKey) -> str:
    return f"{key.name}:{key.algorithm}:{key.secret}"


def zone_text(serial: int, extra: str = "", refresh: int = 3600, retry: int = 600,
              expire: int = 86400) -> str:
    return f"""$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster {serial} {refresh} {retry} {expire} 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.{serial % 250}
{extra}"""


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", peer: Peer | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    log = f"\nlog of {peer.name}:\n{peer.log_text(80)}" if peer else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{log}")


def rcode_of(port: int, name: str, rdtype: str = "A") -> int | None:
    try:
        r = dns.query.udp(dns.message.make_query(name, rdtype), LOOPBACK, port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None
    return r.rcode()


def address_of(port: int, name: str) -> str | None:
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), LOOPBACK, port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None
    return r.answer[0][0].address if r.answer else None


def nsupdate(port: int, key: TsigKey, commands: str) -> None:
    script = f"server 127.0.0.1 {port}\nzone example.test\n{commands}\nsend\n"
    out = subprocess.run(["nsupdate", "-y", key.dig], input=script, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def notify_primary(port: int) -> None:
    out = dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    assert "status: NOERROR" in out, out


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[Peer]:
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def stack(tmp_path):
    """Start peers through `stack.enter_context(...)`; every one is stopped at the end."""
    with contextlib.ExitStack() as s:
        yield s


def gitdns_primary(stack, tmp_path: Path, files: dict[str, str], *secondary_ports: int):
    repo = make_git_repo(tmp_path / "zones", files)
    port = free_port()
    args = [a for p in secondary_ports for a in ("--also-notify", f"127.0.0.1:{p}")]
    zones = [f for f in files if not f.endswith("_keys")]
    peer = stack.enter_context(running(
        start_gitdns(repo, port, tmp_path / "primary", args, zones=zones)))
    return peer, repo, port


def test_gitdns_primary_change_served_within_5s_by_ixfr(stack, tmp_path):
    sport = free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1), "example.test._keys": keys_text(XFR, NTF)}, sport)
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(XFR)], primary=f"127.0.0.1:{pport}",
        wait_for=["example.test"])))
    assert "AXFR serial none -> 1" in sec.log_text(200)
    commit(repo, {"example.test": zone_text(2, "new A 192.0.2.99\n")})
    started = time.monotonic()
    notify_primary(pport)  # the primary pulls, then notifies the secondary
    wait_for(lambda: address_of(sport, "new.example.test") == "192.0.2.99", 5,
             "the change on the secondary", sec)
    took = time.monotonic() - started
    assert took < 5
    # The new answer can be seen a moment before the transfer's log line is written.
    wait_for(lambda: "IXFR serial 1 -> 2" in sec.log_text(200), 5, "the IXFR in the log", sec)
    log = sec.log_text(200)
    assert "NOTIFY for example.test. serial 2 from 127.0.0.1" in log
    assert "IXFR from 1 (incremental)" in primary.log_text(200)
    assert serial_at(sport) == 2
    # Served as the primary serves it, signed transfers out included.
    out = dig(sport, "-y", XFR.dig, "example.test", "AXFR")
    assert out.count("IN\tSOA") == 2 and "new.example.test." in out, out
    assert "Traceback" not in log


def test_update_sent_to_the_secondary_reaches_the_gitdns_primary(stack, tmp_path):
    """RFC 2136 section 6: nsupdate against the secondary; the primary commits it to git and
    notifies; the secondary serves it. An unsigned update is refused, never forwarded."""
    sport, pport = free_port(), free_port()
    seed = make_git_repo(tmp_path / "seed", {
        "example.test": zone_text(1), "example.test._keys": keys_text(XFR, UPD)})
    bare = tmp_path / "zones.git"  # a remote the primary can push its commits to
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(bare)], check=True,
                   timeout=30)
    primary = stack.enter_context(running(start_gitdns(
        bare, pport, tmp_path / "primary", ["--also-notify", f"127.0.0.1:{sport}"],
        zones=["example.test"])))
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(XFR)], primary=f"127.0.0.1:{pport}",
        wait_for=["example.test"])))
    nsupdate(sport, UPD, "update add fwd.example.test. 300 A 192.0.2.55")
    assert address_of(pport, "fwd.example.test") == "192.0.2.55"
    wait_for(lambda: address_of(sport, "fwd.example.test") == "192.0.2.55", 5,
             "the forwarded update served by the secondary", sec)
    assert "forwarded to 127.0.0.1" in sec.log_text(200)
    wait_for(lambda: "192.0.2.55" in subprocess.run(
        ["git", "--git-dir", str(bare), "show", "main:example.test"], capture_output=True,
        text=True, timeout=30).stdout, 10, "the update pushed to git", primary)
    out = subprocess.run(["nsupdate"], input=f"server 127.0.0.1 {sport}\nzone example.test\n"
                         "update add plain.example.test. 300 A 192.0.2.56\nsend\n",
                         capture_output=True, text=True, timeout=30)
    assert "REFUSED" in out.stdout + out.stderr, out
    assert "unsigned UPDATE for example.test. from 127.0.0.1: refused" in sec.log_text(200)


def test_root_key_follows_every_zone_the_primary_announces(stack, tmp_path):
    other = zone_text(1).replace("example.test.", "other.test.")
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1), "other.test": other, "_keys": keys_text(ROOT),
        "example.test._keys": keys_text(NTF)})
    sport = free_port()
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(ROOT)], primary=f"127.0.0.1:{pport}",
        wait_for=["example.test", "other.test"])))
    log = sec.log_text(200)
    assert "following other.test. from 127.0.0.1" in log and "announced under a root key" in log
    # A new zone in git: the primary tells the hidden-secondary connection, signed.
    commit(repo, {"third.test": zone_text(5).replace("example.test.", "third.test.")})
    notify_primary(pport)
    wait_for(lambda: serial_at(sport, "third.test") == 5, 5, "third.test on the secondary", sec)
    commit(repo, {"example.test": zone_text(2, "new A 192.0.2.99\n")})
    notify_primary(pport)
    wait_for(lambda: address_of(sport, "new.example.test") == "192.0.2.99", 5,
             "the change", sec)
    log = sec.log_text(400)
    assert "(signed with hidden._transfer.)" in log and "IXFR serial 1 -> 2" in log
    assert "Traceback" not in log


def test_bind_primary_nsupdate_followed(stack, tmp_path):
    sport, bport = free_port(), free_port()
    bind = stack.enter_context(running(start_named_primary(
        tmp_path / "named", {"example.test": zone_text(1)}, bport, BIND_XFR, BIND_UPD, [sport])))
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(BIND_XFR)], primary=f"127.0.0.1:{bport}",
        zones=["example.test"], wait_for=["example.test"])))
    nsupdate(bport, BIND_UPD, "update add bind1.example.test. 300 A 192.0.2.101")
    wait_for(lambda: address_of(sport, "bind1.example.test") == "192.0.2.101", 10,
             "the update on the secondary", sec)
    log = sec.log_text(300)
    assert "NOTIFY for example.test. serial 2 from 127.0.0.1 (unsigned)" in log, log
    assert "IXFR serial 1 -> 2" in log, log
    # An update sent to the secondary goes to BIND (RFC 2136 6), and comes back by NOTIFY.
    nsupdate(sport, BIND_UPD, "update add bind2.example.test. 300 A 192.0.2.102")
    wait_for(lambda: address_of(sport, "bind2.example.test") == "192.0.2.102", 10,
             "the forwarded update on the secondary", sec)
    assert "forwarded to 127.0.0.1" in sec.log_text(300)
    assert address_of(bport, "bind2.example.test") == "192.0.2.102"
    assert bind.running() and "Traceback" not in sec.log_text(1000)


def test_knot_primary_nsupdate_followed(stack, tmp_path):
    sport, kport = free_port(), free_port()
    stack.enter_context(running(start_knot_primary(
        tmp_path / "knot", {"example.test": zone_text(1)}, kport, BIND_XFR, BIND_UPD, [sport])))
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(BIND_XFR)], primary=f"127.0.0.1:{kport}",
        zones=["example.test"], wait_for=["example.test"])))
    for i in (1, 2):
        nsupdate(kport, BIND_UPD, f"update add knot{i}.example.test. 300 A 192.0.2.{110 + i}")
        wait_for(lambda i=i: address_of(sport, f"knot{i}.example.test") == f"192.0.2.{110 + i}",
                 10, f"update {i} on the secondary", sec)
    log = sec.log_text(300)
    assert "(signed with secondary-key.)" in log, log  # Knot signs its NOTIFY
    assert "IXFR serial 2 -> 3" in log, log
    assert "Traceback" not in log


def test_chain_gitdns_to_gitdns_to_bind(stack, tmp_path):
    sport, bport = free_port(), free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1), "example.test._keys": keys_text(XFR, NTF)}, sport)
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(XFR)], primary=f"127.0.0.1:{pport}",
        also_notify=[f"127.0.0.1:{bport}"], wait_for=["example.test"])))
    bind = stack.enter_context(running(start_named_secondary(
        tmp_path / "bind", bport, sport, ["example.test"], XFR)))
    assert serial_at(bport) == 1
    commit(repo, {"example.test": zone_text(2, "chained A 192.0.2.42\n")})
    notify_primary(pport)
    wait_for(lambda: address_of(bport, "chained.example.test") == "192.0.2.42", 10,
             "the change at the end of the chain", bind)
    log = sec.log_text(300)
    assert "NOTIFY example.test. serial 2 acknowledged by 127.0.0.1" in log, log
    assert "IXFR from 1 (incremental) of example.test. serial 2" in log, log


def test_primary_down_secondary_restarted_still_serves(stack, tmp_path):
    sport = free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(7, "kept A 192.0.2.77\n"),
        "example.test._keys": keys_text(XFR, NTF)}, sport)
    keys, data = [arg(XFR)], tmp_path / "sdata"
    with running(start_gitdns_secondary(data, sport, keys, primary=f"127.0.0.1:{pport}",
                                        wait_for=["example.test"])):
        pass
    primary.stop()
    assert (data / "example.test.zone").exists() and (data / "example.test.json").exists()
    sec = stack.enter_context(running(start_gitdns_secondary(
        data, sport, keys, primary=f"127.0.0.1:{pport}", wait_for=["example.test"])))
    assert address_of(sport, "kept.example.test") == "192.0.2.77"
    assert serial_at(sport) == 7
    log = sec.log_text(200)
    assert "serving example.test. serial 7 from disk" in log
    wait_for(lambda: "refresh of example.test. from 127.0.0.1" in sec.log_text(200), 10,
             "a failed refresh logged", sec)
    assert "still serving serial 7" in sec.log_text(200)


def test_expire_reached_servfail(stack, tmp_path):
    sport = free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1, refresh=2, retry=2, expire=6),
        "example.test._keys": keys_text(XFR)}, sport)
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(XFR)], primary=f"127.0.0.1:{pport}",
        wait_for=["example.test"])))
    primary.stop()
    stopped = time.monotonic()
    wait_for(lambda: rcode_of(sport, "www.example.test") == dns.rcode.SERVFAIL, 15,
             "SERVFAIL after expire", sec)
    assert time.monotonic() - stopped > 3  # served until the expire time, not dropped at once
    log = sec.log_text(300)
    assert "expired: no successful refresh from 127.0.0.1" in log, log
    assert "SOA expire 6 s" in log and "answering SERVFAIL" in log
    assert rcode_of(sport, "example.test", "SOA") == dns.rcode.SERVFAIL
    assert rcode_of(sport, "elsewhere.test") == dns.rcode.REFUSED


def test_wrong_key_changes_nothing(stack, tmp_path):
    sport = free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1), "example.test._keys": keys_text(XFR)})
    wrong = TsigKey(XFR.name, base64.b64encode(b"x" * 32).decode())
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(wrong)], primary=f"127.0.0.1:{pport}")))
    wait_for(lambda: "rejected our signature" in sec.log_text(200), 10, "the refusal", sec)
    assert rcode_of(sport, "www.example.test") == dns.rcode.SERVFAIL
    assert not (tmp_path / "sdata" / "example.test.zone").exists()


class TamperingProxy:
    """Between the secondary and the primary: UDP passed through, TCP replies passed through or,
    while `tamper` is set, with `old` bytes replaced by `new` (a record changed in flight)."""

    def __init__(self, upstream: int, old: bytes, new: bytes):
        self.upstream, self.old, self.new = upstream, old, new
        self.port = free_port()
        self.tamper = False
        self.tampered = 0
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LOOPBACK, self.port))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((LOOPBACK, self.port))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def _udp_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                data, client = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(2)
                up.sendto(data, (LOOPBACK, self.upstream))
                with contextlib.suppress(OSError):
                    self.udp.sendto(up.recv(65535), client)

    def _tcp_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection((LOOPBACK, self.upstream), timeout=5) as up:
            client.settimeout(5)
            with contextlib.suppress(OSError):
                up.sendall(self._read_frame(client))
                while True:
                    frame = self._read_frame(up)
                    if self.tamper and self.old in frame:
                        frame = frame.replace(self.old, self.new)
                        self.tampered += 1
                    client.sendall(frame)

    @staticmethod
    def _read_frame(sock: socket.socket) -> bytes:
        head = b""
        while len(head) < 2:
            chunk = sock.recv(2 - len(head))
            if not chunk:
                raise OSError("closed")
            head += chunk
        (size,) = struct.unpack("!H", head)
        body = b""
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                raise OSError("closed")
            body += chunk
        return head + body

    def close(self) -> None:
        self.stopping.set()
        self.udp.close()
        self.tcp.close()
        for t in self.threads:
            t.join(5)


def test_tampered_transfer_changes_nothing(stack, tmp_path):
    sport = free_port()
    primary, repo, pport = gitdns_primary(stack, tmp_path, {
        "example.test": zone_text(1, refresh=3600, retry=2),
        "example.test._keys": keys_text(XFR, NTF)}, sport)
    proxy = TamperingProxy(pport, bytes([192, 0, 2, 99]), bytes([192, 0, 2, 66]))
    stack.callback(proxy.close)
    sec = stack.enter_context(running(start_gitdns_secondary(
        tmp_path / "sdata", sport, [arg(XFR)], primary=f"127.0.0.1:{proxy.port}",
        wait_for=["example.test"])))
    saved = (tmp_path / "sdata" / "example.test.zone").read_text()
    proxy.tamper = True
    commit(repo, {"example.test": zone_text(2, "new A 192.0.2.99\n", refresh=3600, retry=2)})
    notify_primary(pport)
    wait_for(lambda: "signature does not verify" in sec.log_text(300), 10,
             "the rejected transfer", sec)
    assert proxy.tampered >= 1
    assert serial_at(sport) == 1 and rcode_of(sport, "new.example.test") == dns.rcode.NXDOMAIN
    assert (tmp_path / "sdata" / "example.test.zone").read_text() == saved
    assert "still serving serial 1" in sec.log_text(300)
    # The honest transfer on the next try (the SOA's retry, 2 s).
    proxy.tamper = False
    wait_for(lambda: address_of(sport, "new.example.test") == "192.0.2.99", 10,
             "the transfer after the retry", sec)


# -- the differential corpus through a chained secondary -----------------------------------------

from tests.interop.test_differential_bind import (  # noqa: E402  (fixtures, after the tests above)
    CASES,
    CORPUS,
    bind_replies,  # noqa: F401 - a fixture
    named,  # noqa: F401 - a fixture
    report,
    run_against,
    server_exchange,
)


def same_reply(wire: bytes) -> tuple:
    """A reply as bytes, but for the order of records, which dnspython shuffles in every RRset
    it renders (so two replies of one server differ too), and the case of names in the
    sections: the header (id, flags, rcode, counts) and the question byte for byte, each
    section's records as a sorted list of their canonical wire forms (RFC 4034 6.2), the OPT.

    Case: a transfer carries names in rdata compressed against names of another case (dnspython
    compresses without case), so the secondary may hold `CNAME WWW` where the primary's file
    says `www`, and a CNAME chase names the target as the rdata spells it."""
    message = dns.message.from_wire(wire)
    sections = []
    for section in (message.answer, message.authority, message.additional):
        records = []
        for rrset in section:
            for rd in rrset:
                records.append((rrset.name.canonicalize().to_wire(), rrset.rdtype, rrset.ttl,
                                rd.to_digestable()))
        sections.append(sorted(records))
    question_end = 12 + sum(len(q.name.to_wire()) + 4 for q in message.question)
    return (wire[:12], wire[12:question_end], sections, message.edns, message.ednsflags,
            message.payload)


def test_secondary_answers_like_bind_and_like_its_primary(named, bind_replies, tmp_path):  # noqa: F811
    """The corpus served by `gitdns serve`, transferred to `gitdns secondary` under a root key:
    the secondary answers every query of the differential corpus as BIND does (the same
    comparison and known differences as test_differential_bind), and byte for byte as its
    primary does (up to the order of records inside each section, which dnspython shuffles)."""
    files = {name: p.read_bytes() for name, p in CORPUS.items()}
    files["_keys"] = keys_text(ROOT).encode()
    repo = make_git_repo(tmp_path / "zones", files)
    pport, sport = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(running(
            start_gitdns(repo, pport, tmp_path / "primary", zones=list(CORPUS))))
        sec = stack.enter_context(running(start_gitdns_secondary(
            tmp_path / "sdata", sport, [arg(ROOT)], primary=f"127.0.0.1:{pport}",
            zones=list(CORPUS), wait_for=list(CORPUS), timeout=30)))
        run = run_against(server_exchange(sport), named.port, bind_replies)
        if run.mismatches or run.compared < 300:
            pytest.fail(report(run), pytrace=False)
        ours, theirs = server_exchange(sport), server_exchange(pport)
        different = []
        for case in CASES:
            wire = case.wire()
            a, b = ours(wire, case.transport.tcp), theirs(wire, case.transport.tcp)
            if a is None or b is None or same_reply(a) != same_reply(b):
                different.append(str(case))
        assert not different, f"{len(different)} replies differ from the primary's, e.g. " \
            f"{different[:5]}"
        assert "Traceback" not in sec.log_text(10_000)
        assert primary.running()
