"""The 8 rotations/flips of the square (the dihedral group), on (B, C, H, W) tensors."""

from __future__ import annotations

import torch

DIHEDRAL_COUNT = 8
"""Transform ``k`` rotates by ``90 * (k % 4)`` degrees, then mirrors left-right if ``k >= 4``."""


def dihedral(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Apply dihedral transform ``k`` (0..7) to the last two dimensions."""
    rotated = torch.rot90(batch, k % 4, dims=(-2, -1)) if k % 4 else batch
    return torch.flip(rotated, dims=(-1,)) if k >= 4 else rotated


def dihedral_inverse(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` ``k``."""
    unflipped = torch.flip(batch, dims=(-1,)) if k >= 4 else batch
    return torch.rot90(unflipped, -(k % 4), dims=(-2, -1)) if k % 4 else unflipped


def swaps_axes(k: int) -> bool:
    """True when transform ``k`` exchanges height and width (odd rotations)."""
    return k % 2 == 1


def median(stack: torch.Tensor) -> torch.Tensor:
    """Median over dimension 0; the mean of the two middle values for an even count
    (as NumPy's median, which the ZSSR reference uses)."""
    count = stack.shape[0]
    if count == 1:
        return stack[0]
    ordered = stack.sort(dim=0).values
    if count % 2:
        return ordered[count // 2]
    return 0.5 * (ordered[count // 2 - 1] + ordered[count // 2])
