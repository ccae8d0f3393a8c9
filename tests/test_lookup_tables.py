"""Category lookups as the hash tables compiled code probes (sqlml.scoring.lookup_tables), without a
database: what ``find`` answers is what the dictionary answers. The compiled reader probing them
is tested against the other reads in test_scoring_speed.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sqlml.scoring import lookup_tables

KEYS = {"north": 0.0, "south": 1.0, "": 2.0, "naïve": 3.0, "a,b": 4.0, "x\ty": 5.0, "__null__": 6.0}
CASES = [  # (text or None for NULL, what it maps to)
    ("north", 0.0), ("south", 1.0), ("", 2.0), ("naïve", 3.0), ("naive", -1.0), ("North", -1.0),
    ("nort", -1.0), ("northh", -1.0), ("__null__", 6.0), (None, 9.0),
]


@pytest.mark.parametrize("text, value", CASES, ids=[repr(t) for t, _ in CASES])
def test_a_text_maps_to_what_the_dictionary_says(text, value):
    table = lookup_tables.build(KEYS, -1.0, 9.0)
    assert lookup_tables.find(table, text) == value


def test_the_hash_is_fnv1a_64():
    assert lookup_tables.fnv1a(b"") == 0xCBF29CE484222325
    assert lookup_tables.fnv1a(b"a") == 0xAF63DC4C8601EC8C  # FNV's published test vector


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 100, 1000])
def test_every_key_is_found_past_collisions_and_the_table_keeps_an_empty_slot(count):
    keys = {f"k{i}" * (i % 3 + 1): float(i) for i in range(count)}
    table = lookup_tables.build(keys, math.nan, -2.0)
    assert len(table.slots) >= max(8, 2 * count) and (table.slots[:, 2] < 0).any()
    assert len(table.slots) & table.mask == 0  # a power of two
    assert all(lookup_tables.find(table, k) == v for k, v in keys.items())
    assert math.isnan(lookup_tables.find(table, "absent"))
    assert lookup_tables.find(table, None) == -2.0


def test_values_are_kept_as_float32():
    table = lookup_tables.build({"a": 0.1}, 0.0, 0.0)
    assert lookup_tables.find(table, "a") == float(np.float32(0.1))
