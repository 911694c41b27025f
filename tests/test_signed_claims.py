"""Signed claims, the one signer of realtime tokens, CDN upload tokens and upload tickets."""

from __future__ import annotations

import time

from openfal.signed_claims import SignedClaims


def test_claims_open_under_their_own_prefix_and_secret_only() -> None:
    """A value of one kind never opens as another, nor under another server's secret."""
    signer = SignedClaims(b"s" * 32)
    value, expires = signer.sign("oftok.", {"kid": "k1"}, 60)
    assert signer.open("oftok.", value) == {"kid": "k1", "exp": expires}
    assert signer.open("oftkt.", value) is None
    assert signer.open("oftkt.", "oftkt." + value.removeprefix("oftok.")) is None
    assert SignedClaims(b"t" * 32).open("oftok.", value) is None


def test_a_changed_payload_or_a_passed_expiry_is_refused() -> None:
    signer = SignedClaims(b"s" * 32)
    value, _ = signer.sign("p.", {"kid": "k1"}, 60)
    payload, mac = value.removeprefix("p.").rsplit(".", 1)
    assert signer.open("p.", f"p.{payload[:-2]}AA.{mac}") is None
    assert signer.open("p.", "p.garbage") is None and signer.open("p.", "p.") is None
    expired, _ = signer.sign("p.", {}, -1)
    assert signer.open("p.", expired) is None
    assert time.time() < signer.open("p.", value)["exp"]  # type: ignore[index]
