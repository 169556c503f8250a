"""Pseudonyms: format, stability, dependence on the salt."""

import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.pseudonym import is_pseudonym, pseudonymise


def test_pseudonym_format_and_known_value():
    value = pseudonymise("patient-007", "s3cret")
    assert is_pseudonym(value)
    # HMAC-SHA256(key=b"s3cret", msg=b"patient-007"), first 10 hex digits; a change of
    # algorithm would silently re-key every existing result folder
    assert value == "sub-a22ce677f0"


def test_pseudonym_is_stable_and_depends_on_key_and_salt():
    assert pseudonymise("A001", "salt-1") == pseudonymise("A001", "salt-1")
    assert pseudonymise("A001", "salt-1") != pseudonymise("A002", "salt-1")
    assert pseudonymise("A001", "salt-1") != pseudonymise("A001", "salt-2")


def test_pseudonym_does_not_contain_the_key():
    assert "4711" not in pseudonymise("4711", "salt")


@pytest.mark.parametrize("key, salt", [("A001", ""), ("", "salt")])
def test_empty_salt_or_key_is_an_input_error(key, salt):
    with pytest.raises(InputError, match="salt|key"):
        pseudonymise(key, salt)
