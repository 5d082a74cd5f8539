"""The README stays a front page (what it is, a picture, the two commands, the five things a
pathologist does, links) and its links work on GitHub, where there is no docs site: every relative
link names a file of the repository, and every #anchor a heading of that page."""

from __future__ import annotations

import re

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_readme_is_short_and_starts_with_the_two_commands(project_root):
    lines = (project_root / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert block[0].startswith("make demo   #") and block[1].startswith("make test   #")


def test_readme_links_resolve_to_files_and_headings(project_root):
    text = (project_root / "README.md").read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if "://" not in t]
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        path, _, anchor = target.partition("#")
        file = project_root / path
        assert file.is_file(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
            assert anchor in {_slug(h) for h in headings}, target
