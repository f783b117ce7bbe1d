"""Project keys, API-key secrets and their hashes.

An API-key secret is ``lh_<keyId>_<token>``: the key id is public (it names the key in ``livehub
key revoke``), the token carries 256 bits from :mod:`secrets`. The database keeps only the SHA-256
of the whole secret; a presented secret is looked up by its key id and its hash compared in
constant time. A fast hash is enough because the secret is random, not a password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

ALPHANUMERIC = string.ascii_letters + string.digits
PROJECT_KEY_LENGTH = 20
KEY_ID_LENGTH = 12
TOKEN_LENGTH = 43  # 43 characters of 62 carry 256 bits
SECRET_PREFIX = "lh_"
JWT_SECRET_BYTES = 32

_KEY_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET = re.compile(
    rf"{SECRET_PREFIX}([a-z0-9]{{{KEY_ID_LENGTH}}})_([A-Za-z0-9]{{{TOKEN_LENGTH}}})"
)


_PROJECT_KEY = re.compile(rf"[A-Za-z0-9]{{{PROJECT_KEY_LENGTH}}}")


def is_project_key(text: str) -> bool:
    """Whether ``text`` has the shape of a project key (so it is worth looking up)."""
    return _PROJECT_KEY.fullmatch(text) is not None


def new_project_key() -> str:
    """A random project key: 20 characters of [A-Za-z0-9]."""
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(PROJECT_KEY_LENGTH))


def new_key_id() -> str:
    """A random public key id: 12 characters of [a-z0-9]."""
    return "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def new_secret(key_id: str) -> str:
    """A fresh secret for the key ``key_id``."""
    token = "".join(secrets.choice(ALPHANUMERIC) for _ in range(TOKEN_LENGTH))
    return f"{SECRET_PREFIX}{key_id}_{token}"


def key_id_of(secret: str) -> str | None:
    """The key id a well-formed secret embeds, or None for a malformed one."""
    match = _SECRET.fullmatch(secret)
    return match.group(1) if match else None


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a secret: what the database keeps."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def new_jwt_secret() -> str:
    """A fresh secret for signing agent tokens (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(JWT_SECRET_BYTES)
