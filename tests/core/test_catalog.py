"""The catalog service: configuration, authentication, bluesky runs in and out.

Each behavioural test runs against embedded SQLite and against PostgreSQL (the machine's
server on 127.0.0.1:5432), through the in-process app.
"""

from __future__ import annotations

import bluesky.plans as bp
import httpx
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from event_model import DocumentNames, schema_validators
from ophyd.sim import det, motor

from nanostrain.catalog import CatalogSettings, catalog_config, connect

from ..conftest import API_KEY, ServerProcess, in_process_client


def write_scan(client, num: int = 5) -> tuple[str, list]:
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(TiledWriter(client))
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    (uid,) = RE(bp.scan([det], motor, -1, 1, num, md={"sample": {"name": "NC91"}}))
    return uid, docs


def test_sqlite_config_puts_everything_under_the_data_dir(tmp_path):
    settings = CatalogSettings(data_dir=tmp_path / "d", api_key="abc123")
    config = catalog_config(settings)
    assert config["catalog"]["uri"] == f"sqlite:///{tmp_path / 'd' / 'catalog.db'}"
    assert config["catalog"]["writable_storage"] == [str(tmp_path / "d" / "data"), f"sqlite:///{tmp_path / 'd' / 'tables.sqlite'}"]
    assert str(tmp_path / "d" / "detectors") in config["catalog"]["readable_storage"]
    assert config["media_types"]["BlueskyRun"]["application/json-seq"].endswith("json_seq_exporter")


def test_postgres_uri_serves_catalog_through_asyncpg_and_tables_through_adbc(tmp_path):
    settings = CatalogSettings(data_dir=tmp_path, api_key="abc", database="postgresql://u@h:5432/db")
    config = catalog_config(settings)
    assert config["catalog"]["uri"] == "postgresql+asyncpg://u@h:5432/db"
    assert config["catalog"]["writable_storage"][1] == "postgresql://u@h:5432/db"


@pytest.mark.parametrize("key", ["with space", "semi;colon", "dash-key"])
def test_non_alphanumeric_api_key_is_refused(tmp_path, key):
    with pytest.raises(ValueError, match="alphanumeric"):
        CatalogSettings(data_dir=tmp_path, api_key=key)


def test_non_postgres_database_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="postgresql://"):
        CatalogSettings(data_dir=tmp_path, api_key="k", database="mysql://x/y")


def test_api_key_is_created_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOSTRAIN_API_KEY", raising=False)
    first = CatalogSettings(data_dir=tmp_path).api_key
    assert first.isalnum() and len(first) == 32
    assert CatalogSettings(data_dir=tmp_path).api_key == first


def test_run_round_trips_through_the_catalog(catalog_client):
    uid, live = write_scan(catalog_client["raw"])
    run = catalog_client["raw"][uid]
    table = run["primary"].read()
    assert np.allclose(table["motor"], np.linspace(-1, 1, 5))
    assert np.allclose(table["det"], [e["data"]["det"] for n, e in live if n == "event"])
    assert run.metadata["start"]["sample"] == {"name": "NC91"}
    assert run.metadata["stop"]["exit_status"] == "success"


def test_documents_are_exported_and_valid(catalog_client):
    uid, live = write_scan(catalog_client["raw"])
    exported = list(catalog_client["raw"][uid].documents())
    assert [n for n, _ in exported].count("event") == 5
    for name, doc in exported:
        schema_validators[DocumentNames(name)].validate(doc)
    assert exported[0][1]["uid"] == live[0][1]["uid"]


@pytest.mark.server
@pytest.mark.filterwarnings("ignore:The callback")
def test_served_catalog_needs_the_key_to_write_and_none_to_read(catalog_settings):
    """Over HTTP from a real server process (one app per database, as deployed)."""
    server = ServerProcess(catalog_settings).start()
    try:
        anonymous = connect(server.url, api_key=None)
        with pytest.raises(Exception, match="Not enough permissions"):
            write_scan(anonymous["raw"])
        uid, _ = write_scan(server.client()["raw"])
        assert list(connect(server.url, api_key=None)["raw"]) == [uid]
        assert httpx.get(f"{server.url}/ui/", follow_redirects=True).status_code == 200
    finally:
        server.stop()


def test_private_catalog_refuses_anonymous_reads(tmp_path):
    settings = CatalogSettings(data_dir=tmp_path, api_key=API_KEY, public=False)
    with pytest.raises(RuntimeError, match="requires API key"):
        list(in_process_client(settings, api_key=None))


