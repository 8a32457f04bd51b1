"""The benchmark's peak-memory figures: measured with and without oneDNN, and left out with a note,
not NaN, where TensorFlow's allocator keeps no statistics."""

import json
import subprocess
import sys

import pytest

from conftest import subprocess_env

# One small case in a fresh process, without TF_CPU_ALLOCATOR_USE_BFC in the environment: the bench
# must turn the allocator statistics on by itself. With "op first" TensorFlow runs an op before the
# bench is imported, as in a user's session that has already used TensorFlow.
MEASURE = """
import json, sys
if sys.argv[1] == "op first":
    import tensorflow as tf
    tf.constant(1.0) + 1.0
from fusedbnn import bench
rows = bench.measure("small", bench.linear_case(8, 256, 256), pairs=1)
print(json.dumps({"rows": rows, "table": bench.format_table(rows)}))
"""


def run_bench(onednn, order):
    env = subprocess_env(TF_ENABLE_ONEDNN_OPTS=onednn)
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, order], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn", "no-onednn"])
def test_bench_measures_peak_memory_with_and_without_onednn(onednn):
    row = next(r for r in run_bench(onednn, "bench first")["rows"] if r["pass"] == "forward+backward")
    weight_mb = 256 * 256 * 4 / 2**20
    # Every side's training step holds at least two weight-sized gradients (or W and its noise).
    for side in ("fused", "reference", "deterministic"):
        assert row[f"peak_mb_{side}"] >= (1 if side == "deterministic" else 2) * weight_mb, row


@pytest.mark.slow
def test_bench_without_allocator_statistics_leaves_peak_memory_out():
    out = run_bench("0", "op first")
    assert not any(key.startswith("peak_mb") for row in out["rows"] for key in row)
    assert "not measured" in out["table"] and "nan" not in out["table"]


@pytest.mark.parametrize(
    "isa,onednn,onednn_isa,machine_class",
    [
        ("avx2", "0", "", "avx2, no oneDNN"),
        ("avx2", "0", "AVX2", "avx2, no oneDNN, oneDNN's sgemm at most AVX2"),
        ("scalar", "1", "", "scalar + oneDNN"),
    ],
)
def test_bench_names_the_machine_class_it_measured(isa, onednn, onednn_isa, machine_class, tmp_path):
    """The JSON of a run names the CPU and the class (instruction set, oneDNN and the instruction set
    oneDNN's sgemm may use) its numbers belong to."""
    env = subprocess_env(FUSEDBNN_ISA=isa, TF_ENABLE_ONEDNN_OPTS=onednn, ONEDNN_MAX_CPU_ISA=onednn_isa)
    out = tmp_path / "run.json"
    code = f"from fusedbnn import bench; bench.main(['--cases', 'kl-analytic', '--pairs', '1', '--json', {str(out)!r}])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    machine = json.loads(out.read_text())["machine"]
    assert machine["isa"] == isa and machine["onednn"] == (onednn == "1")
    assert machine["onednn_max_cpu_isa"] == (onednn_isa or None)
    assert machine["machine_class"] == machine_class
    assert machine["cpu"] and machine["logical_cores"] >= 1
    assert machine["cpu"] in result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pairs", "0"], "--pairs: must be a positive int, got 0"),
        (["--cases", ","], "--cases names no case"),
        (["--cases", "linear-x"], "unknown case"),
        (["--json", "/nonexistent-folder/out.json"], "--json: cannot write"),
        (["--gradient-variance", "--plot", "p.png"], "--json and --plot do not apply"),
        (["--estimator", "flipout", "--cases", "embedding"], "--estimator applies to the linear and conv cases"),
    ],
)
def test_bench_refuses_bad_options_before_measuring(argv, message, capsys):
    from fusedbnn import bench

    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


def test_bench_with_an_estimator_defaults_to_the_cases_that_take_one(monkeypatch):
    from fusedbnn import bench

    measured = []
    monkeypatch.setattr(bench, "measure", lambda name, case, pairs, log: measured.append(name) or [])
    monkeypatch.setattr(bench, "format_table", lambda rows: "")
    bench.main(["--estimator", "flipout", "--pairs", "1"])
    assert measured and all(name.startswith(("linear", "conv")) for name in measured)
    assert set(measured) == {name for name in bench.CASES if name.startswith(("linear", "conv"))}
