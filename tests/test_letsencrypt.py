"""`gitdns letsencrypt` without the network: which names it works on (and which it refuses, once),
backoff, the hot-loop guard, one job per name, a job's success and failure paths with the CA and
the primary replaced by stand-ins, NOTIFY on the watch connection, ACME error lines."""

from __future__ import annotations

import asyncio
import datetime
import logging
import stat

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
import requests
from acme import challenges, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gitdns import acmeclient, certdns
from gitdns.certdns import CSR, LEAF
from gitdns.cli import main as cli_main
from gitdns.keys import parse_key_string
from gitdns.letsencrypt import LetsEncrypt, ServiceConfig
from gitdns.notify import notify_message
from tests.test_certify import NOW, make_cert

DAY = datetime.timedelta(days=1)
ZONE_KEY = parse_key_string("le._update.example.test:hmac-sha256:bGV0c2VuY3J5cHRrZXk=")
ROOT_KEY = parse_key_string("le._update.:hmac-sha256:bGV0c2VuY3J5cHRrZXk=")
HEAD = """$ORIGIN example.test.
$TTL 300
@ IN SOA ns1 hostmaster 1 60 60 3600 60
  IN NS ns1
ns1 IN A 127.0.0.1
"""


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


def zone_with(*records: tuple[str, tuple[int, int, int], bytes],
              origin: str = "example.test") -> dns.zone.Zone:
    text = HEAD.replace("example.test.", origin + ".") + "".join(
        f"{name} 3600 IN TLSA {certdns.tlsa(kind, der).to_text()}\n"
        for name, kind, der in records)
    return dns.zone.from_text(text, origin=origin, relativize=True)


class FakeAcme:
    """The CA: an order with one DNS-01 challenge per name, a chain signed by its own root."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.orders: list[bytes] = []
        self.answered = 0
        self.resets = 0
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = make_cert(self.ca_key, ["Fake CA"], ca=True)

    def new_order(self, csr_pem: bytes):
        if self.fail:
            raise self.fail
        self.orders.append(csr_pem)
        csr = x509.load_pem_x509_csr(csr_pem)
        names = csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        return csr, [acmeclient.Challenge(n, f"_acme-challenge.{n}", f"v-{n}", None)
                     for n in names]

    def answer(self, pending) -> None:
        self.answered += len(pending)

    def finalize(self, order, seconds: float) -> str:
        names = order.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        leaf = x509.load_der_x509_certificate(make_cert(
            _PublicOnly(order.public_key()), names,
            issuer=x509.load_der_x509_certificate(self.ca).subject, issuer_key=self.ca_key))
        from cryptography.hazmat.primitives import serialization

        return certdns.pem_chain([leaf.public_bytes(serialization.Encoding.DER),
                                  self.ca]).decode()

    def reset(self) -> None:
        self.resets += 1


class _PublicOnly:
    """What make_cert needs of a key it does not sign with."""

    def __init__(self, public):
        self._public = public

    def public_key(self):
        return self._public


def service(tmp_path, acme=None, key=ZONE_KEY, **kw) -> LetsEncrypt:
    config = ServiceConfig(key=key, primary=("127.0.0.1", 1), directory="https://ca.invalid/",
                           data_dir=tmp_path, **kw)
    return LetsEncrypt(config, acme or FakeAcme(), clock=lambda: NOW)


class Recorder:
    """Stand-ins for the service's exchanges with the primary and the name servers."""

    def __init__(self, svc: LetsEncrypt, not_served: bool = False):
        self.calls: list[tuple] = []
        self.not_served = not_served
        svc._publish = self.publish  # type: ignore[method-assign]
        svc._unpublish = self.unpublish  # type: ignore[method-assign]
        svc._wait_served = self.wait_served  # type: ignore[method-assign]
        svc._store = self.store  # type: ignore[method-assign]

    async def publish(self, zone, records):
        self.calls.append(("publish", zone, dict(records)))

    async def unpublish(self, published):
        self.calls.append(("unpublish", dict(published)))

    async def wait_served(self, groups):
        from gitdns.letsencrypt import NotServed

        if self.not_served:
            raise NotServed("not served in time: 127.0.0.1:53 x TXT (timed out)")
        self.calls.append(("served", dict(groups)))

    async def store(self, host, csr, leaf, chain, published):
        self.calls.append(("store", host, leaf.public_key == csr.public_key, len(chain),
                           dict(published)))


def run(coro):
    return asyncio.run(coro)


# -- what is worked on --------------------------------------------------------------------------


