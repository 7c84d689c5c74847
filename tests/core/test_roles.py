"""Roles (`nanostrain.roles`): Tiled's own service principals with scoped API keys.

A real `nanostrain serve --roles` process; clients speak HTTP to it with each role's key,
as the session, the worker, replay and readers do.
"""

from __future__ import annotations

import stat
import subprocess
import sys

import httpx
import numpy as np
import pytest

from nanostrain.catalog import API_KEY_FILE, CatalogSettings, connect, load_or_create_api_key, readable_folders
from nanostrain.roles import ROLES, key_path, role_key
from nanostrain.session import make_session

from ..conftest import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A catalog served with roles (anonymous reads on, the default)."""
    data_dir = tmp_path_factory.mktemp("roles") / "data"
    server = ServerProcess(CatalogSettings(data_dir=data_dir, roles=True)).start()
    yield server
    server.stop()


def headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Apikey {key}"}


def create_node(server, key: str | None, name: str) -> int:
    """Status of ``POST /api/v1/metadata/raw`` making a container ``name`` (401: refused)."""
    body = {"structure_family": "container", "metadata": {}, "specs": [], "id": name}
    return httpx.post(f"{server.url}/api/v1/metadata/raw", json=body, headers=headers(key) if key else {},
                      timeout=30).status_code


def test_each_role_has_a_private_key_outside_the_readable_storage(served):
    data_dir = served.settings.data_dir
    folder = data_dir / "roles"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    keys = {role: role_key(data_dir, role) for role in ROLES}
    assert len(set(keys.values())) == len(ROLES)
    assert not any(folder.resolve().is_relative_to(root) for root in readable_folders(served.settings))


def test_writers_write_readers_only_read_and_nobody_anonymous_writes(served):
    data_dir = served.settings.data_dir
    assert create_node(served, role_key(data_dir, "beamline"), "by_beamline") == 200
    assert create_node(served, role_key(data_dir, "analysis"), "by_analysis") == 200
    assert create_node(served, role_key(data_dir, "reader"), "by_reader") == 401
    assert create_node(served, None, "by_anyone") == 401
    listing = httpx.get(f"{served.url}/api/v1/search/raw", headers=headers(role_key(data_dir, "reader")), timeout=30)
    assert {node["id"] for node in listing.json()["data"]} >= {"by_beamline", "by_analysis"}
    assert httpx.get(f"{served.url}/api/v1/search/raw", timeout=30).status_code == 200  # anonymous reads are on


def test_keys_carry_none_of_the_admin_scopes(served):
    data_dir = served.settings.data_dir
    for role in ROLES:
        key = role_key(data_dir, role)
        whoami = httpx.get(f"{served.url}/api/v1/auth/whoami", headers=headers(key), timeout=30)
        assert whoami.status_code == 200 and whoami.json()["type"] == "service"
        assert httpx.get(f"{served.url}/api/v1/auth/principal", headers=headers(key), timeout=30).status_code == 401
        made = httpx.post(f"{served.url}/api/v1/auth/apikey", json={"scopes": ["inherit"], "expires_in": 60},
                          headers=headers(key), timeout=30)
        assert made.status_code == 401, (role, made.text)
    # only the analysis writer may delete (superseding older derived runs)
    assert httpx.delete(f"{served.url}/api/v1/metadata/raw/by_beamline", headers=headers(role_key(data_dir, "beamline")),
                        timeout=30).status_code == 401
    for name in ("by_beamline", "by_analysis"):  # (and the catalog's raw node holds runs only again)
        assert httpx.delete(f"{served.url}/api/v1/metadata/raw/{name}", headers=headers(role_key(data_dir, "analysis")),
                            timeout=30).status_code == 200


def test_a_shared_single_user_key_is_not_accepted(served):
    stray = load_or_create_api_key(served.settings.data_dir)  # the file a single-key catalog would use
    assert (served.settings.data_dir / API_KEY_FILE).exists()
    assert create_node(served, stray, "by_stray_key") == 401


def test_session_worker_role_and_reader_use_their_own_keys(served, tmp_path):
    """A session on the catalog's data folder writes raw runs (registering detector files)
    as the beamline writer and its inline derived runs as the analysis writer;
    ``replay --write`` supersedes them as the analysis writer; ``catalog ls`` reads as a reader."""
    data_dir = served.settings.data_dir
    session = make_session(catalog_uri=served.url, data_dir=data_dir)
    try:
        d = session.devices
        (uid,) = session.RE(session.plans["alignment_scan"](d["cam"], d["sx"], -0.5, 0.5, 5, monitor=d["i0"]))
    finally:
        session.close()
    reader = connect(served.url, api_key=role_key(data_dir, "reader"))
    frames = reader["raw"][uid]["primary"]["cam"].read()  # detector file registered by the beamline writer
    assert np.asarray(frames).shape[0] == 5
    (derived,) = [run for run in reader["derived"].values() if run.metadata["start"]["derived_from"] == uid]
    cli = [sys.executable, "-m", "nanostrain"]
    common = ["--catalog", served.url, "--data-dir", str(data_dir)]
    replayed = subprocess.run([*cli, "replay", uid, "--write", "--no-progress", *common], capture_output=True, text=True,
                              timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert replayed.returncode == 0, replayed.stderr
    (after,) = [run for run in reader["derived"].values() if run.metadata["start"]["derived_from"] == uid]
    assert after.metadata["start"]["uid"] != derived.metadata["start"]["uid"]  # superseded: deleted and replaced
    listed = subprocess.run([*cli, "catalog", "ls", "--json", *common], capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin"})
    assert listed.returncode == 0, listed.stderr
    assert uid in listed.stdout


def test_a_catalog_with_roles_refuses_to_be_served_with_one_key(served):
    with pytest.raises(ValueError, match="has roles"):
        CatalogSettings(data_dir=served.settings.data_dir, roles=False)
    with pytest.raises(FileNotFoundError, match="--roles"):
        role_key(served.settings.data_dir.parent / "elsewhere", "reader")
    assert key_path(served.settings.data_dir, "reader").name == "reader.key"
