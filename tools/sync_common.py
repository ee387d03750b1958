"""Copy the shared source files into every variant folder (variant folders must be self-contained).

Usage: python tools/sync_common.py          # write the copies
       python tools/sync_common.py --check  # exit 1 when a copy differs
"""

import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_longctx"
SOURCE = PACKAGE / "shared" / "common.py"
HEADER = "# Generated from src/hf_longctx/shared/common.py by tools/sync_common.py: edit that file, not this copy.\n"


def copies() -> dict[Path, str]:
    text = HEADER + SOURCE.read_text()
    return {folder / "longctx_common.py": text for folder in sorted((PACKAGE / "models").iterdir()) if folder.is_dir() and (folder / "__init__.py").exists()}


def main(argv: list[str]) -> int:
    stale = [path for path, text in copies().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path} (run python tools/sync_common.py)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(copies()[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
