"""A jsonb row's text read straight into a model's input row, by native code (pure: no database).

``sqlml.predict(project, jsonb)`` gets the row as jsonb's text output, which is canonical: ``{"k": v,
"k2": v2}``, keys and values separated by ``": "`` and pairs by ``", "``, strings escaped only where
they hold ``"``, ``\\`` or a control character, numbers printed by ``numeric_out`` (no exponent, no
infinity). The jsonb transform turned every number of the row into a ``Decimal`` (~0.5 us each)
before the model needed one float; reading the text here costs about what the call costs.

``scan(text, context)`` is one generic function, written below in LLVM IR and compiled once per
machine (cached beside the compiled models, loaded by ``sqlml.onnx.native`` without LLVM). The
context (``Layout``) lists the wanted keys in jsonb's own order of keys (the shorter first, then by
bytes), per key its kind and its slot. It walks the pairs, whose keys come in that same order, so
each key is compared with the next wanted key only (linear in the text, whatever the number of
keys). For a wanted key it writes a number (or a boolean's 1/0, or NaN for null) as float32 into the
model's input row at the slot, or for a category the byte span of its string (``(-1, -1)`` for
null) for the caller to look up. It returns 0 when every wanted key was read, and 1 when the
caller must read the row the general way: a wanted key missing, a wanted string holding an escape,
a value of another kind than the key's, a number beyond float32, a key holding an escape, keys out
of jsonb's order (so a text jsonb did not print: duplicate keys included), or any text it does not
expect. It never decides what the general way would do: it only declines.

In C::

    int64_t scan(const char *s, const Context *ctx)   // s: NUL-terminated
    {
        if (*s++ != '{') return 1;
        if (*s == '}') return !(s[1] == 0 && ctx->count == 0);
        for (next = 0, prev = none;;) {
            key = string at s (1 if not a string, or escaped); s = after it; expect ": "
            if (prev != none && order(prev, key) >= 0) return 1;  prev = key;
            w = none
            if (next < ctx->count) switch (order(key, ctx->wanted[next].key)) {
                case -1: break;                                    // nobody wants it
                case 0: w = &ctx->wanted[next++]; break;
                case 1: return 1;                                  // the row lacks a wanted key
            }
            switch (*s) {            // the value; w's kind decides what is written, or declines (1)
            case '"':  string: CATEGORY writes its span (1 if escaped)
            case 'n':  null: NUMBER/BOOLEAN write NaN, CATEGORY writes (-1, -1)
            case 't', 'f':  NUMBER/BOOLEAN write 1/0
            case '{', '[':  skipped when not wanted
            default:  a number (strtod): NUMBER writes it as float32 (1 if it is beyond float32)
            }
            if (*s == '}') return !(s[1] == 0 && next == ctx->count);
            expect ", "
        }
    }
"""

from __future__ import annotations

import ctypes
import hashlib
import os

import numpy as np

from sqlml.onnx import compiled

VERSION = "1"  # of the IR below: part of the cache key
NUMBER, BOOLEAN, CATEGORY = 0, 1, 2
_SKIP = 3  # a key nobody wants

