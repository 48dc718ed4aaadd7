"""The training loop of every agent, with evaluation, logging, checkpoints and resume.

One loop serves SAC and TD3, from states, latents or pixels, with or without an auxiliary
objective. Counting follows the PlaNet benchmark: an *env step* is one step of the underlying
simulator, so an agent step with action repeat R counts R env steps.

With a ``run_dir`` the loop writes::

    run_dir/metrics.jsonl        one JSON record per evaluation ("eval") and per log interval ("train")
    run_dir/eval.csv             env_steps, mean return, std, success rate, wall time, and the
                                 mean final value of each metric the env names in
                                 ``final_metrics`` (final_puck_distance, ...)
    run_dir/tb/                  TensorBoard scalars
    run_dir/videos/              an mp4 of the first evaluation episode at each evaluation (if asked)
    run_dir/checkpoint/agent.pt  weights, optimisers, counters, RNG states (atomic)
    run_dir/checkpoint/replay/   the replay buffer, saved incrementally
    run_dir/final.json           written when the run reaches its budget

Checkpoints are taken at episode boundaries, where the whole state of the run is the agent, its
replay and its RNGs (each episode is reset with a seed drawn from the agent's generator), so a
killed run resumed from its last checkpoint continues exactly as if it had not stopped.

``hooks`` are told when a training episode ends (``hook.after_episode(agent)``) and run their work
before the next one starts (``hook.before_episode(agent)``), so a run that stops at its budget
keeps the state its last evaluation saw; their latest losses (``hook.last_metrics``) join the
"train" records, and their state (``hook.state_dict(replay)``) travels in the agent's checkpoint
under ``hooks`` (``train_run`` restores it on resume). RIG's online fine-tuning
(:class:`ssrl.representations.online.OnlineFinetuning`) is one.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from ssrl.runs import truncate_records
from ssrl.utils import write_json, write_video

from .base import OffPolicyAgent, TrainingDiverged

EVAL_SEED_BASE = 1_000_000  # eval episodes use their own seeds, never the training stream's


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def action_repeat_of(env: gym.Env) -> int:
    return int(getattr(env.unwrapped, "action_repeat", 1))


def evaluate(agent: OffPolicyAgent, env: gym.Env, episodes: int, seed: int, record_video: bool = False):
    """Run the deterministic policy for ``episodes`` episodes.

    Returns ``(returns, successes, finals, frames)``: ``finals`` maps each key the env names in
    ``final_metrics`` (e.g. Push's ``puck_distance``) to its value in the last step's ``info``,
    one per episode (RIG's "final puck distance")."""
    keys = tuple(getattr(env.unwrapped, "final_metrics", ()))
    returns, successes, frames = [], [], []
    finals: dict[str, list[float]] = {key: [] for key in keys}
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        total, success, done = 0.0, None, False
        recording = record_video and e == 0
        if recording:
            frames.append(env.render())
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, deterministic=True))
            total += float(reward)
            done = terminated or truncated
            if "is_success" in info:
                success = bool(info["is_success"])
            if recording:
                frames.append(env.render())
        returns.append(total)
        if success is not None:
            successes.append(success)
        for key in keys:
            finals[key].append(float(info[key]))
    return returns, successes, finals, frames


