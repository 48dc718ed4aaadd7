"""The four regimes: what trains the encoder in each, the replay serving a method's sampler,
refusals, the CLI shorthands, and exact resume with a method's loss on the replay."""

import dataclasses

import numpy as np
import pytest
import torch

from ssrl.agents import SAC
from ssrl.agents.run import resolve_regime, train_run
from ssrl.envs import AgentCamera, make_dmc
from ssrl.envs.rollouts import DatasetError, collect
from ssrl.representations import StackedFramesEncoder, load_representation
from ssrl.representations.core import Need, names
from ssrl.representations.pretrain import pretrain
from ssrl.representations.regimes import (
    CLIP_LENGTH,
    ReplayClips,
    ReplayData,
    RepresentationObjective,
    fresh_representation,
    replay_data,
)

SIZE = 48
AGENT = dict(hidden_dims=(16,), batch_size=8, buffer_size=400, learning_starts=10)


def cartpole():
    return make_dmc("cartpole", "swingup", size=SIZE, task_kwargs={"time_limit": 0.4})


def agent_for(method: str, regime: str, **hyper):
    """An agent adopting a fresh ``method``'s encoder in ``regime``, and the representation."""
    env = cartpole()
    torch.manual_seed(0)
    rep = fresh_representation(method, env.observation_space.shape, 1, arch="fast", latent_dim=8)
    aux = RepresentationObjective(rep, regime, action_dim=1) if regime != "finetune" else None
    hyper = dict(AGENT, critic_trains_encoder=regime != "decoupled", **hyper)
    agent = SAC(env, aux=aux, encoder=StackedFramesEncoder(rep.encoder, env.observation_space.shape), **hyper)
    agent.learn(8 * 14)  # some updates, so the replay holds batches
    return agent, rep, aux


def encoder_grads(agent, loss) -> list[torch.Tensor | None]:
    agent.encoder.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad for p in agent.encoder.parameters()]


def critic_and_aux_grads(agent):
    """The encoder's gradient from the critic's loss alone and from the aux loss alone."""
    batch = agent.replay.sample(8)
    p = agent.prepare(batch)
    critic_grads = encoder_grads(agent, agent.critic(p.h, p.action).sum()) if p.h.requires_grad else None
    p = agent.prepare(batch)
    aux_grads = encoder_grads(agent, agent.aux.loss(agent.aux_inputs(p))[0]) if agent.aux is not None else None
    return critic_grads, aux_grads


def nonzero(grads) -> bool:
    return grads is not None and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("method", ["rotation", "dbc", "arrow-of-time"])  # frames, transitions, clips
def test_joint_trains_the_encoder_through_both_losses_decoupled_only_through_its_own(method):
    joint, _, aux = agent_for(method, "joint")
    critic, objective = critic_and_aux_grads(joint)
    assert nonzero(critic) and nonzero(objective)
    # The aux optimiser steps the method's heads; the encoder is in the critic's optimiser once.
    encoder_ids = {id(p) for p in joint.encoder.parameters()}
    assert not encoder_ids & {id(p) for p in aux.parameters()}
    assert encoder_ids <= {id(p) for g in joint.critic_optimizer.param_groups for p in g["params"]}

    decoupled, _, aux = agent_for(method, "decoupled")
    critic, objective = critic_and_aux_grads(decoupled)
    assert critic is None  # the critic reads the latents detached: its loss cannot reach the encoder
    assert nonzero(objective)
    encoder_ids = {id(p) for p in decoupled.encoder.parameters()}
    assert not encoder_ids & {id(p) for g in decoupled.critic_optimizer.param_groups for p in g["params"]}
    assert encoder_ids <= {id(p) for p in aux.parameters()}


# Methods whose data an agent's replay cannot give (see the regimes module docstring).
REFUSED = {
    "tcn": "views",
    "mftcn": "views",
    "cc-vae": "context",
    "grasp2vec": "grasps",
    "exemplar": "one fixed data set",
}


