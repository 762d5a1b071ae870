"""The command line checks every value before work starts, says what it does, and ends cleanly.

- A usage error (an unknown command or flag, a bad choice, a missing or malformed value) is
  one line starting ``python -m rnn_xp``, exit code 2, nothing on stdout, no traceback.
- A bad flag value is one line naming the flag, exit code 2, before anything runs: flags of
  one bench method given to the other, more threads than CPUs, a backend that is not
  installed, sizes whose arrays cannot fit in memory (``memory_needed``, a lower bound of
  the traced peak).
- Every flag's help states its default.
- Results go under ``rnn_xp_results/`` (git ignores it) unless a flag names another place.
- ``bench`` writes its results file only when complete; Ctrl-C is one line and exit code 130;
  without torch it has no baseline and no ratio; without matplotlib it says no chart was written.
- ``train`` without matplotlib trains and skips the plot with a one-line hint.
- ``rnn-xp demo | head -3`` ends without a traceback; ``demo > /dev/full`` and a
  ``MemoryError`` are one line and exit code 1.
- Long runs print progress often (``train`` at least every ``PROGRESS_S`` seconds, ``bench``
  for every contender of every round).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from rnn_xp.cli import build_parser, main
from support import optional_import


@pytest.fixture
def no_module(monkeypatch):
    """``no_module("matplotlib")``: importing that package (and its submodules) fails."""

    def block(*names):
        class Finder:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in names:
                    raise ImportError(f"No module named {name!r} (hidden by the test)")

        for name in list(sys.modules):
            if name.split(".")[0] in names:
                monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, "meta_path", [Finder(), *sys.meta_path])

    return block


ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = str(ROOT / "benchmarks" / "results" / "vm-xeon-cpu.json")  # a results file of bench

BAD = [
    (["train", "--log-every", "0"], "--log-every"),
    (["train", "--batch", "0"], "--batch"),
    (["train", "--seq-len", "0"], "--seq-len"),
    (["train", "--task", "adding", "--seq-len", "1"], "--seq-len"),
    (["train", "--steps", "-3"], "--steps"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--plot", RESULTS + "/loss.png"], "--plot"),  # a file where the folder would be
    (["train", "--plot", "loss.bmpx"], "--plot"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--threads", "100000"], "--threads"),  # more than this machine has (issue 25, #3)
    (["demo", "--seed", "-1"], "--seed"),
    # flags of one method of bench given to the other: refused, never ignored (issue 25, #16)
    (["bench", "--suite", "cpu"], "--suite"),
    (["bench", "--long"], "--long"),
    (["bench", "--no-inprocess", "--quick"], "--no-inprocess"),
    (["bench", "--isolated", "--gpu"], "--gpu"),
    (["bench", "--isolated", "--small-batch"], "--small-batch"),
    (["bench", "--isolated", "--no-memory"], "--no-memory"),
    (["bench", "--gpu", "--small-batch"], "--small-batch"),
    (["bench", "--markdown", RESULTS, "--quick"], "--markdown"),
    (["bench", "--markdown", "no-such-file.json"], "--markdown"),
]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Training and both benchmarks fail the test if they start: a refused flag stops before them."""
    from rnn_xp import bench
    from rnn_xp.bench import isolated
    from rnn_xp.cli import train as train_module

    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("bench started"))
    monkeypatch.setattr(isolated, "run", lambda *a, **k: pytest.fail("bench --isolated started"))


