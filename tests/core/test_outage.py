"""Outages lose nothing and hold the experiment only briefly; real processes are killed.

* The catalog server (`nanostrain serve`) is SIGKILLed mid-scan: the plan's extra time is
  measured against the same scan with the server up; a second scan runs with the server
  down; once the server is back the session resyncs both runs from its journal by itself.
* The beamline session is SIGKILLed at random points of a scan: `nanostrain catalog
  recover` puts every document the session had emitted into the catalog.
* A session starts while the catalog is down and resyncs when it comes up.
* The journal's disk fills while the catalog is down: the RunEngine pauses with a message
  naming the problem; with space freed, it resumes and the journal holds the whole run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from ..conftest import API_KEY, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.server

SCAN = ('s.plans["alignment_scan"](s.devices["cam"], s.devices["sx"], -1.0, 1.0, {num}, '
        'monitor=s.devices["i0"], exposure_s=0.05)')

CATALOG_KILLED = """
import json, os, signal, socket, time
from nanostrain.session import make_session
s = make_session(catalog_uri={url!r}, data_dir={data_dir!r}, api_key={key!r}, persist_metadata=False)
docs = []
s.RE.subscribe(lambda name, doc: docs.append((name, doc)))

def timed(plan):
    start = time.monotonic()
    uid, = s.RE(plan)
    return uid, time.monotonic() - start

def kill_server_after_third_event(name, doc):
    if name == "event" and doc["seq_num"] == 3:
        os.kill({pid}, signal.SIGKILL)
        while True:  # wait until the port is closed
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                break

baseline_uid, baseline = timed({scan})
token = s.RE.subscribe(kill_server_after_third_event)
killed_uid, killed = timed({scan})
s.RE.unsubscribe(token)
down_uid, down = timed({scan})
with open({out!r}, "w") as f:
    json.dump({{"uids": [baseline_uid, killed_uid, down_uid], "seconds": [baseline, killed, down],
               "docs": docs}}, f, default=float)
while not os.path.exists({restarted!r}):
    time.sleep(0.1)
start = time.monotonic()
while not (s.recorder.forwarder.synced() and s.derived_recorder.forwarder.synced()):
    assert time.monotonic() - start < 240, "no resync within 240 s"
    time.sleep(0.2)
print("RESYNCED", round(time.monotonic() - start, 1))
s.close()
"""


def _events(run) -> list[float]:
    return [float(x) for x in run["primary"].read()["sx"]]


def test_killed_catalog_costs_the_plan_at_most_seconds_and_loses_nothing(sqlite_settings, tmp_path):
    server = ServerProcess(sqlite_settings).start()
    out, restarted = tmp_path / "written.json", tmp_path / "restarted"
    code = CATALOG_KILLED.format(
        url=server.url, data_dir=str(sqlite_settings.data_dir), key=sqlite_settings.api_key,
        pid=server.process.pid, port=server.port, out=str(out), restarted=str(restarted),
        scan=SCAN.format(num=9),
    )
    # tiled's own retry settings are left as they are: the forwarder, not the plan, waits
    session = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() or session.poll() is not None, timeout=300)
        assert session.poll() is None, session.communicate()
        written = json.loads(out.read_text())
        baseline, killed, down = written["seconds"]
        print(f"scan: {baseline:.2f} s with the catalog up; {killed:.2f} s with it killed mid-scan "
              f"(+{killed - baseline:.2f} s); {down:.2f} s with it down (+{down - baseline:.2f} s)")
        assert killed - baseline <= 5.0 and down - baseline <= 5.0
        assert server.process.poll() is not None, "the server should have been killed mid-run"

        server.start()  # same data folder, same port
        restarted.touch()
        stdout, stderr = session.communicate(timeout=300)
        assert session.returncode == 0, stderr
        assert "RESYNCED" in stdout
        print(stdout.strip())
    finally:
        if session.poll() is None:
            session.kill()
    try:
        client = server.client()
        sent = {}
        for name, doc in written["docs"]:
            if name == "event":
                sent.setdefault(doc["descriptor"], []).append(doc["data"]["sx"])
        for uid in written["uids"]:
            run = client["raw"][uid]
            assert run.metadata["stop"]["exit_status"] == "success"
            (descriptor,) = [doc["uid"] for name, doc in written["docs"]
                             if name == "descriptor" and doc["run_start"] == uid and doc["name"] == "primary"]
            assert _events(run) == sent[descriptor] and len(sent[descriptor]) == 9
            assert run["primary"]["cam"].read().shape[0] == 9
            (derived,) = [r for r in client["derived"].values() if r.metadata["start"]["derived_from"] == uid]
            assert derived.metadata["stop"]["exit_status"] == "success"
            assert len(derived["frame_stats"].read()["total"]) == 9
        # nothing left for recover: the session's resync took it all
        recovered = _recover(server, sqlite_settings)
        assert "0 run(s) recovered, 0 already complete, 0 damaged" in recovered.stdout
    finally:
        server.stop()


def _recover(server, settings) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "nanostrain", "catalog", "recover", "--data-dir", str(settings.data_dir),
         "--catalog", server.url, "--api-key", settings.api_key],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


SESSION = """
import sys
from nanostrain.session import make_session
s = make_session(catalog_uri={url!r}, data_dir={data_dir!r}, api_key={key!r}, persist_metadata=False)

def report(kind):
    def emitted(name, doc):
        # printed once the session's recorder has had the document
        print(kind, name, doc["descriptor"] if name == "event" else doc.get("uid"), doc.get("seq_num", ""), flush=True)
    return emitted

s.RE.subscribe(report("raw"))
for analysis in s.analyses:
    analysis.subscribe(report("derived"))
