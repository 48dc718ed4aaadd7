"""Stable-Baselines3 trains on ssrl envs: our encoder as its features extractor, HER on Push."""

import numpy as np
import torch

from ssrl.agents import sb3_example
from ssrl.agents.sb3 import SSRLEncoderExtractor
from ssrl.representations import make_encoder


def _changed(before, params):
    return any(not torch.equal(a, b) for a, b in zip(before, params))


def test_sb3_sac_trains_our_encoder_as_its_features_extractor():
    model, env = sb3_example.sac_from_pixels(steps=60, size=48)
    extractor = model.policy.critic.features_extractor
    assert isinstance(extractor, SSRLEncoderExtractor) and extractor.features_dim == 50
    # A fresh extractor differs from the trained one: the critic loss trained it.
    fresh = SSRLEncoderExtractor(env.observation_space, arch="fast", feature_dim=50)
    assert _changed(list(fresh.parameters()), list(extractor.parameters()))
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


def test_frozen_extractor_keeps_its_weights():
    import gymnasium as gym

    space = gym.spaces.Box(0, 255, (9, 48, 48), np.uint8)
    encoder = make_encoder("fast", 9, 48, 12)
    before = [p.clone() for p in encoder.parameters()]
    extractor = SSRLEncoderExtractor(space, encoder=encoder, freeze=True)
    out = extractor(torch.rand(2, 9, 48, 48))
    assert out.shape == (2, 12) and not out.requires_grad
    assert not _changed(before, list(encoder.parameters()))


def test_sb3_td3_on_states_and_sac_on_frozen_latents():
    model, env = sb3_example.td3_from_states(steps=120)
    assert model.num_timesteps == 120
    model, wrapped = sb3_example.sac_on_frozen_latents(steps=60, size=48)
    obs, _ = wrapped.reset(seed=1)
    assert obs.shape == (50,) and wrapped.observation_space.contains(obs)
    assert model.replay_buffer.size() > 0


def test_sb3_her_relabels_push_with_its_vectorised_reward():
    model, env = sb3_example.sac_her_push(steps=260)
    buffer = model.replay_buffer
    batch = buffer.sample(64)
    achieved = batch.next_observations["achieved_goal"].numpy()
    desired = batch.next_observations["desired_goal"].numpy()
    expected = env.unwrapped.compute_reward(achieved, desired, {})
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), expected, rtol=1e-5)