def test_scan_starts_jobs_only_where_a_certificate_is_needed(tmp_path, key, caplog):
    other = ec.generate_private_key(ec.SECP256R1())
    good = certdns.make_csr(key, "good.example.test")
    zone = zone_with(
        ("_letsencrypt._tcp.new", CSR, certdns.make_csr(key, "new.example.test")),
        ("_letsencrypt._tcp.good", CSR, good),
        ("_letsencrypt._tcp.good", LEAF, make_cert(key, ["good.example.test"],
                                                    not_after=NOW + 60 * DAY)),
        ("_letsencrypt._tcp.old", CSR, certdns.make_csr(other, "old.example.test")),
        ("_letsencrypt._tcp.old", LEAF, make_cert(other, ["old.example.test"],
                                                   not_after=NOW + 3 * DAY)),
        ("_letsencrypt._tcp.bad", CSR, b"\x30\x03\x02\x01\x00"),
        ("_letsencrypt._tcp.far", CSR, certdns.make_csr(key, "far.example.test",
                                                        ["www.other.test"])),
    )
    svc = service(tmp_path)
    svc.zones[dns.name.from_text("example.test")] = zone
    started = []
    svc._start = lambda host, d, names: started.append((host.to_text(), d.action,  # type: ignore
                                                        sorted(names)))

    async def go():
        return svc.scan(), svc.scan()

    with caplog.at_level(logging.INFO, logger="gitdns.letsencrypt"):
        due, _ = run(go())
    assert sorted(started[:2]) == [
        ("new.example.test.", "issue", ["_acme-challenge.new.example.test.", "new.example.test"]),
        ("old.example.test.", "renew", ["_acme-challenge.old.example.test.", "old.example.test"])]
    # `good` is due for renewal 14 days before its expiry in 60 days
    assert due == pytest.approx((46 * DAY).total_seconds())
    errors_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 2, errors_logged  # each once, though scanned twice
    assert errors_logged[0].startswith("_letsencrypt._tcp.bad.example.test.: malformed CSR: ")
    assert errors_logged[1] == ("_letsencrypt._tcp.far.example.test.: refused, not sent to the "
                                "CA: www.other.test is in no zone that this key may transfer")


def test_a_root_key_watches_the_root_and_covers_every_zone(tmp_path, key):
    svc = service(tmp_path, key=ROOT_KEY)
    assert svc.watch_name == dns.name.root
    assert service(tmp_path).watch_name == dns.name.from_text("example.test")
    svc.zones[dns.name.from_text("other.test")] = zone_with(
        ("_letsencrypt._tcp.www", CSR, certdns.make_csr(key, "www.other.test")),
        origin="other.test")
    started = []
    svc._start = lambda host, d, names: started.append(host.to_text())  # type: ignore

    async def go():
        svc.scan()

    run(go())
    assert started == ["www.other.test."]


def test_backoff_guard_and_one_job_per_name(tmp_path, key):
    csr = certdns.make_csr(key, "www.example.test", ["api.example.test"])
    svc = service(tmp_path)
    svc.zones[dns.name.from_text("example.test")] = zone_with(
        ("_letsencrypt._tcp.www", CSR, csr),
        ("_letsencrypt._tcp.api", CSR, certdns.make_csr(key, "api.example.test")))
    started = []
    svc._start = lambda host, d, names: started.append(host.to_text())  # type: ignore
    www = dns.name.from_text("www.example.test")

    async def go():
        from gitdns.letsencrypt import _Failures, _Job

        loop = asyncio.get_running_loop()
        fp = certdns.fingerprint(csr)
        # www failed a moment ago: not before its retry time; api shares a name with www's
        # running job... there is none yet, so api starts.
        svc.failures[www] = _Failures(fp, 3, loop.time() + 30)
        due = svc.scan()
        assert started == ["api.example.test."] and 29 < due <= 30
        started.clear()
        svc.failures[www] = _Failures(fp, 3, loop.time() - 1)  # due: it starts
        svc.jobs[dns.name.from_text("api.example.test")] = _Job(
            asyncio.ensure_future(asyncio.sleep(0)), {"_acme-challenge.api.example.test."})
        svc.scan()
        assert started == []  # www's CSR also names api.example.test, whose TXT a job holds
        svc.jobs.clear()
        svc.scan()
        assert started == ["www.example.test.", "api.example.test."]
        started.clear()
        # a certificate was stored for www's CSR just now, our copy predates it: no new order
        svc.failures.clear()
        svc.issued[www] = (fp, loop.time(), b"leaf")
        svc.scan()
        assert started == ["api.example.test."]
        await asyncio.sleep(0)

    run(go())


