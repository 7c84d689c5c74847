"""Live analysis beside acquisition (issue 10): the document bus and ``nanostrain worker``.

Real processes throughout: ``nanostrain serve`` (the catalog), ``nanostrain bus`` (bluesky's
0MQ proxy), ``nanostrain worker`` and the beamline session (a RunEngine publishing with
``live_analysis="worker"``), each its own process. The worker's derived runs equal what
the same analyses compute inline (a replay of the raw run); a worker SIGKILLed mid-run
and restarted leaves one complete derived run, not two; a worker started after a run
finished computes it from the catalog; a lost message is detected as a gap."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nanostrain.bus import BusPublisher, Gap, Message, Subscriber
from nanostrain.catalog import catalog_nodes
from nanostrain.replaying import replay
from nanostrain.schema.catalog import derived_runs

from ..conftest import ServerProcess, free_port, wait_for


class Bus:
    """``nanostrain bus`` on two free loopback ports."""

    def __init__(self, log: Path):
        self.publishers = f"tcp://127.0.0.1:{free_port()}"
        self.subscribers = f"tcp://127.0.0.1:{free_port()}"
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nanostrain", "bus", "--publishers", self.publishers,
                 "--subscribers", self.subscribers], stdout=out, stderr=subprocess.STDOUT)
        time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class WorkerProcess:
    """``nanostrain worker`` against ``catalog`` and ``bus``; ready once it listens."""

    def __init__(self, catalog: ServerProcess, bus: Bus, log: Path, *extra: str):
        self.log = log
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nanostrain", "worker", "--catalog", catalog.url,
                 "--api-key", catalog.settings.api_key, "--bus", bus.subscribers,
                 "--data-dir", str(catalog.settings.data_dir), *extra],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: "listening" in log.read_text() or self.process.poll() is not None, timeout=180)
        assert self.process.poll() is None, log.read_text()[-3000:]
        time.sleep(1.0)  # 0MQ subscriptions take a moment to reach the proxy

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


SESSION = """
import sys
import bluesky.plan_stubs as bps
from nanostrain import make_session
from nanostrain.plans.protocols import galvanostatic
s = make_session(catalog_uri={url!r}, api_key={key!r}, data_dir={data!r}, live_analysis="worker",
                 bus={bus!r}, persist_metadata=False)
d = s.devices
for plan in {plans!r}:
    if plan in ("sparse", "dense"):  # one charge; dense: frames 4x denser while c >= 10 A (always, once analysed)
        s.RE(s.plans["mount_sample"](d["cycler"], {{"material": "NC91", "morphology": "SC"}}))  # a fresh cell
        s.RE(bps.mv(d["cycler"].time_scale, 300.0))
        feedback = dict(feedback=s.live_signals["xrd_reduction_c_A"], feedback_threshold=10.0, dense_factor=4.0)
        uid, = s.RE(s.plans["operando_xrd"](d["cycler"], d["xrd"], [{{"mode": "CC_CHARGE", "rate_mA_g": 200.0, "v_max": 4.5}}],
                                            active_mass_g=6.16e-3, cadence_mAh_g=40.0, exposure_s=0.1,
                                            **(feedback if plan == "dense" else {{}})))
        print("SIGNAL", type(s.live_signals["xrd_reduction_c_A"]).__name__, s.live_signals["xrd_reduction_c_A"].source)
    elif plan == "alignment":
        uid, = s.RE(s.plans["alignment_scan"](d["cam"], d["sx"], -1, 1, 11, monitor=d["i0"], exposure_s=0.01))
    else:
        uid, = s.RE(s.plans["operando_xrd"](d["cycler"], d["xrd"], galvanostatic(200, cycles=1),
                                            active_mass_g=6.16e-3, cadence_mAh_g={cadence}, exposure_s=0.1))
    print("RUN", plan, uid, flush=True)