@pytest.fixture(scope="module")
def filled_replay():
    """An agent's replay of 84-pixel cartpole (4 episodes of 30 instants: long enough for
    Shuffle & Learn's tuples, big enough for the patch methods) and its env."""
    env = make_dmc("cartpole", "swingup", size=84, task_kwargs={"time_limit": 2.4})
    agent = SAC(env, **dict(AGENT, buffer_size=200, learning_starts=1000))
    with pytest.warns(UserWarning, match="will not be updated"):
        agent.learn(8 * 4 * 30)  # rollouts only
    return env, agent.replay


@pytest.mark.parametrize("method", names())
def test_every_method_learns_decoupled_on_an_agents_replay_or_is_refused_with_its_need(method, filled_replay):
    """The decoupled objective of every registered method draws its batch from a real replay
    and gives its encoder a gradient, or the run is refused up front, naming what is missing."""
    env, replay = filled_replay
    torch.manual_seed(0)
    rep = fresh_representation(method, env.observation_space.shape, 1, arch="fast", latent_dim=8)
    if method in REFUSED:
        with pytest.raises(DatasetError, match=f"needs {REFUSED[method]}.*frozen or fine-tuned"):
            RepresentationObjective(rep, "decoupled", action_dim=1)
        return
    aux = RepresentationObjective(rep, "decoupled", action_dim=1)
    agent = SAC(env, aux=aux, encoder=StackedFramesEncoder(rep.encoder, env.observation_space.shape), **AGENT)
    agent.replay = replay
    grads = encoder_grads(agent, agent.aux.loss(agent.aux_inputs(agent.prepare(replay.sample(8))))[0])
    assert nonzero(grads)


def test_single_view_tcn_draws_its_positives_near_and_negatives_far_in_the_replays_clips(filled_replay):
    env, replay = filled_replay
    rep = fresh_representation("tcn", env.observation_space.shape, 1, arch="fast", latent_dim=8, single_view=True)
    RepresentationObjective(rep, "decoupled", action_dim=1)  # not refused: it needs no second camera
    data = ReplayClips(replay.sample_segments(1, CLIP_LENGTH, np.random.default_rng(0)))  # one run: 31 instants
    batch = rep.sample_batch(data, 32, np.random.default_rng(1))
    flat = data.view()
    assert len(np.unique(flat.reshape(len(flat), -1), axis=0)) == len(flat)  # every instant's frame is its own
    where = lambda stacks: [int(np.flatnonzero((flat == s[-3:]).all(axis=(1, 2, 3)))[0]) for s in stacks]  # noqa: E731
    a, p, n = (np.array(where(batch[k])) for k in ("anchor", "positive", "negative"))
    assert (np.abs(p - a) <= rep.config.positive_window).all() and (np.abs(n - a) > rep.config.negative_margin).all()
    assert len(set(a)) > 10


