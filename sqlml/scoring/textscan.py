"""A row's text, or a jsonb row's, read straight into a model's input row by native code (pure: no database).

Two generic functions, written below in LLVM IR, compiled once per machine (cached beside the
compiled models, loaded by ``sqlml.onnx.native`` without LLVM): ``scan`` reads jsonb's text and
``scan_record`` a row's (``record_out``). Each writes numbers and booleans as float32 into the
model's input row and hands categories back as byte spans for the caller to look up; each only
ever declines a row it cannot read exactly as Python would (returns 1), and the caller then reads
it the general way, which gives the same value or error.

**jsonb.** ``sqlml.predict(project, jsonb)`` gets the row as jsonb's text output, which is canonical: ``{"k": v,
"k2": v2}``, keys and values separated by ``": "`` and pairs by ``", "``, strings escaped only where
they hold ``"``, ``\\`` or a control character, numbers printed by ``numeric_out`` (no exponent, no
infinity). The jsonb transform turned every number of the row into a ``Decimal`` (~0.5 us each)
before the model needed one float; reading the text here costs about what the call costs.

The context (``Layout``) lists the wanted keys in jsonb's own order of keys (the shorter first, then by
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

**A row.** ``sqlml.predict(project, row)`` gets ``row::text``: ``(f1,f2,...)``, a NULL field empty,
and a field quoted when it is empty or holds a quote, a backslash, a parenthesis, a comma or a
space. Python split it at its commas and called ``float()`` per number: ~10 us of a 20-column
row's ~17. ``scan_record(text, context)`` walks the fields in order; the context (``RecordLayout``)
gives per field its kind and slot (or none: skipped). It declines any quoted field (a quote or a
backslash anywhere), a field count other than the row type's, a number not of the form
PostgreSQL prints finite numbers in (``-?d+(.d+)?(e[+-]?d+)?``, where strtod and ``float()`` agree:
``NaN`` and ``Infinity`` go the general way), a number beyond float32, and a boolean other than
``t``/``f``.
"""

from __future__ import annotations

import ctypes
import struct
from typing import NamedTuple

import numpy as np

from sqlml.onnx import compiled

VERSION = "2"  # of the IR below: part of the cache key
NUMBER, BOOLEAN, CATEGORY = 0, 1, 2
_SKIP = 3  # a key or a field nobody wants

