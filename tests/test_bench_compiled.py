"""`hf-longctx bench VARIANT --compile`: compiled twins of the training cases, timed beside the eager ones.

The everyday tier runs the harness on a tiny model: one real Inductor compile (about 10-15 s cold on 2 cores, C++
code generation) and one compile made to fail. Whole models under Inductor (minutes, cold) need RUN_INDUCTOR=1."""

import json
import os
import re

import pytest
import torch

from hf_longctx.benchmarks import compiled
from hf_longctx.benchmarks.harness import Case, time_length
from hf_longctx_cli import main


def _step(key):
    def make(models, T):
        model, x = models[key], torch.randn(4, T, generator=torch.Generator().manual_seed(0))

        def step():
            model(x).square().mean().backward()
            model.zero_grad(set_to_none=True)

        return step

    return make


def _cases():
    """Ours and an anchor, eager, on two tiny models (the anchor a little wider, so slower)."""
    return [Case("train: ours", "train", "ours", _step("ours"), "a test", anchor="train: theirs"),
            Case("train: theirs", "train", "theirs", _step("theirs"), "anchor")]


def _models(T):
    torch.manual_seed(0)
    return {"ours": torch.nn.Sequential(torch.nn.Linear(T, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1)).train(),
            "theirs": torch.nn.Sequential(torch.nn.Linear(T, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 1)).train()}


def test_twins_name_their_eager_case_and_compile_the_same_parameters():
    eager = _cases()
    twins = compiled.twins(eager)
    assert [t.name for t in twins] == ["train: ours, compiled", "train: theirs, compiled"]
    assert twins[0].anchor == "train: theirs, compiled" and twins[1].anchor is None
    assert all(t.compiled for t in twins) and not any(c.compiled for c in eager)
    assert compiled.CORRECTNESS in twins[0].correctness
    models = _models(8)
    view = compiled.CompiledModels(models)
    assert view["ours"] is view["ours"] and view["ours"]._orig_mod is models["ours"]  # a wrapper, not a copy
    assert set(view) == {"ours", "theirs"}


def test_a_case_whose_compile_fails_is_reported_as_does_not_compile(monkeypatch, one_thread):
    """Inductor's code generation failing (here made to) is a row "does not compile: <first line>" of the report,
    the eager cases of the same rounds are timed as usual, and the ratios that need the compiled steps are absent."""
    import torch._inductor.compile_fx

    def fail(*args, **kwargs):
        raise RuntimeError("C++ compile error: no matching function\nsecond line, not shown")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", fail)
    T = 8
    eager = _cases()
    twins = compiled.twins(eager)
    times = time_length(T, eager + twins, _models(T), repeats=3, max_step_s=60.0, previous={})
    for name in ("train: ours", "train: theirs"):
        assert len([x for x in times[name]["samples_s"] if x is not None]) == 3 and "compile_s" not in times[name]
    for twin in twins:
        why = times[twin.name]["skipped"]
        assert why.startswith("does not compile: ") and "C++ compile error: no matching function" in why, why
        assert "second line" not in why
    [row] = compiled.summary({str(T): times}, twins)
    assert row["ours_compiled"] == times["train: ours, compiled"]["skipped"] and row["ours_compiled_s"] is None
    assert "ours_speedup" not in row and "compiled_ratio" not in row and row["eager_ratio"] > 0
    table = "\n".join(compiled.markdown([row], "a test shape"))
    assert re.search(r"\| 8 \| train: ours \| \d+ ms \| does not compile: \w+: .*C\+\+ compile error", table), table
    assert "nothing of ours compiled" in table and "| not measured | - |" in table

    def broken(models, T):  # an eager case that fails is a bug of the benchmark: the run stops
        raise ValueError("eager failure")

    with pytest.raises(ValueError, match="eager failure"):
        time_length(T, [Case("broken", "train", "ours", broken, "none")], {}, 1, 60.0, {})


