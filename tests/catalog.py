"""What the extension sqlml put into a database, read from the catalogs as a comparable dict.

``extension_catalog(conn)`` answers the same for two databases exactly when their sqlml objects
are the same: tables and their columns (in order), constraints, indexes, sequences, views,
functions and their properties, comments, every ACL and initial privilege, row-level security,
the extension's members and the tables pg_dump dumps the rows of. Object ids, row data and the
order objects were created in are left out. ``differences(a, b)`` says where two answers differ.
"""

from __future__ import annotations

from tests.conftest import query

# Each query returns (key, value) rows; the key names one object (or one privilege), the value is
# what must be the same. "ext" is the extension's oid and "nsp" its schema's.
QUERIES = {
    "extension": """
        SELECT e.extname, jsonb_build_object('version', e.extversion, 'relocatable', e.extrelocatable,
                                             'schema', e.extnamespace::regnamespace::text)
        FROM pg_extension e WHERE e.oid = %(ext)s""",
    "schema": """
        SELECT n.nspname, jsonb_build_object('owner', n.nspowner::regrole::text)
        FROM pg_namespace n WHERE n.oid = %(nsp)s""",
    "relations": """
        SELECT c.relname, jsonb_build_object(
                   'kind', c.relkind, 'owner', c.relowner::regrole::text, 'persistence', c.relpersistence,
                   'options', c.reloptions, 'row_security', c.relrowsecurity,
                   'force_row_security', c.relforcerowsecurity, 'replica_identity', c.relreplident)
        FROM pg_class c WHERE c.relnamespace = %(nsp)s""",
    "columns": """
        SELECT c.relname || '.' || a.attname, jsonb_build_object(
                   'position', row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                   'type', format_type(a.atttypid, a.atttypmod), 'not_null', a.attnotnull,
                   'default', pg_get_expr(d.adbin, d.adrelid), 'identity', a.attidentity,
                   'generated', a.attgenerated, 'collation', a.attcollation::regcollation::text,
                   'storage', a.attstorage)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
        WHERE c.relnamespace = %(nsp)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT conrelid::regclass::text || ' ' || conname, jsonb_build_object(
                   'type', contype, 'definition', pg_get_constraintdef(oid), 'deferrable', condeferrable,
                   'validated', convalidated)
        FROM pg_constraint WHERE connamespace = %(nsp)s""",
    "indexes": """
        SELECT i.indexrelid::regclass::text, to_jsonb(pg_get_indexdef(i.indexrelid))
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = %(nsp)s""",
    "sequences": """
        SELECT s.seqrelid::regclass::text, jsonb_build_object(
                   'type', s.seqtypid::regtype::text, 'start', s.seqstart, 'increment', s.seqincrement,
                   'max', s.seqmax, 'min', s.seqmin, 'cache', s.seqcache, 'cycle', s.seqcycle,
                   'owned_by', (SELECT d.refobjid::regclass::text || '.' || a.attname
                                FROM pg_depend d JOIN pg_attribute a
                                  ON (a.attrelid, a.attnum) = (d.refobjid, d.refobjsubid)
                                WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = %(nsp)s""",
    "views": """
        SELECT c.relname, jsonb_build_object('definition', pg_get_viewdef(c.oid, true), 'options', c.reloptions)
        FROM pg_class c WHERE c.relnamespace = %(nsp)s AND c.relkind IN ('v', 'm')""",
    "triggers": """
        SELECT t.tgrelid::regclass::text || ' ' || t.tgname, to_jsonb(pg_get_triggerdef(t.oid))
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(nsp)s AND NOT t.tgisinternal""",
    "types": """
        SELECT t.typname, jsonb_build_object('type', t.typtype, 'owner', t.typowner::regrole::text,
               'labels', (SELECT jsonb_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
        FROM pg_type t
        WHERE t.typnamespace = %(nsp)s AND t.typrelid = 0 AND t.typelem = 0""",
    "functions": """
        SELECT p.oid::regprocedure::text, jsonb_build_object(
                   'arguments', pg_get_function_arguments(p.oid), 'result', pg_get_function_result(p.oid),
                   'kind', p.prokind, 'language', l.lanname, 'volatility', p.provolatile,
                   'parallel', p.proparallel, 'strict', p.proisstrict, 'security_definer', p.prosecdef,
                   'leakproof', p.proleakproof, 'returns_set', p.proretset, 'cost', p.procost, 'rows', p.prorows,
                   'config', p.proconfig, 'owner', p.proowner::regrole::text,
                   'transforms', (SELECT jsonb_agg(t::regtype::text) FROM unnest(p.protrftypes) t),
                   'body', p.prosrc)
        FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = %(nsp)s""",
    "comments": """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), to_jsonb(d.description)
        FROM pg_description d
        WHERE EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid
                        AND e.refclassid = 'pg_extension'::regclass AND e.refobjid = %(ext)s AND e.deptype = 'e')""",
    # every privilege, expanded (aclitem arrays may hold the same privileges in another order); an
    # object without an ACL has its owner's defaults, which for a function include EXECUTE by PUBLIC
    "privileges": """
        WITH objects AS (
            SELECT 'schema ' || n.nspname AS object, coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
            FROM pg_namespace n WHERE n.oid = %(nsp)s
            UNION ALL
            SELECT 'relation ' || c.relname,
                   coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
            FROM pg_class c WHERE c.relnamespace = %(nsp)s AND c.relkind NOT IN ('i', 'I', 'c', 't')
            UNION ALL
            SELECT 'function ' || p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner))
            FROM pg_proc p WHERE p.pronamespace = %(nsp)s
        )
        SELECT o.object || ' to ' || CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
               || ': ' || a.privilege_type,
               jsonb_build_object('grantor', a.grantor::regrole::text, 'grantable', a.is_grantable)
        FROM objects o, aclexplode(o.acl) a""",
    # what pg_dump restores for the extension's objects (recorded by CREATE or ALTER EXTENSION)
    "initial_privileges": """
        SELECT pg_describe_object(i.classoid, i.objoid, i.objsubid) || ' to '
               || CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END || ': ' || a.privilege_type,
               jsonb_build_object('grantor', a.grantor::regrole::text, 'grantable', a.is_grantable,
                                  'recorded_by', i.privtype)
        FROM pg_init_privs i, aclexplode(i.initprivs) a
        WHERE (i.objoid = %(nsp)s AND i.classoid = 'pg_namespace'::regclass)
           OR EXISTS (SELECT FROM pg_depend e WHERE e.classid = i.classoid AND e.objid = i.objoid
                        AND e.refclassid = 'pg_extension'::regclass AND e.refobjid = %(ext)s AND e.deptype = 'e')""",
    "policies": """
        SELECT c.relname || ' ' || p.polname, jsonb_build_object(
                   'command', p.polcmd, 'permissive', p.polpermissive,
                   'roles', (SELECT jsonb_agg(CASE r WHEN 0 THEN 'PUBLIC' ELSE r::regrole::text END ORDER BY 1)
                             FROM unnest(p.polroles) r),
                   'using', pg_get_expr(p.polqual, p.polrelid), 'with_check', pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = %(nsp)s""",
    "members": """
        SELECT pg_describe_object(classid, objid, objsubid), to_jsonb(true)
        FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND refobjid = %(ext)s AND deptype = 'e'""",
    # the tables (and sequences) whose rows pg_dump dumps, with their WHERE conditions
    "dumped": """
        SELECT c.config::regclass::text, to_jsonb(c.condition)
        FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS c (config, condition)
        WHERE e.oid = %(ext)s""",
}


