"""nanostrain's IPython profile, shipped with the package as ``nanostrain.profile``.

Its ``startup/`` files (run in order: session, devices, plans, banner) build the beamline
session in the shell's namespace: ``RE``, ``catalog``, every device, every plan and every
live analysis's live signal. ``nanostrain shell`` finds them with importlib.resources, so
they work from an installed wheel; bluesky-queueserver loads the same folder
(``start-re-manager --startup-dir <that folder>``). ``beamline.example.toml`` is an
example beamline configuration of real EPICS devices.
"""
