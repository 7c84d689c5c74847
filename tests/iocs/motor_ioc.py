"""caproto motor records for the soft IOCs of the nanoprobe and the TXM.

Each record serves the fields ophyd-async's `Motor` uses (.VAL, .RBV, .DMOV, .MOVN, .VELO,
.VMAX, .LLM, .HLM, .DLLM, .DHLM, .EGU, .RDBD): a put to .VAL moves the readback at .VELO
in ``TICK_S`` ticks and completes (put callback) when the move is done, as the motor
record does; a put outside [LLM, HLM] is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np

TICK_S = 0.01

MotorSpec = tuple[float, float, str, float, float]
"""(low limit, high limit, units, start position, velocity per s)."""


def motor_record(low: float, high: float, units: str, start: float, velocity: float, ready: str | None):
    """A caproto PVGroup class serving one motor record (prints ``ready`` once up)."""
    from caproto.server import PVGroup, pvproperty

    class MotorRecord(PVGroup):
        motor = pvproperty(value=start, name="", record="motor", precision=5)

        @motor.startup
        async def motor(self, instance, async_lib):
            fields = instance.field_inst
            for field, value in ((fields.velocity, velocity), (fields.max_velocity, 10 * velocity),
                                 (fields.user_low_limit, low), (fields.user_high_limit, high),
                                 (fields.dial_low_limit, low), (fields.dial_high_limit, high),
                                 (fields.engineering_units, units), (fields.retry_deadband, 1e-6),
                                 (fields.user_readback_value, start), (fields.dial_readback_value, start),
                                 (fields.done_moving_to_value, 1)):
                await field.write(value)
            if ready:
                print(ready, flush=True)

        @motor.putter
        async def motor(self, instance, value):
            fields = instance.field_inst
            if not fields.user_low_limit.value <= value <= fields.user_high_limit.value:
                raise ValueError(f"{value} outside the soft limits")
            begin = fields.user_readback_value.value
            steps = max(1, int(np.ceil(abs(value - begin) / max(fields.velocity.value, 1e-9) / TICK_S)))
            await fields.done_moving_to_value.write(0)
            await fields.motor_is_moving.write(1)
            for position in np.linspace(begin, value, steps + 1)[1:]:
                await asyncio.sleep(TICK_S)
                await fields.user_readback_value.write(float(position))
                await fields.dial_readback_value.write(float(position))
            await fields.motor_is_moving.write(0)
            await fields.done_moving_to_value.write(1)
            return value

    return MotorRecord


def serve_motors(prefix: str, motors: Mapping[str, MotorSpec]) -> None:
    """Serve ``PREFIX<name>`` motor records on 127.0.0.1; print ``READY <prefix>`` once
    the last one is up."""
    from caproto.server import PVGroup, SubGroup, run

    last = list(motors)[-1]
    groups = {
        name: SubGroup(motor_record(*spec, ready=f"READY {prefix}" if name == last else None), prefix=name)
        for name, spec in motors.items()
    }
    ioc = type("Motors", (PVGroup,), groups)(prefix=prefix)
    run(ioc.pvdb, interfaces=["127.0.0.1"])
