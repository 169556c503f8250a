"""The suite's own conventions, checked so that they hold for new tests too."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def chained_asserts(source: str) -> list[int]:
    """Lines of ``assert a and b`` without a message: a failure there does not say which part failed."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Assert) and node.msg is None
            and isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)]


def test_the_checker_finds_a_chained_assert_and_lets_others_pass():
    assert chained_asserts("assert a and b\n") == [1]
    assert chained_asserts("assert a\nassert b\nassert a and b, 'which one'\nassert a or b\n") == []


def test_no_test_chains_conditions_in_one_assert_without_a_message():
    found = {str(path.relative_to(TESTS)): lines for path in sorted(TESTS.rglob("*.py"))
             if (lines := chained_asserts(path.read_text()))}
    assert found == {}, "split these into one assert per condition (or give a message)"
