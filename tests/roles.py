"""Several login roles in a test cluster, and connections as each of them.

Roles are cluster-wide and the session shares one cluster, so every module gets its own
suffixed role names. The cluster trusts local connections: connecting as a role needs no password.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from urllib.parse import urlparse

import psycopg2

from tests.conftest import query

KINDS = {  # short name -> the sqlml role it is a member of (None: not a sqlml user at all)
    "admin": "sqlml_admin",
    "dev": "sqlml_developer",
    "dev2": "sqlml_developer",
    "usr": "sqlml_user",
    "usr2": "sqlml_user",
    "nobody": None,
}


@dataclass
class Roles:
    dsn: str
    names: dict = field(default_factory=dict)  # short name -> role name
    _conns: list = field(default_factory=list)

    def __getitem__(self, short: str) -> str:
        return self.names[short]

    def connect(self, short: str):
        """A new autocommit connection as the role ``short`` (closed by ``close``)."""
        u = urlparse(self.dsn)
        conn = psycopg2.connect(host=u.hostname, port=u.port, dbname=u.path.lstrip("/"), user=self.names[short])
        conn.autocommit = True
        self._conns.append(conn)
        return conn

    def close(self):
        for c in self._conns:
            c.close()


def create_roles(admin_conn, dsn: str) -> Roles:
    suffix = uuid.uuid4().hex[:6]
    roles = Roles(dsn)
    for short, member_of in KINDS.items():
        name = f"{short}_{suffix}"
        query(admin_conn, f'CREATE ROLE "{name}" LOGIN' + (f" IN ROLE {member_of}" if member_of else ""))
        roles.names[short] = name
    return roles


def drop_roles(admin_conn, roles: Roles) -> None:
    roles.close()
    for name in roles.names.values():
        query(admin_conn, f'DROP OWNED BY "{name}" CASCADE')
        query(admin_conn, f'DROP ROLE "{name}"')
