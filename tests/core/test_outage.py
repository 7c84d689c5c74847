"""A catalog outage mid-run loses nothing: the run is backed up, then recovered.

The catalog server (a real process) is killed with SIGKILL while a beamline process is
in the middle of a scan. The scan goes on; TiledWriter routes the whole run to the backup
folder; after a restart, `nanostrain catalog recover` puts it back, complete.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ServerProcess, run_python

pytestmark = pytest.mark.server

WRITER = """
import json, os, signal, socket, time
from nanostrain.session import make_session
s = make_session(catalog_uri={url!r}, data_dir={data_dir!r}, api_key={key!r}, persist_metadata=False)
docs = []
s.RE.subscribe(lambda name, doc: docs.append((name, doc)))

def kill_server_after_third_event(name, doc):
    if name == "event" and doc["seq_num"] == 3:
        os.kill({pid}, signal.SIGKILL)
        while True:  # wait until the port is closed
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                break

s.RE.subscribe(kill_server_after_third_event)
uid, = s.RE(s.plans["alignment_scan"](s.devices["cam"], s.devices["sx"], -1.0, 1.0, 9,
            monitor=s.devices["i0"], exposure_s=0.05))
with open({out!r}, "w") as f:
    json.dump({{"uid": uid, "docs": docs}}, f, default=float)
"""


def test_killed_server_loses_no_documents(sqlite_settings, tmp_path):
    server = ServerProcess(sqlite_settings).start()
    out = tmp_path / "written.json"
    try:
        run_python(
            WRITER.format(
                url=server.url, data_dir=str(sqlite_settings.data_dir), key=sqlite_settings.api_key,
                pid=server.process.pid, port=server.port, out=str(out),
            ),
            env={"TILED_RETRY_ATTEMPTS": "1", "TILED_RETRY_TIMEOUT": "1"},
        )
        assert server.process.poll() is not None, "the server should have been killed mid-run"
        written = json.loads(out.read_text())
        backups = sorted(sqlite_settings.backup_dir.glob("*.jsonl"))
        assert len(backups) == 2  # the raw run and the live analysis's derived run

        server.start()  # same data folder, same port
        recovered = subprocess.run(
            [sys.executable, "-m", "nanostrain", "catalog", "recover", str(sqlite_settings.backup_dir),
             "--catalog", server.url, "--api-key", sqlite_settings.api_key],
            capture_output=True, text=True, timeout=300,
        )
        assert recovered.returncode == 0, recovered.stderr
        assert "2 run(s) recovered" in recovered.stdout

        client = server.client()
        run = client["raw"][written["uid"]]
        assert run.metadata["stop"]["exit_status"] == "success"
        # the analysis's derived run went back into the derived node, not among the raw runs
        (derived,) = client["derived"].values()
        assert derived.metadata["start"]["derived_from"] == written["uid"] and len(client["raw"]) == 1
        live_events = [doc for name, doc in written["docs"] if name == "event"]
        table = run["primary"].read()
        assert len(table["sx"]) == len(live_events) == 9
        assert np.array_equal(table["sx"], [e["data"]["sx"] for e in live_events])
        frames = run["primary"]["cam"].read()
        assert frames.shape[0] == 9 and frames.sum() > 0
    finally:
        server.stop()


def test_recover_refuses_a_file_that_is_not_a_run(sqlite_settings, tmp_path):
    from nanostrain.catalog import recover

    bad = tmp_path / "backup"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"name": "event", "doc": {}}\n')
    with pytest.raises(ValueError, match="does not begin with a start document"):
        recover(bad, client=None)
