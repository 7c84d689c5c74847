"""Bad frames and damaged detector files, in every technique: nothing invented, runs closed.

Raw runs are made of real documents (event-model) whose frames are real HDF5 files, one
per frame (so a frame may have any shape or type), read by the live `HDF5FrameSource`.
Known answers: a TXM-XANES 2D map of a disk whose white line is at a known energy, an
SXDM raster whose sums are checked against `SxdmAccumulator` fed only the frames that
should be used. XRD's bad frames are tested in test_xrd_callback.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from event_model import compose_run

from nanostrain.analysis.sxdm import SxdmAccumulator
from nanostrain.analysis.sxdm_geometry import SxdmGeometry, bragg_angle
from nanostrain.callbacks.sxdm import SxdmCallback
from nanostrain.callbacks.txm import TxmXanesCallback

CAMERA = "cam"


def write_frame(path: Path, frame: np.ndarray) -> Path:
    """One frame as an HDF5 file (dataset ``data``, chunked one frame per chunk, as
    areaDetector writes)."""
    frame = np.asarray(frame)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data", data=frame[None], chunks=(1, *frame.shape))
    return path


def run_documents(folder: Path, metadata: dict, rows: list[tuple[dict, np.ndarray]], shape) -> list[tuple[str, dict]]:
    """The documents of a raw run: one event per row, its frame in a file of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    bundle = compose_run(metadata={"plan_name": "test", "image_key": CAMERA, **metadata})
    data_keys = {name: {"dtype": "number", "shape": [], "source": "test"} for name in rows[0][0]}
    data_keys[CAMERA] = {"dtype": "array", "shape": list(shape), "source": "test", "external": "STREAM:"}
    descriptor = bundle.compose_descriptor(name="primary", data_keys=data_keys)
    docs = [("start", bundle.start_doc), ("descriptor", descriptor.descriptor_doc)]
    for seq_num, (data, frame) in enumerate(rows, start=1):
        path = write_frame(folder / f"frame_{seq_num:04d}.h5", frame)
        resource = {"uid": f"resource-{seq_num}", "data_key": CAMERA, "uri": f"file://localhost{path}",
                    "parameters": {"dataset": "data"}, "mimetype": "application/x-hdf5"}
        datum = {"stream_resource": resource["uid"], "descriptor": descriptor.descriptor_doc["uid"],
                 "seq_nums": {"start": seq_num, "stop": seq_num + 1}, "indices": {"start": 0, "stop": 1}}
        docs += [("stream_resource", resource), ("stream_datum", datum),
                 ("event", descriptor.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0)))]
    docs.append(("stop", bundle.compose_stop()))
    return docs


def analyse(callback, docs) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        try:
            callback(name, doc)
        except Exception:  # the callback has closed its derived run; the session logs it
            pass
    return out


def stream(out, name: str) -> list[dict]:
    uids = {doc["uid"] for n, doc in out if n == "descriptor" and doc["name"] == name}
    return [doc["data"] for n, doc in out if n == "event" and doc["descriptor"] in uids]


def the_stop(out) -> dict:
    (stop,) = [doc for name, doc in out if name == "stop"]  # exactly one: the derived run is closed
    return stop


# ------------------------------------------------------------------ TXM-XANES (2D map)

TXM_SHAPE = (16, 16)
TXM_ENERGIES = np.arange(8342.0, 8360.0, 1.5)  # 12 energies
WHITE_LINE_EV = 8351.3
TXM_KEYS = {"frame_type": "frame_type", "energy": "energy", "angle": "angle"}
DARK, FLAT = 5.0, 1000.0


def absorption(energy: float) -> float:
    """mu t of the particle: an edge at 8346 eV and a white line at WHITE_LINE_EV (eV)."""
    return 0.6 / (1 + np.exp(-(energy - 8346.0) / 0.8)) + 0.8 * np.exp(-0.5 * ((energy - WHITE_LINE_EV) / 2.0) ** 2)


def txm_frames() -> tuple[list[tuple[dict, np.ndarray]], np.ndarray]:
    """Rows of a 2D XANES map (2 darks, 2 flats, one projection per energy) of a disk,
    noise-free float32 counts, and the disk."""
    y, x = np.mgrid[: TXM_SHAPE[0], : TXM_SHAPE[1]] - 7.5
    disk = np.hypot(y, x) < 5.5
    flat = (FLAT + np.arange(TXM_SHAPE[1]) * 2.0)[None, :] * np.ones(TXM_SHAPE)
    rows = [({"frame_type": kind, "energy": TXM_ENERGIES[0], "angle": 0.0}, frame.astype(np.float32))
            for kind, frame in [("dark", np.full(TXM_SHAPE, DARK))] * 2 + [("flat", flat)] * 2]
    for energy in TXM_ENERGIES:
        projection = DARK + (flat - DARK) * np.exp(-absorption(energy) * disk)
        rows.append(({"frame_type": "projection", "energy": energy, "angle": 0.0}, projection.astype(np.float32)))
    return rows, disk


