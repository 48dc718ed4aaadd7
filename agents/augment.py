"""Image augmentation for pixel RL: DrQ's random shift."""

from __future__ import annotations

import torch


def random_shift(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image of a batch by up to ``pad`` pixels in x and y, replicating the border.

    Equivalent to DrQ's augmentation (replicate-pad by ``pad``, then a random crop back to the
    original size), but done as two index gathers, so it runs on uint8 images, needs no padded
    copy and costs about as much as one copy of the batch. All channels of an image (the whole
    frame stack) get the same shift.
    """
    if pad == 0:
        return x
    b, c, h, w = x.shape
    shift = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=generator.device if generator else "cpu")
    shift = shift.to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + shift[:, :1] - pad).clamp_(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None, :] + shift[:, 1:] - pad).clamp_(0, w - 1)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
