"""The documentation site's sources hang together (the build itself, `mkdocs build --strict`, is
.ci/docs): every public module has an API page in the navigation, every page is in the navigation
and exists, every snippet include names a file (and a section) that exists, every image and every
link between pages resolves, the images stay small, and the README points to the docs."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import fastrnn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS = (ROOT / "mkdocs.yml").read_text()
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
# mkdocs.yml's nav: "- Title: path.md" lines (read without a YAML parser: the tests need none)
NAV = re.findall(r"^\s*-\s*[^:\n]+:\s*(\S+\.md)\s*$", MKDOCS, re.M)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\s*$', re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s#]+)(?:#[^)]*)?\)")
MAX_IMAGE_BYTES = 150_000


def _public_modules():
    """fastrnn's public submodules: the non-underscore modules and packages of the package, and the
    modules fastrnn.__all__ names."""
    pkg = Path(fastrnn.__file__).parent
    names = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    names |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
              and not p.name.startswith("_")}
    names |= {n for n in fastrnn.__all__ if type(getattr(fastrnn, n)) is type(sys)}
    return sorted(names)


def _api_targets():
    """{'fastrnn.layers': 'api/layers.md', ...}: the objects each navigated page renders."""
    out = {}
    for page in NAV:
        for ident in re.findall(r"^::: (\S+)\s*$", (DOCS / page).read_text(), re.M):
            out[ident] = page
    return out


def test_the_navigation_lists_every_page_once_and_only_existing_ones():
    assert len(NAV) >= 30, NAV  # the regex found the nav
    assert len(NAV) == len(set(NAV)), [p for p in NAV if NAV.count(p) > 1]
    assert sorted(NAV) == PAGES, (set(NAV) ^ set(PAGES))


@pytest.mark.parametrize("module", _public_modules())
def test_every_public_module_has_an_api_page(module):
    targets = _api_targets()
    assert f"fastrnn.{module}" in targets, f"no '::: fastrnn.{module}' in a page of mkdocs.yml's nav"
    assert targets[f"fastrnn.{module}"].startswith("api/")


def test_the_api_pages_render_modules_that_exist():
    targets = _api_targets()
    assert "fastrnn" in targets
    for ident in targets:
        assert importlib.util.find_spec(ident) is not None, ident


def _snippets():
    for page in PAGES:
        for target in SNIPPET.findall((DOCS / page).read_text()):
            yield page, target


def test_every_snippet_include_exists_with_its_section():
    seen = list(_snippets())
    assert any(t.startswith("README.md:") for _, t in seen) and ("bench/RESULTS.md" in {t for _, t in seen})
    for page, target in seen:
        path, _, section = target.partition(":")
        file = ROOT / path  # snippets' base path is the repository root (mkdocs.yml)
        assert file.is_file(), f"{page}: snippet {target!r}: no file {path}"
        if section:
            text = file.read_text()
            start, end = f"--8<-- [start:{section}]", f"--8<-- [end:{section}]"
            assert text.count(start) == 1 and text.count(end) == 1, f"{page}: section {section!r} of {path}"
            assert text.index(start) < text.index(end), f"{page}: section {section!r} of {path} ends first"


def test_readme_sections_do_not_overlap_and_close():
    text = (ROOT / "README.md").read_text()
    opened = None
    for kind, name in re.findall(r"--8<-- \[(start|end):([\w-]+)\]", text):
        if kind == "start":
            assert opened is None, f"section {name!r} starts inside {opened!r}"
            opened = name
        else:
            assert opened == name, f"section {name!r} ends but {opened!r} is open"
            opened = None
    assert opened is None


@pytest.mark.parametrize("page", PAGES)
def test_images_exist_and_are_small(page):
    for src in IMAGE.findall((DOCS / page).read_text()):
        assert not re.match(r"[a-z]+://", src), f"{page}: remote image {src}"
        file = (DOCS / page).parent / src
        assert file.is_file(), f"{page}: image {src} not found"
        assert file.stat().st_size < MAX_IMAGE_BYTES, f"{page}: {src} is {file.stat().st_size} bytes"


def test_every_lesson_page_shows_its_plot_and_every_plot_is_shown():
    lessons = [p for p in PAGES if p.startswith("lessons/")]
    assert len(lessons) == 4
    shown = set()
    for page in lessons:
        found = IMAGE.findall((DOCS / page).read_text())
        assert found, f"{page} has no plot"
        shown |= {((DOCS / page).parent / src).resolve() for src in found}
    assert "OUT=docs/assets/lessons" in (DOCS / "make_plots.sh").read_text()
    made = {p.resolve() for p in (DOCS / "assets" / "lessons").glob("*.png")}
    assert made == shown, "plots made by docs/make_plots.sh but shown on no page, or shown but not made"


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_resolve(page):
    for href in LINK.findall((DOCS / page).read_text()):
        if re.match(r"[a-z]+:", href):
            continue
        assert ((DOCS / page).parent / href).exists(), f"{page}: link to {href} does not resolve"


def test_readme_points_to_the_docs():
    text = (ROOT / "README.md").read_text()
    assert "[docs/index.md](docs/index.md)" in text[:2000]
    assert 'pip install ".[docs]" && mkdocs serve' in text
    assert (DOCS / "index.md").is_file()



def _docstring_extension():
    """The namespace of docs/griffe_docstrings.py, run without importing griffe (not a test dependency)."""
    path = DOCS / "griffe_docstrings.py"
    ns = {"__file__": str(path)}
    exec(compile(path.read_text().replace("import griffe\n",
                                          "griffe = type('g', (), {'Extension': object, 'Object': object})\n"),
                 path.name, "exec"), ns)
    return ns


def test_the_docstring_rewrites():
    ns = _docstring_extension()
    text = ("Joins.\n\nArgs:\n    axis (int): The axis.\n\nCall arguments:\n    x: Array [B, T].\n"
            "        More on x.\n    training (bool): Keep a cache.\n\nExample:\n    >>> 1\n    1\n"
            "See :class:`~fastrnn.layers.Layer` and :func:`fastrnn.ops.matmul`.")
    out = ns["rewrite"](text)
    assert "    - `x`: Array [B, T].\n        More on x.\n    - `training` (bool): Keep a cache." in out
    assert "    axis (int): The axis." in out  # Args: untouched
    assert "\nExamples:\n    >>> 1" in out and "Example:" not in out
    assert "See `Layer` and `fastrnn.ops.matmul`." in out


@pytest.mark.parametrize("module", ["fastrnn.layers.recurrent", "fastrnn.layers.attention"])
def test_the_docs_build_fills_shared_docstring_parts_as_the_package_does(module):
    # the build reads the sources (griffe: cleaned docstrings, constants as their source); the
    # package fills the placeholders when it defines the classes
    import ast
    import importlib
    import inspect
    from types import SimpleNamespace

    mod = importlib.import_module(module)
    ns = _docstring_extension()
    tree = ast.parse(Path(mod.__file__).read_text())
    members = {node.targets[0].id: SimpleNamespace(is_alias=False, is_attribute=True, value=ast.unparse(node.value))
               for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    module_obj = SimpleNamespace(members=members, path=module)
    filled = []
    for node in tree.body:
        doc = ast.get_docstring(node) if isinstance(node, ast.ClassDef) else None
        if doc and re.search(r"^\s*\{\w+\}$", doc, re.M):
            obj = SimpleNamespace(module=module_obj, path=node.name, docstring=SimpleNamespace(value=doc))
            assert ns["fill_shared_parts"](obj) == inspect.getdoc(getattr(mod, node.name)), node.name
            filled.append(node.name)
    assert len(filled) >= 2, filled
