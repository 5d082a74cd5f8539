"""mkdocs hook: serve the repository's ``resources/`` (pictures, benchmark JSON) in the docs site.

Why: the pages in ``docs/`` link pictures as ``../resources/NAME.png`` so that the same Markdown
shows them on GitHub, where there is no site; the pictures stay in one place (the scripts that
make them write ``resources/``) instead of being copied under ``docs/``. mkdocs only knows files
inside ``docs/``, so this adds each file of ``resources/`` under the name such a link resolves to
(``../resources/NAME``) and publishes it at ``resources/NAME`` in the site; mkdocs then checks
the links and rewrites them as for any other file (``mkdocs build --strict`` fails on a broken one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel


def on_files(files: Files, config: Any) -> Files:
    docs_dir = Path(config["docs_dir"])
    resources = docs_dir.parent / "resources"
    for path in sorted(resources.iterdir()):
        if path.is_file():
            files.append(
                File(
                    f"../resources/{path.name}",
                    src_dir=str(docs_dir),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                    dest_uri=f"resources/{path.name}",
                    # a path starting with "." reads as a hidden file, which mkdocs leaves out
                    inclusion=InclusionLevel.INCLUDED,
                )
            )
    return files
