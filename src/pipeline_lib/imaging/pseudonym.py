"""Salted pseudonyms for subject keys and for the input entries discovery ignores.

A pseudonym is ``sub-`` followed by the first 10 hex digits of
HMAC-SHA256(salt, key). The salt is a project secret: without it the
pseudonyms cannot be recomputed from guessed keys (e.g. hospital IDs).
Entries of the input tree that are not ingested (links, pipes, unreadable
folders, ...) get ``entry-<10 hex>`` the same way, from their relative path.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pipeline_lib.core.errors import InputError

SUBJECT_PREFIX = "sub-"
ENTRY_PREFIX = "entry-"
PSEUDONYM_RE = re.compile(r"^sub-[0-9a-f]{10}$")


def pseudonymise(key: str, salt: str, prefix: str = SUBJECT_PREFIX) -> str:
    """Return the pseudonym ``<prefix><10 hex>`` of ``key`` under ``salt``.

    Raises InputError for an empty salt (an unsalted hash of a short hospital
    ID is trivially reversible) or an empty key. Keys taken from file names may
    hold bytes that are not UTF-8 (kept by Python as surrogate escapes); they
    are hashed as the bytes on disk, so every valid UTF-8 key keeps its pseudonym.
    """
    if not salt:
        raise InputError("pseudonym salt is empty: the config must set a secret salt")
    if not key:
        raise InputError("cannot pseudonymise an empty subject key")
    digest = hmac.new(salt.encode("utf-8"), key.encode("utf-8", "surrogateescape"),
                      hashlib.sha256).hexdigest()
    return prefix + digest[:10]


def is_pseudonym(text: str) -> bool:
    """Tell whether ``text`` has the shape of a subject pseudonym."""
    return bool(PSEUDONYM_RE.match(text))
