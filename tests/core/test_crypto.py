"""Secrets at rest: AES-256-GCM with key ids, rotation, and clear refusals."""

from __future__ import annotations

import pytest

from core.crypto import Keyring, SecretsError, generate_key, sealed_key_id


def test_a_sealed_token_opens_with_its_key_and_context_only():
    ring = Keyring.parse(generate_key())
    sealed = ring.seal("gw-token-123", "claw:acme/support")
    assert "gw-token-123" not in sealed and sealed.startswith(f"v1:{ring.current}:")
    assert ring.open(sealed, "claw:acme/support") == "gw-token-123"
    with pytest.raises(SecretsError, match="not for this row"):
        ring.open(sealed, "claw:acme/other")


def test_two_seals_of_one_value_differ():
    ring = Keyring.parse(generate_key())
    assert ring.seal("x", "c") != ring.seal("x", "c")


def test_an_old_key_still_opens_until_rotation_and_the_new_one_seals():
    old, new = generate_key(), generate_key()
    before = Keyring.parse(old)
    sealed = before.seal("secret", "ctx")
    after = Keyring.parse(f"{new},{old}")
    assert after.current != before.current
    assert after.open(sealed, "ctx") == "secret"
    assert after.needs_rotation(sealed)
    resealed = after.seal(after.open(sealed, "ctx"), "ctx")
    assert sealed_key_id(resealed) == after.current and not after.needs_rotation(resealed)
    with pytest.raises(SecretsError, match="not in the key variable"):
        Keyring.parse(new).open(sealed, "ctx")


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "empty"), ("not base64!!", "not base64"), ("c2hvcnQ", "needs 32")],
)
def test_bad_keys_are_refused_with_the_reason(value, message):
    with pytest.raises(SecretsError, match=message):
        Keyring.parse(value, "CLAWOPS_SECRET_KEY")


def test_no_key_in_the_environment_is_refused_not_defaulted(monkeypatch):
    monkeypatch.delenv("CLAWOPS_SECRET_KEY", raising=False)
    with pytest.raises(SecretsError, match="CLAWOPS_SECRET_KEY is not set"):
        Keyring.from_env("CLAWOPS_SECRET_KEY")


def test_a_tampered_value_does_not_open():
    ring = Keyring.parse(generate_key())
    sealed = ring.seal("secret", "ctx")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretsError):
        ring.open(tampered, "ctx")
    with pytest.raises(SecretsError, match="not a sealed value"):
        ring.open("garbage", "ctx")
