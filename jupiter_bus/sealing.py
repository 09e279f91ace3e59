"""Sealing transfer passwords with a deployment key, so they never sit in the broker in clear.

A sealed password is the text ``sealed:`` followed by a Fernet token (AES-128-CBC with
HMAC-SHA256, from ``cryptography``, which asyncssh already needs) of the UTF-8 password.
Publishers seal with :func:`seal`; transfer workers configured with the same key
open it with :func:`unseal`. Keys come from :func:`new_key` (urlsafe base64, 44
characters) and are kept in a file readable by the deployment only.

Example::

    key = new_key()
    field = seal("s3cret", key)          # 'sealed:gAAAAAB...'
    assert unseal(field, key) == "s3cret"
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from .errors import SealError

__all__ = [
    "PREFIX",
    "is_sealed",
    "load_key",
    "new_key",
    "seal",
    "unseal",
]

PREFIX = "sealed:"


def new_key() -> bytes:
    """A fresh deployment key."""
    return Fernet.generate_key()


def load_key(path: str | Path) -> bytes:
    """Read a deployment key from a file (surrounding whitespace ignored)."""
    try:
        key = Path(path).read_bytes().strip()
        Fernet(key)
    except (OSError, ValueError) as exc:
        raise SealError(f"cannot use seal key file {path}: {type(exc).__name__}") from None
    return key


def is_sealed(password: str) -> bool:
    """Whether ``password`` is a sealed value rather than a clear one."""
    return password.startswith(PREFIX)


def seal(password: str, key: bytes) -> str:
    """Seal ``password`` for the ``password`` field of a transfer request."""
    return PREFIX + Fernet(key).encrypt(password.encode()).decode("ascii")


def unseal(sealed: str, key: bytes, *, max_age_seconds: int | None = None) -> str:
    """Open a sealed password; raises :class:`SealError` (naming no secret) when it cannot.

    ``max_age_seconds`` refuses tokens sealed longer ago than that (replay bound).
    """
    if not is_sealed(sealed):
        raise SealError("password is not sealed")
    try:
        return (
            Fernet(key).decrypt(sealed[len(PREFIX) :].encode("ascii"), ttl=max_age_seconds).decode()
        )
    except (InvalidToken, UnicodeError, ValueError):
        raise SealError("sealed password cannot be opened with this worker's key") from None
