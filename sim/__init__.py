"""Physics models behind the simulated beamline (cathode particle, detector rendering).

The simulator may use `nanostrain.analysis` (formulas, geometry); it never imports devices,
plans or callbacks, so the same physics can be used offline.
"""
