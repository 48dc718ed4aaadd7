"""SAC and TD3: losses against hand computations, targets, temperature, pixel presets (DrQ's K/M
averaging and actor head), precision, replay, checkpoints, resume."""

import copy
import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from ssrl.agents import SAC, TD3, ReplayBuffer, Trainer, TrainingDiverged, resolve_precision
from ssrl.agents.augment import random_shift
from ssrl.agents.networks import ActorHead
from ssrl.agents.run import train_run
from ssrl.envs import make_dmc


class Reach1D(gym.Env):
    """Move a point to a target on a line: obs (x, target), reward -|x - target|, 20 steps."""

    observation_space = gym.spaces.Box(-2, 2, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.target, self.t = 0.0, float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, self.target], np.float32)

    def step(self, action):
        self.x = float(np.clip(self.x + 0.25 * float(action[0]), -2, 2))
        self.t += 1
        return self._obs(), -abs(self.x - self.target), False, self.t >= 20, {}


class PointGoal(gym.Env):
    """A goal env: move a 2-D point; sparse reward -(distance > 0.1)."""

    observation_space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-1, 1, (2,), np.float32),
            "achieved_goal": gym.spaces.Box(-1, 1, (2,), np.float32),
            "desired_goal": gym.spaces.Box(-1, 1, (2,), np.float32),
        }
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.p = np.zeros(2, np.float32)
        self.g = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return {"observation": self.p.copy(), "achieved_goal": self.p.copy(), "desired_goal": self.g.copy()}

    def compute_reward(self, achieved, desired, info):
        return -(np.linalg.norm(np.asarray(achieved) - np.asarray(desired), axis=-1) > 0.1).astype(np.float32)

    def step(self, action):
        self.p = np.clip(self.p + 0.1 * np.asarray(action, np.float32), -1, 1)
        self.t += 1
        obs = self._obs()
        return obs, float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], {})), False, self.t >= 10, {}


def fill(agent, env, steps, seed=0):
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    agent.replay.start_episode(obs)
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.replay.add(action, reward, terminated, next_obs)
        obs = next_obs
        if terminated or truncated:
            agent.replay.end_episode()
            obs, _ = env.reset()
            agent.replay.start_episode(obs)
    agent.replay.end_episode()


# -- losses against hand computations ----------------------------------------------------------


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    from ssrl.agents.networks import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 3, (16,), log_std_bounds=(-5, 2))
    h = torch.randn(64, 4)
    gen = torch.Generator().manual_seed(1)
    action, log_prob = actor(h, gen)
    mu, log_std = actor.net(h).chunk(2, -1)
    log_std = -5 + 0.5 * 7 * (torch.tanh(log_std) + 1)
    dist = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform(cache_size=1)])
    torch.testing.assert_close(log_prob, dist.log_prob(action).sum(-1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("reward_scale", [1.0, 0.25])
def test_sac_critic_and_actor_losses_equal_hand_computation(reward_scale):
    env = Reach1D()
    agent = SAC(
        env, hidden_dims=(8, 8), batch_size=5, buffer_size=100, init_alpha=0.3, actor_update_freq=1,
        reward_scale=reward_scale,
    )  # fmt: skip
    fill(agent, env, 40)
    batch = agent.replay.sample(5)
    batch.discount[0] = 0.0  # one terminal transition: no bootstrap
    actor0, critic0, target0 = (copy.deepcopy(m) for m in (agent.actor, agent.critic, agent.critic_target))
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.generator.get_state())
    alpha, gamma = 0.3, agent.config.gamma

    obs, next_obs = torch.tensor(batch.obs), torch.tensor(batch.next_obs)
    act, rew, disc = torch.tensor(batch.action), torch.tensor(batch.reward), torch.tensor(batch.discount)
    with torch.no_grad():
        next_a, next_logp = actor0(next_obs, gen)
        q1t, q2t = target0(next_obs, next_a)
        y = reward_scale * rew + gamma * disc * (torch.minimum(q1t, q2t) - alpha * next_logp)
        q1, q2 = critic0(obs, act)
        critic_hand = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    metrics = agent.update(batch)
    assert float(metrics["critic_loss"]) == pytest.approx(float(critic_hand), rel=1e-5)
    # The actor loss is computed with the critic after its step: recompute it that way.
    with torch.no_grad():
        pi, logp = actor0(obs, gen)
        q_pi = torch.minimum(*agent.critic(obs, pi))
        actor_hand = (alpha * logp - q_pi).mean()
    assert float(metrics["actor_loss"]) == pytest.approx(float(actor_hand), rel=1e-4, abs=1e-6)


def test_td3_target_uses_clipped_smoothing_noise_and_min_of_targets():
    env = Reach1D()
    agent = TD3(env, hidden_dims=(8, 8), batch_size=6, buffer_size=100, policy_noise=0.5, noise_clip=0.1)
    fill(agent, env, 40)
    batch = agent.replay.sample(6)
    actor_t, critic0, critic_t = (copy.deepcopy(m) for m in (agent.actor_target, agent.critic, agent.critic_target))
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.generator.get_state())
    obs, next_obs = torch.tensor(batch.obs), torch.tensor(batch.next_obs)
    with torch.no_grad():
        noise = (torch.randn(6, 1, generator=gen) * 0.5).clamp(-0.1, 0.1)
        next_a = (actor_t(next_obs) + noise).clamp(-1, 1)
        y = torch.tensor(batch.reward) + 0.99 * torch.tensor(batch.discount) * torch.minimum(
            *critic_t(next_obs, next_a)
        )
        q1, q2 = critic0(obs, torch.tensor(batch.action))
        hand = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    assert float(agent.update(batch)["critic_loss"]) == pytest.approx(float(hand), rel=1e-5)


def test_target_networks_move_by_tau():
    env = make_dmc("cartpole", "swingup", frame_stack=3, task_kwargs={"time_limit": 0.2})
    agent = SAC(
        env,
        hidden_dims=(16, 16),
        batch_size=4,
        buffer_size=200,
        tau=0.1,
        encoder_tau=0.3,
        target_update_freq=1,
        feature_dim=8,
    )
    fill(agent, env, 30)
    before_t = [p.clone() for p in agent.critic_target.parameters()]
    before_e = [p.clone() for p in agent.encoder_target.parameters()]
    agent.update(agent.replay.sample(4))
    for old, new, src in zip(before_t, agent.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)
    for old, new, src in zip(before_e, agent.encoder_target.parameters(), agent.encoder.parameters()):
        torch.testing.assert_close(new, 0.7 * old + 0.3 * src)
    assert any(not torch.equal(o, n) for o, n in zip(before_e, agent.encoder_target.parameters()))


@pytest.mark.parametrize("target_entropy,direction", [(5.0, 1), (-50.0, -1)])
def test_temperature_moves_toward_target_entropy(target_entropy, direction):
    env = Reach1D()
    agent = SAC(env, hidden_dims=(8, 8), batch_size=16, buffer_size=200, target_entropy=target_entropy, alpha_lr=0.05)
    fill(agent, env, 100)
    alpha0 = agent.alpha.item()
    for _ in range(20):
        agent.update(agent.replay.sample(16))
    assert np.sign(float(agent.alpha.detach()) - alpha0) == direction


@pytest.mark.parametrize("preset", ["drq", "sac-ae", "legacy"])
def test_actor_gradient_stops_at_the_encoder(preset):
    env = make_dmc("cartpole", "swingup", task_kwargs={"time_limit": 0.2})
    agent = SAC(env, pixel_preset=preset, hidden_dims=(16, 16), batch_size=4, buffer_size=200, feature_dim=8)
    fill(agent, env, 30)
    # What the actor's update reads (after the critic's step), through the actor and the critic.
    actor_in, h_critic = agent.actor_update_inputs(agent.prepare(agent.replay.sample(4)))
    action, log_prob = agent.actor(actor_in, agent.generator)
    (log_prob - agent.critic(h_critic, action).min(0).values).sum().backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    enc0 = [p.clone() for p in agent.encoder.parameters()]
    agent.update(agent.replay.sample(4))  # the critic loss trains it
    assert any(not torch.equal(a, b) for a, b in zip(enc0, agent.encoder.parameters()))


# -- pixel presets: DrQ's K/M averaging, the actor's own head, the presets' values --------------


def pixel_env(size=32):
    return make_dmc("cartpole", "swingup", size=size, task_kwargs={"time_limit": 1.0})