def test_multi_view_tcn_learns_on_the_replay_of_an_env_that_renders_a_second_camera():
    """Seen through AgentCamera the agent observes the first camera; its replay keeps the second
    camera's frame of every instant, so multi-view TCN is no longer refused, pairs the two
    cameras' frames of one instant as anchor and positive, and gives its encoder a gradient."""
    env = AgentCamera(make_dmc("cartpole", "swingup", size=SIZE, cameras=[0, 1], task_kwargs={"time_limit": 2.4}))
    assert env.view_names == ("lookatcart",) and env.observation_space.shape == (9, SIZE, SIZE)
    cameras = (env.agent_camera, *env.view_names)
    torch.manual_seed(0)
    rep = fresh_representation("tcn", env.observation_space.shape, 1, arch="fast", latent_dim=8)
    with pytest.raises(DatasetError, match="needs views"):
        RepresentationObjective(rep, "decoupled", action_dim=1)  # a replay of one camera
    bad = fresh_representation("tcn", env.observation_space.shape, 1, arch="fast", views=["fixed", "back"])
    with pytest.raises(
        DatasetError, match=r"asks for cameras \['back'\]; the agent's replay keeps \['fixed', 'lookatcart'\]"
    ):
        RepresentationObjective(bad, "decoupled", action_dim=1, cameras=cameras)
    aux = RepresentationObjective(rep, "decoupled", action_dim=1, cameras=cameras)
    encoder = StackedFramesEncoder(rep.encoder, env.observation_space.shape)
    agent = SAC(env, aux=aux, encoder=encoder, **dict(AGENT, batch_size=16))
    agent.learn(8 * 40)
    assert set(agent.replay.views) == {"lookatcart"}
    grads = encoder_grads(agent, agent.aux.loss(agent.aux_inputs(agent.prepare(agent.replay.sample(16))))[0])
    assert nonzero(grads)
    data = ReplayClips(agent.replay.sample_segments(1, CLIP_LENGTH, np.random.default_rng(0)))
    assert data.cameras == ["fixed", "lookatcart"] and data.view("agent") is data.view("fixed")
    with pytest.raises(DatasetError, match=r"clips hold the cameras \['fixed', 'lookatcart'\]; 'back' is none"):
        data.view("back")
    batch = rep.sample_batch(data, 32, np.random.default_rng(1))

    def instant_and_camera(frame):
        for camera in data.cameras:
            hit = np.flatnonzero((data.view(camera) == frame).all(axis=(1, 2, 3)))
            if len(hit):
                return int(hit[0]), camera
        raise AssertionError("a frame that is in no camera of the run")

    for anchor, positive in zip(batch["anchor"], batch["positive"]):
        (ta, ca), (tp, cp) = instant_and_camera(anchor[-3:]), instant_and_camera(positive[-3:])
        assert ta == tp and ca != cp  # one instant, two cameras


def test_decoupled_encoder_moves_only_with_its_own_loss_and_finetune_only_with_the_critic():
    frozen_aux, rep, _ = agent_for("rotation", "decoupled", aux_lr=0.0)
    before = [p.clone() for p in rep.encoder.parameters()]
    frozen_aux.learn(8 * 6)
    assert all(torch.equal(a, b) for a, b in zip(before, rep.encoder.parameters()))  # critic steps cannot move it
    moving, rep, _ = agent_for("rotation", "decoupled")
    before = [p.clone() for p in rep.encoder.parameters()]
    moving.learn(8 * 6)
    assert not all(torch.equal(a, b) for a, b in zip(before, rep.encoder.parameters()))

    still, rep, _ = agent_for("rotation", "finetune", encoder_lr=0.0)
    before = [p.clone() for p in rep.encoder.parameters()]
    still.learn(8 * 6)
    assert all(torch.equal(a, b) for a, b in zip(before, rep.encoder.parameters()))
    tuned, rep, _ = agent_for("rotation", "finetune", encoder_lr=1e-3)
    before = [p.clone() for p in rep.encoder.parameters()]
    tuned.learn(8 * 6)
    assert not all(torch.equal(a, b) for a, b in zip(before, rep.encoder.parameters()))
    assert tuned.aux is None and len(tuned.critic_optimizer.param_groups) == 2


def test_replay_data_serves_a_methods_own_sampler_and_refuses_what_it_cannot_hold():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (5, 9, 8, 8), dtype=np.uint8)
    data = ReplayData(obs, obs[::-1].copy(), np.ones((5, 2), np.float32), np.arange(5.0), np.ones(5, np.float32))
    idx = data.sample_frames(5, rng)
    assert sorted(idx) == [0, 1, 2, 3, 4]  # distinct frames of the batch
    np.testing.assert_array_equal(data.stack([1, 3], k=1), obs[[1, 3], 6:])  # the newest frame
    t = data.transitions(np.array([2]), k=3)
    np.testing.assert_array_equal(t["next_obs"], obs[[2]])  # obs[::-1][2] is obs[2]
    assert t["reward"].tolist() == [2.0]
    with pytest.raises(ValueError, match="stacks 4 frames"):
        data.stack([0], k=4)
    env = cartpole()
    for method, need in (("tcn", "views"), ("mftcn", "views"), ("cc-vae", "context")):
        rep = fresh_representation(method, env.observation_space.shape, 1, arch="fast", latent_dim=8)
        with pytest.raises(DatasetError, match=f"needs {need}.*frozen or fine-tuned"):
            RepresentationObjective(rep, "decoupled", action_dim=1)


