"""Neutral records shared across layers: what documents and devices agree on.

Nothing here does science or talks to hardware; every layer above may import it
(plans, callbacks, devices, the simulator), and it imports none of them.
"""
