"""Fails when AVX-512 code can run on a CPU without AVX-512.

The core library compiles its AVX2 and AVX-512 kernels in files of their own, with their own
instruction-set flags, and picks one set at run time. An inline function or template that such a
file instantiates (a std:: container's method, a helper from a shared header) is emitted there as
a weak symbol, compiled with that file's flags; when several files emit it, the linker keeps one
copy, and every caller gets it. If it keeps the AVX-512 file's copy, code outside the AVX-512
kernels executes AVX-512 instructions, and the package stops with an illegal instruction on most
CPUs, which no run on an AVX-512 machine shows (FUSEDBNN_ISA=avx2 included).

This reads the object files of static archives and lists every global or weak function that holds
an AVX-512 instruction (EVEX-encoded, or an opmask instruction) but whose name does not say
AVX-512 (the kernels' own functions and templates instantiated with simd::Avx512 do). Local
functions are only reached from their own file's kernels. Needs binutils (ar, objdump).

    python tools/check_isa_leaks.py build/libfusedbnn_core.a [more archives or .o files]
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Prefixes that may stand before an EVEX prefix (0x62, never BOUND in 64-bit code): address size
# and segment overrides.
_PREFIXES = {"67", "26", "2e", "36", "3e", "64", "65"}
_OPMASK = re.compile(r"^k(mov|and|or|xor|xnor|not|shift|ortest|test|add|unpck)[a-z]*$")
_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\t((?:[0-9a-f]{2} )+)\s*\t(\S+)")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
# objdump -t: value, 7 flag characters, section, size, name
_SYMBOL = re.compile(r"^[0-9a-f]+ (.{7}) \S+\s+[0-9a-f]+\s+(.*)$")


def is_avx512(code_bytes, mnemonic):
    """Whether one instruction, given its bytes and mnemonic, needs AVX-512."""
    if _OPMASK.match(mnemonic):  # VEX-encoded
        return True
    first = next((byte for byte in code_bytes if byte not in _PREFIXES), None)
    return first == "62"


def exported_functions(obj):
    """Demangled names of the global and weak functions defined in an object file."""
    table = subprocess.run(["objdump", "-t", "-C", obj], capture_output=True, text=True, check=True).stdout
    names = set()
    for line in table.splitlines():
        m = _SYMBOL.match(line)
        if m and m.group(1)[6] == "F" and (m.group(1)[0] in "gu!" or m.group(1)[1] == "w"):
            names.add(m.group(2))
    return names


def avx512_functions(obj):
    """{function: AVX-512 instructions} of the exported functions of obj that hold any."""
    exported = exported_functions(obj)
    listing = subprocess.run(["objdump", "-d", "-C", obj], capture_output=True, text=True, check=True).stdout
    counts, function = {}, None
    for line in listing.splitlines():
        m = _FUNCTION.match(line)
        if m:
            function = m.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if m and function in exported and is_avx512(m.group(1).split(), m.group(2)):
            counts[function] = counts.get(function, 0) + 1
    return counts


def is_kernel(function):
    """Whether a function's name says AVX-512: the kernels' own, and templates on simd::Avx512."""
    return "avx512" in function.lower()


def leaks(obj):
    """(function, AVX-512 instructions) of the exported functions of obj that leak: sorted."""
    return [(f, n) for f, n in sorted(avx512_functions(obj).items()) if not is_kernel(f)]


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
            kernels = 0
            for obj in objects:
                for function, count in sorted(avx512_functions(obj).items()):
                    if is_kernel(function):
                        kernels += 1
                        continue
                    found += 1
                    print(f"{Path(obj).name}: {function} has {count} AVX-512 instructions", file=sys.stderr)
            print(f"check_isa_leaks: {path}: {len(objects)} object files, {kernels} AVX-512 kernel functions")
    if found:
        print(f"check_isa_leaks: {found} functions outside the AVX-512 kernels hold AVX-512 code", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