# Context: i64 count, ptr values (float32), ptr spans (i64, two per category), then per wanted key
# {ptr key, i64 length, i64 kind, i64 slot} (32 bytes). Mutable state lives in allocas: LLVM's -O2
# turns them into registers, and the code reads as the C above.
IR = r"""
declare double @strtod(ptr, ptr)
declare i32 @memcmp(ptr, ptr, i64)
declare float @llvm.fabs.f32(float)

; the position after the string whose opening quote is at %s (null if the text ends first);
; *%esc = 1 when the string holds a backslash
define internal ptr @skip_string(ptr %s, ptr %esc) #0 {
entry:
  %p0 = getelementptr i8, ptr %s, i64 1
  br label %loop
loop:
  %p = phi ptr [ %p0, %entry ], [ %p1, %plain ], [ %p2, %escaped ]
  %c = load i8, ptr %p
  switch i8 %c, label %plain [ i8 34, label %close
                               i8 0, label %fail
                               i8 92, label %escape ]
plain:
  %p1 = getelementptr i8, ptr %p, i64 1
  br label %loop
escape:
  store i8 1, ptr %esc
  %q = getelementptr i8, ptr %p, i64 1
  %d = load i8, ptr %q
  %eot = icmp eq i8 %d, 0
  br i1 %eot, label %fail, label %escaped
escaped:
  %p2 = getelementptr i8, ptr %p, i64 2
  br label %loop
close:
  %r = getelementptr i8, ptr %p, i64 1
  ret ptr %r
fail:
  ret ptr null
}

; whether the %len bytes at %p are those of %word (little-endian), stopping at the first that is not
; (so never past the text's NUL)
define internal i1 @is_word(ptr %p, i64 %word, i64 %len) #0 {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
  %done = icmp eq i64 %i, %len
  br i1 %done, label %yes, label %byte
byte:
  %a = getelementptr i8, ptr %p, i64 %i
  %c = load i8, ptr %a
  %shift = mul i64 %i, 8
  %w = lshr i64 %word, %shift
  %e = trunc i64 %w to i8
  %same = icmp eq i8 %c, %e
  br i1 %same, label %next, label %no
next:
  %i1 = add i64 %i, 1
  br label %loop
yes:
  ret i1 true
no:
  ret i1 false
}

; jsonb's order of keys: the shorter first, then by bytes (-1, 0, 1 for %a before, equal to, after %b)
define internal i32 @order(ptr %a, i64 %alen, ptr %b, i64 %blen) #0 {
entry:
  %shorter = icmp slt i64 %alen, %blen
  br i1 %shorter, label %lt, label %notshorter
notshorter:
  %longer = icmp sgt i64 %alen, %blen
  br i1 %longer, label %gt, label %bytes
bytes:
  %c = call i32 @memcmp(ptr %a, ptr %b, i64 %alen)
  %neg = icmp slt i32 %c, 0
  %pos = icmp sgt i32 %c, 0
  %p = zext i1 %pos to i32
  %r = select i1 %neg, i32 -1, i32 %p
  ret i32 %r
lt:
  ret i32 -1
gt:
  ret i32 1
}

define i64 @scan(ptr %start, ptr %ctx) #0 {
entry:
  %cur = alloca ptr
  %next_wanted = alloca i64
  %prev = alloca ptr
  %prevlen = alloca i64
  %kind = alloca i64
  %slot = alloca i64
  %esc = alloca i8
  %endp = alloca ptr
  %depth = alloca i64
  %n = load i64, ptr %ctx
  %vp = getelementptr i8, ptr %ctx, i64 8
  %values = load ptr, ptr %vp
  %sp = getelementptr i8, ptr %ctx, i64 16
  %spans = load ptr, ptr %sp
  %wanted = getelementptr i8, ptr %ctx, i64 24
  store i64 0, ptr %next_wanted
  store ptr null, ptr %prev
  store i64 0, ptr %prevlen
  %c0 = load i8, ptr %start
  %isobj = icmp eq i8 %c0, 123
  br i1 %isobj, label %open, label %fail
open:
  %s1 = getelementptr i8, ptr %start, i64 1
  store ptr %s1, ptr %cur
  %c1 = load i8, ptr %s1
  %empty = icmp eq i8 %c1, 125
  br i1 %empty, label %close, label %pair

pair:                                       ; at a key's opening quote
  %s = load ptr, ptr %cur
  %ck = load i8, ptr %s
  %isq = icmp eq i8 %ck, 34
  br i1 %isq, label %key, label %fail
key:
  store i8 0, ptr %esc
  %after = call ptr @skip_string(ptr %s, ptr %esc)
  %nokey = icmp eq ptr %after, null
  br i1 %nokey, label %fail, label %colon
colon:
  %c2 = load i8, ptr %after
  %iscolon = icmp eq i8 %c2, 58
  br i1 %iscolon, label %colon2, label %fail
colon2:
  %a1 = getelementptr i8, ptr %after, i64 1
  %c3 = load i8, ptr %a1
  %isspace = icmp eq i8 %c3, 32
  br i1 %isspace, label %lookup, label %fail
lookup:                                     ; jsonb's keys come in order: by length, then bytes
  %v = getelementptr i8, ptr %after, i64 2
  store ptr %v, ptr %cur
  store i64 3, ptr %kind
  store i64 0, ptr %slot
  %k = getelementptr i8, ptr %s, i64 1
  %ai = ptrtoint ptr %after to i64
  %ki = ptrtoint ptr %k to i64
  %kl = sub i64 %ai, %ki
  %klen = sub i64 %kl, 1
  %e0 = load i8, ptr %esc
  %escaped_key = icmp ne i8 %e0, 0
  br i1 %escaped_key, label %fail, label %ordered    ; its escaped bytes are not what jsonb sorted
ordered:                                    ; after the previous key, strictly: else not jsonb's text
  %pk = load ptr, ptr %prev
  %pl = load i64, ptr %prevlen
  %first = icmp eq ptr %pk, null
  br i1 %first, label %remember, label %ordered2
ordered2:
  %po = call i32 @order(ptr %pk, i64 %pl, ptr %k, i64 %klen)
  %rising = icmp slt i32 %po, 0
  br i1 %rising, label %remember, label %fail
remember:
  store ptr %k, ptr %prev
  store i64 %klen, ptr %prevlen
  %h = load i64, ptr %next_wanted
  %left = icmp slt i64 %h, %n
  br i1 %left, label %probe, label %value
probe:                                      ; the next wanted key (the wanted keys are in the same order)
  %off = mul i64 %h, 32
  %entry_ = getelementptr i8, ptr %wanted, i64 %off
  %kp = load ptr, ptr %entry_
  %lenp = getelementptr i8, ptr %entry_, i64 8
  %len = load i64, ptr %lenp
  %wo = call i32 @order(ptr %k, i64 %klen, ptr %kp, i64 %len)
  %before = icmp slt i32 %wo, 0
  br i1 %before, label %value, label %probe2  ; a key nobody wants
probe2:
  %same = icmp eq i32 %wo, 0
  br i1 %same, label %matched, label %fail  ; past the wanted key: the row lacks it
matched:
  %kindp = getelementptr i8, ptr %entry_, i64 16
  %kindv = load i64, ptr %kindp
  store i64 %kindv, ptr %kind
  %slotp = getelementptr i8, ptr %entry_, i64 24
  %slotv = load i64, ptr %slotp
  store i64 %slotv, ptr %slot
  %h1 = add i64 %h, 1
  store i64 %h1, ptr %next_wanted
  br label %value

value:                                      ; at the value of a key whose kind is %kind (3: not wanted)
  %kd = load i64, ptr %kind
  %sl = load i64, ptr %slot
  %vs = load ptr, ptr %cur
  %cv = load i8, ptr %vs
  %valp = getelementptr float, ptr %values, i64 %sl
  %sl2 = mul i64 %sl, 2
  %span0 = getelementptr i64, ptr %spans, i64 %sl2
  %span1 = getelementptr i64, ptr %span0, i64 1
  switch i8 %cv, label %number [ i8 34, label %string
                                 i8 110, label %null
                                 i8 116, label %true
                                 i8 102, label %false
                                 i8 123, label %nested
                                 i8 91, label %nested ]

string:
  store i8 0, ptr %esc
  %send = call ptr @skip_string(ptr %vs, ptr %esc)
  %nostr = icmp eq ptr %send, null
  br i1 %nostr, label %fail, label %string2
string2:
  store ptr %send, ptr %cur
  switch i64 %kd, label %fail [ i64 3, label %next
                                i64 2, label %string_category ]
string_category:
  %e1 = load i8, ptr %esc
  %escaped = icmp ne i8 %e1, 0
  br i1 %escaped, label %fail, label %string_span
string_span:
  %st = ptrtoint ptr %start to i64
  %b0 = ptrtoint ptr %vs to i64
  %b1 = sub i64 %b0, %st
  %b = add i64 %b1, 1
  %e2 = ptrtoint ptr %send to i64
  %e3 = sub i64 %e2, %st
  %e = sub i64 %e3, 1
  store i64 %b, ptr %span0
  store i64 %e, ptr %span1
  br label %next

null:                                       ; "null", little-endian
  %isnull = call i1 @is_word(ptr %vs, i64 1819047278, i64 4)
  br i1 %isnull, label %null2, label %fail
null2:
  %after_null = getelementptr i8, ptr %vs, i64 4
  store ptr %after_null, ptr %cur
  switch i64 %kd, label %next [ i64 0, label %null_value
                                i64 1, label %null_value
                                i64 2, label %null_category ]
null_value:
  store float 0x7FF8000000000000, ptr %valp
  br label %next
null_category:
  store i64 -1, ptr %span0
  store i64 -1, ptr %span1
  br label %next

true:                                       ; "true"
  %istrue = call i1 @is_word(ptr %vs, i64 1702195828, i64 4)
  br i1 %istrue, label %true2, label %fail
true2:
  %after_true = getelementptr i8, ptr %vs, i64 4
  store ptr %after_true, ptr %cur
  switch i64 %kd, label %fail [ i64 3, label %next
                                i64 0, label %true_value
                                i64 1, label %true_value ]
true_value:
  store float 1.0, ptr %valp
  br label %next

false:                                      ; "false"
  %isfalse = call i1 @is_word(ptr %vs, i64 435728179558, i64 5)
  br i1 %isfalse, label %false2, label %fail
false2:
  %after_false = getelementptr i8, ptr %vs, i64 5
  store ptr %after_false, ptr %cur
  switch i64 %kd, label %fail [ i64 3, label %next
                                i64 0, label %false_value
                                i64 1, label %false_value ]
false_value:
  store float 0.0, ptr %valp
  br label %next

nested:                                     ; an object or array: skipped, strings and all
  %unwanted = icmp eq i64 %kd, 3
  br i1 %unwanted, label %nested_start, label %fail
nested_start:
  store i64 0, ptr %depth
  br label %nested_loop
nested_loop:
  %np = load ptr, ptr %cur
  %nc = load i8, ptr %np
  %np1 = getelementptr i8, ptr %np, i64 1
  switch i8 %nc, label %nested_step [ i8 0, label %fail
                                      i8 34, label %nested_string
                                      i8 123, label %nested_in
                                      i8 91, label %nested_in
                                      i8 125, label %nested_out
                                      i8 93, label %nested_out ]
nested_string:
  %nsend = call ptr @skip_string(ptr %np, ptr %esc)
  %nsbad = icmp eq ptr %nsend, null
  br i1 %nsbad, label %fail, label %nested_string2
nested_string2:
  store ptr %nsend, ptr %cur
  br label %nested_loop
nested_in:
  %d0 = load i64, ptr %depth
  %d1 = add i64 %d0, 1
  store i64 %d1, ptr %depth
  br label %nested_step
nested_out:
  %d2 = load i64, ptr %depth
  %d3 = sub i64 %d2, 1
  store i64 %d3, ptr %depth
  %closed = icmp eq i64 %d3, 0
  store ptr %np1, ptr %cur
  br i1 %closed, label %next, label %nested_loop
nested_step:
  store ptr %np1, ptr %cur
  br label %nested_loop

number:                                     ; what numeric_out prints: -?[0-9]...
  %minus = icmp eq i8 %cv, 45
  %ge0 = icmp uge i8 %cv, 48
  %le9 = icmp ule i8 %cv, 57
  %digit = and i1 %ge0, %le9
  %isnum = or i1 %minus, %digit
  br i1 %isnum, label %number2, label %fail
number2:
  switch i64 %kd, label %fail [ i64 3, label %number_skip
                                i64 0, label %number_value ]
number_value:
  %d = call double @strtod(ptr %vs, ptr %endp)
  %ne = load ptr, ptr %endp
  %f = fptrunc double %d to float
  %fa = call float @llvm.fabs.f32(float %f)
  %inf = fcmp oeq float %fa, 0x7FF0000000000000
  %stuck = icmp eq ptr %ne, %vs
  %bad = or i1 %inf, %stuck
  br i1 %bad, label %fail, label %number_store
number_store:
  store float %f, ptr %valp
  store ptr %ne, ptr %cur
  br label %next
number_skip:
  %q = load ptr, ptr %cur
  %qc = load i8, ptr %q
  switch i8 %qc, label %number_skip_step [ i8 44, label %next
                                           i8 125, label %next
                                           i8 0, label %fail ]
number_skip_step:
  %q1 = getelementptr i8, ptr %q, i64 1
  store ptr %q1, ptr %cur
  br label %number_skip

next:                                       ; after a value: ", " and the next key, or the end
  %t = load ptr, ptr %cur
  %tc = load i8, ptr %t
  %isend = icmp eq i8 %tc, 125
  br i1 %isend, label %close, label %comma
comma:
  %iscomma = icmp eq i8 %tc, 44
  br i1 %iscomma, label %comma2, label %fail
comma2:
  %t1 = getelementptr i8, ptr %t, i64 1
  %tc1 = load i8, ptr %t1
  %space = icmp eq i8 %tc1, 32
  %t2 = getelementptr i8, ptr %t, i64 2
  store ptr %t2, ptr %cur
  br i1 %space, label %pair, label %fail
close:                                      ; at '}': the text must end, every wanted key read
  %z = load ptr, ptr %cur
  %z1 = getelementptr i8, ptr %z, i64 1
  %zc = load i8, ptr %z1
  %eot = icmp eq i8 %zc, 0
  %fn = load i64, ptr %next_wanted
  %all = icmp eq i64 %fn, %n
  %ok = and i1 %eot, %all
  %r = select i1 %ok, i64 0, i64 1
  ret i64 %r
fail:
  ret i64 1
}

attributes #0 = { nounwind }
"""

