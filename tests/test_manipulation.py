"""Manipulation scenes: goal-env API, goal images, real grasps, triplets, policies, data, errors."""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ssrl.envs.manipulation import ENVS, GraspEnv, GraspGoalEnv, PushEnv, PushTaskEnv
from ssrl.envs.manipulation.scene import SHAPES, random_color
from ssrl.envs.policies import make_policy
from ssrl.envs.rollouts import collect


def run_policy(env, policy, seed, steps=None):
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    out = [(obs, None, info)]
    for _ in range(steps or 10**9):
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        out.append((obs, reward, info))
        if terminated or truncated:
            break
    return out


def red_centroid(image):
    """Pixel centroid (row, col) of the red puck in a (3, H, W) image."""
    r, g, b = image.astype(int)
    mask = (r > 120) & (g < 70) & (b < 70)
    assert mask.sum() > 5, "no puck pixels"
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def project(env, camera, point, size):
    """Pixel (row, col) where ``point`` appears in ``camera`` at ``size`` x ``size``."""
    model, data = env.model, env.data
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    rel = data.cam_xmat[cam].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam])
    f = 0.5 * size / math.tan(math.radians(model.cam_fovy[cam]) / 2)
    return np.array([size / 2 - f * rel[1] / -rel[2], size / 2 + f * rel[0] / -rel[2]])


# -- API ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_pixels", [True, False])
@pytest.mark.parametrize("env_id", list(ENVS))
def test_check_env_passes_for_every_id(env_id, from_pixels):
    import warnings

    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, from_pixels=from_pixels)
    check_env(env.unwrapped, skip_render_check=True)
    # SB3's checker takes an env with compute_reward for a goal env; Grasp-v0 used to have one.
    # It is called on the unwrapped env: Gymnasium 1.x wrappers do not forward compute_reward
    # (SB3's HerReplayBuffer reaches it with env.get_wrapper_attr("compute_reward")).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env.unwrapped, warn=False)
    assert hasattr(env.unwrapped, "compute_reward") == isinstance(env.observation_space, gym.spaces.Dict)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert info["state"].dtype == np.float32 and info["state"].shape == env.unwrapped.state_space.shape
    env.close()


def test_push_spaces_and_info():
    env = gym.make("ssrl/Push-v0")
    obs, info = env.reset(seed=0)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    for key in obs:
        assert obs[key].shape == (3, 84, 84) and obs[key].dtype == np.uint8
    assert env.action_space.shape == (2,) and env.unwrapped.action_repeat == 1
    obs, reward, terminated, truncated, info = env.step(np.zeros(2))
    np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"][-3:])
    for key in ("hand_distance", "puck_distance", "is_success", "state", "state_achieved_goal", "state_desired_goal"):
        assert key in info
    assert info["state"].dtype == np.float32 and not terminated and not truncated
    assert info["state_desired_goal"].shape == (4,)
    state = gym.make("ssrl/PushMultiObject-v0", from_pixels=False)
    obs, info = state.reset(seed=0)
    assert obs["observation"].shape == (16,) and obs["desired_goal"].shape == (8,)
    assert info["object_distances"].shape == (3,)
    multi = gym.make("ssrl/Push-v0", cameras=["push", "front"], frame_stack=2)
    obs, _ = multi.reset(seed=0)
    assert obs["observation"].shape == (12, 84, 84) and obs["desired_goal"].shape == (6, 84, 84)
    np.testing.assert_array_equal(obs["achieved_goal"][:3], obs["observation"][3:6])
    np.testing.assert_array_equal(obs["achieved_goal"][3:], obs["observation"][9:12])


def test_reset_is_deterministic_and_episodes_differ():
    for env_id, action in (
        ("ssrl/PushRandomObject-v0", np.array([0.5, -0.5])),
        ("ssrl/Grasp-v0", np.array([0.1, 0.2, 0.3])),
    ):
        a, b = gym.make(env_id), gym.make(env_id)
        obs_a, info_a = a.reset(seed=7)
        obs_b, info_b = b.reset(seed=7)
        np.testing.assert_array_equal(info_a["state"], info_b["state"])
        step_a, step_b = a.step(action), b.step(action)
        np.testing.assert_array_equal(step_a[4]["state"], step_b[4]["state"])
        first = obs_a["desired_goal"] if isinstance(obs_a, dict) else obs_a
        _, info_c = a.reset(seed=8)
        assert not np.array_equal(info_a["state"], info_c["state"])
        assert first.std() > 5  # a real image, not a blank one


def test_pixel_and_state_modes_follow_the_same_physics():
    """Rendering goal images (teleport, render, restore) leaves the physics untouched."""
    pixels, states = PushEnv(from_pixels=True), PushEnv(from_pixels=False)
    _, ip = pixels.reset(seed=3)
    _, is_ = states.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        action = rng.uniform(-1, 1, 2)
        *_, ip = pixels.step(action)
        *_, is_ = states.step(action)
    np.testing.assert_array_equal(ip["state"], is_["state"])
    assert ip["hand_distance"] == is_["hand_distance"]


