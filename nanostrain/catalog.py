"""The nanostrain catalog: a Tiled server holding bluesky runs and derived results.

One configuration (`catalog_config`) serves three ways of running the catalog:

* `nanostrain serve` — a uvicorn server process (`serve`), the beamline deployment;
* `EmbeddedCatalog` — the same app on a background thread of the current process, what
  `make_session(data_dir=...)` uses so that a laptop needs no second terminal;
* `build_catalog_app` + `tiled.client.from_app` — in-process, for unit tests.

Storage: the catalog database is SQLite (``<data_dir>/catalog.db``) by default or
PostgreSQL (``database="postgresql://..."``); event tables go to a SQL tabular store
(SQLite file beside the catalog, or the same PostgreSQL database); arrays to files under
``<data_dir>/data``. Detector HDF5 files, and the HDF5 files of derived runs' large arrays
(``<data_dir>/derived``, `nanostrain.derived_files`), are registered by reference
(StreamResource), so their folders are the server's ``readable_storage``.

Concurrent writers on SQLite: both SQLite files run in WAL mode (readers never block the
writer) and every connection waits up to ``SQLITE_BUSY_TIMEOUT_S`` for a lock instead of
failing with "database is locked" (`configure_sqlite`); several beamline processes can
write at once. Beyond a few writers, use PostgreSQL.

Writes need the API key; reads are anonymous unless ``public=False``. The bluesky
json-seq exporter is registered so that ``run.documents()`` works over HTTP.

Layout (`nanostrain.schema.catalog`): the root holds a ``raw`` and a ``derived`` node,
both bluesky-tiled-plugins' ``CatalogOfBlueskyRuns`` (``c[-1]``, ``c[scan_id]``, partial
uids, ``TimeRange``, ``ScanID``, ``FullText``). The app creates both nodes when it
starts (if they are not there yet), however it is served.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .roles import ROLES, authentication_config, has_roles, init_roles, role_key
from .schema.catalog import DERIVED_NODE, RAW_NODE, RUNS_SPEC
from .secret_files import read_or_create_secret
from .storage_guard import RegistrationGuard

DEFAULT_DATA_DIR = Path("nanostrain-data")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
API_KEY_ENV = "NANOSTRAIN_API_KEY"
API_KEY_FILE = "api_key"  # in the data folder, beside (never inside) the readable storage
JSON_SEQ_EXPORTER = "nanostrain.json_seq:json_seq_exporter"
SQLITE_BUSY_TIMEOUT_S = 60.0  # how long an SQLite connection waits for a write lock


@dataclass(frozen=True)
class CatalogSettings:
    """Where the catalog keeps its data and who may write to it.

    data_dir: root folder: ``catalog.db`` (SQLite), ``tables.sqlite`` (event tables),
        ``data/`` (arrays written through Tiled), ``detectors/`` (HDF5 written by
        detectors, registered by reference), ``derived/`` (HDF5 of derived runs' large
        arrays, registered by reference), ``journal/`` (every run's documents as the
        session emitted them, `nanostrain.journal`).
    database: ``None`` for embedded SQLite, or a ``postgresql://user@host:port/db`` URI
        used both for the catalog (through asyncpg) and for the event tables.
    api_key: the key this process uses: with roles, the key of ``role`` by default
        (`nanostrain.roles`); without, the single key every writer shares (alphanumeric).
    readable_storage: extra folders whose files (detector HDF5) the server may serve
        (`readable_folders`); files are registered from these folders only
        (`nanostrain.storage_guard`).
    public: allow anonymous reads.
    roles: serve with roles (Tiled's service principals with scoped keys: a beamline
        writer, an analysis writer, readers; `nanostrain.roles`) instead of one shared
        key. True sets them up in ``<data_dir>/roles/`` (once; they stay); None (default)
        uses them if the data folder has them; False refuses a data folder that has them.
    role: the role this process acts in, whose key it uses when the catalog has roles.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    database: str | None = None
    api_key: str = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or "")
    readable_storage: tuple[Path, ...] = ()
    public: bool = True
    roles: bool | None = None
    role: str = "beamline"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())
        if self.role not in ROLES:
            raise ValueError(f"Unknown role {self.role!r}; the roles are {sorted(ROLES)}.")
        if self.roles:
            init_roles(self.data_dir)
        elif self.roles is False and has_roles(self.data_dir):
            raise ValueError(f"The catalog of {self.data_dir} has roles ({self.data_dir / 'roles'}); "
                             "it cannot be served with one shared key.")
        object.__setattr__(self, "roles", has_roles(self.data_dir))
        if not self.api_key:
            key = role_key(self.data_dir, self.role) if self.roles else load_or_create_api_key(self.data_dir)
            object.__setattr__(self, "api_key", key)
        if not self.api_key.isalnum():
            raise ValueError("The API key must be alphanumeric (letters and digits only).")
        if self.database is not None and urlsplit(self.database).scheme not in (
            "postgresql",
            "postgres",
            "postgresql+asyncpg",
        ):
            raise ValueError(
                f"--database must be a postgresql://... URI, got {self.database!r}; "
                "leave it out for the embedded SQLite catalog."
            )

    @property
    def detector_dir(self) -> Path:
        """Folder where (simulated) detectors write their HDF5 files."""
        return self.data_dir / "detectors"

    @property
    def derived_dir(self) -> Path:
        """Folder of the derived runs' array files (`nanostrain.derived_files`)."""
        return self.data_dir / "derived"

    @property
    def journal_dir(self) -> Path:
        """Folder of the sessions' write-ahead journal (one JSON-lines file per run)."""
        return self.data_dir / "journal"