_SCAN = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p)  # keeps the GIL: it is short
_ENTRY = 32  # bytes per wanted key in a context


class Layout:
    """The context of ``scan`` for some wanted keys: ``keys`` [(name, kind, slot)], ``values`` the
    float32 row the numbers go to (a writable buffer), ``categories`` how many spans to hold.

    ``spans`` (int64, two per category slot: start and end byte of the string in the text, -1 for
    null) is read by the caller after a ``scan`` that returned 0."""

    def __init__(self, keys: list, values, categories: int):
        wanted = sorted(((name.encode(), kind, slot) for name, kind, slot in keys),
                        key=lambda k: (len(k[0]), k[0]))  # jsonb's order of keys
        for key, kind, slot in wanted:
            bound = categories if kind == CATEGORY else values.nbytes // 4
            if not 0 <= slot < bound or kind not in (NUMBER, BOOLEAN, CATEGORY):
                raise ValueError(f"key {key!r}: slot {slot} of kind {kind} outside the row or the spans")
        self._keys = [key for key, _, _ in wanted]  # kept alive: the context points at them
        self._values = values
        self.spans = np.zeros(max(2 * categories, 2), dtype=np.int64)
        self._context = np.zeros(3 + 4 * len(wanted), dtype=np.int64)
        self._context[0] = len(wanted)
        self._context[1] = ctypes.addressof(ctypes.c_char.from_buffer(values))
        self._context[2] = self.spans.ctypes.data
        for i, (key, kind, slot) in enumerate(wanted):
            self._context[3 + 4 * i:7 + 4 * i] = (ctypes.cast(key, ctypes.c_void_p).value, len(key), kind, slot)
        self.address = ctypes.c_void_p(self._context.ctypes.data)


