"""The plans' progress channels.

* `report_progress`: one line per step of a long scan on standard output, and the same
  line to the ``bluesky`` logger (a queue server's console shows either).
* `RunProgress`: a progress bar per run on a terminal (tqdm: points done of the start
  document's ``num_points``, points/s, time left), drawn from the run's documents, so it
  works for every plan, whichever RunEngine runs it, and the plans stay free of display
  code. A session subscribes it on a terminal (`nanostrain.session.make_session`, with
  bluesky's ``ProgressBarManager`` for motion).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from tqdm import tqdm

LOGGER = logging.getLogger("bluesky.nanostrain")

#: The stream whose points `RunProgress` counts (``num_points`` counts them too).
COUNTED_STREAM = "primary"


def report_progress(line: str) -> None:
    """Print ``line`` (flushed) and log it at INFO on the ``bluesky.nanostrain`` logger."""
    print(line, flush=True)
    LOGGER.info(line)


class RunProgress:
    """RunEngine callback: a tqdm bar per run, over the points of its ``primary`` stream.

    The total is the start document's ``num_points`` (without it, e.g. an operando
    cycling run that ends with its protocol, the bar counts points and shows their rate
    and the time elapsed). A point counts when its event, event page or StreamDatum
    arrives (the highest ``seq_num`` seen), so step scans (events) and fly scans
    (StreamDatum of a whole row) advance alike. ``enabled``: True draws, False does not,
    None draws only if ``file`` (default standard error) is a terminal.
    """

    def __init__(self, file: TextIO | None = None, enabled: bool | None = None):
        self.file = file
        self.enabled = enabled
        self.bar: tqdm | None = None
        self._counted: set[str] = set()  # descriptor uids of the counted stream

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self._open(doc)
        elif self.bar is None:
            return
        elif name == "descriptor" and doc.get("name") == COUNTED_STREAM:
            self._counted.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._counted:
            self._reach(doc["seq_num"])
        elif name == "event_page" and doc["descriptor"] in self._counted:
            self._reach(max(doc["seq_num"]))
        elif name == "stream_datum" and doc["descriptor"] in self._counted:
            self._reach(doc["seq_nums"]["stop"] - 1)
        elif name == "stop":
            self.bar.close()
            self.bar = None

    def _open(self, start: dict[str, Any]) -> None:
        if self.bar is not None:  # a run that never stopped (the RunEngine was killed)
            self.bar.close()
        total = start.get("num_points")
        self._counted = set()
        self.bar = tqdm(
            total=total if isinstance(total, int) and total > 0 else None,
            desc=f"{start.get('plan_name', 'run')} #{start.get('scan_id', '?')}",
            unit="point",
            file=self.file or sys.stderr,
            disable=None if self.enabled is None else not self.enabled,
            mininterval=0.5,
            dynamic_ncols=True,
        )

    def _reach(self, seq_num: int) -> None:
        if self.bar is not None and seq_num > self.bar.n:
            self.bar.update(seq_num - self.bar.n)
