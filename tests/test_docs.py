"""The documentation's Python examples run as written, and every docstring example passes."""

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import keras_margins

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_as_docs_index():
    """The docs' home page is the README, with `docs/...` paths turned into site links."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"`docs/([\w/.-]+\.md)`", r"[\1](\1)", text)


def test_docs_index_is_the_readme():
    """Regenerate with: python tests/test_docs.py"""
    assert (ROOT / "docs" / "index.md").read_text(encoding="utf-8") == readme_as_docs_index()


PAGES = [
    path
    for path in sorted((ROOT / "docs").rglob("*.md"))
    if "```python" in path.read_text(encoding="utf-8")
]


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_docs_python_blocks_run(path, tmp_path, monkeypatch):
    """A page's blocks run in order in one namespace, as a reader would run them.

    A block whose first line is ``# not run: <reason>`` is skipped (e.g. the tensorflow-addons
    code a migration guide starts from, which cannot be imported on TensorFlow >= 2.16).
    """
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {}
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    for i, block in enumerate(blocks):
        if block.lstrip().startswith("# not run:"):
            continue
        exec(compile(block, f"{path.relative_to(ROOT)}[python block {i}]", "exec"), namespace)


MODULES = sorted(
    m.name for m in pkgutil.walk_packages(keras_margins.__path__, prefix="keras_margins.")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_mkdocs_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: every page exists, every link and API reference resolves."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    # The API pages are `:::` directives in the sources; built, they hold the docstrings.
    api = (tmp_path / "site" / "api" / "datasets" / "index.html").read_text(encoding="utf-8")
    assert keras_margins.datasets.read_idx.__doc__.splitlines()[0] in api
    heads = (tmp_path / "site" / "api" / "heads" / "index.html").read_text(encoding="utf-8")
    assert keras_margins.ArcFace.__doc__.strip().splitlines()[0] in heads


if __name__ == "__main__":
    (ROOT / "docs" / "index.md").write_text(readme_as_docs_index(), encoding="utf-8")
