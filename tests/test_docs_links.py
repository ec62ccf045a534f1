"""The repository stands alone: its Markdown links resolve inside it (issue 12 E.23).

- No Markdown file (README.md, docs/*.md, any other *.md in the tree) links or refers to a path
  outside the repository (``../`` climbing above the root, absolute paths, the team's
  ``shared/docs`` folder).
- Every relative link in them points to a file or folder that exists.
- No code or documentation text cites the team's internal method spec (``MMLOP`` + ``.md``):
  the method is described in docs/METHOD.md, and references say "docs/METHOD.md section N".

Pure file reading, no network, well under a second.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Not part of the repository's own text: environments, run data, caches, build output.
_SKIP_DIRS = {".git", ".venv", "venv", "var", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache",
              ".ruff_cache", "build", "dist", "eval-out", "shared"}
_TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".txt", ".json", ".rst"}
_TEXT_NAMES = {"Makefile", "Dockerfile"}
# The spec's file name as a word of its own: report files such as "base2novel-mmlop.md" do not count.
_SPEC_NAME = re.compile(r"(?<![\w-])" + "MMLOP" + r"\.md\b", re.I)


def _walk(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            yield Path(dirpath) / name


def _markdown_files() -> list[Path]:
    return sorted(p for p in _walk(ROOT) if p.suffix.lower() == ".md")


def _text_files() -> list[Path]:
    return sorted(p for p in _walk(ROOT)
                  if p.suffix.lower() in _TEXT_SUFFIXES or p.name in _TEXT_NAMES or p.name.startswith("Dockerfile"))


_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
# A path that climbs: one or more "../" followed by a path component ("../x", "../../shared/...").
_CLIMB = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-][\w./-]*)")


def link_targets(text: str) -> list[str]:
    """Targets of inline and reference-style Markdown links, outside code blocks and code spans."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
    return _INLINE_LINK.findall(prose) + _REF_LINK.findall(prose)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("#")


def _inside(path: Path) -> bool:
    try:
        path.resolve().relative_to(ROOT)
        return True
    except ValueError:
        return False


def outside_references(text: str, md_file: Path) -> list[str]:
    """Paths in `text` (links, code spans, prose) that point outside the repository."""
    found = []
    for target in link_targets(text):
        if _is_external(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path.startswith("/") or not _inside(md_file.parent / path):
            found.append(target)
    for climb in _CLIMB.findall(text):  # also in code spans: "`../shared/docs/...`" is a reference too
        if not (_inside(md_file.parent / climb) or _inside(ROOT / climb)):
            found.append(climb)
    if "shared/docs" in text:
        found.append("shared/docs")
    return found


def broken_links(text: str, md_file: Path) -> list[str]:
    """Relative link targets in `text` that name no existing file or folder."""
    broken = []
    for target in link_targets(text):
        if _is_external(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (md_file.parent / path).exists():
            broken.append(target)
    return broken


# ---- the detectors themselves ----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Method: `../shared/docs/MMLOP.md`.",
    "See [the spec](../../shared/docs/spec.md).",
    "See [spec](/work/shared/docs/spec.md).",
    "[spec]: ../../outside.md",
    "plain prose naming ../../../etc/passwd as a path",
])
def test_detector_finds_references_outside_the_repository(text):
    assert outside_references(text, ROOT / "docs" / "X.md")


@pytest.mark.parametrize("text", [
    "Back to the [README](../README.md), on to [METHOD.md](METHOD.md#2-low-rank-prompts).",
    "zip: `../` path, absolute path, symlink",  # names the pattern, refers to no path
    "[site](https://example.org/a/../b) and [top](#top)",
    "```sh\ncurl http://127.0.0.1:8000/\n```",
])
def test_detector_accepts_references_inside_the_repository(text):
    assert outside_references(text, ROOT / "docs" / "X.md") == []


def test_detector_finds_broken_relative_links_but_not_code():
    text = "[a](METHOD.md) [b](NOPE.md#x) `[c](ALSO_NOPE.md)`\n```\n[d](NOPE_TOO.md)\n```\n"
    assert broken_links(text, ROOT / "docs" / "X.md") == ["NOPE.md#x"]


@pytest.mark.parametrize("line, cites", [
    ("(MMLOP.md section 2)", True), ("see ``shared/MMLOP.md``", True), ("mmlop.md", True),
    ("(docs/METHOD.md section 2)", False), ('cat "$OUT/base2novel-mmlop.md"', False),
])
def test_spec_name_pattern(line, cites):
    assert bool(_SPEC_NAME.search(line)) is cites


# ---- the repository ----------------------------------------------------------------------------

def test_method_description_is_in_the_repository():
    method = ROOT / "docs" / "METHOD.md"
    assert method.is_file()
    headings = re.findall(r"^## (\d)\. ", method.read_text(encoding="utf-8"), re.M)
    assert headings == ["1", "2", "3", "4", "5", "6", "7"], "code cites 'docs/METHOD.md section N': keep 1-7"


def test_markdown_files_refer_to_nothing_outside_the_repository():
    files = _markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "METHOD.md" in files
    bad = {str(p.relative_to(ROOT)): refs for p in files
           if (refs := outside_references(p.read_text(encoding="utf-8"), p))}
    assert not bad, f"Markdown refers outside the repository: {bad}"


def test_relative_links_in_markdown_files_exist():
    bad = {str(p.relative_to(ROOT)): refs for p in _markdown_files()
           if (refs := broken_links(p.read_text(encoding="utf-8"), p))}
    assert not bad, f"relative links to missing files: {bad}"


def test_no_text_cites_the_internal_method_spec():
    bad = []
    for path in _text_files():
        if path == Path(__file__).resolve():  # its own patterns and examples
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if _SPEC_NAME.search(line) or "shared/docs" in line:
                bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not bad, "cite docs/METHOD.md instead:\n" + "\n".join(bad)
