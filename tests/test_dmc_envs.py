"""DeepMind Control from pixels: API conformance, determinism, repeats, views, distractors."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ssrl.envs as envs
from ssrl.envs import PLANET_TASKS, DMCEnv, FreeCamera, dmc_id, make_dmc


def rollout(env, seed, n, action_seed=0):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    out = [(obs, 0.0, info["state"])]
    for _ in range(n):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        out.append((obs, reward, info["state"]))
    return out


@pytest.mark.parametrize("domain,task", envs.suite_tasks())
def test_check_env_passes_for_every_registered_id(domain, task):
    import warnings

    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(dmc_id(domain, task))
    check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():  # SB3's checker too (its advice on image sizes is a warning)
        warnings.simplefilter("ignore")
        sb3_check_env(env.unwrapped, warn=False)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert info["state"].dtype == np.float32
    env.close()


def test_planet_tasks_registered_with_default_shapes_and_repeats():
    expected_repeat = {"cartpole": 8, "finger": 2, "walker": 2, "reacher": 4, "cheetah": 4, "ball_in_cup": 4}
    for domain, task in envs.PLANET_TASKS:
        env = gym.make(dmc_id(domain, task))
        obs, info = env.reset(seed=0)
        assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8
        assert env.observation_space == gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
        assert env.unwrapped.action_repeat == expected_repeat[domain]
        assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1
        physics = env.unwrapped.physics
        assert info["state"].shape == (physics.model.nq + physics.model.nv + physics.model.na,)
        env.close()


def test_options_size_stack_camera_and_state_observations():
    env = gym.make("ssrl/cheetah-run-v0", size=(64, 48), frame_stack=2, camera="back")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 64, 48)
    env.close()
    env = gym.make("ssrl/cheetah-run-v0", from_pixels=False)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (17,)  # position 8 + velocity 9
    assert env.unwrapped.action_repeat == 4  # PlaNet default for states too
    env.close()


def test_reset_with_seed_is_deterministic_and_seeds_differ():
    a = rollout(make_dmc("walker", "walk"), seed=3, n=5)
    b = rollout(make_dmc("walker", "walk"), seed=3, n=5)
    c = rollout(make_dmc("walker", "walk"), seed=4, n=5)
    for (oa, ra, sa), (ob, rb, sb) in zip(a, b):
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(sa, sb)
        assert ra == rb
    assert not np.array_equal(a[0][2], c[0][2])


def test_action_repeat_sums_rewards_over_physics_steps():
    repeated = make_dmc("cartpole", "swingup", action_repeat=4, from_pixels=False)
    single = make_dmc("cartpole", "swingup", action_repeat=1, from_pixels=False)
    repeated.reset(seed=7)
    single.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 1)
        _, r4, *_, info4 = repeated.step(action)
        total = 0.0
        for _ in range(4):
            _, r1, *_, info1 = single.step(action)
            total += r1
        assert r4 == pytest.approx(total, rel=1e-9, abs=1e-12)
        np.testing.assert_array_equal(info4["state"], info1["state"])
    assert total > 0  # swingup's reward is positive almost everywhere


def test_time_limit_is_truncation_not_termination():
    env = make_dmc("cartpole", "swingup", from_pixels=False, action_repeat=8)
    env.reset(seed=0)
    steps = 0
    while True:
        *_, terminated, truncated, _ = env.step(np.zeros(1))
        steps += 1
        if terminated or truncated:
            break
    assert (terminated, truncated) == (False, True)
    assert steps == env.max_episode_steps == 125


def test_frame_stack_keeps_newest_frame_last():
    env = make_dmc("cartpole", "swingup")
    obs0, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs0[:3], obs0[6:])  # reset fills the stack with the first frame
    obs1, *_ = env.step(np.ones(1))
    np.testing.assert_array_equal(obs1[:6], obs0[3:])
    np.testing.assert_array_equal(obs1[6:], env._observer.latest_frames()[0].transpose(2, 0, 1))
    assert not np.array_equal(obs1[6:], obs0[6:])


def test_several_cameras_show_the_same_instant():
    multi = make_dmc("cheetah", "run", cameras=["side", "back"])
    side = make_dmc("cheetah", "run", camera="side")
    back = make_dmc("cheetah", "run", camera="back")
    assert set(multi.observation_space.spaces) == {"side", "back"}
    for (om, *_), (os_, *_), (ob, *_) in zip(rollout(multi, 2, 6), rollout(side, 2, 6), rollout(back, 2, 6)):
        np.testing.assert_array_equal(om["side"], os_)
        np.testing.assert_array_equal(om["back"], ob)
    # A free camera adds a view the model does not define.
    extra = make_dmc(
        "cheetah", "run", cameras=["side", FreeCamera(distance=4, azimuth=45, track_body="torso", name="orbit")]
    )
    obs, _ = extra.reset(seed=0)
    assert set(obs) == {"side", "orbit"} and not np.array_equal(obs["side"], obs["orbit"])


def test_agent_camera_observes_the_first_camera_and_gives_the_others_newest_frames():
    """The camera order is the one asked (not the dict's sorted keys), the observation that
    camera's stack and ``info["views"]`` the other's newest frame of the same instant."""
    wrapped = envs.AgentCamera(make_dmc("cheetah", "run", size=32, cameras=["side", "back"]))
    multi = make_dmc("cheetah", "run", size=32, cameras=["side", "back"])
    assert wrapped.observation_space == multi.observation_space["side"] and wrapped.view_names == ("back",)
    assert wrapped.view_shapes == {"back": (3, 32, 32)}
    obs, info = wrapped.reset(seed=3)
    raw, _ = multi.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(4):
        np.testing.assert_array_equal(obs, raw["side"])
        np.testing.assert_array_equal(info["views"]["back"], raw["back"][-3:])
        action = rng.uniform(-1, 1, wrapped.action_space.shape)
        obs, _, _, _, info = wrapped.step(action)
        raw, *_ = multi.step(action)
    with pytest.raises(ValueError, match="at least 2 cameras"):
        envs.AgentCamera(make_dmc("cheetah", "run", size=32))


def test_faithful_mode_matches_dm_control_render_exactly():
    env = make_dmc("walker", "walk", quality="faithful", frame_stack=1)
    env.reset(seed=0)
    obs, *_ = env.step(np.zeros(6))
    reference = env.physics.render(84, 84, camera_id=0)
    np.testing.assert_array_equal(obs.transpose(1, 2, 0), reference)
    fast_obs = make_dmc("walker", "walk", frame_stack=1)
    assert fast_obs.reset(seed=0)[0].shape == obs.shape


def _write_clip(path, n=12):
    import imageio.v2 as imageio

    frames = [np.full((32, 40, 3), (20 * i, 255 - 20 * i, 128), np.uint8) for i in range(n)]
    imageio.mimwrite(path, frames, fps=10, macro_block_size=1)


@pytest.mark.parametrize("kind", ["color", "noise", "video", "folder"])
def test_distractors_change_pixels_but_not_state(kind, tmp_path):
    spec = kind
    if kind == "folder":
        _write_clip(tmp_path / "clip.mp4")
        spec = f"folder:{tmp_path}"
    plain = rollout(make_dmc("cartpole", "swingup"), seed=5, n=4)
    noisy = rollout(make_dmc("cartpole", "swingup", distractor=spec), seed=5, n=4)
    changed = 0
    for (op, rp, sp), (on, rn, sn) in zip(plain, noisy):
        np.testing.assert_array_equal(sp, sn)
        assert rp == rn
        changed += np.mean(op != on)
    assert changed / len(plain) > 0.2  # the background is most of a cartpole frame
    # A new episode draws a new background (colour and video change per episode).
    if kind in ("color", "video"):
        env = make_dmc("cartpole", "swingup", distractor=spec)
        first, _ = env.reset(seed=1)
        second, _ = env.reset()
        assert not np.array_equal(first, second)


def test_distractor_keeps_the_robot_pixels():
    env = make_dmc("cheetah", "run", distractor="noise", frame_stack=1)
    base = make_dmc("cheetah", "run", frame_stack=1)
    noisy, _ = env.reset(seed=0)
    clean, _ = base.reset(seed=0)
    _, mask = env._observer.renderer.render(env.physics.data.ptr, depth=True)
    foreground = ~mask[0]
    assert foreground.mean() > 0.02
    np.testing.assert_array_equal(noisy.transpose(1, 2, 0)[foreground], clean.transpose(1, 2, 0)[foreground])


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(domain="cartpol", task="swingup"), "known domains"),
        (dict(domain="cartpole", task="swingdown"), "balance"),
        (dict(domain="cartpole", task="swingup", camera="nope"), "fixed"),
        (dict(domain="cartpole", task="swingup", camera=7), "out of range"),
        (dict(domain="cartpole", task="swingup", camera="nope", from_pixels=False), "fixed"),
        (dict(domain="cartpole", task="swingup", quality="ultra", from_pixels=False), "fast"),
        (dict(domain="cartpole", task="swingup", size=0), "positive"),
        (dict(domain="cartpole", task="swingup", size=(84, -1)), "positive"),
        (dict(domain="cartpole", task="swingup", frame_stack=0), "frame_stack"),
        (dict(domain="cartpole", task="swingup", action_repeat=0), "action_repeat"),
        (dict(domain="cartpole", task="swingup", distractor="rain"), "color"),
        (dict(domain="cartpole", task="swingup", distractor="folder:/does/not/exist"), "does not exist"),
        (dict(domain="cartpole", task="swingup", quality="ultra"), "fast"),
        (dict(domain="cartpole", task="swingup", cameras=["fixed", "fixed"]), "distinct"),
    ],
)
def test_bad_configuration_names_the_problem(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        DMCEnv(**kwargs)


def test_bad_actions_are_rejected():
    env = make_dmc("walker", "walk")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0]))


def test_unknown_id_through_gym_make():
    with pytest.raises(gym.error.Error):
        gym.make("ssrl/cartpole-swingdown-v0")


def test_render_rgb_array():
    env = gym.make("ssrl/reacher-easy-v0", render_mode="rgb_array", render_size=128)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8 and frame.std() > 0
    env = gym.make("ssrl/reacher-easy-v0", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(env.render(), obs[6:].transpose(1, 2, 0))


def test_state_mode_kwargs_drops_every_pixel_option():
    from ssrl.envs import PIXEL_OPTIONS, state_mode_kwargs

    pixel_kwargs = dict(
        size=(48, 64),
        camera=1,
        frame_stack=2,
        quality="faithful",
        distractor="color",
        render_mode="rgb_array",
        render_size=32,
        action_repeat=2,
    )
    assert set(PIXEL_OPTIONS) >= set(pixel_kwargs) - {"action_repeat"}
    kwargs = state_mode_kwargs(pixel_kwargs)
    assert kwargs == {"action_repeat": 2, "from_pixels": False}
    assert "distractor" in pixel_kwargs  # the caller's dict is left alone
    # A distractor is refused in state mode, so the pixel options must be gone for this to build.
    env = gym.make("ssrl/cartpole-swingup-v0", **state_mode_kwargs(pixel_kwargs))
    assert env.unwrapped.from_pixels is False and env.observation_space.shape == (5,)
    assert env.unwrapped.action_repeat == 2


@pytest.mark.parametrize("domain,task", PLANET_TASKS)
def test_rewards_equal_dm_controls_for_the_same_actions(domain, task):
    """Our env and dm_control itself, from the same initial state, given the same actions."""
    from dm_control import suite

    ours = make_dmc(domain, task, from_pixels=False, action_repeat=1)
    ours.reset(seed=3)
    theirs = suite.load(domain, task)
    theirs.reset()
    with theirs.physics.reset_context():
        theirs.physics.set_state(ours.unwrapped.physics.get_state())
        # Some tasks draw part of the episode into the model, not the state: reacher's target
        # is a geom position (without this, their target was another random one, and rewards
        # differed in about one run in five).
        theirs.physics.model.geom_pos[:] = ours.unwrapped.physics.model.geom_pos
    passed = []
    real_step = ours.unwrapped._env.step
    ours.unwrapped._env.step = lambda a: passed.append(np.array(a)) or real_step(a)
    rng = np.random.default_rng(0)
    for t in range(20):
        action = rng.uniform(-1, 1, ours.action_space.shape)
        action[0] = 1e-17 if t == 0 else action[0]  # a value the old affine map rounded to 0
        _, reward, *_ = ours.step(action)
        assert reward == pytest.approx(theirs.step(action).reward, abs=1e-6)
        assert np.array_equal(passed[-1], action)  # dm_control gets the action itself, not a rounded one
    np.testing.assert_allclose(ours.unwrapped.physics.get_state(), theirs.physics.get_state(), rtol=0, atol=1e-9)


_VECTOR_SCRIPT = """
import os, sys
os.environ.setdefault("MUJOCO_GL", "egl")
import gymnasium as gym, numpy as np
import ssrl.envs
if __name__ == "__main__":
    kwargs = {"context": sys.argv[2]} if sys.argv[2] != "default" else {}
    envs = gym.make_vec(sys.argv[1], num_envs=2, vectorization_mode="async", vector_kwargs=kwargs)
    obs, _ = envs.reset(seed=[3, 4])
    single = gym.make(sys.argv[1])
    first, _ = single.reset(seed=4)
    frames = obs["observation"] if isinstance(obs, dict) else obs
    expected = first["observation"] if isinstance(first, dict) else first
    assert np.array_equal(frames[1], expected), "sub-env 1 must equal a single env reset with its seed"
    for _ in range(3):
        envs.step(envs.action_space.sample())
    envs.close()
    print("ok", frames.shape)
"""


@pytest.mark.parametrize("env_id, context", [("ssrl/cartpole-swingup-v0", "default"), ("ssrl/Push-v0", "spawn")])
def test_async_vector_envs_render_in_forked_and_spawned_workers(env_id, context, tmp_path):
    # Before, the default (fork) context hung forever: AsyncVectorEnv builds one env in the parent
    # to read its spaces, which opened an EGL context that the forked workers inherited.
    import subprocess
    import sys

    script = tmp_path / "vec.py"
    script.write_text(_VECTOR_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), env_id, context], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok (2, "), proc.stderr[-2000:]


def test_rendering_in_a_fork_of_a_rendering_process_is_refused_not_hung(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "fork.py"
    script.write_text(
        "import os, multiprocessing as mp\n"
        "os.environ.setdefault('MUJOCO_GL', 'egl')\n"
        "from ssrl.envs import make\n"
        "def child(q, inherited):\n"
        "    try:\n"
        "        inherited.step(inherited.action_space.sample())\n"  # renders with the parent's context
        "        q.put('rendered')\n"
        "    except RuntimeError as err:\n"
        "        q.put(str(err))\n"
        "    inherited.close()\n"  # must not free the parent's context here: that would hang in EGL
        "    try:\n"
        "        make('ssrl/cartpole-swingup-v0').reset(seed=0); q.put('rendered')\n"
        "    except RuntimeError as err:\n"
        "        q.put(str(err))\n"
        "if __name__ == '__main__':\n"
        "    env = make('ssrl/cartpole-swingup-v0'); env.reset(seed=0)\n"
        "    ctx = mp.get_context('fork'); q = ctx.Queue(); p = ctx.Process(target=child, args=(q, env))\n"
        "    p.start(); print(q.get(timeout=120)); print(q.get(timeout=120)); p.join(timeout=120)\n"
        "    print('exit', p.exitcode)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == "exit 0", proc.stdout + proc.stderr[-2000:]
    for line in lines[:2]:  # the inherited env and a new one: both refused, neither hangs
        assert "forked from one that had opened a GL context" in line and "vector_kwargs={'context': 'spawn'}" in line
