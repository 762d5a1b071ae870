"""The documentation site builds with warnings as errors, and its API
reference has a page for every public name.

The build runs on a copy of ``docs/`` (and the benchmark charts it shows), so
the tests never write into the source tree. It needs the ``docs`` extra
(which the ``test`` extra includes); without it the test is a skip with the
reason. The Markdown pages themselves run as doctests through pytest's
``--doctest-glob=*.md`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_TOOLS = ("sphinx", "myst_parser", "pydata_sphinx_theme", "numpydoc")


def _missing_tools():
    missing = []
    for name in DOCS_TOOLS:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _api_modules():
    """The modules listed in ``docs/api/index.md``'s autosummary."""
    text = (ROOT / "docs" / "api" / "index.md").read_text()
    return re.findall(r"^   (rnn_xp\.[a-z_.]+)$", text, re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = _missing_tools()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing: {', '.join(missing)}); "
                    'pip install -e ".[docs]"')
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "docs", src / "docs",
                    ignore=shutil.ignore_patterns("_build", "generated", "__pycache__"))
    shutil.copytree(ROOT / "benchmarks" / "results", src / "benchmarks" / "results",
                    ignore=shutil.ignore_patterns("*.json"))
    out = src / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(src / "doctrees"), str(src / "docs"), str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=src)
    assert run.returncode == 0, f"sphinx -W failed:\n{run.stdout[-4000:]}\n{run.stderr[-8000:]}"
    return out


def test_site_builds_with_warnings_as_errors(site):
    for page in ("index", "install", "layer", "performance", "performance-xeon",
                 "performance-epyc", "performance-method", "api/index"):
        assert (site / f"{page}.html").is_file(), page
    index = (site / "index.html").read_text()
    assert 'href="install.html"' in index and 'href="api/index.html"' in index


def test_every_public_name_has_an_api_page(site):
    modules = _api_modules()
    assert {"rnn_xp.forward", "rnn_xp.backward", "rnn_xp.layer", "rnn_xp.columns",
            "rnn_xp.convert"} <= set(modules)
    pages = site / "api" / "generated"
    for module_name in modules:
        module = importlib.import_module(module_name)
        assert (pages / f"{module_name}.html").is_file(), module_name
        for name in module.__all__:
            assert (pages / f"{module_name}.{name}.html").is_file(), f"{module_name}.{name}"
    from rnn_xp import GRU, LSTM, RNN

    for cls in (RNN, LSTM, GRU):  # every public method, its own or the layers' shared base's
        methods = [m for m in dir(cls) if not m.startswith("_") and callable(getattr(cls, m))]
        assert {"forward", "backward", "to", "train", "eval", "parameters", "state_dict"} <= set(methods)
        for method in methods:
            page = pages / f"rnn_xp.layer.{cls.__name__}.{method}.html"
            assert page.is_file(), (cls.__name__, method)
    # numpydoc rendered the sections: the parameters and the errors of RNN.to
    to_page = (pages / "rnn_xp.layer.RNN.to.html").read_text()
    assert "Parameters" in to_page and "Raises" in to_page and "Examples" in to_page


def test_benchmark_charts_are_on_the_performance_pages(site):
    images = {p.name for p in (site / "_images").iterdir()}
    charts = {p.name for p in (ROOT / "benchmarks" / "results").glob("*.png")}
    assert charts and charts <= images
    pages = [p.read_text() for p in site.glob("*.html")]
    for chart in charts:  # every chart is shown on some page
        assert any(chart in page for page in pages), chart
    summary = (site / "performance.html").read_text()
    for machine in ("xeon", "epyc"):  # the summary shows both machines' charts
        assert f"vm-{machine}-cpu.png" in summary and f"vm-{machine}-cpu-small-batch.png" in summary


def test_convert_summaries_name_every_format():
    """The API index's and the README's line on ``rnn_xp.convert`` name every
    format it has a ``to_*`` or ``from_*`` for (torch, Keras, ONNX, Flax, CS231n)."""
    from rnn_xp import convert

    formats = {re.sub(r"_(model|bidirectional)$", "", name.split("_", 1)[1])
               for name in convert.__all__ if name.startswith(("to_", "from_"))}
    assert {"torch", "keras", "onnx", "flax", "cs231n"} <= formats
    api = (ROOT / "docs" / "api" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for where, text in (("docs/api/index.md", api), ("README.md", readme)):
        (row,) = [line for line in text.splitlines() if line.startswith("|") and "`rnn_xp.convert`" in line]
        missing = sorted(f for f in formats if f not in row.lower())
        assert not missing, f"{where}: the rnn_xp.convert row does not name {missing}"


def test_paths_the_pages_cite_exist():
    """Every file a page names in inline code (``tests/test_x.py``, with an
    optional ``::test_name``; ``rnn_xp/...``, ``benchmarks/...``, ``docs/...``,
    ``examples/...``) and every relative link of the README exists, so a test
    file or module that moves or goes takes its citations with it."""
    span = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
    path = re.compile(r"(?:^|[\s(=])((?:tests|rnn_xp|benchmarks|docs|examples)/[\w./-]*\w)(?:::(\w+))?(?=$|[\s),:])")
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    missing, cited = [], 0
    for page in pages:
        if {"_build", "generated"} & set(page.relative_to(ROOT).parts):
            continue
        text = page.read_text()
        where = page.relative_to(ROOT)
        for code in span.finditer(text):
            for m in path.finditer(code.group(1)):
                target, test = m.group(1), m.group(2)
                if target.startswith("docs/_build"):  # what the docs build writes
                    continue
                cited += 1
                file = ROOT / target
                if not file.exists():
                    missing.append(f"{where}: {target}")
                elif test and not re.search(rf"^\s*(async )?def {test}\b", file.read_text(), re.M):
                    missing.append(f"{where}: {target}::{test}")
        if page.name == "README.md":
            for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if "://" not in m.group(1):
                    cited += 1
                    if not (ROOT / m.group(1)).exists():
                        missing.append(f"{where}: {m.group(1)}")
    assert cited > 50  # the pages do cite files: the patterns still find them
    assert not missing, "pages cite files that are not there:\n" + "\n".join(missing)
