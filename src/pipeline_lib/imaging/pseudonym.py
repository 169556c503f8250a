"""Salted pseudonyms for subject keys and for the input entries discovery ignores.

A pseudonym is ``sub-`` followed by the first 10 hex digits of
HMAC-SHA256(salt, key). The salt is a project secret: without it the
pseudonyms cannot be recomputed from guessed keys (e.g. hospital IDs).
Entries of the input tree that are not ingested (links, pipes, unreadable
folders, ...) get ``entry-<10 hex>`` the same way, from their relative path.

Which salt (:func:`project_salt`): the configured ``privacy.pseudonym_salt`` unless it is
missing or publicly known (the demo's ``demo-salt-not-secret``, the presets' ``*-change-me``):
then, for real data, a random salt generated once into ``private/pseudonym_salt`` (owner-only)
and reused by every later run in that working directory. Anyone can hash candidate patient IDs
with a public salt, so a public salt would make the pseudonyms reversible. The synthetic cohorts
the pipeline builds itself (``input.source: demo`` and the presets' stand-in cohorts, marked by
``standin.json``) keep the public salt, so their results stay the same on every machine.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.private import PRIVATE_DIR, private_folder, write_owner_only

SUBJECT_PREFIX = "sub-"
ENTRY_PREFIX = "entry-"
PSEUDONYM_RE = re.compile(r"^sub-[0-9a-f]{10}$")
#: The demo's salt and the schema's default; published in this repository.
DEMO_SALT = "demo-salt-not-secret"
#: The presets ship salts ending in this (e.g. han-2018-preset-salt-change-me); published too.
PLACEHOLDER_SUFFIX = "-change-me"
DEMO_SOURCE = "demo"
#: The file a stand-in cohort (cohorts/standin.py) carries beside its source: synthetic data.
STANDIN_MARKER = "standin.json"
SALT_FILE = "pseudonym_salt"


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


def is_public_salt(salt: str | None) -> bool:
    """Tell whether ``salt`` is missing or one this repository publishes."""
    return not salt or salt == DEMO_SALT or salt.endswith(PLACEHOLDER_SUFFIX)


def is_synthetic_source(source: str | os.PathLike) -> bool:
    """The demo cohort or a stand-in cohort: data the pipeline made up, no patient in it."""
    if str(source) == DEMO_SOURCE:
        return True
    path = Path(source)
    return any((folder / STANDIN_MARKER).is_file() for folder in (path, path.parent))


def project_salt(configured: str | None, source: str | os.PathLike,
                 private_dir: str | os.PathLike = PRIVATE_DIR) -> tuple[str, str]:
    """``(salt, origin)``: the salt pseudonyms are made with and where it comes from.

    ``origin`` is ``"config"`` (privacy.pseudonym_salt is used), ``"generated"`` (a new random
    salt was just written to ``<private_dir>/pseudonym_salt``) or ``"private"`` (that file was
    read). Never log the salt itself; ``origin`` is what may be shown.
    """
    if not is_public_salt(configured) or is_synthetic_source(source):
        return str(configured), "config"
    path = Path(private_dir) / SALT_FILE
    if not path.exists():
        private_folder(private_dir)
        if write_owner_only(path, secrets.token_hex(32) + "\n"):
            return _read_salt(path), "generated"
    return _read_salt(path), "private"


def _read_salt(path: Path) -> str:
    salt = path.read_text().strip()
    if not salt:
        raise InputError(f"{path} is empty: delete it to have a new salt generated (every pseudonym "
                         "changes), or restore the salt it held")
    return salt


def salt_notice(origin: str, private_dir: str | os.PathLike = PRIVATE_DIR) -> str | None:
    """What to tell the user about the salt (never the salt), or None when nothing is new."""
    if origin != "generated":
        return None
    return (f"privacy.pseudonym_salt is not set or is a published example value, so pseudonyms use a random "
            f"salt generated now into {Path(private_dir) / SALT_FILE} (owner-only). Keep that file with the "
            "run: a new salt gives every subject a new pseudonym; set privacy.pseudonym_salt to choose "
            "your own.")
