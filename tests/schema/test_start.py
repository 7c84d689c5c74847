"""The start-document contract: what it refuses, and that the plans' runs keep it."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.schema.start import (
    ALIGNMENT,
    ELECTROCHEMISTRY,
    TECHNIQUES,
    XRD,
    StartDocumentError,
    missing_keys,
    require_start,
    start_metadata,
)

XRD_FIELDS = {
    "image_key": "xrd",
    "xrd_geometry": {"dist": 1.5},
    "active_mass_g": 6.16e-3,
    "echem_keys": {"potential_V": "cycler-potential"},
}


# --------------------------------------------------------------------------------------
# start_metadata / require_start
# --------------------------------------------------------------------------------------
def test_start_metadata_names_technique_plan_fields_and_user_md():
    metadata = start_metadata(XRD, "operando_xrd", {"operator": "ada"}, **XRD_FIELDS)

    assert metadata == {"technique": XRD, "plan_name": "operando_xrd", **XRD_FIELDS, "operator": "ada"}


@pytest.mark.parametrize("missing", sorted(TECHNIQUES[XRD]))
def test_start_metadata_refuses_a_missing_key(missing):
    fields = {key: value for key, value in XRD_FIELDS.items() if key != missing}

    with pytest.raises(StartDocumentError, match=rf"must record \['{missing}'\]"):
        start_metadata(XRD, "operando_xrd", **fields)


def test_user_md_cannot_supply_a_missing_contract_key():
    """A contract key in md is refused even when the plan did not give it: the plan, not
    the user, records what the analysis reads."""
    with pytest.raises(StartDocumentError, match=r"md may not replace \['image_key'\]"):
        start_metadata(ALIGNMENT, "alignment_scan", {"image_key": "cam"})


@pytest.mark.parametrize("key", ["image_key", "technique", "plan_name"])
def test_start_metadata_refuses_an_md_that_would_replace_a_contract_key(key):
    with pytest.raises(StartDocumentError, match=rf"md may not replace \['{key}'\]"):
        start_metadata(ALIGNMENT, "alignment_scan", {key: "other"}, image_key="cam")


def test_an_unknown_technique_is_refused():
    with pytest.raises(ValueError, match="unknown technique 'xrdd'"):
        start_metadata("xrdd", "scan", image_key="cam")
    with pytest.raises(ValueError, match="unknown technique"):
        missing_keys({}, "xrdd")


def test_require_start_names_the_run_and_what_it_lacks():
    doc = {"uid": "abc", "technique": XRD, "plan_name": "operando_xrd", **XRD_FIELDS}
    require_start(doc)  # complete: nothing raised

    del doc["xrd_geometry"]
    with pytest.raises(StartDocumentError, match=r"run abc \(xrd\) lacks \['xrd_geometry'\]"):
        require_start(doc)
    require_start(doc, ELECTROCHEMISTRY)  # what the echem analysis reads is there
    with pytest.raises(StartDocumentError, match="names no technique"):
        require_start({"uid": "abc"})


def test_the_echem_analysis_refuses_a_run_without_the_keys_it_reads():
    from nanostrain.callbacks.electrochem import ElectrochemistryCallback

    start = {"uid": "abc", "time": 0.0, "technique": XRD, "plan_name": "operando_xrd", "active_mass_g": 6e-3,
             "image_key": "xrd", "xrd_geometry": {}}
    with pytest.raises(StartDocumentError, match=r"lacks \['echem_keys'\]"):
        ElectrochemistryCallback()("start", start)


# --------------------------------------------------------------------------------------
# The plans' start documents, recorded by a RunEngine on simulated devices
# --------------------------------------------------------------------------------------
def test_the_checked_plans_are_every_cycling_and_alignment_plan():
    from nanostrain.plans import registry

    modules = ("nanostrain.plans.cycling", "nanostrain.plans.alignment")
    assert {name for name, plan in registry().items() if plan.__module__ in modules} == {
        "operando_xrd", "gitt", "cycle_cell", "alignment_scan",
    }


@pytest.fixture
def documents(RE):
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


@pytest.fixture
def cycler(RE):
    from nanostrain.beamline import connect_devices
    from nanostrain.devices.cycler import SimCycler
    from nanostrain.sim.cathode import CathodeParticle
    from nanostrain.sim.cycler_engine import CyclerEngine

    device = SimCycler(CyclerEngine(CathodeParticle("NC91", "PC")), time_scale=20_000.0, name="cycler",
                       update_period_s=0.01)
    connect_devices({"cycler": device})
    return device


def started(documents: list[tuple[str, dict]]) -> dict:
    (start,) = [doc for name, doc in documents if name == "start"]
    (stop,) = [doc for name, doc in documents if name == "stop"]
    assert stop["exit_status"] == "success"
    return start


def test_operando_xrd_records_the_xrd_contract(RE, documents, cycler, tmp_path):
    from nanostrain.beamline import connect_devices, detector_path_provider
    from nanostrain.devices.sim_area_detector import SimAreaDetector
    from nanostrain.plans.cycling import operando_xrd
    from nanostrain.plans.protocols import ProtocolStep

    detector = SimAreaDetector(detector_path_provider(tmp_path), lambda exposure_s: np.ones((8, 8)), (8, 8),
                               name="xrd")
    connect_devices({"xrd": detector})
    geometry = {"dist": 1.5, "poni1": 0.1, "poni2": 0.1, "wavelength": 1.665e-11}
    protocol = (ProtocolStep("CC_CHARGE", 100.0, duration_s=300.0),)

    RE(operando_xrd(cycler, detector, protocol, active_mass_g=6.16e-3, geometry=geometry, cadence_s=100.0,
                    exposure_s=0.01, md={"operator": "ada"}))

    start = started(documents)
    require_start(start)
    assert (start["technique"], start["plan_name"]) == (XRD, "operando_xrd")
    assert start["image_key"] == "xrd" and start["xrd_geometry"] == geometry
    assert start["echem_keys"]["potential_V"] == "cycler-potential" and start["operator"] == "ada"


def test_gitt_records_the_electrochemistry_contract(RE, documents, cycler):
    from nanostrain.plans.cycling import gitt
    from nanostrain.plans.protocols import gitt as gitt_protocol

    RE(gitt(cycler, active_mass_g=6.16e-3, protocol=gitt_protocol(pulse_s=60.0, rest_s=60.0, max_titrations=1)))

    start = started(documents)
    require_start(start)
    assert (start["technique"], start["plan_name"], start["active_mass_g"]) == (ELECTROCHEMISTRY, "gitt", 6.16e-3)


def test_cycle_cell_records_the_electrochemistry_contract_and_its_analysis_reads_it(RE, documents, cycler):
    from nanostrain.callbacks.electrochem import ElectrochemistryCallback
    from nanostrain.plans.cycling import cycle_cell
    from nanostrain.plans.protocols import galvanostatic

    analysis = ElectrochemistryCallback()
    derived: list[tuple[str, dict]] = []
    analysis.subscribe(lambda name, doc: derived.append((name, doc)))
    RE.subscribe(analysis)
    RE(cycle_cell(cycler, galvanostatic(100.0, 1), active_mass_g=6.16e-3, sample={"name": "PC-NC91"}))

    start = started(documents)
    require_start(start)
    assert (start["technique"], start["plan_name"], start["active_mass_g"]) == (ELECTROCHEMISTRY, "cycle_cell", 6.16e-3)
    assert [step["mode"] for step in start["protocol"]] == ["CC_CHARGE", "CC_DISCHARGE"]
    (cycle,) = [doc["data"] for name, doc in derived if name == "event"]
    # one cycle (the cycler counts from 0) of the fresh simulated cell: ~240 mAh/g, all given back
    assert cycle["cycle"] == 0 and 200.0 < cycle["discharge_mAh_g"] < 280.0
    assert cycle["discharge_mAh_g"] == pytest.approx(cycle["charge_mAh_g"], rel=0.01)


def test_alignment_scan_records_the_alignment_contract(RE, documents, bench):
    from nanostrain.plans.alignment import alignment_scan

    RE(alignment_scan(bench["cam"], bench["sx"], -1.0, 1.0, 3, monitor=bench["i0"], exposure_s=0.01))

    start = started(documents)
    require_start(start)
    assert (start["technique"], start["plan_name"], start["image_key"]) == (ALIGNMENT, "alignment_scan", "cam")


def test_a_plan_refuses_md_that_replaces_a_contract_key_before_anything_moves(bench):
    from nanostrain.plans.alignment import alignment_scan

    plan = alignment_scan(bench["cam"], bench["sx"], -1.0, 1.0, 3, md={"image_key": "other"})
    with pytest.raises(StartDocumentError, match="md may not replace"):
        next(plan)