def test_a_name_and_its_wildcard_never_run_at_once_and_jobs_are_capped(tmp_path, key):
    svc = service(tmp_path, max_jobs=2)
    svc.zones[dns.name.from_text("example.test")] = zone_with(
        ("_letsencrypt._tcp.a", CSR, certdns.make_csr(key, "a.example.test", ["example.test"])),
        ("_letsencrypt._tcp.b", CSR, certdns.make_csr(key, "b.example.test",
                                                      ["*.example.test"])),
        ("_letsencrypt._tcp.c", CSR, certdns.make_csr(key, "c.example.test")),
        ("_letsencrypt._tcp.d", CSR, certdns.make_csr(key, "d.example.test")))

    async def go():
        from gitdns.letsencrypt import _Job

        def start(host, d, names):
            svc.jobs[host] = _Job(asyncio.ensure_future(asyncio.sleep(0)), names)

        svc._start = start  # type: ignore[method-assign]
        svc.scan()
        first = sorted(h.to_text() for h in svc.jobs)
        await asyncio.sleep(0)
        return first

    # a and b both write _acme-challenge.example.test: only one of them; two jobs at most
    assert run(go()) == ["a.example.test.", "c.example.test."]


# -- one job ------------------------------------------------------------------------------------


def test_job_success_publishes_waits_answers_and_stores_once(tmp_path, key):
    acme = FakeAcme()
    svc = service(tmp_path, acme)
    svc.zones[dns.name.from_text("example.test")] = zone_with()
    rec = Recorder(svc)
    csr = certdns.make_csr(key, "www.example.test", ["web.example.test"])
    host = dns.name.from_text("www.example.test")
    decision = certdns.decide(host, [certdns.tlsa(CSR, csr)], NOW)

    async def go():
        await svc._job(host, decision)

    run(go())
    zone = dns.name.from_text("example.test")
    records = {dns.name.from_text("_acme-challenge.www.example.test"): ["v-www.example.test"],
               dns.name.from_text("_acme-challenge.web.example.test"): ["v-web.example.test"]}
    assert [c[0] for c in rec.calls] == ["publish", "served", "store"]
    assert rec.calls[0] == ("publish", zone, records)
    assert rec.calls[2] == ("store", host, True, 1, {zone: records})
    assert acme.answered == 2 and len(acme.orders) == 1
    assert host in svc.issued and not svc.failures and not svc.jobs


def test_job_failure_removes_its_records_and_backs_off(tmp_path, key, caplog):
    svc = service(tmp_path, FakeAcme(), retry_first=5, retry_max=20)
    svc.zones[dns.name.from_text("example.test")] = zone_with()
    rec = Recorder(svc, not_served=True)
    csr = certdns.make_csr(key, "www.example.test")
    host = dns.name.from_text("www.example.test")
    decision = certdns.decide(host, [certdns.tlsa(CSR, csr)], NOW)

    async def go():
        delays = []
        for _ in range(4):
            await svc._job(host, decision)
            delays.append(round(svc.failures[host].retry_at - asyncio.get_running_loop().time()))
        return delays

    with caplog.at_level(logging.ERROR, logger="gitdns.letsencrypt"):
        assert run(go()) == [5, 10, 20, 20]
    assert [c[0] for c in rec.calls] == ["publish", "unpublish"] * 4
    assert svc.acme.answered == 0  # never told the CA to look
    assert svc.failures[host].count == 4 and host not in svc.issued
    assert "certificate request failed (attempt 1): not served in time: 127.0.0.1:53 x TXT " \
           "(timed out); retrying in 5 s" in caplog.text


def test_job_with_the_ca_down_logs_the_cause_and_writes_nothing(tmp_path, key, caplog):
    down = requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    acme = FakeAcme(fail=down)
    svc = service(tmp_path, acme, retry_first=1, retry_max=2)
    rec = Recorder(svc)
    host = dns.name.from_text("www.example.test")
    decision = certdns.decide(host, [certdns.tlsa(CSR, certdns.make_csr(key, "www.example.test"))],
                              NOW)
    with caplog.at_level(logging.ERROR, logger="gitdns.letsencrypt"):
        run(svc._job(host, decision))
    assert "cannot reach the ACME server: connection refused; retrying in 1 s" in caplog.text
    assert rec.calls == [("unpublish", {})] and acme.resets == 1


# -- the watch connection -----------------------------------------------------------------------


def soa_rrset(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text("example.test.", 300, "IN", "SOA",
                               f"ns1.example.test. hm.example.test. {serial} 60 60 3600 60")


class Writer:
    def __init__(self):
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data[2:])


