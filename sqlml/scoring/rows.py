"""One row's text (``t::text``), or a jsonb row, -> scores, through a plan made once per model and row type.

``RowPlan(scorer, names, types)`` knows where each feature sits in the row type (``names``, and
``types`` as type oids, from the catalog). Scoring a row is then:

* the fast way, for models whose features are numbers, booleans and text and whose core is one
  float matrix (``Scorer.row_columns``): a Python function generated for this plan turns the
  fields into the core row, one ``float()`` or one dictionary lookup per column, and hands it to
  ``Scorer.run_row``. No numpy, no jsonb: a few microseconds per row. ``RowPlan.predictor`` goes
  further for ``sqlml.predict``: one generated function from the row's text to the value returned,
  which writes the fields straight into the model's input buffer, runs the model and counts the row.
* the general way, for anything else (dates, vectors, a value the fast way cannot read): each
  field decoded into what ``to_jsonb(row)`` would have given, then the conversion of a jsonb row
  (``sqlml.data.values``). Both ways give the same value and the same error for every input; the
  fast way falls back to the general one rather than raise.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation

import numpy as np

from sqlml.data import record, values
from sqlml.data.schema import BOOLEAN, CATEGORY, NULL_CATEGORY, NUMERIC
from sqlml.errors import INVALID_TEXT_REPRESENTATION, STATEMENT_TOO_COMPLEX, UNDEFINED_COLUMN, SqlmlError
from sqlml.onnx.scorer import Scorer

BOOL = 16
NUMERIC_OID = 1700
NUMBERS = {20, 21, 23, 26, 700, 701, 1700}  # int8, int2, int4, oid, float4, float8, numeric
JSON = {114, 3802}
_INF, _NINF = math.inf, -math.inf


def decode(field: str | None, type_oid: int):
    """A field's text as ``to_jsonb`` + the jsonb transform would give the value."""
    if field is None:
        return None
    if type_oid in NUMBERS:
        try:
            number = Decimal(field)
            if number.is_snan():  # Decimal reads it; PostgreSQL never writes it
                raise InvalidOperation
            return number
        except InvalidOperation:  # not PostgreSQL's text of a number: a row text written by hand
            raise SqlmlError(f"a row field of a number type reads {field[:40]!r}, which is not a number",
                             sqlstate=INVALID_TEXT_REPRESENTATION,
                             hint="pass the row itself: sqlml.predict('project', t) FROM t") from None
    if type_oid == BOOL:
        return field == "t"
    if type_oid in JSON:
        try:
            return json.loads(field)
        except (ValueError, RecursionError):  # a row text written by hand
            raise SqlmlError(f"a row field of a json type reads {field[:40]!r}, which is not json",
                             sqlstate=INVALID_TEXT_REPRESENTATION,
                             hint="pass the row itself: sqlml.predict('project', t) FROM t") from None
    return field


