"""Copy the shared source files into every variant folder (variant folders must be self-contained remote code).

``src/hf_longctx/shared/<name>.py`` becomes ``models/<variant>/longctx_<name>.py``: ``common.py`` (input checks)
goes into every variant folder, the others (``glue.py``, ``fused_cpu.py``) into the folders whose code imports
them (``from .longctx_<name> import ...``), so that no folder carries code it does not run.

Usage: python tools/sync_common.py          # write the copies
       python tools/sync_common.py --check  # exit 1 when a copy differs, is missing or is not used
"""

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_longctx"
SHARED = PACKAGE / "shared"
ALWAYS = ("common",)


def _header(name: str) -> str:
    return (f"# Generated from src/hf_longctx/shared/{name}.py by tools/sync_common.py: edit that file, "
            "not this copy.\n")


def _variant_folders() -> list[Path]:
    return [f for f in sorted((PACKAGE / "models").iterdir()) if f.is_dir() and (f / "__init__.py").exists()]


def _imports(folder: Path, name: str) -> bool:
    pattern = re.compile(rf"^\s*from \.longctx_{name} import", re.M)
    return any(pattern.search(p.read_text()) for p in folder.glob("*.py") if not p.name.startswith("longctx_"))


def copies() -> dict[Path, str]:
    """Every copy that should exist, with its text."""
    out = {}
    for source in sorted(SHARED.glob("*.py")):
        name = source.stem
        if name == "__init__":
            continue
        text = _header(name) + source.read_text()
        for folder in _variant_folders():
            if name in ALWAYS or _imports(folder, name):
                out[folder / f"longctx_{name}.py"] = text
    return out


def main(argv: list[str]) -> int:
    wanted = copies()
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    unused = [p for f in _variant_folders() for p in f.glob("longctx_*.py") if p not in wanted]
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path} (run python tools/sync_common.py)")
        for path in unused:
            print(f"not imported by its folder, or without a source in shared/: {path}")
        return 1 if stale or unused else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path}")
    for path in unused:
        path.unlink()
        print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