class Logger:
    """JSONL + CSV + TensorBoard, all appended as the run goes.

    ``resume_from``: the env steps of the checkpoint the run (re)starts from; records written
    after it (by a run killed later) are dropped, since the run writes them again. A run that
    starts from scratch (0) drops every earlier record, its step-0 evaluation included.
    """

    def __init__(self, run_dir: pathlib.Path, tensorboard: bool = True, resume_from: int = 0) -> None:
        self.run_dir = run_dir
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "eval.csv"
        keep_until = resume_from if resume_from > 0 else -1
        self.truncate_after(keep_until)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events a killed run wrote past its checkpoint.
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=keep_until + 1)

    def truncate_after(self, env_steps: int) -> None:
        """Drop records written after ``env_steps``."""
        for log in (self.jsonl, self.csv):
            truncate_records(log, "env_steps", lambda steps: steps <= env_steps)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The last record of ``kind`` kept in the log ("eval" or "train"), or None."""
        if not self.jsonl.exists():
            return None
        records = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
        return next((r for r in reversed(records) if r["kind"] == kind), None)

    def write(self, record: dict[str, Any]) -> None:
        with self.jsonl.open("a") as fh:
            # NaN and infinity are not JSON: a metric that has none yet is written as null.
            fh.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
        if record["kind"] == "eval":
            base = ["env_steps", "return_mean", "return_std", "success_rate", "wall_time"]
            if self.csv.exists():
                with self.csv.open(newline="") as fh:
                    header = next(csv.reader(fh), base)
            else:
                # Scalar final-step metrics the env declares (final_puck_distance, ...) follow.
                finals = [k for k, v in record.items() if k.startswith("final_") and not isinstance(v, list)]
                header = base + finals
                with self.csv.open("w", newline="") as fh:
                    csv.writer(fh).writerow(header)
            with self.csv.open("a", newline="") as fh:
                csv.writer(fh).writerow([record.get(key, "") for key in header])
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "env_steps":
                    self.tb.add_scalar(f"{record['kind']}/{key}", value, record["env_steps"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Runs an agent in an env until a budget of env steps.

    Args:
        agent, env: the agent and its training env.
        eval_env: env for evaluation (deterministic policy); ``None`` skips evaluation.
        eval_every: env steps between evaluations (and at step 0).
        eval_episodes: episodes per evaluation.
        run_dir: where logs and checkpoints go; ``None`` keeps nothing on disk.
        checkpoint_every: env steps between checkpoints (taken at the next episode end).
        log_every: env steps between "train" records.
        video: record the first evaluation episode (needs ``eval_env`` with render_mode="rgb_array").
        progress: show a progress bar.
        tensorboard: also write TensorBoard scalars.
        callback: called with a status dict (env steps, budget, latest returns) at every
            evaluation and log interval; ``ssrl bench`` uses it for its live display.
        hooks: objects with ``name``, ``last_metrics``, ``after_episode(agent)``,
            ``before_episode(agent)``, ``state_dict(replay)`` and ``load_state_dict(state, replay)``
            (see the module docstring; a resumed run's hooks are restored by the caller).
    """

    def __init__(
        self,
        agent: OffPolicyAgent,
        env: gym.Env,
        eval_env: gym.Env | None = None,
        eval_every: int = 10_000,
        eval_episodes: int = 10,
        run_dir: str | pathlib.Path | None = None,
        checkpoint_every: int | None = None,
        log_every: int = 1000,
        video: bool = False,
        progress: bool = True,
        tensorboard: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None,
        hooks: list[Any] | None = None,
    ) -> None:
        self.agent, self.env, self.eval_env = agent, env, eval_env
        self.hooks = list(hooks or [])
        self.callback = callback
        self._budget = 0
        self.eval_every, self.eval_episodes = int(eval_every), int(eval_episodes)
        self.run_dir = pathlib.Path(run_dir) if run_dir is not None else None
        self.checkpoint_every = int(checkpoint_every or eval_every)
        self.log_every = int(log_every)
        self.video = video
        self.progress = progress
        self.action_repeat = action_repeat_of(env)
        self.logger = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.logger = Logger(self.run_dir, tensorboard, resume_from=agent.num_env_steps)
        self.last_return = agent.last_episode_return  # nan in a new run
        self.last_eval = math.nan
        elapsed = 0.0
        if self.logger is not None and agent.num_env_steps > 0:
            # A resumed run goes on with its own clock and its last evaluation, as if never stopped.
            last_eval, last_any = self.logger.last("eval"), self.logger.last("train") or self.logger.last("eval")
            if last_eval is not None and last_eval.get("return_mean") is not None:
                self.last_eval = last_eval["return_mean"]
            elapsed = max((r or {}).get("wall_time") or 0.0 for r in (last_eval, last_any))
        self._start_time = time.perf_counter() - elapsed

    # -- paths -----------------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> pathlib.Path:
        return self.run_dir / "checkpoint" / "agent.pt"

    @property
    def replay_dir(self) -> pathlib.Path:
        return self.run_dir / "checkpoint" / "replay"

    # -- the loop ----------------------------------------------------------------------------------

    def train(self, total_env_steps: int) -> dict[str, Any]:
        agent, env = self.agent, self.env
        c = agent.config
        self._budget = total_env_steps
        self._warn_if_no_update(total_env_steps)
        bar = None
        if self.progress:
            import sys

            from tqdm import tqdm

            bar = tqdm(
                total=total_env_steps,
                initial=agent.num_env_steps,
                unit="env step",
                dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 60.0,
            )
        next_eval = self._next_multiple(agent.num_env_steps, self.eval_every, include_current=agent.num_env_steps == 0)
        next_ckpt = self._next_multiple(agent.num_env_steps, self.checkpoint_every)
        next_log = self._next_multiple(agent.num_env_steps, self.log_every)
        metrics: dict[str, Any] = {}
        window_start, window_steps = time.perf_counter(), 0
        try:
            if self.eval_env is not None and agent.num_env_steps >= next_eval:
                self._evaluate()
                next_eval += self.eval_every
            while agent.num_env_steps < total_env_steps:
                for hook in self.hooks:  # work due at the last episode's end, now that training goes on
                    hook.before_episode(agent)
                obs, info = env.reset(seed=int(agent.rng.integers(2**31)))
                agent.check_observation(obs)
                keep_views = bool(agent.replay.views)  # other cameras' frames (AgentCamera), if kept
                agent.replay.start_episode(obs, info["views"] if keep_views else None)
                episode_return, done = 0.0, False
                while not done:
                    if agent.num_agent_steps < c.learning_starts:
                        action = agent.random_action()
                    else:
                        action = agent.act(obs)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    agent.check_observation(next_obs)
                    if not np.isfinite(reward):
                        raise TrainingDiverged(f"the env returned reward {reward} at env step {agent.num_env_steps}")
                    views = info["views"] if keep_views else None
                    agent.replay.add(agent.action_to_unit(action), reward, terminated, next_obs, views)
                    obs, done = next_obs, terminated or truncated
                    episode_return += float(reward)
                    agent.num_agent_steps += 1
                    agent.num_env_steps += self.action_repeat
                    window_steps += self.action_repeat
                    if bar is not None:
                        bar.update(self.action_repeat)
                    if agent.num_agent_steps >= c.learning_starts:
                        for _ in range(c.updates_per_step):
                            metrics = agent.update(agent.replay.sample(c.batch_size))
                    if self.eval_env is not None and agent.num_env_steps >= next_eval:
                        self._evaluate()
                        next_eval += self.eval_every
                        if bar is not None:
                            bar.set_postfix(
                                eval_return=f"{self.last_eval:.1f}", episode_return=f"{self.last_return:.1f}"
                            )
                    if agent.num_env_steps >= next_log:
                        elapsed = time.perf_counter() - window_start
                        if self.logger is not None:
                            self._log_train(metrics, window_steps / max(elapsed, 1e-9))
                        self._notify(window_steps / max(elapsed, 1e-9))
                        window_start, window_steps = time.perf_counter(), 0
                        next_log += self.log_every
                    if agent.num_env_steps >= total_env_steps:
                        break  # the budget ends mid-episode; the last transitions are in the replay
                agent.replay.end_episode()
                agent.num_episodes += 1
                self.last_return = agent.last_episode_return = episode_return
                for hook in self.hooks:
                    hook.after_episode(agent)
                if bar is not None:
                    bar.set_postfix(eval_return=f"{self.last_eval:.1f}", episode_return=f"{episode_return:.1f}")
                if self.run_dir is not None and agent.num_env_steps >= next_ckpt:
                    self.checkpoint()
                    next_ckpt = self._next_multiple(agent.num_env_steps, self.checkpoint_every)
        finally:
            if bar is not None:
                bar.close()
            if self.logger is not None:
                self.logger.close()
        summary = {
            "env_steps": agent.num_env_steps,
            "agent_steps": agent.num_agent_steps,
            "updates": agent.num_updates,
            "episodes": agent.num_episodes,
            "last_eval_return": self.last_eval,
            "wall_time": time.perf_counter() - self._start_time,
        }
        if self.run_dir is not None:
            self.checkpoint()
            write_json(self.run_dir / "final.json", summary)
        return summary

    def _warn_if_no_update(self, total_env_steps: int) -> None:
        """A budget that ends inside the random-action warm-up trains nothing: say so up front
        (learning_starts counts agent steps, so with action repeat 8 its 5,000 are 40,000 env steps)."""
        repeat = action_repeat_of(self.env)
        agent_steps = -(-(total_env_steps - self.agent.num_env_steps) // repeat) + self.agent.num_agent_steps
        if agent_steps <= self.agent.config.learning_starts:
            warnings.warn(
                f"this run ends at {agent_steps} agent steps (env steps / action repeat {repeat}), within "
                f"learning_starts={self.agent.config.learning_starts}: the agent will not be updated at all and its "
                "evaluations are of random initial weights. Lower it (--set learning_starts=...) or raise the budget.",
                stacklevel=3,
            )

    @staticmethod
    def _next_multiple(value: int, every: int, include_current: bool = False) -> int:
        if every <= 0:
            return math.inf
        if include_current and value % every == 0:
            return value
        return (value // every + 1) * every

    def checkpoint(self) -> None:
        """Save agent and replay (between episodes). The replay's new chunks go first, then the
        agent file, which records how much of the replay belongs to it and so marks the
        checkpoint complete; only then are chunks the replay has overwritten removed. A kill at
        any point leaves the previous or the new checkpoint whole."""
        self.agent.replay_meta = self.agent.replay.save(self.replay_dir, prune=False)
        self.agent.hook_state = {hook.name: hook.state_dict(self.agent.replay) for hook in self.hooks}
        self.agent.save(self.checkpoint_path)
        self.agent.replay.prune(self.replay_dir)

    def _evaluate(self) -> None:
        agent = self.agent
        index = agent.num_env_steps // max(self.eval_every, 1)
        returns, successes, finals, frames = evaluate(
            agent,
            self.eval_env,
            self.eval_episodes,
            EVAL_SEED_BASE + index * self.eval_episodes,
            record_video=self.video and self.run_dir is not None,
        )
        self.last_eval = float(np.mean(returns))
        record = {
            "kind": "eval",
            "env_steps": agent.num_env_steps,
            "agent_steps": agent.num_agent_steps,
            "return_mean": self.last_eval,
            "return_std": float(np.std(returns)),
            "returns": returns,
            "wall_time": time.perf_counter() - self._start_time,
        }
        if successes:
            record["success_rate"] = float(np.mean(successes))
        for key, values in finals.items():
            record[f"final_{key}"] = float(np.mean(values))
            record[f"final_{key}s"] = values
        if self.logger is not None:
            self.logger.write(record)
        self._notify()
        if frames:
            write_video(
                self.run_dir / "videos" / f"eval_{agent.num_env_steps:09d}.mp4",
                frames,
                fps=self.eval_env.metadata.get("render_fps", 30),
            )

    def _notify(self, env_steps_per_s: float | None = None) -> None:
        if self.callback is not None:
            self.callback(
                {
                    "env_steps": self.agent.num_env_steps,
                    "budget": self._budget,
                    "eval_return": self.last_eval,
                    "episode_return": self.last_return,
                    "env_steps_per_s": env_steps_per_s,
                    "updates": self.agent.num_updates,
                    "replay_nbytes": self.agent.replay.nbytes,
                }
            )

    def _log_train(self, metrics: dict[str, Any], env_steps_per_s: float) -> None:
        agent = self.agent
        record = {
            "kind": "train",
            "env_steps": agent.num_env_steps,
            "agent_steps": agent.num_agent_steps,
            "updates": agent.num_updates,
            "episode_return": self.last_return,
            "env_steps_per_s": env_steps_per_s,
            "replay_bytes": agent.replay.nbytes,
            "wall_time": time.perf_counter() - self._start_time,
        }
        record.update({k: float(v) for k, v in metrics.items()})
        for hook in self.hooks:  # their latest losses (saved with them, so a resumed run logs the same)
            record.update(hook.last_metrics)
        self.logger.write(record)
