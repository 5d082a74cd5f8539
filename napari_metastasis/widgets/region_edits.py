"""The pathologist's edits of detected regions, kept across threshold changes.

Deleting or relabelling a region is an edit made before export, so it must outlive the next
threshold change: each edit is remembered by a point inside the region (level-0 px, as the regions'
polygons are) and re-applied to whatever regions the new threshold produces. No Qt here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry import Point

from napari_metastasis.clinical.region_annotations import region_classification
from napari_metastasis.widgets.region_shapes import DEFAULT_CLASSIFICATION


@dataclass
class RegionEdits:
    """Deletions and relabels keyed by a point inside each edited region."""

    deleted: list[Point] = field(default_factory=list)
    labelled: list[tuple[Point, str]] = field(default_factory=list)

    def delete(self, region: Any) -> None:
        self.deleted.append(region.polygon.representative_point())

    def relabel(self, region: Any, label: str) -> None:
        self.labelled.append((region.polygon.representative_point(), label))

    def clear(self) -> None:
        self.deleted.clear()
        self.labelled.clear()

    def __bool__(self) -> bool:
        return bool(self.deleted or self.labelled)

    def apply(self, regions: Sequence) -> tuple[list, list[str]]:
        """The regions not deleted, and each one's label (the latest relabel inside it wins)."""
        kept, labels = [], []
        for region in regions:
            polygon = region.polygon
            if any(polygon.intersects(p) for p in self.deleted):
                continue
            label = (
                region_classification(region, DEFAULT_CLASSIFICATION)
                if hasattr(region, "decision")
                else DEFAULT_CLASSIFICATION
            )
            for point, new_label in self.labelled:
                if polygon.intersects(point):
                    label = new_label
            kept.append(region)
            labels.append(label)
        return kept, labels
