"""sqlml: AutoML inside PostgreSQL.

The same package runs on both sides: inside the server (``sqlml.server``, called by the
extension's PL/Python functions) and on the client (``sqlml.connect``, the ``sqlml`` command).
"""

__version__ = "0.2.0"


def connect(dsn=None, **kwargs):
    """Open a :class:`sqlml.client.Client` on ``dsn`` (libpq connection string or URI)."""
    from sqlml.client import Client

    return Client.connect(dsn, **kwargs)
