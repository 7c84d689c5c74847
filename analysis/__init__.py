"""The science of nanostrain as pure numpy/scipy functions.

Nothing in this package imports bluesky, tiled, ophyd or any other nanostrain layer, and
nothing here performs I/O: arrays in, arrays (or small frozen dataclasses) out. Each
function's docstring states its equation (numbered as in SCIENCE.md) and units.
"""