# -- rewards and goals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "from_pixels,reward_type",
    [(False, "dense"), (False, "object_dense"), (False, "sparse"), (True, "image_distance"), (True, "image_sparse")],
)
def test_compute_reward_is_vectorised_and_equals_step_reward(from_pixels, reward_type):
    env = PushEnv(from_pixels=from_pixels, reward_type=reward_type, n_objects=2, randomize_objects=True)
    expert = make_policy("push_expert", env)
    steps = run_policy(env, expert, seed=2, steps=25)
    achieved = np.stack([o["achieved_goal"] for o, _, _ in steps[1:]])
    desired = np.stack([o["desired_goal"] for o, _, _ in steps[1:]])
    rewards = np.array([r for _, r, _ in steps[1:]])
    batch = env.compute_reward(achieved, desired, None)
    assert batch.shape == (len(rewards),)
    np.testing.assert_array_equal(batch, rewards)
    # Leading axes broadcast: a (2, T/2) batch gives (2, T/2) rewards.
    half = len(rewards) // 2 * 2
    grid = env.compute_reward(
        achieved[:half].reshape(2, half // 2, *achieved.shape[1:]),
        desired[:half].reshape(2, half // 2, *desired.shape[1:]),
        None,
    )
    np.testing.assert_array_equal(grid.ravel(), rewards[:half])
    assert len(np.unique(rewards)) > 1 or reward_type.endswith("sparse")


def test_image_rms_in_integers_equals_the_float_formula():
    from ssrl.envs.manipulation.push import image_rms

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 5, 3, 8, 8), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 5, 3, 8, 8), dtype=np.uint8)
    by_hand = np.sqrt((((a.astype(np.float64) - b) / 255.0) ** 2).reshape(2, 5, -1).mean(-1))
    np.testing.assert_allclose(image_rms(a, b), by_hand, rtol=1e-12)  # uint8 - uint8 would wrap around
    np.testing.assert_allclose(image_rms(a.astype(np.float32), b), by_hand, rtol=1e-6)  # the float path
    black, white = np.zeros((3, 4, 4), np.uint8), np.full((3, 4, 4), 255, np.uint8)
    assert image_rms(black, white) == 1.0 and image_rms(white, black) == 1.0 and image_rms(white, white) == 0.0
    one = black.copy()
    one[0, 0, 0] = 255  # one of 48 values off by the full range
    assert image_rms(one, black) == pytest.approx(np.sqrt(1 / 48), rel=1e-15)


def test_dense_reward_weighs_the_hand_by_hand_weight():
    # achieved - desired: hand (3, 4) cm, puck (0, 5) cm. With w = 2: -sqrt(6^2 + 8^2 + 5^2) cm.
    achieved = np.array([0.03, 0.04, 0.0, 0.05])
    desired = np.zeros(4)
    plain = PushEnv(from_pixels=False, reward_type="dense")
    weighted = PushEnv(from_pixels=False, reward_type="dense", hand_weight=2.0)
    np.testing.assert_allclose(plain.compute_reward(achieved, desired), -np.sqrt(0.03**2 + 0.04**2 + 0.05**2))
    np.testing.assert_allclose(weighted.compute_reward(achieved, desired), -np.sqrt(0.06**2 + 0.08**2 + 0.05**2))
    np.testing.assert_array_equal(achieved, [0.03, 0.04, 0.0, 0.05])  # the caller's goals are not scaled in place
    zero = PushEnv(from_pixels=False, reward_type="dense", hand_weight=0.0)
    puck_only = PushEnv(from_pixels=False, reward_type="object_dense")
    np.testing.assert_allclose(zero.compute_reward(achieved, desired), puck_only.compute_reward(achieved, desired))


def test_goal_image_shows_the_goal_configuration():
    env = PushEnv(size=84)
    goal_a = np.array([0.0, 0.15, -0.08, -0.02])
    goal_b = np.array([0.0, 0.15, 0.08, -0.02])
    obs_a, info = env.reset(seed=0, options={"goal": goal_a})
    state = info["state"]
    # The goal image is exactly what the camera sees with the scene put in the goal configuration.
    saved = env.scene.get_state()
    env.set_to_goal(goal_a)
    np.testing.assert_array_equal(env.make_observer(84, ["push"]).reset(env.data, env.np_random), obs_a["desired_goal"])
    env.scene.set_state(saved)
    # The puck's pixels sit where the goal puck projects, and move when the goal moves.
    centroid_a = red_centroid(obs_a["desired_goal"])
    np.testing.assert_allclose(centroid_a, project(env, "push", [-0.08, -0.02, 0.02], 84), atol=2.5)
    obs_b, info_b = env.reset(seed=0, options={"goal": goal_b})
    np.testing.assert_array_equal(info_b["state"], state)  # same episode, other goal
    centroid_b = red_centroid(obs_b["desired_goal"])
    np.testing.assert_allclose(centroid_b, project(env, "push", [0.08, -0.02, 0.02], 84), atol=2.5)
    assert centroid_b[1] - centroid_a[1] > 15  # 16 cm to the right is about 20 pixels
    # The observation shows the puck at its start, not at the goal.
    start = env.scene.object_pos(0)
    np.testing.assert_allclose(red_centroid(obs_b["observation"]), project(env, "push", start, 84), atol=2.5)


def puck_pixels(image):
    r, g, b = image.astype(int)
    return int(((r > 120) & (g < 90) & (b < 90)).sum())


