"""Does grasp2vec's reward tell the goal object from the others in the same bin?

    python -m ssrl.benchmarks.grasp_reward_check MODEL --data DATA [--data NOVEL_DATA ...] [--out FILE]

Instance grasping rewards a lift with ``phi_o(g) . phi_o(o)``. A policy can learn to pick the goal
object only as far as this reward is higher for the goal object than for the other objects of
the bin. On a grasping data set (``ssrl collect`` of ``ssrl/Grasp-v0`` or ``GraspGoal-v0``, whose
``info`` holds the lifted object's image ``o`` and its id), every pair of successful grasps of one
episode (one bin) is a pair of images of the same object (same id) or of two different objects;
the reward of a same pair stands for "the goal was lifted", of a different pair for "another
object was". This prints, per data set, over the episodes the model was not trained on:

* the pairs of each kind and their mean reward;
* the AUC: the probability that a same pair's reward exceeds a different pair's (ties count
  half; 0.5 is a reward that cannot tell them apart, 1 a perfect one);
* the same two for the cosine of the embeddings (``--goal-reward cosine``), whose norms the
  n-pairs loss leaves free.

A random-init model of the same architecture is scored beside it. Departure: the goal image of
``GraspGoal-v0`` is a render of the goal object held in the hand, the same view as ``o`` but not
the same picture; a same pair here is two lifts of one object, two such views.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch


def pair_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a same pair's reward > a different pair's), ties counting half (Mann-Whitney AUC)."""
    if len(same) == 0 or len(different) == 0:
        return float("nan")
    s, d = np.asarray(same, np.float64)[:, None], np.asarray(different, np.float64)[None, :]
    return float((s > d).mean() + 0.5 * (s == d).mean())


def episode_pairs(embeddings: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rewards (dot products) of every pair of one episode's lifts: ``(same object, different)``."""
    products = embeddings @ embeddings.T
    i, j = np.triu_indices(len(ids), k=1)
    same = ids[i] == ids[j]
    return products[i, j][same], products[i, j][~same]


@torch.no_grad()
def score(rep, data) -> dict[str, float]:
    """Pairs, mean rewards and AUC over the episodes of ``data`` (a RolloutData)."""
    pairs: dict[str, tuple[list, list]] = {"": ([], []), "_cosine": ([], [])}
    episodes = 0
    for episode in data.episodes:
        lifted = np.asarray(episode.info["grasp_success"], bool)
        if lifted.sum() < 2:
            continue
        o = torch.as_tensor(np.asarray(episode.info["o"])[lifted]).to(rep.device)
        ids = np.asarray(episode.info["object_id"])[lifted]
        embeddings = rep.object(o).float().cpu().numpy()
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
        for suffix, e in (("", embeddings), ("_cosine", unit)):
            s, d = episode_pairs(e, ids)
            pairs[suffix][0].append(s)
            pairs[suffix][1].append(d)
        episodes += 1
    out: dict[str, float] = {"episodes": episodes}
    for suffix, (same, different) in pairs.items():
        same_all = np.concatenate(same) if same else np.zeros(0)
        diff_all = np.concatenate(different) if different else np.zeros(0)
        out.update(
            {
                "same_pairs": len(same_all),
                "different_pairs": len(diff_all),
                f"reward_same{suffix}": float(same_all.mean()) if len(same_all) else float("nan"),
                f"reward_different{suffix}": float(diff_all.mean()) if len(diff_all) else float("nan"),
                f"auc{suffix}": pair_auc(same_all, diff_all),
            }
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a grasp2vec model.pt (ssrl pretrain)")
    parser.add_argument("--data", action="append", required=True, help="a grasping data set (repeatable)")
    parser.add_argument("--out", default=None, help="write the scores as JSON here")
    args = parser.parse_args(argv)
    from ssrl.representations import RolloutData, load_representation, make
    from ssrl.representations.pretrain import probe_split
    from ssrl.utils import write_json

    trained = load_representation(args.model).eval()
    torch.manual_seed(0)
    untrained = make(trained.name, trained.obs_shape, **dataclasses.asdict(trained.config)).eval()
    results = {}
    for folder in args.data:
        held_out = probe_split(trained, RolloutData(folder))[1]  # episodes the model never saw
        for label, rep in (("trained", trained), ("random-init", untrained)):
            r = score(rep, held_out)
            results[f"{folder} {label}"] = r
            print(
                f"{folder} [{label}]: {r['episodes']} episodes, {r['same_pairs']} same / {r['different_pairs']} "
                f"different pairs; reward {r['reward_same']:.2f} vs {r['reward_different']:.2f}; AUC {r['auc']:.3f}; "
                f"cosine {r['reward_same_cosine']:.2f} vs {r['reward_different_cosine']:.2f}, AUC {r['auc_cosine']:.3f}"
            )
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