# Context: i64 count, ptr values (float32), ptr spans (i64, two per category), ptr lookups (``look_up``),
# then per wanted key {ptr key, i64 length, i64 kind, i64 slot} (32 bytes), or per field of a row {i64
# kind, i64 slot}. Mutable state lives in allocas: LLVM's -O2 turns them into registers, and the code
# reads as the C above.
IR = r"""
declare double @strtod(ptr, ptr)
declare i32 @memcmp(ptr, ptr, i64)
declare float @llvm.fabs.f32(float)
@pow10 = internal constant [23 x double] [POW10]

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

; the code of the category whose bytes are the %len at %s in a lookup's table (%size entries of
; {ptr key, i64 length, float code, 4 bytes}, sorted by bytes, a prefix first), else %default
define internal float @find(ptr %table, i64 %size, ptr %s, i64 %len, float %default) #0 {
entry:
  br label %loop
loop:
  %lo = phi i64 [ 0, %entry ], [ %lo, %left ], [ %lo1, %right ]
  %hi = phi i64 [ %size, %entry ], [ %mid, %left ], [ %hi, %right ]
  %open = icmp ult i64 %lo, %hi
  br i1 %open, label %probe, label %missing
probe:
  %sum = add i64 %lo, %hi
  %mid = lshr i64 %sum, 1
  %off = mul i64 %mid, 24
  %e = getelementptr i8, ptr %table, i64 %off
  %kp = load ptr, ptr %e
  %klp = getelementptr i8, ptr %e, i64 8
  %kl = load i64, ptr %klp
  %shorter = icmp ult i64 %len, %kl
  %m = select i1 %shorter, i64 %len, i64 %kl
  %c = call i32 @memcmp(ptr %s, ptr %kp, i64 %m)
  %cz = icmp eq i32 %c, 0
  br i1 %cz, label %bylength, label %bybytes
bylength:
  %same = icmp eq i64 %len, %kl
  br i1 %same, label %found, label %bylength2
bylength2:
  br i1 %shorter, label %left, label %right
bybytes:
  %neg = icmp slt i32 %c, 0
  br i1 %neg, label %left, label %right
left:
  br label %loop
right:
  %lo1 = add i64 %mid, 1
  br label %loop
found:
  %cp = getelementptr i8, ptr %e, i64 16
  %code = load float, ptr %cp
  ret float %code
missing:
  ret float %default
}

; every category read into the model's row: ctx's lookups (at 24) are {i64 count, then per lookup
; {i64 span slot, i64 column, ptr table, i64 size, float default, float null}}; a null span (-1)
; takes the lookup's null code
define internal void @look_up(ptr %start, ptr %ctx) #0 {
entry:
  %vp = getelementptr i8, ptr %ctx, i64 8
  %values = load ptr, ptr %vp
  %sp = getelementptr i8, ptr %ctx, i64 16
  %spans = load ptr, ptr %sp
  %lp = getelementptr i8, ptr %ctx, i64 24
  %lookups = load ptr, ptr %lp
  %count = load i64, ptr %lookups
  %first = getelementptr i8, ptr %lookups, i64 8
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %store ]
  %more = icmp ult i64 %i, %count
  br i1 %more, label %one, label %done
one:
  %off = mul i64 %i, 40
  %l = getelementptr i8, ptr %first, i64 %off
  %span = load i64, ptr %l
  %colp = getelementptr i8, ptr %l, i64 8
  %col = load i64, ptr %colp
  %tp = getelementptr i8, ptr %l, i64 16
  %table = load ptr, ptr %tp
  %szp = getelementptr i8, ptr %l, i64 24
  %size = load i64, ptr %szp
  %dp = getelementptr i8, ptr %l, i64 32
  %default = load float, ptr %dp
  %np = getelementptr i8, ptr %l, i64 36
  %null = load float, ptr %np
  %s2 = mul i64 %span, 2
  %b0p = getelementptr i64, ptr %spans, i64 %s2
  %b0 = load i64, ptr %b0p
  %b1p = getelementptr i64, ptr %b0p, i64 1
  %b1 = load i64, ptr %b1p
  %isnull = icmp slt i64 %b0, 0
  br i1 %isnull, label %store, label %find
find:
  %s = getelementptr i8, ptr %start, i64 %b0
  %len = sub i64 %b1, %b0
  %code = call float @find(ptr %table, i64 %size, ptr %s, i64 %len, float %default)
  br label %store
store:
  %v = phi float [ %null, %one ], [ %code, %find ]
  %vq = getelementptr float, ptr %values, i64 %col
  store float %v, ptr %vq
  %i1 = add i64 %i, 1
  br label %loop
done:
  ret void
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
  %numval = alloca double
  %depth = alloca i64
  %n = load i64, ptr %ctx
  %vp = getelementptr i8, ptr %ctx, i64 8
  %values = load ptr, ptr %vp
  %sp = getelementptr i8, ptr %ctx, i64 16
  %spans = load ptr, ptr %sp
  %wanted = getelementptr i8, ptr %ctx, i64 32
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
number_value:                               ; the number's bytes: digits, '.', 'e', 'E', '+', '-'
  %ne = call ptr @number_end(ptr %vs)
  %readable = call i1 @read_number(ptr %vs, ptr %ne, ptr %numval)
  br i1 %readable, label %number_value2, label %fail
number_value2:
  %d = load double, ptr %numval
  %f = fptrunc double %d to float
  %fa = call float @llvm.fabs.f32(float %f)
  %inf = fcmp oeq float %fa, 0x7FF0000000000000
  br i1 %inf, label %fail, label %number_store
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
  br i1 %ok, label %read, label %fail
read:
  call void @look_up(ptr %start, ptr %ctx)
  ret i64 0
fail:
  ret i64 1
}

; the first position from %p that is not a digit, '.', 'e', 'E', '+' or '-'
define internal ptr @number_end(ptr %p) #0 {
entry:
  br label %loop
loop:
  %q = phi ptr [ %p, %entry ], [ %q1, %more ]
  %c = load i8, ptr %q
  %ge = icmp uge i8 %c, 48
  %le = icmp ule i8 %c, 57
  %d = and i1 %ge, %le
  %dot = icmp eq i8 %c, 46
  %lower = icmp eq i8 %c, 101
  %upper = icmp eq i8 %c, 69
  %plus = icmp eq i8 %c, 43
  %minus = icmp eq i8 %c, 45
  %a = or i1 %d, %dot
  %b = or i1 %lower, %upper
  %s = or i1 %plus, %minus
  %ab = or i1 %a, %b
  %in = or i1 %ab, %s
  br i1 %in, label %more, label %done
more:
  %q1 = getelementptr i8, ptr %q, i64 1
  br label %loop
done:
  ret ptr %q
}

; the first position in [%p, %e) that is not a digit (%e when all are)
define internal ptr @digits(ptr %p, ptr %e) #0 {
entry:
  br label %loop
loop:
  %q = phi ptr [ %p, %entry ], [ %q1, %more ]
  %end = icmp eq ptr %q, %e
  br i1 %end, label %done, label %byte
byte:
  %c = load i8, ptr %q
  %ge = icmp uge i8 %c, 48
  %le = icmp ule i8 %c, 57
  %d = and i1 %ge, %le
  br i1 %d, label %more, label %done
more:
  %q1 = getelementptr i8, ptr %q, i64 1
  br label %loop
done:
  ret ptr %q
}

; whether the bytes [%b, %e) (at least one) are -?d+(.d+)?([eE][+-]?d+)?: a finite number as
; PostgreSQL prints one, which strtod and Python's float() read alike
define internal i1 @is_number(ptr %b, ptr %e) #0 {
entry:
  %c = load i8, ptr %b
  %neg = icmp eq i8 %c, 45
  %b1 = getelementptr i8, ptr %b, i64 1
  %p = select i1 %neg, ptr %b1, ptr %b
  %q = call ptr @digits(ptr %p, ptr %e)
  %noint = icmp eq ptr %q, %p
  br i1 %noint, label %no, label %int
int:
  %atend = icmp eq ptr %q, %e
  br i1 %atend, label %yes, label %dot
dot:
  %cd = load i8, ptr %q
  %isdot = icmp eq i8 %cd, 46
  br i1 %isdot, label %frac, label %exp
frac:
  %f = getelementptr i8, ptr %q, i64 1
  %r = call ptr @digits(ptr %f, ptr %e)
  %nofrac = icmp eq ptr %r, %f
  br i1 %nofrac, label %no, label %frac2
frac2:
  %atend2 = icmp eq ptr %r, %e
  br i1 %atend2, label %yes, label %exp
exp:                                        ; at a byte before %e
  %x = phi ptr [ %q, %dot ], [ %r, %frac2 ]
  %cx = load i8, ptr %x
  %lower = icmp eq i8 %cx, 101
  %upper = icmp eq i8 %cx, 69
  %ise = or i1 %lower, %upper
  br i1 %ise, label %sign, label %no
sign:
  %x1 = getelementptr i8, ptr %x, i64 1
  %atend3 = icmp eq ptr %x1, %e
  br i1 %atend3, label %no, label %sign2
sign2:
  %cs = load i8, ptr %x1
  %plus = icmp eq i8 %cs, 43
  %minus = icmp eq i8 %cs, 45
  %signed = or i1 %plus, %minus
  %x2 = getelementptr i8, ptr %x1, i64 1
  %y = select i1 %signed, ptr %x2, ptr %x1
  %z = call ptr @digits(ptr %y, ptr %e)
  %noexp = icmp eq ptr %z, %y
  br i1 %noexp, label %no, label %expend
expend:
  %atend4 = icmp eq ptr %z, %e
  br i1 %atend4, label %yes, label %no
yes:
  ret i1 true
no:
  ret i1 false
}

; the number [%b, %e) as the nearest double, into %out, when it is -?d+(.d+)?([eE][+-]?d+)? (else
; false). Most such numbers have a significand m <= 2^53 and a decimal exponent within 22 of 0: m
; and 10^|e| are then exact doubles, and one IEEE multiplication or division of them is the nearest
; double (Clinger's fast path), ten times cheaper than strtod, which reads the others
define internal i1 @read_number(ptr %b, ptr %e, ptr %out) #0 {
entry:
  %endp = alloca ptr
  %valid = call i1 @is_number(ptr %b, ptr %e)
  br i1 %valid, label %sign, label %no
sign:
  %c0 = load i8, ptr %b
  %neg = icmp eq i8 %c0, 45
  %b1 = getelementptr i8, ptr %b, i64 1
  %start = select i1 %neg, ptr %b1, ptr %b
  br label %loop
loop:                                       ; the significand's digits ('.' counts those after it)
  %p = phi ptr [ %start, %sign ], [ %p1, %digit ], [ %p1, %dot ]
  %m = phi i64 [ 0, %sign ], [ %m1, %digit ], [ %m, %dot ]
  %frac = phi i64 [ 0, %sign ], [ %frac1, %digit ], [ %frac, %dot ]
  %infrac = phi i1 [ false, %sign ], [ %infrac, %digit ], [ true, %dot ]
  %p1 = getelementptr i8, ptr %p, i64 1
  %atend = icmp eq ptr %p, %e
  br i1 %atend, label %scaled, label %byte
byte:
  %c = load i8, ptr %p
  switch i8 %c, label %digit [ i8 46, label %dot
                               i8 101, label %exponent
                               i8 69, label %exponent ]
dot:
  br label %loop
digit:
  %d8 = sub i8 %c, 48
  %d = zext i8 %d8 to i64
  %m10 = mul i64 %m, 10
  %m1 = add i64 %m10, %d
  %f1 = zext i1 %infrac to i64
  %frac1 = add i64 %frac, %f1
  %big = icmp ugt i64 %m1, 9007199254740992
  br i1 %big, label %slow, label %loop
exponent:                                   ; at 'e': a sign, then digits
  %q0 = getelementptr i8, ptr %p, i64 1
  %cs = load i8, ptr %q0
  %eneg = icmp eq i8 %cs, 45
  %epos = icmp eq i8 %cs, 43
  %signed = or i1 %eneg, %epos
  %q1 = getelementptr i8, ptr %q0, i64 1
  %qs = select i1 %signed, ptr %q1, ptr %q0
  br label %eloop
eloop:
  %q = phi ptr [ %qs, %exponent ], [ %qn, %edigit ]
  %x = phi i64 [ 0, %exponent ], [ %x1, %edigit ]
  %eend = icmp eq ptr %q, %e
  br i1 %eend, label %escaled, label %edigit
edigit:
  %ec = load i8, ptr %q
  %ed8 = sub i8 %ec, 48
  %ed = zext i8 %ed8 to i64
  %x10 = mul i64 %x, 10
  %x1 = add i64 %x10, %ed
  %qn = getelementptr i8, ptr %q, i64 1
  %ebig = icmp ugt i64 %x1, 1000
  br i1 %ebig, label %slow, label %eloop
escaled:
  %xneg = sub i64 0, %x
  %xs = select i1 %eneg, i64 %xneg, i64 %x
  br label %scaled
scaled:
  %exp10 = phi i64 [ 0, %loop ], [ %xs, %escaled ]
  %e10 = sub i64 %exp10, %frac
  %low = icmp slt i64 %e10, -22
  %high = icmp sgt i64 %e10, 22
  %inexact = or i1 %low, %high
  br i1 %inexact, label %slow, label %exact
exact:
  %md = uitofp i64 %m to double
  %negexp = icmp slt i64 %e10, 0
  %me10 = sub i64 0, %e10
  %ae = select i1 %negexp, i64 %me10, i64 %e10
  %pp = getelementptr [23 x double], ptr @pow10, i64 0, i64 %ae
  %pw = load double, ptr %pp
  %mul = fmul double %md, %pw
  %div = fdiv double %md, %pw
  %v = select i1 %negexp, double %div, double %mul
  %nv = fneg double %v
  %r = select i1 %neg, double %nv, double %v
  store double %r, ptr %out
  ret i1 true
slow:                                       ; strtod, which must stop where the number does
  %sd = call double @strtod(ptr %b, ptr %endp)
  %se = load ptr, ptr %endp
  %whole = icmp eq ptr %se, %e
  store double %sd, ptr %out
  ret i1 %whole
no:
  ret i1 false
}

; a row's text: "(" fields separated by "," ")" NUL, an empty field NULL; ctx: i64 width, ptr values
; (float32), ptr spans (i64, two per category), ptr lookups, then per field {i64 kind, i64 slot}
define i64 @scan_record(ptr %start, ptr %ctx) #0 {
entry:
  %cur = alloca ptr
  %idx = alloca i64
  %numval = alloca double
  %n = load i64, ptr %ctx
  %vp = getelementptr i8, ptr %ctx, i64 8
  %values = load ptr, ptr %vp
  %sp = getelementptr i8, ptr %ctx, i64 16
  %spans = load ptr, ptr %sp
  %fields = getelementptr i8, ptr %ctx, i64 32
  store i64 0, ptr %idx
  %c0 = load i8, ptr %start
  %isrow = icmp eq i8 %c0, 40
  br i1 %isrow, label %open, label %fail
open:
  %s1 = getelementptr i8, ptr %start, i64 1
  store ptr %s1, ptr %cur
  br label %field

field:                                      ; at the first byte of field %i
  %i = load i64, ptr %idx
  %left = icmp slt i64 %i, %n
  br i1 %left, label %find_end, label %fail   ; more fields than the row type has
find_end:
  %fs = load ptr, ptr %cur
  br label %end_loop
end_loop:                                   ; an unquoted field ends at "," or ")"
  %p = phi ptr [ %fs, %find_end ], [ %p1, %end_step ]
  %c = load i8, ptr %p
  switch i8 %c, label %end_step [ i8 44, label %got_end
                                  i8 41, label %got_end
                                  i8 34, label %fail
                                  i8 92, label %fail
                                  i8 0, label %fail ]
end_step:
  %p1 = getelementptr i8, ptr %p, i64 1
  br label %end_loop
got_end:                                    ; the field is [%fs, %p), %c its delimiter
  %off = mul i64 %i, 16
  %entry_ = getelementptr i8, ptr %fields, i64 %off
  %kind = load i64, ptr %entry_
  %slotp = getelementptr i8, ptr %entry_, i64 8
  %slot = load i64, ptr %slotp
  %valp = getelementptr float, ptr %values, i64 %slot
  %slot2 = mul i64 %slot, 2
  %span0 = getelementptr i64, ptr %spans, i64 %slot2
  %span1 = getelementptr i64, ptr %span0, i64 1
  %empty = icmp eq ptr %p, %fs
  br i1 %empty, label %null, label %present
null:
  switch i64 %kind, label %next [ i64 0, label %null_value
                                  i64 1, label %null_value
                                  i64 2, label %null_category ]
null_value:
  store float 0x7FF8000000000000, ptr %valp
  br label %next
null_category:
  store i64 -1, ptr %span0
  store i64 -1, ptr %span1
  br label %next
present:
  switch i64 %kind, label %next [ i64 0, label %number
                                  i64 1, label %boolean
                                  i64 2, label %category ]
number:
  %isnum = call i1 @read_number(ptr %fs, ptr %p, ptr %numval)
  br i1 %isnum, label %number2, label %fail
number2:
  %d = load double, ptr %numval
  %f = fptrunc double %d to float
  %fa = call float @llvm.fabs.f32(float %f)
  %inf = fcmp oeq float %fa, 0x7FF0000000000000
  br i1 %inf, label %fail, label %number_store
number_store:
  store float %f, ptr %valp
  br label %next
boolean:                                    ; "t" or "f"
  %pi = ptrtoint ptr %p to i64
  %fi = ptrtoint ptr %fs to i64
  %flen = sub i64 %pi, %fi
  %one = icmp eq i64 %flen, 1
  br i1 %one, label %boolean2, label %fail
boolean2:
  %cb = load i8, ptr %fs
  switch i8 %cb, label %fail [ i8 116, label %true
                               i8 102, label %false ]
true:
  store float 1.0, ptr %valp
  br label %next
false:
  store float 0.0, ptr %valp
  br label %next
category:
  %st = ptrtoint ptr %start to i64
  %fi2 = ptrtoint ptr %fs to i64
  %pi2 = ptrtoint ptr %p to i64
  %b = sub i64 %fi2, %st
  %e = sub i64 %pi2, %st
  store i64 %b, ptr %span0
  store i64 %e, ptr %span1
  br label %next

next:                                       ; at the field's delimiter
  %i1 = add i64 %i, 1
  store i64 %i1, ptr %idx
  %after = getelementptr i8, ptr %p, i64 1
  store ptr %after, ptr %cur
  %isclose = icmp eq i8 %c, 41
  br i1 %isclose, label %close, label %field
close:                                      ; the text must end, every field read
  %zc = load i8, ptr %after
  %eot = icmp eq i8 %zc, 0
  %all = icmp eq i64 %i1, %n
  %ok = and i1 %eot, %all
  br i1 %ok, label %read, label %fail
read:
  call void @look_up(ptr %start, ptr %ctx)
  ret i64 0
fail:
  ret i64 1
}

attributes #0 = { nounwind }
"""