def load_or_create_api_key(data_dir: Path) -> str:
    """Return the key stored in ``<data_dir>/api_key``, creating a random one if absent.

    Keeping the key in the data folder lets `nanostrain serve` and a later
    `nanostrain shell` on the same folder agree without the user copying secrets. The
    file is readable by its owner only, created atomically; one that others may read is
    refused (`nanostrain.secret_files`).
    """
    return read_or_create_secret(Path(data_dir) / API_KEY_FILE, lambda: secrets.token_hex(16))


def readable_folders(settings: CatalogSettings) -> tuple[Path, ...]:
    """The folders whose files the server may serve by reference: the detector folder,
    the derived runs' folder and ``settings.readable_storage``, resolved.

    A folder that holds the catalog's own files (the data folder itself or any folder
    above it: the key file, the databases) or one inside the data folder other than those
    two is refused (ValueError naming it).
    """
    own = (settings.detector_dir.resolve(), settings.derived_dir.resolve())
    folders = list(own)
    for given in settings.readable_storage:
        folder = Path(given).resolve()
        if settings.data_dir.is_relative_to(folder):
            raise ValueError(
                f"readable_storage {given}: it holds the catalog's data folder {settings.data_dir} "
                "(its key and databases); name the detector folders only."
            )
        if folder.is_relative_to(settings.data_dir) and not any(folder.is_relative_to(o) for o in own):
            raise ValueError(
                f"readable_storage {given}: inside the catalog's data folder {settings.data_dir} "
                f"only {settings.detector_dir} holds detector files (and {settings.derived_dir} derived arrays)."
            )
        folders.append(folder)
    return tuple(folders)


def _postgres_uris(database: str) -> tuple[str, str]:
    """(catalog URI for SQLAlchemy+asyncpg, tabular-storage URI for ADBC) from one URI."""
    parts = urlsplit(database)
    plain = urlunsplit(("postgresql",) + tuple(parts[1:]))
    async_ = urlunsplit(("postgresql+asyncpg",) + tuple(parts[1:]))
    return async_, plain