def test_clips_come_from_runs_of_the_replay_and_video_encoders_keep_to_single_frames():
    """A video method's own sampler draws its clips from runs of the agent's replay: every
    arrow-of-time clip is consecutive frames of one run, played forwards exactly when labelled
    so; a fresh video encoder takes single frames (3 channels) under the env's 3-frame stack."""
    agent, rep, aux = agent_for("arrow-of-time", "decoupled")
    assert rep.config.frame_stack == 1 and rep.obs_shape[0] == 3
    runs = agent.replay.sample_segments(4, CLIP_LENGTH, np.random.default_rng(0))
    length = agent.replay.longest_run()
    assert runs["frames"].shape[:2] == (4, length) and length < CLIP_LENGTH  # short test episodes: whole ones
    data = ReplayClips(runs)
    assert data.num_episodes == 4 and data.view("fixed") is data.view(None)  # the one camera is every view
    computed = ReplayClips({k: v for k, v in runs.items() if k != "motion"}).motion()
    np.testing.assert_array_equal(data.motion("fixed"), computed)  # the replay's kept motion, exactly
    assert computed.max() > 0
    kept = np.arange(runs["motion"].size, dtype=np.float32).reshape(runs["motion"].shape)
    np.testing.assert_array_equal(ReplayClips(dict(runs, motion=kept)).motion(), kept.reshape(-1))  # read, not redone
    batch = rep.sample_batch(data, 64, np.random.default_rng(1))
    frames = batch["frames"]  # (64, clip_len, 3, H, W)
    flat = data.view()
    for clip, forward in zip(frames, batch["forward"]):
        where = [int(np.flatnonzero((flat == f).all(axis=(1, 2, 3)))[0]) for f in clip]
        steps = np.diff(where)
        assert (steps == (1 if forward else -1)).all(), where
        assert len(set(data.frame_episode[where])) == 1
    inputs = agent.aux_inputs(agent.prepare(agent.replay.sample(8)))
    assert isinstance(replay_data(inputs, rep.needs, np.random.default_rng(0)), ReplayClips)
    assert isinstance(replay_data(inputs, Need.FRAMES, np.random.default_rng(0)), ReplayData)
    with pytest.raises(DatasetError, match="cannot serve clips"):
        replay_data(dataclasses.replace(inputs, segments=None), rep.needs, np.random.default_rng(0))


def test_regime_shorthands_and_refusals():
    assert resolve_regime(None, None, None, "dbc") == ("dbc", "joint")
    assert resolve_regime(None, None, "m.pt", None) == (None, "frozen")
    assert resolve_regime(None, None, None, None) == (None, None)
    with pytest.raises(ValueError, match="needs a --regime"):
        resolve_regime("tcn", None, None, None)
    with pytest.raises(ValueError, match="needs a pretrained encoder"):
        resolve_regime("tcn", "finetune", None, None)
    with pytest.raises(ValueError, match="unknown regime 'tuned'; use one of frozen, finetune"):
        resolve_regime("tcn", "tuned", None, None)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_regime("tcn", None, None, "dbc")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("regimes")
    collect("ssrl/cartpole-swingup-v0", episodes=3, out=root / "data", size=SIZE, max_steps=12, progress=False)
    pretrain(
        "rotation", root / "data", out=root / "rot", steps=3, config={"arch": "fast", "latent_dim": 8}, progress=False
    )
    return root / "rot" / "model.pt"


RUN = dict(
    env_id="ssrl/cartpole-swingup-v0",
    env_kwargs={"size": SIZE, "task_kwargs": {"time_limit": 0.4}},
    hyperparams=dict(AGENT, hidden_dims=[16]),
    eval_every=80,
    eval_episodes=1,
    progress=False,
    tensorboard=False,
)