class Scanner:
    """The loaded ``scan``: ``scanner(text_bytes, layout.address)`` -> 0 (read) or 1 (read it another way)."""

    def __init__(self, obj: bytes):
        self._code, address, self.loader = compiled.link(obj)
        self.scan = _SCAN(address("scan"))
        if not address("scan") or not _checks_out(self.scan):
            raise RuntimeError("the jsonb scanner does not read its probe rows as it should")


# probe rows: (text, what scan returns, the values it writes, the category it reads: None for null)
# for keys a (number), b (boolean), c (category)
_PROBE_KEYS = [("a", NUMBER, 0), ("b", BOOLEAN, 1), ("c", CATEGORY, 0)]
_PROBES = [
    ('{"a": 1.5, "b": true, "c": "x y"}', 0, [1.5, 1.0], "x y"),
    ('{"a": -0.25, "b": false, "c": null, "d": [1, {"e": "}"}]}', 0, [-0.25, 0.0], None),
    ('{"a": null, "b": null, "c": "", "zz": "q\\"", "zzz": 12}', 0, [float("nan"), float("nan")], ""),
    ('{"a": 340282356000000000000000000000000000000, "b": true, "c": "é"}', 0, [3.4028234663852886e38, 1.0], "é"),
    ('{"a": 1e39, "b": true, "c": "x"}', 1, None, None),  # beyond float32
    ('{"a": 1, "b": true, "c": "x\\"y"}', 1, None, None),  # an escaped category
    ('{"a": "1", "b": true, "c": "x"}', 1, None, None),  # a string for a number
    ('{"a": 1, "b": 1, "c": "x"}', 1, None, None),  # a number for a boolean
    ('{"a": 1, "c": "x"}', 1, None, None),  # a key missing
    ('{"a": 1, "b": true, "c": "x"', 1, None, None),  # cut short
    ('{"a": 1, "b": tru', 1, None, None),
    ('{}', 1, None, None),
    ('{"a": 1, "a": 2, "b": true, "c": "x"}', 1, None, None),  # a duplicate key: not jsonb's text
    ('{"b": true, "a": 1, "c": "x"}', 1, None, None),  # keys out of jsonb's order
    ('{"a": 1, "b": true, "c": "x", "a\\"": 1}', 1, None, None),  # an escaped key
]


