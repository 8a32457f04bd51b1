"""tools/check_isa_leaks.py: it finds AVX-512 code that callers outside the AVX-512 kernels can reach.

CI runs the tool on the core library (.ci/run); these tests plant such code in a small object file
to show that the tool finds it, and that it leaves the kernels' own AVX-512 code alone.
"""

import importlib.util
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

# What an AVX-512 kernel file can emit: an inline helper (a weak symbol, which the linker may pick
# for every caller), the kernels' own entry point and template instance, and a file-local helper.
_SOURCE = """
#include <immintrin.h>
#define NOINLINE __attribute__((noinline))
inline NOINLINE void doubled(float* x) { __m512 v = _mm512_loadu_ps(x); _mm512_storeu_ps(x, _mm512_add_ps(v, v)); }
static NOINLINE void tripled(float* x) { _mm512_storeu_ps(x, _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_set1_ps(3))); }
struct Avx512 {};
template <class T> NOINLINE void scaled(float* x) { tripled(x); }
void kernels_avx512(float* x) { doubled(x); scaled<Avx512>(x); }
"""


def compiled(tmp_path, flags):
    source = tmp_path / "kernels.cc"
    source.write_text(_SOURCE)
    obj = tmp_path / "kernels.o"
    result = subprocess.run(["g++", "-O2", "-c", *flags, str(source), "-o", str(obj)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"g++ cannot compile AVX-512 intrinsics here: {result.stderr[:200]}")
    return str(obj)


def test_an_inline_helper_with_avx512_code_is_found(tmp_path):
    obj = compiled(tmp_path, ["-mavx512f"])
    found = check_isa_leaks.leaks(obj)
    assert [name for name, _ in found] == ["doubled(float*)"]
    assert found[0][1] >= 3  # a load, an add and a store at least, all EVEX


def test_an_archive_with_a_leak_fails_and_names_it(tmp_path, capsys):
    obj = compiled(tmp_path, ["-mavx512f"])
    archive = tmp_path / "libkernels.a"
    subprocess.run(["ar", "rcs", str(archive), obj], check=True)
    assert check_isa_leaks.main([str(archive)]) == 1
    assert "doubled(float*)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "mnemonic", "expected"),
    [
        ("62 f1 7c 48 58 c0".split(), "vaddps", True),  # EVEX: vaddps zmm
        ("67 62 f1 7c 48 10 00".split(), "vmovups", True),  # address-size prefix, then EVEX
        ("c5 fc 58 c0".split(), "vaddps", False),  # VEX: vaddps ymm (AVX)
        ("c5 f8 90 c1".split(), "kmovw", True),  # VEX-encoded, but an opmask instruction
        ("48 89 c7".split(), "mov", False),
    ],
)
def test_instruction_classification(code, mnemonic, expected):
    assert check_isa_leaks.is_avx512(code, mnemonic) is expected