# 10^0 .. 10^22, every one an exact double (5^22 < 2^53), as LLVM's exact hexadecimal doubles
IR = IR.replace("POW10", ", ".join(f"double 0x{struct.unpack('<Q', struct.pack('<d', float(10 ** k)))[0]:016X}"
                                   for k in range(23)))

_SCAN = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p)  # keeps the GIL: it is short


class Lookup(NamedTuple):
    """A category's code written into the model's row after a scan: the string of span ``span``
    looked up in ``codes`` (str -> number), else ``default``; ``null`` when the value is null."""
    span: int
    column: int
    codes: dict
    default: float
    null: float


class _Context:
    """What both contexts start with: (i64 count, ptr values, ptr spans, ptr lookups), then
    ``entries`` (int64s). ``values`` is the float32 row numbers and codes go to (a writable buffer);
    ``spans`` (int64, two per category slot: start and end byte of the string in the text, -1 for
    null) is what the lookups read."""

    def __init__(self, count: int, values, categories: int, targets, lookups: list, entries: list):
        width = values.nbytes // 4
        for name, kind, slot in targets:
            if not 0 <= slot < (categories if kind == CATEGORY else width) or kind not in (NUMBER, BOOLEAN, CATEGORY):
                raise ValueError(f"{name!r}: slot {slot} of kind {kind} outside the row or the spans")
        self.values = values  # kept alive, with the keys and tables below: the context points at them
        self.spans = np.zeros(max(2 * categories, 2), dtype=np.int64)
        self._keys, tables, head = [], [], struct.pack("=q", len(lookups))
        for look in lookups:
            if not (0 <= look.span < categories and 0 <= look.column < width):
                raise ValueError(f"a lookup of span {look.span} into column {look.column} outside the spans or the row")
            keys = sorted((key.encode(), code) for key, code in look.codes.items())
            self._keys += [key for key, _ in keys]
            tables.append(b"".join(struct.pack("=Qqf4x", ctypes.cast(key, ctypes.c_void_p).value, len(key), code)
                                   for key, code in keys) or b"\0")
            head += struct.pack("=qqQqff", look.span, look.column, 0, len(keys), look.default, look.null)
        self._tables = [ctypes.create_string_buffer(t, len(t)) for t in tables]
        self._lookups = ctypes.create_string_buffer(head, len(head))
        for i, table in enumerate(self._tables):  # each lookup's table pointer, now that it has an address
            struct.pack_into("=Q", self._lookups, 8 + 40 * i + 16, ctypes.addressof(table))
        self._context = np.array([count, ctypes.addressof(ctypes.c_char.from_buffer(values)), self.spans.ctypes.data,
                                  ctypes.addressof(self._lookups), *entries], dtype=np.int64)
        self.address = ctypes.c_void_p(self._context.ctypes.data)


