"""Fails when AVX or AVX-512 code can run on a CPU that lacks it.

The core library compiles its AVX2 and AVX-512 kernels in files of their own, with their own
instruction-set flags, and picks one set at run time (the scalar kernels, built for x86-64's
baseline, on CPUs without AVX2). An inline function or template that such a file instantiates (a
std:: container's method, a helper from a shared header) is emitted there as a weak symbol,
compiled with that file's flags; when several files emit it, the linker keeps one copy, and every
caller gets it. If it keeps the AVX-512 file's copy, code outside the AVX-512 kernels executes
AVX-512 instructions, and the package stops with an illegal instruction on most CPUs, which no run
on an AVX-512 machine shows (FUSEDBNN_ISA=avx2 included); the same with the AVX2 file's copy on a
CPU without AVX2.

This reads the object files of static archives and lists every global or weak function that holds
an AVX-512 instruction (EVEX-encoded, or an opmask instruction) but whose name does not say
AVX-512, or an AVX instruction (VEX-encoded) but whose name says neither AVX2 nor AVX-512 (the
kernels' own functions and templates instantiated with simd::Avx2 or simd::Avx512 do). Local
functions are only reached from their own file's kernels. Needs binutils (ar, objdump).

    python tools/check_isa_leaks.py build/libfusedbnn_core.a [more archives or .o files]
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Prefixes that may stand before a VEX (0xc4, 0xc5) or EVEX (0x62) prefix, which in 64-bit code are
# never LES, LDS or BOUND: address size and segment overrides.
_PREFIXES = {"67", "26", "2e", "36", "3e", "64", "65"}
_ENCODINGS = {"62": "avx512", "c4": "avx", "c5": "avx"}
# The names that may hold each level's code: the kernels' own, and templates on simd::Avx2 / Avx512.
_ALLOWED = {"avx512": ("avx512",), "avx": ("avx2", "avx512")}
_OPMASK = re.compile(r"^k(mov|and|or|xor|xnor|not|shift|ortest|test|add|unpck)[a-z]*$")
_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t(\S+)")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
# objdump -t: value, 7 flag characters, section, size, name
_SYMBOL = re.compile(r"^[0-9a-f]+ (.{7}) \S+\s+[0-9a-f]+\s+(.*)$")


def isa_of(code_bytes, mnemonic):
    """What one instruction, given its bytes and mnemonic, needs beyond x86-64's baseline: "avx512",
    "avx" or None."""
    if _OPMASK.match(mnemonic):  # VEX-encoded
        return "avx512"
    first = next((byte for byte in code_bytes if byte not in _PREFIXES), None)
    return _ENCODINGS.get(first)


def exported_functions(obj):
    """Demangled names of the global and weak functions defined in an object file."""
    table = subprocess.run(["objdump", "-t", "-C", obj], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in table.splitlines():
        m = _SYMBOL.match(line)
        if m and m.group(1)[6] == "F" and (m.group(1)[0] in "gu!" or m.group(1)[1] == "w"):
            names.add(m.group(2))
    return names


def isa_functions(obj):
    """{(function, isa): instructions} of the exported functions of obj that hold AVX or AVX-512
    instructions."""
    exported = exported_functions(obj)
    listing = subprocess.run(["objdump", "-d", "-C", obj], capture_output=True, text=True, check=True).stdout
    counts, function = {}, None
    for line in listing.splitlines():
        m = _FUNCTION.match(line)
        if m:
            function = m.group(1)
            continue
        m = _INSTRUCTION.match(line)
        isa = m and function in exported and isa_of(m.group(1).split(), m.group(2))
        if isa:
            counts[function, isa] = counts.get((function, isa), 0) + 1
    return counts


def is_kernel(function, isa):
    """Whether a function's name allows it code of that instruction set."""
    return any(tag in function.lower() for tag in _ALLOWED[isa])


def leaks(obj):
    """(function, isa, instructions) of the exported functions of obj that leak: sorted."""
    return [(f, isa, n) for (f, isa), n in sorted(isa_functions(obj).items()) if not is_kernel(f, isa)]


def object_files(path, target):
    """The object files of an archive (extracted into the new folder target), or the path itself."""
    if not path.endswith(".a"):
        return [path]
    target.mkdir()
    subprocess.run(["ar", "x", str(Path(path).resolve())], cwd=target, check=True)
    return sorted(str(p) for p in target.iterdir())


def main(paths):
    found = 0
    with tempfile.TemporaryDirectory() as workdir:
        for index, path in enumerate(paths):
            objects = object_files(path, Path(workdir) / str(index))
            kernels = set()
            for obj in objects:
                for (function, isa), count in sorted(isa_functions(obj).items()):
                    if is_kernel(function, isa):
                        kernels.add(function)
                        continue
                    found += 1
                    print(f"{Path(obj).name}: {function} has {count} {isa} instructions", file=sys.stderr)
            print(
                f"check_isa_leaks: {path}: {len(objects)} object files, {len(kernels)} kernel functions with AVX code"
            )
    if found:
        print(f"check_isa_leaks: {found} functions outside the kernels of their instruction set", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
