"""Shared fixtures: catalogs (in-process app, real server process, SQLite or PostgreSQL),
a RunEngine with simulated devices."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanostrain.catalog import CatalogSettings, build_catalog_app, wait_until_up

API_KEY = "nanostraintestkey"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_server_port(lowest: int = 10000) -> int:
    """A loopback port free for TCP and UDP and *below* the ephemeral range, for a server
    that binds it again and again through the session (Channel Access IOCs, a worker's
    live-value server): a port in that range can be taken in between as the local port of
    any outgoing connection (tests on two processes make many), and the next bind fails."""
    first_ephemeral = ephemeral_ports()[0]
    rng = random.Random(f"{os.getpid()}-{time.time_ns()}")
    for _ in range(500):
        port = rng.randrange(lowest, first_ephemeral)
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free loopback port between {lowest} and {first_ephemeral}")


# One Channel Access setup for the whole session, made before any CA client starts: the
# soft IOCs (subprocesses inherit it) and the clients stay on loopback, on a server port of
# their own, so a second IOC or a beamline's CA traffic cannot answer our searches. Two
# IOCs alive at once on one port would hide each other: IOC fixtures never overlap. Each
# test process (pytest-xdist worker) has its own port, below the ephemeral range. The
# xdist controller loads this file too, before it starts the workers, which inherit its
# environment: a port this file chose in another process is not taken over (two workers
# on one port made IOCs and live-value servers of different files collide); a port the
# user set before pytest started is kept.
if os.environ.get("NANOSTRAIN_TEST_CA_PORT_OWNER", str(os.getpid())) != str(os.getpid()):
    del os.environ["EPICS_CA_SERVER_PORT"]
if not os.environ.get("EPICS_CA_SERVER_PORT"):
    os.environ.update(EPICS_CA_SERVER_PORT=str(free_server_port()), NANOSTRAIN_TEST_CA_PORT_OWNER=str(os.getpid()))
os.environ.update(
    EPICS_CA_ADDR_LIST="127.0.0.1",
    EPICS_CA_AUTO_ADDR_LIST="NO",
    EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
)
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def require(available: bool, what: str) -> None:
    """Skip without ``what`` (a service, a program) on a developer's machine; CI provides
    it, so there its absence fails the test."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} (CI provides it)")
        pytest.skip(what)


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped afterwards."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (CI must start it).")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"nanostrain_test_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_settings(request, tmp_path) -> CatalogSettings:
    """Catalog settings on a fresh data folder: embedded SQLite, or PostgreSQL."""
    database = request.getfixturevalue("postgres_database") if request.param == "postgresql" else None
    return CatalogSettings(data_dir=tmp_path / "data", api_key=API_KEY, database=database)


@pytest.fixture
def sqlite_settings(tmp_path) -> CatalogSettings:
    return CatalogSettings(data_dir=tmp_path / "data", api_key=API_KEY)


def in_process_client(settings_or_app, api_key: str | None = API_KEY):
    """A Tiled client of the catalog app running in this process (no network).

    Pass an app (from `build_catalog_app`) to open several clients on one app: two apps
    on one PostgreSQL database in one process are not a supported deployment.
    """
    from tiled.client import from_context
    from tiled.client.context import Context

    app = build_catalog_app(settings_or_app) if isinstance(settings_or_app, CatalogSettings) else settings_or_app
    return from_context(Context.from_app(app, api_key=api_key))


@pytest.fixture
def catalog_client(catalog_settings):
    """In-process client of a fresh catalog (parametrised: SQLite and PostgreSQL)."""
    client = in_process_client(catalog_settings)
    yield client
    client.context.close()


class ServerProcess:
    """`nanostrain serve` as a real process on a free port of 127.0.0.1."""

    def __init__(self, settings: CatalogSettings, port: int | None = None):
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        command = [
            sys.executable, "-m", "nanostrain", "serve", "--init",
            "--data-dir", str(self.settings.data_dir), "--port", str(self.port),
        ]  # the key goes in the environment, never on a command line (ps shows those)
        if self.settings.database:
            command += ["--database", self.settings.database]
        if self.settings.roles:
            command.append("--roles")
        log = open(self.settings.data_dir.parent / f"server-{self.port}.log", "ab")
        env = {**os.environ, "NANOSTRAIN_API_KEY": self.settings.api_key}
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_until_up(self.url, timeout=60)
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash or power cut would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def client(self):
        from nanostrain.catalog import connect

        return connect(self.url, api_key=self.settings.api_key)


@pytest.fixture
def server_process(sqlite_settings) -> Iterator[ServerProcess]:
    server = ServerProcess(sqlite_settings).start()
    yield server
    server.stop()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (a second beamline process); fail loudly."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result


@contextlib.contextmanager
def running_ioc(command: list[str], prefix: str, log_path: Path, cwd: Path | None = None) -> Iterator[str]:
    """A soft IOC subprocess (on the session's loopback CA setup) until the block ends.

    It must print ``READY <prefix>`` once serving; its output goes to ``log_path`` (a pipe
    nobody reads could fill and stall it), shown if it dies before it is ready.
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        wait_for(lambda: f"READY {prefix}" in log_path.read_text() or process.poll() is not None, timeout=60)
        if process.poll() is not None:
            raise RuntimeError(f"IOC {command} exited:\n{log_path.read_text()}")
        yield prefix
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def stored_derived_run(session, uid: str, analysis: str, timeout: float = 120.0):
    """Raw run ``uid``'s derived run of ``analysis`` once the catalog holds its stop: the
    session's background writer may still be sending it when the plan returns (under
    load, or after the catalog deferred a run and resyncs it)."""
    def finished():  # a 1-tuple: a run client without streams (a failed run) is falsy itself
        runs = [r for r in session.derived_runs(uid) if r.metadata["start"]["analysis"] == analysis]
        return next(((r,) for r in runs if r.metadata.get("stop")), None)

    (run,) = wait_for(finished, timeout=timeout, interval=0.5)
    return run


@pytest.fixture
def RE():
    from bluesky import RunEngine

    engine = RunEngine({})
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def bench(RE, tmp_path):
    """The simulated alignment bench (ophyd-async stage + camera, ophyd v1 monitor)."""
    from nanostrain.beamline import connect_devices, detector_path_provider
    from nanostrain.devices.alignment import make_alignment_bench

    devices = make_alignment_bench(detector_path_provider(tmp_path / "detectors"))
    connect_devices(devices)
    return devices


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
