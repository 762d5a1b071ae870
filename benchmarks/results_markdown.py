"""Print the tables of a results file as Markdown, for docs/performance.md.

    python benchmarks/results_markdown.py benchmarks/results/vm-epyc-cpu.json

The same as ``python -m rnn_xp bench --markdown FILE`` (which also reads the
results of ``bench --isolated``); the tables are ``rnn_xp.bench.markdown``.
"""

from __future__ import annotations

import json
import sys

from rnn_xp.bench import markdown

__all__ = ["markdown"]

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/results_markdown.py RESULTS.json")
    with open(sys.argv[1]) as fh:
        print(markdown(json.load(fh)))
