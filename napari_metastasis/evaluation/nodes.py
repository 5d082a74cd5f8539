"""Node slides made of held-out patches: their plan and their truth (no pixels, no files here).

The node validation (``benchmarks/bench_nodes.py``, ``make validate``) asks the whole pipeline the
clinical question on slides whose answer is known: a lymph-node "section" is a square of
``node_cells`` x ``node_cells`` cells of 80 µm on white glass, each cell the central 80 µm of one
PatchCamelyon patch of the held-out split (:mod:`napari_metastasis.datasets.pcam_splits`). Tumour
cells (PCam label 1: tumour in the patch's centre) form one deposit of a known shape; every other
cell is a PCam negative. The truth of a node is therefore geometry, not a pathologist's outline:

* **Deposit**: the union of its tumour cells' 80-µm squares. Its greatest dimension is the maximum
  Feret diameter of that union (:func:`napari_metastasis.clinical.staging.greatest_dimension_um`, what the
  project measures on predicted regions), so an 8 x 8 block of 0.64 mm side measures its diagonal,
  0.905 mm; a 30 x 10 block (2.4 x 0.8 mm) 2.53 mm; one cell 0.113 mm (ITC), two cells 0.179 mm.
* **Category** from that size (AJCC: ITC <= 0.2 mm, micro <= 2 mm, macro > 2 mm); negative nodes
  hold no tumour cell. **pN stage** per patient of five nodes, by Camelyon17's rules.
* **Placement**: the tissue starts ``MARGIN_CELLS`` cells from the slide's corner, plus ``offset_um``
  (``ON_GRID_UM``, 40 µm: cells lie exactly on the model's 80-µm grid, whose cells are centred on
  multiples of 80 µm; ``OFF_GRID_UM``, 77 µm: every patch straddles four cells).

Units: cells (row, col) inside the tissue square; µm from the slide's top-left corner; level-0 px
only where a scan resolution is given (``mpp``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from napari_metastasis.clinical.staging import deposit_category, greatest_dimension_um, pn_stage

#: Side of one cell in µm: the bundled model's patch (80 px at 1 µm/px) and grid stride.
CELL_UM = 80.0
#: Glass around the tissue, in cells (with ON_GRID_UM, on-grid tissue starts on a cell edge).
MARGIN_CELLS = 3
#: The on-grid shift: the model's cells are centred on multiples of its step, so their edges lie
#: half a cell past them (µm).
ON_GRID_UM = CELL_UM / 2
#: The off-grid shift: 37 µm from the grid's edges, not a multiple of any stride in use (µm).
OFF_GRID_UM = ON_GRID_UM + 37.0
#: Scan resolutions of the set: 1 µm/px (the model's), and a 40x scan the reader must pick a level of.
SCAN_MPP = 1.0
SCAN_40X_MPP = 0.25


# --- deposit shapes (cells) ---------------------------------------------------------------------
def _block(rows: int, cols: int) -> np.ndarray:
    return np.ones((rows, cols), bool)


def _disc(diameter: int) -> np.ndarray:
    """Cells whose centre lies within the disc of ``diameter`` cells."""
    c = (np.arange(diameter) + 0.5 - diameter / 2) ** 2
    return (c[:, None] + c[None, :]) <= (diameter / 2) ** 2


def _ell(side: int, arm: int) -> np.ndarray:
    """An L: a ``side`` x ``side`` box keeping its first ``arm`` rows and its first ``arm`` cols."""
    mask = np.zeros((side, side), bool)
    mask[:, :arm] = True
    mask[-arm:, :] = True
    return mask


#: name -> cell mask. ITC: 1-2 cells; micro: 0.34-1.13 mm; macro: 2.4-3.1 mm (greatest dimension).
SHAPES: dict[str, np.ndarray] = {
    "cell1": _block(1, 1),
    "cell2": _block(1, 2),
    "block3x3": _block(3, 3),
    "block5x10": _block(5, 10),
    "block8x8": _block(8, 8),
    "disc10": _disc(10),
    "ell10": _ell(10, 3),
    "block10x30": _block(10, 30),
    "disc30": _disc(30),
    "ell28": _ell(28, 8),
}

#: Eight patients of five nodes: ``category:shape`` (``negative`` alone), ``*`` = the patient's node
#: scanned at 0.25 µm/px. Together: pN0, pN0(i+), pN1mi, pN1 and pN2; 26 negative nodes, 4 ITC,
#: 7 micro (5 shapes), 3 macro (3 shapes); the first five patients already hold all five stages.
#: Node order within a patient is shuffled by the seed.
PATIENT_PLANS: tuple[tuple[str, ...], ...] = (
    ("negative*", "negative", "negative", "negative", "negative"),  # pN0
    ("macro:disc30*", "micro:block5x10", "micro:ell10", "micro:block8x8", "negative"),  # pN2
    ("itc:cell1", "negative*", "negative", "negative", "negative"),  # pN0(i+)
    ("micro:block8x8*", "negative", "negative", "negative", "negative"),  # pN1mi
    ("macro:block10x30", "micro:disc10", "negative*", "negative", "negative"),  # pN1
    ("itc:cell2", "itc:cell1", "negative", "negative*", "negative"),  # pN0(i+)
    ("micro:ell10", "micro:block3x3", "itc:cell2*", "negative", "negative"),  # pN1mi
    ("macro:ell28*", "negative", "negative", "negative", "negative"),  # pN1
)
NODES_PER_PATIENT = 5


@dataclass(frozen=True)
class NodeSpec:
    """What to build: one node slide (its name is Camelyon17's ``patient_XXX_node_Y``)."""

    name: str
    patient: str
    category: str  # the planned category: negative, itc, micro, macro
    shape: str | None  # a key of SHAPES; None for a negative node
    mpp: float = SCAN_MPP
    offset_um: float = ON_GRID_UM
    node_cells: int = 32
    index: int = 0  # the node's number in the set (its random stream)


def plan_nodes(n_nodes: int = 40, seed: int = 0, node_cells: int = 32) -> list[NodeSpec]:
    """``n_nodes`` (rounded up to whole patients) node specs, cycling through PATIENT_PLANS.

    Every second node (by set order) is off the grid; the starred node of each patient is a 40x
    scan. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    n_patients = -(-max(1, n_nodes) // NODES_PER_PATIENT)
    specs: list[NodeSpec] = []
    for p in range(n_patients):
        plan = list(PATIENT_PLANS[p % len(PATIENT_PLANS)])
        order = rng.permutation(len(plan))
        patient = f"patient_{p:03d}"
        for node, k in enumerate(order):
            entry = plan[k]
            scan_40x = entry.endswith("*")
            category, _, shape = entry.rstrip("*").partition(":")
            index = len(specs)
            specs.append(
                NodeSpec(
                    name=f"{patient}_node_{node}",
                    patient=patient,
                    category=category,
                    shape=shape or None,
                    mpp=SCAN_40X_MPP if scan_40x else SCAN_MPP,
                    offset_um=OFF_GRID_UM if index % 2 else ON_GRID_UM,
                    node_cells=node_cells,
                    index=index,
                )
            )
    return specs


# --- truth --------------------------------------------------------------------------------------
@dataclass
class NodeTruth:
    """A built node's layout and answer (µm from the slide's corner; cells in the tissue square)."""

    name: str
    patient: str
    category: str  # from the deposit's measured greatest dimension (equals the planned one)
    shape: str | None
    greatest_dimension_mm: float  # 0 for a negative node
    tumour_cells: list[tuple[int, int]]  # (row, col)
    node_cells: int
    mpp: float
    offset_um: float
    tissue_origin_um: float  # x = y: the tissue square's top-left corner
    size_px: tuple[int, int]  # level-0 (width, height)
    patches: list[str] = field(default_factory=list)  # PCam file stems, row by row

    @property
    def normal_cells(self) -> int:
        return self.node_cells**2 - len(self.tumour_cells)

    @property
    def normal_area_mm2(self) -> float:
        return self.normal_cells * (CELL_UM / 1000.0) ** 2

    @property
    def on_grid(self) -> bool:
        """Whether the tissue's cells are the model's cells (edges half a cell past multiples)."""
        return (self.offset_um - ON_GRID_UM) % CELL_UM == 0

    def deposit_um(self) -> BaseGeometry:
        """The deposit as one geometry in µm from the slide's corner (empty for a negative node)."""
        return deposit_geometry(self.tumour_cells, self.tissue_origin_um)

    def deposit_px(self) -> BaseGeometry:
        """The deposit in level-0 pixels of the written slide."""
        return shapely.affinity.scale(
            self.deposit_um(), xfact=1 / self.mpp, yfact=1 / self.mpp, origin=(0, 0)
        )

    def tissue_px(self) -> BaseGeometry:
        side = self.node_cells * CELL_UM
        o = self.tissue_origin_um
        return shapely.box(o / self.mpp, o / self.mpp, (o + side) / self.mpp, (o + side) / self.mpp)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tumour_cells"] = [list(c) for c in self.tumour_cells]
        data["size_px"] = list(self.size_px)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NodeTruth:
        return cls(
            **{
                **data,
                "tumour_cells": [(int(r), int(c)) for r, c in data["tumour_cells"]],
                "size_px": (int(data["size_px"][0]), int(data["size_px"][1])),
            }
        )


