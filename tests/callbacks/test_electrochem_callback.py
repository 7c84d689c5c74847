"""Electrochemistry of a cycling run's echem stream: known capacities and GITT D."""

from __future__ import annotations

import numpy as np
import pytest
from event_model import compose_run

from nanostrain.callbacks.electrochem import ElectrochemistryCallback

KEYS = {"potential_V": "c-potential", "current_mA": "c-current", "step_time_s": "c-step_time",
        "capacity_mAh": "c-total_charge", "step_index": "c-step_index", "cycle_index": "c-cycle_index"}


def echem_run(rows, plan_name="operando_xrd", technique="xrd", sample=None):
    md = {"technique": technique, "plan_name": plan_name, "echem_keys": KEYS, "active_mass_g": 0.005}
    if technique == "xrd":  # what the start-document contract requires of an xrd run besides
        md.update(image_key="xrd", xrd_geometry={"detector": "Perkin"})
    if sample:
        md["sample"] = sample
    bundle = compose_run(metadata=md)
    desc = bundle.compose_descriptor(name="echem", data_keys={k: {"dtype": "number", "shape": [], "source": k} for k in KEYS.values()})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc)]
    for step_time, step, cycle, volts, milliamps in rows:
        data = {KEYS["step_time_s"]: step_time, KEYS["step_index"]: step, KEYS["cycle_index"]: cycle,
                KEYS["potential_V"]: volts, KEYS["current_mA"]: milliamps, KEYS["capacity_mAh"]: 0.0}
        docs.append(("event", desc.compose_event(data=data, timestamps={k: 0 for k in data})))
    return docs + [("stop", bundle.compose_stop())]


def published(callback, docs):
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        callback(name, doc)
    return out


def test_capacities_efficiency_and_retention_per_cycle():
    # 2 cycles: charge 1 mA for 3600 s, discharge 0.9 mA (cycle 1) / 0.8 mA (cycle 2) for 3600 s
    rows = []
    for step, (cycle, milliamps) in enumerate([(1, 1.0), (1, -0.9), (2, 1.0), (2, -0.8)]):
        rows += [(t, step, cycle, 3.8, milliamps) for t in np.linspace(0, 3600, 61)]
    out = published(ElectrochemistryCallback(), echem_run(rows))
    cycles = [doc["data"] for name, doc in out if name == "event"]
    assert [c["cycle"] for c in cycles] == [1, 2]
    # Q = I t / (3.6 m): 1 mA x 3600 s / 0.005 g = 200 mAh/g
    assert cycles[0]["charge_mAh_g"] == pytest.approx(200.0, rel=1e-3)
    assert cycles[0]["discharge_mAh_g"] == pytest.approx(180.0, rel=1e-3)
    assert cycles[0]["coulombic_efficiency_pct"] == pytest.approx(90.0, rel=1e-3)
    assert cycles[1]["retention_pct"] == pytest.approx(100 * 160 / 180, rel=1e-3)


def test_gitt_run_publishes_diffusivity_per_titration():
    """Weppner-Huggins transient with D = 1e-11 cm2/s, r = 2 um, tau = 1200 s."""
    radius_cm, tau, D = 2e-4, 1200.0, 1e-11
    rows, step, e_rest = [], 0, 3.7
    for titration in range(3):
        for t in np.arange(0, 3001, 10.0):  # rest
            rows.append((t, step, 1, e_rest, 0.0))
        step += 1
        d_es = 0.02
        slope = radius_cm / tau * d_es / np.sqrt(9 * np.pi * D / 4)  # dE/dsqrt(t) from eq. 2
        for t in np.arange(0, tau + 1, 5.0):
            rows.append((t, step, 1, e_rest + 0.01 + slope * np.sqrt(t), 0.1))
        step += 1
        e_rest += d_es
    for t in np.arange(0, 3001, 10.0):
        rows.append((t, step, 1, e_rest, 0.0))
    out = published(ElectrochemistryCallback(), echem_run(rows, plan_name="gitt", technique="electrochemistry", sample={"radius_um": 2.0}))
    gitt = [doc["data"] for name, doc in out if name == "event" and "D_cm2_s" in doc["data"]]
    assert len(gitt) == 3
    for row in gitt:
        assert row["D_cm2_s"] == pytest.approx(D, rel=0.05)
        assert np.isnan(row["D_relaxation_cm2_s"])  # these rests hold no relaxation to fit
