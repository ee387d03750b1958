"""benchmarks/reformer_efficacy.py --quick: trains the three models a few steps and writes its table, JSON and PNG."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reformer_efficacy.py"


@pytest.mark.slow
def test_the_reformer_efficacy_script_runs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stem = tmp_path / "reformer_efficacy_quick"
    for ext in ("md", "json", "png"):
        assert (stem.with_suffix(f".{ext}")).stat().st_size > 0
    result = json.loads(stem.with_suffix(".json").read_text())
    assert [r["model"] for r in result["runs"]] == ["reformer-4", "reformer-1", "gpt2-sdpa"]
    for run in result["runs"]:
        assert run["params"] > 0 and math.isfinite(run["final_bpb"]) and 0 < run["final_bpb"] < 16
        assert len(run["curve"]) >= 2 and all(math.isfinite(v) for _, v in run["curve"])
        assert len(run["train_bpb"]) == result["setup"]["steps"] and all(map(math.isfinite, run["train_bpb"]))
    table = stem.with_suffix(".md").read_text()
    assert "| 0 | reformer-4 |" in table and "| 0 | gpt2-sdpa |" in table and "nan" not in table.lower()