class Layout(_Context):
    """The context of ``scan`` for some wanted keys of a jsonb object: ``keys`` [(name, kind, slot)],
    ``values`` the float32 row, ``categories`` how many spans to hold, ``lookups`` [Lookup]."""

    def __init__(self, keys: list, values, categories: int, lookups: list = ()):
        wanted = sorted(((name.encode(), kind, slot) for name, kind, slot in keys),
                        key=lambda k: (len(k[0]), k[0]))  # jsonb's order of keys
        entries = [x for key, kind, slot in wanted
                   for x in (ctypes.cast(key, ctypes.c_void_p).value, len(key), kind, slot)]
        super().__init__(len(wanted), values, categories, wanted, list(lookups), entries)
        self._names = [key for key, _, _ in wanted]  # kept alive: the context points at them


class RecordLayout(_Context):
    """The context of ``scan_record`` for a row type of ``width`` fields: ``fields`` {position:
    (kind, slot)} (the others are skipped), ``values`` the float32 row, ``categories`` how many
    spans to hold, ``lookups`` [Lookup]."""

    def __init__(self, width: int, fields: dict, values, categories: int, lookups: list = ()):
        if not all(0 <= i < width for i in fields):
            raise ValueError(f"a field position outside a row of {width} fields")
        entries = [x for i in range(width) for x in fields.get(i, (_SKIP, 0))]
        super().__init__(width, values, categories, [(i, *fields[i]) for i in fields], list(lookups), entries)