def roll_augment(calls):
    """A deterministic stand-in for the random shift: the i-th view drawn is the image rolled by
    i + 1 pixels, so every view differs and the hand computation knows each one."""

    def augment(x):
        calls.append(len(calls))
        return torch.roll(x, shifts=len(calls), dims=3)

    return augment


def test_sac_target_is_the_mean_of_k_targets_and_loss_the_mean_of_m_losses(monkeypatch):
    env = pixel_env()
    hyper = dict(hidden_dims=(16, 16), batch_size=6, buffer_size=200, feature_dim=8)
    agent = SAC(env, target_augmentations=3, critic_augmentations=2, **hyper)
    fill(agent, env, 40)
    for _ in range(4):  # so that the online and the target encoders differ (the 5th update moves the actor)
        agent.update(agent.replay.sample(6))
    assert not torch.equal(agent.encoder.trunk.net[0].weight, agent.encoder_target.trunk.net[0].weight)
    batch = agent.replay.sample(6)
    batch.discount[0] = 0.0
    calls = []
    monkeypatch.setattr(agent, "augment", roll_augment(calls))
    actor0, critic0, target0 = (copy.deepcopy(m) for m in (agent.actor, agent.critic, agent.critic_target))
    enc0, enc_t = copy.deepcopy(agent.encoder), copy.deepcopy(agent.encoder_target)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.generator.get_state())
    alpha, gamma = agent.alpha.item(), agent.config.gamma
    obs, next_obs = torch.tensor(batch.obs), torch.tensor(batch.next_obs)
    act, rew, disc = torch.tensor(batch.action), torch.tensor(batch.reward), torch.tensor(batch.discount)
    views = [torch.roll(obs, i, dims=3) for i in (1, 2)]  # M = 2 observation views first,
    next_views = [torch.roll(next_obs, i, dims=3) for i in (3, 4, 5)]  # then K = 3 next views
    with torch.no_grad():
        targets = []
        for v in next_views:
            # The next action: the actor's own head on the *online* conv features (DrQ's actor(next_obs)).
            a, logp = actor0(enc0.trunk(v), gen)
            targets.append(rew + gamma * disc * (target0(enc_t(v), a).min(0).values - alpha * logp))
        y = sum(targets) / 3
        losses = [sum(((q - y) ** 2).mean() for q in critic0(enc0(v), act)) for v in views]
        hand = sum(losses) / 2
        one_view = sum(((q - targets[0]) ** 2).mean() for q in critic0(enc0(views[0]), act))
    metrics = agent.update(batch)
    assert calls == [0, 1, 2, 3, 4]
    assert float(metrics["critic_loss"]) == pytest.approx(float(hand), rel=1e-5)
    assert float(hand) != pytest.approx(float(one_view), rel=1e-3)  # the averaging is visible
    # The actor's loss: the first view encoded anew by the encoder *after* the critic's step (as
    # SAC-AE's and DrQ's actor updates do), the actor's own head on its conv output.
    state = gen.get_state()
    with torch.no_grad():
        losses = []
        for encoder in (agent.encoder, enc0):  # after the critic's step, and before it
            gen.set_state(state)
            z = encoder.trunk(views[0])
            pi, logp = actor0(z, gen)
            losses.append(float((alpha * logp - agent.critic(encoder.head(z), pi).min(0).values).mean()))
    assert float(metrics["actor_loss"]) == pytest.approx(losses[0], rel=1e-5)
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_td3_target_actor_reads_the_target_trunk_and_k_m_average(monkeypatch):
    env = pixel_env()
    hyper = dict(hidden_dims=(16, 16), batch_size=6, buffer_size=200, feature_dim=8, policy_noise=0.5, noise_clip=0.3)
    agent = TD3(env, target_augmentations=2, critic_augmentations=3, **hyper)
    fill(agent, env, 40)
    for _ in range(3):  # so that the online and the target encoders differ
        agent.update(agent.replay.sample(6))
    assert not torch.equal(agent.encoder.trunk.net[0].weight, agent.encoder_target.trunk.net[0].weight)
    batch = agent.replay.sample(6)
    monkeypatch.setattr(agent, "augment", roll_augment([]))
    actor_t, critic0, critic_t = (copy.deepcopy(m) for m in (agent.actor_target, agent.critic, agent.critic_target))
    enc0, enc_t = copy.deepcopy(agent.encoder), copy.deepcopy(agent.encoder_target)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(agent.generator.get_state())
    obs, next_obs = torch.tensor(batch.obs), torch.tensor(batch.next_obs)
    act, rew, disc = torch.tensor(batch.action), torch.tensor(batch.reward), torch.tensor(batch.discount)
    with torch.no_grad():
        targets = []
        for i in (4, 5):  # after the M = 3 observation views
            z = enc_t.trunk(torch.roll(next_obs, i, dims=3))
            noise = (torch.randn(6, 1, generator=gen) * 0.5).clamp(-0.3, 0.3)
            a = (actor_t(z) + noise).clamp(-1, 1)
            targets.append(rew + 0.99 * disc * critic_t(enc_t.head(z), a).min(0).values)
        y = sum(targets) / 2
        losses = [sum(((q - y) ** 2).mean() for q in critic0(enc0(torch.roll(obs, i, dims=3)), act)) for i in (1, 2, 3)]
        hand = sum(losses) / 3
    assert float(agent.update(batch)["critic_loss"]) == pytest.approx(float(hand), rel=1e-5)


