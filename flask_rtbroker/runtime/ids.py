"""Random ids: the ``[A-Za-z0-9]`` characters of client ids, process routes and presence sessions."""

from __future__ import annotations

import secrets
import string

CLIENT_ID_LENGTH = 40
_ID_ALPHABET = string.ascii_letters + string.digits


def random_chars(count: int) -> str:
    """*count* random ``[A-Za-z0-9]`` characters from the OS CSPRNG.

    Bytes below 248 (= 4 x 62) map uniformly onto the 62 characters; the rest are skipped.
    """
    chars: list[str] = []
    while len(chars) < count:
        chars += [_ID_ALPHABET[b % 62] for b in secrets.token_bytes(count + 8) if b < 248]
    return "".join(chars[:count])


def new_client_id(route: str = "") -> str:
    """Return a 40-character ``[A-Za-z0-9]`` id: *route* (the owning process's, so other
    processes know where it lives) followed by random characters (~190 bits after an
    8-character route; ~238 without)."""
    return route + random_chars(CLIENT_ID_LENGTH - len(route))
