"""Eight beamline processes write into one SQLite catalog at once: no HTTP 500.

Each writer is a real process with its own RunEngine and TiledWriter (events written one
by one, the heaviest load on the event tables), against a real `nanostrain serve`.
Every response of 500 or above the server sends is counted on the client side, before
tiled's retries could hide it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]

WRITERS = 8
RUNS_EACH = 3
POINTS = 10

WRITER = """
import bluesky.plans as bp
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from ophyd.sim import det, motor
from nanostrain.catalog import connect

client = connect({url!r}, api_key={key!r})
server_errors = []
client.context.http_client.event_hooks["response"].append(
    lambda response: server_errors.append(response.status_code) if response.status_code >= 500 else None)
RE = RunEngine({{}})
RE.subscribe(TiledWriter(client["raw"], batch_size=1))
for _ in range({runs}):
    RE(bp.scan([det], motor, -1, 1, {points}))
print("SERVER_ERRORS", len(server_errors))
"""


def test_eight_writers_on_sqlite_get_no_server_error(server_process, sqlite_settings):
    code = WRITER.format(url=server_process.url, key=sqlite_settings.api_key, runs=RUNS_EACH, points=POINTS)
    writers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(WRITERS)]
    outputs = [writer.communicate(timeout=600) for writer in writers]
    for writer, (stdout, stderr) in zip(writers, outputs):
        assert writer.returncode == 0, stderr
    errors = [int(stdout.split()[-1]) for stdout, _ in outputs]
    log = next(sqlite_settings.data_dir.parent.glob("server-*.log")).read_text()
    print(f"{WRITERS} writers x {RUNS_EACH} runs: HTTP 5xx per writer {errors}; "
          f"'database is locked' in the server log: {log.count('database is locked')}")
    assert errors == [0] * WRITERS
    assert "database is locked" not in log
    raw = server_process.client()["raw"]
    assert len(raw) == WRITERS * RUNS_EACH
    assert all(len(run["primary"].read()["motor"]) == POINTS for run in raw.values())
