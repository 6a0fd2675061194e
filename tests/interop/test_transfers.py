"""Issue 4 against the real programs: TSIG with dig, NOTIFY-triggered pulls, AXFR/IXFR to BIND,
Knot and NSD secondaries, NOTIFY out, hidden secondaries, key reloads and stale signatures."""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from tests.interop.peers import (
    TsigKey,
    free_port,
    make_git_repo,
    read_frame,
    start_gitdns,
    start_knot_secondary,
    start_named_secondary,
    start_nsd_secondary,
)

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig is installed by scripts/test")

XFR = TsigKey("xfr._transfer.example.test", base64.b64encode(b"t" * 32).decode())
UPD = TsigKey("personal._update.example.test", base64.b64encode(b"u" * 32).decode())
NTF = TsigKey("ops._notify.example.test", base64.b64encode(b"n" * 32).decode())
OTHER = TsigKey("xfr._transfer.other.test", base64.b64encode(b"o" * 32).decode())
ROOT = TsigKey("hidden._transfer", base64.b64encode(b"r" * 32).decode(), "hmac-sha512")


def zone_text(serial: int, extra: str = "") -> str:
    return f"""$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster {serial} 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.{serial % 250}
{extra}"""


def keys_text(*keys: TsigKey) -> str:
    numbers = {"hmac-sha256": 163, "hmac-sha512": 165}
    return "".join(f"{k.name}. DNSKEY 0 3 {numbers[k.algorithm]} {k.secret}\n" for k in keys)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True, timeout=60)


def commit(repo: Path, files: dict[str, str], msg: str = "edit") -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", *files)
    git(repo, "commit", "-q", "-m", msg)


def dig(port: int, *args: str) -> str:
    out = subprocess.run([DIG, "@127.0.0.1", "-p", str(port), *args], capture_output=True,
                         text=True, timeout=30)
    return out.stdout + out.stderr


def serial_at(port: int, zone: str = "example.test") -> int | None:
    q = dns.message.make_query(zone, "SOA")
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return None
    return r.answer[0][0].serial if r.answer else None


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def primary(tmp_path):
    """A primary of example.test with transfer, update and notify keys; (peer, repo, port)."""
    repo = make_git_repo(tmp_path / "zones", {
        "example.test": zone_text(1),
        "_keys": keys_text(UPD, ROOT),
        "example.test._keys": keys_text(XFR, NTF),
    })
    port = free_port()
    peer = start_gitdns(repo, port, tmp_path / "data", zones=["example.test"])
    yield peer, repo, port
    peer.stop()


def test_dig_axfr_signed_unsigned_wrong_secret_wrong_zone(primary):
    _peer, _repo, port = primary
    out = dig(port, "-y", XFR.dig, "example.test", "AXFR")
    assert out.count("IN\tSOA") == 2 and "www.example.test." in out, out
    assert "DNSKEY" not in out  # keys are never served
    assert "Transfer failed" in dig(port, "example.test", "AXFR")  # unsigned: REFUSED
    wrong = TsigKey(XFR.name, base64.b64encode(b"x" * 32).decode())
    out = dig(port, "-y", wrong.dig, "example.test", "AXFR")
    assert "BADSIG" in out or "tsig verify failure" in out, out
    assert " BADKEY " in dig(port, "-y", OTHER.dig, "example.test", "AXFR")  # unknown key
    notify_only = dig(port, "-y", NTF.dig, "example.test", "AXFR")
    assert "Transfer failed" in notify_only  # a _notify key has no transfer right
    # An update key includes the transfer right; a root key covers every zone.
    assert dig(port, "-y", UPD.dig, "example.test", "AXFR").count("IN\tSOA") == 2
    assert dig(port, "-y", ROOT.dig, "example.test", "AXFR").count("IN\tSOA") == 2


