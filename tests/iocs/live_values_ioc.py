"""A second process serving the live analyses' values, as ``nanostrain worker`` does.

Usage: ``python live_values_ioc.py PREFIX``. Builds `default_analyses()`, serves their live
signals with `nanostrain.live_pvs.LiveValueServer` under PREFIX and prints ``READY
<prefix>``; then each line of stdin, a JSON list ``[analysis, name, value]`` (``NaN``
allowed), is set with that analysis's ``set_live``, and ``SET <analysis>_<name>`` printed.
Run with the session's loopback Channel Access environment (tests/conftest.py).
"""

from __future__ import annotations

import json
import sys

from nanostrain.callbacks.registry import default_analyses, live_signals
from nanostrain.live_pvs import LiveValueServer


def main(prefix: str) -> None:
    analyses = {analysis.analysis: analysis for analysis in default_analyses()}
    with LiveValueServer(live_signals(analyses.values()), prefix=prefix):
        print(f"READY {prefix}", flush=True)
        for line in sys.stdin:
            analysis, name, value = json.loads(line)
            analyses[analysis].set_live(name, value)
            print(f"SET {analysis}_{name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