class RowPlan:
    def __init__(self, scorer: Scorer, names: list[str], types: list[int], project: str = "", scanner=None):
        self.scorer, self.schema, self.project = scorer, scorer.schema, project
        self.scanner = scanner  # sqlml.scoring.textscan's, for ``predictor``
        self.types = list(types)
        self.width = len(names)
        position = {name: i for i, name in enumerate(names)}
        missing = [f.name for f in self.schema.features if f.name not in position]
        if missing:
            raise SqlmlError(f'feature column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} '
                             f'missing{" for project " + repr(project) if project else ""}', sqlstate=UNDEFINED_COLUMN,
                             hint=f"the model needs: {', '.join(f.name for f in self.schema.features)}")
        self.position = {f.name: position[f.name] for f in self.schema.features}
        self._exprs = None  # the fast way's field expressions, for ``predictor``
        self.fast, self.fast_text = self._compile()

    def scores(self, text: str) -> np.ndarray:
        """Scores of the row whose text is ``text``: (k,) probabilities or (1,) value."""
        quoted = '"' in text
        if self.fast is not None and not quoted:  # nothing quoted: the commas split it, and "" is NULL
            try:
                row = self.fast_text(text)
            except (ValueError, TypeError):
                row = None  # the general way names the feature and what it expected
            if row is not None and _INF not in row and _NINF not in row:
                try:
                    return self.scorer.run_row(row)
                except OverflowError:  # beyond float32: the general way hands ONNX Runtime its infinity
                    pass
        fields = record.split(text)
        if len(fields) != self.width:
            raise SqlmlError(f"a row of {len(fields)} fields was scored with a plan for {self.width} columns",
                             sqlstate=INVALID_TEXT_REPRESENTATION,
                             hint="pass the row itself: sqlml.predict('project', t) FROM t; if you did, "
                                  "report this with the query")
        if self.fast is not None and quoted:
            try:
                row = self.fast(fields)
            except (ValueError, TypeError):
                row = None
            if row is not None and _INF not in row and _NINF not in row:
                try:
                    return self.scorer.run_row(row)
                except OverflowError:
                    pass
        out = self.scorer.run(self.inputs(fields), 1)
        return out[0] if out.ndim == 2 else out

    def predictor(self, answers, count) -> callable:
        """The function of a row's text (not NULL) to what ``sqlml.predict`` returns (``_predictor``).

        Its fast way splits the text and writes each field's value straight into the model's input
        buffer. A row it cannot take (quoted fields, an infinity, a field that is not what it
        expects, a number beyond float32) goes through ``scores``, which gives the same value or the
        error it always gave. With a ``scanner``, native code reads the fields and looks the
        categories up (``textscan.scan_record``): about half the Python way's time."""
        if self._exprs is None:
            return _predictor(self.scorer, self.scores, answers, count)
        if self.scanner is not None:
            scanned = self._scanned()
            if scanned is not None:
                env, head = scanned
                return _predictor(self.scorer, self.scores, answers, count, env, head,
                                  f"row predictor for {self.project}")
        env, unpack, of_text, numeric = self._exprs
        long_numbers = "".join(f"    if len({v}) > 308:\n        return GENERAL(t)\n" for v in numeric)
        head = (f"    if '\"' in t or 'Infinity' in t:\n        return GENERAL(t)\n"
                f"    f = t[1:-1].split(',')\n    if len(f) != {self.width}:\n        return GENERAL(t)\n"
                f"{unpack}{long_numbers}    try:\n        PACK(BUFFER, 0, {of_text})\n"
                f"    except (ValueError, TypeError, OverflowError):\n        return GENERAL(t)\n")
        return _predictor(self.scorer, self.scores, answers, count, env, head, f"row predictor for {self.project}")

    def _scanned(self):
        """(env, head) of the scanner's fast way (``scanned``), or None."""
        from sqlml.scoring import textscan

        found = scanned(self.scorer)
        if found is None:
            return None
        targets, lookups, categories, copies = found
        fields = {self.position[source]: (kind, slot) for source, kind, slot in targets}
        layout = textscan.RecordLayout(self.width, fields, self.scorer.row_entry()[1], categories, lookups)
        return _scan_head(self.scanner.scan_record, layout, copies)

    def inputs(self, fields: list) -> dict:
        """Model inputs (one row) of the fields, the way a jsonb row is converted."""
        from sqlml.data import convert

        row = {f.name: decode(fields[i], self.types[i]) for f, i in
               ((f, self.position[f.name]) for f in self.schema.features)}
        return convert.model_inputs(self.schema, values.from_rows(self.schema, [row], self.project))

    def _compile(self):
        """The fast way's functions, of the fields (``record.split``) and of a row's text with nothing
        quoted (split at its commas, an empty field being NULL): (None, None) when this model or row
        type needs the general way."""
        columns = self.scorer.row_columns
        if columns is None:
            return None, None
        kinds = {f.name: f.kind for f in self.schema.features}
        env, exprs, fields = {"nan": math.nan, "NULL": NULL_CATEGORY}, [], {}
        for j, c in enumerate(columns):
            kind = kinds.get(c.source)  # None: an input derived from a feature (date parts, vector dims)
            if kind is None:
                return None, None
            i = self.position[c.source]
            typ = self.types[i]
            v = fields.setdefault(i, f"f{i}")
            if kind == NUMERIC and typ in NUMBERS and c.lut is None:
                exprs.append(f"nan if {{null{v}}} else float({v})")
            elif kind == BOOLEAN and typ == BOOL and c.lut is None:
                exprs.append(f"nan if {{null{v}}} else (1.0 if {v} == 't' else 0.0)")
            elif kind == CATEGORY and typ != BOOL and typ not in JSON and c.lut is not None:
                env[f"L{j}"], env[f"D{j}"] = c.lut, c.default
                exprs.append(f"L{j}.get(NULL if {{null{v}}} else {v}, D{j})")
            else:
                return None, None
        unpack = "".join(f"    {v} = f[{i}]\n" for i, v in fields.items())
        of_fields = ", ".join(exprs).format(**{f"null{v}": f"{v} is None" for v in fields.values()})
        of_text = ", ".join(exprs).format(**{f"null{v}": f"not {v}" for v in fields.values()})
        # numeric's text has no exponent: only one of 309 characters or more reaches float's infinity
        numeric = [v for i, v in fields.items() if self.types[i] == NUMERIC_OID]
        self._exprs = (env, unpack, of_text, numeric)
        source = f"def row(f):\n{unpack}    return ({of_fields},)\n\n" \
                 f"def row_text(t):\n    f = t[1:-1].split(',')\n    if len(f) != {self.width}:\n" \
                 f"        return None\n{unpack}    return ({of_text},)\n"
        exec(compile(source, f"<sqlml row plan for {self.project}>", "exec"), env)  # noqa: S102 - names are ours
        return env["row"], env["row_text"]