@pytest.mark.parametrize("layout", ["easy", "wide"])
def test_goal_images_show_the_goal_puck_uncovered_by_the_hand(layout):
    # Before hand goals were drawn clear of the goal puck, 7 of these 40 goal images had the
    # puck more than 20% hidden behind the hand (two of them wholly).
    env = PushEnv(size=84, layout=layout)
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        goal = env.state_desired_goal
        assert np.linalg.norm(goal[:2] - goal[2:]) > env.scene.specs[0].radius + 0.022
        # The same goal with the hand lifted out of the way: every puck pixel in view.
        saved = env.scene.get_state()
        env.set_to_goal(goal)
        env.scene.teleport_hand((goal[0], goal[1], 0.6), 0.0, 0.0)
        env.scene.forward()
        unhidden = env._render_aside(env._observer).reshape(3, 84, 84)
        env.scene.set_state(saved)
        assert puck_pixels(obs["desired_goal"]) >= 0.8 * puck_pixels(unhidden) > 20, seed
    # goal_visibility sees the hand when it is put in front of the puck.
    front = np.array([goal[2], goal[3] - 0.055, goal[2], goal[3]])
    assert env.goal_visibility(front)[0] < env.goal_visibility(goal)[0]


def test_easy_layout_is_rigs_pusher_and_random_actions_move_the_puck():
    # Wide: random actions touch the puck in about 7% of episodes, too few for hindsight
    # relabelling to ever see a push; easy (RIG's geometry): in most of them.
    moved = {}
    for layout in ("easy", "wide"):
        env = PushEnv(from_pixels=False, layout=layout)
        policy = make_policy("random", env)
        shifts = []
        for seed in range(12):
            steps = run_policy(env, policy, seed)
            shifts.append(np.linalg.norm(steps[-1][0]["achieved_goal"][2:] - steps[0][0]["achieved_goal"][2:]))
            hand = np.array([s[0]["achieved_goal"][:2] for s in steps])
            assert np.all(hand >= env.hand_low - 1e-3) and np.all(hand <= env.hand_high + 1e-3)
        moved[layout] = np.mean(np.array(shifts) > 0.01)
        goals = np.array([env.reset(seed=s)[1]["state_desired_goal"] for s in range(30)])
        starts = np.array([env.reset(seed=s)[0]["achieved_goal"][2:] for s in range(30)])
        assert np.all(np.linalg.norm(goals[:, 2:] - starts, axis=1) >= env.geometry.min_move * 0.05 - 1e-9)
        if layout == "easy":
            np.testing.assert_allclose(starts, 0.0, atol=2e-3)  # the puck always starts in the middle
            assert np.all(np.abs(goals[:, 2]) <= 0.15) and np.all(np.abs(goals[:, 3]) <= 0.10)
    assert moved["easy"] >= 0.5 > moved["wide"]


def test_starts_like_goals_spread_the_puck_over_the_goal_box_for_vae_data():
    # RIG's VAE data (multiworld's set_to_goal): the puck anywhere in the goal space, not in the middle.
    env = PushEnv(from_pixels=False, start_like_goal=True)
    starts = np.array([env.reset(seed=s)[0]["achieved_goal"] for s in range(60)])
    hand, puck = starts[:, :2], starts[:, 2:]
    low, high = np.array(env.geometry.goal_low), np.array(env.geometry.goal_high)
    assert np.all(puck >= low - 1e-3) and np.all(puck <= high + 1e-3)
    assert np.all(puck.std(0) > 0.25 * (high - low) / np.sqrt(12) * 2)  # spread, not piled up in the middle
    assert np.all(hand >= env.hand_low - 1e-3) and np.all(hand <= env.hand_high + 1e-3)
    assert np.all(np.linalg.norm(hand - puck, axis=1) > 0.03)  # the hand starts clear of the puck
    with pytest.raises(ValueError, match="start_like_goal must be true or false, got 'yes'"):
        PushEnv(from_pixels=False, start_like_goal="yes")


def test_sb3_her_accepts_push_and_relabels_with_compute_reward():
    from stable_baselines3 import SAC, HerReplayBuffer

    env = gym.make("ssrl/Push-v0", from_pixels=False, reward_type="sparse")
    model = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=4, goal_selection_strategy="future"),
        learning_starts=100,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        seed=0,
    )
    model.learn(250)
    buffer = model.replay_buffer
    sample = buffer.sample(256)
    achieved = sample.next_observations["achieved_goal"].numpy()
    desired = sample.observations["desired_goal"].numpy()
    np.testing.assert_array_equal(
        sample.rewards.numpy().ravel(), env.unwrapped.compute_reward(achieved, desired, None).astype(np.float32)
    )
    episode_goals = buffer.observations["desired_goal"][: buffer.pos, 0]
    relabelled = [not np.any(np.all(episode_goals == d, axis=1)) for d in desired]
    assert 0.6 < np.mean(relabelled) < 0.95  # her_ratio 0.8 with k=4


def test_distractor_replaces_the_table_but_not_the_physics():
    plain, noisy = PushEnv(), PushEnv(distractor="color")
    obs_p, info_p = plain.reset(seed=4)
    obs_n, info_n = noisy.reset(seed=4)
    for _ in range(3):
        *_, info_p = plain.step(np.ones(2))
        obs_n, _, _, _, info_n = noisy.step(np.ones(2))
    np.testing.assert_array_equal(info_p["state"], info_n["state"])
    obs_p = plain.step(np.zeros(2))[0]
    obs_n = noisy.step(np.zeros(2))[0]
    assert (obs_p["observation"] != obs_n["observation"]).mean() > 0.5  # the table fills the view
    assert (obs_p["desired_goal"] != obs_n["desired_goal"]).mean() > 0.5
    np.testing.assert_allclose(red_centroid(obs_n["observation"]), red_centroid(obs_p["observation"]), atol=1.0)


