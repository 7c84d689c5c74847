"""blueapi's sources for the nanostrain beamline: the plans, each recording its runs, and
the devices. ``profile/blueapi.yaml`` is a complete configuration::

    env:
      sources:
        - kind: planFunctions
          module: nanostrain.blueapi_env
        - kind: deviceManager
          module: nanostrain.blueapi_env
          name: devices

Configured by the profile's variables: ``NANOSTRAIN_CATALOG`` (URL of ``nanostrain
serve``; default an embedded catalog), ``NANOSTRAIN_API_KEY``, ``NANOSTRAIN_DATA_DIR``,
``NANOSTRAIN_BEAMLINE_CONFIG`` (default the simulated beamline).

The plans are `nanostrain.plans.registry`'s. blueapi's RunEngine records nothing by
itself, so each plan here is wrapped in bluesky's ``subs_wrapper`` with the callbacks a
session subscribes (`nanostrain.session.Recording`): raw runs go to the journal and the
catalog's ``raw`` node, the live analyses' derived runs to the journal and ``derived``, as
from the profile or the queue server; a storage failure (neither journal nor catalog
takes documents) fails the run with the reason. ``devices`` builds the beamline (`nanostrain.beamline.SIM_BEAMLINE`'s factories)
and adds the live analyses' signals as devices, so a task names a feedback signal as it
names a detector (``"feedback": "xrd_reduction_lattice_change_A"``).

Beam dumps suspend blueapi's plans as they do the session's: blueapi's RunEngine has no
suspenders of ours installed, so each plan is also wrapped in bluesky's
``suspend_wrapper`` with `nanostrain.plans.suspenders.beam_suspenders` on the
``ring_current`` and ``shutter`` devices that ``devices`` built (if the beamline has
them); gaps are recorded in the run's ``beam_gaps`` stream.
"""

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bluesky.preprocessors import subs_wrapper, suspend_wrapper
from bluesky.suspenders import SuspenderBase
from bluesky.utils import MsgGenerator

from .beamline import (
    SIM_BEAMLINE,
    DeviceConnectResult,
    beamline_spec,
    connection_errors_of,
    detector_path_provider,
    load_config,
)
from .plans import registry
from .plans.suspenders import beam_suspenders
from .session import Recording, make_recording, options_from_environment


@functools.cache
def recording() -> Recording:
    """This process's catalog writers and live analyses, built once from the environment
    (`nanostrain.session.options_from_environment`); headless: no tables, no figures."""
    options = options_from_environment(os.environ)
    return make_recording(options["catalog_uri"], options["data_dir"], options["api_key"],
                          live_analysis=options["live_analysis"], bus=options["bus"], pv_prefix=options["pv_prefix"])


#: the beam's suspenders, on the devices `BlueapiBeamline.build_and_connect` built
SUSPENDERS: list[SuspenderBase] = []


class BlueapiBeamline:
    """blueapi's ``deviceManager``: the beamline's devices and the live analyses' signals."""

    def build_and_connect(
        self, *, mock: bool = False, timeout: float | None = None, fixtures: Mapping[str, Any] | None = None
    ) -> DeviceConnectResult:
        """Build and connect every device of the beamline (simulated, or those of
        ``NANOSTRAIN_BEAMLINE_CONFIG``), detector files in the data folder's
        ``detectors/`` unless blueapi brings a ``path_provider``; failures are reported
        per device. The live signals join the devices under their own names."""
        options = options_from_environment(os.environ)
        config = load_config(options["beamline_config"]) if options["beamline_config"] else None
        spec = beamline_spec(options["sim"], config)
        record = recording()
        fixtures = {"path_provider": detector_path_provider(Path(record.settings.detector_dir)), **(fixtures or {})}
        result = SIM_BEAMLINE.build_and_connect(
            mock=mock, timeout=timeout, fixtures={**fixtures, **spec.values}, names=spec.names,
            overrides=spec.overrides, mock_names=spec.mock_names,
        )
        signals = record.live_signals
        unreachable = connection_errors_of(record.remote_signals, mock=mock, timeout=timeout or 10.0)
        result.connection_errors.update(unreachable)
        result.devices.update({name: signal for name, signal in signals.items() if name not in unreachable})
        beam = {name: result.devices[name] for name in ("ring_current", "shutter") if name in result.devices}
        SUSPENDERS[:] = beam_suspenders(**beam) if beam else []
        return result


devices = BlueapiBeamline()


def recorded(plan: Callable[..., MsgGenerator]) -> Callable[..., MsgGenerator]:
    """``plan`` with this process's `recording` subscribed, and the beam's `SUSPENDERS`
    installed, for as long as it runs.

    The wrapper keeps the plan's name, docstring and annotations (blueapi builds its
    parameter model from them); a ``**kwargs`` parameter is left out of the signature
    blueapi sees (it makes a field of every parameter): `mount_sample`'s state goes in
    the sample's ``"state"`` dict there."""

    @functools.wraps(plan)
    def run(*args: Any, **kwargs: Any) -> MsgGenerator:
        recorded_plan = subs_wrapper(plan(*args, **kwargs), {"all": recording().callbacks})
        if SUSPENDERS:
            recorded_plan = suspend_wrapper(recorded_plan, list(SUSPENDERS))
        return (yield from recorded_plan)

    signature = inspect.signature(plan)
    run.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    )
    return run


globals().update({name: recorded(plan) for name, plan in registry().items()})
__all__ = sorted(registry())
