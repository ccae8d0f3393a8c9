"""Object code (an ELF relocatable file from ``sqlml.onnx.compiled``) loaded into executable memory
without LLVM: the few relocations of x86-64 code compiled position-independent, applied here.

A backend that finds a model's code in the cache then needs neither llvmlite (a 180 MB library that
takes a cold backend hundreds of milliseconds to map on a busy machine) nor its JIT: only ctypes,
mmap and mprotect. ``load`` raises ``Unsupported`` for anything it does not know (another machine,
a section or relocation kind it does not handle); the caller then loads the code with llvmlite.

Layout of the one mapping: the allocated sections at their alignment, then for each outside
symbol (``expf``, ``fmaf``... found with dlsym in this process) an 8-byte slot holding its
address (what GOT-relative relocations point at) and a 16-byte jump through it (what calls point
at), so that every PC-relative offset stays within the mapping. It is writable while relocated,
then read-only and executable.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

_PC32, _PLT32, _ABS64, _GOTPCREL, _GOTPCRELX, _REX_GOTPCRELX = 2, 4, 1, 9, 41, 42
_SHT_RELA, _SHT_NOBITS, _SHF_ALLOC = 4, 8, 2
_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1


class Unsupported(Exception):
    """Object code this loader does not handle: load it with llvmlite."""


def supported() -> bool:
    return os.uname().sysname == "Linux" and os.uname().machine == "x86_64"


_libc = None


def _lib():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    return _libc


def _external(name: str) -> int:
    """The address of a function of this process (libm's ``expf``...)."""
    for lib in (None, "libm.so.6"):
        try:
            address = ctypes.cast(getattr(ctypes.CDLL(lib), name), ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
        if address:
            return address
    raise Unsupported(f"no symbol {name}")


class Loaded:
    """The code of an object file in executable memory; ``address(name)`` of its global functions."""

    def __init__(self, obj: bytes):
        if not supported():
            raise Unsupported(os.uname().machine)
        if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1 or struct.unpack_from("<H", obj, 18)[0] != 62:
            raise Unsupported("not an x86-64 ELF64 little-endian object")
        shoff, = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", obj, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
        # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
        placed, at = {}, 0
        for i, s in enumerate(sections):
            if s[2] & _SHF_ALLOC and s[5]:
                align = max(int(s[8]), 1)
                at = (at + align - 1) // align * align
                placed[i] = at
                at += s[5]
        symtab = next((s for s in sections if s[1] == 2), None)
        if symtab is None:
            raise Unsupported("no symbol table")
        strtab = sections[symtab[6]]

        def name_at(offset):
            start = strtab[4] + offset
            return obj[start:obj.index(b"\0", start)].decode()

        symbols = [struct.unpack_from("<IBBHQQ", obj, symtab[4] + k * 24) for k in range(symtab[5] // 24)]
        # (name, info, other, section index, value, size)
        externals = sorted({name_at(sym[0]) for sym in symbols if sym[3] == _SHN_UNDEF and sym[0]})
        at = (at + 15) // 16 * 16
        slots = {name: at + 24 * k for k, name in enumerate(externals)}  # 8-byte address, then a 16-byte jump
        size = max(at + 24 * len(externals), 1)
        self.size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        libc = _lib()
        base = libc.mmap(None, self.size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                         -1, 0)
        if base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.base = base
        try:
            self._fill(obj, sections, placed, symbols, slots, name_at)
            if libc.mprotect(base, self.size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        except BaseException:
            libc.munmap(base, self.size)
            self.base = None
            raise
        self._functions = {name_at(sym[0]): base + placed[sym[3]] + sym[4] for sym in symbols
                           if sym[1] >> 4 == 1 and sym[1] & 0xF == 2 and sym[3] in placed}  # global functions

    def _fill(self, obj, sections, placed, symbols, slots, name_at):
        base = self.base
        buffer = (ctypes.c_char * self.size).from_address(base)
        for i, at in placed.items():
            s = sections[i]
            if s[1] != _SHT_NOBITS:
                buffer[at:at + s[5]] = obj[s[4]:s[4] + s[5]]
        for name, at in slots.items():
            address = _external(name)
            buffer[at:at + 8] = struct.pack("<Q", address)
            buffer[at + 8:at + 14] = b"\xff\x25" + struct.pack("<i", -14)  # jmp *[rip - 14]: the slot above

        def symbol_address(k):
            sym = symbols[k]
            if sym[3] == _SHN_UNDEF:
                return None, base + slots[name_at(sym[0])]
            if sym[3] == _SHN_ABS:
                return sym[4], None
            if sym[3] not in placed:
                raise Unsupported("a symbol in a section that is not loaded")
            return base + placed[sym[3]] + sym[4], None

        for s in sections:
            if s[1] != _SHT_RELA or s[7] not in placed:
                continue  # relocations of sections not loaded (debug info): nothing runs them
            target = base + placed[s[7]]
            for r in range(s[5] // 24):
                offset, info, addend = struct.unpack_from("<QQq", obj, s[4] + r * 24)
                kind, k = info & 0xFFFFFFFF, info >> 32
                where = target + offset
                defined, slot = symbol_address(k)
                if kind in (_PC32, _PLT32):
                    value = (defined if defined is not None else slot + 8) + addend - where
                    fmt = "<i"
                elif kind in (_GOTPCREL, _GOTPCRELX, _REX_GOTPCRELX):
                    if slot is None:
                        raise Unsupported("a GOT reference to a symbol of the object")
                    value, fmt = slot + addend - where, "<i"
                elif kind == _ABS64:
                    value, fmt = (defined if defined is not None else ctypes.c_uint64.from_address(slot).value) \
                        + addend, "<Q"
                else:
                    raise Unsupported(f"relocation type {kind}")
                if fmt == "<i" and not -2**31 <= value < 2**31:
                    raise Unsupported("a relocation out of range")
                struct.pack_into(fmt, buffer, where - base, value)

    def address(self, name: str) -> int:
        return self._functions.get(name, 0)

    def __del__(self):
        if getattr(self, "base", None):
            _lib().munmap(self.base, self.size)
            self.base = None
