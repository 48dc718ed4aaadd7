"""What does RIG's latent reward pay for: the hand or the puck?

    python -m ssrl.benchmarks.rig_reward_check --data DATA MODEL [MODEL ...] [--pairs 5000] [--out FILE]

RIG rewards ``-||e(s) - e(g)||``. On Push a policy learns to reduce whatever that distance
measures; if the encoder's latents track the hand and hardly the puck, the agent learns to place
the hand and leaves the puck (what our 100k-step RIG rows did). For each beta-VAE checkpoint,
on the frames of a Push data set (``ssrl collect``, whose state holds the hand and object
positions), this prints:

* how well the encoder means hold each position: held-out R^2 of a ridge (linear) probe and of
  a 5-nearest-neighbour regressor, for the hand's xy and the puck's xy separately (the first 80%
  of the frames fit, the rest score);
* what the reward pays per centimetre: over random pairs of frames, the least-squares fit
  ``||z_i - z_j|| = a * |hand_i - hand_j| + b * |puck_i - puck_j| + c`` (latent units per cm),
  and the correlation of the latent distance with each. RIG needs ``b`` of the order of ``a``.

A random-init encoder of the first model's architecture is scored beside them, and
``reconstructions.png`` beside ``--out`` shows 8 frames of the data (top row) and each model's
reconstruction of them (one row per model, in the order given).

With ``--profile N`` it also draws the reward a RIG agent would get near a goal, on ``N`` goals of
the data's env (its options, size and camera): the latent distance from the goal image to an
image of the same scene with only the hand, or only the puck, moved ``d`` cm from its goal in a
random direction (``d`` = 0..15 cm), everything else in place. It says whether the reward falls
steadily as the puck nears its goal or saturates (no gradient while the puck is far), and how
noisy it is from one goal to the next: ``reward_profile.png`` beside ``--out`` (mean and 10-90%
band per model), and the means in the JSON.

For models with a prior (RIG's imagined goals) it also asks whether those goals look like the
data: the median distance from 500 prior samples to their nearest data latent, against the
median nearest-neighbour distance among 500 data latents (RIG's goals are plausible when the
first is of the order of the second), and ``prior_goals.png`` beside ``--out``: 8 samples
decoded per model.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

HAND_XY = slice(0, 2)  # ground_truth(): hand pose (7), fingers (2), then the object's pose
PUCK_XY = slice(9, 11)
PROFILE_CM = np.arange(16)  # distances of the reward profile


def knn_r2(z_train, y_train, z_test, y_test, k: int = 5) -> float:
    d = ((z_test[:, None] - z_train[None]) ** 2).sum(-1)
    pred = y_train[np.argsort(d, 1)[:, :k]].mean(1)
    return float(1 - ((y_test - pred) ** 2).sum() / ((y_test - y_test.mean(0)) ** 2).sum())


def reward_attribution(z, hand, puck, pairs: int, seed: int = 0) -> dict[str, float]:
    """Latent-distance sensitivity to hand and puck distance (per cm) over random frame pairs."""
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(z), (2, pairs))
    dz = np.linalg.norm(z[i] - z[j], axis=1)
    dh = 100 * np.linalg.norm(hand[i] - hand[j], axis=1)  # cm
    dp = 100 * np.linalg.norm(puck[i] - puck[j], axis=1)
    a, b, c = np.linalg.lstsq(np.c_[dh, dp, np.ones(pairs)], dz, rcond=None)[0]
    return {
        "per_cm_hand": float(a),
        "per_cm_puck": float(b),
        "intercept": float(c),
        "corr_hand": float(np.corrcoef(dz, dh)[0, 1]),
        "corr_puck": float(np.corrcoef(dz, dp)[0, 1]),
    }


def score(rep, data, pairs: int) -> dict[str, float]:
    from ssrl.representations.probe import linear_probe_r2

    z = rep.embed(data.stack(np.arange(len(data.state)), None, 1))
    hand, puck = data.state[:, HAND_XY], data.state[:, PUCK_XY]
    fit = np.arange(len(z)) < int(0.8 * len(z))
    out = {}
    for name, y in (("hand", hand), ("puck", puck)):
        out[f"{name}_linear_r2"] = float(linear_probe_r2(z[fit], y[fit], z[~fit], y[~fit])[0])
        out[f"{name}_knn_r2"] = knn_r2(z[fit], y[fit], z[~fit], y[~fit])
    out.update(reward_attribution(z, hand, puck, pairs))
    out.update(prior_plausibility(rep, z))
    return out


def prior_plausibility(rep, z: np.ndarray, n: int = 500, seed: int = 0) -> dict[str, float]:
    """Median nearest-data distance of ``n`` imagined goals and of ``n`` data latents (to the
    others), or nothing for a model without a prior."""
    sampler = rep.goal_sampler()
    if sampler is None:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(z), min(len(z), 4 * n), replace=False)
    pool, queries = z[pick], z[pick[:n]]
    goals = np.asarray(sampler(n, rng, queries), np.float32)

    def nearest(a: np.ndarray, exclude_self: bool) -> np.ndarray:
        d = np.linalg.norm(a[:, None] - pool[None], axis=-1)
        if exclude_self:
            d[np.arange(len(a)), np.arange(len(a))] = np.inf  # queries are the pool's first rows
        return d.min(1)

    return {
        "prior_nearest_data": float(np.median(nearest(goals, False))),
        "data_nearest_data": float(np.median(nearest(queries, True))),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="beta-VAE checkpoints (model.pt or pretrain folders)")
    parser.add_argument("--data", required=True, help="a Push data set (ssrl collect)")
    parser.add_argument("--episodes", type=int, default=60, help="episodes of the data to score on")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--profile", type=int, default=0, help="goals of the reward profile (0: none)")
    parser.add_argument("--out", default="outputs/benchmarks/rig_reward_check.json")
    args = parser.parse_args(argv)
    if args.profile < 0:
        parser.error(f"--profile must be >= 0, got {args.profile}")

    import torch

    from ssrl.representations import RolloutData, load_representation
    from ssrl.utils import write_json

    torch.set_num_threads(1)
    data = RolloutData(args.data, max_episodes=args.episodes)
    results = {}
    reps = {m: load_representation(m).eval() for m in args.models}
    first = next(iter(reps.values()))
    torch.manual_seed(0)
    untrained = type(first)(first.config, first.obs_shape).eval()
    for name, rep in [*reps.items(), ("random-init", untrained)]:
        results[name] = score(rep, data, args.pairs)

    def label(model: str) -> str:  # a pretrain folder's name, or the checkpoint file's own
        path = pathlib.Path(model)
        return path.parent.name if path.name == "model.pt" else path.stem

    header = "model | hand R² lin/kNN | puck R² lin/kNN | reward per cm hand / puck | corr hand / puck"
    print(header)
    for name, r in results.items():
        print(
            f"{label(name)} | {r['hand_linear_r2']:.2f} / {r['hand_knn_r2']:.2f} | "
            f"{r['puck_linear_r2']:.2f} / {r['puck_knn_r2']:.2f} | {r['per_cm_hand']:.3f} / {r['per_cm_puck']:.3f} | "
            f"{r['corr_hand']:.2f} / {r['corr_puck']:.2f}"
        )
    labels = [label(m) for m in reps]
    report = {"data": args.data, "episodes": args.episodes, "results": results}
    if args.profile:
        env = profile_env(args.data)
        try:
            profiles = {name: reward_profile(rep, env, args.profile) for name, rep in reps.items()}
        finally:
            env.close()
        print(f"latent distance to the goal image, mean over {args.profile} goals, with one thing moved d cm:")
        print("model | moved | " + " | ".join(f"{d} cm" for d in PROFILE_CM[::3]))
        for name, profile in profiles.items():
            for moved in ("hand", "puck"):
                means = np.nanmean(profile[moved], 0)[::3]
                print(f"{label(name)} | {moved} | " + " | ".join(f"{m:.2f}" for m in means))
        report["profile"] = {
            "cm": PROFILE_CM.tolist(),
            "goals": args.profile,
            "mean": {name: {k: np.nanmean(v, 0).tolist() for k, v in p.items()} for name, p in profiles.items()},
        }
        plot_profiles(profiles, labels, pathlib.Path(args.out).parent / "reward_profile.png")
    for name, r in results.items():
        if "prior_nearest_data" in r:
            print(
                f"{label(name)}: imagined goals lie {r['prior_nearest_data']:.2f} from the nearest data latent; data "
                f"latents {r['data_nearest_data']:.2f} from each other"
            )
    write_json(args.out, report)
    folder = pathlib.Path(args.out).parent
    reconstructions(data, list(reps.values()), labels, folder / "reconstructions.png")
    with_prior = [(rep, lab) for rep, lab in zip(reps.values(), labels) if rep.goal_decoder() is not None]
    prior_goals(data, [r for r, _ in with_prior], [lab for _, lab in with_prior], folder / "prior_goals.png")
    return results


def prior_goals(data, reps, labels: list[str], path: pathlib.Path, n: int = 8, seed: int = 0) -> pathlib.Path | None:
    """``n`` imagined goals of each model (a row each), decoded: what RIG's exploration pursues
    (a conditioned sampler keeps the context of ``n`` frames of ``data``)."""
    if not reps:
        return None
    like = data.stack(np.linspace(0, len(data.state) - 1, n).astype(int), None, 1)
    rows = [
        (label, rep.goal_decoder()(rep.goal_sampler()(n, np.random.default_rng(seed), rep.embed(like))))
        for rep, label in zip(reps, labels)
    ]
    return image_rows(rows, "Imagined goals: samples of each VAE's fitted prior, decoded", path)


def profile_env(data_folder: str):
    """The Push env a data set was collected in (its options, image size and camera)."""
    import json

    from ssrl.envs import make

    meta = json.loads((pathlib.Path(data_folder) / "meta.json").read_text())
    return make(meta["env_id"], size=meta["size"], cameras=meta["cameras"], **meta["env_kwargs"])


def _moved(xy: np.ndarray, cm: float, low, high, rng: np.random.Generator, tries: int = 64):
    """``xy`` moved ``cm`` centimetres in a random direction that stays in the box, or None."""
    for _ in range(tries):
        angle = rng.uniform(0, 2 * np.pi)
        new = xy + cm / 100 * np.array([np.cos(angle), np.sin(angle)])
        if np.all(new >= low) and np.all(new <= high):
            return new
    return None


def reward_profile(rep, env, goals: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"hand": D, "puck": D}``, ``D[k, j]``: the latent distance ``||e(s) - e(g)||`` between
    goal ``k``'s image and the same scene with the hand (or the puck) moved ``PROFILE_CM[j]`` cm
    from its goal position (NaN where no direction keeps it in the hand's box or the goal box)."""
    push = env.unwrapped
    rng = np.random.default_rng(seed)
    boxes = {
        "hand": (slice(0, 2), push.hand_low, push.hand_high),
        "puck": (slice(2, 4), np.array(push.geometry.goal_low), np.array(push.geometry.goal_high)),
    }
    out = {moved: np.full((goals, len(PROFILE_CM)), np.nan) for moved in boxes}
    for k in range(goals):
        env.reset(seed=seed + k)
        goal = push.state_desired_goal
        images, where = [push.render_goal_image(goal)], []
        for moved, (part, low, high) in boxes.items():
            for j, cm in enumerate(PROFILE_CM):
                xy = _moved(goal[part], float(cm), low, high, rng)
                if xy is not None:
                    state = goal.copy()
                    state[part] = xy
                    images.append(push.render_goal_image(state))
                    where.append((moved, j))
        z = rep.embed(np.stack(images))
        for (moved, j), distance in zip(where, np.linalg.norm(z[1:] - z[0], axis=1)):
            out[moved][k, j] = distance
    return out


