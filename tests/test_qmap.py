"""The grasp Q-map: the env's image in action coordinates, and a bandit Q-function over it."""

import numpy as np
import pytest
import torch

from ssrl.agents import QMap
from ssrl.envs import make as make_env

GRID = 16


@pytest.fixture(scope="module")
def grid_env():
    return make_env("ssrl/Grasp-v0", size=48, action_grid=GRID, n_objects=4)


def test_the_camera_axis_projects_to_the_image_centre(grid_env):
    from ssrl.envs.manipulation.grasp import BIN_CAMERA

    row, column = grid_env.unwrapped.project_to_bin_camera(np.array([BIN_CAMERA.target]))[0]
    assert row == pytest.approx(48 / 2 - 0.5) and column == pytest.approx(48 / 2 - 0.5)


def test_the_action_grid_shows_each_object_where_a_grasp_at_its_centre_lands(grid_env):
    base = grid_env.unwrapped
    matches, total = 0, 0
    for seed in range(3):
        obs, _ = grid_env.reset(seed=seed)
        assert obs.shape == (3, GRID, GRID) and obs.dtype == np.uint8
        for i in range(base.n_objects):
            x, y, _ = base.scene.object_pos()[i]
            ax, ay, _ = base.grasp_to_action(x, y)
            pixel = obs[:, int((ay + 1) / 2 * GRID), int((ax + 1) / 2 * GRID)].astype(float)
            colour = np.asarray(base.scene.specs[i].rgba[:3]) * 255
            cosine = pixel @ colour / (np.linalg.norm(pixel) * np.linalg.norm(colour))
            matches += cosine > 0.97  # the object's hue, not the grey bin floor's
            total += 1
    assert matches >= total - 2  # an object stacked on another may be hidden


def test_action_grid_needs_the_bin_camera_alone_in_pixel_mode():
    with pytest.raises(ValueError, match="action_grid resamples"):
        make_env("ssrl/Grasp-v0", from_pixels=False, action_grid=GRID)
    with pytest.raises(ValueError, match="action_grid must be"):
        make_env("ssrl/Grasp-v0", action_grid=1)


def test_cells_and_centres_invert_each_other(grid_env):
    agent = QMap(grid_env, seed=0, channels=4)
    k, i, j = torch.tensor([0, 3, 2]), torch.tensor([0, 15, 7]), torch.tensor([15, 0, 8])
    centres = agent.centres(k, i, j)
    for got, want in zip(agent.cells(centres), (k, i, j)):
        torch.testing.assert_close(got, want)
    # The yaw's ends are one angle: +1 falls in the first bin, as -1 does.
    assert agent.cells(torch.tensor([[0.0, 0.0, 1.0]]))[0].item() == 0
    assert agent.cells(torch.tensor([[-1.0, -1.0, -1.0]]))[1:] == (torch.tensor([0]), torch.tensor([0]))


def test_policy_takes_the_argmax_and_updates_regress_the_executed_cell(grid_env, monkeypatch):
    agent = QMap(grid_env, seed=0, channels=8, epsilon=0.0, critic_lr=1e-2)
    obs, _ = grid_env.reset(seed=0)
    x = agent.obs_to_tensor(agent._batch_obs(obs))
    q = torch.zeros(1, 4, GRID, GRID)
    q[0, 2, 5, 11] = 1.0
    with monkeypatch.context() as m:
        m.setattr(agent, "q_values", lambda _: q)
        torch.testing.assert_close(
            agent.policy(x, deterministic=True), agent.centres(*map(torch.tensor, ([2], [5], [11])))
        )
    # Regression: a batch rewarding one grasp with 1 and another with 0 pulls those cells there.
    images = np.repeat(obs[None], 2, axis=0)
    actions = agent.centres(torch.tensor([1, 3]), torch.tensor([4, 9]), torch.tensor([6, 2])).numpy()
    from ssrl.agents.replay import Batch

    batch = Batch(obs=images, action=actions, reward=np.array([1.0, 0.0], np.float32), next_obs=images, discount=None)
    first = agent.update(batch)["critic_loss"].item()
    for _ in range(250):
        metrics = agent.update(batch)
    values = agent.q_values(agent.obs_to_tensor(images))[0]
    assert values[1, 4, 6].item() == pytest.approx(1.0, abs=0.05)
    assert values[3, 9, 2].item() == pytest.approx(0.0, abs=0.05)
    assert metrics["critic_loss"].item() < 1e-3 < first


def test_qmap_refuses_camera_images_and_pretrained_encoders():
    with pytest.raises(ValueError, match="action_grid"):
        QMap(_plain_grasp())
    from ssrl.representations.backbones import make_encoder

    with pytest.raises(ValueError, match="adopts no pretrained encoder"):
        QMap(make_env("ssrl/Grasp-v0", size=48, action_grid=GRID), encoder=make_encoder("fast", 3, 48, 8))


def _plain_grasp():
    """A grasping env whose image is the camera's (non-square: not an action grid)."""
    return make_env("ssrl/Grasp-v0", size=(48, 64))


def test_ssrl_train_runs_the_qmap_and_its_checkpoint_acts_the_same(tmp_path):
    from ssrl.agents.run import train_run

    train_run(
        tmp_path / "run",
        "ssrl/Grasp-v0",
        algo="qmap",
        env_steps=40,
        env_kwargs={"size": 48, "action_grid": GRID, "n_objects": 3, "max_attempts": 2},
        hyperparams={"channels": 4, "batch_size": 8, "learning_starts": 20},
        eval_every=40,
        eval_episodes=1,
        progress=False,
        tensorboard=False,
    )
    agent = QMap.load(tmp_path / "run" / "checkpoint" / "agent.pt")
    assert agent.num_updates == 40 - 20 + 1  # one update a grasp from the 20th on
    env = make_env("ssrl/Grasp-v0", size=48, action_grid=GRID, n_objects=3)
    obs, _ = env.reset(seed=0)
    again = QMap.load(tmp_path / "run" / "checkpoint" / "agent.pt")
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), again.act(obs, deterministic=True))


def test_the_state_form_of_an_action_grid_env_drops_the_grid():
    from ssrl.envs import state_mode_kwargs

    kwargs = state_mode_kwargs({"size": 64, "action_grid": GRID, "n_objects": 3})
    assert kwargs == {"n_objects": 3, "from_pixels": False}
    assert make_env("ssrl/Grasp-v0", **kwargs).observation_space.shape == (3 + 10 * 3,)
