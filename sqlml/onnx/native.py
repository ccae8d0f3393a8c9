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
_SYMBOL = [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")]


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


def _write(memory, offsets, values) -> None:
    """Write ``values`` (one fixed-size little-endian dtype) at byte ``offsets`` of ``memory``."""
    import numpy as np

    width = values.dtype.itemsize
    memory[(offsets[:, None] + np.arange(width)).reshape(-1)] = values.view(np.uint8)


def _external(name: str, given: dict) -> int:
    """The address of ``given[name]``, else of a function or global of this process (libm's ``expf``...)."""
    if name in given:
        return given[name]
    for lib in (None, "libm.so.6"):
        try:
            address = ctypes.cast(getattr(ctypes.CDLL(lib), name), ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
        if address:
            return address
    raise Unsupported(f"no symbol {name}")


class Loaded:
    """The code of an object file in executable memory; ``address(name)`` of its global functions.
    ``given``: addresses of outside symbols the process does not export (a caller's own buffer)."""

    def __init__(self, obj: bytes, given: dict[str, int] | None = None):
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

        import numpy as np

        # one array for the symbol table: a model of a thousand trees has thousands (constants' labels)
        symbols = np.frombuffer(obj, dtype=_SYMBOL, count=symtab[5] // 24, offset=symtab[4])
        undefined = [int(k) for k in np.nonzero((symbols["shndx"] == _SHN_UNDEF) & (symbols["name"] != 0))[0]]
        externals = sorted({name_at(int(symbols["name"][k])) for k in undefined})
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
            self._fill(obj, sections, placed, symbols, undefined, slots, name_at, given or {})
            if libc.mprotect(base, self.size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        except BaseException:
            libc.munmap(base, self.size)
            self.base = None
            raise
        functions = np.nonzero((symbols["info"] >> 4 == 1) & (symbols["info"] & 0xF == 2))[0]  # global functions
        self._functions = {name_at(int(symbols["name"][k])): base + placed[int(symbols["shndx"][k])]
                           + int(symbols["value"][k]) for k in functions if int(symbols["shndx"][k]) in placed}

    def _fill(self, obj, sections, placed, symbols, undefined, slots, name_at, given):
        """Copy the sections and write the relocations, all of one kind at once (numpy: a model of a
        thousand trees has a relocation per constant, ~100k)."""
        import numpy as np

        base = self.base
        buffer = (ctypes.c_char * self.size).from_address(base)
        memory = np.frombuffer(buffer, dtype=np.uint8)
        for i, at in placed.items():
            s = sections[i]
            if s[1] != _SHT_NOBITS:
                ctypes.memmove(base + at, obj[s[4]:s[4] + s[5]], s[5])
        for name, at in slots.items():
            address = _external(name, given)
            buffer[at:at + 8] = struct.pack("<Q", address)
            buffer[at + 8:at + 14] = b"\xff\x25" + struct.pack("<i", -14)  # jmp *[rip - 14]: the slot above
        # per symbol: its address (a call to an outside function goes to its jump), and its slot or -1
        section_at = np.full(max(len(sections), 1), -1, dtype=np.int64)
        for i, at in placed.items():
            section_at[i] = base + at
        shndx = symbols["shndx"].astype(np.int64)
        value = symbols["value"].astype(np.int64)
        address = np.where(shndx == _SHN_ABS, value, section_at[np.minimum(shndx, len(section_at) - 1)] + value)
        # in a section not loaded: an error if a relocation uses it
        unloaded = (shndx != _SHN_UNDEF) & (shndx != _SHN_ABS) & \
            ((shndx >= len(section_at)) | (section_at[np.minimum(shndx, len(section_at) - 1)] < 0))
        address[unloaded] = -1
        slot = np.full(len(symbols), -1, dtype=np.int64)
        itself = address.copy()  # what an absolute relocation writes: an outside function's own address
        for k in undefined:
            name = name_at(int(symbols["name"][k]))
            slot[k] = base + slots[name]
            address[k] = slot[k] + 8
            itself[k] = _external(name, given)
        rela = np.dtype([("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")])
        for s in sections:
            if s[1] != _SHT_RELA or s[7] not in placed:
                continue  # relocations of sections not loaded (debug info): nothing runs them
            r = np.frombuffer(obj, dtype=rela, count=s[5] // 24, offset=s[4])
            kind, k = (r["info"] & 0xFFFFFFFF).astype(np.int64), (r["info"] >> np.uint64(32)).astype(np.int64)
            where = base + placed[s[7]] + r["offset"].astype(np.int64)
            addend = r["addend"]
            known = np.isin(kind, (_PC32, _PLT32, _GOTPCREL, _GOTPCRELX, _REX_GOTPCRELX, _ABS64))
            if not known.all():
                raise Unsupported(f"relocation type {int(kind[~known][0])}")
            if (address[k] < 0).any():
                raise Unsupported("a symbol in a section that is not loaded")
            got = np.isin(kind, (_GOTPCREL, _GOTPCRELX, _REX_GOTPCRELX))
            if (slot[k][got] < 0).any():
                raise Unsupported("a GOT reference to a symbol of the object")
            relative = ~(kind == _ABS64)
            target = np.where(got, slot[k], address[k])
            rel32 = (target + addend - where)[relative]
            if rel32.size and (rel32.min() < -2**31 or rel32.max() >= 2**31):
                raise Unsupported("a relocation out of range")
            _write(memory, where[relative] - base, rel32.astype("<i4"))
            absolute = kind == _ABS64
            if absolute.any():
                _write(memory, where[absolute] - base, (itself[k] + addend)[absolute].astype("<u8"))

    def address(self, name: str) -> int:
        return self._functions.get(name, 0)

    def __del__(self):
        # at interpreter exit the module's globals may already be gone: the process's end unmaps it
        if getattr(self, "base", None) and _lib is not None:
            _lib().munmap(self.base, self.size)
            self.base = None
