"""Each variant folder carries a generated copy of src/hf_longctx/shared/common.py; the copies must not drift."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_variant_copies_of_shared_code_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "sync_common.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    copies = list((ROOT / "src" / "hf_longctx" / "models").glob("*/longctx_common.py"))
    assert copies, "no variant carries longctx_common.py"
