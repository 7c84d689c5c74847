"""The plans' progress channel: one line per step of a long scan on standard output, and
the same line to the ``bluesky`` logger (a queue server's console shows either)."""

import logging

LOGGER = logging.getLogger("bluesky.nanostrain")


def report_progress(line: str) -> None:
    """Print ``line`` (flushed) and log it at INFO on the ``bluesky.nanostrain`` logger."""
    print(line, flush=True)
    LOGGER.info(line)
