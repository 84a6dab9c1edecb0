"""What cannot be stored is found, wherever it hides in a decoded body."""

import pytest

from bitrixapp.storable import MAX_DEPTH, Problem, bracketed, find_problem


@pytest.mark.parametrize(
    ("tree", "problem"),
    [
        ({"a": ["ok", {"b": "x\x00"}]}, Problem(("a", "1", "b"), "contains a NUL character")),
        ({"a": {"\x00": 1}}, Problem(("a", "\x00"), "has a name that contains a NUL character")),
        ({"a": "\ud800"}, Problem(("a",), "contains a lone UTF-16 surrogate (not valid Unicode)")),
        ({"a": [float("inf")]}, Problem(("a", "0"), "is not a finite number")),
        ({"a": float("nan")}, Problem(("a",), "is not a finite number")),
    ],
)
def test_the_problem_is_named_by_its_path(tree, problem):
    assert find_problem(tree) == problem


def test_storable_trees_pass():
    assert find_problem({"a": [1, 2.5, None, True, "текст 🙂", {"b": ""}], "n": 10**40}) is None


def test_depth_is_limited_without_recursion():
    tree: list = []
    node = tree
    for _ in range(100_000):  # far past the interpreter's recursion limit
        node.append([])
        node = node[0]
    problem = find_problem(tree)
    assert problem is not None and len(problem.path) == MAX_DEPTH + 1
    assert problem.reason == f"is nested deeper than {MAX_DEPTH} levels"


def test_bracketed_names():
    assert bracketed(("auth", "member_id")) == "auth[member_id]"
    assert bracketed(()) == "body"
