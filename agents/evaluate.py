"""``ssrl evaluate``: a finished (or running) ``ssrl train`` run's agent, evaluated again, on the
env it trained in or on a changed one.

What a policy does under a change it never saw (held-out object shapes, a distractor, another
camera) is often the question: CC-RIG's claim is that its goals stay plausible for new objects
where RIG's do not. ``evaluate_run(RUN_DIR, env_overrides={...})`` rebuilds the run's evaluation
env exactly as ``ssrl train`` does (the same options, the frozen encoder or, for RIG with online
fine-tuning, the fine-tuned one saved in the checkpoint; an agent-held encoder for the other
regimes), with ``env_overrides`` on top, and runs the deterministic policy for ``episodes``
episodes with seeds ``seed, seed + 1, ...`` (by default the trainer's evaluation seed base, so an
evaluation without overrides repeats the kind of episodes the run's own evaluations used).

It reports the mean and standard deviation of the return, the success rate with its exact
(Clopper-Pearson) 95% interval where the env reports success, and the mean of each final metric
the env names (Push: final puck and hand distances), all written atomically as JSON.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import numpy as np

from ssrl.utils import write_json

from .trainer import EVAL_SEED_BASE, evaluate


def success_interval(hits: int, episodes: int) -> dict[str, Any]:
    """``{successes, episodes, ci95}``: the count with its exact (Clopper-Pearson) 95% interval."""
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(episodes)).proportion_ci(0.95, method="exact")
    return {"successes": int(hits), "episodes": int(episodes), "ci95": [ci.low, ci.high]}


def _load_spec(run_dir: pathlib.Path) -> dict[str, Any]:
    run_json, checkpoint = run_dir / "run.json", run_dir / "checkpoint" / "agent.pt"
    if not run_json.is_file() or not checkpoint.is_file():
        raise ValueError(f"{run_dir} is not an ssrl train run with a checkpoint (run.json, checkpoint/agent.pt)")
    return json.loads(run_json.read_text())


def evaluation_agent_and_env(
    run_dir: str | pathlib.Path, env_overrides: dict[str, Any] | None = None, render: bool = False
):
    """(agent, env) of ``run_dir``'s evaluation, with ``env_overrides`` applied to its env options
    (``render``: the env renders rgb frames). The agent acts only (no replay); one read of the
    checkpoint gives both the agent and, for RIG with online fine-tuning, the fine-tuned VAE."""
    from ssrl.representations import StackedFramesEncoder, load_representation
    from ssrl.representations.online import OnlineFinetuning

    from . import ALGOS
    from .checkpoint import read_checkpoint
    from .run import _reward_option, has_image_goals, make_env, representation_for

    run_dir = pathlib.Path(run_dir)
    spec = _load_spec(run_dir)
    checkpoint = run_dir / "checkpoint" / "agent.pt"
    kwargs = {**spec.get("env_kwargs", {}), **dict(env_overrides or {})}
    regime, reward = spec.get("regime"), spec.get("goal_reward")
    frozen = spec["encoder"] if regime == "frozen" else None
    env = make_env(spec["env_id"], kwargs, frozen, render=render, explore=False, goal_reward=reward)
    agent_encoder = None
    try:
        state = read_checkpoint(checkpoint)  # once: a run still training may write a newer one meanwhile
        if regime in ("finetune", "decoupled", "joint"):
            if has_image_goals(env) and regime == "finetune":  # frames for the agent's encoder, frozen goals
                rep = load_representation(spec["encoder"])
                env = rep.observation_wrapper(env, explore=False, observe_frames=True, **_reward_option(reward))
                agent_encoder = StackedFramesEncoder(rep.encoder, env.observation_space["observation"].shape)
                agent_encoder = copy.deepcopy(agent_encoder)  # (the checkpoint's weights; the goals keep rep's)
            elif has_image_goals(env):  # RIG with online fine-tuning: the encoder as fine-tuned, from the checkpoint
                rep = load_representation(spec["encoder"])
                hooks = state.get("hooks", {})
                if OnlineFinetuning.name not in hooks:
                    raise ValueError(f"{checkpoint} holds no fine-tuned encoder ({OnlineFinetuning.name} state)")
                rep.load_state_dict(hooks[OnlineFinetuning.name]["rep"])
                env = rep.observation_wrapper(env, explore=False, **_reward_option(reward))
            else:  # the agent holds the encoder: a module of its architecture, weights from the checkpoint
                rep = representation_for(
                    spec.get("method"),
                    spec.get("encoder"),
                    spec.get("method_kwargs") or {},
                    env,
                    dict(spec.get("hyperparams") or {}),
                    spec.get("seed", 0),
                )
                agent_encoder = StackedFramesEncoder(rep.encoder, env.observation_space.shape)
        agent = ALGOS[spec["algo"]].from_state(state, device="cpu", encoder=agent_encoder)
    except Exception:
        env.close()
        raise
    return agent, env


def evaluate_run(
    run_dir: str | pathlib.Path,
    episodes: int = 20,
    env_overrides: dict[str, Any] | None = None,
    seed: int = EVAL_SEED_BASE,
    out: str | pathlib.Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s agent (see the module docstring); writes the result to ``out``
    (default ``RUN_DIR/evaluate.json``) and returns it."""
    from ssrl.utils import check_whole

    check_whole("episodes", episodes, 1)
    run_dir = pathlib.Path(run_dir)
    agent, env = evaluation_agent_and_env(run_dir, env_overrides)
    try:
        returns, successes, finals, _ = evaluate(agent, env, episodes, int(seed))
    finally:
        env.close()
    result: dict[str, Any] = {
        "run": str(run_dir),
        "env_steps": agent.num_env_steps,
        "env_overrides": dict(env_overrides or {}),
        "episodes": episodes,
        "seed": int(seed),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "returns": [float(r) for r in returns],
    }
    if successes:
        result["success"] = success_interval(sum(successes), len(successes))
    for key, values in finals.items():
        result[f"final_{key}"] = float(np.mean(values))
        result[f"final_{key}s"] = [float(v) for v in values]
    write_json(out or run_dir / "evaluate.json", result)
    return result


def describe(result: dict[str, Any]) -> str:
    """One line for a person: return, success with its interval, final metrics."""
    text = f"{result['episodes']} episodes at {result['env_steps']} env steps: return {result['return_mean']:.1f}"
    text += f" ± {result['return_std']:.1f}"
    if "success" in result:
        s = result["success"]
        text += f"; success {s['successes']}/{s['episodes']} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
    for key, value in result.items():
        if key.startswith("final_") and not isinstance(value, list):
            text += f"; {key.removeprefix('final_').replace('_', ' ')} {value:.3f}"
    return text
