"""Who may do what to a project: ownership, sqlml.grants and the roles sqlml_developer/sqlml_admin.

The rules live in one place, the SQL function ``sqlml.has_privilege(role, project, privilege)``
(also what row-level security on the registry uses); this module asks it and turns a "no" into a
clear error. Every function here runs with the extension owner's rights inside
``sqlml.server.privileged`` and takes ``who``, the caller's ``current_user`` captured before
elevating, so a check is made for the caller, never for the owner.

Privileges: ``predict`` < ``train``, ``deploy`` (each implies predict) < ``own`` (implies all,
and allows granting). Creating a project needs membership in sqlml_developer.
"""

from __future__ import annotations

from sqlml.errors import INSUFFICIENT_PRIVILEGE, INVALID_PARAMETER, UNDEFINED_OBJECT, SqlmlError

PRIVILEGES = ("predict", "train", "deploy", "own")
PUBLIC = "public"
DEVELOPER, ADMIN = "sqlml_developer", "sqlml_admin"

_VERB = {"predict": "score", "train": "train", "deploy": "deploy", "own": "manage"}


def check_privilege(privilege) -> str:
    if privilege not in PRIVILEGES:
        raise SqlmlError(f'unknown privilege "{privilege}"', hint=f"use one of: {', '.join(PRIVILEGES)}",
                         sqlstate=INVALID_PARAMETER)
    return privilege


def has(ex, who: str, project: str, privilege: str) -> bool | None:
    """True/False, or None when the project does not exist."""
    return ex.execute("SELECT sqlml.has_privilege($1::name, $2, $3) AS ok", [who, project, privilege])[0]["ok"]


def may_create(ex, who: str) -> bool:
    return ex.execute("SELECT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = $2::name "
                      "AND pg_has_role($1::name, r.oid, 'USAGE')) AS ok", [who, DEVELOPER])[0]["ok"]


def require(ex, who: str, project: str, privilege: str, lock: bool = False) -> dict:
    """The project row (locked with ``lock``) if ``who`` holds ``privilege`` on it; else a clear error."""
    ok = has(ex, who, project, privilege)
    if ok is None:
        raise not_found(ex, who, project)
    if not ok:
        raise denied(who, project, privilege)
    return ex.execute("SELECT * FROM sqlml.projects WHERE name = $1" + (" FOR UPDATE" if lock else ""), [project])[0]


def require_train(ex, who: str, project: str) -> bool:
    """Whether ``project`` exists; raises unless ``who`` may train it (or create it, if it does not)."""
    ok = has(ex, who, project, "train")
    if ok is None:
        if not may_create(ex, who):
            raise SqlmlError(f'permission denied to create project "{project}": role "{who}" may not create projects',
                             hint=f"a sqlml_admin can allow it: GRANT {DEVELOPER} TO {who}; or train into a project "
                                  "whose owner granted you train", sqlstate=INSUFFICIENT_PRIVILEGE)
        return False
    if not ok:
        raise denied(who, project, "train")
    return True


def denied(who: str, project: str, privilege: str) -> SqlmlError:
    return SqlmlError(f'permission denied to {_VERB[privilege]} project "{project}"',
                      hint=f"its owner or a sqlml_admin can allow it: SELECT sqlml.grant('{project}', '{who}', "
                           f"'{privilege}')", sqlstate=INSUFFICIENT_PRIVILEGE)


def not_found(ex, who: str, project: str) -> SqlmlError:
    """'does not exist', listing (some of) the projects ``who`` may use, none that it may not."""
    known = [r["name"] for r in ex.execute(
        "SELECT name FROM sqlml.projects WHERE sqlml.has_privilege($1::name, name, 'predict') ORDER BY name LIMIT 20",
        [who])]
    return SqlmlError(f'project "{project}" does not exist',
                      hint=("projects you may use: " + ", ".join(known)) if known
                      else "train one first: SELECT * FROM sqlml.train('name', 'table', 'target')",
                      sqlstate=UNDEFINED_OBJECT)


def role_exists(ex, role: str) -> bool:
    return role == PUBLIC or bool(ex.execute("SELECT 1 FROM pg_roles WHERE rolname = $1::name", [role]))


def grant(ex, who: str, project: str, grantee: str, privilege: str) -> bool:
    """Record ``grantee``'s ``privilege`` on ``project`` (``who`` must own it); False if it already had it."""
    _check_grant(ex, who, project, grantee, privilege)
    rows = ex.execute("INSERT INTO sqlml.grants (project, grantee, privilege, granted_by) "
                      "VALUES ($1, $2::name, $3, $4::name) ON CONFLICT DO NOTHING RETURNING 1",
                      [project, grantee, privilege, who])
    return bool(rows)


def revoke(ex, who: str, project: str, grantee: str, privilege: str) -> bool:
    """Delete the grant; False if there was none."""
    _check_grant(ex, who, project, grantee, privilege)
    rows = ex.execute("DELETE FROM sqlml.grants WHERE project = $1 AND grantee = $2::name AND privilege = $3 "
                      "RETURNING 1",
                      [project, grantee, privilege])
    return bool(rows)


def _check_grant(ex, who, project, grantee, privilege) -> None:
    check_privilege(privilege)
    if grantee is None or not str(grantee).strip():
        raise SqlmlError("role is empty", hint="name a role, or 'public' for every sqlml_user",
                         sqlstate=INVALID_PARAMETER)
    require(ex, who, project, "own", lock=True)
    if not role_exists(ex, grantee):
        raise SqlmlError(f'role "{grantee}" does not exist', hint="create it first (CREATE ROLE), or use 'public'",
                         sqlstate=UNDEFINED_OBJECT)
