"""Screenshots of the real viewer: a slide, a whole-slide analysis, its overlay, contours and legend.

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/viewer_screenshot.py \\
        --out resources/viewer.png --focus-out resources/viewer_region.png \\
        --compare-out resources/viewer_compare.png \\
        [--verdict-out resources/viewer_verdict.png]

It drives the same widget a pathologist uses (Plugins > napari-metastasis > Metastasis detection)
with the bundled default model on the CPU, at the model's own threshold unless --threshold says
otherwise, and writes nothing but the pictures (analyses are remembered in a temporary folder).
``--slide`` takes any slide (default: the bundled sample); ``--mpp`` gives one that states no
µm/px its resolution through the widget's µm/px field. ``--compare-out`` also shows the comparison
with a reference: ``--reference`` (any annotation file), else an illustrative one drawn by this
script around the two most probable regions and one patch of tissue the model calls negative
(the sample has no metastasis: it is a picture of the tool, not a result); --compare-threshold
sets the threshold of that picture.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("resources/viewer.png"))
    parser.add_argument("--slide", type=Path, help="slide to open (default: the bundled sample)")
    parser.add_argument("--mpp", type=float, help="µm/px for a slide that states none")
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument("--threshold", type=float, help="default: the model's (its card's)")
    parser.add_argument(
        "--focus-out", type=Path, help="also a picture after clicking the top region in the list"
    )
    parser.add_argument(
        "--verdict-out",
        type=Path,
        help="also a picture of the Regions panel: sizes, categories, the slide verdict, and a "
        "Measure line across the largest region",
    )
    parser.add_argument("--compare-out", type=Path, help="also a picture of the comparison")
    parser.add_argument("--reference", type=Path, help="reference annotations for --compare-out")
    parser.add_argument(
        "--compare-threshold", type=float, help="threshold for --compare-out (default: as above)"
    )
    parser.add_argument("--size", default="1600x1000", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    os.environ.setdefault("NAPARI_METASTASIS_ANALYSES", tempfile.mkdtemp())
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-metastasis")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    _, widget = viewer.window.add_plugin_dock_widget("napari-metastasis", "Metastasis detection")
    if args.slide:
        viewer.open(str(args.slide), plugin="napari-metastasis")
    else:
        viewer.open_sample("napari-metastasis", "CMU-1-Small-Region")
    app = QApplication.instance()

    def pump(seconds: float = 0.3) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.01)

    def shoot(path: Path) -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        pump(0.5)
        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()  # e.g. a napari notice, over the canvas
        pump(0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(path), canvas_only=False, flash=False)

    pump(0.5)
    if Path(args.model).is_dir():
        widget.add_model_folder(args.model)
    else:
        widget.source.select_model(args.model)
    if args.mpp:
        widget.source.mpp.value = args.mpp
    widget.source.device.value = "cpu"
    widget.set_mode("Whole slide")
    widget.run()
    deadline = time.perf_counter() + 600
    while widget.is_running and time.perf_counter() < deadline:
        pump(0.1)
    if widget.current_analysis is None:
        print(f"analysis failed: {widget.status.text()}", file=sys.stderr)
        return 1
    if args.threshold is not None:
        widget.display.threshold.value = args.threshold
    widget.update_contours()
    viewer.reset_view()
    viewer.layers.selection.active = widget.slide_layer
    shoot(args.out)
    print(f"{args.out}: {widget.status.text()} {widget.navigator.summary.text()}")
    if args.focus_out and widget.navigator.table.rowCount():
        widget.next_region()  # what the Next button (or a click on the first row) does
        shoot(args.focus_out)
        print(f"{args.focus_out}: camera on region {widget.current_analysis.selected + 1}")
    if args.verdict_out:
        _verdict_picture(viewer, widget, args.verdict_out, pump)
        widget.measure.layer.visible = False  # the ruler belongs to that picture only
    if args.compare_out:
        if args.compare_threshold is not None:
            widget.display.threshold.value = args.compare_threshold
            widget.update_contours()
        reference = args.reference or illustrative_reference(widget, Path(tempfile.mkdtemp()))
        (layer,) = widget.annotation_io.import_file(reference)[:1]
        layer.name = "reference"
        widget.comparison.set_reference(layer)
        widget.regions_panel.navigator.table.clearSelection()
        widget.current_analysis.regions_layer.highlight(None)
        viewer.reset_view()
        layer.edge_width = 3 / viewer.scene.camera.zoom
        viewer.layers.selection.active = widget.slide_layer
        pump(0.5)
        widget.scroll_area.ensureWidgetVisible(widget.comparison.missed_list, 0, 10)
        shoot(args.compare_out)
        print(f"{args.compare_out}: {widget.comparison.summary.text()}")
    viewer.close()
    return 0


def _verdict_picture(viewer, widget, out: Path, pump) -> None:
    """The dock scrolled to the Regions panel (sorted by size), the view on the largest region,
    and a Measure line where its greatest dimension lies."""
    import numpy as np
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QScrollArea

    from napari_metastasis.clinical.staging import greatest_dimension_segment, measure_regions
    from napari_metastasis.widgets.navigator import RegionNavigator

    view = widget.current_analysis
    grid = view.prob_map.grid
    if not view.regions:
        print("no region: no verdict picture", file=sys.stderr)
        return
    largest = widget.verdict_panel.verdict.largest  # the largest confirmed deposit, else
    deposits = measure_regions(view.regions, grid)  # the largest candidate
    largest_id = largest.id if largest else max(deposits, key=lambda d: d.greatest_dimension_mm).id
    index = next(i for i, r in enumerate(view.regions) if r.id == largest_id)
    widget.go_to_region(index)
    viewer.camera.zoom = viewer.camera.zoom / 1.5  # some tissue around it
    ends = greatest_dimension_segment(view.regions[index].polygon, grid)
    widget.measure.button.click()
    widget.measure.layer.add_lines(np.array(view.frame.to_world(ends)))
    widget.measure.button.click()
    table = widget.navigator.table
    table.sortItems(RegionNavigator.SIZE_COLUMN, Qt.SortOrder.DescendingOrder)
    for scroll in widget.findChildren(QScrollArea):
        inner = scroll.widget()
        if inner is None or not inner.isAncestorOf(widget.regions_panel):
            continue  # e.g. the region table's own sideways scroll (mapTo needs an ancestor)
        top = widget.regions_panel.mapTo(inner, QPoint(0, 0)).y()
        scroll.verticalScrollBar().setValue(top - 40)
        scroll.horizontalScrollBar().setValue(0)
    pump(1.0)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"{out}: {widget.verdict_panel.text}; measured {widget.measure.label.text()}")


def illustrative_reference(widget, folder: Path) -> Path:
    """A reference drawn for the picture: around the two most probable regions, and a square of
    tissue the model calls negative (a "missed lesion")."""
    import numpy as np
    from shapely.geometry import box

    from napari_metastasis.annotations import Annotation, write_annotations

    view = widget.current_analysis
    grid, values = view.prob_map.grid, view.prob_map.values
    annotations = [
        Annotation(region.polygon.buffer(250), "Tumor", id=f"r{region.id}")
        for region in view.regions[:2]
    ]
    low = np.argwhere(np.nan_to_num(values, nan=1.0) < 0.2)  # analysed and negative
    if len(low):
        r, c = low[len(low) // 2]
        x, y, w, h = grid.cell_box(int(r), int(c))
        square = box(x - 2 * w, y - 2 * h, x + 3 * w, y + 3 * h)  # 5 × 5 patches
        annotations.append(Annotation(square, "Tumor", id="m"))
    return write_annotations(folder / "reference.geojson", annotations)


if __name__ == "__main__":
    raise SystemExit(main())
