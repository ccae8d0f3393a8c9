"""Data in: relation parsing, columnar ingest, type conversion, profiling."""
