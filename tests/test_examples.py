"""Every script in examples/ runs end to end (with --quick: a few steps on a few examples), as a user would run it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each example script end to end, in its own process

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *argv, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_example_is_covered_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(
        ["classify_kernel_docs.py", "byte_lm_wiki.py", "generate_stream.py", "passkey_qa.py",
         "classify_shakespeare_genre.py"]
    )


def test_classify_kernel_docs(tmp_path):
    out = run_example("classify_kernel_docs.py", "--quick", "--output-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert "test accuracy:" in out and "test macro_f1:" in out
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    # A second run needs --overwrite, like every command that writes a folder.
    again = subprocess.run([sys.executable, str(EXAMPLES / "classify_kernel_docs.py"), "--quick", "--output-dir",
                            str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert again.returncode != 0 and "pass --overwrite" in again.stderr
    run_example("classify_kernel_docs.py", "--quick", "--overwrite", "--output-dir", str(tmp_path / "run"),
                cwd=tmp_path)


def test_classify_shakespeare_genre(tmp_path):
    out = run_example("classify_shakespeare_genre.py", "--quick", "--output-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert "tokens: test accuracy" in out
    assert (tmp_path / "run" / "long" / "model" / "config.json").is_file()


def test_byte_lm_then_generate_stream(tmp_path):
    out = run_example("byte_lm_wiki.py", "--quick", "--output-dir", str(tmp_path / "lm"), cwd=tmp_path)
    assert "test bits per byte:" in out
    out = run_example("generate_stream.py", str(tmp_path / "lm" / "model"), "--max-new-tokens", "150", cwd=tmp_path)
    seen, kept, window, sinks = map(int, re.search(
        r"cache: (\d+) tokens seen, (\d+) kept per layer at most \(window (\d+), (\d+) sink tokens\)", out).groups())
    assert out.startswith("<page>\n    <title>")
    # 17 prompt bytes + up to 150 new ones (fewer if the model samples end-of-text), and the cache never holds more
    # than the window and the sinks (tests/test_longformer_generate.py checks the bound itself on long runs)
    assert 17 < seen <= 17 + 150
    assert kept <= min(seen, window + sinks)


def test_passkey_qa(tmp_path):
    out = run_example("passkey_qa.py", "--quick", "--output-dir", str(tmp_path / "qa"), cwd=tmp_path)
    assert "test exact_span:" in out and "What is the pass key? {'answer':" in out