def test_hiding_the_arm_shrinks_the_hands_picture_but_not_the_physics():
    """Without the drawn arm, moving the hand changes fewer pixels (the palm and fingers only);
    the puck's pixels and the physics stay as they were."""
    drawn, bare = PushEnv(size=48), PushEnv(size=48, draw_arm=False)

    def changed(env, goal_a, goal_b):
        a = env.reset(seed=1, options={"goal": goal_a})[0]["desired_goal"].astype(int)
        b = env.reset(seed=1, options={"goal": goal_b})[0]["desired_goal"].astype(int)
        return int((np.abs(a - b).sum(0) > 30).sum())

    goal = np.array([0.0, 0.12, 0.06, -0.02])
    hand_moved = goal + [0.05, -0.04, 0, 0]
    puck_moved = goal + [0, 0, -0.08, 0.03]
    assert changed(bare, goal, hand_moved) < 0.7 * changed(drawn, goal, hand_moved)
    assert changed(bare, goal, puck_moved) == changed(drawn, goal, puck_moved)
    _, info_d = drawn.reset(seed=5)
    _, info_b = bare.reset(seed=5)
    for _ in range(5):
        *_, info_d = drawn.step(np.array([0.3, -1.0]))
        *_, info_b = bare.step(np.array([0.3, -1.0]))
    np.testing.assert_array_equal(info_d["state"], info_b["state"])


# -- objects --------------------------------------------------------------------------------------


def hue(rgba) -> float:
    import colorsys

    return colorsys.rgb_to_hsv(*rgba[:3])[0]


def test_object_hues_hold_colours_out_and_every_hue_draws_as_before():
    """Objects' hues lie in the asked arc (wrapping through red when lo > hi); the default arc,
    every hue, draws the same colours as a plain uniform hue did."""
    rng = np.random.default_rng(5)
    assert hue(random_color(np.random.default_rng(5))) == pytest.approx(rng.uniform(), abs=1e-9)
    held_out = GraspEnv(object_hues=(0.75, 1.0), from_pixels=False, record_triplets=False)
    wrapping = PushEnv(randomize_objects=True, object_hues=(0.9, 0.1), from_pixels=False)
    hues_out, hues_wrap = [], []
    for seed in range(8):
        held_out.reset(seed=seed)
        hues_out += [hue(spec.rgba) for spec in held_out.object_specs]
        wrapping.reset(seed=seed)
        hues_wrap.append(hue(wrapping.object_specs[0].rgba))
    assert len(hues_out) == 48 and all(0.75 - 1e-6 <= h < 1.0 for h in hues_out) and np.ptp(hues_out) > 0.15
    assert all(h >= 0.9 - 1e-6 or h <= 0.1 + 1e-6 for h in hues_wrap)
    assert min(hues_wrap) < 0.1 and max(hues_wrap) > 0.9  # both sides of red


def test_objects_change_per_episode_and_rest_on_the_table():
    env = PushEnv(randomize_objects=True, from_pixels=False)
    seen, colours = set(), set()
    for seed in range(12):
        env.reset(seed=seed)
        spec = env.object_specs[0]
        seen.add(spec.shape)
        colours.add(spec.rgba)
        for _ in range(5):
            env.step(np.zeros(2))
        # Collision geometry follows the runtime change of shape and size: it rests at its height.
        assert env.scene.object_pos(0)[2] == pytest.approx(spec.half_height, abs=2e-3)
        assert env.model.body_mass[env.scene.object_bodies[0]] == pytest.approx(400 * spec.volume)
    assert len(seen) >= 4 and len(colours) == 12


# -- grasping -------------------------------------------------------------------------------------


def narrow_yaw(env, i):
    """Gripper yaw that closes across the object's narrower side."""
    from ssrl.envs.manipulation.scene import quat_yaw

    ex, ey, _ = env.object_specs[i].half_extents
    return quat_yaw(env.scene.object_quat(i)) + (0.0 if ey <= ex else math.pi / 2)


@pytest.mark.parametrize("shape", SHAPES)
def test_grasp_on_an_object_centre_lifts_it_by_friction(shape):
    env = GraspEnv(n_objects=1, object_shapes=[shape], from_pixels=False)
    env.reset(seed=4)
    x, y, _ = env.object_positions()[0]
    action = env.grasp_to_action(x, y, narrow_yaw(env, 0))
    state = env.scene.get_state()
    lifted = env.execute_grasp(*env.action_to_grasp(action))
    assert lifted[0]
    # Held by the pads: both touch it, and it hangs between them, 40 cm up.
    pads = env.scene.pad_geoms
    assert env.scene.touching(pads[:1], env.scene.object_geoms[0]) and env.scene.touching(
        pads[1:], env.scene.object_geoms[0]
    )
    assert env.scene.object_pos(0)[2] > 0.35
    # Without friction on the pads the same grasp lifts nothing: no teleporting.
    env.scene.set_state(state)
    env.model.geom_friction[pads] = 0.0
    assert not env.execute_grasp(*env.action_to_grasp(action)).any()


