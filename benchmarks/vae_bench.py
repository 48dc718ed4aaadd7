"""beta-VAE and CC-VAE on their natural data: pretraining speed, probes, reconstructions, goals.

    python -m ssrl.benchmarks.vae_bench [--cores 2] [--size 64] [--steps 4000] [--ccvae-steps 2000] [--out DIR]

For each VAE, Push rollouts with varied objects are collected by ``push_explore`` (beta-VAE:
``ssrl/PushRandomObject-v0``, one object of a new shape, size and colour every episode;
CC-VAE: ``ssrl/PushMultiObject-v0``, three such objects), whole episodes are held out (20%), the
method is pretrained on the rest for a fixed number of steps (its default config: latent 16,
``fast`` trunk, Bernoulli likelihood, beta 10/128, batch 64, Adam 1e-3), its prior is fitted, and
we report

* pretraining speed, steps per second on ``--cores`` pinned cores;
* probes of the trained encoder and of a random-init encoder of the same architecture (same
  seed), on the held-out episodes (:mod:`ssrl.representations.probe`): linear R^2, kNN-MSE and
  GTC against the data's probe target (the env's state observation: hand and object positions
  and velocities; a single frame cannot show the velocities, which caps R^2), and the same three
  scores against the positions alone (the goal coordinates ``[hand_xy, object_xy...]``);
* the position R^2 per dimension (hand x, y, then each object's x, y), in the JSON and printed;
* for CC-VAE, probes of both latents: the stateless encoder (each frame its own context) and
  railrl's ``[mu(s_t | c(s_0)), c(s_0)]`` with the episode's first frame.

Images written under ``--out`` (PNG, 2x nearest-neighbour upscaled):

* ``beta-vae_reconstructions.png``: held-out frames (top) and decode(e(s)) (bottom);
* ``beta-vae_goals.png``: decoded imagined goals from the fitted prior (top) and from N(0, I) (bottom);
* ``cc-vae_reconstructions.png``: held-out frames s_t, their reconstructions given s_0, the first
  frames s_0, and d_0(c(s_0));
* ``cc-vae_goals.png``: for two held-out episodes, the first frame s_0 then decoded goals
  [z ~ N(0, I), c(s_0)].

Data sets are collected into ``--out``/data_* and reused by later runs with the same settings.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import time

SETTINGS = {
    "beta-vae": {"env": "ssrl/PushRandomObject-v0", "n_objects": 1},
    "cc-vae": {"env": "ssrl/PushMultiObject-v0", "n_objects": 3},
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="image size (pixels)")
    parser.add_argument("--episodes", type=int, default=200, help="PushRandomObject episodes")
    parser.add_argument("--ccvae-episodes", type=int, default=200, help="PushMultiObject episodes")
    parser.add_argument(
        "--max-steps", type=int, default=50, help="steps per episode (PushMultiObject's own limit is 100)"
    )
    parser.add_argument("--beta", type=float, default=None, help="beta-VAE's beta (default: the method's)")
    parser.add_argument("--ccvae-beta", type=float, default=None, help="CC-VAE's beta (default: the method's)")
    parser.add_argument("--steps", type=int, default=4000, help="beta-VAE pretraining steps")
    parser.add_argument("--ccvae-steps", type=int, default=2000, help="CC-VAE pretraining steps")
    parser.add_argument("--policy", default="push_explore")
    parser.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/benchmarks/vae_bench")
    args = parser.parse_args(argv)

    from ssrl.benchmarks.common import pin_cores, print_table, save_results

    cores = pin_cores(args.cores)

    import numpy as np
    import torch

    import ssrl  # noqa: F401
    from ssrl.envs.rollouts import DatasetError, RolloutDataset, collect
    from ssrl.representations.data import RolloutData
    from ssrl.representations.pretrain import build, pretrain
    from ssrl.representations.probe import linear_probe_r2, probe, probe_embeddings

    torch.set_num_threads(len(cores))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def dataset(env_id: str, episodes: int) -> RolloutData:
        path = (
            out
            / f"data_{env_id.split('/')[-1]}_{args.size}px_{episodes}x{args.max_steps}_{args.policy}_seed{args.seed}"
        )
        try:
            ds = RolloutDataset(path)
            if len(ds) != episodes:
                raise DatasetError("incomplete")
        except DatasetError:
            shutil.rmtree(path, ignore_errors=True)
            start = time.perf_counter()
            ds = collect(
                env_id,
                policy=args.policy,
                episodes=episodes,
                out=path,
                size=args.size,
                seed=args.seed,
                max_steps=args.max_steps,
                progress=False,
            )
            print(f"collected {episodes} episodes of {env_id} in {time.perf_counter() - start:.0f} s")
        return RolloutData(ds)

    def scores(z_train, z_test, train, test, goal_dim) -> dict[str, float]:
        s_train, s_test = train.features[:, :goal_dim], test.features[:, :goal_dim]
        pos = probe_embeddings(z_train, s_train, z_test, s_test)
        per_dim = linear_probe_r2(z_train, s_train, z_test, s_test)[1]  # hand x, y, then each object's x, y
        return {**{f"pos_{k}": pos[k] for k in ("r2", "knn_mse", "gtc")}, "pos_r2_per_dim": per_dim.round(3).tolist()}

    results: dict[str, dict] = {}
    rows = []
    for method in args.methods:
        setting = SETTINGS[method]
        data = dataset(setting["env"], args.episodes if method == "beta-vae" else args.ccvae_episodes)
        train, test = data.split(0.2, seed=args.seed)
        goal_dim = 2 + 2 * setting["n_objects"]
        steps = args.steps if method == "beta-vae" else args.ccvae_steps
        beta = args.beta if method == "beta-vae" else args.ccvae_beta
        config = {} if beta is None else {"beta": beta}
        torch.manual_seed(args.seed)
        random_init = build(method, train, **config).eval()
        rep, summary = pretrain(
            method, train, out=out / method, steps=steps, seed=args.seed, config=config, overwrite=True, progress=False
        )
        print(
            f"{method}: {steps} steps in {summary['wall_time']:.0f} s ({summary['steps_per_s']:.1f} steps/s), "
            f"last {', '.join(f'{k} {v:.4g}' for k, v in summary['last'].items() if k != 'step')}"
        )
        rep.fit_prior(train)
        rep.save(out / method / "model.pt")  # with the fitted prior
        entry = {
            "env": setting["env"],
            "train_frames": len(train),
            "test_frames": len(test),
            "train_episodes": train.num_episodes,
            "test_episodes": test.num_episodes,
            "steps": steps,
            "steps_per_s": summary["steps_per_s"],
            "wall_time": summary["wall_time"],
            "last": summary["last"],
            "config": dict(vars(rep.config)),
        }
        for name, r in (("trained", rep), ("random", random_init)):
            full = probe(r, train, test)
            k = r.obs_shape[0] // 3
            z_tr = r.embed(train.stack(np.arange(len(train)), None, k))
            z_te = r.embed(test.stack(np.arange(len(test)), None, k))
            entry[name] = {key: full[key] for key in ("r2", "knn_mse", "gtc")}
            entry[name].update(scores(z_tr, z_te, train, test, goal_dim))
            if method == "cc-vae":
                z_tr, z_te = r.episode_latents(train), r.episode_latents(test)
                entry[name + "_episode_context"] = scores(z_tr, z_te, train, test, goal_dim)
        results[method] = entry
        names = ("trained", "random") + (
            ("trained_episode_context", "random_episode_context") if method == "cc-vae" else ()
        )
        for name in names:
            s = entry[name]
            rows.append(
                [
                    method,
                    name,
                    f"{entry['steps_per_s']:.1f}" if name == "trained" else "",
                    s.get("r2", float("nan")),
                    s.get("knn_mse", float("nan")),
                    s.get("gtc", float("nan")),
                    s["pos_r2"],
                    s["pos_knn_mse"],
                    s["pos_gtc"],
                ]
            )
        _images(method, rep, test, out, np.random.default_rng(args.seed))

    for method, entry in results.items():
        for name in ("trained", "random"):
            per_dim = entry[name]["pos_r2_per_dim"]
            print(f"{method} {name}: held-out R^2 per position dim (hand x, y, objects x, y...): {per_dim}")
    print(f"\nVAEs on Push, {args.size}x{args.size}, {len(cores)} core(s); probes on held-out episodes")
    table = print_table(
        ["method", "encoder", "steps/s", "R^2", "kNN-MSE", "GTC", "pos R^2", "pos kNN-MSE", "pos GTC"], rows
    )
    save_results(out / "vae_bench.json", "vae_bench", dict(results, table=table), dict(vars(args), cores=cores))
    return results


def _grid(rows) -> np.ndarray:  # noqa: F821
    """Rows of float [0,1] or uint8 (n, 3, H, W) images -> one uint8 (H*, W*, 3) image, 2x upscaled."""
    import numpy as np

    def row(images):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        return np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=1)

    image = np.concatenate([row(r) for r in rows], axis=0)
    return image.repeat(2, axis=0).repeat(2, axis=1)


def _images(method, rep, test, out: pathlib.Path, rng) -> None:
    import imageio.v2 as imageio
    import numpy as np

    n = min(8, test.num_episodes)
    idx = test.ep_start[:n] + np.minimum(test.ep_len[:n], 25)  # mid-episode, one per held-out episode
    frames = test.stack(idx, None, rep.config.frame_stack)
    if method == "beta-vae":
        imageio.imwrite(out / "beta-vae_reconstructions.png", _grid([frames, rep.reconstruct(frames)]))
        goals = [rep.decode(rep.sample_goals(8, rng)), rep.decode(rep.sample_goals(8, rng, prior="standard"))]
        imageio.imwrite(out / "beta-vae_goals.png", _grid(goals))
    else:
        first = test.first_frame(idx)
        recon = rep.reconstruct(frames, first)
        imageio.imwrite(
            out / "cc-vae_reconstructions.png", _grid([frames, recon, first, rep.decode_context(rep.context_of(first))])
        )
        rows = []
        for e in range(min(2, test.num_episodes)):
            s0 = test.first_frame(test.ep_start[[e]])
            goals = rep.decode(rep.sample_goals(np.repeat(s0, 7, axis=0), rng))
            rows.append(np.concatenate([s0.astype(np.float32) / 255, goals]))
        imageio.imwrite(out / "cc-vae_goals.png", _grid(rows))
    print(f"images written to {out}/{method}_*.png")


if __name__ == "__main__":
    main()
