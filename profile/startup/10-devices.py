# Devices of the beamline (nanostrain.beamline's factories: simulated twins, each with a
# sample mounted, unless a beamline config was given), and the live analyses' live values
# as signals plans can read, e.g. xrd_reduction_lattice_change_A.
# Another sample: RE(mount_sample(cycler, {"material": "NM91", "morphology": "SC"})).
globals().update(session.devices)
globals().update(session.live_signals)
