-- The sqlml tour on the embedded dev cluster (`make demo` runs this with psql).
SELECT sqlml.version();
SELECT jsonb_pretty(sqlml.doctor() -> 'python') AS server_python;
