"""benchmarks/bench_orientation.py: it times both sides of the step's product and reports the loops' rule."""

from __future__ import annotations

import json
import pathlib
import runpy

from rnn_xp.kernels.numpy import wh_first

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_orientation.py"


def test_orientation_benchmark_writes_every_form_and_the_rule(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "orientation.json"
    assert main(["--quick", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["B"], r["H"]) for r in data["rows"]] == [(B, 512) for B in (1, 2, 4, 8, 16, 32, 64)]
    for r in data["rows"]:
        times = [r[k] for k in ("h @ WhT", "h @ Wh.T", "Wh @ h.T", "dz @ Wh", "WhT @ dz.T")]
        assert all(t > 0 for t in times)
        assert r["forward speedup, Wh left"] == min(times[0], times[1]) / times[2]
        assert r["rule"] == [wh_first(r["B"], 512), wh_first(r["B"], 512, backward=True)]
    assert data["unit"] == "us per step" and data["meta"]["arch"] and data["meta"]["threadpools"]
    assert "| 4 | 512 |" in capsys.readouterr().out
