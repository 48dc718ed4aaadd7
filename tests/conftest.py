"""Test set-up: headless rendering and one torch thread (CI has 2 cores shared by everything)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import ssrl  # noqa: E402,F401  (registers the envs before any test makes one)


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
