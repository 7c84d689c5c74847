"""The simulated alignment bench and its plan: validation first, HDF5 frames, documents."""

from __future__ import annotations

import h5py
import pytest

from nanostrain.callbacks.frames import resource_path
from nanostrain.plans.alignment import alignment_scan
from nanostrain.plans.validation import PlanArgumentError


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_mm": -20.0, "stop_mm": 1.0, "num": 5}, r"start_mm = -20.0 mm is outside the allowed range \[-10.0, 10.0\]"),
        ({"start_mm": 0.0, "stop_mm": 1.0, "num": 1}, "num must be an integer"),
        ({"start_mm": 0.0, "stop_mm": 1.0, "num": 5, "exposure_s": 0.0}, "exposure_s must be > 0"),
        ({"start_mm": 0.0, "stop_mm": float("nan"), "num": 5}, "stop_mm must be a finite number"),
    ],
)
def test_bad_arguments_raise_before_any_message(bench, kwargs, message):
    plan = alignment_scan(bench["cam"], bench["sx"], **kwargs)
    with pytest.raises(PlanArgumentError, match=message):
        next(plan)


def test_detector_writes_one_hdf5_frame_per_point_and_stream_documents(RE, bench):
    docs = []
    RE(alignment_scan(bench["cam"], bench["sx"], -1, 1, 4, monitor=bench["i0"]), lambda n, d: docs.append((n, d)))
    names = [n for n, _ in docs]
    assert names.count("stream_resource") == 1 and names.count("stream_datum") == 4
    resource = next(d for n, d in docs if n == "stream_resource")
    with h5py.File(resource_path(resource), "r") as f:
        frames = f[resource["parameters"]["dataset"]][()]
    assert frames.shape == (4, 64, 96)
    # the spot moves 20 px per mm across the camera
    cols = frames.astype(float).sum(axis=1)
    assert cols[0].argmax() < cols[-1].argmax()
    start = docs[0][1]
    assert start["technique"] == "alignment" and start["image_key"] == "cam"
