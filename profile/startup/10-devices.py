# Devices of the beamline (simulated twins unless a beamline config was given), and the
# live analyses' live values as signals plans can read, e.g. xrd_reduction_lattice_change_A.
globals().update(session.devices)
globals().update(session.live_signals)
