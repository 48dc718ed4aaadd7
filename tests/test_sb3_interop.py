"""Stable-Baselines3 trains on ssrl envs: our encoder as its features extractor, HER on Push."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import sb3_example
from ssrl.agents.sb3 import SSRLEncoderExtractor
from ssrl.representations import make_encoder


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, and every tensor bit for bit the same."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sb3_sac_trains_our_encoder_as_its_features_extractor():
    model, env = sb3_example.sac_pixels_model(size=48, learning_starts=30)
    extractor = model.policy.critic.features_extractor
    assert isinstance(extractor, SSRLEncoderExtractor) and extractor.features_dim == 50
    before = _snapshot(extractor.encoder)
    model.learn(30)  # no step past learning_starts: no update, the weights are those it started with
    assert model._n_updates == 0 and _identical(before, _snapshot(extractor.encoder))
    model.learn(30, reset_num_timesteps=False)
    assert model._n_updates > 0
    # The critic loss trained the very encoder the critic reads.
    assert not _identical(before, _snapshot(extractor.encoder))
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


def _sac_with_given_encoder(encoder, freeze: bool):
    """SAC with a large Polyak coefficient (tau = 0.1) and a few real gradient steps."""
    from stable_baselines3 import SAC

    env = gym.make("ssrl/cartpole-swingup-v0", size=32)
    return SAC(
        "CnnPolicy",
        env,
        tau=0.1,
        learning_starts=8,
        batch_size=8,
        buffer_size=64,
        seed=0,
        device="cpu",
        policy_kwargs=dict(
            features_extractor_class=SSRLEncoderExtractor,
            net_arch=[32, 32],
            features_extractor_kwargs=dict(encoder=encoder, freeze=freeze),
        ),
    )


@pytest.mark.parametrize("freeze", [True, False])
def test_a_given_encoder_is_frozen_bit_for_bit_or_trained_and_the_users_module_is_untouched(freeze, tmp_path):
    from stable_baselines3 import SAC

    torch.manual_seed(0)
    encoder = make_encoder("fast", 9, 32, 16)
    given = _snapshot(encoder)
    model = _sac_with_given_encoder(encoder, freeze)
    policy = model.policy
    heads = _snapshot(policy.critic.qf0)
    model.learn(24)
    assert model._n_updates >= 10
    assert not _identical(heads, _snapshot(policy.critic.qf0))  # the critic did learn
    extractors = [
        policy.actor.features_extractor,
        policy.critic.features_extractor,
        policy.critic_target.features_extractor,
    ]
    # The user's module: same weights, still trainable, still in train mode.
    assert _identical(given, _snapshot(encoder))
    assert encoder.training and all(p.requires_grad for p in encoder.parameters())
    # Actor, critic and target each hold their own copy (a shared one would make the target the critic).
    assert len({id(e.encoder) for e in extractors} | {id(encoder)}) == 4
    if freeze:
        # Polyak averaging of a shared module scaled it by (1 - tau^2) per update; frozen means untouched.
        for extractor in extractors:
            assert _identical(given, _snapshot(extractor.encoder)) and not extractor.encoder.training
            assert list(extractor.parameters()) == []
        model.save(tmp_path / "model")
        loaded = SAC.load(tmp_path / "model", device="cpu")
        assert _identical(given, _snapshot(loaded.policy.critic.features_extractor.encoder))
    else:
        assert not _identical(given, _snapshot(policy.critic.features_extractor.encoder))
        assert not _identical(given, _snapshot(policy.actor.features_extractor.encoder))


def test_a_frozen_encoder_moves_with_the_extractor_and_builds_no_graph():
    space = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
    extractor = SSRLEncoderExtractor(space, encoder=make_encoder("fast", 9, 32, 12), freeze=True)
    assert list(extractor.parameters()) == []  # nothing for an optimiser or a Polyak average
    extractor.double()  # module conversions (.to(device), .double()) reach the frozen weights
    assert all(t.dtype == torch.float64 for t in extractor.encoder.state_dict().values())
    extractor.float().train()
    assert not extractor.encoder.training
    out = extractor(torch.rand(2, 9, 32, 32))
    assert out.shape == (2, 12) and not out.requires_grad


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
