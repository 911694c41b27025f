"""The exception tree in ``openfal.errors``'s docstring is the map readers use: it
must name every class the module defines, under its real parent."""

from __future__ import annotations

import inspect
import re

import openfal.errors as errors


def _classes() -> list[type[BaseException]]:
    return [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, BaseException) and c.__module__ == errors.__name__]


def _drawn_parents() -> dict[str, str | None]:
    """Each drawn name -> the name drawn above it one level shallower."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^( *)[*+.-] (\w+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_docstring_tree_names_every_exception_class() -> None:
    assert sorted(_drawn_parents()) == sorted(c.__name__ for c in _classes())


def test_the_docstring_tree_draws_each_class_under_its_parent() -> None:
    drawn = _drawn_parents()
    for cls in _classes():
        base = cls.__bases__[0]
        assert drawn[cls.__name__] == (base.__name__ if base.__module__ == errors.__name__ else None), cls.__name__
