"""The queue server's files in ``profile/startup/`` (issue 9, item 3): the list of plans and
devices is what the stock tool generates from the profile today, and the permissions
give the ``primary`` group every plan of the registry and every device of the profile.

Regenerate the list after changing a plan's signature or a device:

    cd profile/startup && qserver-list-plans-devices --startup-dir . --file-dir .
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bluesky_queueserver.manager import profile_ops

from nanostrain.plans import registry

STARTUP = Path(__file__).resolve().parents[2] / "profile" / "startup"
EXISTING = STARTUP / "existing_plans_and_devices.yaml"
PERMISSIONS = STARTUP / "user_group_permissions.yaml"
STALE = ("profile/startup/existing_plans_and_devices.yaml is stale: regenerate it "
         "(cd profile/startup && qserver-list-plans-devices --startup-dir . --file-dir .)")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict:
    """``qserver-list-plans-devices`` run on the profile (simulated beamline, embedded
    catalog in a fresh folder), loaded."""
    folder = tmp_path_factory.mktemp("qserver")
    env = {key: value for key, value in os.environ.items()
           if key not in ("NANOSTRAIN_CATALOG", "NANOSTRAIN_BEAMLINE_CONFIG", "NANOSTRAIN_API_KEY")}
    env.update(NANOSTRAIN_DATA_DIR=str(folder / "data"), NANOSTRAIN_BEC="0", NANOSTRAIN_PLOTS="0")
    tool = Path(sys.executable).parent / "qserver-list-plans-devices"
    result = subprocess.run([str(tool), "--startup-dir", str(STARTUP), "--file-dir", str(folder)],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return yaml.safe_load((folder / "existing_plans_and_devices.yaml").read_text())


@pytest.mark.slow
def test_the_list_of_plans_and_devices_is_current(generated):
    committed = yaml.safe_load(EXISTING.read_text())
    assert set(generated["existing_plans"]) == set(registry())
    for name in generated["existing_plans"]:
        assert committed["existing_plans"].get(name) == generated["existing_plans"][name], f"{STALE}; plan {name!r}"
    assert committed == generated, STALE


@pytest.mark.slow
def test_primary_users_may_queue_every_plan_and_device(generated):
    permissions = profile_ops.load_user_group_permissions(str(PERMISSIONS))
    allowed_plans, allowed_devices = profile_ops.load_allowed_plans_and_devices(
        path_existing_plans_and_devices=str(EXISTING), user_group_permissions=permissions
    )
    assert set(allowed_plans["primary"]) == set(registry())
    assert set(allowed_devices["primary"]) == set(generated["existing_devices"])
    assert {"cycler", "xrd", "txm", "xrd_reduction_lattice_change_A", "xrd_calibration_geometry"} <= set(allowed_devices["primary"])
