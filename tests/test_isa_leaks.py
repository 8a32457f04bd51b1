"""tools/check_isa_leaks.py: it finds AVX and AVX-512 code that callers outside the kernels of that
instruction set can reach.

CI runs the tool on the core library (.ci/run); these tests plant such code in small object files
to show that the tool finds it, and that it leaves the kernels' own code alone.
"""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

_TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_isa_leaks.py"
_spec = importlib.util.spec_from_file_location("check_isa_leaks", _TOOL)
check_isa_leaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_isa_leaks)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("g++", "objdump", "ar")), reason="needs g++ and binutils"
)

# What a kernel file of one instruction set can emit: an inline helper (a weak symbol, which the
# linker may pick for every caller), the kernels' own entry point and template instance, and a
# file-local helper. VEC, LOAD, ADD, STORE and TAG are the instruction set's.
_SOURCE = """
#include <immintrin.h>
#define NOINLINE __attribute__((noinline))
inline NOINLINE void doubled(float* x) { VEC v = LOAD(x); STORE(x, ADD(v, v)); }
static NOINLINE void tripled(float* x) { VEC v = LOAD(x); STORE(x, ADD(ADD(v, v), v)); }
struct TAG {};
template <class T> NOINLINE void scaled(float* x) { tripled(x); }
void kernels_TAG(float* x) { doubled(x); scaled<TAG>(x); }
"""
_SETS = {
    "avx512": [
        "-mavx512f",
        "-DVEC=__m512",
        "-DLOAD=_mm512_loadu_ps",
        "-DADD=_mm512_add_ps",
        "-DSTORE=_mm512_storeu_ps",
    ],
    "avx2": ["-mavx2", "-DVEC=__m256", "-DLOAD=_mm256_loadu_ps", "-DADD=_mm256_add_ps", "-DSTORE=_mm256_storeu_ps"],
}


def compiled(tmp_path, isa):
    source = tmp_path / "kernels.cc"
    source.write_text(_SOURCE)
    obj = tmp_path / f"kernels_{isa}.o"
    flags = [*_SETS[isa], f"-DTAG={isa.capitalize()}"]
    result = subprocess.run(["g++", "-O2", "-c", *flags, str(source), "-o", str(obj)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"g++ cannot compile {isa} intrinsics here: {result.stderr[:200]}")
    return str(obj)


@pytest.mark.parametrize(("isa", "level"), [("avx512", "avx512"), ("avx2", "avx")])
def test_an_inline_helper_with_vector_code_is_found(tmp_path, isa, level):
    found = check_isa_leaks.leaks(compiled(tmp_path, isa))
    assert {name for name, _, _ in found} == {"doubled(float*)"}
    counts = {found_level: count for _, found_level, count in found}
    assert counts[level] >= 3  # a load, an add and a store at least (AVX-512 code has VEX vzeroupper too)


def test_an_archive_with_a_leak_fails_and_names_it(tmp_path, capsys):
    archive = tmp_path / "libkernels.a"
    subprocess.run(["ar", "rcs", str(archive), compiled(tmp_path, "avx512")], check=True)
    assert check_isa_leaks.main([str(archive)]) == 1
    assert re.search(r"doubled\(float\*\) has \d+ avx512 instructions", capsys.readouterr().err)


@pytest.mark.parametrize(
    ("code", "mnemonic", "expected"),
    [
        ("62 f1 7c 48 58 c0".split(), "vaddps", "avx512"),  # EVEX: vaddps zmm
        ("67 62 f1 7c 48 10 00".split(), "vmovups", "avx512"),  # address-size prefix, then EVEX
        ("c5 fc 58 c0".split(), "vaddps", "avx"),  # VEX: vaddps ymm
        ("c4 e2 7d 18 c0".split(), "vbroadcastss", "avx"),  # three-byte VEX
        ("c5 f8 90 c1".split(), "kmovw", "avx512"),  # VEX-encoded, but an opmask instruction
        ("0f 58 c1".split(), "addps", None),  # SSE: baseline
        ("48 89 c7".split(), "mov", None),
    ],
)
def test_instruction_classification(code, mnemonic, expected):
    assert check_isa_leaks.isa_of(code, mnemonic) == expected