class Scanner:
    """The loaded functions: ``scan(jsonb_text_bytes, layout.address)`` and ``scan_record(row_text_bytes,
    record_layout.address)`` -> 0 (read) or 1 (read it another way)."""

    def __init__(self, obj: bytes):
        self._code, address, self.loader = compiled.link(obj)
        if not address("scan") or not address("scan_record"):
            raise RuntimeError("the text scanners are missing from their object")
        self.scan, self.scan_record = _SCAN(address("scan")), _SCAN(address("scan_record"))
        if not _checks_out(self):
            raise RuntimeError("the text scanners do not read their probe texts as they should")


# probe texts: (text, what the scan returns, the values it writes: a, b and c's code), for jsonb keys or
# row fields a (number), b (boolean), c (category)
_PROBE_KEYS = [("a", NUMBER, 0), ("b", BOOLEAN, 1), ("c", CATEGORY, 0)]
_PROBE_LOOKUPS = [Lookup(0, 2, {"x": 1, "x y": 2, "é": 3, "": 4, "xx": 5, "y": 6}, 9, 8)]
_PROBES = [
    ('{"a": 1.5, "b": true, "c": "x y"}', 0, [1.5, 1.0, 2]),
    ('{"a": -0.25, "b": false, "c": null, "d": [1, {"e": "}"}]}', 0, [-0.25, 0.0, 8]),
    ('{"a": null, "b": null, "c": "", "zz": "q\\"", "zzz": 12}', 0, [float("nan"), float("nan"), 4]),
    ('{"a": 340282356000000000000000000000000000000, "b": true, "c": "é"}', 0, [3.4028234663852886e38, 1.0, 3]),
    ('{"a": 1, "b": true, "c": "x z"}', 0, [1.0, 1.0, 9]),  # a category not in the table
    ('{"a": 1e39, "b": true, "c": "x"}', 1, None),  # beyond float32
    ('{"a": 1, "b": true, "c": "x\\"y"}', 1, None),  # an escaped category
    ('{"a": "1", "b": true, "c": "x"}', 1, None),  # a string for a number
    ('{"a": 1, "b": 1, "c": "x"}', 1, None),  # a number for a boolean
    ('{"a": 1, "c": "x"}', 1, None),  # a key missing
    ('{"a": 1, "b": true, "c": "x"', 1, None),  # cut short
    ('{"a": 1, "b": tru', 1, None),
    ('{}', 1, None),
    ('{"a": 1, "a": 2, "b": true, "c": "x"}', 1, None),  # a duplicate key: not jsonb's text
    ('{"b": true, "a": 1, "c": "x"}', 1, None),  # keys out of jsonb's order
    ('{"a": 1, "b": true, "c": "x", "a\\"": 1}', 1, None),  # an escaped key
]
# rows of (skipped, a, b, c)
_PROBE_FIELDS = {1: (NUMBER, 0), 2: (BOOLEAN, 1), 3: (CATEGORY, 0)}
_PROBE_ROWS = [
    ("(7,1.5,t,x)", 0, [1.5, 1.0, 1]),
    ("(,-2.5e-3,f,)", 0, [-0.0025, 0.0, 8]),
    ("(x,,,é)", 0, [float("nan"), float("nan"), 3]),
    ("(0,3.4028235e+38,t,xx)", 0, [3.4028234663852886e38, 1.0, 5]),
    ("(0,12E7,t,xxx)", 0, [1.2e8, 1.0, 9]),
    ("(0,1e39,t,x)", 1, None),  # beyond float32
    ("(0,NaN,t,x)", 1, None),  # not a finite number's text
    ("(0,-Infinity,t,x)", 1, None),
    ("(0,0x10,t,x)", 1, None),  # strtod would read it, float() would not
    ("(0,1.,t,x)", 1, None),
    ("(0,1e,t,x)", 1, None),
    ("(0,-,t,x)", 1, None),
    ("(0,1,true,x)", 1, None),  # a boolean not printed by boolout
    ('(0,1,t,"x y")', 1, None),  # a quoted field
    ("(0,1,t)", 1, None),  # a field missing
    ("(0,1,t,x,y)", 1, None),  # a field too many
    ("(0,1,t,x", 1, None),  # cut short
    ("(0,1,t,x)y", 1, None),
    ("0,1,t,x", 1, None),
]


