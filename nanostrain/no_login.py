"""The authentication provider of a catalog with roles (`nanostrain.roles`): nobody logs in.

Such a catalog is used with its service principals' API keys only. Tiled enables its
multi-user mode (principals, scoped keys) only when at least one provider is configured;
this one refuses every username and password. A facility that wants people to log in
configures its own provider (PAM, LDAP, OIDC) instead.
"""

from __future__ import annotations

from tiled.server.protocols import InternalAuthenticator


class NoLogin(InternalAuthenticator):
    """A Tiled `InternalAuthenticator` that authenticates no one."""

    async def authenticate(self, username: str, password: str) -> None:
        return None