def deposit_geometry(cells: list[tuple[int, int]], origin_um: float = 0.0) -> BaseGeometry:
    """The union of the cells' 80-µm squares, in µm (``origin_um`` = the tissue's corner)."""
    if not cells:
        return shapely.Polygon()
    arr = np.asarray(cells, dtype=np.float64)
    x0 = origin_um + arr[:, 1] * CELL_UM
    y0 = origin_um + arr[:, 0] * CELL_UM
    return shapely.union_all(shapely.box(x0, y0, x0 + CELL_UM, y0 + CELL_UM))


def place_deposit(spec: NodeSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The tumour cells of ``spec``: its shape randomly rotated/flipped, at a random place."""
    if spec.shape is None:
        return []
    mask = np.rot90(SHAPES[spec.shape], int(rng.integers(4)))
    if rng.integers(2):
        mask = mask[:, ::-1]
    h, w = mask.shape
    n = spec.node_cells
    if h > n or w > n:
        raise ValueError(f"{spec.name}: shape {spec.shape} ({h}x{w} cells) exceeds the node ({n})")
    r0 = int(rng.integers(n - h + 1))
    c0 = int(rng.integers(n - w + 1))
    rows, cols = np.nonzero(mask)
    return [(int(r + r0), int(c + c0)) for r, c in zip(rows, cols, strict=True)]


def node_truth(spec: NodeSpec, tumour_cells: list[tuple[int, int]]) -> NodeTruth:
    """The truth of ``spec`` with its deposit at ``tumour_cells``; checks the planned category."""
    origin = MARGIN_CELLS * CELL_UM + spec.offset_um
    side_um = 2 * MARGIN_CELLS * CELL_UM + spec.offset_um + spec.node_cells * CELL_UM
    side = -(-round(side_um / spec.mpp) // 16) * 16  # whole 2x levels down to 1/16
    greatest = greatest_dimension_um(deposit_geometry(tumour_cells, origin), 1.0) / 1000.0
    category = deposit_category(greatest) if tumour_cells else "negative"
    if category != spec.category:
        raise ValueError(f"{spec.name}: shape {spec.shape} is {category}, planned {spec.category}")
    return NodeTruth(
        name=spec.name,
        patient=spec.patient,
        category=category,
        shape=spec.shape,
        greatest_dimension_mm=greatest,
        tumour_cells=tumour_cells,
        node_cells=spec.node_cells,
        mpp=spec.mpp,
        offset_um=spec.offset_um,
        tissue_origin_um=origin,
        size_px=(side, side),
    )


def truth_stages(truths: list[NodeTruth]) -> dict[str, str]:
    """{patient: true pN stage} from the nodes' categories (Camelyon17's rules)."""
    patients: dict[str, list[str]] = {}
    for t in truths:
        patients.setdefault(t.patient, []).append(t.category)
    return {p: pn_stage(cats) for p, cats in patients.items()}
