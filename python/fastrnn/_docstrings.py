"""Docstrings with shared parts: text that several classes document alike, written once.

A docstring line that holds only ``{NAME}`` stands for the string constant ``NAME`` defined above
the class in the same module: each line of the string is put in its place, with the indentation
of the placeholder (blank lines stay empty). :func:`fill_docstring` substitutes when the class is
defined, so that ``__doc__`` (``help()``, ``inspect.getdoc``, doctest) holds the whole text; the
documentation build, which reads the sources without importing them, runs the same
:func:`fill_placeholders` (docs/griffe_docstrings.py, which loads this file on its own: it imports
nothing from the package).
"""
from __future__ import annotations

import re
import sys
from typing import Callable, TypeVar

__all__ = ["fill_docstring", "fill_placeholders"]

_PLACEHOLDER = re.compile(r"^([ \t]*)\{([A-Za-z_]\w*)\}[ \t]*$", re.M)

_T = TypeVar("_T")


def fill_placeholders(doc: str, lookup: Callable[[str], str]) -> str:
    """``doc`` with each placeholder line replaced by the text ``lookup(NAME)``, indented as the line."""
    def text(match: re.Match) -> str:
        indent, lines = match.group(1), lookup(match.group(2)).strip("\n").split("\n")
        return "\n".join(indent + line if line.strip() else "" for line in lines)

    return _PLACEHOLDER.sub(text, doc)


def fill_docstring(cls: _T) -> _T:
    """Class decorator: fill the placeholders of ``cls.__doc__`` from the strings of its module."""
    if cls.__doc__:  # None under python -OO
        names = vars(sys.modules[cls.__module__])

        def lookup(name: str) -> str:
            if not isinstance(names.get(name), str):
                raise NameError(f"{cls.__qualname__}: docstring placeholder {{{name}}} is not a string "
                                f"of {cls.__module__}")
            return names[name]

        cls.__doc__ = fill_placeholders(cls.__doc__, lookup)
    return cls
