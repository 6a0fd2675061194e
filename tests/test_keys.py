"""The key store: secrets from `_keys` files and the key-name grammar (PRODUCT.md, seeds)."""

from __future__ import annotations

import base64

import dns.name
import dns.tsig
import pytest

from gitdns.keys import KeyError_, load_key_file, make_key, parse_key_name, parse_key_string

SECRET = base64.b64encode(b"s" * 32).decode()


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def key(name: str):
    return make_key(n(name), dns.tsig.HMAC_SHA256, b"s" * 32)


@pytest.mark.parametrize(
    "name, operation, zone",
    [
        ("personal._update.mirage", "update", "mirage"),  # the seeds' example
        ("client._update", "update", "."),  # in the root _keys: every zone
        ("10.0.0.2.10.0.0.3._transfer.mirage", "transfer", "mirage"),
        ("x._notify.example.com", "notify", "example.com"),
        # The right-most operation label decides; everything right of it is the zone.
        ("a._update.b._transfer.example.com", "transfer", "example.com"),
        ("a._transfer.b._update.example.com", "update", "example.com"),
        ("plain.example.com", None, None),
    ],
)
def test_operation_and_zone_from_the_name(name, operation, zone):
    op, z, _left = parse_key_name(n(name))
    assert op == operation
    assert (z == n(zone)) if zone else z is None


def test_rights_nest_and_cover_zones_below():
    update, transfer, notify = (key("k._update.example.com"), key("k._transfer.example.com"),
                                key("k._notify.example.com"))
    zone, below, other = n("example.com"), n("sub.example.com"), n("example.org")
    assert update.allows("update", zone) and update.allows("transfer", zone)
    assert update.allows("notify", below)
    assert not transfer.allows("update", zone) and transfer.allows("transfer", below)
    assert transfer.allows("notify", zone)
    assert notify.allows("notify", zone) and not notify.allows("transfer", zone)
    assert not update.allows("update", other)
    assert not update.allows("update", n("com"))  # a key never covers the zones above
    root = key("x._transfer")
    assert root.allows("transfer", zone) and root.allows("transfer", other)
    assert not key("plain.example.com").allows("notify", zone)


def test_addresses_in_transfer_key_names():
    both = key("10.0.0.2.10.0.0.3._transfer.mirage")
    assert (both.primary, both.secondary) == ("10.0.0.2", "10.0.0.3")
    primary_only = key("x.10.0.0.2._transfer.mirage")
    assert (primary_only.primary, primary_only.secondary) == ("10.0.0.2", None)
    assert key("foo._transfer.mirage").primary is None
    assert key("1.2.3.999.1.2.3.4._transfer.mirage").secondary is None  # not an address pair
    assert key("10.0.0.2.10.0.0.3._update.mirage").secondary is None  # only transfer keys


def test_key_file_rules_and_problems():
    text = (
        f"personal._update.mirage. DNSKEY 0 3 163 {SECRET}\n"
        f"relative._transfer DNSKEY 0 3 165 {base64.b64encode(b'x' * 64).decode()}\n"
        f"x._transfer.other. DNSKEY 0 3 163 {SECRET}\n"  # outside mirage: ignored
        f"wrong._update.mirage. DNSKEY 256 3 8 {SECRET}\n"  # not a TSIG secret
        f"personal._update.mirage. DNSKEY 0 3 163 {base64.b64encode(b'y' * 32).decode()}\n"
        "www.mirage. A 192.0.2.1\n"
    )
    keys, problems = load_key_file(text, "mirage._keys")
    assert set(keys) == {n("personal._update.mirage"), n("relative._transfer.mirage")}
    assert keys[n("personal._update.mirage")].secret == b"s" * 32  # the first secret stays
    assert keys[n("relative._transfer.mirage")].algorithm == dns.tsig.HMAC_SHA512
    joined = "\n".join(problems)
    assert "mirage._keys:3: key x._transfer.other. lies outside mirage." in joined
    assert "mirage._keys:4: key wrong._update.mirage.: a TSIG secret is DNSKEY 0 3 ALG" in joined
    assert "mirage._keys:5: a second secret for key personal._update.mirage." in joined
    assert "mirage._keys:6: www.mirage. A is not a DNSKEY record" in joined
    # The root _keys file accepts any name.
    keys, problems = load_key_file(f"x._transfer.other. DNSKEY 0 3 163 {SECRET}\n", "_keys")
    assert set(keys) == {n("x._transfer.other")} and problems == []


def test_key_file_with_bad_base64_does_not_load():
    with pytest.raises(ValueError, match="mirage._keys:1"):
        load_key_file("k._update.mirage. DNSKEY 0 3 163 !!!notbase64\n", "mirage._keys")


@pytest.mark.parametrize(
    "text",
    [
        f"personal._update.mirage:SHA256:{SECRET}",  # the seeds' form
        f"personal._update.mirage:hmac-sha256:{SECRET}",  # ours
        f"hmac-sha256:personal._update.mirage:{SECRET}",  # BIND's
    ],
)
def test_key_strings_in_every_form(text):
    k = parse_key_string(text)
    assert k.name == n("personal._update.mirage")
    assert k.algorithm == dns.tsig.HMAC_SHA256 and k.secret == b"s" * 32
    assert k.operation == "update" and k.zone == n("mirage")


@pytest.mark.parametrize(
    "text, message",
    [
        ("just-a-name", "NAME:ALGORITHM:SECRET"),
        (f"k._update.x:md5:{SECRET}", "unknown TSIG algorithm"),
        ("k._update.x:hmac-sha256:@@@", "not valid base64"),
    ],
)
def test_bad_key_strings_say_why(text, message):
    with pytest.raises(KeyError_, match=message):
        parse_key_string(text)