def test_actor_head_has_its_own_parameters_and_reads_the_conv_output_detached():
    env = pixel_env()
    agent = SAC(env, hidden_dims=(16, 16), batch_size=4, buffer_size=200, feature_dim=8)  # the drq preset
    fill(agent, env, 30)
    head = agent.actor.head
    assert isinstance(head, ActorHead)
    assert head.fc.in_features == agent.encoder.fc.in_features  # the conv trunk's output, flattened
    head_ids, enc_ids = {id(p) for p in head.parameters()}, {id(p) for p in agent.encoder.parameters()}
    assert not head_ids & enc_ids
    actor_opt = {id(p) for g in agent.actor_optimizer.param_groups for p in g["params"]}
    critic_opt = {id(p) for g in agent.critic_optimizer.param_groups for p in g["params"]}
    assert head_ids <= actor_opt and not enc_ids & actor_opt  # the actor's loss trains the head only
    assert enc_ids <= critic_opt and not head_ids & critic_opt  # the critic's trains the shared conv
    obs = agent.obs_to_tensor(agent.replay.sample(4).obs)
    z = agent.actor_input(obs)
    assert z.requires_grad and z.dim() == 4  # the trunk's feature map, itself differentiable
    assert not torch.allclose(head(z), agent.encoder.head(z))  # its own head, not the critic's
    agent.actor(z, agent.generator)[1].sum().backward()  # detached inside the head
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # With the critic's optimiser frozen the shared encoder stays bit-identical while the head moves.
    frozen = SAC(env, hidden_dims=(16, 16), batch_size=4, buffer_size=200, feature_dim=8, critic_lr=0.0)
    fill(frozen, env, 30)
    enc0 = [p.clone() for p in frozen.encoder.parameters()]
    head0 = [p.clone() for p in frozen.actor.head.parameters()]
    for _ in range(4):
        frozen.update(frozen.replay.sample(4))
    assert all(torch.equal(a, b) for a, b in zip(enc0, frozen.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(head0, frozen.actor.head.parameters()))


@pytest.mark.parametrize("critic_trains_encoder", [True, False])
def test_actor_head_sits_on_an_adopted_encoders_output(critic_trains_encoder):
    from ssrl.representations.backbones import make_encoder

    env = pixel_env()
    torch.manual_seed(0)
    adopted = make_encoder("fast", in_channels=9, image_size=32, feature_dim=6)
    hyper = dict(hidden_dims=(16,), batch_size=4, buffer_size=200, critic_trains_encoder=critic_trains_encoder)
    agent = SAC(env, encoder=adopted, **hyper)
    fill(agent, env, 30)
    assert agent.actor.head.fc.in_features == 6 == agent.feature_dim
    obs = agent.obs_to_tensor(agent.replay.sample(4).obs)
    torch.testing.assert_close(agent.actor_input(obs), adopted(obs))
    agent.actor(agent.actor_input(obs), agent.generator)[1].sum().backward()
    assert all(p.grad is None for p in adopted.parameters())
    before = [p.clone() for p in adopted.parameters()]
    for _ in range(3):
        agent.update(agent.replay.sample(4))
    moved = not all(torch.equal(a, b) for a, b in zip(before, adopted.parameters()))
    assert moved == critic_trains_encoder  # only the critic's loss can move it


# The DrQ paper's hyper-parameter table (Kostrikov, Yarats and Fergus, ICLR 2021, appendix) and
# denisyarats/drq config.yaml / drq.py, written here from those sources.
DRQ_PAPER = dict(
    gamma=0.99,  # discount
    batch_size=512,  # mini-batch size (config.yaml: "use a batch size of 512 to reproduce the results in the paper")
    buffer_size=100_000,  # replay buffer capacity
    learning_starts=1000,  # seed steps
    actor_lr=1e-3,  # learning rate, Adam
    critic_lr=1e-3,
    alpha_lr=1e-3,  # drq.py: the temperature's Adam uses the same lr, default betas
    alpha_beta1=0.9,
    init_alpha=0.1,  # init temperature
    tau=0.01,  # critic Q-function soft-update rate
    target_update_freq=2,  # critic target update frequency
    actor_update_freq=2,  # actor update frequency
    log_std_bounds=(-10.0, 2.0),  # actor log stddev bounds
    hidden_dims=(1024, 1024),  # hidden_dim 1024, hidden_depth 2
    feature_dim=50,  # encoder feature_dim
    encoder_tanh=True,
    augment="shift",  # random shifts: replicate pad 4 and random crop
    shift_pad=4,  # image pad
    target_augmentations=2,  # K
    critic_augmentations=2,  # M
    actor_head=True,
)


def tiny_pixel_spaces():
    return gym.spaces.Box(0, 255, (9, 16, 16), np.uint8), gym.spaces.Box(-1, 1, (2,), np.float32)


def test_drq_preset_values_equal_the_papers_table_and_it_is_the_default():
    obs_space, act_space = tiny_pixel_spaces()
    agent = SAC(None, observation_space=obs_space, action_space=act_space)  # no preset named: drq
    c = agent.config
    assert c.pixel_preset == "drq"
    assert {k: getattr(c, k) for k in DRQ_PAPER} == DRQ_PAPER
    for opt in (agent.actor_optimizer, agent.critic_optimizer, agent.alpha_optimizer):
        assert [(g["lr"], g["betas"]) for g in opt.param_groups] == [(1e-3, (0.9, 0.999))]
    assert float(agent.alpha) == pytest.approx(0.1)
    # One tau (0.01) for the whole critic target, encoder included, every 2 updates.
    fill(agent, _SpaceEnv(obs_space, act_space), 20)
    target0 = [p.clone() for p in agent.encoder_target.parameters()]
    agent.update(agent.replay.sample(4))  # update 0: a target update
    for old, new, src in zip(target0, agent.encoder_target.parameters(), agent.encoder.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * src)
    target1 = [p.clone() for p in agent.encoder_target.parameters()]
    agent.update(agent.replay.sample(4))  # update 1: none
    assert all(torch.equal(a, b) for a, b in zip(target1, agent.encoder_target.parameters()))
    # The values given replace the preset's; the other presets keep their own.
    assert SAC(None, observation_space=obs_space, action_space=act_space, batch_size=64).config.batch_size == 64
    sac_ae = SAC(None, observation_space=obs_space, action_space=act_space, pixel_preset="sac-ae").config

    def values(config, keys):
        return {k: getattr(config, k) for k in keys}

    # pytorch_sac_ae train.py defaults; SAC-AE does not augment; its actor has its own head.
    sac_ae = SAC(None, observation_space=obs_space, action_space=act_space, pixel_preset="sac-ae").config
    assert values(sac_ae, ["batch_size", "buffer_size", "alpha_lr", "alpha_beta1", "encoder_tau", "augment"]) == dict(
        batch_size=128, buffer_size=1_000_000, alpha_lr=1e-4, alpha_beta1=0.5, encoder_tau=0.05, augment=None
    )
    assert values(sac_ae, ["target_augmentations", "critic_augmentations", "actor_head"]) == dict(
        target_augmentations=1, critic_augmentations=1, actor_head=True
    )
    legacy = SAC(None, observation_space=obs_space, action_space=act_space, pixel_preset="legacy").config
    assert values(legacy, ["batch_size", "alpha_lr", "encoder_tau", "target_augmentations", "actor_head"]) == dict(
        batch_size=128, alpha_lr=1e-4, encoder_tau=0.05, target_augmentations=1, actor_head=False
    )
    td3 = TD3(None, observation_space=obs_space, action_space=act_space).config
    assert values(td3, ["batch_size", "tau", "encoder_tau", "target_augmentations", "critic_augmentations"]) == dict(
        batch_size=512, tau=0.01, encoder_tau=None, target_augmentations=2, critic_augmentations=2
    )
    # "none": the vector defaults on pixels (the latent agent given frames), for both algorithms.
    for algo in (SAC, TD3):
        none = algo(None, observation_space=obs_space, action_space=act_space, pixel_preset="none").config
        vector = algo(Reach1D()).config
        keys = [
            "batch_size",
            "buffer_size",
            "learning_starts",
            "critic_lr",
            "tau",
            "hidden_dims",
            "target_augmentations",
        ]
        assert values(none, keys) == values(vector, keys) and none.hidden_dims == (256, 256)
    # Vector observations keep the SB3-like defaults whatever the preset.
    assert SAC(Reach1D()).config.batch_size == 256 and SAC(Reach1D()).config.target_augmentations == 1


class _SpaceEnv(gym.Env):
    def __init__(self, obs_space, act_space):
        self.observation_space, self.action_space = obs_space, act_space

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_an_unknown_preset_is_refused_naming_the_valid_ones(algo, tmp_path):
    obs_space, act_space = tiny_pixel_spaces()
    with pytest.raises(ValueError, match=r"unknown pixel_preset 'drq2'.*valid presets: drq, legacy, none, sac-ae$"):
        algo(None, observation_space=obs_space, action_space=act_space, pixel_preset="drq2")
    with pytest.raises(ValueError, match=r"unknown pixel_preset 'DrQ'.*valid presets: drq, legacy, none, sac-ae$"):
        algo(Reach1D(), pixel_preset="DrQ")  # refused on vectors too, where presets do not apply
    with pytest.raises(ValueError, match="valid presets: drq, legacy, none, sac-ae"):  # --set pixel_preset=nope
        train_run(
            tmp_path / "run",
            "ssrl/cartpole-swingup-v0",
            algo=algo.algo,
            env_steps=8,
            env_kwargs={"size": 16},
            hyperparams={"pixel_preset": "nope"},
            progress=False,
            tensorboard=False,
        )
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_pixel_run_with_the_drq_preset_resumes_bit_exactly(tmp_path):
    run = dict(
        env_id="ssrl/cartpole-swingup-v0",
        env_kwargs={"size": 24, "task_kwargs": {"time_limit": 0.4}},
        hyperparams={"hidden_dims": [16], "batch_size": 8, "buffer_size": 400, "learning_starts": 4, "feature_dim": 8},
        eval_every=80,
        eval_episodes=1,
        checkpoint_every=40,
        progress=False,
        tensorboard=False,
    )
    train_run(tmp_path / "full", env_steps=160, **run)
    train_run(tmp_path / "split", env_steps=80, **run)
    train_run(tmp_path / "split", env_steps=160, **run)
    a = torch.load(tmp_path / "full" / "checkpoint" / "agent.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint" / "agent.pt", weights_only=True)
    assert a["config"]["pixel_preset"] == "drq" and a["config"]["target_augmentations"] == 2
    assert a["counters"] == b["counters"] and a["counters"]["updates"] > 0
    assert "head.fc.weight" in a["modules"]["actor"]
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)


# -- precision -----------------------------------------------------------------------------------


