"""Roles in the catalog: Tiled's own service principals, API keys and scopes.

A catalog served with roles (``nanostrain serve --roles``) runs Tiled in its multi-user
mode instead of the single shared key: an authentication database, a token-signing key,
and one *service principal* per role, each with one API key limited to the scopes the
role needs. Tiled checks every request against its key's scopes (a key's scopes are the
intersection of those it was given and its principal's Tiled role):

============  ===========  ======================================================================
role          Tiled role   key scopes
============  ===========  ======================================================================
beamline      admin        read:metadata read:data create:node write:metadata write:data register
analysis      admin        the beamline's + delete:node delete:revision (superseding derived runs)
reader        user         read:metadata read:data
============  ===========  ======================================================================

Only Tiled's ``admin`` role holds ``register`` (detector files, derived-array files), so
the two writers' principals have it; their keys carry none of its other scopes
(``admin:apikeys``, ``write:principals``, ...). Who uses which key: the beamline session,
``catalog recover`` and the journal's resync: ``beamline``; ``nanostrain worker`` and
``replay --write``: ``analysis``; ``replay``, ``report``, ``catalog ls`` and the web view:
``reader``.

Everything lives in ``<data-dir>/roles/`` (beside, never inside, the readable storage):
``authn.db`` (Tiled's authentication database: principals and hashed keys), the
token-signing key and one key file per role (``beamline.key``, ...), all created 0600
(`nanostrain.secret_files`). The folder's existence is what puts a data folder's catalog
in roles mode. Nobody logs in interactively: the only authentication provider is
`nanostrain.no_login.NoLogin`; a facility that wants people to log in (and manage keys with ``tiled admin``)
puts its own provider (PAM, LDAP, OIDC) in the configuration instead. Scopes apply to
the whole catalog; keeping the analysis key out of ``raw`` would take an access policy
with access tags, which is not set up.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .secret_files import read_or_create_secret, read_secret

ROLES_DIR = "roles"
AUTHN_DATABASE = "authn.db"
SIGNING_KEY_FILE = "signing_key"
PROVIDER = "nanostrain"

_WRITE = ("read:metadata", "read:data", "create:node", "write:metadata", "write:data", "register")


@dataclass(frozen=True)
class Role:
    """A role: the Tiled role of its service principal and the scopes of its key."""

    tiled_role: str
    scopes: tuple[str, ...]


ROLES: dict[str, Role] = {
    "beamline": Role("admin", _WRITE),
    "analysis": Role("admin", _WRITE + ("delete:node", "delete:revision")),
    "reader": Role("user", ("read:metadata", "read:data")),
}


def roles_dir(data_dir: Path) -> Path:
    return Path(data_dir) / ROLES_DIR


def has_roles(data_dir: Path) -> bool:
    """Whether the catalog of ``data_dir`` was set up with roles (`init_roles`)."""
    return (roles_dir(data_dir) / AUTHN_DATABASE).is_file()


def key_path(data_dir: Path, role: str) -> Path:
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}; the roles are {sorted(ROLES)}.")
    return roles_dir(data_dir) / f"{role}.key"


def role_key(data_dir: Path, role: str) -> str:
    """The API key of ``role`` for the catalog of ``data_dir`` (which has roles)."""
    path = key_path(data_dir, role)
    if not path.is_file():
        raise FileNotFoundError(f"No key for role {role!r} at {path}: was the catalog served with --roles?")
    return read_secret(path)


def _database_uri(data_dir: Path) -> str:
    return f"sqlite:///{roles_dir(data_dir) / AUTHN_DATABASE}"


def init_roles(data_dir: Path) -> None:
    """Set up roles for the catalog of ``data_dir`` if not yet done: Tiled's authentication
    database (made by ``tiled admin initialize-database``), the token-signing key, and a
    service principal with a scoped API key for every role that has no key file yet.
    Idempotent; meant for the process that serves the catalog."""
    folder = roles_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    database = folder / AUTHN_DATABASE
    if not database.is_file():
        from tiled.utils import ensure_specified_sql_driver

        done = subprocess.run([sys.executable, "-m", "tiled", "admin", "initialize-database",
                               ensure_specified_sql_driver(_database_uri(data_dir))],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Tiled could not create its authentication database {database}: {done.stderr.strip()}")
        database.chmod(0o600)
    read_or_create_secret(folder / SIGNING_KEY_FILE, lambda: secrets.token_hex(32))
    for role in ROLES:
        read_or_create_secret(key_path(data_dir, role), lambda role=role: asyncio.run(_new_service_key(data_dir, role)))


async def _new_service_key(data_dir: Path, role: str) -> str:
    """A new service principal of ``role`` with one API key of the role's scopes, stored
    in the authentication database as Tiled stores keys (sha256 of the secret and its
    first eight hex digits; Tiled's own key-creation route needs an HTTP request from a
    logged-in principal, which a catalog without interactive logins has none of)."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from tiled.authn_database import orm
    from tiled.authn_database.core import create_service
    from tiled.utils import ensure_specified_sql_driver

    engine = create_async_engine(ensure_specified_sql_driver(_database_uri(data_dir)))
    try:
        async with AsyncSession(engine, expire_on_commit=False) as db:
            principal = await create_service(db, ROLES[role].tiled_role)
            secret = secrets.token_bytes(4 + 32)  # as Tiled makes them: 32 bytes of entropy + 4
            db.add(orm.APIKey(principal_id=principal.id, scopes=list(ROLES[role].scopes), note=f"nanostrain {role}",
                              first_eight=secret.hex()[:8], hashed_secret=hashlib.sha256(secret).digest()))
            await db.commit()
    finally:
        await engine.dispose()
    return secret.hex()


def authentication_config(data_dir: Path, public: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``authentication`` and ``database`` sections of the Tiled configuration of a
    catalog with roles (`init_roles` must have run)."""
    authentication = {
        "providers": [{"provider": PROVIDER, "authenticator": "nanostrain.no_login:NoLogin"}],
        "secret_keys": [read_secret(roles_dir(data_dir) / SIGNING_KEY_FILE)],
        "allow_anonymous_access": public,
    }
    return authentication, {"uri": _database_uri(data_dir), "init_if_not_exists": False}