def txm_metadata() -> dict:
    return {"technique": "txm", "txm_mode": "2d", "energies_eV": TXM_ENERGIES.tolist(), "angles_deg": [0.0],
            "txm_keys": TXM_KEYS, "pixel_size_um": 0.1}


def projection_row(energy_index: int) -> int:
    return 4 + energy_index  # after 2 darks and 2 flats


def test_txm_skips_bad_frames_with_reasons_and_fits_the_white_line_from_the_rest(tmp_path):
    rows, disk = txm_frames()
    clean = analyse(TxmXanesCallback(denoise=False), run_documents(tmp_path / "clean", txm_metadata(), rows, TXM_SHAPE))
    rows[projection_row(2)] = (rows[projection_row(2)][0], np.full(TXM_SHAPE, np.nan, dtype=np.float32))
    rows[projection_row(9)] = (rows[projection_row(9)][0], np.ones((8, 8), dtype=np.float32))
    rows[projection_row(10)] = (rows[projection_row(10)][0], np.zeros(TXM_SHAPE, dtype=np.float32))
    spoiled = rows[projection_row(5)][1].copy()
    spoiled[7, 7], spoiled[8, 8], spoiled[0, 3] = np.nan, np.inf, -np.inf
    rows[projection_row(5)] = (rows[projection_row(5)][0], spoiled)
    rows[2] = (rows[2][0], np.full(TXM_SHAPE, np.inf, dtype=np.float32))  # the first flat

    out = analyse(TxmXanesCallback(denoise=False), run_documents(tmp_path / "bad", txm_metadata(), rows, TXM_SHAPE))

    assert the_stop(out)["exit_status"] == "success"
    quality = {row["raw_seq_num"]: row for row in stream(out, "frame_quality")}
    assert sorted(quality) == [3, 1 + projection_row(2), 1 + projection_row(5), 1 + projection_row(9),
                               1 + projection_row(10)]
    assert quality[3]["quality_status"] == "bad" and quality[3]["frame_type"] == "flat" and not quality[3]["used"]
    assert quality[1 + projection_row(2)]["reason"].startswith("100.0% of the pixels masked")
    assert quality[1 + projection_row(9)]["reason"] == "wrong shape (8, 8), the detector is (16, 16)"
    assert quality[1 + projection_row(10)]["quality_status"] == "no_signal"
    assert "a projection without counts measures no transmission" in quality[1 + projection_row(10)]["reason"]
    masked = quality[1 + projection_row(5)]
    assert masked["used"] and masked["quality_status"] == "ok" and masked["n_nonfinite"] == 3 and masked["reason"] == ""
    (statistics,) = stream(out, "statistics")
    assert statistics["n_energies"] == 9 and statistics["n_energies_incomplete"] == 3
    (whiteline,) = stream(out, "whiteline")
    wl = np.asarray(whiteline["wl_eV"], dtype=float)
    mask = np.asarray(whiteline["mask"], dtype=bool)
    assert mask.any() and np.all(mask <= disk)  # the particle only
    assert np.all(np.isnan(wl[~mask])) and np.all(np.isfinite(wl[mask]))
    assert statistics["wl_mean_eV"] == pytest.approx(WHITE_LINE_EV, abs=0.3)
    (clean_statistics,) = stream(clean, "statistics")
    assert clean_statistics["wl_mean_eV"] == pytest.approx(WHITE_LINE_EV, abs=0.3)


def test_txm_without_signal_in_any_projection_fits_nothing_and_closes_its_run(tmp_path):
    rows, _ = txm_frames()
    rows = rows[:4] + [(data, np.zeros(TXM_SHAPE, dtype=np.float32)) for data, _ in rows[4:]]

    out = analyse(TxmXanesCallback(), run_documents(tmp_path, txm_metadata(), rows, TXM_SHAPE))

    stop = the_stop(out)
    assert stop["exit_status"] == "fail"
    assert "only 0 of 12 energies are complete" in stop["reason"]
    assert stream(out, "whiteline") == [] and stream(out, "statistics") == [] and stream(out, "preview") == []
    assert len(stream(out, "frame_quality")) == 12


