"""Regenerate the settings reference in README.md from `target-omnisend --about --format markdown`.

The block between ``<!-- about:start -->`` and ``<!-- about:end -->`` is replaced by the target's
own description of itself; ``tests/test_readme.py`` fails when the two drift apart.

Run: ``.venv/bin/python scripts/update_readme_about.py`` (``--check`` only reports, exit 1 if stale)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- about:start -->"
END = "<!-- about:end -->"


def about_output(output_format: str) -> str:
    """The target's `--about --format <output_format>` output, without surrounding blank lines."""
    executable = Path(sys.executable).parent / "target-omnisend"
    result = subprocess.run(
        [str(executable), "--about", "--format", output_format],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return result.stdout.strip()


def about_markdown() -> str:
    """The target's `--about --format markdown` output, without surrounding blank lines."""
    return about_output("markdown")


def readme_about_block(readme: str) -> str:
    """The text between the about markers (stripped); ValueError when a marker is missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the {START} … {END} markers")
    return readme[start + len(START) : end].strip()


def with_about_block(readme: str, block: str) -> str:
    """`readme` with the text between the markers replaced by `block`."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the {START} … {END} markers")
    return f"{readme[: start + len(START)]}\n\n{block}\n\n{readme[end:]}"


def main() -> int:
    """Rewrite README.md (or, with --check, say whether it is up to date)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    block = about_markdown()
    if readme_about_block(readme) == block:
        print("README.md settings reference is up to date")
        return 0
    if args.check:
        print("README.md settings reference is stale: run scripts/update_readme_about.py")
        return 1
    README.write_text(with_about_block(readme, block), encoding="utf-8")
    print("README.md settings reference regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
