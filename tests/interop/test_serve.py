"""`gitdns serve` as an operator meets it: real dig, UDP and TCP, IPv4 and IPv6, reloads on
SIGHUP without losing a query, broken zones that never take served ones down, hostile packets."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.interop.peers import free_port, make_git_repo, start_gitdns

DIG = shutil.which("dig")
ZONE = """$ORIGIN {zone}.
$TTL 300
@ SOA ns hostmaster {serial} 3600 600 86400 60
@ NS ns
ns A 192.0.2.1
www A 192.0.2.{serial}
"""
BROKEN_LINE = "www CNAME elsewhere.test.\n"  # beside the A record of www: line 7


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, check=True, capture_output=True, timeout=60,
    )


def commit_file(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"edit {name}")


def ask(port: int, name: str, rdtype: str = "A", tcp: bool = False, timeout: float = 2.0):
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=timeout)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def served(tmp_path):
    """A gitdns primary on a two-zone repository; yields (peer, repo, port)."""
    repo = make_git_repo(
        tmp_path / "zones",
        {
            "a.test": ZONE.format(zone="a.test", serial=1),
            "b.test": ZONE.format(zone="b.test", serial=1) + BROKEN_LINE,
            ".hidden": "not a zone",
            "_keys": "k._update. DNSKEY 0 3 163 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        },
    )
    (repo / "sub").mkdir()
    commit_file(repo, "sub/c.test", ZONE.format(zone="c.test", serial=1))
    port = free_port()
    peer = start_gitdns(
        repo, port, tmp_path / "data",
        ["--listen", f"[::1]:{port}", "--tcp-idle-timeout", "1"],
        zones=["a.test"],
    )
    yield peer, repo, port
    peer.stop()


@pytest.mark.skipif(DIG is None, reason="dig is installed by scripts/test")
def test_dig_over_udp_tcp_ipv4_ipv6(served):
    peer, _repo, port = served
    for extra in ([], ["+tcp"], ["-6"], ["-6", "+tcp"]):
        server = "@::1" if "-6" in extra else "@127.0.0.1"
        out = subprocess.run(
            [DIG, *extra, server, "-p", str(port), "www.a.test", "A", "+norec"],
            capture_output=True, text=True, timeout=20,
        ).stdout
        assert "status: NOERROR" in out, out
        assert "flags: qr aa;" in out, out
        assert "192.0.2.1" in out, out
    out = subprocess.run(
        [DIG, "@127.0.0.1", "-p", str(port), "nothere.a.test", "A"],
        capture_output=True, text=True, timeout=20,
    ).stdout
    assert "status: NXDOMAIN" in out and "IN\tSOA" in out, out


def test_broken_zone_not_served_at_start_others_are_and_files_are_ignored(served, tmp_path):
    peer, _repo, port = served
    assert ask(port, "www.a.test").rcode() == dns.rcode.NOERROR
    assert ask(port, "www.b.test").rcode() == dns.rcode.REFUSED  # broken at first start
    assert ask(port, "www.c.test").rcode() == dns.rcode.REFUSED  # in a folder: not a zone
    assert ask(port, "k._update", "DNSKEY").rcode() == dns.rcode.REFUSED  # keys never served
    log = peer.log_text(200)
    assert "b.test:7: CNAME at www.b.test. beside other data (A)" in log
    assert "zone b.test.: not served until the file is fixed" in log
    assert "zone a.test. loaded from a.test: serial 1, 4 records" in log
    clone = tmp_path / "data" / "repository"
    assert (clone / ".hidden").read_text() == "not a zone"  # ignored, never deleted
    assert (clone / "sub" / "c.test").exists()


def test_sighup_reload_keeps_last_good_and_takes_fixes(served):
    peer, repo, port = served
    commit_file(repo, "a.test", ZONE.format(zone="a.test", serial=2) + BROKEN_LINE)
    commit_file(repo, "b.test", ZONE.format(zone="b.test", serial=2))
    peer.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ask(port, "www.b.test").rcode() == dns.rcode.NOERROR, what="b.test served")
    # a.test broke: its last good version (serial 1) is still served.
    answer = ask(port, "www.a.test")
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.answer[0][0].address == "192.0.2.1"
    log = wait_for(lambda: "keeping serial 1 in service" in peer.log_text(200)
                   and peer.log_text(200), what="the error in the log")
    assert "a.test:7: CNAME at www.a.test. beside other data (A)" in log
    assert ask(port, "www.b.test").answer[0][0].address == "192.0.2.2"
    # Zones appear and vanish with their files.
    git(repo, "rm", "-q", "b.test")
    git(repo, "commit", "-q", "-m", "drop b")
    commit_file(repo, "d.test", ZONE.format(zone="d.test", serial=4))
    peer.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ask(port, "www.d.test").rcode() == dns.rcode.NOERROR, what="d.test served")
    assert ask(port, "www.b.test").rcode() == dns.rcode.REFUSED


def test_reload_under_load_loses_no_query(tmp_path):
    """Queries sent throughout several SIGHUP reloads of a 30k-record zone are all answered."""
    big = ZONE.format(zone="big.test", serial=1) + "".join(
        f"h{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(30000)
    )
    repo = make_git_repo(tmp_path / "zones", {"big.test": big})
    port = free_port()
    peer = start_gitdns(repo, port, tmp_path / "data", zones=["big.test"], timeout=60)
    sent = answered = wrong = 0
    stop = threading.Event()

    def load():
        nonlocal sent, answered, wrong
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3.0)
            while not stop.is_set() and sent < 200000:
                i = rng.randrange(30000)
                q = dns.message.make_query(f"h{i}.big.test", "A")
                s.sendto(q.to_wire(), ("127.0.0.1", port))
                sent += 1
                try:
                    r = dns.message.from_wire(s.recv(4096))
                except TimeoutError:
                    continue
                answered += 1
                if r.id != q.id or r.rcode() != dns.rcode.NOERROR or not r.answer:
                    wrong += 1

    try:
        worker = threading.Thread(target=load)
        worker.start()
        for serial in (2, 3, 4):
            commit_file(repo, "big.test", big.replace(" 1 3600 600", f" {serial} 3600 600", 1))
            peer.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda s=serial: ask(port, "big.test", "SOA").answer[0][0].serial == s,
                timeout=60, what=f"serial {serial}",
            )
        stop.set()
        worker.join(30)
        assert not worker.is_alive()
    finally:
        stop.set()
        peer.stop()
    print(f"reload under load: {sent} sent, {answered} answered")
    assert sent > 100
    assert answered == sent, f"{sent - answered} of {sent} queries lost during reloads"
    assert wrong == 0


def test_tcp_pipelined_queries_and_idle_timeout(served):
    _peer, _repo, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        queries = [dns.message.make_query(n, "A") for n in ("www.a.test", "ns.a.test", "x.a.test")]
        s.sendall(b"".join(q.to_wire(prepend_length=True) for q in queries))
        got = {}
        buf = b""
        while len(got) < 3:
            chunk = s.recv(4096)
            assert chunk, "server closed before answering every pipelined query"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                size = struct.unpack("!H", buf[:2])[0]
                r = dns.message.from_wire(buf[2 : 2 + size])
                buf = buf[2 + size :]
                got[r.id] = r
        assert {q.id for q in queries} == set(got)
        assert got[queries[2].id].rcode() == dns.rcode.NXDOMAIN
        # Idle: the server (idle timeout 1 s here) closes the connection.
        started = time.monotonic()
        s.settimeout(5)
        assert s.recv(1) == b""
        assert 0.5 < time.monotonic() - started < 4


def test_malformed_datagrams_and_frames_get_formerr_or_silence(served):
    peer, _repo, port = served
    rng = random.Random(2026)
    one_question = b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"  # flags, counts
    good = dns.message.make_query("www.a.test", "A").to_wire()
    packets = []
    for i in range(1000):
        kind = i % 8
        qid = struct.pack("!H", i)
        if kind == 0:  # truncated header
            packets.append(qid + bytes(rng.randrange(0, 10)))
        elif kind == 1:  # compression loop: name pointing at itself
            packets.append(qid + one_question + b"\xc0\x0c\x00\x01\x00\x01")
        elif kind == 2:  # pointer past the end
            packets.append(qid + one_question + b"\xc3\xff\x00\x01\x00\x01")
        elif kind == 3:  # a label of 64 bytes
            packets.append(qid + one_question + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")
        elif kind == 4:  # ten questions
            q = b"\x03www\x01a\x04test\x00\x00\x01\x00\x01"
            packets.append(qid + b"\x00\x00\x00\x0a" + bytes(6) + q * 10)
        elif kind == 5:  # zero questions
            packets.append(qid + bytes(10))
        elif kind == 6:  # wrong class (0)
            packets.append(qid + good[2:-2] + b"\x00\x00")
        else:  # random bit flips of a good query, response bit cleared
            b = bytearray(qid + good[2:])
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(2, len(b))] ^= 1 << rng.randrange(8)
            b[2] &= 0x7F
            packets.append(bytes(b))
    replies = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for p in packets:
            s.sendto(p, ("127.0.0.1", port))
            try:
                while True:
                    s.settimeout(0.0)
                    data = s.recv(65535)
                    replies.setdefault(struct.unpack("!H", data[:2])[0], []).append(data)
            except (BlockingIOError, TimeoutError):
                pass
        s.settimeout(0.3)
        try:
            while True:
                data = s.recv(65535)
                replies.setdefault(struct.unpack("!H", data[:2])[0], []).append(data)
        except TimeoutError:
            pass
    for i, p in enumerate(packets):
        for data in replies.get(i, []):
            assert data[2] & 0x80, "a reply has QR set"
            if i % 8 in (1, 2, 3, 4, 5, 6):
                assert data[3] & 0x0F == dns.rcode.FORMERR, (i, p, data)
    assert len(replies) > 500  # most malformed queries with a readable header got FORMERR
    # TCP: hostile frames on one connection, then a frame length that never arrives.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for p in packets[:200]:
            if len(p) >= 12:
                s.sendall(struct.pack("!H", len(p)) + p)
        s.sendall(b"\xff\xff" + b"\x00" * 10)
    assert peer.running()
    for tcp in (False, True):
        r = ask(port, "www.a.test", tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and r.answer[0][0].address == "192.0.2.1"


def test_restart_reuses_clone_even_when_the_remote_is_gone(tmp_path):
    repo = make_git_repo(tmp_path / "zones", {"a.test": ZONE.format(zone="a.test", serial=1)})
    port = free_port()
    peer = start_gitdns(repo, port, tmp_path / "data", zones=["a.test"])
    peer.stop()
    repo.rename(tmp_path / "moved")
    peer = start_gitdns(repo, port, tmp_path / "data", zones=["a.test"])
    try:
        assert ask(port, "www.a.test").answer[0][0].address == "192.0.2.1"
        assert "serving from the local clone" in peer.log_text(200)
    finally:
        peer.stop()


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path):
    repo = make_git_repo(tmp_path / "zones", {"a.test": ZONE.format(zone="a.test", serial=1)})
    port = free_port()
    with start_gitdns(repo, port, tmp_path / "data", zones=["a.test"]):
        second = subprocess.run(
            [sys.executable, "-m", "gitdns", "serve", "--remote", str(repo), "--listen",
             f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"), "--notify",
             "explicit"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "another gitdns is using the data directory" in second.stderr
        assert ask(port, "www.a.test").rcode() == dns.rcode.NOERROR  # the first one serves on


def test_log_queries_logs_client_question_and_rcode(tmp_path):
    repo = make_git_repo(tmp_path / "zones", {"a.test": ZONE.format(zone="a.test", serial=1)})
    port = free_port()
    with start_gitdns(repo, port, tmp_path / "data", ["--log-queries"], zones=["a.test"]) as peer:
        ask(port, "www.a.test")
        ask(port, "nope.a.test", tcp=True)
        log = wait_for(lambda: "nope.a.test. A -> NXDOMAIN" in peer.log_text(200)
                       and peer.log_text(200), what="the query log")
    assert "127.0.0.1 UDP www.a.test. A -> NOERROR" in log
    assert "127.0.0.1 TCP nope.a.test. A -> NXDOMAIN" in log