class JsonPlan:
    """A jsonb row -> scores, the fast way where it can.

    ``scores`` takes the dict the jsonb transform gives (``parse``: the same dict from jsonb's text):
    its fast way reads each feature from the dict and converts it with one ``float()`` or one lookup
    (``Scorer.row_columns``), for the values a jsonb row usually holds: numbers (Decimal), booleans,
    strings, NULL. Anything else (a missing key, a number in a string that is not one, an infinity,
    a list) goes the general way (``sqlml.data.values``), which gives the value or the error it
    always gave.

    ``predictor`` takes jsonb's text: with a ``scanner`` (``sqlml.scoring.textscan``), native code
    reads the numbers into the model's input row and finds the categories' strings, and Python only
    looks the categories up; a row the scanner declines is parsed and goes through ``scores``."""

    def __init__(self, scorer: Scorer, project: str = "", scanner=None):
        self.scorer, self.schema, self.project = scorer, scorer.schema, project
        self.scanner = scanner
        self._exprs = None  # the fast way's pieces, for ``predictor``
        self.fast = self._compile()

    def predictor(self, answers, count) -> callable:
        """The function of a jsonb row's text to what ``sqlml.predict`` returns (``_predictor``)."""
        def general(text):
            return self.scores(parse(text))

        if self._exprs is None:
            return _predictor(self.scorer, general, answers, count)
        if self.scanner is not None:
            scanned = self._scanned()
            if scanned is not None:
                env, head = scanned
                return _predictor(self.scorer, general, answers, count, env, head,
                                  f"jsonb predictor for {self.project}")
        env, unpack, exprs = self._exprs
        head = (f"    d = PARSE(t)\n    if type(d) is not dict:\n        return GENERAL(t)\n    try:\n{unpack}"
                f"        PACK(BUFFER, 0, {exprs})\n"
                f"    except (KeyError, ValueError, TypeError, OverflowError):\n        return GENERAL(t)\n")
        return _predictor(self.scorer, general, answers, count, {**env, "PARSE": parse}, head,
                          f"jsonb predictor for {self.project}")

    def _scanned(self):
        """(env, head) of the scanner's fast way (``scanned``), or None."""
        from sqlml.scoring import textscan

        found = scanned(self.scorer)
        if found is None:
            return None
        targets, lookups, categories, copies = found
        layout = textscan.Layout(targets, self.scorer.row_entry()[1], categories, lookups)
        return _scan_head(self.scanner.scan, layout, copies)

    def scores(self, row) -> np.ndarray:
        """(k,) probabilities or (1,) value of ``row`` (a dict, or anything the general way reports)."""
        if self.fast is not None and type(row) is dict:
            try:
                values_ = self.fast(row)
            except (KeyError, ValueError, TypeError):
                values_ = None
            if values_ is not None:  # (an infinity raised TypeError: the general way names it)
                try:
                    return self.scorer.run_row(values_)
                except OverflowError:
                    pass
        from sqlml.data import convert

        out = self.scorer.run(convert.model_inputs(self.schema, values.from_rows(self.schema, [row], self.project)), 1)
        return out[0] if out.ndim == 2 else out

    def _compile(self):
        columns = self.scorer.row_columns
        if columns is None:
            return None
        kinds = {f.name: f.kind for f in self.schema.features}
        env = {"nan": math.nan, "NULL": NULL_CATEGORY, "Decimal": Decimal, "number": _json_number,
               "boolean": _json_boolean}
        exprs, names = [], {}
        for j, c in enumerate(columns):
            kind = kinds.get(c.source)
            if kind is None:
                return None
            v = names.setdefault(c.source, f"v{len(names)}")
            env[f"K{v}"] = c.source
            if kind == NUMERIC and c.lut is None:
                exprs.append(f"number({v})")
            elif kind == BOOLEAN and c.lut is None:
                exprs.append(f"boolean({v})")
            elif kind == CATEGORY and c.lut is not None:
                env[f"L{j}"], env[f"D{j}"] = c.lut, c.default
                exprs.append(f"(L{j}.get(NULL, D{j}) if {v} is None else L{j}.get({v}, D{j}) "
                             f"if type({v}) is str else number(()))")  # other types: the general way
            else:
                return None
        unpack = "".join(f"    {v} = d[K{v}]\n" for v in names.values())
        self._exprs = (env, unpack.replace("    ", "        "), ", ".join(exprs))
        source = f"def row(d):\n{unpack}    return ({', '.join(exprs)},)\n"
        exec(compile(source, f"<sqlml jsonb plan for {self.project}>", "exec"), env)  # noqa: S102 - names are ours
        return env["row"]