def test_resolve_precision_auto_follows_the_hardware(monkeypatch):
    import ssrl.utils as utils

    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "amx_tile", "amx_bf16"})
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert resolve_precision("auto", "cuda") == "bf16"  # native bf16 (emulation does not count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision("auto", "cuda:0") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16', 'auto', got 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_auto_precision_is_resolved_and_a_checkpoint_keeps_it(monkeypatch, tmp_path):
    import ssrl.utils as utils

    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx512_bf16"})
    agent = SAC(Reach1D(), hidden_dims=(8,), precision="auto", device="cpu")
    assert agent.config.precision == "bf16"
    assert SAC(Reach1D(), hidden_dims=(8,), device="cpu").config.precision == "bf16"  # the default is auto
    assert SAC(Reach1D(), hidden_dims=(8,), precision="fp32", device="cpu").config.precision == "fp32"
    agent.save(tmp_path / "sac.pt")
    monkeypatch.setattr(utils, "cpu_flags", lambda: set())  # resumed on a machine without bf16
    assert SAC(Reach1D(), hidden_dims=(8,), precision="auto", device="cpu").config.precision == "fp32"
    assert SAC.load(tmp_path / "sac.pt", device="cpu").config.precision == "bf16"


# -- replay ------------------------------------------------------------------------------------


def test_replay_rebuilds_pixel_frame_stacks_exactly_and_stores_each_frame_once():
    env = make_dmc("cartpole", "swingup", task_kwargs={"time_limit": 0.4})  # 5 agent steps
    buf = ReplayBuffer(1000, env.observation_space, env.action_space, frame_stack=3)
    recorded = []
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        buf.start_episode(obs)
        done = False
        while not done:
            a = np.full(1, 0.5 - episode, np.float32)
            next_obs, r, term, trunc, _ = env.step(a)
            buf.add(a, r, term, next_obs)
            recorded.append((obs, next_obs, r))
            obs, done = next_obs, term or trunc
        buf.end_episode()
    assert len(buf) == len(recorded) == 15
    batch = buf.sample(200)
    for o, n, r in zip(batch.obs, batch.next_obs, batch.reward):
        match = [k for k, (ro, rn, rr) in enumerate(recorded) if np.array_equal(ro, o)]
        assert match, "a sampled observation is not one the env produced"
        assert any(np.array_equal(recorded[k][1], n) and recorded[k][2] == pytest.approx(r) for k in match)
    frame = 3 * 84 * 84
    assert buf.bytes_per_transition() <= 1.1 * frame


def test_replay_wraps_around_without_stale_stacks():
    env = make_dmc("cartpole", "swingup", frame_stack=2, size=16, task_kwargs={"time_limit": 0.8})
    buf = ReplayBuffer(23, env.observation_space, env.action_space, frame_stack=2)
    seen = {}
    for episode in range(6):
        obs, _ = env.reset(seed=episode)
        buf.start_episode(obs)
        done = False
        while not done:
            next_obs, r, term, trunc, _ = env.step(np.zeros(1, np.float32))
            buf.add(np.zeros(1), r, term, next_obs)
            seen[obs.tobytes()] = next_obs
            obs, done = next_obs, term or trunc
        buf.end_episode()
    batch = buf.sample(500)
    for o, n in zip(batch.obs, batch.next_obs):
        np.testing.assert_array_equal(seen[o.tobytes()], n)


def test_replay_serves_runs_of_consecutive_instants_of_one_episode_uniformly():
    """Each frame is tagged (episode, instant); a ring of 12 slots holds the last 12 instants of
    episodes of 4, 7 and 5 instants and a running one of 3."""
    space = gym.spaces.Box(0, 255, (3, 1, 1), np.uint8)
    buf = ReplayBuffer(12, space, gym.spaces.Box(-1, 1, (1,)))
    with pytest.raises(ValueError, match="holds no frame yet"):
        buf.sample_segments(1, 3, np.random.default_rng(0))
    tag = lambda ep, t: np.array([ep, t, 0], np.uint8).reshape(3, 1, 1)  # noqa: E731
    for ep, steps in enumerate([3, 6, 4, 2]):
        buf.start_episode(tag(ep, 0))
        for t in range(1, steps + 1):
            buf.add(np.array([ep + t / 10]), float(10 * ep + t), False, tag(ep, t))
        if ep < 3:
            buf.end_episode()
    # 19 instants written; held: the last 12, instants 3-6 of episode 1 (its first 3 are
    # overwritten), 0-4 of episode 2 and 0-2 of the running episode 3.
    assert buf.longest_run() == 5
    runs = buf.sample_segments(600, 3, np.random.default_rng(1))
    frames = runs["frames"][:, :, :2, 0, 0].astype(int)  # (n, 3, [episode, instant])
    assert runs["frames"].shape == (600, 3, 3, 1, 1)
    assert (frames[:, :, 0] == frames[:, :1, 0]).all()  # one episode per run
    assert (np.diff(frames[:, :, 1], axis=1) == 1).all()  # consecutive instants, in time order
    starts = {tuple(f) for f in frames[:, 0]}
    assert starts == {(1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (3, 0)}  # every run held whole, none else
    counts = np.unique(frames[:, 0, 0] * 10 + frames[:, 0, 1], return_counts=True)[1]
    assert counts.min() > 600 / 6 * 0.75  # uniform over the six runs
    ep, t = frames[:, :-1, 0], frames[:, :-1, 1]  # the steps between the run's instants
    np.testing.assert_allclose(runs["action"][..., 0], ep + (t + 1) / 10, rtol=1e-6)
    np.testing.assert_array_equal(runs["reward"], 10 * ep + t + 1)
    assert runs["terminated"].shape == (600, 2)
    longest = buf.sample_segments(5, 100, np.random.default_rng(2))["frames"][:, :, :2, 0, 0]
    np.testing.assert_array_equal(longest, np.tile([[2, 0], [2, 1], [2, 2], [2, 3], [2, 4]], (5, 1, 1)))
    goal = gym.spaces.Dict({"observation": space, "achieved_goal": space, "desired_goal": space})
    with pytest.raises(ValueError, match="image observations, not dict"):
        ReplayBuffer(12, goal, gym.spaces.Box(-1, 1, (1,))).sample_segments(1, 3, np.random.default_rng(0))


def test_replay_keeps_each_frames_motion_and_recomputes_it_on_load(tmp_path):
    """The runs' per-frame motion is the mean absolute pixel change since the run's previous
    frame (0 for its first), as computed from the served frames; a buffer loaded from a save
    serves the same runs with the same motion."""
    space = gym.spaces.Box(0, 255, (6, 5, 5), np.uint8)
    buf = ReplayBuffer(11, space, gym.spaces.Box(-1, 1, (1,)), frame_stack=2)
    rng = np.random.default_rng(0)
    for steps in [3, 6, 4]:
        frames = rng.integers(0, 256, (steps + 1, 3, 5, 5), np.uint8)
        stacks = [frames[[max(t - 1, 0), t]].reshape(6, 5, 5) for t in range(steps + 1)]
        buf.start_episode(stacks[0])
        for t in range(1, steps + 1):
            buf.add(np.zeros(1), 0.0, False, stacks[t])
        buf.end_episode()
    runs = buf.sample_segments(50, 4, np.random.default_rng(1))
    f = runs["frames"].astype(float)
    by_hand = np.abs(np.diff(f, axis=1)).mean(axis=(2, 3, 4)) / 255.0
    assert (runs["motion"][:, 0] == 0).all() and by_hand.min() > 0.1  # random frames move
    np.testing.assert_allclose(runs["motion"][:, 1:], by_hand, rtol=1e-6)
    assert buf.ep_pos[buf.held_slots()[0] % 11] > 0  # the ring cuts an episode: its first held slot
    buf.save(tmp_path)
    loaded = ReplayBuffer(11, space, gym.spaces.Box(-1, 1, (1,)), frame_stack=2)
    loaded.load(tmp_path)
    again = loaded.sample_segments(50, 4, np.random.default_rng(1))
    for key, value in runs.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    vectors = ReplayBuffer(12, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (1,)))
    assert vectors.motion is None  # only image frames have motion