def _checks_out(scan) -> bool:
    values = np.zeros(2, dtype=np.float32)
    layout = Layout(_PROBE_KEYS, memoryview(values).cast("B"), 1)
    for text, code, want, category in _PROBES:
        values[:] = 7.0
        layout.spans[:] = 7
        data = text.encode()
        if scan(data, layout.address) != code:
            return False
        start, end = layout.spans[:2].tolist()
        read = None if start == -1 and end == -1 else data[start:end].decode()
        if code == 0 and not (np.array_equal(values, np.float32(want), equal_nan=True) and read == category):
            return False
    return True


_loaded: dict = {}


def scanner(cache_dir: str | None) -> Scanner | None:
    """The scanner of this process: loaded from ``cache_dir`` if compiled there before, else compiled
    (LLVM) and kept there; None where it cannot be (no LLVM, another CPU, a failed check): the
    caller then reads rows the general way."""
    if "scanner" not in _loaded:
        _loaded["scanner"] = _load(cache_dir)
    return _loaded["scanner"]


def _load(cache_dir: str | None) -> Scanner | None:
    key = compiled.cache_key("jsonscan-" + hashlib.sha256(IR.encode()).hexdigest()[:16] + "-" + VERSION)
    directory = compiled.private_directory(cache_dir)
    path = os.path.join(directory, key + ".o") if directory else None
    obj = compiled.read_sealed(path) if path else None
    if obj is not None:
        try:
            return Scanner(obj)
        except Exception:  # noqa: BLE001 - intact but not loadable here: compiled again
            pass
    try:
        obj = compiled.compile_object(IR)
        found = Scanner(obj)
    except Exception:  # noqa: BLE001 - no LLVM, or it failed: the general way reads every row
        return None
    if path:
        compiled.write_sealed(path, obj)
    return found
