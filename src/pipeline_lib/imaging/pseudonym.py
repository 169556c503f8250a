"""Salted pseudonyms for subject keys.

A pseudonym is ``sub-`` followed by the first 10 hex digits of
HMAC-SHA256(salt, key). The salt is a project secret: without it the
pseudonyms cannot be recomputed from guessed keys (e.g. hospital IDs).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pipeline_lib.core.errors import InputError

PSEUDONYM_RE = re.compile(r"^sub-[0-9a-f]{10}$")


def pseudonymise(key: str, salt: str) -> str:
    """Return the pseudonym ``sub-<10 hex>`` of ``key`` under ``salt``.

    Raises InputError for an empty salt (an unsalted hash of a short hospital
    ID is trivially reversible) or an empty key.
    """
    if not salt:
        raise InputError("pseudonym salt is empty: the config must set a secret salt")
    if not key:
        raise InputError("cannot pseudonymise an empty subject key")
    digest = hmac.new(salt.encode("utf-8"), key.encode("utf-8"), hashlib.sha256).hexdigest()
    return "sub-" + digest[:10]


def is_pseudonym(text: str) -> bool:
    """Tell whether ``text`` has the shape of a pseudonym."""
    return bool(PSEUDONYM_RE.match(text))