print("READY", flush=True)
s.RE({scan})
print("DONE", flush=True)
"""

NUM_EVENTS = 30


def _kill_points(count: int, seed: int) -> list[int]:
    """``count`` kill points: 0 is right after the start document, k after event k."""
    rng = random.Random(seed)
    return sorted({0, *rng.sample(range(1, NUM_EVENTS + 1), count - 1)})


def _kill_session_and_recover(server, settings, point: int) -> None:
    session = subprocess.Popen(
        [sys.executable, "-c", SESSION.format(url=server.url, data_dir=str(settings.data_dir),
                                              key=settings.api_key, scan=SCAN.format(num=NUM_EVENTS))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    emitted: list[list[str]] = []
    try:
        for line in session.stdout:
            words = line.split()
            if words[:1] in (["raw"], ["derived"]):
                emitted.append(words)
                kind, name = words[:2]
                if kind == "raw" and ((point == 0 and name == "start") or (name == "event" and int(words[3]) == point)):
                    session.kill()  # SIGKILL
                    break
        else:
            pytest.fail(f"the session ended before kill point {point}")
    finally:
        session.kill()
        session.wait(timeout=30)

    recovered = _recover(server, settings)
    assert "0 damaged, 0 failed" in recovered.stdout

    client = server.client()
    print(f"kill point {point}: {len(emitted)} documents emitted; {recovered.stdout.strip().splitlines()[-1]}")
    for kind in ("raw", "derived"):
        starts = [words[2] for words in emitted if words[0] == kind and words[1] == "start"]
        for uid in starts:
            assert uid in client[kind], f"{kind} run {uid} lost (kill point {point})"
        catalog_events = {}
        for uid in starts:
            for name, doc in client[kind][uid].documents():
                if name == "event":
                    catalog_events.setdefault(doc["descriptor"], set()).add(doc["seq_num"])
                elif name == "event_page":
                    catalog_events.setdefault(doc["descriptor"], set()).update(doc["seq_num"])
        for words in emitted:
            if words[0] == kind and words[1] == "event":
                descriptor, seq_num = words[2], int(words[3])
                assert seq_num in catalog_events.get(descriptor, set()), (
                    f"{kind} event {seq_num} of descriptor {descriptor} lost (kill point {point})")


@pytest.mark.parametrize("point", _kill_points(3, seed=12))
def test_session_killed_mid_scan_loses_no_document_after_recover(server_process, sqlite_settings, point):
    _kill_session_and_recover(server_process, sqlite_settings, point)


@pytest.mark.slow
def test_session_killed_at_ten_random_points_loses_no_document(server_process, sqlite_settings):
    for point in _kill_points(10, seed=2026):
        _kill_session_and_recover(server_process, sqlite_settings, point)


def test_session_starts_with_the_catalog_down_and_resyncs_when_it_comes_up(sqlite_settings):
    from nanostrain.session import make_session

    port = free_port()
    s = make_session(catalog_uri=f"http://127.0.0.1:{port}", data_dir=sqlite_settings.data_dir,
                     api_key=API_KEY, persist_metadata=False)
    server = None
    try:
        started = time.monotonic()
        d = s.devices
        (uid,) = s.RE(s.plans["alignment_scan"](d["cam"], d["sx"], -1.0, 1.0, 5, monitor=d["i0"], exposure_s=0.05))
        assert time.monotonic() - started < 30
        assert not s.recorder.forwarder.synced()
        server = ServerProcess(sqlite_settings, port=port).start()
        wait_for(lambda: s.recorder.forwarder.synced() and s.derived_recorder.forwarder.synced(), timeout=120)
        run = s.catalog[uid]
        assert run.metadata["stop"]["exit_status"] == "success" and len(run["primary"].read()["sx"]) == 5
        (derived,) = s.derived_runs(uid)
        assert len(derived["frame_stats"].read()["total"]) == 5
    finally:
        s.close()
        if server is not None:
            server.stop()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (the test runs as root, as CI does)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk, leave_bytes: int):
    """Fill ``disk`` with one file, then free ``leave_bytes``; returns the file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - leave_bytes)
    return filler


def test_full_disk_with_the_catalog_down_pauses_the_run_with_a_message(tiny_disk):
    """Disk full simulated with a real tmpfs (not a wrapped file object)."""
    import bluesky.plans as bp
    from bluesky.utils import RunEngineInterrupted
    from ophyd.sim import det

    from nanostrain.journal import read_journal
    from nanostrain.session import make_session

    s = make_session(catalog_uri=f"http://127.0.0.1:{free_port()}", data_dir=tiny_disk, api_key=API_KEY,
                     persist_metadata=False, live_analysis=False)
    try:
        filler = _fill(tiny_disk, leave_bytes=32 * 1024)
        with pytest.raises(RunEngineInterrupted) as paused:
            s.RE(bp.count([det], num=400))
        assert s.RE.state == "paused"
        message = str(paused.value)
        assert "STORAGE FAILURE" in message and "No space left on device" in message
        assert "catalog is unreachable" in message and "RE.resume()" in message
        assert s.recorder.journal.backlog > 0

        filler.unlink()  # the operator frees space
        (uid,) = s.RE.resume()
        assert s.recorder.journal.backlog == 0
        found = read_journal(s.settings.journal_dir / f"{uid}.jsonl")
        assert found.damage is None and not found.truncated
        seq_nums = [doc["seq_num"] for name, doc in found.documents if name == "event"]
        assert seq_nums == list(range(1, 401))
        assert found.documents[-1][0] == "stop" and found.documents[-1][1]["exit_status"] == "success"
    finally:
        if s.RE.state != "idle":
            s.RE.abort()
        s.close()
