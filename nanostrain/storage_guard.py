"""Files may be registered with the catalog only from inside the detector folders (and the
derived runs' folder of array files, ``<data_dir>/derived``: the server's readable storage).

A file registered by reference (an *external asset*: a ``file://`` URI in a data source,
as TiledWriter registers every StreamResource) is served by Tiled to whoever may read its
node: its array, and its raw bytes (``/api/v1/asset/bytes``). Tiled 0.2.20 checks such a
URI only when it reads the array, and then compares the path as written with its
readable storage (`os.path.commonpath`, no resolution): ``<detectors>/../api_key``, or a
symbolic link placed in a detector folder, passes; registration (``POST /register``,
``PUT /data_source``) and the bytes route check nothing. So any file the server process
can read could be published to anonymous readers.

`RegistrationGuard` (an ASGI middleware in front of the Tiled app) checks every
``data_uri`` of a request that registers or updates data sources, before Tiled sees it,
and refuses the request (HTTP 403, the reason naming the URI) unless every ``file://``
URI is `allowed_asset_path`: absolute, without ``..``, inside one of the detector
folders, through no symbolic link inside that folder. URIs of other schemes (Tiled's own SQL table
storage) are not paths and pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

#: Route prefixes (after the API root) whose bodies may carry data sources with assets.
GUARDED_ROUTES = ("/register/", "/data_source/", "/metadata/")
GUARDED_METHODS = ("POST", "PUT", "PATCH")


class RefusedAsset(ValueError):
    """A registration names a file outside the detector folders (the message says which)."""


def allowed_asset_path(data_uri: str, roots: Iterable[Path]) -> Path | None:
    """The path of ``file://`` ``data_uri`` if it may be registered, None for another scheme.

    Raises `RefusedAsset` if the path is relative, contains ``..``, is not inside one of
    the folders ``roots`` (as given, or as their real paths), or passes through a symbolic
    link inside that folder (its real path is not the folder's real path joined with the
    rest of the path). A link above a folder (a facility's mount point) is the
    administrator's choice and is followed.
    """
    parts, roots = urlsplit(data_uri), tuple(roots)
    if parts.scheme != "file":
        return None
    path = PurePosixPath(unquote(parts.path))
    if not path.is_absolute():
        raise RefusedAsset(f"{data_uri}: not an absolute path")
    if ".." in path.parts:
        raise RefusedAsset(f"{data_uri}: a path with '..' is refused")
    for root in roots:
        real_root = Path(os.path.realpath(root))
        for base in (Path(os.path.abspath(root)), real_root):
            if Path(path).is_relative_to(base):
                real = os.path.realpath(path)
                if real != str(real_root / Path(path).relative_to(base)):
                    raise RefusedAsset(f"{data_uri}: the path goes through a symbolic link (to {real})")
                return Path(path)
    raise RefusedAsset(f"{data_uri}: outside the detector folders {[str(Path(root)) for root in roots]}")


def data_uris(payload: Any) -> Iterator[str]:
    """Every ``data_uri`` string anywhere in a decoded JSON ``payload``."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key == "data_uri" and isinstance(value, str):
                yield value
            else:
                yield from data_uris(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from data_uris(item)


class RegistrationGuard:
    """ASGI middleware: requests to `GUARDED_ROUTES` whose body registers a file outside
    ``roots`` (or a body that is not JSON) get HTTP 403 with the reason; others go on,
    with their body, to ``app``. ``api_prefix`` is where the Tiled API is mounted."""

    def __init__(self, app, roots: Iterable[Path], api_prefix: str = "/api/v1"):
        self.app = app
        self.roots = tuple(Path(root) for root in roots)
        self.prefixes = tuple(api_prefix.rstrip("/") + route for route in GUARDED_ROUTES)

    def _guarded(self, scope: dict[str, Any]) -> bool:
        return (scope["type"] == "http" and scope["method"] in GUARDED_METHODS
                and scope["path"].startswith(self.prefixes))

    async def __call__(self, scope, receive, send) -> None:
        if not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._refusal(body)
        if refusal:
            await _send_json(send, 403, {"detail": refusal})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _refusal(self, body: bytes) -> str:
        """Why the request is refused ("" if it is not)."""
        if not body:
            return ""
        try:
            payload = json.loads(body)
        except ValueError:
            return "a request that registers data must send JSON"
        try:
            for uri in data_uris(payload):
                allowed_asset_path(uri, self.roots)
        except RefusedAsset as error:
            return f"refused to register {error}"
        return ""


async def _send_json(send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