def test_signed_notify_is_answered_and_starts_a_transfer(tmp_path):
    svc = service(tmp_path)
    origin = dns.name.from_text("example.test")
    soa = soa_rrset(7)
    notify = notify_message(origin, soa, ZONE_KEY)
    writer = Writer()
    svc._on_message(notify.to_wire(), writer)  # type: ignore[arg-type]
    assert svc._refresh_wanted == {origin}
    reply = dns.message.from_wire(writer.sent[0], keyring=ZONE_KEY.tsig, request_mac=notify.mac)
    assert reply.id == notify.id and reply.had_tsig and reply.flags & 0x8000
    # not ours to transfer: answered, not transferred
    svc._refresh_wanted.clear()
    other = dns.name.from_text("other.test")
    svc._on_message(notify_message(other, None, ZONE_KEY).to_wire(), writer)  # type: ignore
    assert svc._refresh_wanted == set()
    # unsigned or signed with another secret: ignored
    svc._on_message(notify_message(origin, soa, None).to_wire(), writer)  # type: ignore
    forged = parse_key_string("le._update.example.test:hmac-sha256:Zm9yZ2VkZm9yZ2VkZm9yZ2Vk")
    svc._on_message(notify_message(origin, soa, forged).to_wire(), writer)  # type: ignore
    assert svc._refresh_wanted == set() and len(writer.sent) == 2
    # a NOTIFY for the serial we have: nothing to do
    svc.zones[origin] = zone_with()
    svc._on_message(notify_message(origin, soa_rrset(1), ZONE_KEY).to_wire(),
                    writer)  # type: ignore[arg-type]
    assert svc._refresh_wanted == set()


def test_soa_answer_on_the_watch_connection_checks_the_serial(tmp_path):
    svc = service(tmp_path)
    origin = dns.name.from_text("example.test")
    svc.zones[origin] = zone_with()
    query = svc._watch_query(signed=False)
    reply = dns.message.make_response(query)
    reply.answer.append(soa_rrset(1))
    svc._on_message(reply.to_wire(), Writer())  # type: ignore[arg-type]
    assert svc._refresh_wanted == set()
    reply.answer[0] = soa_rrset(2)
    svc._on_message(reply.to_wire(), Writer())  # type: ignore[arg-type]
    assert svc._refresh_wanted == {origin}
    # our key rejected: not registered for NOTIFY, so the connection is dropped and re-made
    reply.answer.clear()
    reply.set_rcode(dns.rcode.NOTAUTH)
    with pytest.raises(ConnectionResetError):
        svc._on_message(reply.to_wire(), Writer())  # type: ignore[arg-type]


# -- ACME errors, the account key, the command line ---------------------------------------------


def test_acme_errors_become_one_line_with_the_cause():
    rate = messages.Error(typ="urn:ietf:params:acme:error:rateLimited",
                          detail="too many certificates\nalready issued")
    assert acmeclient.describe(rate) == (
        "the CA answered urn:ietf:params:acme:error:rateLimited :: There were too many "
        "requests of a given type :: too many certificates already issued")
    assert "badNonce" in acmeclient.describe(
        messages.Error(typ="urn:ietf:params:acme:error:badNonce", detail="JWS has an invalid "
                       "anti-replay nonce"))
    failed = messages.AuthorizationResource(body=messages.Authorization(
        identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="www.example.test"),
        challenges=[messages.ChallengeBody(
            chall=challenges.DNS01(token=b"t" * 16), status=messages.STATUS_INVALID,
            error=messages.Error(typ="urn:ietf:params:acme:error:unauthorized",
                                 detail="Incorrect TXT record"))]), uri="https://ca/authz/1")
    assert acmeclient.describe(errors.ValidationError([failed])) == (
        "challenge failed: www.example.test: urn:ietf:params:acme:error:unauthorized :: The "
        "client lacks sufficient authorization :: Incorrect TXT record")
    assert acmeclient.describe(errors.TimeoutError()) == \
        "the CA did not finish the order in time"
    down = requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    assert acmeclient.describe(down) == "cannot reach the ACME server: connection refused"


def test_account_key_is_made_once_and_kept_private(tmp_path):
    first = acmeclient.load_or_create_account_key(tmp_path / "le")
    path = tmp_path / "le" / acmeclient.ACCOUNT_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = acmeclient.load_or_create_account_key(tmp_path / "le")
    assert certdns.public_key_der(first) == certdns.public_key_der(again)


def test_cli_refuses_a_key_without_update_rights(capsys, tmp_path):
    status = cli_main(["letsencrypt", "--key", "x._transfer.example.test:hmac-sha256:eHh4eA==",
                       "--primary", "127.0.0.1:5300", "--data-dir", str(tmp_path)])
    assert status == 2 and "is not an _update key" in capsys.readouterr().err
    status = cli_main(["letsencrypt", "--key", "x._update.example.test:hmac-sha256:eHh4eA==",
                       "--primary", "nowhere", "--data-dir", str(tmp_path)])
    assert status == 2 and "bad address" in capsys.readouterr().err