def test_fingers_open_as_far_as_the_bin_walls_allow_and_close_at_a_grippers_speed():
    env = GraspEnv(n_objects=1, from_pixels=False)
    env.reset(seed=0)
    scene, h = env.scene, env.bin.half_size
    # In the middle both fingers open fully; next to a wall the finger on its side opens less.
    np.testing.assert_allclose(env.finger_openings(0.0, 0.0, 0.3), [0.045, 0.045])
    left, right = env.finger_openings(0.0, 0.10, 0.0)  # the left finger opens along the hand's +y
    assert right == pytest.approx(0.045) and left == pytest.approx(
        h - env.wall_clearance - 0.10 - 2 * scene.pad_half_thickness
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = rng.uniform(-h, h, 2)
        yaw = rng.uniform(-math.pi / 2, math.pi / 2)
        openings = env.finger_openings(x, y, yaw)
        scene.teleport_hand((x, y, 0.3), yaw, openings)
        scene.forward()
        if (openings > 0).all():  # with room for the pads, they stay inside the walls
            for g in scene.pad_geoms:
                rot, size = env.data.geom_xmat[g].reshape(3, 3), env.model.geom_size[g]
                corners = [env.data.geom_xpos[g] + rot @ (np.array([a, b, 0]) * size) for a in (-1, 1) for b in (-1, 1)]
                assert np.abs(np.array(corners)[:, :2]).max() <= h - env.wall_clearance + 1e-9
    # Closing from fully open: no faster than a gripper's finger speed (a set target slams them at 3 m/s).
    scene.teleport_hand((0.0, 0.0, 0.3), 0.0, 0.045)
    speeds = []
    for _ in range(50):
        scene.close_fingers(scene.dt, env.finger_speed)
        speeds.append(np.abs(env.data.qvel[scene.finger_qvel]).max())
    assert max(speeds) < 1.5 * env.finger_speed and scene.finger_opening.max() < 0.03


def test_grasp_step_records_triplet_and_empty_space_lifts_nothing():
    env = GraspEnv(n_objects=4, from_pixels=False)
    env.reset(seed=0)
    centres = env.object_positions()[:, :2]
    # The floor point farthest from every object.
    grid = np.stack(np.meshgrid(np.linspace(-0.12, 0.12, 25), np.linspace(-0.12, 0.12, 25)), -1).reshape(-1, 2)
    empty = grid[np.argmax(np.min(np.linalg.norm(grid[:, None] - centres[None], axis=2), axis=1))]
    assert np.min(np.linalg.norm(centres - empty, axis=1)) > 0.07
    obs, reward, terminated, truncated, info = env.step(env.grasp_to_action(*empty, 0.0))
    assert (info["object_id"], info["grasp_success"], reward) == (-1, False, 0.0)
    assert np.abs(info["s_pre"].astype(int) - info["s_post"]).mean() < 1.0  # nothing moved
    empty_hand = info["o"]
    i = 2
    x, y, _ = env.object_positions()[i]
    obs, reward, terminated, truncated, info = env.step(env.grasp_to_action(x, y, narrow_yaw(env, i)))
    assert (info["object_id"], info["grasp_success"], reward) == (i, True, 1.0)
    for key in ("s_pre", "s_post", "o"):
        assert info[key].shape == (3, 84, 84) and info[key].dtype == np.uint8
    # s_post lacks the object where s_pre shows it: the change is around its projection.
    changed = np.abs(info["s_pre"].astype(int) - info["s_post"]).sum(0) > 30
    assert changed.sum() > 10
    rows, cols = np.nonzero(changed)
    np.testing.assert_allclose([rows.mean(), cols.mean()], project(env, "bin", [x, y, 0.02], 84), atol=6)
    assert np.abs(info["o"].astype(int) - empty_hand).mean() > 5  # the object shows in o
    assert info["lifted"].sum() == 1
    # Afterwards the object is back in the bin, at rest.
    assert env.object_positions()[i][2] < 0.08 and np.all(np.abs(env.object_positions()[i][:2]) < 0.13)


def bin_box(env, size, margin=2):
    """Rows and columns (lo, hi) of the pixels that the bin's outer walls span in ``bin``."""
    outer = env.bin.half_size + env.bin.wall_thickness
    corners = [(sx * outer, sy * outer, z) for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, env.bin.wall_height)]
    pix = np.array([project(env, "bin", c, size) for c in corners])
    return np.floor(pix.min(0)).astype(int) - margin, np.ceil(pix.max(0)).astype(int) + margin


def test_s_post_is_the_bin_without_the_lifted_object():
    """s_post is the bin camera's view of the scene with the lifted object gone and nothing else new:
    the same image as the scene at that instant rendered with the object parked, unchanged from
    s_pre outside the bin, changed where the object lay. (Unlimited pushing by the descending hand
    used to drive a neighbour into the bin floor, whence it sprang out onto the table: seed 2's
    first success showed it beyond the far wall.)"""
    env = GraspEnv(from_pixels=False)
    policy = make_policy("centred_grasp", env)
    checked = 0
    for seed in (2, 5):
        obs, info = env.reset(seed=seed)
        policy.reset(seed)
        (r0, c0), (r1, c1) = bin_box(env, 84)  # the camera is fixed: the same box every time
        outside = np.ones((84, 84), bool)
        outside[max(r0, 0) : r1 + 1, max(c0, 0) : c1 + 1] = False
        for _ in range(env.max_attempts):
            before = env.scene.get_state()
            action = policy(obs, info)
            obs, _, _, _, info = env.step(action)
            if not info["grasp_success"]:
                continue
            after = env.scene.get_state()
            # Replay the attempt (the physics is deterministic) up to the instant s_post is taken.
            env.scene.set_state(before)
            where = env.object_positions()[info["object_id"]].copy()
            lifted = env.execute_grasp(*env.action_to_grasp(action))
            np.testing.assert_array_equal(lifted, info["lifted"])
            for j in np.flatnonzero(lifted):
                env.scene.park_object(j)
            env.scene.forward()
            parked = env._render_bin()
            post, pre = info["s_post"].astype(int), info["s_pre"].astype(int)
            assert (np.abs(post - parked).sum(0) > 30).sum() == 0  # the lifted object is out of view
            moved = np.abs(post - pre).sum(0) > 30
            assert moved[outside].sum() == 0, f"seed {seed}: s_post shows something new outside the bin"
            r, c = np.round(project(env, "bin", where, 84)).astype(int)
            assert moved[r - 2 : r + 3, c - 2 : c + 3].sum() >= 5  # and lacks the object where it lay
            env.scene.set_state(after)
            checked += 1
    assert checked >= 4


