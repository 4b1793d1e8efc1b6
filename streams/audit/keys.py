"""Ed25519 key files for the signed checkpoints (``twin.signing``): ``dmtwin keys new|show``.

- The private key is PEM (PKCS #8, unencrypted), created with mode 0600 and never overwritten;
  loading refuses a file that others may read, as ssh does.
- The public key is ``PATH.pub``, PEM (SubjectPublicKeyInfo). It is all an auditor needs.
- Either may also be the raw 32 bytes, or 64 hex digits.

A key is named by its fingerprint, sha256 of the raw public key: ``SHA256:`` and 16 hex digits
(``twin.signing.short_fingerprint``), the same wherever dmtwin prints one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from twin.signing import PublicKey, Signer

__all__ = ["load_private", "load_public", "load_signer", "new_key", "public_path"]


def public_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".pub")


def new_key(path: str | Path) -> tuple[Path, Path, PublicKey]:
    """Create a private key at ``path`` (0600) and its public key at ``path.pub``; refuse to
    overwrite either."""
    path, pub = Path(path), public_path(path)
    if pub.exists():
        raise ValueError(f"{pub} exists: not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists: not overwriting a key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    pub.write_bytes(public_pem)
    return path, pub, PublicKey(key.public_key().public_bytes_raw())


def _raw(data: bytes) -> bytes | None:
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    return data if len(data) == 32 else None


def load_private(path: str | Path) -> bytes:
    """The raw 32 bytes of the private key in ``path`` (PEM, raw or hex)."""
    path = Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: a private key must not be readable by others (mode {stat.S_IMODE(mode):o}); "
                         f"chmod 600 {path}")
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: not an unencrypted PEM private key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return key.private_bytes_raw()
    raw = _raw(data)
    if raw is None:
        raise ValueError(f"{path}: not an Ed25519 private key (PEM, 32 raw bytes or 64 hex digits)")
    return raw


def load_signer(path: str | Path) -> Signer:
    return Signer(load_private(path))


def load_public(path: str | Path) -> PublicKey:
    """The public key in ``path`` (PEM, raw or hex). A private key file is refused: an auditor
    needs, and should hold, only the public key."""
    path = Path(path)
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} is a private key: give the public key ({public_path(path)})")
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as error:
            raise ValueError(f"{path}: not a PEM public key ({error})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 key")
        return PublicKey(key.public_bytes_raw())
    raw = _raw(data)
    if raw is None:
        raise ValueError(f"{path}: not an Ed25519 public key (PEM, 32 raw bytes or 64 hex digits)")
    return PublicKey(raw)


def load_any(path: str | Path) -> PublicKey:
    """The public key of ``path``, whether it holds the private or the public key."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        return load_signer(path).public_key
    return load_public(path)
