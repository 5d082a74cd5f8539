"""Picture of a report's slide page for the docs: ``make demo``'s run, reported and rendered.

    python scripts/report_picture.py --out resources/report_slide_page.png

Runs ``predict --sample`` with the bundled model on the CPU into a temporary folder, writes the
report with ``report``, and renders its second page (the slide page) to PNG with pypdfium2.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("resources/report_slide_page.png"))
    parser.add_argument(
        "--page", type=int, default=1, help="0: the summary page, 1: the slide page"
    )
    parser.add_argument("--scale", type=float, default=1.25, help="pixels per PDF point")
    args = parser.parse_args(argv)

    import pypdfium2 as pdfium

    from napari_metastasis.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo-output"
        if cli(["predict", "--sample", "--device", "cpu", "--out", str(run)]) != 0:
            return 1
        if cli(["report", str(run)]) != 0:
            return 1
        (pdf_path,) = run.glob("*.report.pdf")
        pdf = pdfium.PdfDocument(str(pdf_path))
        try:
            image = pdf[args.page].render(scale=args.scale).to_pil().convert("RGB")
        finally:
            pdf.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({image.width}x{image.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
