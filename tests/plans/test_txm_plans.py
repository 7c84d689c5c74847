"""TXM-XANES plans on the simulated microscope: argument checks before any message, the
frames and metadata a scan records, and the energy calibration on a Ni foil."""

from __future__ import annotations

from collections import namedtuple

import bluesky.plan_stubs as bps
import numpy as np
import pytest

from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.devices.txm import SimTxm
from nanostrain.plans import txm as txm_plans
from nanostrain.plans.txm import energy_calibration, txm_xanes_2d, txm_xanes_tomo
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.schema.start import StartDocumentError
from nanostrain.sim.txm import NiFoil

ENERGIES = np.arange(8340.0, 8359.0, 3.0)  # 7 energies: MIN_ENERGIES
ANGLES = np.linspace(0.0, 180.0, 10)  # 20 deg steps


@pytest.fixture
def txm(RE, tmp_path):
    """A 16 x 16 simulated microscope (0.3 um pixels: the 4 um particle spans 13 pixels)."""
    microscope = SimTxm(detector_path_provider(tmp_path / "det"), shape=(16, 16), pixel_size_um=0.3, name="txm")
    connect_devices({"txm": microscope})
    return microscope


def run_collect(RE, plan) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


def result_of(RE, plan, *subscribers):
    """What ``plan`` returns, run on RE."""
    box = []

    def keep():
        box.append((yield from plan))

    RE(keep(), *subscribers)
    return box[0]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"energies_eV": [4000.0, 4001, 4002, 4003, 4004, 4005, 4006]}, "outside the allowed range"),
        ({"energies_eV": [8340.0, 8341, 8341, 8343, 8344, 8345, 8346]}, "increase strictly"),
        ({"energies_eV": [8340.0, 8341, 8342, 8343, 8344, 8345]}, "between 7 and"),
        ({"energies_eV": [8340.0, np.nan, 8342, 8343, 8344, 8345, 8346]}, "finite"),
        ({"angles_deg": np.linspace(0.0, 150.0, 31)}, "180 deg apart"),
        ({"angles_deg": [0.0, 90.0, 180.0]}, "angles_deg must hold between 8 and"),
        ({"angles_deg": np.linspace(0.0, 720.0, 121)}, "angles_deg = 720.0"),
        ({"exposure_s": 0.0}, "exposure_s must be > 0"),
        ({"exposure_s": 120.0}, "exposure_s"),
        ({"n_flats": 0}, "n_flats"),
        ({"n_darks": 2.5}, "n_darks"),
        ({"flat_every": 0}, "flat_every"),
    ],
)
def test_tomo_refuses_bad_arguments_before_any_message(txm, kwargs, match):
    plan = txm_xanes_tomo(txm, **{"energies_eV": ENERGIES, "angles_deg": ANGLES, **kwargs})
    with pytest.raises(PlanArgumentError, match=match):
        next(plan)


def test_2d_refuses_a_non_finite_angle(txm):
    with pytest.raises(PlanArgumentError, match="angle_deg"):
        next(txm_xanes_2d(txm, ENERGIES, angle_deg=float("inf")))


