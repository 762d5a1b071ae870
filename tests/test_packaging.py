"""The package as people install it: its metadata, its extras, and the built wheel.

``test_wheel_installs_and_runs_the_demo`` builds the wheel from a copy of the
sources, installs it into a fresh virtual environment (numpy and
array-api-compat come from the package index) and runs ``rnn-xp demo``
there. It is marked ``wheel``: deselect it with ``-m "not wheel"``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import rnn_xp

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

# The extras a user picks by what they have, as the install page lists them.
USER_EXTRAS = {"torch", "jax", "dask", "onnx", "keras", "flax", "plot", "mkl", "numba", "fast", "cuda12", "cuda13",
               "bench", "docs", "all"}
CPU_EXTRAS = {"torch", "jax", "dask", "onnx", "keras", "flax", "plot", "mkl", "numba", "bench"}


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extras():
    return pyproject()["project"]["optional-dependencies"]


def _self_extras(requirements):
    """The extras that ``rnn_xp[a,b]`` entries of a list pull in."""
    found = set()
    for req in requirements:
        m = re.fullmatch(r"rnn_xp\[([a-z0-9_,]+)\]", req.replace(" ", ""))
        if m:
            found |= set(m.group(1).split(","))
    return found


def _closure(name, table):
    """Every requirement string that extra ``name`` installs, following ``rnn_xp[...]``."""
    out, todo, seen = [], [name], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in table[extra]:
            inner = _self_extras([req])
            if inner:
                todo.extend(inner)
            else:
                out.append(req)
    return out


def _names(requirements):
    return {re.split(r"[\s\[<>=!;~]", r, maxsplit=1)[0].lower() for r in requirements}


def test_extras_are_the_documented_ones():
    table = extras()
    assert set(table) == USER_EXTRAS | {"gpu", "test"}
    page = (ROOT / "docs" / "install.md").read_text()
    documented = set(re.findall(r'pip install -e "\.\[([a-z0-9]+)\]"', page))
    assert documented == USER_EXTRAS, "docs/install.md must show each user extra's install line"
    for name in USER_EXTRAS:  # and its table lists each one
        assert re.search(rf"^\| `{name}` \|", page, re.M), name


def test_extras_install_what_they_say():
    table = extras()
    wants = {
        "torch": {"torch"}, "jax": {"jax"}, "dask": {"dask"}, "onnx": {"onnx", "onnxruntime"},
        "keras": {"keras"}, "flax": {"flax"}, "plot": {"matplotlib"}, "mkl": {"mkl"}, "numba": {"numba"},
        "fast": {"numba", "mkl"},
        "cuda12": {"cupy-cuda12x", "nvidia-cuda-nvrtc-cu12"},
        "cuda13": {"cupy-cuda13x", "nvidia-cuda-nvrtc"},
        "docs": {"sphinx", "myst-parser", "pydata-sphinx-theme", "numpydoc"},
    }
    for name, packages in wants.items():
        assert packages <= _names(_closure(name, table)), name
    assert "dask[array,distributed]" in " ".join(table["dask"]).replace(" ", "")
    assert _self_extras(table["all"]) == CPU_EXTRAS  # every CPU extra, no GPU one
    assert _self_extras(table["fast"]) == {"numba", "mkl"} <= CPU_EXTRAS  # the speed extra: all holds it
    assert not any("cupy" in r or "nvidia" in r for r in _closure("all", table))
    test = _closure("test", table)
    assert _names(_closure("all", table)) | _names(_closure("docs", table)) <= _names(test)
    assert {"build", "setuptools", "twine"} <= _names(test)  # the wheel test and `twine check`
    assert "torch==2.13.0" in test  # CI's exact torch


def test_one_version_source():
    meta = pyproject()
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rnn_xp.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", rnn_xp.__version__)
    assert f"[Unreleased]: {rnn_xp.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_license_is_bsd3_and_declared():
    meta = pyproject()["project"]
    assert meta["license"] == "BSD-3-Clause" and meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "Neither the name of" in text


def test_readme_commands_are_a_fresh_machines():
    readme = (ROOT / "README.md").read_text()
    for command in (
        'python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m rnn_xp demo',
        'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest',
    ):
        assert command in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci
    demo = readme.split("## Run the demo", 1)[1].split("\n## ", 1)[0]
    assert '.venv/bin/pip install -q -e ".[fast]"' in demo  # the extra for speed, named beside the demo


def test_cpu_torch_advice_matches_the_test_pin():
    """README.md and docs/install.md tell a machine without an NVIDIA GPU to take
    torch from PyTorch's CPU index first, for the ``torch`` extra and for the
    ``test`` extra at the very version it pins (else pip swaps in PyPI's CUDA build)."""
    index = "--index-url https://download.pytorch.org/whl/cpu"
    (pin,) = [r for r in extras()["test"] if re.match(r"torch\s*==", r)]
    readme = (ROOT / "README.md").read_text()
    install = (ROOT / "docs" / "install.md").read_text()
    for name, text in (("README.md", readme), ("docs/install.md", install)):
        assert f"pip install torch {index}" in text, name
        assert f"pip install {pin.replace(' ', '')} {index}" in text, name

@pytest.mark.wheel
def test_wheel_installs_and_runs_the_demo(tmp_path):
    """Build the sdist and the wheel (``twine check`` passes), install the wheel in a
    fresh venv, run ``rnn-xp demo`` there."""
    pytest.importorskip("build", reason="the build package (test extra) builds the wheel")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "rnn_xp", src / "rnn_xp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # no isolation: this environment's setuptools builds them, without a download
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
                    "--outdir", str(dist), str(src)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    (wheel,) = dist.glob("rnn_xp-*.whl")
    (sdist,) = dist.glob("rnn_xp-*.tar.gz")
    assert wheel.name == f"rnn_xp-{rnn_xp.__version__}-py3-none-any.whl"
    with tarfile.open(sdist) as tf:
        members = {m.split("/", 1)[-1] for m in tf.getnames()}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"} <= members
    if importlib.util.find_spec("twine") is not None:  # the test extra has it
        check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel),
                                str(sdist)], capture_output=True, text=True, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(f"rnn_xp-{rnn_xp.__version__}.dist-info/METADATA").decode()
    assert f"rnn_xp-{rnn_xp.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: BSD-3-Clause" in meta
    assert not any(n.startswith(("tests/", "docs/")) for n in names)
    for extra in USER_EXTRAS:
        assert f"Provides-Extra: {extra}" in meta

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # this environment's pip installs into the new one: no pip bootstrap in the fresh venv
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    demo = subprocess.run([str(venv / "bin" / "rnn-xp"), "demo"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "numpy" in demo.stdout
    where = subprocess.run([str(python), "-c", "import rnn_xp, torch"], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert "No module named 'torch'" in where.stderr  # a fresh venv: only the core dependencies
    origin = subprocess.run([str(python), "-c", "import rnn_xp; print(rnn_xp.__file__)"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert origin.stdout.startswith(str(venv))
