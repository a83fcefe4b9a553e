"""Signatures on the files this project writes about data (scan caches, npz lists), so a reader can tell its own
user's files from files planted or brought from elsewhere: an HMAC-SHA256 under a per-user secret kept in
``<user cache>/keras_insightface/scan_key`` (made on first use, mode 0600).

Example:
    >>> mac = sign("a/1.jpg", b"labels")
    >>> signed(mac, "a/1.jpg", b"labels"), signed(mac, "../secret", b"labels")
    (True, False)
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def cache_home():
    """``$XDG_CACHE_HOME/keras_insightface`` (default ``~/.cache/keras_insightface``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keras_insightface"


def _secret():
    """This user's key, made on first use; None when the cache dir cannot be written (nothing is signed)."""
    path = cache_home() / "scan_key"
    try:
        return path.read_bytes()
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        return path.read_bytes()
    except OSError:
        return None


def sign(*parts):
    """The hex HMAC of ``parts`` (str or bytes), or ``""`` when no key can be kept."""
    secret = _secret()
    if secret is None:
        return ""
    digest = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def signed(mac, *parts):
    """Whether ``mac`` is this user's signature of ``parts``."""
    expected = sign(*parts)
    return bool(expected) and hmac.compare_digest(str(mac), expected)