def plot_profiles(profiles: dict[str, dict[str, np.ndarray]], labels: list[str], path: pathlib.Path) -> pathlib.Path:
    """Two panels (hand moved, puck moved): latent distance against cm, mean and 10-90% band per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssrl.utils import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for profile, label, colour in zip(profiles.values(), labels, plt.cm.tab10.colors):
        for ax, moved in zip(axes, ("hand", "puck")):
            d = profile[moved]
            ax.plot(PROFILE_CM, np.nanmean(d, 0), color=colour, label=label)
            lo, hi = np.nanpercentile(d, [10, 90], axis=0)
            ax.fill_between(PROFILE_CM, lo, hi, color=colour, alpha=0.15, lw=0)
    for ax, moved in zip(axes, ("hand", "puck")):
        ax.set_title(f"only the {moved} moved from its goal", fontsize=10)
        ax.set_xlabel(f"{moved} distance from its goal (cm)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("latent distance ||e(s) - e(g)||\n(RIG's reward is minus this)")
    axes[1].legend(fontsize=8, title="VAE", title_fontsize=8)
    fig.suptitle("What RIG's reward pays near a goal (mean over goals; band: 10-90%)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def reconstructions(data, reps, labels: list[str], path: pathlib.Path, frames: int = 8) -> pathlib.Path:
    """Frames spread over ``data`` (top row) and each VAE's reconstruction of them, a row per
    model labelled with its name."""
    idx = np.linspace(0, len(data.state) - 1, frames).astype(int)
    x = data.stack(idx, None, 1)
    rows = [("data", x)] + [(label, rep.reconstruct(x)) for label, rep in zip(labels, reps)]
    return image_rows(rows, "Push frames (top) and each VAE's reconstruction decode(e(s))", path)


def image_rows(rows: list[tuple[str, np.ndarray]], title: str, path: pathlib.Path) -> pathlib.Path:
    """A figure of image rows ``(label, (n, 3, H, W) uint8 or [0, 1] floats)``, each row labelled,
    saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssrl.utils import atomic_path

    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False)
    for ax_row, (label, images) in zip(axes, rows):
        for ax, image in zip(ax_row, images):
            image = np.asarray(image)
            ax.imshow(image.transpose(1, 2, 0) if image.dtype == np.uint8 else image.transpose(1, 2, 0).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
