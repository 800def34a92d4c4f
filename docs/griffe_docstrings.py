"""A griffe extension for the documentation build: docstrings read as mkdocstrings expects them.

First, the shared parts of docstrings are put in place: a line ``{NAME}`` becomes the string
constant ``NAME`` of the object's module, by the rule the package applies when it defines the class
(``fastrnn._docstrings``, loaded from its file: the build imports nothing from fastrnn). Then three
rewrites, of the loaded text only (the sources are unchanged):

- ``Example:`` headers become ``Examples:``, the Google-style section whose ``>>>`` lines griffe
  renders as code (it reads the singular as an admonition of plain text);
- the entries of a ``Call arguments:`` section (the layers' call signature, a section griffe does
  not know: it shows it as an admonition of Markdown) become a Markdown list, one item each;
- Sphinx roles (``:class:`~fastrnn.layers.Layer```, ``:func:`from_torch```), which Markdown does
  not have, become inline code with the name as written (its last dotted part after a ``~``, as
  Sphinx shows it).

Used by mkdocs.yml (``extensions:`` of the python handler).
"""
from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_]\w*)((?: \([^)]*\))?):(\s|$)")


def _plain(match: re.Match) -> str:
    name = match.group(2)
    if match.group(1):
        name = name.rsplit(".", 1)[-1]
    return f"`{name}`"


def strip_roles(text: str) -> str:
    """``text`` with every Sphinx cross-reference role replaced by inline code.

    Args:
        text: A docstring.

    Returns:
        The docstring without roles.
    """
    return _ROLE.sub(_plain, text)


def list_call_arguments(text: str) -> str:
    """``text`` with the entries of its ``Call arguments:`` section as Markdown list items.

    Args:
        text: A docstring.

    Returns:
        The docstring, its call arguments listed.
    """
    lines = text.split("\n")
    out, inside, indent = [], False, 0
    for line in lines:
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped == "Call arguments:":
            inside, indent = True, depth
            out.append(line)
            continue
        if inside and stripped and depth <= indent:
            inside = False
        if inside and stripped and depth == indent + 4:
            m = _ENTRY.match(stripped)
            if m:
                line = f"{' ' * depth}- `{m.group(1)}`{m.group(2)}:{stripped[m.end(2) + 1:]}"
        out.append(line)
    return "\n".join(out)


@cache
def _fill_placeholders():
    """``fastrnn._docstrings.fill_placeholders``, from the file next to the documented sources."""
    path = Path(__file__).resolve().parent.parent / "python" / "fastrnn" / "_docstrings.py"
    spec = importlib.util.spec_from_file_location("_fastrnn_docstrings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_placeholders


def fill_shared_parts(obj: griffe.Object) -> str:
    """The docstring of ``obj`` with its shared parts (``{NAME}`` lines) put in place.

    Args:
        obj: An object with a docstring; the strings its placeholders name are constants of its
            module, defined above it.

    Returns:
        The whole docstring.
    """
    def lookup(name: str) -> str:
        member, text = obj.module.members.get(name), None
        if member is not None and not member.is_alias and member.is_attribute and isinstance(member.value, str):
            text = ast.literal_eval(member.value)  # the value's source
        if not isinstance(text, str):
            raise ValueError(f"{obj.path}: docstring placeholder {{{name}}} is not a string of {obj.module.path}")
        return text

    return _fill_placeholders()(obj.docstring.value, lookup)


def rewrite(text: str) -> str:
    """``text`` with the three rewrites of the module docstring.

    Args:
        text: A docstring.

    Returns:
        The rewritten docstring.
    """
    return strip_roles(list_call_arguments(_EXAMPLE.sub(r"\1Examples:", text)))


class DocstringRewrites(griffe.Extension):
    """Rewrites every docstring griffe loads (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        """Fill and rewrite the docstring of each object as it is created.

        Args:
            obj: The object griffe has just created.
            **kwargs: The other event arguments (unused).
        """
        if obj.docstring is not None:
            obj.docstring.value = rewrite(fill_shared_parts(obj))
