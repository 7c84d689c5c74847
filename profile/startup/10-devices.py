# Devices of the beamline (simulated twins unless a beamline config was given).
globals().update(session.devices)
