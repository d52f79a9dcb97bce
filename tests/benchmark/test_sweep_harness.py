"""benchmark/sweep.py and benchmark/plot_sweep.py on tiny shapes: the plans, the split into parts, one case
of each family measured in-process (Triton's interpreter on CPU), the fused loss's curve points, one whole
invocation (subprocess worker, table, CSV) and the charts from its CSVs."""

import csv
import math

import pytest
import torch


def test_plans_cover_the_issue_shapes(benchmark_module):
    sweep = benchmark_module("sweep")
    norm = sweep.plan("norm", ["rms_norm", "layer_norm"], smoke=False, all_sizes=False)
    assert len(norm) == 2 * 13 * 3
    assert {c.dims["hidden"] for c in norm} >= {1024, 2304, 12288, 16384}
    flce = sweep.plan("flce", ["fused_linear_cross_entropy"], smoke=False, all_sizes=False)
    pairs = {(c.dims["hidden"], c.dims["vocab"]) for c in flce}
    assert {(4096, 128256), (4096, 32000), (3072, 32064), (2304, 256000), (3840, 262208)} <= pairs
    assert all(c.dims["tokens"] == 8192 for c in flce)
    assert len(sweep.plan("flce", ["fused_linear_cross_entropy"], False, all_sizes=True)) > len(flce)
    rope = sweep.plan("rope", ["rope"], smoke=False, all_sizes=False)
    assert {c.dims["seq"] for c in rope} == {2048, 4096, 8192}
    curve = sweep.plan("flce_curve", ["fused_linear_cross_entropy"], smoke=False, all_sizes=False)
    assert {c.label for c in curve} == {"T8192 H4096 V128256", "T8192 H2304 V256000"}


def test_models_are_patched_types(benchmark_module):
    from liger_kernel.transformers.model_specs import MODEL_SPECS

    sweep = benchmark_module("sweep")
    assert {m.model_type for m in sweep.MODELS} <= set(MODEL_SPECS)


def test_parts_split_the_plan(benchmark_module):
    sweep = benchmark_module("sweep")
    cases = sweep.plan("norm", ["rms_norm"], smoke=False, all_sizes=False)
    parts = [sweep.part_of(cases, f"{i}/3") for i in (1, 2, 3)]
    assert [c.label for p in parts for c in p] == [c.label for c in cases]
    for bad in ("0/3", "4/3", "x"):
        with pytest.raises(ValueError, match="--part"):
            sweep.part_of(cases, bad)


@pytest.mark.parametrize("family, arm", [("norm", "eager"), ("rope", "compile"), ("flce", "ours")])
def test_one_case_measures_and_checks(benchmark_module, family, arm):
    sweep = benchmark_module("sweep")
    args = sweep.parse_args(["--family", family, "--smoke", "--cpu-reps", "1"])
    case = sweep.plan(family, list(sweep.FAMILIES[family][:1]), smoke=True, all_sizes=False)[0]
    result = sweep.run_case(case, arm, args, torch.device("cpu"))
    assert result["metrics"]["full_ms"] > 0, result
    if arm == "ours":
        assert result["note"].startswith("check=ok"), result["note"]


def test_curve_points_set_the_chunking(benchmark_module):
    """A budget point uses the rows the rule gives for that budget (within it), an explicit point its own
    rows; both carry the cost model's prediction. (Set up, not measured: run_case is tested above.)"""
    from benchmark.ops import OPS

    sweep = benchmark_module("sweep")
    cases = sweep.plan("flce_curve", ["fused_linear_cross_entropy"], smoke=True, all_sizes=False)
    by_point = {sweep._point_label(c.point): c for c in cases}
    cpu = torch.device("cpu")
    for label, within in (("budget=0.0035MiB", 0.0035 * 2**20), ("rows=8", None)):
        case = by_point[label]
        problem = OPS[case.op].build("liger", case.dims, torch.float32, cpu)
        got = sweep._curve_setup(problem, case, cpu, torch.float32)
        module = problem.keep[0]
        assert got["predicted_ms"] > 0 and got["predicted_peak_mib"] > 0
        if within is None:
            assert got["chunk_rows"] == module.chunk_size == 8
        else:
            assert module.chunk_budget_bytes == int(within)
            assert 1 <= got["chunk_rows"] and got["chunk_rows"] * case.dims["vocab"] * 4 <= within


def test_invocation_writes_csv_and_plots(benchmark_module, tmp_path):
    sweep = benchmark_module("sweep")
    plot_sweep = benchmark_module("plot_sweep")
    assert sweep.main(["--family", "rope", "--smoke", "--arms", "eager", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("sweep_rope_*.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["provider"] for r in rows} == {"eager"} and len({r["shape"] for r in rows}) == 2
    assert all(r["gpu"] and r["torch"] and r["date"] for r in rows)
    assert all(float(r["value"]) > 0 for r in rows if r["metric"] == "full_ms")
    assert plot_sweep.main([str(path)]) == 0
    assert (tmp_path / f"{path.stem}.png").stat().st_size > 0


def test_prewarm_compiles_each_shape_once_per_arm(benchmark_module, tmp_path, capsys):
    """--prewarm: each compiling arm's shapes are shared among its processes (every shape once), the
    eager arm is not prewarmed, and the timed arms still measure every shape."""
    sweep = benchmark_module("sweep")
    args = ["--family", "rope", "--smoke", "--arms", "eager,compile,ours", "--prewarm", "2", "--out"]
    assert sweep.main([*args, str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # compile: 2 processes, ours: 1 (half as many), for 2 shapes each: 4 shape-arms
    assert "prewarm: 3 processes" in out and "prewarm: 4 shape-arms" in out, out
    for arm in ("eager", "compile", "ours"):
        assert (
            sum(line.strip().startswith(f"{arm} ") and "full_ms=" in line for line in out.splitlines()) == 2
        )


def test_curve_plot_from_csv(benchmark_module, tmp_path):
    """The curve chart from a CSV shaped as the sweep writes it (values made up: this checks the chart)."""
    sweep = benchmark_module("sweep")
    plot_sweep = benchmark_module("plot_sweep")
    cases = sweep.plan("flce_curve", ["fused_linear_cross_entropy"], smoke=False, all_sizes=False)
    results = []
    for i, case in enumerate(cases):
        rows = case.point.get("chunk_size", 2048)
        metrics = {"chunk_rows": rows, "graph_ms": 40 + 4096 / rows, "full_ms": 41 + 4096 / rows,
                   "peak_mib": 1000 + rows / 4, "predicted_ms": 39 + 4096 / rows, "predicted_peak_mib": 1000 + rows / 4}  # fmt: skip
        results.append({"index": i, "arm": "ours", "metrics": metrics, "note": ""})
    path = tmp_path / "sweep_flce_curve_x.csv"
    sweep.write_csv(path, "flce_curve", cases, results, "bfloat16")
    assert plot_sweep.main([str(path)]) == 0
    assert (tmp_path / "sweep_flce_curve_x.png").stat().st_size > 0
    assert not math.isnan(
        plot_sweep.table(plot_sweep.load([path])[1])[(cases[1].op, cases[1].label, "rows=256")]["ours"][
            "graph_ms"
        ]
    )