def test_replay_keeps_other_cameras_views_of_each_instant_and_serves_them_in_runs(tmp_path):
    """Each frame tagged (camera, episode, instant): a run's views are the other camera's frames
    of the run's own instants; they survive a save and load; views must come as declared."""
    space = gym.spaces.Box(0, 255, (3, 1, 1), np.uint8)
    make = lambda: ReplayBuffer(12, space, gym.spaces.Box(-1, 1, (1,)), views={"side": (3, 1, 1)})  # noqa: E731
    buf = make()
    tag = lambda cam, ep, t: np.array([cam, ep, t], np.uint8).reshape(3, 1, 1)  # noqa: E731
    for ep, steps in enumerate([4, 6]):
        buf.start_episode(tag(0, ep, 0), {"side": tag(1, ep, 0)})
        for t in range(1, steps + 1):
            buf.add(np.zeros(1), 0.0, False, tag(0, ep, t), {"side": tag(1, ep, t)})
        buf.end_episode()
    runs = buf.sample_segments(40, 3, np.random.default_rng(0))
    agent, side = runs["frames"][..., 0, 0].astype(int), runs["views"]["side"][..., 0, 0].astype(int)
    assert (agent[..., 0] == 0).all() and (side[..., 0] == 1).all()
    np.testing.assert_array_equal(agent[..., 1:], side[..., 1:])  # same episode and instant
    assert "views" not in vars(buf.sample(4))  # the agent's batches never hold them
    buf.save(tmp_path)
    loaded = make()
    loaded.load(tmp_path)
    again = loaded.sample_segments(40, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(again["views"]["side"], runs["views"]["side"])
    with pytest.raises(ValueError, match=r"keeps the views of cameras \['side'\].*given views of \[\]"):
        buf.start_episode(tag(0, 2, 0))
    with pytest.raises(ValueError, match="view 'side' of shape"):
        buf.start_episode(tag(0, 2, 0), {"side": np.zeros((3, 2, 2), np.uint8)})
    with pytest.raises(ValueError, match="holds no view of camera 'front'"):
        ReplayBuffer(12, space, gym.spaces.Box(-1, 1, (1,)), views={"front": (3, 1, 1)}).load(tmp_path)
    with pytest.raises(ValueError, match="beside image observations"):
        ReplayBuffer(12, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Box(-1, 1, (1,)), views={"side": (3, 1, 1)})


def test_replay_refuses_observations_that_are_not_frame_stacks():
    space = gym.spaces.Box(0, 255, (6, 4, 4), np.uint8)
    buf = ReplayBuffer(10, space, gym.spaces.Box(-1, 1, (1,)), frame_stack=2)
    buf.start_episode(np.zeros((6, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="frame_stack=1"):
        buf.add(np.zeros(1), 0.0, False, np.ones((6, 4, 4), np.uint8))


def test_sampling_a_replay_without_complete_transitions_says_so():
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    buf = ReplayBuffer(10, space, gym.spaces.Box(-1, 1, (1,)))
    buf.start_episode(np.zeros(3, np.float32))
    with pytest.raises(RuntimeError, match="no complete transition"):
        buf.sample(4)
    buf.start_episode(np.ones(3, np.float32))  # two reset observations, still no transition
    with pytest.raises(RuntimeError, match="no complete transition"):
        buf.sample(4)
    buf.add(np.zeros(1), 1.0, False, np.full(3, 2.0, np.float32))
    batch = buf.sample(4)  # the one transition, four times
    np.testing.assert_array_equal(batch.obs, np.ones((4, 3)))
    np.testing.assert_array_equal(batch.next_obs, np.full((4, 3), 2.0))


def test_time_limit_truncation_bootstraps_and_termination_does_not():
    space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buf = ReplayBuffer(10, space, space)
    buf.start_episode(np.zeros(1, np.float32))
    buf.add(np.zeros(1), 1.0, False, np.ones(1, np.float32))  # then truncated: still bootstraps
    buf.end_episode()
    buf.start_episode(np.zeros(1, np.float32))
    buf.add(np.zeros(1), 2.0, True, np.ones(1, np.float32))
    buf.end_episode()
    batch = buf.sample(100)
    assert set(zip(batch.reward.tolist(), batch.discount.tolist())) == {(1.0, 1.0), (2.0, 0.0)}


def test_her_relabelling_recomputes_rewards_with_future_achieved_goals():
    env = PointGoal()
    agent = SAC(env, hidden_dims=(8, 8), buffer_size=500, her_ratio=0.8)
    fill(agent, env, 60)
    batch = agent.replay.sample(400)
    store = agent.replay.store
    recomputed = env.compute_reward(batch.next_obs["achieved_goal"], batch.next_obs["desired_goal"], {})
    np.testing.assert_array_equal(batch.reward, recomputed)
    np.testing.assert_array_equal(batch.obs["desired_goal"], batch.next_obs["desired_goal"])
    relabelled = ~np.isin(batch.obs["desired_goal"][:, 0], store["desired_goal"][:, 0])
    assert 0.7 < relabelled.mean() <= 0.8  # her_ratio of the batch (a few goals coincide)
    achieved = {tuple(g) for g in store["achieved_goal"][: agent.replay.total].tolist()}
    assert all(tuple(g) in achieved for g in batch.obs["desired_goal"][relabelled].tolist())
    assert (batch.reward == 0).mean() > 0.05  # hindsight goals make successes out of failures


def test_saving_an_agent_twice_writes_the_same_bytes(tmp_path):
    """No temporary file name inside the checkpoint: equal agents hash equal."""
    agent = SAC(Reach1D(), hidden_dims=(8,), device="cpu", seed=3)
    agent.save(tmp_path / "a.pt")
    agent.save(tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert SAC.load(tmp_path / "b.pt", device="cpu").config.hidden_dims == agent.config.hidden_dims


def test_replay_save_load_round_trip(tmp_path):
    env = Reach1D()
    a = SAC(env, buffer_size=50, hidden_dims=(8,))
    fill(a, env, 80)
    a.replay.save(tmp_path / "replay")
    b = SAC(env, buffer_size=50, hidden_dims=(8,))
    b.replay.load(tmp_path / "replay")
    sa, sb = a.replay.sample(32), b.replay.sample(32)
    np.testing.assert_array_equal(sa.obs, sb.obs)
    np.testing.assert_array_equal(sa.reward, sb.reward)


def test_replay_saves_split_at_the_ring_and_reload_every_slot(tmp_path):
    """A save whose slots wrap around the ring is written as one chunk per unwrapped stretch
    (slices, streamed, not a fancy-indexed copy of the chunk); a reload restores every array."""
    env = Reach1D()
    a = SAC(env, buffer_size=50, hidden_dims=(8,))
    fill(a, env, 30)
    a.replay.save(tmp_path, prune=False)
    first = a.replay.total
    fill(a, env, 40, seed=1)  # past slot 50: the second save wraps around the ring
    a.replay.save(tmp_path, prune=False)
    assert first < 50 < a.replay.total < 100
    names = sorted(c.name for c in tmp_path.glob("chunk_*.npz"))
    assert names == [f"chunk_{x:012d}_{y:012d}.npz" for x, y in [(0, first), (first, 50), (50, a.replay.total)]]
    b = SAC(env, buffer_size=50, hidden_dims=(8,))
    b.replay.load(tmp_path)
    for key in a.replay.store:
        np.testing.assert_array_equal(a.replay.store[key], b.replay.store[key])
    for name in a.replay._PER_SLOT:
        np.testing.assert_array_equal(getattr(a.replay, name), getattr(b.replay, name))


def test_random_shift_moves_images_and_replicates_borders():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    out = random_shift(x, pad=2, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for b in range(2):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = (torch.arange(8) + dy).clamp(0, 7)
                cols = (torch.arange(8) + dx).clamp(0, 7)
                if torch.equal(out[b], x[b][:, rows][:, :, cols]):
                    found = True
        assert found
    assert torch.equal(random_shift(x, pad=0), x)


@pytest.mark.parametrize("pad", [1, 4, 9])  # 9: more padding than the 8-px images have
def test_random_shift_both_implementations_match_a_hand_crop_of_the_padded_image(pad):
    from ssrl.agents.augment import shift_by_gathers, shift_by_slices

    x = torch.randint(0, 256, (5, 6, 8, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(pad))
    shift = torch.randint(0, 2 * pad + 1, (5, 2), generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x.float(), (pad, pad, pad, pad), mode="replicate").to(torch.uint8)
    hand = torch.stack([padded[i, :, dy : dy + 8, dx : dx + 7] for i, (dy, dx) in enumerate(shift.tolist())])
    slices, gathers = shift_by_slices(x, shift, pad), shift_by_gathers(x, shift, pad)
    assert torch.equal(slices, hand) and torch.equal(gathers, hand)
    assert slices.is_contiguous(memory_format=torch.channels_last)  # the layout the conv trunk runs in
    # random_shift draws its shifts as stated, so the same generator gives the hand crop
    assert torch.equal(random_shift(x, pad, torch.Generator().manual_seed(1)), hand)


# -- acting, learning, checkpoints -------------------------------------------------------------


def test_sac_learns_a_simple_task():
    env = Reach1D()
    agent = SAC(env, learning_starts=200, batch_size=64, hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3)
    returns_before = [_episode_return(agent, env, seed) for seed in range(5)]
    agent.learn(2500)
    returns_after = [_episode_return(agent, env, seed) for seed in range(5)]
    assert np.mean(returns_after) > np.mean(returns_before) + 3
    assert np.mean(returns_after) > -3.5  # a random policy gets about -10


def test_td3_learns_a_simple_task():
    env = Reach1D()
    agent = TD3(env, learning_starts=200, batch_size=64, hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3)
    agent.learn(2500)
    assert np.mean([_episode_return(agent, env, seed) for seed in range(5)]) > -3.5


def test_critic_layer_norm_equals_a_hand_computation_per_member():
    from ssrl.agents.networks import TwinQ

    torch.manual_seed(0)
    q = TwinQ(3, 2, (5, 4), layer_norm=True)
    for norm in q.q.norms:  # gains and biases of their own per member, not the identity
        norm.weight.data.normal_()
        norm.bias.data.normal_()
    h, a = torch.randn(6, 3), torch.randn(6, 2)
    x = torch.cat([h, a], dim=-1)
    for i in range(2):
        y = x
        for j, layer in enumerate(q.q.layers):
            y = y @ layer.weight[i] + layer.bias[i]
            if j < 2:
                mu = y.mean(-1, keepdim=True)
                var = ((y - mu) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
                y = (y - mu) / torch.sqrt(var + 1e-5) * q.q.norms[j].weight[i] + q.q.norms[j].bias[i]
                y = y.clamp(min=0)
        torch.testing.assert_close(q(h, a)[i], y.squeeze(-1))
    assert TwinQ(3, 2, (5, 4)).q.norms is None  # off by default: the plain MLP


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_critic_layer_norm_reaches_the_critics_and_learns(algo):
    env = Reach1D()
    agent = algo(env, learning_starts=200, batch_size=64, hidden_dims=(64, 64), critic_lr=1e-3, critic_layer_norm=True)
    assert [tuple(n.weight.shape) for n in agent.critic.q.norms] == [(2, 1, 64), (2, 1, 64)]
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in agent.actor.modules())  # the actor is unchanged
    agent.learn(2500)
    assert np.mean([_episode_return(agent, env, seed) for seed in range(5)]) > -3.5  # random: about -10


class PrivilegedPointGoal(PointGoal):
    """PointGoal with privileged entries for an asymmetric critic: ``critic_observation`` (the
    point in other units, and the time left), ``critic_achieved`` and
    ``critic_desired`` (the point and the goal, 10x), which the reward is computed on."""

    reward_keys = ("critic_achieved", "critic_desired")
    observation_space = gym.spaces.Dict(
        dict(
            PointGoal.observation_space.spaces,
            critic_observation=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            critic_achieved=gym.spaces.Box(-10, 10, (2,), np.float32),
            critic_desired=gym.spaces.Box(-10, 10, (2,), np.float32),
        )
    )

    def _obs(self):
        left = np.float32(1 - self.t / 10)
        return dict(
            super()._obs(),
            critic_observation=np.array([*(10 * self.p), left], np.float32),
            critic_achieved=10 * self.p,
            critic_desired=10 * self.g,
        )

    def compute_reward(self, achieved, desired, info):
        return super().compute_reward(np.asarray(achieved) / 10, np.asarray(desired) / 10, info)

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        reward = float(self.compute_reward(obs["critic_achieved"], obs["critic_desired"], info))
        return obs, reward, terminated, truncated, info

    # Imagined goals, as RIG's env gives them: goals, and the reward entries behind them.
    can_imagine_goals = True

    def sample_goals(self, n, rng, like=None):
        return rng.uniform(-1, 1, (n, 2)).astype(np.float32)

    def decode_goals(self, goals):
        return 10 * np.asarray(goals, np.float32)


CRITIC_KEYS = ("critic_observation", "critic_desired")


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_asymmetric_critic_reads_its_own_entries_and_the_actor_its_own(algo):
    env = PrivilegedPointGoal()
    agent = algo(env, hidden_dims=(8, 8), buffer_size=500, batch_size=64, critic_keys=CRITIC_KEYS, goal_preset="none")
    assert agent.critic.q.layers[0].weight.shape[1] == 3 + 2 + 2  # critic_observation, critic_desired, action
    assert agent.actor.net[0].in_features == 2 + 2  # observation, desired_goal
    assert agent.side_keys == ("critic_achieved",)  # stored for relabelling, never read
    fill(agent, env, 100)
    batch = agent.replay.sample(64)
    p = agent.prepare(batch)
    by_hand = np.concatenate([batch.obs["critic_observation"], batch.obs["critic_desired"]], axis=1)
    np.testing.assert_array_equal(p.h.numpy(), by_hand)
    actor_by_hand = np.concatenate([batch.obs["observation"], batch.obs["desired_goal"]], axis=1)
    np.testing.assert_array_equal(p.obs.numpy(), actor_by_hand)
    next_by_hand = np.concatenate([batch.next_obs["critic_observation"], batch.next_obs["critic_desired"]], 1)
    np.testing.assert_array_equal(p.h_next.numpy(), next_by_hand)
    np.testing.assert_array_equal(p.actor_nexts[0][:, :2].numpy(), batch.next_obs["observation"])
    actor_in, critic_in = agent.actor_update_inputs(p)
    assert actor_in.shape == (64, 4) and critic_in.shape == (64, 5)
    # The critics never read the actor's entries: scrambling them leaves their inputs as they were.
    scrambled = copy.deepcopy(batch)
    for obs in (scrambled.obs, scrambled.next_obs):
        obs["observation"] = obs["observation"][::-1].copy() + 5
        obs["desired_goal"] = obs["desired_goal"][::-1].copy() - 5
    q = agent.prepare(scrambled)
    torch.testing.assert_close(q.h, p.h)
    torch.testing.assert_close(q.h_next, p.h_next)
    assert not torch.equal(q.obs, p.obs)


def test_asymmetric_critics_goal_is_relabelled_with_the_reward():
    env = PrivilegedPointGoal()
    agent = SAC(
        env, hidden_dims=(8, 8), buffer_size=500, her_ratio=0.7, imagined_goal_ratio=0.1, critic_keys=CRITIC_KEYS
    )
    fill(agent, env, 60)
    batch = agent.replay.sample(400)
    store, total = agent.replay.store, agent.replay.total
    achieved_next = 10 * batch.next_obs["achieved_goal"]  # critic_achieved, a side entry the batch leaves out
    for obs in (batch.obs, batch.next_obs):  # the goal the critic reads is the one it is rewarded on ...
        np.testing.assert_array_equal(batch.reward, env.compute_reward(achieved_next, obs["critic_desired"], {}))
        np.testing.assert_allclose(obs["critic_desired"], 10 * obs["desired_goal"])  # ... and the actor's, 10x
    relabelled = ~np.isin(batch.obs["critic_desired"][:, 0], store["critic_desired"][:total, 0])
    assert 0.75 < relabelled.mean() <= 0.8
    future, imagined = relabelled[:280], relabelled[280:320]  # the replay's order: future rows, then imagined
    assert future.mean() > 0.95 and imagined.all() and not relabelled[320:].any()
    achieved = {tuple(g) for g in store["critic_achieved"][:total].tolist()}
    assert all(tuple(g) in achieved for g in batch.obs["critic_desired"][:280][future].tolist())
    assert (batch.reward == 0).mean() > 0.05


def test_asymmetric_critic_learns_and_its_normaliser_is_saved(tmp_path):
    env = PrivilegedPointGoal()
    agent = SAC(env, seed=0, learning_starts=300, batch_size=128, hidden_dims=(64, 64), critic_keys=CRITIC_KEYS)
    assert agent.critic_normalizer is not None and agent.critic_normalizer.mean.shape == (5,)

    def successes():
        hits = 0
        for seed in range(20):
            obs, _ = env.reset(seed=100 + seed)
            done = False
            while not done:
                obs, reward, term, trunc, _ = env.step(agent.predict(obs)[0])
                done = term or trunc
            hits += reward == 0
        return hits

    before = successes()
    agent.learn(3000)
    after = successes()
    assert after >= before + 8 and after >= 12, (before, after)
    agent.save(tmp_path / "agent.pt")
    loaded = SAC.load(tmp_path / "agent.pt", env)
    assert loaded.config.critic_keys == CRITIC_KEYS
    torch.testing.assert_close(loaded.critic_normalizer.mean, agent.critic_normalizer.mean)
    assert int(loaded.critic_normalizer.count) == int(agent.critic_normalizer.count) > 0
    # Counted once per batch trained on, as the actor's normaliser.
    assert int(agent.critic_normalizer.count) == agent.num_updates * 128 == int(agent.obs_normalizer.count)


def test_asymmetric_critic_keys_are_checked():
    with pytest.raises(ValueError, match=r"'state' is not in the observation; its entries: \['achieved_goal'"):
        SAC(PrivilegedPointGoal(), critic_keys=("state", "critic_desired"))
    with pytest.raises(ValueError, match="needs a goal env with vector observations"):
        SAC(Reach1D(), critic_keys=("observation", "desired_goal"))
    with pytest.raises(ValueError, match=r"critic_keys must have 2 entries, got \('critic_observation',\)"):
        SAC(PrivilegedPointGoal(), critic_keys=("critic_observation",))
    with pytest.raises(ValueError, match="critic_keys' goal 'critic_achieved' is not relabelled.*'critic_desired'"):
        SAC(PrivilegedPointGoal(), critic_keys=("critic_observation", "critic_achieved"))
    SAC(PrivilegedPointGoal(), critic_keys=("critic_observation", "critic_achieved"), her_ratio=0.0)  # no relabelling


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_critic_hidden_dims_widen_the_critics_and_leave_the_actor(algo):
    agent = algo(Reach1D(), hidden_dims=(16, 16), critic_hidden_dims=[32, 24, 8])
    assert [tuple(layer.weight.shape[1:]) for layer in agent.critic.q.layers] == [(3, 32), (32, 24), (24, 8), (8, 1)]
    assert [layer.out_features for layer in agent.actor.net if isinstance(layer, torch.nn.Linear)][:2] == [16, 16]
    assert agent.critic.model is None  # no model head unless critic_model_weight asks for one
    with pytest.raises(ValueError, match=r"critic_hidden_dims must be one or more positive widths, got \(\)"):
        algo(Reach1D(), critic_hidden_dims=[])


@pytest.mark.parametrize("keys", [None, CRITIC_KEYS])
def test_critic_model_loss_equals_a_hand_computation(keys):
    """Each critic's last hidden layer predicts, through its own linear head, the change of the
    standardised observation the critics read: [observation] or, asymmetric, [critic_observation]."""
    env = PrivilegedPointGoal()
    agent = SAC(env, hidden_dims=(8, 6), buffer_size=500, batch_size=32, critic_keys=keys, critic_model_weight=0.5)
    fill(agent, env, 100)
    p = agent.prepare(agent.replay.sample(32))
    d = 3 if keys else 2  # critic_observation (point x10, time left) or observation (the point)
    assert agent.critic_obs_dim == d and agent.critic.model.weight.shape == (2, 6, d)
    x = torch.cat([p.h, p.action], dim=1)
    change = p.h_next[:, :d] - p.h[:, :d]
    by_hand = 0.0
    for i in range(2):
        y = x
        for layer in agent.critic.q.layers[:-1]:
            y = (y @ layer.weight[i] + layer.bias[i]).clamp(min=0)
        prediction = y @ agent.critic.model.weight[i] + agent.critic.model.bias[i]
        by_hand = by_hand + ((prediction - change) ** 2).mean()
    torch.testing.assert_close(agent.critic_model_loss(p), by_hand, rtol=2e-2, atol=1e-4)  # bf16 matmuls on "auto"
    # The update's critic loss takes it from its own pass through the critics: the same value.
    torch.testing.assert_close(agent.critic_loss(p, torch.zeros(32))[2], agent.critic_model_loss(p))
    # The update adds it to the critics' loss: the head is trained by the critics' optimiser.
    head = agent.critic.model.weight.detach().clone()
    metrics = agent.update(agent.replay.sample(32))
    assert "critic_model_loss" in metrics and not torch.equal(head, agent.critic.model.weight)


def test_critic_model_head_learns_the_observation_change():
    """On PointGoal the point moves by 0.1 x action (inside the box): a change the head can
    learn, so its loss falls far; the Q loss alone would leave the head where it started."""
    env = PointGoal()
    agent = SAC(env, hidden_dims=(64, 64), buffer_size=2000, batch_size=128, critic_model_weight=1.0)
    fill(agent, env, 1000)
    batches = [agent.replay.sample(128) for _ in range(300)]
    first = agent.critic_model_loss(agent.prepare(batches[0])).item()
    for batch in batches:
        agent.update(batch)
    last = agent.critic_model_loss(agent.prepare(batches[0])).item()
    assert last < first / 10, (first, last)
    with pytest.raises(ValueError, match="critic_model_weight models a vector observation's change"):
        SAC(pixel_env(), critic_model_weight=1.0)


def _episode_return(agent, env, seed):
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, r, term, trunc, _ = env.step(agent.predict(obs)[0])
        total, done = total + r, term or trunc
    return total


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_save_load_round_trip_predicts_identically(algo, tmp_path):
    env = make_dmc("cartpole", "swingup", task_kwargs={"time_limit": 0.4})
    agent = algo(env, hidden_dims=(16, 16), batch_size=4, buffer_size=200, feature_dim=8, learning_starts=5)
    agent.learn(8 * 12)
    agent.save(tmp_path / "agent.pt")
    loaded = algo.load(tmp_path / "agent.pt", env)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        np.testing.assert_array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
        obs, *_ = env.step(agent.predict(obs)[0])
    assert loaded.num_env_steps == agent.num_env_steps == 96


def test_load_rejects_corrupt_and_foreign_checkpoints(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        SAC.load(tmp_path / "bad.pt")
    agent = SAC(Reach1D(), hidden_dims=(8,))
    agent.save(tmp_path / "sac.pt")
    with pytest.raises(ValueError, match="holds a sac agent"):
        TD3.load(tmp_path / "sac.pt")
    with pytest.raises(ValueError, match="trained on observations"):
        SAC.load(tmp_path / "sac.pt", env=PointGoal())
    with pytest.raises(FileNotFoundError):
        SAC.load(tmp_path / "missing.pt")


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match="batchsize.*valid options"):
        SAC(Reach1D(), batchsize=3)


def test_importing_agents_loads_no_representation_method():
    code = (
        "import sys, ssrl.agents; print(sorted(m for m in sys.modules if m.startswith('ssrl.representations.control')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class LossOnly:
    """An aux objective with ``loss`` and ``parameters`` only: not an AuxObjective."""

    def loss(self, inputs):
        return torch.zeros(()), {}

    def parameters(self):
        return iter(())


def test_aux_missing_protocol_members_is_refused_by_name():
    with pytest.raises(TypeError, match=r"AuxObjective.*LossOnly lacks generator, load_state_dict, state_dict, to$"):
        SAC(Reach1D(), aux=LossOnly())


def test_aux_on_vector_observations_is_refused():
    class Complete(LossOnly, torch.nn.Module):
        generator = None

    with pytest.raises(ValueError, match="pixel encoder"):
        SAC(Reach1D(), aux=Complete())


def test_running_normalizer_merges_batches_exactly_and_clips():
    from ssrl.agents.networks import RunningNormalizer

    rng = np.random.default_rng(0)
    data = rng.normal([0.1, -3.0, 5.0], [0.02, 2.0, 0.001], size=(300, 3))
    norm = RunningNormalizer(3, eps=0.01, clip=5.0)
    assert torch.equal(norm(torch.ones(2, 3)), torch.ones(2, 3))  # no statistics yet: unchanged
    for chunk in np.array_split(data, [7, 100, 101]):
        norm.update(torch.as_tensor(chunk, dtype=torch.float32))
    mean, std = data.astype(np.float32).mean(0), data.astype(np.float32).std(0)
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), [std[0], std[1], 0.01], rtol=1e-4)  # eps floors the third
    x = torch.tensor([[0.1 + 0.04, -3.0, 5.0 + 1.0]])
    z = norm(x)[0].numpy()
    np.testing.assert_allclose(z[:2], [(0.04 + 0.1 - mean[0]) / std[0], (-3.0 - mean[1]) / std[1]], rtol=1e-3)
    assert z[2] == 5.0  # 100 standard deviations, clipped


# -- runs: resume, NaN detection ----------------------------------------------------------------

RUN = dict(
    env_id="ssrl/cartpole-swingup-v0",
    algo="sac",
    seed=1,
    env_kwargs={"from_pixels": False, "task_kwargs": {"time_limit": 0.5}},
    hyperparams={"learning_starts": 40, "batch_size": 16, "hidden_dims": [32, 32]},
    eval_every=200,
    eval_episodes=2,
    checkpoint_every=100,
    progress=False,
    tensorboard=False,
)


def killed_run(monkeypatch, cls, method: str, on_call: int, run_dir, env_steps: int, run=RUN) -> None:
    """Run ``train_run`` with ``cls.method`` raising KeyboardInterrupt (a kill) on its
    ``on_call``-th call, then restore the method."""
    real = getattr(cls, method)
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(run_dir, env_steps=env_steps, **run)
    monkeypatch.setattr(cls, method, real)


@pytest.mark.parametrize("normalize_obs", [False, True])
def test_resume_after_kill_continues_identically(tmp_path, monkeypatch, normalize_obs):
    run = dict(RUN, hyperparams=dict(RUN["hyperparams"], normalize_obs=normalize_obs))
    full = train_run(tmp_path / "full", env_steps=600, **run)
    from ssrl.envs.dmc import DMCEnv

    # agent steps at action repeat 8: killed at env step 424, mid-episode
    killed_run(monkeypatch, DMCEnv, "step", 53, tmp_path / "killed", 600, run)
    assert (tmp_path / "killed" / "checkpoint" / "agent.pt").exists()
    assert not (tmp_path / "killed" / "final.json").exists()
    resumed = train_run(tmp_path / "killed", env_steps=600, **run)
    assert resumed["env_steps"] == full["env_steps"] == 600
    a = torch.load(tmp_path / "full" / "checkpoint" / "agent.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "checkpoint" / "agent.pt", weights_only=True)
    for name in a["modules"]:
        for key in a["modules"][name]:
            torch.testing.assert_close(a["modules"][name][key], b["modules"][name][key], rtol=0, atol=0)
    assert a["counters"] == b["counters"]
    evals = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    ra = [(r["env_steps"], r["returns"]) for r in evals("full") if r["kind"] == "eval"]
    rb = [(r["env_steps"], r["returns"]) for r in evals("killed") if r["kind"] == "eval"]
    assert ra == rb and len(ra) == 4
    from ssrl.benchmarks.fault_injection import fingerprint

    # every record but clocks, the episode return the resumed run had not yet seen included
    assert fingerprint(tmp_path / "full" / "metrics.jsonl") == fingerprint(tmp_path / "killed" / "metrics.jsonl")
    assert a["counters"]["last_episode_return"] == b["counters"]["last_episode_return"] != 0.0
    if normalize_obs:  # the statistics travel in the checkpoint: every trained-on row counted
        stats = a["modules"]["obs_normalizer"]
        assert stats["count"] == a["counters"]["updates"] * 16 > 0


def test_run_killed_before_its_first_checkpoint_restarts_without_duplicate_records(tmp_path, monkeypatch):
    from ssrl.envs.dmc import DMCEnv

    # past the step-0 evaluation (14 eval steps), before any checkpoint
    killed_run(monkeypatch, DMCEnv, "step", 20, tmp_path / "run", 200)
    assert not (tmp_path / "run" / "checkpoint" / "agent.pt").exists()
    assert len((tmp_path / "run" / "eval.csv").read_text().splitlines()) == 2  # header + step 0
    train_run(tmp_path / "run", env_steps=200, **RUN)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run" / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [0, 200]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["env_steps"] for r in records if r["kind"] == "eval"]
    assert evals == [0, 200]


def test_kill_between_replay_and_agent_save_resumes_from_the_previous_checkpoint(tmp_path, monkeypatch):
    """The replay's chunk of a checkpoint is on disk but the agent file is not: resume must take
    the previous checkpoint whole (not the newer replay under the older agent)."""
    full = train_run(tmp_path / "full", env_steps=600, **RUN)
    killed_run(monkeypatch, SAC, "save", 3, tmp_path / "killed", 600)
    replay_dir = tmp_path / "killed" / "checkpoint" / "replay"
    saved = torch.load(tmp_path / "killed" / "checkpoint" / "agent.pt", weights_only=False)
    assert json.loads((replay_dir / "replay.json").read_text())["total"] > saved["replay"]["total"]
    resumed = train_run(tmp_path / "killed", env_steps=600, **RUN)
    assert resumed["env_steps"] == full["env_steps"]
    a = torch.load(tmp_path / "full" / "checkpoint" / "agent.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "checkpoint" / "agent.pt", weights_only=False)
    assert a["counters"] == b["counters"] and a["replay"]["total"] == b["replay"]["total"]
    for name in a["modules"]:
        for key in a["modules"][name]:
            torch.testing.assert_close(a["modules"][name][key], b["modules"][name][key], rtol=0, atol=0)


def test_replay_load_refuses_a_save_with_missing_chunks(tmp_path):
    env = Reach1D()
    agent = SAC(env, hidden_dims=(8, 8), buffer_size=100)
    fill(agent, env, 30)
    meta = agent.replay.save(tmp_path)
    for chunk in tmp_path.glob("chunk_*.npz"):
        chunk.unlink()
    fresh = SAC(env, hidden_dims=(8, 8), buffer_size=100)
    with pytest.raises(ValueError, match="lacks replay chunks"):
        fresh.replay.load(tmp_path, meta)


def test_finished_run_is_not_overwritten_by_accident(tmp_path):
    train_run(tmp_path / "run", env_steps=80, video=True, **RUN)
    videos = sorted((tmp_path / "run" / "videos").glob("eval_*.mp4"))
    assert [v.name for v in videos] == ["eval_000000000.mp4"]
    import imageio.v3 as iio

    frames = iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[0] > 2 and frames.std() > 0
    with pytest.raises(FileExistsError, match="finished"):
        train_run(tmp_path / "run", env_steps=80, **RUN)
    other = dict(RUN, seed=2)
    with pytest.raises(FileExistsError, match="seed"):
        train_run(tmp_path / "run", env_steps=200, **other)
    summary = train_run(tmp_path / "run", env_steps=80, overwrite=True, **RUN)
    assert summary["env_steps"] == 80


class NaNAfter(gym.Wrapper):
    def __init__(self, env, n):
        super().__init__(env)
        self.n = n

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.n -= 1
        if self.n <= 0:
            obs = obs.copy()
            obs[0] = np.nan
        return obs, r, term, trunc, info


def test_nan_observation_stops_training_with_a_clear_error(tmp_path):
    env = NaNAfter(Reach1D(), 50)
    agent = SAC(env, learning_starts=10, hidden_dims=(8,))
    trainer = Trainer(agent, env, run_dir=tmp_path, checkpoint_every=20, progress=False, tensorboard=False)
    with pytest.raises(TrainingDiverged, match="NaN or infinite observation"):
        trainer.train(200)
    state = torch.load(tmp_path / "checkpoint" / "agent.pt", weights_only=True)
    assert state["counters"]["env_steps"] == 40  # the last good checkpoint, at an episode end


def test_nan_loss_is_detected_before_the_weights_change():
    env = Reach1D()
    agent = SAC(env, hidden_dims=(8,), batch_size=8)
    fill(agent, env, 40)
    batch = agent.replay.sample(8)
    batch.reward[:] = np.inf
    weights = [p.clone() for p in agent.critic.parameters()]
    with pytest.raises(TrainingDiverged, match="critic loss"):
        agent.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(weights, agent.critic.parameters()))


def test_bf16_precision_updates_stay_close_to_fp32():
    env = Reach1D()
    a = SAC(env, hidden_dims=(32, 32), batch_size=32, seed=3)
    b = SAC(env, hidden_dims=(32, 32), batch_size=32, seed=3, precision="bf16")
    fill(a, env, 100)
    fill(b, env, 100)
    batch = a.replay.sample(32)
    la, lb = float(a.update(batch)["critic_loss"]), float(b.update(batch)["critic_loss"])
    assert math.isfinite(lb) and lb == pytest.approx(la, rel=0.05)
