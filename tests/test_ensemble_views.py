"""Test-time augmentation deals the 8 flips/rotations out to the ensemble's members: 8 forward
passes a patch whatever the member count (every member on every view cost 3x for nothing)."""

from __future__ import annotations

import pytest
import torch

from napari_metastasis.models.networks import DIHEDRAL_VIEWS, Ensemble, SmallCNN


class Counting(SmallCNN):
    def __init__(self):
        super().__init__(width=4)
        self.calls = 0

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().logit(x)


def _view(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.flip(x, dims=[3]) if flip else x
    return torch.rot90(x, k, dims=[2, 3])


@pytest.mark.slow
def test_each_view_is_seen_once_by_one_member_in_turn():
    torch.manual_seed(0)
    members = [Counting().eval() for _ in range(3)]
    x = torch.rand(4, 3, 24, 24)
    with torch.no_grad():
        got = torch.softmax(Ensemble(members, tta=True)(x), 1)[:, 1]
        assert [m.calls for m in members] == [3, 3, 2]
        expected = sum(
            torch.sigmoid(members[i % 3].logit(_view(x, k, flip)))
            for i, (k, flip) in enumerate(DIHEDRAL_VIEWS)
        ) / len(DIHEDRAL_VIEWS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_one_member_sees_all_eight_views_and_scripting_keeps_the_answer():
    torch.manual_seed(1)
    member = SmallCNN(width=4).eval()
    x = torch.rand(2, 3, 24, 24)
    ensemble = Ensemble([member], tta=True).eval()
    with torch.no_grad():
        expected = sum(torch.sigmoid(member.logit(_view(x, k, f))) for k, f in DIHEDRAL_VIEWS) / 8
        torch.testing.assert_close(torch.softmax(ensemble(x), 1)[:, 1], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.jit.script(ensemble)(x), ensemble(x), atol=1e-5, rtol=0)
