"""The node's own device key for the OpenClaw handshake: ``<data_dir>/device-key.pem``.

Generated once (Ed25519, PKCS#8 PEM, mode 600) and read back on every start, so the device id
the gateways pair stays the same across restarts. The key never leaves the node.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from core.errors import InputError
from core.openclaw import DeviceIdentity

FILENAME = "device-key.pem"


def load_or_create(data_dir: Path) -> DeviceIdentity:
    """The identity stored in ``data_dir``; a new key is written first if there is none."""
    path = data_dir / FILENAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process wrote it first: use theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} does not hold an Ed25519 private key")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return DeviceIdentity(key)