def extension_catalog(conn, extension: str = "sqlml", schema: str = "sqlml") -> dict[str, dict[str, object]]:
    """{section: {object: properties}} for everything ``extension`` put into ``schema`` (which its
    script creates: the extension's own namespace is then where it was created from) in the
    database of ``conn``."""
    rows = query(conn, "SELECT e.oid, n.oid FROM pg_extension e, pg_namespace n WHERE e.extname = %s "
                       "AND n.nspname = %s", (extension, schema))
    assert rows, f"extension {extension} or schema {schema} is not in this database"
    ext, nsp = rows[0]
    catalog = {}
    for section, sql in QUERIES.items():
        pairs = query(conn, sql, {"ext": ext, "nsp": nsp})
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"{section}: two objects with one key in {sorted(keys)}"
        catalog[section] = dict(pairs)
    return catalog


def differences(a: dict, b: dict, names=("a", "b")) -> list[str]:
    """Where two ``extension_catalog`` answers differ, one line per object, empty when equal."""
    lines = []
    for section in a.keys() | b.keys():
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(sa.keys() | sb.keys()):
            if key not in sb:
                lines.append(f"{section}: {key} only in {names[0]}: {sa[key]}")
            elif key not in sa:
                lines.append(f"{section}: {key} only in {names[1]}: {sb[key]}")
            elif sa[key] != sb[key]:
                va, vb = sa[key], sb[key]
                if isinstance(va, dict) and isinstance(vb, dict):
                    detail = "; ".join(f"{f}: {va.get(f)!r} in {names[0]}, {vb.get(f)!r} in {names[1]}"
                                       for f in sorted(va.keys() | vb.keys()) if va.get(f) != vb.get(f))
                else:
                    detail = f"{va!r} in {names[0]}, {vb!r} in {names[1]}"
                lines.append(f"{section}: {key}: {detail}")
    return sorted(lines)
