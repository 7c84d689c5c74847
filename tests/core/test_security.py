"""Storage security: what the catalog server lets be registered and read, and the key file.

The server tests run `nanostrain serve` as a real process and speak plain HTTP to it, as
an attacker holding a writer's key (or a compromised writer) would: a file registered by
reference is otherwise served to anonymous readers, bytes and all.
"""

from __future__ import annotations

import os
import stat

import h5py
import httpx
import numpy as np
import pytest

from nanostrain.catalog import API_KEY_FILE, CatalogSettings, load_or_create_api_key, readable_folders
from nanostrain.storage_guard import RefusedAsset, allowed_asset_path

from ..conftest import ServerProcess


def array_registration(uri: str, mimetype: str, shape: list[int], parameters: dict | None = None) -> dict:
    """The body of ``POST /api/v1/register/<node>``: one array backed by the file ``uri``."""
    return {
        "structure_family": "array", "metadata": {}, "specs": [],
        "data_sources": [{
            "structure_family": "array", "mimetype": mimetype, "management": "external",
            "parameters": parameters or {},
            "structure": {"data_type": {"endianness": "little", "kind": "u", "itemsize": 1, "dt_units": None},
                          "chunks": [[n] for n in shape], "shape": shape, "dims": None, "resizable": False},
            "assets": [{"data_uri": uri, "is_directory": False, "parameter": "data_uris", "num": 0}],
        }],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A catalog server process whose key lives in its data folder (made by the server)."""
    data_dir = tmp_path_factory.mktemp("security") / "data"
    settings = CatalogSettings(data_dir=data_dir)  # creates <data_dir>/api_key
    process = ServerProcess(settings).start()
    yield process
    process.stop()


def register(server, uri: str, mimetype: str = "text/csv", shape=(32,), parameters=None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/register/", json=array_registration(uri, mimetype, list(shape), parameters),
        headers={"Authorization": f"Apikey {server.settings.api_key}"}, timeout=30,
    )


def anonymous_bytes_of_every_asset(server) -> list[bytes]:
    """The raw bytes of every registered asset of the root's children, as anyone may ask."""
    listing = httpx.get(f"{server.url}/api/v1/search/?include_data_sources=true", timeout=30).json()
    found = []
    for node in listing["data"]:
        for source in node["attributes"].get("data_sources") or []:
            for asset in source["assets"]:
                found.append(httpx.get(f"{server.url}/api/v1/asset/bytes/{node['id']}?id={asset['id']}", timeout=30).content)
    return found


@pytest.mark.server
@pytest.mark.slow
def test_registering_the_key_file_by_traversal_is_refused_and_it_is_never_served(server):
    key_file = server.settings.data_dir / API_KEY_FILE
    uri = f"file://localhost{server.settings.detector_dir}/../{API_KEY_FILE}"

    response = register(server, uri)

    assert response.status_code == 403
    assert response.json()["detail"] == f"refused to register {uri}: a path with '..' is refused"
    key = key_file.read_text().strip()
    assert all(key.encode() not in content for content in anonymous_bytes_of_every_asset(server))


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("folder", ["detector_dir", "derived_dir"])
def test_a_symbolic_link_in_a_detector_or_derived_folder_is_refused(server, folder):
    link = getattr(server.settings, folder) / "frames_0001.h5"
    link.symlink_to(server.settings.data_dir / API_KEY_FILE)

    response = register(server, f"file://localhost{link}")

    assert response.status_code == 403
    assert "goes through a symbolic link" in response.json()["detail"] and str(link) in response.json()["detail"]


@pytest.mark.server
@pytest.mark.slow
def test_a_file_outside_the_detector_folders_is_refused(server):
    response = register(server, f"file://localhost{server.settings.data_dir / 'catalog.db'}")

    assert response.status_code == 403
    assert "outside the detector folders" in response.json()["detail"]


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("folder", ["detector_dir", "derived_dir"])
def test_a_detector_or_derived_file_registers_and_reads_back(server, folder):
    path = getattr(server.settings, folder) / "det_000.h5"
    frames = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with h5py.File(path, "w") as handle:
        handle["entry/data"] = frames

    response = register(server, f"file://localhost{path}", "application/x-hdf5", frames.shape,
                        {"dataset": "entry/data"})

    assert response.status_code == 200, response.text
    node = response.json()["id"]
    read = server.client()[node].read()
    np.testing.assert_array_equal(read, frames)


def test_the_guard_names_what_it_refuses(tmp_path):
    root = tmp_path / "detectors"
    root.mkdir()
    (tmp_path / "secret").write_text("x")
    (root / "link").symlink_to(tmp_path / "secret")
    assert allowed_asset_path(f"file://localhost{root}/a.h5", [root]) == root / "a.h5"
    mount = tmp_path / "mount"
    mount.symlink_to(root)  # a link above the folder (a facility's mount point) is followed
    assert allowed_asset_path(f"file://localhost{mount}/a.h5", [mount]) == mount / "a.h5"
    assert allowed_asset_path("sqlite:///tables.sqlite", [root]) is None  # not a path
    for uri, reason in [
        (f"file://localhost{root}/../secret", "'..' is refused"),
        (f"file://localhost{root}/link", "symbolic link"),
        (f"file://localhost{tmp_path}/secret", "outside the detector folders"),
        ("file:relative/a.h5", "not an absolute path"),
    ]:
        with pytest.raises(RefusedAsset, match=reason):
            allowed_asset_path(uri, [root])


def test_the_key_file_is_private_from_its_creation(tmp_path):
    previous = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        key = load_or_create_api_key(tmp_path)
    finally:
        os.umask(previous)
    path = tmp_path / API_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.isalnum() and len(key) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == [API_KEY_FILE]  # no temporary left
    assert load_or_create_api_key(tmp_path) == key  # kept, not remade


def test_a_key_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / API_KEY_FILE
    path.write_text("abc123\n")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match=r"may be read by others \(mode 644\).*chmod 600"):
        load_or_create_api_key(tmp_path)


