"""Test set-up: headless rendering and one torch thread (CI has 2 cores shared by everything)."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Agents default to precision="auto" (bf16 on CPUs with AVX-512 BF16 or AMX): the tests, and the
# bench workers they spawn, see a CPU without them, so "auto" is fp32 on every machine and
# hand-computed values hold; the tests of bf16 ask for it, or patch ssrl.utils.cpu_flags.
os.environ["SSRL_CPU_FLAGS"] = ""

import ssrl  # noqa: E402,F401  (registers the envs before any test makes one)


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


@pytest.fixture(scope="session")
def cartpole(tmp_path_factory):
    """Rollouts most method tests learn from: 4 sticky-random cartpole-swingup episodes of 30
    agent steps at 48x48 (a test file that needs other data defines its own ``cartpole``)."""
    from ssrl.envs.rollouts import collect

    out = tmp_path_factory.mktemp("data") / "cartpole48"
    collect(
        "ssrl/cartpole-swingup-v0",
        policy="sticky_random",
        episodes=4,
        out=out,
        size=48,
        max_steps=30,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture
def tiny_regime_run(tmp_path):
    """``run(method, regime, **method_kwargs) -> (start, checkpoint)``: a 160-env-step SAC run on
    48x48 cartpole with a fresh ``method`` serving the agent in ``regime``; ``start`` is that
    fresh representation as it was before training (same seed), ``checkpoint`` the agent's."""
    import torch

    from ssrl.agents.checkpoint import read_checkpoint
    from ssrl.agents.run import train_run
    from ssrl.representations.regimes import fresh_representation

    def run(method: str, regime: str, **method_kwargs):
        out = tmp_path / f"{method}-{regime}"
        train_run(
            out,
            env_id="ssrl/cartpole-swingup-v0",
            env_kwargs={"size": 48, "task_kwargs": {"time_limit": 0.4}},
            hyperparams=dict(hidden_dims=[16], batch_size=8, buffer_size=400, learning_starts=10),
            env_steps=160,
            method=method,
            regime=regime,
            method_kwargs=method_kwargs,
            eval_every=80,
            eval_episodes=1,
            progress=False,
            tensorboard=False,
        )
        torch.manual_seed(0)  # the run's seed: the fresh representation it started from
        start = fresh_representation(method, (9, 48, 48), 1, **method_kwargs)
        return start, read_checkpoint(out / "checkpoint" / "agent.pt")

    return run
