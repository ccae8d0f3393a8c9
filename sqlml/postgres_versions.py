"""The PostgreSQL major versions sqlml is tested on, in one place.

sqlml reads a few PostgreSQL internals through ctypes (symbols, globals, struct layouts: see
sqlml/server/pg_internals.py), which may differ between major versions. The extension's scripts
refuse to install on any other major (sqlml/extension.py builds the guard from this tuple), and
the README names the same versions.
"""

SUPPORTED_MAJORS = (15,)