def test_a_scan_that_does_not_fit_on_the_disk_is_refused(txm, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(txm_plans.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(PlanArgumentError, match="GB free"):
        next(txm_xanes_tomo(txm, ENERGIES, ANGLES))


def test_md_may_not_replace_what_the_analysis_reads(txm):
    with pytest.raises(StartDocumentError, match="txm_mode"):
        next(txm_xanes_tomo(txm, ENERGIES, ANGLES, md={"txm_mode": "2d", "operator": "me"}))
    with pytest.raises(StartDocumentError, match="reference_edge_eV"):
        next(energy_calibration(txm, md={"reference_edge_eV": 8000.0}))


def test_calibration_refuses_a_scan_without_the_edge_inside(txm):
    with pytest.raises(PlanArgumentError, match="3 energies each side"):
        next(energy_calibration(txm, np.arange(8340.0, 8360.0, 0.5)))


# ------------------------------------------------------------------ what a scan records


def test_tomo_records_darks_flats_and_zigzag_projections(RE, txm):
    docs = run_collect(RE, txm_xanes_tomo(txm, ENERGIES, ANGLES, n_flats=2, n_darks=3, flat_every=2))
    (start,) = [d for n, d in docs if n == "start"]
    events = [d["data"] for n, d in docs if n == "event"]
    assert start["technique"] == "txm" and start["image_key"] == "txm-camera" and start["txm_mode"] == "tomo"
    assert start["energies_eV"] == pytest.approx(list(ENERGIES)) and start["angles_deg"] == pytest.approx(list(ANGLES))
    assert start["pixel_size_um"] == 0.3 and start["num_points"] == len(events) == 3 + 2 * 4 + 7 * 10
    assert start["txm_keys"] == {"energy": "txm-energy", "angle": "txm-rotation", "frame_type": "txm-frame_type"}
    assert start["plan_name"] == "txm_xanes_tomo" and start["n_flats"] == 2 and start["flat_every"] == 2
    kinds = [e["txm-frame_type"] for e in events]
    per_energy = [["flat"] * 2 if i % 2 == 0 else [] for i in range(7)]
    assert kinds == ["dark"] * 3 + sum((flats + ["projection"] * 10 for flats in per_energy), [])
    assert all(e["txm-shutter-status"] == "Not Open" for e in events[:3])
    assert all(e["txm-sample-x"] == 0.5 for e in events if e["txm-frame_type"] == "flat")
    projections = [e for e in events if e["txm-frame_type"] == "projection"]
    assert [e["txm-rotation"] for e in projections[:20]] == pytest.approx(list(ANGLES) + list(ANGLES[::-1]))
    assert [e["txm-energy"] for e in projections[::10]] == pytest.approx(list(ENERGIES))
    calibration = txm.energy.calibration
    assert [e["txm-energy-zone_plate_z"] for e in projections] == pytest.approx(
        [calibration.zone_plate_z(e["txm-energy"]) for e in projections])
    assert [d for n, d in docs if n == "stop"][0]["exit_status"] == "success"
    assert result_of(RE, bps.rd(txm.shutter.status)) == "Not Open"  # left closed
    assert result_of(RE, bps.rd(txm.sample.x)) == 0.0  # sample in


def test_2d_takes_one_projection_per_energy(RE, txm):
    docs = run_collect(RE, txm_xanes_2d(txm, ENERGIES, angle_deg=30.0, n_flats=1, n_darks=1))
    (start,) = [d for n, d in docs if n == "start"]
    events = [d["data"] for n, d in docs if n == "event"]
    assert start["txm_mode"] == "2d" and start["angles_deg"] == [30.0]
    assert [e["txm-frame_type"] for e in events] == ["dark"] + ["flat", "projection"] * 7
    assert {e["txm-rotation"] for e in events if e["txm-frame_type"] == "projection"} == {30.0}


# ------------------------------------------------------------------ energy calibration


def test_energy_calibration_finds_the_dcm_offset_on_a_ni_foil(RE, tmp_path):
    # the DCM passes 1.35 eV more than its scale says; the foil's edge appears at 8331.65 eV
    txm = SimTxm(detector_path_provider(tmp_path / "det"), NiFoil((16, 16, 16)), shape=(16, 16),
                 pixel_size_um=0.3, dcm_offset_eV=1.35, name="txm")
    connect_devices({"txm": txm})
    docs = []
    offset = result_of(RE, energy_calibration(txm, exposure_s=0.05), lambda n, d: docs.append((n, d)))
    assert offset == pytest.approx(1.35, abs=0.05)
    assert result_of(RE, bps.rd(txm.energy.offset_eV)) == offset
    calibration_events = [d for n, d in docs if n == "event" and "txm-energy-offset_eV" in d["data"]
                          and len(d["data"]) == 1]
    assert calibration_events[-1]["data"]["txm-energy-offset_eV"] == offset
    # calibrated, the readback is the true photon energy: the foil edge is found at 8333 eV
    again = result_of(RE, energy_calibration(txm, exposure_s=0.05, apply=False))
    assert again == pytest.approx(offset, abs=0.05)