def parse(text: str):
    """jsonb's text as the jsonb transform gives it: numbers as Decimal."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except RecursionError:  # (PostgreSQL nests jsonb deeper than Python's parser goes)
        raise SqlmlError("features nest JSON values too deeply to read", sqlstate=STATEMENT_TOO_COMPLEX,
                         hint="pass only the feature columns: sqlml.predict('project', to_jsonb(row) - 'column')") \
            from None


def _json_number(v) -> float:
    """A jsonb number (Decimal), NULL or boolean as ``sqlml.data.values.number`` reads it; TypeError for
    anything else (strings too: the general way says whether they are numbers) and for infinities."""
    t = type(v)
    if t is Decimal or t is int or t is float or t is bool:
        f = float(v)
        if f == _INF or f == _NINF:
            raise TypeError  # the general way says it cannot score infinite values
        return f
    if v is None:
        return math.nan
    raise TypeError


def _json_boolean(v) -> float:
    if v is True:
        return 1.0
    if v is False:
        return 0.0
    if v is None:
        return math.nan
    raise TypeError


def scanned(scorer: Scorer):
    """What a native scanner (``sqlml.scoring.textscan``) needs to read rows into ``scorer``'s core
    row: (targets [(feature, kind, slot)], lookups [textscan.Lookup], categories, copies), or None
    when a category cannot be looked up by its UTF-8 bytes. Numbers and booleans land in the core
    row at their column, categories' codes by their lookups; a number or boolean read by several
    core columns is copied to the others by ``copies`` (generated lines)."""
    from sqlml.scoring import textscan

    kinds = {f.name: f.kind for f in scorer.schema.features}
    targets, lookups, first, categories, copies = [], [], {}, {}, []
    for j, c in enumerate(scorer.row_columns):
        kind = kinds[c.source]
        if kind == CATEGORY:
            if not all(type(k) is str for k in c.lut):
                return None
            if c.source not in categories:
                categories[c.source] = len(categories)
                targets.append((c.source, textscan.CATEGORY, categories[c.source]))
            lookups.append(textscan.Lookup(categories[c.source], j, c.lut, c.default,
                                           c.lut.get(NULL_CATEGORY, c.default)))
        elif c.source in first:
            copies.append(f"    V[{j}] = V[{first[c.source]}]\n")
        else:
            first[c.source] = j
            targets.append((c.source, textscan.NUMBER if kind == NUMERIC else textscan.BOOLEAN, j))
    return targets, lookups, len(categories), copies


def _scan_head(scan, layout, copies):
    """(env, head) for ``_predictor``: the row's text scanned into the core row, then ``copies``."""
    env = {"SCAN": scan, "V": layout.values.cast("f"), "CTX": layout.address, "LAYOUT": layout}
    return env, "    if SCAN(t.encode(), CTX):\n        return GENERAL(t)\n" + "".join(copies)


def _predictor(scorer: Scorer, scores, answers, count, env=None, head=None, name=""):
    """A function of one row (``t``) to what ``sqlml.predict`` returns, counting each row scored.

    ``answers``: None for a regression (the value), else what to return for each class (the numeric
    label, or the class index); ``count``: a (view, index) slot (``sqlml.server.counters``);
    ``scores``: the plan's function of a row to its scores (the general way, which raises for a bad
    row). With ``head`` (generated source that ends with the row's values packed into ``BUFFER``,
    or returns ``GENERAL(t)``), the function is generated: the model runs on its input buffer
    (``Scorer.row_entry``) and the answer is read from its output, no numpy and no frame between."""
    view, index = count
    answers = None if answers is None else list(answers)

    def general(t):
        out = scores(t)
        view[index] += 1
        if answers is None:
            return float(out[0])
        s = out.tolist()
        return answers[s.index(max(s))]  # the first of equal maxima, as argmax

    if head is None:
        return general
    pack, buffer, score, out = scorer.row_entry()
    env = {**env, "GENERAL": general, "PACK": pack, "BUFFER": buffer, "SCORE": score, "OUT": out, "COUNT": view}
    if answers is None:
        answer = "OUT[0]"
    elif len(answers) == 2:  # as max() and index() in general(): the second only when strictly greater
        env["A0"], env["A1"] = answers
        answer = "A1 if OUT[1] > OUT[0] else A0"
    else:
        env["ANSWERS"] = answers
        answer = "ANSWERS[s.index(max(s))]"
    tail = f"    SCORE()\n    COUNT[{index}] += 1\n" + ("    s = OUT.tolist()\n" if "s.index" in answer else "") \
        + f"    return {answer}\n"
    exec(compile(f"def value(t):\n{head}{tail}", f"<sqlml {name}>", "exec"), env)  # noqa: S102 - names are ours
    return env["value"]
