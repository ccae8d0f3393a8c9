-- sqlml 0.1.0: AutoML inside PostgreSQL.
--
-- Every PL/Python function below opens with the same one-line preamble. The first sqlml function a
-- backend calls finds the server's share directory (through the postgres binary, so that parallel
-- workers, which cannot run SPI, can do it too), runs extension/sqlml_boot.py from there, and leaves
-- the package sqlml.server in GD['sqlml']; later calls only look it up. Nothing else lives in SQL:
-- the bodies call sqlml.server, where errors become clean SQL errors.

\echo Use "CREATE EXTENSION sqlml CASCADE" to load this file. \quit

-- schema: created here, not by the control file, so that DROP EXTENSION removes it too

CREATE SCHEMA sqlml;

-- functions: installation

CREATE FUNCTION sqlml.version() RETURNS text
LANGUAGE plpython3u STABLE PARALLEL SAFE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].version()
$$;
COMMENT ON FUNCTION sqlml.version() IS 'Version of the sqlml Python package the server runs';

CREATE FUNCTION sqlml.doctor() RETURNS jsonb
LANGUAGE plpython3u VOLATILE AS $$
if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); f = d.value.decode() + '/extension/sqlml_boot.py'; exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})
return GD['sqlml'].doctor()
$$;
COMMENT ON FUNCTION sqlml.doctor() IS 'The server half of `sqlml doctor`: the Python PL/Python runs and whether each package sqlml needs imports';
