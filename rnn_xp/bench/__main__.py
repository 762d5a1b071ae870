"""``python -m rnn_xp.bench --worker SPEC``: one contender of the isolated suites, in this process.

``rnn_xp.bench.isolated.spawn`` starts it; it prints the worker's result as
one line of JSON. People run the benchmark with ``python -m rnn_xp bench``.
"""

import json
import sys

from .isolated import worker

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m rnn_xp.bench --worker SPEC (run the benchmark with python -m rnn_xp bench)")
    print(json.dumps(worker(json.loads(sys.argv[2]))))
