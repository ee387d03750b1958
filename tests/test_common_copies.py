"""Each variant folder carries generated copies of the shared code in src/hf_longctx/shared/ (longctx_<name>.py):
the copies must not drift, and a folder carries only the copies it imports."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_variant_copies_of_shared_code_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_common.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    models = ROOT / "src" / "hf_longctx" / "models"
    for name, variants in (("common", 3), ("glue", 3), ("fused_cpu", 2)):
        copies = list(models.glob(f"*/longctx_{name}.py"))
        assert len(copies) == variants, (name, copies)
