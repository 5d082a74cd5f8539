"""Build configuration lives in setup.cfg; this file only makes the README fit for PyPI.

PyPI and the napari hub render the long description without the repository's files around it, so
a relative picture (``![..](resources/viewer.png)``) shows as a broken image there. Pictures are
rewritten to absolute URLs under ``[napari_metastasis] raw_url`` when that is set, else replaced by
their caption in italics. ``repository_url`` adds the Source and Tracker project URLs.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def project_settings() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(HERE / "setup.cfg", encoding="utf-8")
    section = parser["napari_metastasis"] if parser.has_section("napari_metastasis") else {}
    return {key: str(value).strip() for key, value in dict(section).items()}


def pypi_readme(text: str, raw_url: str = "") -> str:
    """``text`` with every relative picture made absolute (under ``raw_url``) or its caption."""

    def replace(match: re.Match) -> str:
        alt, target = match.group("alt"), match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*://", target):
            return match.group(0)  # already absolute
        if raw_url:
            return f"![{alt}]({raw_url.rstrip('/')}/{target.lstrip('./')})"
        return f"*[Picture: {alt}]*"

    return IMAGE.sub(replace, text)


def project_urls(repository_url: str) -> dict[str, str]:
    if not repository_url:
        return {}
    base = repository_url.rstrip("/")
    return {"Source Code": base, "Bug Tracker": f"{base}/issues", "Documentation": base}


if __name__ == "__main__":
    settings = project_settings()
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    setup(
        long_description=pypi_readme(readme, settings.get("raw_url", "")),
        url=settings.get("repository_url") or None,
        project_urls=project_urls(settings.get("repository_url", "")),
    )
