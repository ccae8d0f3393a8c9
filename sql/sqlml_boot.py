# Loaded once per backend by the first sqlml function it calls (see the preamble in
# sqlml--*.sql): puts the server-side venv on sys.path and imports sqlml's server entry points.
#
# The venv's site-packages directory comes from the file sqlml.python beside this one, written by
# `sqlml install` (only whoever owns the PostgreSQL installation can change it), or from the
# postmaster's environment variable SQLML_SITE_PACKAGES (only whoever starts the server can set it).
import os
import site

import plpy

_conf = os.path.join(os.path.dirname(__file__), "sqlml.python")
_site = os.environ.get("SQLML_SITE_PACKAGES")
if not _site:
    try:
        with open(_conf) as f:
            _site = f.read().strip()
    except OSError:
        _site = None
if not _site or not os.path.isdir(_site):
    plpy.error(
        "sqlml: the server-side Python environment is not configured",
        detail=f"{_conf} is missing or names a directory that does not exist ({_site!r})",
        hint="run `sqlml install --dsn ...` (or `make setup` in a checkout) on the database server",
        sqlstate="58P01",
    )
site.addsitedir(_site)
try:
    import sqlml.server.api
except ImportError as e:
    plpy.error(
        f"sqlml: the server-side Python environment at {_site} cannot import sqlml ({e})",
        hint="run `sqlml doctor --dsn ...` to see what is missing, then `sqlml install` to repair it",
        sqlstate="58P01",
    )
GD["sqlml"] = sqlml.server.api  # noqa: F821 - GD is the dictionary PL/Python gives this code
