"""Screenshot of the real viewer: the sample slide, a whole-slide analysis, its overlay and contours.

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/viewer_screenshot.py --out resources/viewer.png
        [--focus-out resources/viewer_region.png] [--verdict-out resources/viewer_verdict.png]

It drives the same widget a pathologist uses (Plugins > napari-metastasis > Metastasis detection)
with the bundled default model on the CPU, and writes nothing but the picture (analyses are
remembered in a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("resources/viewer.png"))
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument(
        "--focus-out", type=Path, help="also a picture after clicking the top region in the list"
    )
    parser.add_argument(
        "--verdict-out",
        type=Path,
        help="also a picture of the Regions panel: sizes, categories, the slide verdict, and a "
        "Measure line across the largest region",
    )
    parser.add_argument("--size", default="1500x950", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    os.environ.setdefault("NAPARI_METASTASIS_ANALYSES", tempfile.mkdtemp())
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-metastasis")
    width, height = (int(v) for v in args.size.split("x"))
    viewer.window._qt_window.resize(width, height)
    viewer.open_sample("napari-metastasis", "CMU-1-Small-Region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-metastasis", "Metastasis detection")
    app = QApplication.instance()

    def pump(seconds: float = 0.3) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.01)

    if Path(args.model).is_dir():
        widget.add_model_folder(args.model)
    widget.source.device.value = "cpu"
    widget.set_mode("Whole slide")
    widget.run()
    deadline = time.perf_counter() + 300
    while widget.is_running and time.perf_counter() < deadline:
        pump(0.1)
    if widget.current_analysis is None:
        print(f"analysis failed: {widget.status.text()}", file=sys.stderr)
        return 1
    widget.display.threshold.value = args.threshold
    widget.update_contours()
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[0]
    pump(1.0)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # e.g. napari's PyQt5 deprecation notice, over the canvas
    pump(0.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    print(f"{args.out}: {widget.status.text()} {widget.navigator.summary.text()}")
    if args.focus_out and widget.navigator.table.rowCount():
        table = widget.navigator.table
        table.selectRow(0)
        table.itemClicked.emit(table.item(0, 0))  # what a click on the first row does
        pump(1.0)
        viewer.screenshot(str(args.focus_out), canvas_only=False, flash=False)
        print(f"{args.focus_out}: camera on region {table.item(0, 0).text()}")
    if args.verdict_out:
        _verdict_picture(viewer, widget, args.verdict_out, pump)
    viewer.close()
    return 0


def _verdict_picture(viewer, widget, out: Path, pump) -> None:
    """The dock scrolled to the Regions panel (sorted by size), the view on the largest region,
    and a Measure line where its greatest dimension lies."""
    import numpy as np
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QScrollArea

    from napari_metastasis.clinical import greatest_dimension_segment
    from napari_metastasis.widgets.navigator import RegionNavigator

    view = widget.current_analysis
    grid = view.prob_map.grid
    if not view.regions:
        print("no region: no verdict picture", file=sys.stderr)
        return
    largest = widget.verdict_panel.verdict.largest
    index = next(i for i, r in enumerate(view.regions) if r.id == largest.id)
    widget.go_to_region(index)
    viewer.camera.zoom = viewer.camera.zoom / 1.5  # some tissue around it
    ends = greatest_dimension_segment(view.regions[index].polygon, grid)
    widget.measure.button.click()
    widget.measure.layer.add_lines(np.array(view.frame.to_world(ends)))
    widget.measure.button.click()
    table = widget.navigator.table
    table.sortItems(RegionNavigator.SIZE_COLUMN, Qt.SortOrder.DescendingOrder)
    for scroll in widget.findChildren(QScrollArea):
        top = widget.regions_panel.mapTo(scroll.widget(), QPoint(0, 0)).y()
        scroll.verticalScrollBar().setValue(top - 40)
        scroll.horizontalScrollBar().setValue(0)
    pump(1.0)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"{out}: {widget.verdict_panel.text}; measured {widget.measure.label.text()}")


if __name__ == "__main__":
    raise SystemExit(main())