# ------------------------------------------------------------------ SXDM (step raster)

SXDM_SHAPE = (16, 16)
THETAS = np.array([-0.05, 0.0, 0.05])
RASTER = (3, 3)
ENERGY_EV = 10000.0
D_A = 14.0 / 3.0
BACKGROUND = 0.1


def sxdm_geometry() -> SxdmGeometry:
    return SxdmGeometry(energy_eV=ENERGY_EV, distance_m=0.5, pixel_m=75e-6, center_px=(7.5, 7.5),
                        two_theta_deg=2 * float(bragg_angle(D_A, ENERGY_EV)))


def sxdm_frames() -> list[np.ndarray]:
    """Frames (theta, y, x order) of a Bragg spot that moves with the rocking angle and
    raster position, as uint32 counts."""
    y, x = np.mgrid[: SXDM_SHAPE[0], : SXDM_SHAPE[1]]
    frames = []
    for t in range(THETAS.size):
        for iy in range(RASTER[0]):
            for ix in range(RASTER[1]):
                centre = (7.0 + t + 0.3 * iy, 7.5 + 0.2 * ix)
                spot = 400.0 * np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / 4.0) * (1.0 + 0.1 * iy)
                frames.append(np.round(spot).astype(np.uint32))
    return frames


def sxdm_metadata() -> dict:
    theta_b = float(bragg_angle(D_A, ENERGY_EV))
    return {"technique": "sxdm", "sxdm_geometry": sxdm_geometry().to_metadata(),
            "sxdm_thetas_deg": (theta_b + THETAS).tolist(),
            "sxdm_raster": {"shape": list(RASTER), "order": ["theta", "y", "x"], "mode": "step"},
            "sxdm_background": BACKGROUND, "sxdm_roi": None}


def test_sxdm_skips_bad_frames_masks_bad_pixels_and_invents_no_intensity(tmp_path):
    frames = sxdm_frames()
    used: dict[int, np.ndarray] = dict(enumerate(frames, start=1))
    for seq_num in (1, 10, 19):  # raster pixel (0, 0) at every angle: nothing left to map there
        frames[seq_num - 1] = np.full(SXDM_SHAPE, np.nan, dtype=np.float32)
        del used[seq_num]
    frames[13] = np.ones((8, 8), dtype=np.uint32)  # seq_num 14
    del used[14]
    saturated = frames[22].copy()  # seq_num 23
    saturated[0, :3] = np.iinfo(np.uint32).max
    frames[22] = saturated
    used[23] = np.where(saturated == np.iinfo(np.uint32).max, BACKGROUND, saturated)
    holes = frames[5].astype(np.float32)  # seq_num 6
    holes[8, 8] = holes[9, 9] = np.nan
    frames[5] = holes
    used[6] = np.where(np.isnan(holes), BACKGROUND, holes)
    rows = [({"x": float(i)}, frame) for i, frame in enumerate(frames)]

    out = analyse(SxdmCallback(registration=False), run_documents(tmp_path, sxdm_metadata(), rows, SXDM_SHAPE))

    assert the_stop(out)["exit_status"] == "success"
    quality = {row["raw_seq_num"]: row for row in stream(out, "frame_quality")}
    assert sorted(quality) == [1, 6, 10, 14, 19, 23]
    assert [quality[s]["used"] for s in (1, 6, 10, 14, 19, 23)] == [False, True, False, False, False, True]
    assert quality[14]["reason"] == "wrong shape (8, 8), the detector is (16, 16)"
    assert quality[23]["n_saturated"] == 3 and quality[6]["n_nonfinite"] == 2
    assert (quality[10]["theta_index"], quality[10]["iy"], quality[10]["ix"]) == (1, 0, 0)
    reference = SxdmAccumulator(sxdm_geometry(), sxdm_metadata()["sxdm_thetas_deg"], RASTER, SXDM_SHAPE,
                                background=BACKGROUND)
    for seq_num, frame in used.items():
        reference.add(*np.unravel_index(seq_num - 1, (THETAS.size, *RASTER)), frame)
    expected = reference.result(registration=False)
    (maps,) = stream(out, "maps")
    for name in ("intensity", "dd_over_d", "theta_xy", "theta_xz"):  # float32 sums, batched differently
        truth = getattr(expected, name)
        np.testing.assert_allclose(np.asarray(maps[name], dtype=float), truth, rtol=1e-5,
                                   atol=1e-5 * np.nanmax(np.abs(truth)), equal_nan=True)
    assert maps["intensity"][0][0] == 0.0 and np.isnan(np.asarray(maps["dd_over_d"], dtype=float)[0, 0])


