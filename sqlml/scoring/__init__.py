"""The scoring core: a row of SQL text -> model inputs -> scores (no plpy here)."""