@pytest.mark.parametrize("argv, flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_fail_at_once_naming_the_flag(capsys, nothing_runs, argv, flag):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {flag}:" in err, err


@pytest.mark.parametrize("argv, flag", [
    (["--batch", str(10**12)], "--batch"),
    (["--hidden", str(10**9)], "--hidden"),
    (["--seq-len", str(10**13)], "--seq-len"),
    (["--steps", str(10**15)], "--steps"),  # the losses are kept, one float per step
    (["--batch", str(10**12), "--hidden", str(10**9)], "--hidden"),  # the flag that weighs most
])  # fmt: skip
def test_a_run_larger_than_memory_is_refused_naming_the_flag(capsys, nothing_runs, argv, flag):
    """Sizes whose arrays cannot fit are refused before any work, not by a MemoryError (issue 25, #15)."""
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"argument {flag}: " in err and "of memory" in err, err


def test_the_memory_check_compares_with_what_is_available(capsys, monkeypatch, nothing_runs):
    from rnn_xp.bench import machine
    from rnn_xp.cli.train import memory_needed

    need = memory_needed("sine", steps=600, batch=32, seq_len=40, hidden=512, dtype="float64")
    monkeypatch.setattr(machine, "available_memory", lambda: need - 1)
    with pytest.raises(SystemExit):
        main(["train", "--hidden", "512", "--dtype", "float64"])
    assert "argument --hidden: " in capsys.readouterr().err
    monkeypatch.setattr(machine, "available_memory", lambda: None)  # the system does not say: no check
    with pytest.raises(pytest.fail.Exception, match="training started"):
        main(["train", "--batch", str(10**12)])


def test_running_out_of_memory_anyway_is_one_line(capsys, monkeypatch):
    from rnn_xp.cli import train as train_module

    def train(*args, **kwargs):
        raise MemoryError("Unable to allocate 7.28 TiB for an array with shape (1000000000000,)")

    monkeypatch.setattr(train_module, "train", train)
    assert main(["train", "--plot", "none"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("python -m rnn_xp train: error: out of memory: Unable to allocate 7.28 TiB for an array with "
                   "shape (1000000000000,) (try smaller sizes)")  # fmt: skip


@pytest.mark.parametrize("task", ["sine", "adding"])
@pytest.mark.parametrize("sizes", [dict(steps=2, batch=300, seq_len=30, hidden=48, dtype="float64"),
                                   dict(steps=2, batch=8, seq_len=100, hidden=200, optimizer="sgd")])  # fmt: skip
def test_the_memory_estimate_is_a_lower_bound(task, sizes):
    """What ``memory_needed`` counts is allocated for sure: it stays below the traced peak of a real run."""
    import tracemalloc

    from rnn_xp.cli.train import memory_needed, train

    train(task, quiet=True, **sizes)  # compiles and caches first: their memory is no part of a run's
    tracemalloc.start()
    try:
        train(task, quiet=True, **sizes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    need = memory_needed(task, **sizes)
    assert 0.4 * peak < need <= peak, (need, peak)


def test_bench_out_must_be_a_folder(tmp_path, capsys):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--out", str(existing)])
    assert exc.value.code == 2
    assert "argument --out: must be a folder" in capsys.readouterr().err


def test_train_function_checks_its_values():
    from rnn_xp.cli.train import train

    for kwargs, name in [({"steps": -3}, "steps"), ({"batch": 0}, "batch"), ({"lr": float("nan")}, "lr"),
                         ({"log_every": 0}, "log_every"), ({"hidden": 0}, "hidden")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            train("sine", quiet=True, **kwargs)
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        train("adding", seq_len=1, quiet=True)


def test_every_flag_says_its_default():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest in ("help",):
                continue
            assert action.help and "default" in action.help, f"{name} {action.option_strings}: {action.help!r}"


def test_train_without_matplotlib_skips_the_plot_with_a_hint(tmp_path, capsys, no_module, monkeypatch):
    no_module("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--steps", "2", "--seq-len", "4", "--hidden", "3"]) == 0
    captured = capsys.readouterr()
    (hint,) = [line for line in captured.err.splitlines() if line.strip()]
    assert "matplotlib is not installed" in hint and "--plot none" in hint
    assert "final loss" in captured.out and "loss curve written" not in captured.out
    assert list(tmp_path.iterdir()) == []


def _ignored_by_git(path):
    """Whether this checkout's .gitignore covers ``path`` (relative to the root); None outside a git checkout."""
    if not (ROOT / ".git").exists():
        return None
    try:
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.returncode == 0


def test_train_writes_its_plot_under_a_results_folder_git_ignores(tmp_path, capsys, monkeypatch):
    """By default the loss curve goes to rnn_xp_results/, never loose into the current folder (issue 25, #20)."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--steps", "2", "--seq-len", "4", "--hidden", "3"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["rnn_xp_results"]
    assert (tmp_path / "rnn_xp_results" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "loss curve written to rnn_xp_results/loss.png" in capsys.readouterr().out
    assert _ignored_by_git("rnn_xp_results/loss.png") in (True, None)


def test_bench_writes_under_a_results_folder_git_ignores(tiny_bench, tmp_path, capsys, monkeypatch):
    """By default bench writes to rnn_xp_results/, says so first, and names each file it wrote (issue 25, #20)."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick", "--no-memory"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["rnn_xp_results"]
    (path,) = (tmp_path / "rnn_xp_results").glob("*-cpu-quick.json")
    out = capsys.readouterr().out
    assert out.startswith("results go to rnn_xp_results/ (--out)")
    assert f"wrote rnn_xp_results/{path.name}" in out
    assert _ignored_by_git(f"rnn_xp_results/{path.name}") in (True, None)


def test_train_prints_progress_every_few_seconds_on_a_slow_backend(monkeypatch, capsys):
    from rnn_xp.cli import train as train_module

    ticks = iter(range(0, 10**6, 3))  # every clock reading is 3 s later: a slow backend
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: float(next(ticks)))
    train_module.train("sine", steps=4, seq_len=4, hidden=3, log_every=1000)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(lines) == 4  # log_every alone would print only the last step


def test_demo_into_a_closed_pipe_ends_without_a_traceback():
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # every line written at once: the pipe closes mid-run
    proc = subprocess.run(f"'{sys.executable}' -m rnn_xp demo --backend numpy | head -3", shell=True,
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_demo_into_a_full_device_is_one_line_and_fails():
    """``demo > /dev/full``: one line saying the output could not be written, a non-zero exit (issue 25, #16)."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "rnn_xp", "demo", "--backend", "numpy"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("python -m rnn_xp demo: error: cannot write the output:") and "No space" in lines[0]


def test_train_with_a_backend_that_is_not_installed_is_a_usage_error(capsys, no_module, nothing_runs):
    """A backend that cannot run here is a bad value of --backend: one line, exit 2, like any flag (issue 25, #16)."""
    no_module("torch")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--backend", "torch"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument --backend: torch is not installed" in err, err


def test_train_accepts_the_default_scheduler_with_any_backend(capsys):
    """``--scheduler threads`` is what a Dask run uses anyway: accepted with NumPy too (issue 25, #16)."""
    assert main(["train", "--scheduler", "threads", "--steps", "2", "--seq-len", "4", "--hidden", "3",
                 "--plot", "none"]) == 0  # fmt: skip
    assert "final loss" in capsys.readouterr().out


def test_demo_explains_its_table_and_warns_nothing(capsys, recwarn):
    assert main(["demo", "--backend", "dask" if optional_import("dask.array") else "numpy"]) == 0
    out = capsys.readouterr().out
    assert "float64 NumPy loop" in out and "seed 000 (the CS231n-style" in out and "seed 003 (the row loop" in out
    assert not [w for w in recwarn if "rnn_xp" in str(w.filename) or "PerformanceWarning" in type(w.message).__name__]


# -- bench ---------------------------------------------------------------------


@pytest.fixture
def tiny_bench(monkeypatch):
    from rnn_xp import _backends, bench
    from rnn_xp.bench import suite

    monkeypatch.setattr(suite, "CPU_GRID", [(1, 3, 4, 4), (2, 3, 4, 4), (3, 3, 4, 4)])
    monkeypatch.setattr(suite, "SETTLE_S", 0.0)
    for name in ("GEMM_N_CPU", "HEADER_GEMM_N", "HEADER_GEMM_N_QUICK"):  # the rates matter not here, the time does
        monkeypatch.setattr(suite, name, 64)
    monkeypatch.setattr(_backends, "available", lambda: ["numpy", "torch"])
    return bench


def test_interrupted_bench_keeps_the_complete_results_file(tiny_bench, tmp_path, capsys, monkeypatch):
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    from rnn_xp.bench import cells

    real, calls = cells.contenders, []

    def contenders(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:  # Ctrl-C during the second size
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cells, "contenders", contenders)
    assert main(["bench", "--quick", "--no-memory", "--out", str(tmp_path)]) == 130  # a first run: no results yet
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("python -m rnn_xp bench: interrupted after 1 of 3 sizes")
    assert "Traceback" not in err
    (partial,) = tmp_path.glob("*-cpu-quick.partial.json")
    assert [len(json.loads(partial.read_text())["grid"]), json.loads(partial.read_text())["complete"]] == [1, False]
    final = partial.with_name(partial.name.replace(".partial", ""))
    assert not final.exists()

    final.write_text('{"complete": true, "grid": ["an earlier, complete run"]}')
    calls.clear()
    assert main(["bench", "--quick", "--no-memory", "--out", str(tmp_path)]) == 130
    assert json.loads(final.read_text())["grid"] == ["an earlier, complete run"]  # untouched


def test_bench_without_torch_has_no_baseline_and_no_ratio(tiny_bench, tmp_path, no_module):
    no_module("torch")
    bench = tiny_bench
    out = io.StringIO()
    result = bench.run(quick=True, out_dir=str(tmp_path), gemm_n=64, backends=["numpy"], memory=False, stream=out)
    text = out.getvalue()
    assert "no baseline: torch is not installed" in text
    assert "ratio" not in text.split("no baseline")[1].split("\n", 2)[2]  # not in the table's header
    assert "worst ratio" not in text
    assert "no PNG written" in text
    assert all(r["ratio_to_baseline"] is None for rec in result["grid"] for r in rec["results"].values())


def test_bench_without_matplotlib_says_no_png(tiny_bench, tmp_path, no_module):
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    no_module("matplotlib")
    out = io.StringIO()
    tiny_bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "torch"], memory=False, stream=out,
                   gemm_n=64)
    assert "no PNG written: matplotlib is not installed" in out.getvalue()
    assert not list(tmp_path.glob("*.png"))


def test_gemm_percentages_above_100_are_explained():
    from rnn_xp import bench

    results = {bench.BASELINE: {"seconds": 1e-3, "ratio_to_baseline": 1.0, "gflops": 5.0, "agrees": True},
               "rnn_xp jax (lax.scan)": {"seconds": 5e-4, "ratio_to_baseline": 0.5, "gflops": 14.0,
                                         "agrees": True}}  # fmt: skip
    result = {"machine": {"cpu_model": "test"}, "gemm": {"n": 8, "gflops": {"numpy": 10.0}},
              "grid": [{"B": 1, "T": 2, "D": 3, "H": 4, "gemm_gflops": 10.0,
                        "gemm_gflops_by_blas": {"numpy": 10.0}, "results": results}]}  # fmt: skip
    out = io.StringIO()
    bench.print_tables(result, out)
    text = out.getvalue()
    assert "140%*" in text and "* above 100% of the GEMM rate" in text


def test_bench_progress_names_every_contender_of_every_round(tiny_bench):
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    bench = tiny_bench
    notes = []

    class Recorder(bench.Progress):
        def note(self, label):
            notes.append(label)

    progress = Recorder(2, stream=io.StringIO())
    grid = bench.bench_grid([(1, 3, 4, 4)], backends=["numpy", "torch"], rounds=2, budget_s=1e-3,
                            progress=progress, settle_s=0.0)  # fmt: skip
    for name in grid[0]["results"]:
        for i in (1, 2):
            assert any(f"round {i}/2: {name}" in n for n in notes), (name, i)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["demo", "--bogus"], r"unrecognized arguments: --bogus"),
        (["demo", "--backend", "tensorflow"], r"argument --backend: invalid choice: 'tensorflow' \(choose from 'all', 'numpy'"),
        (["demo", "--backend"], r"argument --backend: expected one argument"),
        (["frobnicate"], r"argument command: invalid choice: 'frobnicate'"),
        ([], r"the following arguments are required: command"),
        (["demo", "--seed", "abc"], r"argument --seed: must be a non-negative integer; got 'abc'"),
        (["demo", "--seed", "-1"], r"argument --seed: must be a non-negative integer; got '-1'"),
    ],
)
def test_cli_usage_errors(argv, match):
    proc = subprocess.run([sys.executable, "-m", "rnn_xp", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("python -m rnn_xp")
    assert re.search(match, lines[0]), lines[0]
