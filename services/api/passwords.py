"""Password hashes: argon2id with the library's recommended parameters (RFC 9106's second choice)."""

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a cap keeps one request from costing much


def hash_password(plain: str) -> str:
    return _HASHER.hash(plain)


def verify_password(stored: str | None, plain: str) -> bool:
    """Whether `plain` is the password `stored` hashes; a missing or damaged hash matches nothing."""
    if not stored:
        return False
    try:
        return _HASHER.verify(stored, plain)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


def password_problem(plain: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(plain) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(plain) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if not plain.strip():
        return "a password cannot be only spaces"
    return None