def test_dig_ixfr_after_a_pulled_change(primary):
    peer, repo, port = primary
    commit(repo, {"example.test": zone_text(2, "new A 192.0.2.99\n")})
    out = dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    assert "status: NOERROR" in out and "opcode: NOTIFY" in out, out
    assert serial_at(port) == 2  # the acknowledgement comes after the pull
    out = dig(port, "-y", XFR.dig, "example.test", "IXFR=1")
    records = [ln for ln in out.splitlines() if ln and not ln.startswith(";")]
    # IXFR: new SOA, old SOA, deleted, new SOA, added, new SOA
    types = [ln.split()[3] for ln in records if ln.split()[3] != "TSIG"]
    assert types == ["SOA", "SOA", "A", "SOA", "A", "A", "SOA"], out
    assert "192.0.2.99" in out
    up_to_date = dig(port, "-y", XFR.dig, "example.test", "IXFR=2")
    assert [ln.split()[3] for ln in up_to_date.splitlines()
            if ln and not ln.startswith(";") and "TSIG" not in ln] == ["SOA"]


def test_ixfr_from_git_history_after_a_restart(tmp_path):
    repo = make_git_repo(tmp_path / "zones", {"example.test": zone_text(1),
                                              "example.test._keys": keys_text(XFR)})
    commit(repo, {"example.test": zone_text(2, "a A 192.0.2.10\n")})
    commit(repo, {"example.test": zone_text(3, "a A 192.0.2.10\nb A 192.0.2.11\n")})
    port = free_port()
    with start_gitdns(repo, port, tmp_path / "data", zones=["example.test"]):
        out = dig(port, "-y", XFR.dig, "example.test", "IXFR=1")
        soas = re.findall(r"IN\tSOA\t\S+ \S+ (\d+)", out)
        assert soas[0] == "3" and soas[-1] == "3" and "1" in soas, out
        assert "b.example.test." in out and "a.example.test." in out