def test_sxdm_with_no_usable_frame_maps_nothing_and_closes_its_run(tmp_path):
    rows = [({"x": float(i)}, np.full(SXDM_SHAPE, np.nan, dtype=np.float32)) for i in range(THETAS.size * 9)]

    out = analyse(SxdmCallback(), run_documents(tmp_path, sxdm_metadata(), rows, SXDM_SHAPE))

    stop = the_stop(out)
    assert stop["exit_status"] == "fail" and "no diffracted intensity" in stop["reason"]
    assert stream(out, "maps") == []


# ------------------------------------------------------------------ damaged detector files, live


@pytest.mark.parametrize("damage", ["deleted", "truncated", "never written"])
def test_a_damaged_detector_file_fails_the_derived_run_naming_the_file(tmp_path, damage):
    rows, _ = txm_frames()
    docs = run_documents(tmp_path, txm_metadata(), rows, TXM_SHAPE)
    path = tmp_path / "frame_0007.h5"
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    else:  # the file was made for two frames; the second never came
        with h5py.File(path, "w") as handle:
            dataset = handle.create_dataset("data", shape=(2, *TXM_SHAPE), dtype=np.float32, chunks=(1, *TXM_SHAPE))
            dataset[0] = rows[6][1]
        for name, doc in docs:
            if name == "stream_datum" and doc["seq_nums"]["start"] == 7:
                doc["indices"] = {"start": 1, "stop": 2}

    out = analyse(TxmXanesCallback(), docs)

    stop = the_stop(out)
    assert stop["exit_status"] == "fail"
    assert "DetectorFileError" in stop["reason"] and str(path) in stop["reason"]
    assert stream(out, "whiteline") == []


# ------------------------------------------------------------------ damaged detector files, replay


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two alignment scans recorded by a session (catalog on a server thread, detector
    HDF5 files registered by reference), the session then closed."""
    from nanostrain import make_session

    from ..conftest import API_KEY

    session = make_session(data_dir=tmp_path_factory.mktemp("damaged") / "data", api_key=API_KEY,
                           persist_metadata=False)
    d = session.devices
    uids = [session.RE(session.plans["alignment_scan"](d["cam"], d["sx"], -0.5, 0.5, 4, monitor=d["i0"],
                                                       exposure_s=0.05))[0] for _ in range(2)]
    data_dir = session.settings.data_dir
    session.close()
    return data_dir, uids


def detector_files(run) -> list[Path]:
    from nanostrain.callbacks.frames import resource_path

    return sorted({resource_path(doc) for name, doc in run.documents() if name == "stream_resource"})


@pytest.mark.slow
@pytest.mark.server
def test_replay_of_a_run_whose_detector_file_is_damaged_fails_and_says_which(recorded, capsys):
    from nanostrain.catalog import CatalogSettings, EmbeddedCatalog, catalog_nodes
    from nanostrain.cli import main
    from nanostrain.replaying import failures, replay

    data_dir, (truncated_uid, deleted_uid) = recorded
    with EmbeddedCatalog(CatalogSettings(data_dir=data_dir, api_key="reader1")) as catalog:
        raw, _ = catalog_nodes(catalog.client())
        (truncated,) = detector_files(raw[truncated_uid])
        os.truncate(truncated, truncated.stat().st_size // 2)
        (deleted,) = detector_files(raw[deleted_uid])
        deleted.unlink()

        for uid, path in ((truncated_uid, truncated), (deleted_uid, deleted)):
            published = replay(raw[uid])
            failed = failures(published)
            summary = [(n, d.get("analysis"), d.get("exit_status"), d.get("reason")) for n, d in published
                       if n in ("start", "stop")]
            assert failed, f"replay of {uid} reported success: {summary}"
            assert all("DetectorFileError" in line and str(path) in line for line in failed)
            failed_runs = {doc["run_start"] for name, doc in published
                           if name == "stop" and doc["exit_status"] == "fail"}
            descriptors = {doc["uid"] for name, doc in published if name == "descriptor" and doc["run_start"] in failed_runs}
            assert not any(name == "event" and doc["descriptor"] in descriptors for name, doc in published)  # no zeros

    assert main(["replay", deleted_uid, "--data-dir", str(data_dir)]) == 1
    assert "FAILED: " in capsys.readouterr().err