def test_grasps_keep_the_other_objects_in_the_bin_and_on_its_floor():
    """What a grasp does not lift stays in the bin, on its floor or on other objects, not pushed into
    the floor (the descent pushes with at most max_press_force; it used to push with hundreds of
    newtons, sinking objects out of sight or launching them out of the bin)."""
    env = GraspEnv(from_pixels=False, record_triplets=False)
    scene, m = env.scene, env.model
    supports = {
        mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)
        for n in ("bin_floor", "table_top", "bin_wall_px", "bin_wall_nx", "bin_wall_py", "bin_wall_ny")
    }
    outside, depths = [], []
    grasp = env.execute_grasp

    def checked_grasp(x, y, yaw):
        lifted = grasp(x, y, yaw)
        rest = env.object_positions()[~lifted]
        outside.append(int(np.sum(np.any(np.abs(rest[:, :2]) > env.bin.half_size, axis=1))))
        d = env.data
        depth = 0.0
        for c in range(d.ncon):
            g1, g2 = d.contact.geom1[c], d.contact.geom2[c]
            if (g1 in supports and scene.geom_object[g2] >= 0) or (g2 in supports and scene.geom_object[g1] >= 0):
                depth = max(depth, -d.contact.dist[c])
        depths.append(depth)
        return lifted

    env.execute_grasp = checked_grasp
    policy = make_policy("random_grasp", env)
    for seed in range(4):
        run_policy(env, policy, seed)
    assert len(depths) == 40
    assert sum(outside) == 0, f"objects were out of the bin after {np.count_nonzero(outside)} of 40 attempts"
    assert max(depths) < 0.004, f"an object sank {max(depths) * 1000:.1f} mm into the bin"


def test_grasp_success_rates_on_a_full_bin():
    env = gym.make("ssrl/Grasp-v0", from_pixels=False, record_triplets=False)
    rates = {}
    for name in ("centred_grasp", "random_grasp"):
        policy = make_policy(name, env)
        hits = n = 0
        for seed in range(4):
            for _, _, info in run_policy(env, policy, seed)[1:]:
                hits += info["grasp_success"]
                n += 1
        rates[name] = hits / n
    assert n == 40
    # Measured over 2500 attempts each: 77% and 17.5% (fingers fitted to the bin; see GraspEnv).
    assert rates["centred_grasp"] >= 0.6 and rates["random_grasp"] >= 0.1
    assert rates["centred_grasp"] > rates["random_grasp"] + 0.3


def test_goal_conditioned_grasping():
    env = gym.make("ssrl/GraspGoal-v0")
    obs, info = env.reset(seed=14, options={"goal_id": 0})  # a bin where both grasps below lift
    base = env.unwrapped
    assert obs["desired_goal"].shape == (3, 84, 84) and not obs["achieved_goal"].any()
    # The goal image is the object camera's view of that object: other goals look different.
    assert np.abs(base.render_goal_image(1).astype(int) - obs["desired_goal"]).mean() > 2
    bin_view = GraspGoalEnv(goal_view="bin")
    o, _ = bin_view.reset(seed=1, options={"goal_id": 0})
    assert np.abs(o["desired_goal"].astype(int) - o["observation"]).mean() > 0
    # Lifting another object is no success; lifting the goal object is, and ends the episode.
    other = next(j for j in range(base.n_objects) if j != 0)
    for target, expected in ((other, 0.0), (0, 1.0)):
        x, y, _ = base.object_positions()[target]
        obs, reward, terminated, truncated, info = env.step(base.grasp_to_action(x, y, narrow_yaw(base, target)))
        assert info["object_id"] == target  # grasps aligned on a centre lift (seeded)
        assert reward == expected and terminated == bool(expected) and info["is_success"] == bool(expected)
        assert reward == base.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        np.testing.assert_array_equal(obs["achieved_goal"], info["o"])  # the newest lifted object
    state = GraspGoalEnv(from_pixels=False, record_triplets=False)
    obs, _ = state.reset(seed=2)
    oracle = make_policy("goal_grasp", state)
    for _ in range(5):
        obs, reward, terminated, *_ = state.step(oracle(obs, {}))
        assert reward == state.compute_reward(obs["achieved_goal"], obs["desired_goal"], None)
        if terminated:
            break
    assert terminated and reward == 1.0 and obs["desired_goal"].argmax() == state.goal_id


# -- policies and data ----------------------------------------------------------------------------


def test_push_expert_moves_the_puck_to_the_goal():
    env = gym.make("ssrl/Push-v0", from_pixels=False)
    expert = make_policy("push_expert", env)
    finals = [run_policy(env, expert, seed)[-1][2] for seed in range(20)]
    assert sum(f["is_success"] for f in finals) >= 17  # 57 of seeds 0-59
    explore = make_policy("push_explore", env)
    moved = [
        np.linalg.norm(s[-1][2]["state"][9:11] - s[0][2]["state"][9:11])
        for s in (run_policy(env, explore, k) for k in range(3))
    ]
    assert max(moved) > 0.02  # exploration does push the puck around