def test_a_compiled_case_is_timed_beside_its_eager_case_with_the_compile_apart(one_thread):
    """A real Inductor compile of a tiny model: the cold compile is reported as compile_s, not in the samples; the
    report has both sides' medians, their compiled/eager speed-ups, and anchor/ours eager and compiled."""
    T = 8
    eager = _cases()
    twins = compiled.twins(eager)
    times = time_length(T, eager + twins, _models(T), repeats=5, max_step_s=60.0, previous={})
    for twin in twins:
        r = times[twin.name]
        assert "skipped" not in r, r
        assert r["compile_s"] > 10 * max(r["samples_s"]), r  # a compile: seconds; a step of this model: ~1 ms
        assert r["compile_calls"] == 2, r  # one graph, compiled at the first call; the second compiles nothing
        assert len(r["samples_s"]) == len(times[twin.name.removesuffix(compiled.SUFFIX)]["samples_s"]) == 5
    [row] = compiled.summary({str(T): times}, twins)
    for key in ("ours_speedup", "anchor_speedup", "eager_ratio", "compiled_ratio"):
        assert row[key] > 0, row
    assert row["ours_compile_s"] == times["train: ours, compiled"]["compile_s"]
    lines = compiled.markdown([row], "a test shape")
    [line] = [x for x in lines if x.startswith("| 8 |")]
    assert re.fullmatch(r"\| 8 \| train: ours( \| \d+ ms){2} \| \d+\.\d\dx \| \d+ s \(2\)( \| \d+ ms){2} \| "
                        r"\d+\.\d\dx \| \d+ s \(2\)( \| \d+\.\d\dx){2} \|", line), line
    verdicts = dict((what, ok) for what, _, ok in compiled.verdicts([row]))
    assert list(verdicts.values()) == [row["ours_speedup"] >= 1, row["compiled_ratio"] >= row["eager_ratio"]]


def test_recompiles_after_the_first_call_count_as_compile_time_not_as_samples(one_thread):
    """A step whose guards fail at every call (a seed drawn per call, as the Reformer's private generator) recompiles
    until Dynamo's recompile_limit and then runs that frame eager: every one of those calls is compile time, and the
    samples start once a call compiles nothing."""
    import torch._dynamo

    def scaled(x, seed):
        return (x * seed).sum()

    def make(models, T):
        fn, x, seeds = torch.compile(scaled, backend="eager", dynamic=False), torch.randn(T), iter(range(1, 10**6))
        return lambda: fn(x, next(seeds))

    times = time_length(4, [Case("seeded, compiled", "train", "ours", make, "a test", compiled=True)], {}, 3, 60.0, {})
    r = times["seeded, compiled"]
    limit = torch._dynamo.config.recompile_limit
    assert r["compile_calls"] == limit + 2, r  # `limit` compiles, one call refused by the limit, one that is quiet
    assert len(r["samples_s"]) == 3 and max(r["samples_s"]) < r["compile_s"] / limit, r


def test_bench_hands_compile_on_to_every_variant(monkeypatch):
    import importlib

    from hf_longctx.benchmarks import VARIANT_MODULES
    from hf_longctx.benchmarks.harness import parser

    for variant, name in VARIANT_MODULES.items():
        seen = {}
        monkeypatch.setattr(importlib.import_module(f"hf_longctx.benchmarks.{name}"), "main",
                            lambda argv, seen=seen: seen.setdefault("argv", argv))
        assert main(["bench", variant, "--compile", "--lengths", "512"]) == 0
        assert seen["argv"] == ["--compile", "--lengths", "512"]
    p = parser("x", "doc", out_name="x", repeats=1, quick="q", lengths="l")
    assert p.parse_args(["--compile"]).compile and not p.parse_args([]).compile


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RUN_INDUCTOR"), reason="Inductor on whole models: RUN_INDUCTOR=1")
def test_bench_longformer_compile_runs_end_to_end(tmp_path, monkeypatch):
    """`hf-longctx bench longformer --compile` on the smallest shape: the training cases of ours and transformers,
    both dropouts, compiled beside eager; the markdown and the json carry the compiled rows."""
    monkeypatch.chdir(tmp_path)
    # The benchmark points Inductor at an empty folder of its own; the session's folder comes back after the test.
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert main(["bench", "longformer", "--compile", "--lengths", "256", "--repeats", "2", "--no-memory",
                 "--skip", "op:", "layer:", "inference", "RoBERTa", "--out", "out/lf"]) == 0
    rows = json.loads((tmp_path / "out" / "lf.json").read_text())["compiled"]
    assert [r["case"] for r in rows] == ["model (train, dropout 0.1): ours", "model (train, dropout 0): ours"]
    for r in rows:
        for side in ("ours", "anchor"):  # a time, or the reason it has none
            assert (r[f"{side}_compiled_s"] or 0) > 0 or r[f"{side}_compiled"].startswith("does not compile: ")
    report = (tmp_path / "out" / "lf.md").read_text()
    assert "## Compiled training steps (`--compile`)" in report and "compile is for capture and serving" in report
    assert report.count("| 256 | model (train, dropout") == 2
