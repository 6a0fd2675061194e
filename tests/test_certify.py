"""The sans-IO parts of certificates in DNS (gitdns.certdns) and the `gitdns certify` client with
its DNS exchanges replaced by a dict: CSR and TLSA encoding, matching, expiry, chains, decisions."""

from __future__ import annotations

import datetime
import random
import stat

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gitdns import certdns, certify
from gitdns.certdns import CHAIN, CSR, LEAF
from gitdns.cli import main as cli_main
from gitdns.keys import parse_key_string

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
KEY = parse_key_string("personal._update.example.test:hmac-sha256:"
                       "cGVyc29uYWxrZXlwZXJzb25hbGtleXBlcnNvbmFsaw==")


def make_cert(key, names, not_before=NOW - DAY, not_after=NOW + 90 * DAY, issuer=None,
              issuer_key=None, ca=False) -> bytes:
    """A certificate for `key` naming `names`, signed by `issuer_key` (self-signed if None)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer or subject).public_key(key.public_key())
               .serial_number(random.getrandbits(64)).not_valid_before(not_before)
               .not_valid_after(not_after))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_key():
    return ec.generate_private_key(ec.SECP256R1())


# -- names --------------------------------------------------------------------------------------


def test_tlsa_name_and_back():
    name = certdns.tlsa_name("www.example.test")
    assert name == dns.name.from_text("_letsencrypt._tcp.www.example.test")
    assert certdns.host_of(name) == dns.name.from_text("www.example.test")
    assert certdns.host_of(dns.name.from_text("_LetsEncrypt._TCP.www.example.test")) == \
        dns.name.from_text("www.example.test")
    for other in ("_letsencrypt._udp.www.example.test", "_tcp.www.example.test",
                  "_letsencrypt._tcp."):
        assert certdns.host_of(dns.name.from_text(other)) is None


def test_challenge_name_and_zone_of():
    assert certdns.challenge_name("WWW.example.test.") == \
        dns.name.from_text("_acme-challenge.www.example.test")
    assert certdns.challenge_name("*.example.test") == \
        dns.name.from_text("_acme-challenge.example.test")
    zones = [dns.name.from_text(z) for z in ("example.test", "sub.example.test", "other.test")]
    assert certdns.zone_of("a.sub.example.test", zones) == zones[1]
    assert certdns.zone_of("example.test", zones) == zones[0]
    assert certdns.zone_of("nowhere.test", zones) is None


def test_uncovered_names():
    zones = [dns.name.from_text(z) for z in ("example.test", "other.test")]
    key = parse_key_string("le._update.example.test:hmac-sha256:bGV0c2VuY3J5cHQ=")
    may = lambda z: key.allows("update", z)  # noqa: E731
    assert certdns.uncovered(["www.example.test", "*.example.test"], zones, may) == []
    problems = certdns.uncovered(["www.other.test", "www.else.test"], zones, may)
    assert problems == ["www.other.test is in the zone other.test., which this key may not "
                        "update", "www.else.test is in no zone that this key may transfer"]


# -- CSRs ---------------------------------------------------------------------------------------


def test_csr_round_trip_through_a_tlsa_record(key):
    der = certdns.make_csr(key, "WWW.example.test", ["web.example.test", "www.example.test"])
    rd = certdns.tlsa(CSR, der)
    text = rd.to_text()
    assert text.startswith("3 255 0 ")
    back = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)
    assert certdns.kind_of(back) == CSR and back.cert == der
    csr = certdns.parse_csr(back.cert)
    assert csr.names == ("www.example.test", "web.example.test")  # CN first, no duplicate
    assert csr.public_key == certdns.public_key_der(key)
    assert b"BEGIN CERTIFICATE REQUEST" in csr.pem


def test_rsa_keys_and_their_csrs():
    rsa_key = certdns.generate_key("rsa", 2048)
    csr = certdns.parse_csr(certdns.make_csr(rsa_key, "r.example.test"))
    assert csr.public_key == certdns.public_key_der(rsa_key)
    with pytest.raises(ValueError):
        certdns.generate_key("rsa", 1024)
    with pytest.raises(ValueError):
        certdns.generate_key("dsa")
    assert certdns.load_key(certdns.key_pem(rsa_key)).key_size == 2048


def test_malformed_csrs_are_refused_with_the_reason(key):
    good = certdns.make_csr(key, "www.example.test")
    with pytest.raises(certdns.BadCsr, match="not a DER certificate signing request"):
        certdns.parse_csr(b"\x30\x82\xde\xad\xbe\xef")
    with pytest.raises(certdns.BadCsr):
        certdns.parse_csr(good[:-10])
    tampered = bytearray(good)
    tampered[-5] ^= 0xFF  # inside the signature
    with pytest.raises(certdns.BadCsr):
        certdns.parse_csr(bytes(tampered))
    nameless = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(
        key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(certdns.BadCsr, match="names no host"):
        certdns.parse_csr(nameless)
    import ipaddress

    with_ip = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]),
        critical=False).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    with pytest.raises(certdns.BadCsr, match="IP addresses"):
        certdns.parse_csr(with_ip)


# -- certificates -------------------------------------------------------------------------------


def test_matching_certificate_key_names_and_validity(key, other_key):
    names = ["www.example.test", "web.example.test"]
    good = make_cert(key, names)
    longer = make_cert(key, names, not_after=NOW + 200 * DAY)
    assert certdns.matching_certificate([good], certdns.public_key_der(key), names, NOW,
                                        DAY).der == good
    assert certdns.matching_certificate([good, longer, b"junk"], certdns.public_key_der(key),
                                        names, NOW, DAY).der == longer
    # another key, a missing name, not yet valid, expired, too short: none
    pk = certdns.public_key_der(key)
    assert certdns.matching_certificate([make_cert(other_key, names)], pk, names, NOW, DAY) \
        is None
    assert certdns.matching_certificate([make_cert(key, names[:1])], pk, names, NOW, DAY) is None
    assert certdns.matching_certificate([make_cert(key, names, not_before=NOW + DAY)], pk,
                                        names, NOW, DAY) is None
    assert certdns.matching_certificate([make_cert(key, names, not_after=NOW - DAY)], pk, names,
                                        NOW, datetime.timedelta(0)) is None
    short = make_cert(key, names, not_after=NOW + datetime.timedelta(hours=20))
    assert certdns.matching_certificate([short], pk, names, NOW, DAY) is None
    assert certdns.matching_certificate([short], pk, names, NOW, datetime.timedelta(0))


def test_chain_is_ordered_from_the_leaf_up_and_pem_round_trips(key):
    root_key, inter_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    root = make_cert(root_key, ["Root"], ca=True)
    root_name = x509.load_der_x509_certificate(root).subject
    inter = make_cert(inter_key, ["Inter"], issuer=root_name, issuer_key=root_key, ca=True)
    inter_name = x509.load_der_x509_certificate(inter).subject
    leaf = make_cert(key, ["www.example.test"], issuer=inter_name, issuer_key=inter_key)
    parsed = certdns.parse_cert(leaf)
    assert certdns.order_chain(parsed, [root, inter]) == [inter, root]
    assert certdns.order_chain(parsed, [inter]) == [inter]
    stray = make_cert(other := ec.generate_private_key(ec.SECP256R1()), ["Stray"], ca=True)
    assert certdns.order_chain(parsed, [stray]) == [stray]  # nothing links: kept as given
    del other
    pem = certdns.pem_chain([leaf, inter, root])
    assert certdns.split_pem_chain(pem) == [leaf, inter, root]
    assert certdns.split_pem_chain(pem.decode()) == [leaf, inter, root]


# -- what the service decides -------------------------------------------------------------------


def rrset(*pairs) -> list:
    return [certdns.tlsa(kind, der) for kind, der in pairs]


def test_decide(key, other_key):
    host = dns.name.from_text("www.example.test")
    csr = certdns.make_csr(key, "www.example.test")
    before = datetime.timedelta(days=14)
    assert certdns.decide(host, [], NOW).action == "none"
    assert certdns.decide(host, rrset((LEAF, make_cert(key, ["www.example.test"]))),
                          NOW).action == "none"
    d = certdns.decide(host, rrset((CSR, csr)), NOW, before)
    assert (d.action, d.reason, d.due) == ("issue", "no certificate", NOW)
    assert d.csr is not None and d.csr.names == ("www.example.test",)
    cert = make_cert(key, ["www.example.test"], not_after=NOW + 60 * DAY)
    d = certdns.decide(host, rrset((CSR, csr), (LEAF, cert)), NOW, before)
    assert d.action == "ok" and d.due == NOW + 46 * DAY and d.current.der == cert
    soon = make_cert(key, ["www.example.test"], not_after=NOW + 10 * DAY)
    d = certdns.decide(host, rrset((CSR, csr), (LEAF, soon)), NOW, before)
    assert d.action == "renew" and "within 14 days" in d.reason and d.current.der == soon
    foreign = make_cert(other_key, ["www.example.test"])
    d = certdns.decide(host, rrset((CSR, csr), (LEAF, foreign)), NOW, before)
    assert d.action == "issue" and "for the CSR's key" in d.reason
    expired = make_cert(key, ["www.example.test"], not_after=NOW - DAY)
    assert certdns.decide(host, rrset((CSR, csr), (LEAF, expired)), NOW).action == "issue"
    # refusals
    d = certdns.decide(host, rrset((CSR, b"\x30\x03\x02\x01\x00")), NOW)
    assert d.action == "refuse" and d.reason.startswith("malformed CSR:")
    d = certdns.decide(host, rrset((CSR, csr), (CSR, certdns.make_csr(other_key, "www.x"))), NOW)
    assert d.action == "refuse" and "2 CSRs" in d.reason
    d = certdns.decide(host, rrset((CSR, certdns.make_csr(key, "mail.example.test"))), NOW)
    assert d.action == "refuse" and "not www.example.test" in d.reason


def test_retry_delay_doubles_up_to_the_limit():
    assert [certdns.retry_delay(n, 60, 3600) for n in range(1, 9)] == \
        [60, 120, 240, 480, 960, 1920, 3600, 3600]


# -- the client, with DNS replaced by a dict ----------------------------------------------------


class FakeDns:
    """The primary as the client sees it: TLSA RRsets by name; publishing replaces them."""

    def __init__(self):
        self.records: dict[dns.name.Name, list] = {}
        self.published: list[bytes] = []
        self.on_query = None

    def query(self, server, name):
        if self.on_query:
            self.on_query(self, name)
        return list(self.records.get(name, []))

    def publish(self, server, key, name, der, timeout):
        self.published.append(der)
        self.records[name] = [certdns.tlsa(CSR, der)]
        return dns.name.from_text("example.test")


@pytest.fixture
def fake(monkeypatch):
    f = FakeDns()
    monkeypatch.setattr(certify, "query_tlsa", f.query)
    monkeypatch.setattr(certify, "publish_csr", f.publish)
    monkeypatch.setattr(certify.time, "sleep", lambda s: None)
    return f


def request(tmp_path, **kw) -> certify.Request:
    return certify.Request(host="www.example.test", server=("127.0.0.1", 5300), key=KEY,
                           additional=kw.pop("additional", []), key_file=tmp_path / "k.pem",
                           cert_file=tmp_path / "c.pem", **kw)


def test_certify_publishes_a_csr_and_writes_the_certificate(fake, tmp_path):
    name = certdns.tlsa_name("www.example.test")
    chain_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert(chain_key, ["Inter"], ca=True)

    def ca(f, qname):  # the "service": after the CSR is there, a certificate appears
        if f.published and len(f.records[qname]) == 1:
            csr = certdns.parse_csr(f.published[-1])
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                            csr.names[0])]))
                .issuer_name(x509.load_der_x509_certificate(inter).subject)
                .public_key(serialization.load_der_public_key(csr.public_key))
                .serial_number(7).not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n)
                                                            for n in csr.names]), False))
            leaf = builder.sign(chain_key, hashes.SHA256()).public_bytes(
                serialization.Encoding.DER)
            f.records[qname] += [certdns.tlsa(LEAF, leaf), certdns.tlsa(CHAIN, inter)]

    fake.on_query = ca
    said = []
    req = request(tmp_path, additional=["web.example.test"])
    assert certify.certify(req, said.append, clock=lambda: NOW) == "issued"
    assert len(fake.published) == 1
    assert certdns.parse_csr(fake.published[0]).names == ("www.example.test",
                                                          "web.example.test")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    written = certdns.split_pem_chain((tmp_path / "c.pem").read_bytes())
    assert written[1] == inter and len(written) == 2
    assert any("published at" in s for s in said) and any("issued" in s for s in said)
    # again: the certificate in DNS is for this key and these names -> reused, nothing sent
    said.clear()
    assert certify.certify(req, said.append, clock=lambda: NOW) == "reused"
    assert len(fake.published) == 1 and "reused from DNS" in said[-1]
    # a day before expiry it is no longer good enough: a new CSR goes out
    assert fake.records[name]
    fake.records[name] = [r for r in fake.records[name] if certdns.kind_of(r) != LEAF]
    fake.on_query = None
    with pytest.raises(certify.CertifyError, match="no certificate at"):
        certify.certify(request(tmp_path, additional=["web.example.test"], timeout=0),
                        said.append, clock=lambda: NOW)
    # the CSR for this key and names was still there: only waited, not published again
    assert len(fake.published) == 1 and any("already at" in s for s in said)


def test_certify_force_and_other_names_publish_again(fake, tmp_path):
    name = certdns.tlsa_name("www.example.test")
    with pytest.raises(certify.CertifyError):
        certify.certify(request(tmp_path, timeout=0), lambda s: None, clock=lambda: NOW)
    assert len(fake.published) == 1
    own = certdns.load_key((tmp_path / "k.pem").read_bytes())  # made once, then reused
    fake.records[name].append(certdns.tlsa(LEAF, make_cert(own, ["www.example.test"])))
    assert certify.certify(request(tmp_path), lambda s: None, clock=lambda: NOW) == "reused"
    with pytest.raises(certify.CertifyError):  # --force: new CSR even with a valid certificate
        certify.certify(request(tmp_path, timeout=0, force=True), lambda s: None,
                        clock=lambda: NOW)
    assert len(fake.published) == 2
    with pytest.raises(certify.CertifyError):  # another name: the certificate does not fit
        certify.certify(request(tmp_path, timeout=0, additional=["x.example.test"]),
                        lambda s: None, clock=lambda: NOW)
    assert len(fake.published) == 3
    assert {certdns.parse_csr(d).public_key for d in fake.published} == {
        certdns.public_key_der(own)}


def test_certify_refuses_an_unusable_key_file(tmp_path, fake):
    (tmp_path / "k.pem").write_text("not a key")
    with pytest.raises(certify.CertifyError, match="cannot use the key"):
        certify.certify(request(tmp_path), lambda s: None, clock=lambda: NOW)
    assert fake.published == []


def test_cli_usage_errors(capsys):
    assert cli_main(["certify", "www.example.test", "--server", "127.0.0.1:1", "--key",
                     "nonsense"]) == 2
    assert "a key is NAME:ALGORITHM:SECRET" in capsys.readouterr().err
    assert cli_main(["certify", "www.example.test", "--server", "127.0.0.1:1", "--key",
                     "personal._update.example.test:hmac-sha256:cGVyc29uYWw=", "--type", "rsa",
                     "--bits", "1024"]) == 2


def test_cli_server_down_is_status_1(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status = cli_main(["certify", "www.example.test", "--server", f"127.0.0.1:{port}", "--key",
                       "personal._update.example.test:hmac-sha256:cGVyc29uYWw=",
                       "--key-file", str(tmp_path / "k"), "--cert-file", str(tmp_path / "c")])
    assert status == 1
    assert "ConnectionRefusedError" in capsys.readouterr().err