def test_push_task_is_one_goal_env_free_task_that_the_expert_solves():
    env = gym.make("ssrl/PushTask-v0", size=48)
    goal = np.array(PushTaskEnv.DEFAULT_GOAL)
    assert env.observation_space == gym.spaces.Box(0, 255, (3, 48, 48), np.uint8)
    assert not hasattr(env.unwrapped, "compute_reward")  # SB3's checker would take it for a goal env
    expert = make_policy("push_expert", env)
    for seed in (0, 1):
        steps = run_policy(env, expert, seed)
        first, last = steps[0][2], steps[-1][2]
        np.testing.assert_allclose(first["state_desired_goal"], goal)  # the same goal every episode
        assert first["puck_distance"] > 0.09 and last["is_success"]
        assert all(reward == -info["puck_distance"] for _, reward, info in steps[1:])  # the task's reward
    state = gym.make("ssrl/PushTask-v0", from_pixels=False, goal=[0.0, 0.08, -0.1, 0.05])
    obs, info = state.reset(seed=3)
    assert obs.shape == (8,)
    np.testing.assert_allclose(info["state_desired_goal"], [0.0, 0.08, -0.1, 0.05], atol=1e-7)
    with pytest.raises(ValueError, match=r"goal must be 4 finite numbers \[hand_xy, object_xy...\]"):
        PushTaskEnv(goal=[0.1, 0.2])
    with pytest.raises(ValueError, match="goal must be 4 finite numbers"):
        PushTaskEnv(goal=[0.1, 0.2, float("nan"), 0.0])


def test_collect_round_trips_push_and_grasp(tmp_path):
    ds = collect(
        "ssrl/Push-v0",
        policy="push_expert",
        episodes=2,
        out=tmp_path / "push",
        cameras=["push", "front"],
        max_steps=8,
        seed=5,
        progress=False,
    )
    ep = ds[1]
    assert ep.frames["push"].shape == (9, 3, 84, 84) and ep.action.shape == (8, 2)
    assert ep.info["state_desired_goal"].shape == (8, 4) and ep.info["is_success"].dtype == bool
    env = PushEnv(cameras=["push", "front"])
    obs, _ = env.reset(seed=6)
    np.testing.assert_array_equal(obs["observation"][:3], ep.frames["push"][0])
    for t in range(len(ep)):
        obs, reward, _, _, info = env.step(ep.action[t])
        np.testing.assert_array_equal(obs["observation"][3:], ep.frames["front"][t + 1])
        np.testing.assert_array_equal(info["state"], ep.state[t + 1])
    ds = collect(
        "ssrl/Grasp-v0",
        policy="centred_grasp",
        episodes=1,
        out=tmp_path / "grasp",
        cameras=["bin", "object"],
        max_steps=3,
        seed=0,
        progress=False,
    )
    ep = ds[0]
    assert ds.meta["record_keys"] == ["s_pre", "s_post", "o", "object_id", "grasp_success"]
    assert ep.info["s_pre"].shape == ep.info["o"].shape == (3, 3, 84, 84) and ep.info["s_post"].dtype == np.uint8
    np.testing.assert_array_equal(ep.info["grasp_success"], ep.info["object_id"] >= 0)
    np.testing.assert_array_equal(ep.reward, ep.info["grasp_success"].astype(np.float32))
    np.testing.assert_array_equal(ep.info["s_pre"][0], ep.frames["bin"][0])  # the same camera, same instant
    np.testing.assert_array_equal(ep.info["s_pre"][1:], ep.frames["bin"][1:-1])
    ds = collect(
        "ssrl/GraspGoal-v0", policy="goal_grasp", episodes=2, out=tmp_path / "goal", max_steps=2, seed=0, progress=False
    )
    assert ds.meta["record_keys"][-1] == "goal_id"
    for i, ep in enumerate(ds):
        env = GraspGoalEnv()
        env.reset(seed=i)  # episode i of a collection resets with seed + i
        np.testing.assert_array_equal(ep.info["goal_id"], env.goal_id)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,kwargs,needle",
    [
        (PushEnv, dict(camera="nope"), r"unknown camera 'nope'.*push"),
        (GraspEnv, dict(cameras=["bin", "wrist"]), r"unknown camera 'wrist'.*object"),
        (GraspEnv, dict(n_objects=0), "n_objects must be between 1 and 15"),
        (GraspEnv, dict(n_objects=-3), "n_objects"),
        (GraspEnv, dict(n_objects=2.5), "integer"),
        (PushEnv, dict(n_objects=9), "n_objects"),
        (PushEnv, dict(reward_type="dense"), "image_distance"),
        (PushEnv, dict(from_pixels=False, reward_type="image_distance"), "sparse"),
        (PushEnv, dict(object_shapes=["torus"]), "sphere"),
        (PushEnv, dict(object_hues=[0.5]), r"two different hues \(lo, hi\) in \[0, 1\], got \[0.5\]"),
        (GraspEnv, dict(object_hues=[0.2, 1.5]), "object_hues"),
        (GraspEnv, dict(object_hues=[1, 0]), "object_hues"),
        (GraspEnv, dict(goal_view="side"), "object"),
        (PushEnv, dict(from_pixels=False, distractor="color"), "pixel"),
        (PushEnv, dict(frame_stack=0), "frame_stack"),
        (PushEnv, dict(quality="ultra"), "fast"),
        (PushEnv, dict(layout="hard"), r"unknown layout 'hard'.*easy.*wide"),
        (PushEnv, dict(from_pixels=False, reward_type="dense", hand_weight=-1.0), "hand_weight must be"),
        (PushEnv, dict(from_pixels=False, hand_weight=3.0), r"'dense' reward; reward_type is 'sparse'"),
        (PushEnv, dict(draw_arm="no"), "draw_arm must be true or false"),
        (PushEnv, dict(n_objects=2, layout="easy"), "layout=.wide."),
    ],
)
def test_bad_configuration_names_the_problem(factory, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        factory(**kwargs)


def test_bad_actions_and_cameras_are_rejected(tmp_path):
    env = PushEnv(from_pixels=False)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.0, np.nan]))
    grasp = GraspEnv(n_objects=2, from_pixels=False, record_triplets=False)
    grasp.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        grasp.step(np.zeros(2))
    with pytest.raises(ValueError, match="goal_id"):
        grasp.render_goal_image(5)
    with pytest.raises(ValueError, match="front"):
        collect("ssrl/Push-v0", episodes=1, out=tmp_path / "x", cameras=["fornt"], progress=False)


