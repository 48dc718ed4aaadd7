"""Test set-up: headless rendering and one torch thread (CI has 2 cores shared by everything)."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