def test_readable_storage_holds_detector_folders_only(tmp_path):
    data_dir = tmp_path / "beamline" / "data"
    beamtime = tmp_path / "beamtime"
    beamtime.mkdir()
    settings = CatalogSettings(data_dir=data_dir, api_key="k1", readable_storage=(beamtime,))
    folders = readable_folders(settings)
    assert folders == (data_dir / "detectors", data_dir / "derived", beamtime)
    assert not any((data_dir / API_KEY_FILE).is_relative_to(folder) for folder in folders)
    for given, message in [(data_dir, "holds the catalog's data folder"),
                           (tmp_path, "holds the catalog's data folder"),
                           (data_dir / "journal", "only .*detectors holds detector files \\(and .*derived derived arrays\\)")]:
        with pytest.raises(ValueError, match=message):
            readable_folders(CatalogSettings(data_dir=data_dir, api_key="k1", readable_storage=(given,)))


@pytest.mark.parametrize("public", [True, False])
def test_anonymous_reads_follow_the_setting_and_anonymous_writes_never_pass(tmp_path, public):
    from tiled.client import from_context
    from tiled.client.context import Context

    from nanostrain.catalog import build_catalog_app

    app = build_catalog_app(CatalogSettings(data_dir=tmp_path / "data", api_key="writer1", public=public))
    with Context.from_app(app, api_key="writer1") as writer_context:
        writer = from_context(writer_context)
        writer.write_array(np.arange(3), key="probe")
        with Context.from_app(app, api_key=None) as anonymous_context:
            if public:
                anonymous = from_context(anonymous_context)
                np.testing.assert_array_equal(anonymous["probe"].read(), np.arange(3))
                with pytest.raises(Exception, match="401|403|[Nn]ot authenticated|scope"):
                    anonymous.write_array(np.arange(3), key="intruder")
            else:
                with pytest.raises(Exception, match="requires API key authentication"):
                    from_context(anonymous_context)["probe"].read()
        assert "intruder" not in writer