s.close()
"""


def session_command(catalog: ServerProcess, bus: Bus, plans: list[str], cadence: float = 40.0) -> list[str]:
    code = SESSION.format(url=catalog.url, key=catalog.settings.api_key, data=str(catalog.settings.data_dir),
                          bus=bus.publishers, plans=plans, cadence=cadence)
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_session(catalog: ServerProcess, bus: Bus, plans: list[str], output: list[str] | None = None) -> dict[str, str]:
    result = subprocess.run(session_command(catalog, bus, plans), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if output is not None:
        output += result.stdout.splitlines()
    return {line.split()[1]: line.split()[2] for line in result.stdout.splitlines() if line.startswith("RUN ")}


def rows(run, stream: str) -> int:
    """Events of ``stream`` a (derived) run holds so far."""
    return run[stream].read().sizes.get("time", 0) if stream in run else 0


def finished(derived, uid: str) -> dict[str, list]:
    """Derived runs of raw ``uid`` by analysis, those with a stop document."""
    runs: dict[str, list] = {}
    for run in derived_runs(derived, uid):
        if run.metadata.get("stop"):
            runs.setdefault(run.metadata["start"]["analysis"], []).append(run)
    return runs


def assert_equal_to_inline(raw_run, derived, only: set[str] | None = None) -> None:
    """Every derived run of ``raw_run`` in the catalog holds what the same analyses
    compute inline from the raw run (a replay: the live computation's twin); ``only``:
    the analyses the worker ran (default all)."""
    published = replay(raw_run)
    inline: dict[str, dict[str, list]] = {}
    analysis_of: dict[str, str] = {}
    streams: dict[str, tuple[str, str]] = {}
    for name, doc in published:
        if name == "start":
            analysis_of[doc["uid"]] = doc["analysis"]
        elif name == "descriptor":
            streams[doc["uid"]] = (analysis_of[doc["run_start"]], doc["name"])
        elif name == "event":
            analysis, stream = streams[doc["descriptor"]]
            for key, value in doc["data"].items():
                inline.setdefault(analysis, {}).setdefault(f"{stream}/{key}", []).append(value)
    inline = {analysis: columns for analysis, columns in inline.items() if only is None or analysis in only}
    runs = finished(derived, raw_run.metadata["start"]["uid"])
    assert set(runs) == set(inline), (set(runs), set(inline))
    for analysis, columns in inline.items():
        (run,) = runs[analysis]
        assert run.metadata["stop"]["exit_status"] == "success", run.metadata["stop"]
        for column, values in columns.items():
            stream, key = column.split("/", 1)
            stored = np.asarray(run[stream][key].read())
            if stored.dtype.kind in "biuf":
                np.testing.assert_allclose(stored, np.asarray(values, dtype=stored.dtype), rtol=1e-12, equal_nan=True,
                                           err_msg=f"{analysis} {column}")
            else:  # text (a frame's quality, a reason)
                assert stored.tolist() == list(values), f"{analysis} {column}"


@pytest.fixture
def services(tmp_path, sqlite_settings):
    catalog = ServerProcess(sqlite_settings).start()
    bus = Bus(tmp_path / "bus.log")
    yield catalog, bus
    bus.stop()
    catalog.stop()


def test_the_subscriber_reports_lost_messages_as_gaps(tmp_path):
    bus = Bus(tmp_path / "bus.log")
    subscriber = Subscriber(bus.subscribers)
    publisher = later = BusPublisher(bus.publishers)
    try:
        wait_for(lambda: (publisher("start", {"uid": "probe"}), subscriber.backlog > 0)[1], timeout=30, interval=0.1)
        items = list(subscriber.messages(timeout=0.5))  # the probes: numbers 1.. (the first may be lost)
        seen = [item.seq for item in items if isinstance(item, Message)]
        next(publisher._counter)  # one message lost on the way
        publisher("stop", {"run_start": "probe"})
        tail = list(subscriber.messages(timeout=0.5))
        later = BusPublisher(bus.publishers)  # a publisher that restarted, joining mid-stream
        for _ in range(2):
            next(later._counter)
        wait_for(lambda: (later("start", {"uid": "again"}), subscriber.backlog > 0)[1], timeout=30)
        tail += list(subscriber.messages(timeout=0.5))
    finally:
        subscriber.close()
        for each in {publisher, later}:
            each.close()
        bus.stop()
    assert seen == list(range(seen[0], seen[0] + len(seen)))
    assert tail[0] == Gap(publisher.source, seen[-1] + 2, 1)
    assert isinstance(tail[1], Message) and tail[1].name == "stop" and tail[1].seq == seen[-1] + 2
    gap, first = tail[2], tail[3]  # the new publisher's first messages may not reach the proxy (0MQ's slow joiner)
    assert gap.source == later.source and gap.missed is None and gap.next_seq == first.seq >= 3
    assert first.doc == {"uid": "again"}


def test_the_subscriber_skips_what_does_not_decode_and_keeps_values_exact(tmp_path):
    """Whatever reaches the port (a pickle, garbage, a truncated message) is counted and
    skipped without ending the receiving thread; the publisher's message lost with it
    shows as a gap. Values keep NaN and inf; numpy arrays and scalars arrive as lists and
    numbers (the catalog's JSON shape); nothing is unpickled."""
    import pickle

    import zmq

    bus = Bus(tmp_path / "bus.log")
    subscriber = Subscriber(bus.subscribers)
    publisher = BusPublisher(bus.publishers)
    context = zmq.Context()
    raw = context.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(bus.publishers)

    class Exploit:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    try:
        wait_for(lambda: (publisher("start", {"uid": "probe"}), subscriber.backlog > 0)[1], timeout=30, interval=0.1)
        wait_for(lambda: (raw.send(b" start " + pickle.dumps(Exploit())), subscriber.malformed > 0)[1], timeout=30, interval=0.1)
        list(subscriber.messages(timeout=0.5))
        for junk in (b"no spaces", b" event \xc1\xc1", b" event " + pickle.dumps({"seq": 1})):
            raw.send(junk)
        next(publisher._counter)  # the message a damaged frame carried
        data = {"a": np.float64("nan"), "b": float("inf"), "frame": np.arange(4, dtype=np.uint16).reshape(2, 2), "n": np.int64(7)}
        publisher("event", {"uid": "e1", "data": data})
        tail = list(subscriber.messages(timeout=1.0))
    finally:
        subscriber.close()
        publisher.close()
        raw.close()
        context.term()
        bus.stop()
    assert not (tmp_path / "pwned").exists()
    assert subscriber.malformed >= 4
    gap, event = tail
    assert isinstance(gap, Gap) and gap.missed == 1
    received = event.doc["data"]
    assert np.isnan(received["a"]) and received["b"] == float("inf")
    assert received["frame"] == [[0, 1], [2, 3]] and received["n"] == 7


@pytest.mark.slow
@pytest.mark.server
def test_a_worker_in_another_process_computes_what_inline_analysis_would(services, tmp_path):
    catalog, bus = services
    worker = WorkerProcess(catalog, bus, tmp_path / "worker.log")
    try:
        uids = run_session(catalog, bus, ["alignment", "operando"])
        raw, derived = catalog_nodes(catalog.client())
        wait_for(lambda: set(finished(derived, uids["alignment"])) == {"frame_statistics"}
                 and "xrd_reduction" in finished(derived, uids["operando"]), timeout=180)
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "recomputing" not in log.lower(), log[-3000:]  # analysed live, off the bus
    # the worker shares the server's data folder: I(Q) patterns went to files there
    assert f"large arrays to {catalog.settings.derived_dir}" in log
    assert list(catalog.settings.derived_dir.glob("*/patterns.h5"))
    for uid in uids.values():
        assert_equal_to_inline(raw[uid], derived)


@pytest.mark.slow
@pytest.mark.server
def test_feedback_from_a_worker_reaches_the_plan_through_its_pvs(services, tmp_path):
    """The worker serves its live values as PVs; the session's live_signals are those PVs
    (named as inline), and operando_xrd's feedback densifies frames through them."""
    catalog, bus = services
    worker = WorkerProcess(catalog, bus, tmp_path / "worker.log", "--analyses", "xrd_reduction")
    output: list[str] = []
    try:
        uids = run_session(catalog, bus, ["sparse", "dense"], output)
    finally:
        worker.stop()
    assert "live values as PVs NS:LIVE:*" in (tmp_path / "worker.log").read_text()
    assert "SIGNAL SignalR ca://NS:LIVE:xrd_reduction_c_A" in output
    raw, _ = catalog_nodes(catalog.client())
    sparse, dense = (len(raw[uids[k]]["primary"]["cycler-potential"].read()) for k in ("sparse", "dense"))
    assert sparse <= 8 and dense >= 2.5 * sparse, (sparse, dense)


@pytest.mark.slow
@pytest.mark.server
def test_a_killed_worker_restarted_leaves_one_complete_derived_run(services, tmp_path):
    catalog, bus = services
    log = tmp_path / "worker.log"
    worker = WorkerProcess(catalog, bus, log, "--analyses", "xrd_reduction")
    raw, derived = catalog_nodes(catalog.client())
    session = subprocess.Popen(session_command(catalog, bus, ["operando"], cadence=10.0),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the worker has published a few frames of the run's derived run: kill it there
        wait_for(lambda: any(not run.metadata.get("stop") and rows(run, "xrd") >= 3 for run in derived.values()),
                 timeout=240, interval=0.5)
        worker.kill()
        worker = WorkerProcess(catalog, bus, log, "--analyses", "xrd_reduction")
        out, err = session.communicate(timeout=600)
        assert session.returncode == 0, err[-3000:]
        uid = out.split()[2]
        wait_for(lambda: [r.metadata["stop"]["exit_status"] for r in finished(derived, uid).get("xrd_reduction", [])]
                 == ["success"] and len(derived_runs(derived, uid)) == 1, timeout=300, interval=1.0)
    finally:
        worker.stop()
        if session.poll() is None:
            session.kill()
    (run,) = derived_runs(derived, uid)  # the partial one was replaced, not kept beside
    assert rows(run, "xrd") == len(raw[uid]["primary"]["cycler-potential"].read()) >= 10
    assert_equal_to_inline(raw[uid], derived, only={"xrd_reduction"})


@pytest.mark.slow
@pytest.mark.server
def test_a_worker_started_after_the_run_computes_it_from_the_catalog(services, tmp_path):
    catalog, bus = services
    uids = run_session(catalog, bus, ["alignment"])  # nobody listening: every message lost
    raw, derived = catalog_nodes(catalog.client())
    assert not derived_runs(derived, uids["alignment"])
    worker = WorkerProcess(catalog, bus, tmp_path / "worker.log")
    worker.stop()
    assert "computed what run" in (tmp_path / "worker.log").read_text()
    assert_equal_to_inline(raw[uids["alignment"]], derived)
    again = WorkerProcess(catalog, bus, tmp_path / "worker2.log")  # idempotent: nothing more
    again.stop()
    assert len(derived_runs(derived, uids["alignment"])) == 1
    assert "(0 computed)" in (tmp_path / "worker2.log").read_text()


def test_an_unknown_live_analysis_mode_is_refused(tmp_path):
    from nanostrain.session import make_recording

    with pytest.raises(ValueError, match="live_analysis must be one of"):
        make_recording(data_dir=tmp_path, live_analysis="elsewhere")


def test_the_worker_needs_a_catalog_server():
    env = {k: v for k, v in os.environ.items() if k != "NANOSTRAIN_CATALOG"}
    result = subprocess.run([sys.executable, "-m", "nanostrain", "worker"], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "--catalog URL" in result.stderr


def _derived_run(raw_uid: str, parameters: dict, exit_status: str) -> list[tuple[str, dict]]:
    import event_model

    bundle = event_model.compose_run(metadata={"derived_from": raw_uid, "analysis": "frame_statistics",
                                               "analysis_version": "1", "parameters": parameters})
    stream = bundle.compose_descriptor(name="stats", data_keys={"total": {"dtype": "number", "shape": [], "source": "t"}})
    return [("start", bundle.start_doc), ("descriptor", stream.descriptor_doc),
            ("event", stream.compose_event(data={"total": 1.0}, timestamps={"total": 0.0})),
            ("stop", bundle.compose_stop(exit_status=exit_status))]


def test_a_successful_derived_run_replaces_the_others_of_its_computation(catalog_client):
    from bluesky_tiled_plugins import TiledWriter

    from nanostrain.schema.catalog import SupersedingWriter

    _, derived = catalog_nodes(catalog_client)
    writer = SupersedingWriter(TiledWriter(derived), derived)
    first = _derived_run("raw-1", {"background": 0.0}, "success")
    other = _derived_run("raw-1", {"background": 5.0}, "success")  # another computation: kept
    for name, doc in first + other:
        writer(name, doc)
    failed = _derived_run("raw-1", {"background": 0.0}, "fail")  # takes nothing away
    for name, doc in failed:
        writer(name, doc)
    writer.flush()
    assert len(derived_runs(derived, "raw-1")) == 3 and not writer.superseded
    again = _derived_run("raw-1", {"background": 0.0}, "success")
    for name, doc in again:
        writer(name, doc)
    writer.flush()
    kept = {run.metadata["start"]["uid"] for run in derived_runs(derived, "raw-1")}
    assert kept == {again[0][1]["uid"], other[0][1]["uid"]}
    assert sorted(writer.superseded) == sorted([first[0][1]["uid"], failed[0][1]["uid"]])


def test_the_worker_forgets_a_finished_runs_descriptors_and_resources():
    """A worker runs for weeks: once a run's stop has come, nothing of it stays in the
    maps that route events and datums to runs (with no analyses, no catalog is read)."""
    from nanostrain.worker import Worker

    worker = Worker(subscriber=None, raw=None, derived=None, analyses=[], writer=None)
    def run_documents(run):
        return [("start", {"uid": run}), ("descriptor", {"uid": f"d-{run}", "run_start": run}),
                ("stream_resource", {"uid": f"s-{run}", "run_start": run}),
                ("event", {"uid": f"e-{run}", "descriptor": f"d-{run}"})]

    documents = run_documents("r1") + [("stop", {"uid": "x1", "run_start": "r1"})] + run_documents("r2")
    for seq, (name, doc) in enumerate(documents, 1):
        worker.handle(Message(name, doc, "source", seq))
    assert worker._descriptors == {"d-r2": "r2"} and worker._resources == {"s-r2": "r2"}
