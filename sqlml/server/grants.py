"""``sqlml.grant`` / ``sqlml.revoke``: project privileges, checked and recorded as the extension owner."""

from __future__ import annotations

from sqlml.registry import access, audit
from sqlml.server import privileged
from sqlml.server.spi import spi


def grant(project, role, privilege):
    _change("grant", project, role, privilege)


def revoke(project, role, privilege):
    _change("revoke", project, role, privilege)


def _change(action, project, role, privilege):
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    role = str(role).lower() if role is not None and str(role).lower() == access.PUBLIC else role

    def run(ex):
        changed = (access.grant if action == "grant" else access.revoke)(ex, caller, project, role, privilege)
        if changed:
            audit.record(ex, caller, action, project, detail={"role": role, "privilege": privilege})
        return changed

    if privileged.run(run):
        return
    if action == "grant":
        spi.notice(f'role "{role}" already has {privilege} on project "{project}"')
    else:
        spi.notice(f'role "{role}" had no {privilege} grant on project "{project}" (ownership and the '
                   f"sqlml_admin role are not grants)")