def _checks_out(scanner: Scanner) -> bool:
    values = np.zeros(3, dtype=np.float32)
    row = memoryview(values).cast("B")
    for scan, layout, probes in [(scanner.scan, Layout(_PROBE_KEYS, row, 1, _PROBE_LOOKUPS), _PROBES),
                                 (scanner.scan_record, RecordLayout(4, _PROBE_FIELDS, row, 1, _PROBE_LOOKUPS),
                                  _PROBE_ROWS)]:
        for text, code, want in probes:
            values[:] = 7.0
            if scan(text.encode(), layout.address) != code:
                return False
            if code == 0 and not np.array_equal(values, np.float32(want), equal_nan=True):
                return False
    return True


_loaded: dict = {}


def scanner(cache_dir: str | None) -> Scanner | None:
    """The scanners of this process: loaded from ``cache_dir`` if compiled there before, else compiled
    (LLVM) and kept there; None where they cannot be (no LLVM, another CPU, a failed check): the
    caller then reads rows the general way."""
    if "scanner" not in _loaded:
        _loaded["scanner"] = _load(cache_dir)
    return _loaded["scanner"]


def _load(cache_dir: str | None) -> Scanner | None:
    return compiled.cached_code("textscan", IR, cache_dir, Scanner, version=VERSION)