def test_frozen_leaves_the_pretrained_weights_bit_identical_and_finetune_changes_them(pretrained, tmp_path):
    from ssrl.agents.checkpoint import read_checkpoint

    saved = load_representation(pretrained).encoder.state_dict()
    train_run(tmp_path / "frozen", env_steps=160, encoder=str(pretrained), **RUN)
    # Frozen: the agent trains on latents; nothing of the encoder is in its checkpoint to change.
    assert "encoder" not in read_checkpoint(tmp_path / "frozen" / "checkpoint" / "agent.pt")["modules"]
    train_run(tmp_path / "tuned", env_steps=160, encoder=str(pretrained), regime="finetune", **RUN)
    tuned = read_checkpoint(tmp_path / "tuned" / "checkpoint" / "agent.pt")["modules"]["encoder"]
    changed = [k for k, v in saved.items() if not torch.equal(v, tuned[f"encoder.{k}"])]
    assert changed  # the critic fine-tuned the pretrained weights
    assert torch.equal(load_representation(pretrained).encoder.state_dict()["fc.weight"], saved["fc.weight"])


# a batch's frames; clips of the whole replay; clips of two synchronised cameras
@pytest.mark.parametrize("method", ["rotation", "arrow-of-time", "tcn"])
def test_a_decoupled_run_resumes_bit_exactly(tmp_path, method):
    """The method's sampling RNG and its optimiser are part of the checkpoint."""
    from ssrl.agents.checkpoint import read_checkpoint

    run = dict(
        RUN, method=method, regime="decoupled", method_kwargs={"arch": "fast", "latent_dim": 8}, checkpoint_every=40
    )
    if method == "tcn":  # the agent sees camera 0, its replay keeps camera 1's frames too
        run["env_kwargs"] = dict(run["env_kwargs"], cameras=[0, 1])
    train_run(tmp_path / "full", env_steps=160, **run)
    train_run(tmp_path / "split", env_steps=80, **run)
    train_run(tmp_path / "split", env_steps=160, **run)  # a larger budget continues the run
    a = read_checkpoint(tmp_path / "full" / "checkpoint" / "agent.pt")
    b = read_checkpoint(tmp_path / "split" / "checkpoint" / "agent.pt")
    assert a["counters"] == b["counters"] and a["counters"]["updates"] > 0
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)
    for key, value in a["aux"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["aux"][key]), key


def test_rl_head_lets_the_critic_train_its_own_head_on_the_detached_trunk():
    """ATC's online agents (rlpyt's stop_rl_conv_grad): the critic trains its own Linear +
    LayerNorm on the conv trunk, never the trunk; the method's loss trains the trunk and its own
    code, which is what the aux objective receives (not the agent's head)."""
    from ssrl.agents.networks import RLHeadEncoder

    agent, rep, aux = agent_for("atc", "decoupled", rl_head=True, feature_dim=6)
    assert isinstance(agent.encoder, RLHeadEncoder) and agent.feature_dim == 6
    batch = agent.replay.sample(8)
    p = agent.prepare(batch)
    assert p.h.shape[-1] == 6 and p.latent.shape[-1] == 8  # the head's features, the method's code
    trunk = list(rep.encoder.parameters())
    critic = torch.autograd.grad(agent.critic(p.h, p.action).sum(), trunk, allow_unused=True)
    assert all(g is None for g in critic)  # no RL gradient reaches the method's encoder
    head = torch.autograd.grad(agent.critic(p.h, p.action).sum(), list(agent.encoder.head.parameters()))
    assert any(g.abs().sum() > 0 for g in head)
    inputs = agent.aux_inputs(agent.prepare(batch))
    assert inputs.encoder is agent.encoder.source and inputs.latent.shape[-1] == 8
    torch.testing.assert_close(inputs.latent, rep.encoder(inputs.obs).float(), rtol=0, atol=0)
    objective = torch.autograd.grad(aux.loss(inputs)[0], trunk, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in objective)
    # The critic's optimiser holds the head and not the trunk; the aux optimiser the trunk only.
    critic_ids = {id(q) for g in agent.critic_optimizer.param_groups for q in g["params"]}
    assert {id(q) for q in agent.encoder.head.parameters()} <= critic_ids
    assert not {id(q) for q in trunk} & critic_ids
    assert {id(q) for q in trunk} <= {id(q) for q in aux.parameters()}
    assert not {id(q) for q in agent.encoder.head.parameters()} & {id(q) for q in aux.parameters()}


