"""The PostgreSQL major versions sqlml is tested on, in one place (pure: no plpy, no ctypes).

sqlml reads a few PostgreSQL internals through ctypes (symbols, globals, struct layouts: see
sqlml/server/pg_internals.py), which may differ between major versions. The extension's scripts
refuse to install on any other major (sqlml/extension.py builds the guard from this tuple),
``pg_internals`` refuses to load there (``check_major``), and the README names the same versions.
"""

from __future__ import annotations

from sqlml.errors import FEATURE_NOT_SUPPORTED, SqlmlError

SUPPORTED_MAJORS = (15,)


def major_of(version_num: int) -> int:
    """The major version of a ``server_version_num`` (150004 -> 15; 90624 -> 9 for 9.6.24)."""
    return version_num // 10000


def check_major(version_num: int) -> None:
    """Raise unless ``version_num`` (``server_version_num``, e.g. 150004) is a supported major version."""
    major = major_of(version_num)
    if major not in SUPPORTED_MAJORS:
        supported = ", ".join(map(str, SUPPORTED_MAJORS))
        raise SqlmlError(f"PostgreSQL {major} is not supported (server_version_num {version_num}): sqlml "
                         f"supports PostgreSQL {supported} only", sqlstate=FEATURE_NOT_SUPPORTED,
                         hint=f"install sqlml into a PostgreSQL {supported} cluster: it reads server internals "
                              "whose layout was checked against those versions only")