def catalog_config(settings: CatalogSettings) -> dict[str, Any]:
    """The Tiled server configuration (the same dict `tiled serve config` reads as YAML)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("data", "detectors", "derived", "journal"):
        (settings.data_dir / folder).mkdir(exist_ok=True)
    if settings.database is None:
        catalog_uri = f"sqlite:///{settings.data_dir / 'catalog.db'}"
        tables_uri = f"sqlite:///{settings.data_dir / 'tables.sqlite'}"
        configure_sqlite(settings.data_dir / "tables.sqlite")
    else:
        catalog_uri, tables_uri = _postgres_uris(settings.database)
    readable = [str(folder) for folder in readable_folders(settings)]
    authentication: dict[str, Any] = {"single_user_api_key": settings.api_key, "allow_anonymous_access": settings.public}
    roles: dict[str, Any] = {}
    if settings.roles:
        authentication, roles["database"] = authentication_config(settings.data_dir, settings.public)
    return {
        **roles,
        "authentication": authentication,
        "catalog": {
            "uri": catalog_uri,
            "writable_storage": [str(settings.data_dir / "data"), tables_uri],
            "readable_storage": readable,
            "init_if_not_exists": True,
        },
        "media_types": {"BlueskyRun": {"application/json-seq": JSON_SEQ_EXPORTER}},
        "uvicorn": {"host": DEFAULT_HOST, "port": DEFAULT_PORT},
    }


def configure_sqlite(path: Path) -> None:
    """Ready the SQLite file ``path`` (created if missing) for concurrent writers.

    WAL journal mode (it stays set in the file): readers never block the writer. Every
    SQLite connection the server's pools open waits up to ``SQLITE_BUSY_TIMEOUT_S`` for a
    lock. And the server's event-table connections take turns (one checked out at a
    time): tiled opens a transaction with a read and then writes, and SQLite refuses such
    an upgrade at once, busy timeout or not, when another connection wrote in between;
    taking turns is what SQLite does anyway (one writer at a time).
    """
    with contextlib.closing(sqlite3.connect(path)) as database:
        database.execute("PRAGMA journal_mode=WAL")
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    for name, hook in (("connect", _on_connect), ("checkout", _on_checkout), ("checkin", _on_checkin)):
        if not event.contains(Pool, name, hook):
            event.listen(Pool, name, hook)


_SQLITE_TURN = threading.Lock()  # held while an event-table connection is checked out


def _on_connect(dbapi_connection, record) -> None:
    """Pool ``connect`` hook: a busy timeout on each new SQLite connection; the ADBC ones
    (tiled's event tables) are marked to take turns."""
    get_info = getattr(dbapi_connection, "adbc_get_info", None)
    adbc_sqlite = get_info is not None and get_info().get("vendor_name") == "SQLite"
    if adbc_sqlite or "sqlite" in type(dbapi_connection).__module__:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()
    record.info["take_turns"] = adbc_sqlite


def _on_checkout(_dbapi_connection, record, _proxy) -> None:
    if record.info.get("take_turns"):
        # bounded: should a connection ever leak, the busy timeout takes over
        record.info["has_turn"] = _SQLITE_TURN.acquire(timeout=SQLITE_BUSY_TIMEOUT_S)


def _on_checkin(_dbapi_connection, record) -> None:
    if record.info.pop("has_turn", False):
        _SQLITE_TURN.release()


def build_catalog_app(settings: CatalogSettings, view: bool = False):
    """The ASGI app of the catalog (for `tiled.client.from_app` or uvicorn); on start it
    creates the ``raw`` and ``derived`` nodes if they are missing (`create_layout`).
    ``view``: also serve the web view at ``/view/`` (`nanostrain.webview`; only for a
    catalog with anonymous reads, which the view's visitors get)."""
    import logging

    from tiled.config import Config, construct_build_app_kwargs
    from tiled.server.app import build_app

    # tiled's app logger says "Tiled version ..." at INFO on every start; its import sets
    # that level, so it is lowered here, after the import
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)

    kwargs = construct_build_app_kwargs(Config.model_validate(catalog_config(settings)))
    tree = kwargs["tree"]

    async def layout() -> None:
        await create_layout(tree)

    kwargs["tasks"]["startup"].append(layout)  # after the tree's own start (database set up)
    app = build_app(**kwargs)
    given = tuple(Path(os.path.abspath(folder)) for folder in settings.readable_storage)
    app.add_middleware(RegistrationGuard, roots=readable_folders(settings) + given)  # as given, too: mount links
    if view and settings.public:
        from .webview import mount_view

        mount_view(app, role_key(settings.data_dir, "reader") if settings.roles else settings.api_key)
    return app


async def create_layout(tree) -> None:
    """Create the ``raw`` and ``derived`` nodes (spec ``CatalogOfBlueskyRuns``) under the
    root adapter ``tree`` unless they exist; a node of that name with other specs is an
    error (a catalog of an older layout must be migrated, not silently reused)."""
    from tiled.catalog.adapter import Collision
    from tiled.server.core import NoEntry
    from tiled.structures.core import Spec, StructureFamily

    for key in (RAW_NODE, DERIVED_NODE):
        try:
            node = await tree.lookup_adapter([key])
        except NoEntry:
            try:
                await tree.create_node(
                    StructureFamily.container, metadata={}, key=key, specs=[Spec(*RUNS_SPEC)]
                )
            except Collision:  # another server on this database made it first
                pass
            node = await tree.lookup_adapter([key])
        if RUNS_SPEC[0] not in [spec.name for spec in node.specs]:
            raise RuntimeError(
                f"The catalog's {key!r} node has specs {[spec.name for spec in node.specs]}, "
                f"not {RUNS_SPEC[0]!r}: this catalog was not laid out by nanostrain."
            )


