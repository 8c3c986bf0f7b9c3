"""Secrets at rest: AES-256-GCM with a key id beside every ciphertext, so keys can rotate.

Keys come from one environment variable (``claws.secret_key_env``), never from a file or a
default: a comma-separated list of base64 (standard or url-safe) 32-byte keys, the first being
the current one (used to encrypt), the others still accepted to decrypt until ``clawops secrets
rotate`` has re-encrypted everything with the current key. A key's id is the first 8 hex digits
of its SHA-256, so nothing else needs configuring and an id never names a different key.

A sealed value is the text ``v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``. The caller
passes ``context`` (e.g. ``"claw:acme/support"``), bound as associated data: a ciphertext copied
onto another row does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import ClawopsError

VERSION = "v1"
NONCE_BYTES = 12


class SecretsError(ClawopsError):
    """No usable key, or a sealed value that cannot be opened with the keys we have."""


def generate_key() -> str:
    """A new random key, in the form the key variable takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _decode_key(text: str, position: int, env: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SecretsError(f"{env}: key {position} is not base64") from None
    if len(raw) != 32:
        raise SecretsError(f"{env}: key {position} is {len(raw)} bytes; AES-256 needs 32")
    return raw


@dataclass(frozen=True)
class Keyring:
    """The current key and the older ones still accepted for decryption."""

    keys: dict[str, bytes]
    current: str

    @classmethod
    def parse(cls, value: str, env: str = "the key variable") -> Keyring:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts:
            raise SecretsError(f"{env} is empty: set it to a key (clawops secrets generate)")
        keys: dict[str, bytes] = {}
        for position, part in enumerate(parts, 1):
            raw = _decode_key(part, position, env)
            keys.setdefault(key_id(raw), raw)
        return cls(keys, key_id(_decode_key(parts[0], 1, env)))

    @classmethod
    def from_env(cls, env: str) -> Keyring:
        value = os.environ.get(env)
        if not value:
            raise SecretsError(
                f"{env} is not set: claws need an encryption key "
                f"(make one with `clawops secrets generate` and export {env})"
            )
        return cls.parse(value, env)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current]).encrypt(
            nonce, plaintext.encode(), context.encode()
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}:{self.current}:{body}"

    def open(self, value: str, context: str) -> str:
        version, kid, body = _split(value)
        if version != VERSION:
            raise SecretsError(f"sealed value of unknown version {version!r}")
        key = self.keys.get(kid)
        if key is None:
            raise SecretsError(f"sealed with key {kid}, which is not in the key variable")
        data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        try:
            plain = AESGCM(key).decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context.encode())
        except InvalidTag:
            raise SecretsError(
                "a sealed value does not open: corrupted or not for this row"
            ) from None
        return plain.decode()

    def needs_rotation(self, value: str) -> bool:
        return _split(value)[1] != self.current


def sealed_key_id(value: str) -> str:
    return _split(value)[1]


def _split(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise SecretsError("not a sealed value")
    return parts[0], parts[1], parts[2]
