"""grasp2vec: object-centric embeddings from grasping (Jang, Devin et al. 2018).

From a grasp's triplet (s_pre: the bin before, s_post: the bin after, o: the lifted object held
up to a camera), the scene embedding's difference should equal the object's embedding:

    L = NPair(d, phi_o(o)) + NPair(phi_o(o), d),   d = phi_s(s_pre) - phi_s(s_post)
    NPair(a, p) = mean_i -log softmax_j(a_i . p_j)[i] + lambda/4 (mean_i ||a_i||^2 + mean_i ||p_i||^2)

so the L2 term of L is lambda/2 (mean_i ||d_i||^2 + mean_i ||phi_o(o_i)||^2)
(:func:`~ssrl.representations.losses.npairs`; the source text writes lambda (||a_i||^2 + ||p_i||^2)
summed over the batch, four times the public code's weight per pair, see below).

phi_s (scene, shared by pre and post images) and phi_o (object) are separate networks of the
suite's backbone family, each ending as in the paper: the spatial feature map, ReLU, then a
spatial mean pool, so embeddings are non-negative and "subtraction" removes an object. A 1x1
convolution sets the channels of the map to ``latent_dim``. Only successful grasps are used.

Downstream: ``encoder`` is phi_s (a scene -> vector); ``heatmap(o, s_pre)`` is the paper's
localisation map phi_o(o)^T phi_s_spatial(s_pre) (softmax over positions); ``reward(g, o)`` is
phi_o(g) . phi_o(o), the goal-conditioned grasping reward. ``retrieval_acc`` in the metrics is the
fraction of a batch whose pre-minus-post embedding is nearest (by dot product) to its own object.

Against the public code (google-research/tensor2robot ``research/grasp2vec``, TF1): the same two
towers, ReLU and mean pool, the same two-way n-pairs loss and the same lambda with the same
weighting: its ``NPairsLoss`` calls TensorFlow's ``npairs_loss`` in each direction with the default
reg_lambda = 0.002, whose penalty is 0.25 lambda (mean ||a||^2 + mean ||p||^2), so the two
directions add lambda/2 (mean ||d||^2 + mean ||phi_o(o)||^2), as we do. It uses a truncated
ResNet-50 (1024-d maps) on 472x472 crops at batch 8 and Adam 1e-4, we the suite's backbones
(``resnet`` among them) at 84x84, batch 32, Adam 3e-4, to fit CPU budgets. Its image
augmentation (random crops and flips) is not applied here.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import torch
import torch.nn as nn

from ...utils import image_grid, write_png
from ..backbones import ConvTrunk, EncoderConfig, orthogonal_init
from ..core import BaseConfig, Need, Representation, register
from ..losses import npairs


@dataclasses.dataclass
class Grasp2VecConfig(BaseConfig):
    frame_stack: int = 1  # single images: the triplets are single frames
    reg: float = 0.002  # lambda of the n-pairs L2 penalty (npairs_loss's reg_lambda)
    lr: float = 3e-4
    batch_size: int = 32


class SpatialEmbedding(nn.Module):
    """Image -> (spatial map (B, D, H', W'), embedding (B, D)): trunk, 1x1 conv, ReLU, mean pool."""

    def __init__(self, arch: str, in_shape, dim: int) -> None:
        super().__init__()
        self.trunk = ConvTrunk(EncoderConfig(arch, in_shape[0], tuple(in_shape[1:]), dim))
        self.project = nn.Conv2d(self.trunk.output_shape[0], dim, 1)
        self.input_shape = tuple(in_shape)
        self.apply(orthogonal_init)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.project(self.trunk(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(x).mean(dim=(2, 3))


@register
class Grasp2Vec(Representation):
    name = "grasp2vec"
    needs = Need.GRASPS
    Config = Grasp2VecConfig

    def __init__(self, config: Grasp2VecConfig, obs_shape) -> None:
        super().__init__(config, obs_shape)
        self.scene = SpatialEmbedding(config.arch, obs_shape, config.latent_dim)
        self.object = SpatialEmbedding(config.arch, obs_shape, config.latent_dim)
        self.encoder = self.scene

    example_env = "ssrl/Grasp-v0"  # grasp triplets exist only in our grasping scene

    def goal_embedding(self) -> nn.Module:
        """On ``ssrl/GraspGoal-v0`` the goals are ``phi_o`` embeddings and the reward the source
        text's ``phi_o(g) . phi_o(o)`` (the object tower, unnormalised; see
        :mod:`~ssrl.representations.grasping`). Elsewhere grasp2vec is the scene embedding
        ``phi_s`` as a frozen encoder, like any representation's."""
        return self.object

    def extra_scores(self, data) -> dict[str, float]:
        """Instance retrieval accuracy on held-out grasps (see :func:`retrieval_accuracy`), and
        how well the heatmap finds the grasped object in the scene (:func:`localisation`)."""
        return {"retrieval_acc": retrieval_accuracy(self, data), **localisation(self, data)}

    def pictures(self, data, folder: pathlib.Path) -> list[pathlib.Path]:
        """``heatmaps.png``: per held-out successful grasp, the bin before (s_pre), the lifted
        object (o), the heatmap of phi_o(o) over phi_s(s_pre) blended over the bin (inferno:
        black cold, yellow hot), and the object's footprint (the pixels the grasp changed, white)."""
        rows = _successes(data)[:6]
        if len(rows) == 0:
            return []
        pre, post, obj = (data.info[k][rows] for k in ("s_pre", "s_post", "o"))
        from matplotlib import colormaps

        heat = self.heatmap_image(obj, pre)  # (B, H, W) in [0, 1]
        masks = object_masks(pre, post)
        colours = colormaps["inferno"](heat)[..., :3].transpose(0, 3, 1, 2) * 255.0
        lit = (0.4 * pre + 0.6 * colours).astype(np.uint8)
        footprint = np.repeat(masks[:, None], 3, axis=1).astype(np.uint8) * 255

        def big(im: np.ndarray) -> np.ndarray:  # twice the size: 64-pixel frames are small to look at
            return im.repeat(2, axis=-1).repeat(2, axis=-2)

        grid = image_grid([[big(pre[i]), big(obj[i]), big(lit[i]), big(footprint[i])] for i in range(len(rows))])
        return [write_png(folder / "heatmaps.png", grid)]

    @torch.no_grad()
    def heatmap_image(self, obj: np.ndarray, scene: np.ndarray) -> np.ndarray:
        """:meth:`heatmap` upsampled (bilinear) to the scene's size and scaled to [0, 1] per image."""
        with self.evaluating():
            b = self.to_batch({"object": obj, "pre": scene})
            heat = self.heatmap(b["object"], b["pre"])[:, None]
            heat = torch.nn.functional.interpolate(heat, size=tuple(scene.shape[-2:]), mode="bilinear")[:, 0]
        heat = heat - heat.flatten(1).min(1).values[:, None, None]
        return (heat / heat.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]).cpu().numpy()

    def sample_batch(self, data, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        success = np.flatnonzero(data.info["grasp_success"])
        if len(success) < 2:
            raise ValueError("grasp2vec needs at least 2 successful grasps in the data")
        # Distinct grasps, so no pair is its own negative.
        rows = rng.choice(success, size=min(batch_size, len(success)), replace=False)
        return {"pre": data.info["s_pre"][rows], "post": data.info["s_post"][rows], "object": data.info["o"][rows]}

    def embeddings(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        pre_post = torch.cat([batch["pre"], batch["post"]])
        phi = self.scene(pre_post)
        diff = phi[: len(batch["pre"])] - phi[len(batch["pre"]) :]
        return diff, self.object(batch["object"])

    def loss(self, batch):
        diff, obj = self.embeddings(batch)
        reg = self.config.reg
        loss = npairs(diff, obj, reg) + npairs(obj, diff, reg)
        with torch.no_grad():
            acc = ((diff @ obj.T).argmax(1) == torch.arange(len(obj), device=obj.device)).float().mean()
        return loss, {"retrieval_acc": acc}

    @torch.no_grad()
    def heatmap(self, obj: torch.Tensor, scene: torch.Tensor) -> torch.Tensor:
        """Where the object is in the scene: softmax over positions of phi_o(o) . phi_s(s)[h, w]."""
        query = self.object(obj)  # (B, D)
        spatial = self.scene.spatial(scene)  # (B, D, H, W)
        logits = torch.einsum("bd,bdhw->bhw", query, spatial)
        return torch.softmax(logits.flatten(1), dim=1).reshape(logits.shape)

    @torch.no_grad()
    def reward(self, goal: torch.Tensor, achieved: torch.Tensor) -> torch.Tensor:
        """The grasping reward phi_o(g) . phi_o(o) of a goal image and a lifted object's image."""
        return (self.object(goal) * self.object(achieved)).sum(-1)


def _successes(data, max_grasps: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.flatnonzero(data.info["grasp_success"]))[:max_grasps]


def object_masks(pre: np.ndarray, post: np.ndarray, threshold: int = 24) -> np.ndarray:
    """Where the grasped object was: pixels of s_pre that differ from s_post by more than
    ``threshold`` (of 255) in some channel; ``(B, H, W)`` bool. The judge of :func:`localisation`
    (a neighbour nudged by the grasp shows up too, at its edges)."""
    diff = np.abs(pre.astype(np.int16) - post.astype(np.int16)).max(axis=1)
    return diff > threshold


@torch.no_grad()
def localisation(rep: Grasp2Vec, data, max_grasps: int = 256, batch: int = 32) -> dict[str, float]:
    """Does the heatmap of phi_o(o) over phi_s(s_pre) point at the object that was grasped? Over
    held-out successful grasps: ``heatmap_hit``, the fraction whose hottest pixel (the heatmap
    upsampled to the image) lies on the object's footprint (:func:`object_masks`);
    ``heatmap_chance``, the footprint's mean share of the image (a uniformly drawn pixel's hit
    rate); ``heatmap_mass``, the mean share of the heatmap's mass on the footprint."""
    rows = _successes(data, max_grasps)
    hits, mass, area, n = 0.0, 0.0, 0.0, 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        pre, post, obj = (data.info[k][chunk] for k in ("s_pre", "s_post", "o"))
        masks = object_masks(pre, post)
        keep = masks.any(axis=(1, 2))  # a grasp that changed no pixel has nothing to find
        if not keep.any():
            continue
        heat = rep.heatmap_image(obj[keep], pre[keep])
        masks = masks[keep]
        flat = heat.reshape(len(heat), -1)
        hottest = flat.argmax(1)
        hits += float(masks.reshape(len(masks), -1)[np.arange(len(masks)), hottest].sum())
        mass += float(((heat * masks).reshape(len(heat), -1).sum(1) / flat.sum(1).clip(1e-12)).sum())
        area += float(masks.mean(axis=(1, 2)).sum())
        n += len(masks)
    if n == 0:
        return {}
    return {"heatmap_hit": hits / n, "heatmap_chance": area / n, "heatmap_mass": mass / n}


@torch.no_grad()
def retrieval_accuracy(rep: Grasp2Vec, data, max_grasps: int = 512, batch: int = 32, seed: int = 0) -> float:
    """Top-1 object retrieval within batches of held-out successful grasps (the paper's metric):
    the fraction whose pre-minus-post embedding is closest to its own object among the batch."""
    rows = _successes(data, max_grasps, seed)
    hits, total = 0, 0
    with rep.evaluating():  # a model mid-training goes back to training mode afterwards
        for start in range(0, len(rows) - 1, batch):
            chunk = rows[start : start + batch]
            if len(chunk) < 2:
                break
            b = rep.to_batch(
                {"pre": data.info["s_pre"][chunk], "post": data.info["s_post"][chunk], "object": data.info["o"][chunk]}
            )
            diff, obj = rep.embeddings(b)
            hits += int(((diff @ obj.T).argmax(1) == torch.arange(len(chunk), device=obj.device)).sum())
            total += len(chunk)
    return hits / max(total, 1)