def serve(settings: CatalogSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Run the catalog server in the foreground until interrupted (`nanostrain serve`)."""
    import uvicorn

    app = build_catalog_app(settings, view=True)
    print(f"nanostrain catalog: data in {settings.data_dir}")
    print(f"  API:    http://{host}:{port}/api/v1")
    if settings.public:
        print(f"  runs:   http://{host}:{port}/view/")
    print(f"  web UI: http://{host}:{port}/ui/")
    print(f"  writes need the API key in {settings.data_dir / 'api_key'} (or ${API_KEY_ENV})")
    uvicorn.run(app, host=host, port=port, log_level="warning")


class _ThreadedServer:
    """uvicorn on a daemon thread of this process (signal handlers left alone)."""

    def __init__(self, app, host: str, port: int):
        import uvicorn

        class _Server(uvicorn.Server):
            def install_signal_handlers(self) -> None:  # the main thread keeps its own
                pass

        self.server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="nanostrain-catalog", daemon=True)

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The embedded catalog server did not start.")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class EmbeddedCatalog:
    """The catalog server on a background thread, for a session that owns its data folder.

    >>> with EmbeddedCatalog(CatalogSettings(data_dir="nanostrain-data")) as cat:
    ...     client = cat.client()
    """

    def __init__(self, settings: CatalogSettings, host: str = DEFAULT_HOST, port: int = 0):
        self.settings = settings
        self._server = _ThreadedServer(build_catalog_app(settings), host, port)
        self.url = self._server.start()

    @property
    def uri(self) -> str:
        return f"{self.url}/api/v1"

    def client(self, api_key: str | None = None):
        return connect(self.uri, api_key=api_key or self.settings.api_key)

    def close(self) -> None:
        self._server.stop()

    def __enter__(self) -> EmbeddedCatalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(uri: str, api_key: str | None = None):
    """A Tiled client of the catalog at ``uri`` (``http://host:port[/api/v1]``)."""
    from tiled.client import from_uri

    return from_uri(uri, api_key=api_key or os.environ.get(API_KEY_ENV) or None)


def catalog_nodes(client) -> tuple[Any, Any]:
    """The ``raw`` and ``derived`` nodes (``CatalogOfBlueskyRuns`` clients) of the catalog
    whose root client is ``client``."""
    return client[RAW_NODE], client[DERIVED_NODE]


def broker(node):
    """databroker's v1 ``Broker`` over ``node`` (the ``raw`` node): ``db[-1].table()``,
    ``db(sample=...)``, ``db.insert``.

    The Broker reads through a client of its own whose structure-client map is not the
    one ``node`` shares with every other client of this process: databroker's headers
    call ``run.v2``, which re-registers ``BlueskyRun`` as the v2 client in the map it was
    given (bluesky-tiled-plugins copies that map shallowly), and on a shared map every
    later ``node[uid]`` would come back as a v2 run (``run["primary"]["cam"]`` failing).
    """
    from databroker import Broker
    from tiled.utils import OneShotCachedMap

    shared = node.structure_clients
    own = OneShotCachedMap({key: (lambda value=shared[key]: value) for key in shared})
    return Broker(type(node)(node.context, item=node.item, structure_clients=own))


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    """Block until a catalog server answers at ``url``; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url.rstrip('/')}/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"No catalog server answered at {url} within {timeout} s.")
        time.sleep(0.1)


def migrate_root_runs(client, say=print) -> list[str]:
    """Move runs that a catalog of the older layout holds at its root into the ``raw`` or
    ``derived`` node (by ``start.derived_from``): each run's documents, as the catalog
    exports them, are written into its node, and the root entry is deleted once the copy
    has its stop document. A run already in its node is only removed from the root.
    Returns the uids moved (``nanostrain catalog migrate``)."""
    from bluesky_tiled_plugins import TiledWriter

    moved = []
    for key in [key for key in client if key not in (RAW_NODE, DERIVED_NODE)]:
        run = client[key]
        if "BlueskyRun" not in [spec.name for spec in run.specs]:
            say(f"{key}: not a bluesky run; left at the root")
            continue
        start = run.metadata["start"]
        node = client[DERIVED_NODE if "derived_from" in start else RAW_NODE]
        if start["uid"] not in node:
            writer = TiledWriter(node, batch_size=100)
            for name, doc in run.documents():
                writer(name, doc.to_dict())  # the exported documents are read-only
        if not node[start["uid"]].metadata.get("stop") and run.metadata.get("stop"):
            raise RuntimeError(f"run {key}: the copy in {node.item['id']!r} has no stop document; root entry kept")
        client.delete_contents(key, recursive=True, external_only=False)
        moved.append(start["uid"])
        say(f"{start['uid']} -> {node.item['id']}")
    return moved
