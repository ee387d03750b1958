"""What the README and the pages under docs/ show works: every dotted ``hf_longctx.`` name imports, every
``hf-longctx`` command line parses, exactly as written, and the README's Python quick starts run (a README that
names a class that does not exist, or a command line that fails to parse, is what a newcomer meets first)."""

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from hf_longctx_cli import SUBCOMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(page.read_text() for page in PAGES)  # every page the README links to, with it
DOTTED = sorted(set(re.findall(r"\bhf_longctx(?:\.[A-Za-z_]\w*)+", README)))


def _code_block_lines() -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.splitlines()]


def _expand(line: str) -> list[list[str]]:
    """A README command line as the argv lists it stands for: `# comment` dropped, `a | b` two commands,
    `[--x Y]` taken, `[a|b|c]` each alternative, `...` (more of the same) dropped."""
    line = re.sub(r"\s+#.*$", "", line).strip()
    line = re.sub(r"^python -m hf_longctx\b", "hf-longctx", line)
    commands = []
    for i, part in enumerate(line.split(" | ")):
        part = part if part.startswith("hf-longctx") else f"hf-longctx {part}"
        variants = [part]
        while any("[" in v for v in variants):
            expanded = []
            for v in variants:
                match = re.search(r"\[([^\[\]]*)\]", v)
                if match is None:
                    expanded.append(v)
                    continue
                for choice in match.group(1).split("|") if " " not in match.group(1) else [match.group(1)]:
                    expanded.append(v[:match.start()] + choice + v[match.end():])
            variants = expanded
        commands += [[t for t in shlex.split(v)[1:] if t != "..."] for v in variants]
    return commands


COMMANDS = [argv for line in _code_block_lines() if re.match(r"(hf-longctx|python -m hf_longctx) ", line)
            for argv in _expand(line)]
INLINE = [" ".join(span.split()) for span in re.findall(r"`((?:hf-longctx|python -m hf_longctx) [^`]+)`", README)]


def test_the_readme_shows_commands_and_names():
    # The test must see what it checks: a README without them would pass vacuously.
    assert len(PAGES) >= 8, [p.name for p in PAGES]
    assert len(COMMANDS) >= 15 and len(INLINE) >= 5 and "hf_longctx.collator.LongContextCollator" in DOTTED


QUICK_STARTS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_a_quick_start_per_variant():
    from hf_longctx.variants import VARIANTS

    for record in VARIANTS:
        assert any(record.config_class.__name__ in block for block in QUICK_STARTS), record.name


@pytest.mark.parametrize("block", QUICK_STARTS, ids=[f"quick start {i}" for i in range(len(QUICK_STARTS))])
def test_the_readme_quick_starts_run_as_written(block, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # they save folders into the current one
    exec(compile(block, "README.md", "exec"), {})


def test_the_readme_links_to_pages_that_exist():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("name", DOTTED)
def test_every_dotted_name_imports(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            assert hasattr(obj, attribute), f"{name}: {'.'.join(parts[:cut])} has no {attribute}"
            obj = getattr(obj, attribute)
        return
    pytest.fail(f"{name} does not import")


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_every_command_line_parses(argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:  # --version and --help exit 0 once they have printed
        assert exit_.code == 0, f"hf-longctx {' '.join(argv)} does not parse (exit {exit_.code})"


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option for action in sub._actions for option in action.option_strings}


@pytest.mark.parametrize("span", INLINE)
def test_every_command_named_in_the_text_exists_with_its_flags(span):
    """Inline mentions (`hf-longctx train --init-from DST`) are fragments: their command and flags must exist."""
    tokens = shlex.split(re.sub(r"^python -m hf_longctx", "hf-longctx", span))[1:]
    assert tokens and tokens[0] in SUBCOMMANDS, span
    known = _options(tokens[0])
    if tokens[0] == "bench" and len(tokens) > 1 and not tokens[1].startswith("-"):
        known |= _variant_bench_options(tokens[1])  # `hf-longctx bench` passes a variant's own flags on
    unknown = [t for t in tokens[1:] if t.startswith("--") and t not in known]
    assert unknown == [], f"{span}: no such flag {unknown}"


def _variant_bench_options(variant: str) -> set[str]:
    import contextlib
    import importlib
    import io

    from hf_longctx.benchmarks import VARIANT_MODULES

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(f"hf_longctx.benchmarks.{VARIANT_MODULES[variant]}").main(["--help"])
    return set(re.findall(r"--[a-z][a-z-]*", out.getvalue()))