# -- what every env of the suite shares: the pixel options, the policies --------------------------


def test_every_env_takes_the_pixel_options_that_the_one_setup_method_checks():
    import inspect

    from ssrl.envs import DMCEnv
    from ssrl.envs.pixels import PIXEL_OPTIONS, PixelEnv

    setup = set(inspect.signature(PixelEnv._setup_pixels).parameters) - {"self"}
    assert setup == set(PIXEL_OPTIONS) | {"from_pixels"}
    for cls in (DMCEnv, PushEnv, GraspEnv):
        assert setup <= set(inspect.signature(cls.__init__).parameters), cls


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(camera=0, cameras=[0]), "either camera= or cameras="),
        (dict(render_mode="human"), "rgb_array"),
        (dict(quality="ultra", from_pixels=False), "fast"),
        (dict(frame_stack=0), "frame_stack"),
        (dict(frame_stack=0, from_pixels=False), "frame_stack"),
        (dict(frame_stack=2.5), "frame_stack"),
        (dict(distractor="color", from_pixels=False), "pixel observations only"),
        (dict(size=(84, 0)), "positive"),
    ],
)
def test_dmc_and_manipulation_envs_check_pixel_options_in_the_same_words(kwargs, needle):
    from ssrl.envs import DMCEnv

    messages = []
    for make in (lambda **k: DMCEnv("cartpole", "swingup", **k), PushEnv, GraspEnv):
        with pytest.raises(ValueError, match=needle) as err:
            make(**kwargs)
        messages.append(str(err.value))
    assert len(set(messages)) == 1, messages


def test_state_mode_kwargs_turn_a_pixel_scene_into_its_state_form():
    from ssrl.envs import state_mode_kwargs

    pixel_kwargs = dict(n_objects=2, size=32, cameras=["push", "front"], frame_stack=2, distractor="noise")
    env = PushEnv(**state_mode_kwargs(pixel_kwargs))
    assert not env.from_pixels and env.n_objects == 2 and env._observer is None
    assert env.observation_space["observation"].shape == (12,)


def test_make_policy_refuses_a_policy_for_another_env_and_names_those_that_fit():
    from ssrl.envs.policies import policies_for

    cartpole = gym.make("ssrl/cartpole-swingup-v0", from_pixels=False)
    # This crashed with AttributeError: 'DMCEnv' object has no attribute 'scene'.
    with pytest.raises(ValueError, match=r"'push_expert'.*cartpole-swingup.*random, sticky_random"):
        make_policy("push_expert", cartpole)
    grasp = GraspEnv(n_objects=2, from_pixels=False, record_triplets=False)
    # goal_grasp needs a goal object; without one it silently grasped object -1.
    with pytest.raises(ValueError, match=r"'goal_grasp'.*centred_grasp, random, random_grasp, sticky_random"):
        make_policy("goal_grasp", grasp)
    with pytest.raises(ValueError, match=r"unknown policy 'push_master'.*known policies: .*push_expert"):
        make_policy("push_master", cartpole)
    assert policies_for(cartpole) == ["random", "sticky_random"]
    assert policies_for(grasp) == ["centred_grasp", "random", "random_grasp", "sticky_random"]


def test_policies_for_lists_exactly_the_policies_that_act_in_an_env():
    from ssrl.envs.policies import POLICIES, policies_for

    envs = {
        "cartpole": gym.make("ssrl/cartpole-swingup-v0", from_pixels=False),
        "push": gym.make("ssrl/PushMultiObject-v0", from_pixels=False),
        "grasp": GraspEnv(n_objects=2, from_pixels=False, record_triplets=False),
        "grasp_goal": GraspGoalEnv(n_objects=2, from_pixels=False, record_triplets=False),
    }
    fits = {name: policies_for(env) for name, env in envs.items()}
    assert fits["push"] == ["push_expert", "push_explore", "random", "sticky_random"]
    assert fits["grasp_goal"] == ["centred_grasp", "goal_grasp", "random", "random_grasp", "sticky_random"]
    assert set().union(*fits.values()) == set(POLICIES)  # every policy serves one of these envs
    for name, env in envs.items():
        for policy_name in fits[name]:
            # env.step refuses an action of the wrong shape; a policy of another env fails earlier.
            assert len(run_policy(env, make_policy(policy_name, env), seed=0, steps=2)) >= 2, (name, policy_name)
