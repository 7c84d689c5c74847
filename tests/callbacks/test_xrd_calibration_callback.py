"""The calibration analysis's recorded parameters rebuild it (what replay relies on)."""

from __future__ import annotations

import json

from nanostrain.callbacks.xrd_calibration import XrdCalibrationCallback


def test_parameters_are_json_constructor_arguments_that_rebuild_the_analysis():
    analysis = XrdCalibrationCallback(refine=("dist", "poni1", "poni2"), max_rings=6, passes=2,
                                      max_rms_deg=0.01, centre_search_px=40.0, image_key="xrd")
    recorded = json.loads(json.dumps(analysis.parameters()))

    rebuilt = XrdCalibrationCallback(**recorded)

    assert rebuilt.parameters() == recorded
    assert recorded == {"image_key": "xrd", "stream": "primary", "refine": ["dist", "poni1", "poni2"],
                        "max_rings": 6, "passes": 2, "max_rms_deg": 0.01, "centre_search_px": 40.0}


def test_the_refined_geometry_signal_is_a_string_named_geometry():
    analysis = XrdCalibrationCallback()
    assert set(analysis.signals) == {"geometry"}
    assert analysis.signals["geometry"].name == "xrd_calibration_geometry"
    assert analysis.parameters()["refine"] == ["dist", "poni1", "poni2", "rot1", "rot2"]