def test_notify_from_gitdns_and_unsigned_or_bad_notify_never_pulls(primary):
    peer, repo, port = primary
    commit(repo, {"example.test": zone_text(5)})
    # Unsigned: REFUSED, no pull.
    assert "status: REFUSED" in dig(port, "+opcode=notify", "example.test", "SOA")
    wrong = TsigKey(NTF.name, base64.b64encode(b"w" * 32).decode())
    out = dig(port, "+opcode=notify", "-y", wrong.dig, "example.test", "SOA")
    assert "status: NOTAUTH" in out and " BADSIG " in out, out
    # A key we do not have (here: one for another zone): BADKEY.
    out = dig(port, "+opcode=notify", "-y", OTHER.dig, "example.test", "SOA")
    assert "status: NOTAUTH" in out and " BADKEY " in out, out
    # Nothing was pulled: the pushed change is not served.
    assert "pull:" not in peer.log_text(500)
    assert serial_at(port) == 1
    # gitdns notify with the update key: the pushed change is served.
    res = subprocess.run(
        [sys.executable, "-m", "gitdns", "notify", "example.test", "--server",
         f"127.0.0.1:{port}", "--key", f"{UPD.name}:{UPD.algorithm}:{UPD.secret}"],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "acknowledged" in res.stdout, res.stderr
    assert serial_at(port) == 5


def test_stale_signed_notify_gets_badtime_and_no_pull(primary):
    peer, repo, port = primary
    commit(repo, {"example.test": zone_text(7)})
    keyring = dns.tsigkeyring.from_text({NTF.name: (NTF.algorithm, NTF.secret)})
    message = dns.message.make_query("example.test", "SOA")
    message.set_opcode(dns.opcode.NOTIFY)
    message.use_tsig(keyring, NTF.name)
    real_time = time.time
    try:  # sign as if it were an hour ago: a replayed NOTIFY
        time.time = lambda: real_time() - 3600  # type: ignore[assignment]
        wire = message.to_wire()
    finally:
        time.time = real_time  # type: ignore[assignment]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire, ("127.0.0.1", port))
        reply = s.recv(4096)
    assert reply[3] & 0xF == dns.rcode.NOTAUTH
    tsig = dns.message.from_wire(reply, keyring=lambda _m, _n: False).tsig[0]
    assert tsig.error == dns.rcode.BADTIME
    assert abs(int.from_bytes(tsig.other, "big") - real_time()) < 60  # our time, for the client
    # The BADTIME answer is signed with the key (RFC 8945 5.2.3): a full-length MAC.
    assert len(tsig.mac) == 32
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(reply, keyring=keyring, request_mac=message.mac)
    assert serial_at(port) == 1


def test_burst_of_notifies_pulls_one_at_a_time_and_loses_none(primary):
    peer, repo, port = primary
    commit(repo, {"example.test": zone_text(9)})
    keyring = dns.tsigkeyring.from_text({NTF.name: (NTF.algorithm, NTF.secret)})
    results: list[int] = []

    def send():
        m = dns.message.make_query("example.test", "SOA")
        m.set_opcode(dns.opcode.NOTIFY)
        m.use_tsig(keyring, NTF.name)
        r = dns.query.udp(m, "127.0.0.1", port=port, timeout=20)
        results.append(r.rcode())

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [dns.rcode.NOERROR] * 20
    assert serial_at(port) == 9
    pulls = peer.log_text(1000).count("pull: repository")
    assert 1 <= pulls < 20, f"{pulls} pulls for a burst of 20 NOTIFYs: they were not coalesced"
    # A NOTIFY arriving after a pull started causes another pull: nothing is lost.
    commit(repo, {"example.test": zone_text(10)})
    send()
    assert serial_at(port) == 10


def test_keys_reload_and_bad_key_files_keep_the_last_good(primary):
    peer, repo, port = primary
    new = TsigKey("second._transfer.example.test", base64.b64encode(b"s" * 32).decode())
    assert " BADKEY " in dig(port, "-y", new.dig, "example.test", "AXFR")
    commit(repo, {"example.test._keys": keys_text(XFR, NTF, new)})
    assert "NOERROR" in dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    assert dig(port, "-y", new.dig, "example.test", "AXFR").count("IN\tSOA") == 2
    # A broken key file: logged, the previous keys stay.
    commit(repo, {"example.test._keys": "second._transfer.example.test. DNSKEY 0 3 163 !!notb64\n"})
    assert "NOERROR" in dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    wait_for(lambda: "keeping its 3 previous keys" in peer.log_text(500), what="key error log")
    assert dig(port, "-y", new.dig, "example.test", "AXFR").count("IN\tSOA") == 2
    # Removing a key takes effect at the next pull.
    commit(repo, {"example.test._keys": keys_text(XFR, NTF)})
    assert "NOERROR" in dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    assert " BADKEY " in dig(port, "-y", new.dig, "example.test", "AXFR")


def test_poll_pulls_on_a_timer(tmp_path):
    repo = make_git_repo(tmp_path / "zones", {"example.test": zone_text(1)})
    port = free_port()
    with start_gitdns(repo, port, tmp_path / "data", ["--poll", "0.5"], zones=["example.test"]):
        commit(repo, {"example.test": zone_text(4)})
        wait_for(lambda: serial_at(port) == 4, timeout=10, what="poll to pick up serial 4")


def test_hidden_secondary_gets_notify_on_its_tcp_connection(primary):
    peer, repo, port = primary
    keyring = dns.tsigkeyring.from_text({ROOT.name: (ROOT.algorithm, ROOT.secret)})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        q = dns.message.make_query(".", "SOA")
        q.use_tsig(keyring, ROOT.name, algorithm=dns.tsig.HMAC_SHA512)
        s.sendall(q.to_wire(prepend_length=True))
        first = read_frame(s)  # the answer to the SOA query (REFUSED for the root: not ours)
        assert dns.message.from_wire(first, keyring=keyring, request_mac=q.mac).id == q.id
        # A root key: NOTIFY at once for every zone it covers.
        hello = dns.message.from_wire(read_frame(s), keyring=keyring)
        assert hello.opcode() == dns.opcode.NOTIFY and hello.had_tsig
        assert str(hello.question[0].name) == "example.test."
        # A change pushed and pulled: a NOTIFY arrives on the same connection.
        commit(repo, {"example.test": zone_text(3)})
        dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
        note = dns.message.from_wire(read_frame(s), keyring=keyring)
        assert note.opcode() == dns.opcode.NOTIFY and note.answer[0][0].serial == 3
    assert "hidden secondary" in peer.log_text(500)


def _primary_for_secondaries(tmp_path, sec_port: int):
    repo = make_git_repo(tmp_path / "zones", {
        "example.test": zone_text(1) + "".join(f"h{i} A 10.0.{i // 250}.{i % 250}\n"
                                               for i in range(2000)),
        "example.test._keys": keys_text(XFR, NTF),
    })
    port = free_port()
    peer = start_gitdns(repo, port, tmp_path / "data", ["--also-notify", f"127.0.0.1:{sec_port}"],
                        zones=["example.test"])
    return peer, repo, port


def _push_change_and_wait(repo, port, sec_port, serial):
    text = (repo / "example.test").read_text()
    text = re.sub(r"hostmaster \d+", f"hostmaster {serial}", text) + f"new{serial} A 192.0.2.77\n"
    commit(repo, {"example.test": text})
    assert "NOERROR" in dig(port, "+opcode=notify", "-y", NTF.dig, "example.test", "SOA")
    started = time.monotonic()
    wait_for(lambda: serial_at(sec_port) == serial, timeout=5,
             what=f"the secondary to serve serial {serial}")
    return time.monotonic() - started


def test_bind_secondary_follows_by_ixfr(tmp_path):
    sec_port = free_port()
    peer, repo, port = _primary_for_secondaries(tmp_path, sec_port)
    try:
        with start_named_secondary(tmp_path / "named", sec_port, port, ["example.test"], XFR) as n:
            assert serial_at(sec_port) == 1
            took = _push_change_and_wait(repo, port, sec_port, 2)
            assert took < 5
            log = wait_for(lambda: "(serial 2)" in n.log_text(400) and n.log_text(400),
                           what="named's transfer log")
            # BIND does not name the transfer type at this log level: the first transfer
            # carried the whole zone, the second only the difference (SOA SOA SOA A SOA).
            assert re.search(r"Transfer completed: 1 messages, 2005 records.*\(serial 1\)", log)
            assert re.search(r"Transfer completed: 1 messages, 5 records.*\(serial 2\)", log), log
            assert "IXFR from 1 (incremental) of example.test. serial 2" in peer.log_text(500)
            answer = dns.query.udp(dns.message.make_query("new2.example.test", "A"),
                                   "127.0.0.1", port=sec_port, timeout=2)
            assert answer.answer[0][0].address == "192.0.2.77"
    finally:
        peer.stop()


def test_knot_secondary_follows_by_ixfr(tmp_path):
    sec_port = free_port()
    peer, repo, port = _primary_for_secondaries(tmp_path, sec_port)
    try:
        with start_knot_secondary(tmp_path / "knot", sec_port, port, ["example.test"], XFR) as k:
            took = _push_change_and_wait(repo, port, sec_port, 2)
            assert took < 5
            log = wait_for(lambda: "serial 1 -> 2" in k.log_text(400) and k.log_text(400),
                           what="knot's transfer log")
            assert re.search(r"IXFR, incoming.*finished", log), log
    finally:
        peer.stop()


def test_nsd_secondary_takes_axfr(tmp_path):
    sec_port = free_port()
    peer, repo, port = _primary_for_secondaries(tmp_path, sec_port)
    try:
        with start_nsd_secondary(tmp_path / "nsd", sec_port, port, ["example.test"], XFR):
            assert serial_at(sec_port) == 1
            _push_change_and_wait(repo, port, sec_port, 2)
    finally:
        peer.stop()
    assert "AXFR of example.test. serial 1" in peer.log_text(1000)
