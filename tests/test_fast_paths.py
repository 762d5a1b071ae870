"""The fast kernels agree with the portable loop and with the float64 reference.

Every kernel chosen by ``_dispatch.forward_kernel`` (the in-place NumPy loop,
the jitted ``lax.scan`` for JAX, the fused CuPy loop) is run directly and
through ``rnn_forward`` on every option, and compared with
``forward.scan_portable`` and with ``support.reference_rnn``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import rnn_xp
from rnn_xp import _dispatch, _inplace
from rnn_xp.forward import scan_portable
from support import assert_close, optional_import, random_rnn, reference_rnn, to_numpy

from conftest import make_backend

FAST_BACKENDS = ["numpy", "numpy_readonly", "jax", "cupy"]

OPTIONS = [
    dict(nonlinearity="tanh"),
    dict(nonlinearity="relu"),
    dict(reverse=True),
    dict(leak=0.3),
    dict(lengths=[3, 7, 0, 1]),
    dict(lengths=[3, 7, 0, 1], reverse=True, leak=0.6, nonlinearity="relu"),
]


def _kernel_args(backend, dtype, x, h0, Wx, Wh, b, lengths):
    arrays = [None if a is None else backend.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    lens = None if lengths is None else backend.asarray(np.asarray(lengths, dtype=np.int64))
    return arrays, lens


def _run(kernel, backend, arrays, lens, opts, return_sequences):
    return kernel(
        backend.xp, *arrays, nonlinearity=opts.get("nonlinearity", "tanh"), lengths=lens,
        reverse=opts.get("reverse", False), leak=opts.get("leak", 1.0),
        return_sequences=return_sequences,
    )  # fmt: skip


@pytest.fixture(params=FAST_BACKENDS)
def fast(request):
    return make_backend(request.param)


def test_dispatch_picks_a_fast_kernel(fast):
    kernel = _dispatch.forward_kernel(fast.xp)
    assert kernel is not None and kernel is not scan_portable


def test_dispatch_leaves_other_backends_portable():
    strict = optional_import("array_api_strict")
    if strict is None:
        pytest.skip("array-api-strict not installed")
    assert _dispatch.forward_kernel(strict) is None


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("batch", [(), (4,), (2, 4)])
def test_kernel_matches_portable_and_reference(fast, dtype, rng, opts, batch):
    T, D, H = 7, 3, 5
    x, h0, Wx, Wh, b = random_rnn(rng, T, batch, D, H)
    lengths = opts.get("lengths")
    if lengths is not None:
        lengths = np.resize(np.asarray(lengths), batch)  # unsorted, with 0 and T
    kw = {k: v for k, v in opts.items() if k != "lengths"}
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    arrays, lens = _kernel_args(fast, dtype, x, h0, Wx, Wh, b, lengths)
    kernel = _dispatch.forward_kernel(fast.xp)
    for return_sequences in (True, False):
        got_seq, got_last = _run(kernel, fast, arrays, lens, opts, return_sequences)
        ref_seq, ref_last = _run(scan_portable, fast, arrays, lens, opts, return_sequences)
        assert_close(got_last, last, fast, dtype)
        assert_close(got_last, to_numpy(ref_last), fast, dtype)
        if return_sequences:
            assert_close(got_seq, expected, fast, dtype)
            assert_close(got_seq, to_numpy(ref_seq), fast, dtype)
        else:
            assert got_seq is None
    # and through the public function, batch_first included
    if lengths is not None:
        kw["lengths"] = lens
    out = rnn_xp.rnn_forward(*arrays, **kw)
    assert_close(out, expected, fast, dtype)
    if batch:
        x_bf = fast.asarray(np.moveaxis(x, 0, -2), dtype)
        out_bf = rnn_xp.rnn_forward(x_bf, *arrays[1:], batch_first=True, **kw)
        assert_close(out_bf, np.moveaxis(expected, 0, -2), fast, dtype)


@pytest.mark.parametrize("batch", [(3,), (0,), ()])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_empty_time_and_batch(fast, dtype, rng, batch, return_sequences):
    for T in (0, 2):
        x, h0, Wx, Wh, b = random_rnn(rng, T, batch, 3, 4)
        if x.size:
            expected, last = reference_rnn(x, h0, Wx, Wh, b)
        else:  # reference_rnn cannot reshape an empty x; the answer is known
            expected, last = np.zeros((T, *batch, 4)), h0
        arrays = [fast.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
        out = rnn_xp.rnn_forward(*arrays, return_sequences=return_sequences)
        assert_close(out, expected if return_sequences else last, fast, dtype)


def test_no_bias_no_h0(fast, dtype, rng):
    x, _, Wx, Wh, _ = random_rnn(rng, 5, (2,), 3, 4)
    expected, last = reference_rnn(x, None, Wx, Wh, None)
    arrays = [fast.asarray(a, dtype) for a in (x, Wx, Wh)]
    assert_close(rnn_xp.rnn_forward(arrays[0], None, *arrays[1:]), expected, fast, dtype)
    fin = rnn_xp.rnn_forward(arrays[0], None, *arrays[1:], return_sequences=False)
    assert_close(fin, last, fast, dtype)


def test_inputs_unchanged(fast, dtype, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (4,), 3, 5)
    arrays = [fast.asarray(a, dtype) for a in (x, h0, Wx, Wh, b)]
    lens = fast.asarray(np.array([6, 0, 2, 5]))
    before = [to_numpy(a).copy() for a in (*arrays, lens)]
    for rs in (True, False):
        rnn_xp.rnn_forward(*arrays, lengths=lens, reverse=True, leak=0.5, return_sequences=rs)
        rnn_xp.rnn_forward(*arrays, return_sequences=rs)
    for a, a0 in zip((*arrays, lens), before):
        np.testing.assert_array_equal(to_numpy(a), a0)


def test_last_state_is_not_a_view_of_the_output(rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 4, (2,), 3, 5)
    seq, last = _inplace.scan_numpy(
        None, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
        return_sequences=True,
    )  # fmt: skip
    kept = last.copy()
    seq[...] = 0.0
    np.testing.assert_array_equal(last, kept)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [50, 13, 0]])
def test_blocks_of_time_steps(rng, monkeypatch, reverse, lengths):
    """return_sequences=False projects the input in blocks; block edges change nothing."""
    monkeypatch.setattr(_inplace, "_BLOCK_STEPS", 7)
    x, h0, Wx, Wh, b = random_rnn(rng, 50, (3,), 2, 4)
    _, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, reverse=reverse, leak=0.7)
    lens = None if lengths is None else np.asarray(lengths)
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b, lengths=lens, reverse=reverse, leak=0.7,
                             return_sequences=False)
    np.testing.assert_allclose(got, last, rtol=1e-10, atol=1e-12)


def _numpy_fused(nonlinearity, leak):
    """NumPy stand-in for the fused CuPy step: the same contract, bias added per step."""

    def combine(o, tmp, h, b):
        z = o + tmp + (0.0 if b is None else b)
        f = np.tanh(z) if nonlinearity == "tanh" else np.where((z > 0) | (z != z), z, 0.0)
        o[...] = (1.0 - leak) * h + leak * f

    return combine


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bias_in_step_contract(rng, opts, return_sequences):
    """The loop the CuPy path runs (bias left to ``combine``), checked with NumPy."""
    x, h0, Wx, Wh, b = random_rnn(rng, 7, (4,), 3, 5)
    lengths = opts.get("lengths")
    kw = {k: v for k, v in opts.items() if k != "lengths"}
    expected, last = reference_rnn(x, h0, Wx, Wh, b, lengths=lengths, **kw)
    seq, fin = _inplace.scan_inplace(
        np, x, h0, Wx, Wh, b, nonlinearity=kw.get("nonlinearity", "tanh"),
        lengths=None if lengths is None else np.asarray(lengths), reverse=kw.get("reverse", False),
        leak=kw.get("leak", 1.0), return_sequences=return_sequences,
        combine=_numpy_fused(kw.get("nonlinearity", "tanh"), kw.get("leak", 1.0)),
        bias_in_step=True,
    )  # fmt: skip
    np.testing.assert_allclose(fin, last, rtol=1e-10, atol=1e-12)
    if return_sequences:
        np.testing.assert_allclose(seq, expected, rtol=1e-10, atol=1e-12)


def test_relu_keeps_nan(fast, rng):
    x, h0, Wx, Wh, b = random_rnn(rng, 3, (2,), 2, 3)
    x[1, 0, 0] = np.nan
    out = to_numpy(rnn_xp.rnn_forward(*[fast.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)],
                                      nonlinearity="relu"))
    assert np.isnan(out[1, 0]).any() and not np.isnan(out[:, 1]).any()


def test_jax_compiles_once_per_shape(rng):
    jax = optional_import("jax")
    if jax is None:
        pytest.skip("jax not installed")
    from rnn_xp import _jax_scan

    be = make_backend("jax")
    x, h0, Wx, Wh, b = random_rnn(rng, 5, (2,), 3, 4)
    arrays = [be.asarray(a, "float32") for a in (x, h0, Wx, Wh, b)]
    rnn_xp.rnn_forward(*arrays, leak=0.25)
    size = _jax_scan._JITTED._cache_size()
    x2 = be.asarray(rng.standard_normal((5, 2, 3)), "float32")
    out = rnn_xp.rnn_forward(x2, *arrays[1:], leak=0.25)  # same shapes and options
    assert _jax_scan._JITTED._cache_size() == size
    expected, _ = reference_rnn(to_numpy(x2), h0, Wx, Wh, b, leak=0.25)
    assert_close(out, expected, be, "float32")
    rnn_xp.rnn_forward(*arrays, leak=0.5)  # new options: one more program
    assert _jax_scan._JITTED._cache_size() == size + 1


def test_jax_inside_jit(rng):
    jax = optional_import("jax")
    if jax is None:
        pytest.skip("jax not installed")
    be = make_backend("jax")
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (3,), 2, 4)
    arrays = [be.asarray(a, "float64") for a in (x, h0, Wx, Wh, b)]
    lens = be.asarray(np.array([6, 0, 2]))
    f = jax.jit(lambda *a: rnn_xp.rnn_forward(*a[:5], lengths=a[5], reverse=True))
    expected, _ = reference_rnn(x, h0, Wx, Wh, b, lengths=[6, 0, 2], reverse=True)
    assert_close(f(*arrays, lens), expected, be, "float64")


def _peak_last_state(T, B=8, D=16, H=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    _, h0, Wx, Wh, b = random_rnn(rng, 0, (B,), D, H)
    h0, Wx, Wh, b = (a.astype(np.float32) for a in (h0, Wx, Wh, b))
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    rnn_xp.rnn_forward(x, h0, Wx, Wh, b, return_sequences=False)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def test_last_state_memory_does_not_grow_with_T():
    """No (T, B, H) buffer: peak extra memory at T=20000 is that at T=1000, within 10%.

    With B=8, H=32 a (T, B, H) float32 buffer would be 1 MB at T=1000 and
    20 MB at T=20000.
    """
    small, large = _peak_last_state(1000), _peak_last_state(20000)
    assert large <= 1.1 * small + 64 * 1024, (small, large)
    assert large < 20000 * 8 * 32 * 4 / 4  # far below one (T, B, H) buffer


def test_full_forward_extra_memory_is_output_plus_O_BH():
    rng = np.random.default_rng(0)
    T, B, D, H = 2000, 8, 16, 32
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    _, h0, Wx, Wh, b = random_rnn(rng, 0, (B,), D, H)
    h0, Wx, Wh, b = (a.astype(np.float32) for a in (h0, Wx, Wh, b))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    extra = peak - out.nbytes
    assert 0 <= extra <= 16 * B * H * 4 + 4 * H * H * 4 + 64 * 1024, extra


def test_bench_suite_runs_and_checks_agreement(tmp_path):
    """The benchmark machinery on a tiny size: every contender agrees with torch.nn.RNN."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    from rnn_xp import _bench

    from rnn_xp import _mkl

    grid = _bench.bench_grid([(2, 5, 3, 4)], backends=["jax", "torch"], rounds=1, budget_s=1e-3,
                             settle_s=0.0)  # fmt: skip
    names = set(grid[0]["results"])
    assert {_bench.BASELINE, _bench.FAST, "seed loop (numpy)", "rnn_xp numpy (portable)"} <= names
    with_mkl = _mkl.library() is not None  # then oneMKL and OpenBLAS are timed side by side
    assert (_bench.FAST_OPENBLAS in names) == (with_mkl and _mkl.preferred())  # the default is oneMKL
    assert (_bench.FAST_MKL in names) == (with_mkl and not _mkl.preferred())  # the default is OpenBLAS
    assert set(grid[0]["gemm_gflops_by_blas"]) == ({"numpy", "mkl"} if with_mkl else {"numpy"})
    assert grid[0]["gemm_gflops"] == max(grid[0]["gemm_gflops_by_blas"].values())
    assert all(r["agrees"] and r["seconds"] > 0 for r in grid[0]["results"].values())
    result = {"machine": {"cpu_model": "test"}, "gemm": {"n": 8, "gflops": {"numpy": 1.0}},
              "grid": grid}  # fmt: skip
    import io

    text = io.StringIO()
    _bench.print_tables(result, text)
    assert "worst ratio" in text.getvalue()
    _bench.chart(result, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_bench_command_line_parses():
    from rnn_xp import cli

    args = cli.build_parser().parse_args(["bench", "--quick", "--threads", "1"])
    assert args.quick and args.threads == 1 and not args.gpu and not args.small_batch
    assert cli.build_parser().parse_args(["bench", "--small-batch"]).small_batch


def test_bench_small_batch_grid(tmp_path, monkeypatch):
    """``--small-batch``: its own grid and results file, NumPy against torch, no memory section."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    import io
    import json

    from rnn_xp import _bench

    assert _bench.SMALL_BATCH_GRID == [(B, 200, H, H) for H in (256, 512, 1024) for B in (1, 4, 8)]
    assert set(_bench.SMALL_BATCH_GRID) <= set(_bench.GPU_GRID)
    monkeypatch.setattr(_bench, "SMALL_BATCH_GRID", [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)])
    monkeypatch.setattr(_bench, "SETTLE_S", 0.0)
    result = _bench.run(quick=True, small_batch=True, out_dir=str(tmp_path), backends=["numpy", "jax", "torch"],
                        stream=io.StringIO())  # fmt: skip
    assert [(r["B"], r["T"], r["D"], r["H"]) for r in result["grid"]] == [(1, 3, 4, 4), (2, 3, 4, 4)]
    names = set(result["grid"][0]["results"])
    assert _bench.BASELINE in names and _bench.FAST in names
    assert not any("jax" in n or "rnn_xp torch" in n for n in names)
    assert "memory" not in result
    (path,) = tmp_path.glob("*-cpu-small-batch-quick.json")
    assert path.name.endswith(f"-{_bench.cpu_tag(result['machine']['cpu_model'])}-cpu-small-batch-quick.json")
    assert json.loads(path.read_text())["grid"] == json.loads(json.dumps(result["grid"]))


@pytest.mark.parametrize("model, tag", [
    ("Intel(R) Xeon(R) Processor", "xeon"), ("Intel(R) Xeon(R) Platinum 8488C", "xeon"),
    ("AMD EPYC", "epyc"), ("AMD EPYC 9B45 128-Core Processor", "epyc"), ("AMD Ryzen 9 7950X", "ryzen"),
    ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "core"), ("", "cpu"), ("12345", "cpu"),
])  # fmt: skip
def test_results_files_are_named_by_cpu(model, tag):
    from rnn_xp import _bench

    assert _bench.cpu_tag(model) == tag


@pytest.mark.parametrize("shape", [(65, 65), (130, 200), (200, 130), (64, 64), (3, 7)])
def test_tiled_transpose_copy(shape):
    from rnn_xp._inplace import _transposed_copy

    W = np.random.default_rng(0).standard_normal(shape)
    Wt = _transposed_copy(np, W)
    assert Wt.flags.c_contiguous
    np.testing.assert_array_equal(Wt, W.T)


def test_numpy_kernel_large_hidden_matches_reference():
    x, h0, Wx, Wh, b = random_rnn(np.random.default_rng(1), 4, (3,), 5, 150)
    expected, _ = reference_rnn(x, h0, Wx, Wh, b)
    np.testing.assert_allclose(rnn_xp.rnn_forward(x, h0, Wx, Wh, b), expected, rtol=1e-12, atol=1e-12)


def test_results_file_prints_as_markdown_tables():
    """benchmarks/results_markdown.py: one table row per contender and size, memory rows."""
    import json
    import pathlib
    import runpy

    root = pathlib.Path(__file__).resolve().parents[1]
    markdown = runpy.run_path(str(root / "benchmarks" / "results_markdown.py"))["markdown"]
    result = json.loads((root / "benchmarks" / "results" / "vm-xeon-cpu.json").read_text())
    text = markdown(result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and " ms " not in line]
    contenders = sum(len(rec["results"]) for rec in result["grid"])
    assert len(rows) == contenders + 6 + 1  # + memory rows + the memory header
    big = next(r for r in result["grid"] if r["H"] == 1024)["results"]["torch.nn.RNN"]
    assert f"| (64, 50, 512, 1024) | torch.nn.RNN | {big['seconds'] * 1e3:.3f} |" in text


def _blas_threads_now():
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_small_steps_run_on_one_thread_and_a_large_projection_on_all(monkeypatch, rng, return_sequences):
    """Below _SERIAL_MACS the steps run on one BLAS thread; the projection keeps every thread when large."""
    pytest.importorskip("threadpoolctl")
    if _blas_threads_now() < 2:
        pytest.skip("NumPy's BLAS runs one thread here")
    monkeypatch.setattr(_inplace, "_MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    monkeypatch.setattr(_inplace, "_MKL_ROW_MACS", 1 << 40)
    seen = {"project": set(), "step": set()}
    real_project, real_combine = _inplace._project, _inplace._numpy_combine

    def project(*args, **kw):
        seen["project"].add(_blas_threads_now())
        return real_project(*args, **kw)

    def numpy_combine(mod, activate):
        combine = real_combine(mod, activate)

        def spy(*args):
            seen["step"].add(_blas_threads_now())
            return combine(*args)

        return spy

    monkeypatch.setattr(_inplace, "_project", project)
    monkeypatch.setattr(_inplace, "_numpy_combine", numpy_combine)
    for D, want_project in ((4, {1}), (4096, {_blas_threads_now()})):
        # B * H * H = 128K steps; the projection of a block is tiny, then 84M (T = 20) / 34M (8 steps)
        seen["project"].clear(), seen["step"].clear()
        x, h0, Wx, Wh, b = [a.astype(np.float32) for a in random_rnn(rng, 20, (8,), D, 128)]
        monkeypatch.setattr(_inplace, "_BLOCK_STEPS", 8)
        h_seq, h_last = _inplace.scan_numpy(
            np, x, h0, Wx, Wh, b, nonlinearity="tanh", lengths=None, reverse=False, leak=1.0,
            return_sequences=return_sequences,
        )  # fmt: skip
        assert seen["step"] == {1}
        assert seen["project"] == want_project, D
        want_seq, want_last = reference_rnn(x, h0, Wx, Wh, b)
        np.testing.assert_allclose(h_last, want_last, rtol=1e-4, atol=1e-5)
        if return_sequences:
            np.testing.assert_allclose(h_seq, want_seq, rtol=1e-4, atol=1e-5)
    assert _blas_threads_now() >= 2  # the caller's thread count is back


def _fake_gpu_result(persistent_ran=True):
    """A GPU results dict as ``bench --gpu`` writes it, with made-up times (for the printing code)."""
    from rnn_xp import _bench

    grid = []
    for i, (B, T, D, H) in enumerate([_bench.GPU_GRID[0], _bench.GPU_GRID[1], _bench.SMALL_BATCH_GRID[0]]):
        base = 1e-3 * (i + 1)
        results = {"torch.nn.RNN (cuDNN)": {"seconds": base, "ratio_to_baseline": 1.0},
                   "rnn_xp cupy (fused)": {"seconds": 1.2 * base, "ratio_to_baseline": 1.2},
                   "rnn_xp cupy (auto)": {"seconds": (0.9 + 0.2 * i) * base, "ratio_to_baseline": 0.9 + 0.2 * i}}
        if B <= 8:
            results["rnn_xp cupy (persistent)"] = {"seconds": base, "ratio_to_baseline": 1.0,
                                                   "persistent_kernel_ran": persistent_ran}
        for r in results.values():
            r.update(gflops=1.0, agrees=True)
        grid.append({"B": B, "T": T, "D": D, "H": H, "gemm_gflops": 10.0, "results": results})
    return {"machine": {"cpu_model": "test", "gpu_name": "Test GPU"}, "gemm": {"n": 8, "gflops": {"numpy": 1.0}},
            "grid": grid}


@pytest.mark.parametrize("persistent_ran", [True, False])
def test_gpu_tables_report_the_targets_and_a_fallback(persistent_ran):
    import io

    from rnn_xp import _bench

    text = io.StringIO()
    _bench.print_tables(_fake_gpu_result(persistent_ran), text)
    out = text.getvalue()
    # DeepBench rows have ratios 0.9 and 1.1, the small-batch row 1.3
    assert "on the DeepBench grid (2 of 12 sizes): 1.10 (target <= 1.0)" in out
    assert "on the small-batch grid (1 of 9 sizes): 1.30 (target <= 0.5)" in out
    assert ("WARNING" in out and "the persistent kernel did not run" in out) == (not persistent_ran)


def test_bench_saves_each_size_as_it_goes(tmp_path, monkeypatch):
    """A run cut short keeps the sizes it finished: the JSON is rewritten after each one."""
    if optional_import("torch") is None:
        pytest.skip("torch not installed")
    import io
    import json

    from rnn_xp import _bench

    monkeypatch.setattr(_bench, "CPU_GRID", [(1, 3, 4, 4), (2, 3, 4, 4)])
    monkeypatch.setattr(_bench, "SETTLE_S", 0.0)
    seen = []
    real = _bench.bench_grid

    def spy(*args, on_record, **kw):
        def record(records):
            on_record(records)
            (path,) = tmp_path.glob("*-cpu-quick.json")
            saved = json.loads(path.read_text())
            seen.append((len(saved["grid"]), saved["complete"]))

        return real(*args, on_record=record, **kw)

    monkeypatch.setattr(_bench, "bench_grid", spy)
    _bench.run(quick=True, out_dir=str(tmp_path), backends=["numpy", "torch"], memory=False, stream=io.StringIO())
    assert seen == [(1, False), (2, False)]
    (path,) = tmp_path.glob("*-cpu-quick.json")
    assert json.loads(path.read_text())["complete"] is True


@pytest.mark.parametrize("B", [15, 16, 40])
def test_numpy_loop_copies_wh_transposed_only_for_small_batches(monkeypatch, rng, B):
    """Below 16 rows the loop multiplies by a contiguous copy of Wh.T, from 16 on by the view: same numbers."""
    monkeypatch.setattr(_inplace, "_MKL_MACS", 1 << 40)  # the OpenBLAS loop, with or without oneMKL
    copies = []
    real = _inplace._transposed_copy
    monkeypatch.setattr(_inplace, "_transposed_copy", lambda mod, W: (copies.append(W.shape), real(mod, W))[1])
    x, h0, Wx, Wh, b = random_rnn(rng, 6, (B,), 5, 70)
    got = rnn_xp.rnn_forward(x, h0, Wx, Wh, b)
    assert copies == ([(70, 70)] if B < 16 else [])
    np.testing.assert_allclose(got, reference_rnn(x, h0, Wx, Wh, b)[0], rtol=1e-12, atol=1e-12)