def test_rl_head_is_refused_where_it_has_no_trunk_to_read():
    env = cartpole()
    with pytest.raises(ValueError, match="rl_head.*critic_trains_encoder=False"):
        SAC(env, rl_head=True, **AGENT)
    with pytest.raises(ValueError, match="rl_head reads a representation's conv trunk"):
        SAC(env, rl_head=True, critic_trains_encoder=False, **AGENT)


def test_a_decoupled_run_with_rl_head_resumes_bit_exactly_and_evaluates(tmp_path):
    from ssrl.agents.checkpoint import read_checkpoint
    from ssrl.agents.evaluate import evaluate_run

    run = dict(RUN, method="atc", regime="decoupled", method_kwargs={"arch": "fast", "latent_dim": 8})
    run["hyperparams"] = dict(run["hyperparams"], rl_head=True)
    train_run(tmp_path / "full", env_steps=160, checkpoint_every=40, **run)
    train_run(tmp_path / "split", env_steps=80, checkpoint_every=40, **run)
    train_run(tmp_path / "split", env_steps=160, checkpoint_every=40, **run)
    a = read_checkpoint(tmp_path / "full" / "checkpoint" / "agent.pt")
    b = read_checkpoint(tmp_path / "split" / "checkpoint" / "agent.pt")
    assert any(k.startswith("head.") for k in a["modules"]["encoder"])
    for name in a["modules"]:
        for key, value in a["modules"][name].items():
            assert torch.equal(value, b["modules"][name][key]), (name, key)
    assert evaluate_run(tmp_path / "full", episodes=1)["episodes"] == 1


def test_rl_head_under_an_actor_head_preset_gives_the_actor_its_own_head_on_the_trunk():
    """DrQ's preset (actor_head): the actor's head reads the method's trunk detached, like the
    critic's; TD3's target actor reads the target trunk."""
    from ssrl.agents import TD3

    agent, rep, _ = agent_for("atc", "decoupled", rl_head=True, pixel_preset="drq", feature_dim=6)
    assert agent.split_encoder and agent.actor.head.fc.in_features == agent.encoder.head.fc.in_features
    batch = agent.replay.sample(8)
    p = agent.prepare(batch)
    assert p.actor_nexts[0].dim() == 4  # a feature map: the trunk's output
    actor_in, h = agent.actor_update_inputs(p)
    torch.testing.assert_close(actor_in, rep.encoder.trunk(p.obs), rtol=0, atol=0)
    env = cartpole()
    rep = fresh_representation("atc", env.observation_space.shape, 1, arch="fast", latent_dim=8)
    aux = RepresentationObjective(rep, "decoupled", action_dim=1)
    encoder = StackedFramesEncoder(rep.encoder, env.observation_space.shape)
    td3 = TD3(env, aux=aux, encoder=encoder, rl_head=True, critic_trains_encoder=False, actor_head=True, **AGENT)
    td3.learn(8 * 14)
    p = td3.prepare(td3.replay.sample(8))
    torch.testing.assert_close(p.actor_nexts[0], td3.encoder_target.trunk(p.next_obs), rtol=0, atol=0)


def test_a_replay_keeps_other_cameras_only_for_a_method_that_learns_from_them(tmp_path):
    """On an env of two cameras, TCN's decoupled run saves the second camera's frames with its
    replay; rotation's (single frames) and pixel SAC's save none."""
    two = dict(RUN["env_kwargs"], cameras=[0, 1])
    fresh = {"arch": "fast", "latent_dim": 8}
    for name, extra in (("tcn", dict(method="tcn")), ("rotation", dict(method="rotation")), ("sac", {})):
        regime = dict(regime="decoupled", method_kwargs=fresh) if extra else {}
        train_run(tmp_path / name, env_steps=80, **dict(RUN, env_kwargs=two, **extra, **regime))
        chunks = sorted((tmp_path / name / "checkpoint" / "replay").glob("chunk_*.npz"))
        with np.load(chunks[0]) as saved:
            assert ("view/lookatcart" in saved.files) == (name == "tcn"), name
