"""ATC: the residual predictor and bilinear InfoNCE by hand, the momentum target, positives delta_t
steps later in the same episode (rollouts and replay), learning on env frames, the gradient, a
round trip, and a tiny decoupled run."""

import math

import numpy as np
import pytest
import torch

from ssrl.envs.rollouts import DatasetError, Episode
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.control.curl import contrastive_loss
from ssrl.representations.objective import AuxInputs
from ssrl.representations.pretrain import pretrain
from ssrl.representations.regimes import ReplayData, RepresentationObjective, fresh_representation

SIZE = 48


def test_predictor_logits_and_loss_by_hand():
    rep = make("atc", (3, SIZE, SIZE), arch="fast", latent_dim=2, hidden=4)
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        rep.W.weight.copy_(torch.eye(2))
        rep.predictor[2].weight.zero_()
        rep.predictor[2].bias.copy_(torch.tensor([0.5, -1.0]))  # h(c) = (0.5, -1) for every c
    p = rep.predict(c)
    assert p.tolist() == [[1.5, -1.0], [0.5, 0.0], [1.5, 0.0]]  # c + h(c)
    cbar = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = rep.logits(p, cbar)
    # p . cbar = [[1.5, -1, 0.5], [0.5, 0, 0.5], [1.5, 0, 1.5]], minus each row's maximum.
    assert logits.tolist() == [[0.0, -2.5, -1.0], [0.0, -0.5, 0.0], [0.0, -1.5, 0.0]]
    loss, accuracy = contrastive_loss(logits)
    row = lambda own, others: -own + math.log(sum(math.exp(x) for x in others))  # noqa: E731
    by_hand = (row(0.0, [0.0, -2.5, -1.0]) + row(-0.5, [0.0, -0.5, 0.0]) + row(0.0, [0.0, -1.5, 0.0])) / 3
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    # Only row 0 picks its own column: row 1's maximum is column 0; row 2 ties 0 and 2 (argmax takes the first).
    assert accuracy.item() == pytest.approx(1 / 3)
    # W is applied to the prediction: logits_ij = W(p_i) . cbar_j.
    with torch.no_grad():
        rep.W.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # swaps the two coordinates
    raw = p.flip(1) @ cbar.T
    torch.testing.assert_close(rep.logits(p, cbar), raw - raw.max(1, keepdim=True).values)


def test_uniform_logits_give_log_b_end_to_end():
    torch.manual_seed(0)
    rep = make("atc", (9, SIZE, SIZE), arch="fast", latent_dim=8, hidden=16)
    with torch.no_grad():
        rep.W.weight.zero_()
    obs = torch.randint(0, 256, (5, 9, SIZE, SIZE), dtype=torch.uint8)
    loss, _ = rep.loss({"anchor": obs, "positive": obs.flip(0)})
    assert loss.item() == pytest.approx(math.log(5), abs=1e-6)


def test_target_is_one_ema_step_behind_at_each_training_loss_call():
    torch.manual_seed(0)
    rep = make("atc", (9, SIZE, SIZE), arch="fast", latent_dim=8, hidden=16)
    assert rep.config.tau == 0.01 and rep.config.delta_t == 1  # ATC's DMControl values
    target = dict(rep.target_encoder.named_buffers())
    assert set(target) == {n for n, _ in rep.encoder.named_parameters()}  # conv f and compressor (fc, norm)
    assert not any(n.startswith("target_encoder") for n, _ in rep.named_parameters())
    with torch.no_grad():
        for p in rep.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = {n: p.detach().clone() for n, p in rep.encoder.named_parameters()}
    before = {n: b.clone() for n, b in target.items()}
    obs = torch.randint(0, 256, (4, 9, SIZE, SIZE), dtype=torch.uint8)
    rep.loss({"anchor": obs, "positive": obs})
    for n, b in rep.target_encoder.named_buffers():
        torch.testing.assert_close(b, 0.99 * before[n] + 0.01 * online[n])
    stepped = {n: b.clone() for n, b in rep.target_encoder.named_buffers()}
    with torch.no_grad():
        rep.loss({"anchor": obs, "positive": obs})
    with rep.evaluating():
        rep.loss({"anchor": obs, "positive": obs})
    assert all(torch.equal(b, stepped[n]) for n, b in rep.target_encoder.named_buffers())
    # The positives' codes come from the target after its step (shifts off, so both views are obs).
    rep = make("atc", (9, SIZE, SIZE), arch="fast", latent_dim=8, hidden=16, shift_pad=0)
    with torch.no_grad():
        for p in rep.encoder.parameters():
            p.add_(torch.randn_like(p))
    with torch.no_grad():
        unstepped = contrastive_loss(rep.logits(rep.predict(rep.encoder(obs)), rep.target_encoder(obs)))[0].item()
    loss, _ = rep.loss({"anchor": obs, "positive": obs})
    with torch.no_grad():
        stepped = contrastive_loss(rep.logits(rep.predict(rep.encoder(obs)), rep.target_encoder(obs)))[0].item()
    assert loss.item() == pytest.approx(stepped, abs=1e-5) and abs(stepped - unstepped) > 1e-4


def labelled_data(n_episodes, n_steps, size=SIZE):
    """Synthetic episodes whose pixels say what they show: channel 0 holds the episode, channel 1
    the time step."""
    episodes = []
    for e, steps in zip(range(n_episodes), n_steps):
        f = np.zeros((steps + 1, 3, size, size), np.uint8)
        f[:, 0], f[:, 1] = e, np.arange(steps + 1)[:, None, None]
        episodes.append(
            Episode(
                frames={"cam": f},
                action=np.zeros((steps, 1), np.float32),
                reward=np.zeros(steps, np.float32),
                terminated=np.zeros(steps, bool),
                truncated=np.zeros(steps, bool),
                state=np.zeros((steps + 1, 1), np.float32),
                info={},
            )
        )
    return RolloutData(episodes)


def test_positives_are_delta_t_steps_later_in_the_same_episode():
    data = labelled_data(3, [6, 2, 9])
    rng = np.random.default_rng(0)
    # The helper draws only instants with a frame delta steps later in their episode, and all of them.
    idx = data.sample_frames_ahead(2000, rng, 3)
    assert sorted(set(idx.tolist())) == [0, 1, 2, 3] + [10 + t for t in range(7)]  # episode 1 (2 steps) has none
    assert np.array_equal(
        data.sample_frames_ahead(50, np.random.default_rng(1), 1),
        data.sample_frames(50, np.random.default_rng(1), with_next=True),
    )
    with pytest.raises(DatasetError, match="no episode has a frame 10 steps after"):
        data.sample_frames_ahead(1, rng, 10)

    rep = make("atc", (6, SIZE, SIZE), arch="fast", latent_dim=4, frame_stack=2, delta_t=3)
    batch = rep.sample_batch(data, 500, rng)
    assert batch["anchor"].shape == batch["positive"].shape == (500, 6, SIZE, SIZE)
    for key in ("anchor", "positive"):  # each stack ends at its own instant and stays in its episode
        assert np.array_equal(batch[key][:, 0, 0, 0], batch[key][:, 3, 0, 0])
    episode, t = batch["anchor"][:, 3, 0, 0], batch["anchor"][:, 4, 0, 0]
    assert np.array_equal(batch["positive"][:, 3, 0, 0], episode)
    assert np.array_equal(batch["positive"][:, 4, 0, 0], t + 3)
    assert set(episode.tolist()) == {0, 2}
    # The positive's stack is the frames t+2, t+3 (oldest first).
    assert np.array_equal(batch["positive"][:, 1, 0, 0], t + 2)
    with pytest.raises(DatasetError, match="episodes of at least 12 steps; the longest has 9"):
        make("atc", (3, SIZE, SIZE), arch="fast", latent_dim=4, frame_stack=1, delta_t=12).check_data(data)


def test_on_the_replay_the_positive_is_the_next_observation_and_delta_t_above_1_is_refused():
    torch.manual_seed(0)
    rep = fresh_representation("atc", (9, SIZE, SIZE), 1, arch="fast", latent_dim=8, hidden=16)
    obs = torch.randint(0, 256, (4, 9, SIZE, SIZE), dtype=torch.uint8)
    next_obs = torch.randint(0, 256, (4, 9, SIZE, SIZE), dtype=torch.uint8)
    latent = rep.encoder(obs)
    inputs = AuxInputs(
        latent, latent.detach(), torch.zeros(4, 1), torch.zeros(4), torch.ones(4), obs, next_obs, rep.encoder
    )
    with rep.evaluating():  # no target step, so the target is where it was
        loss, _ = rep.replay_loss(inputs, np.random.default_rng(0))
        expected = contrastive_loss(rep.logits(rep.predict(latent), rep.target_encoder(next_obs)))[0]
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)  # anchors obs, positives next_obs, no new shift
    loss.backward()
    assert rep.encoder.fc.weight.grad.abs().sum() > 0

    far = fresh_representation("atc", (9, SIZE, SIZE), 1, arch="fast", latent_dim=8, delta_t=3)
    with pytest.raises(DatasetError, match="delta_t=3 needs observations 3 steps apart.*set delta_t=1"):
        RepresentationObjective(far, "decoupled", action_dim=1)
    with pytest.raises(DatasetError, match="delta_t=3 cannot train on an agent's replay"):
        far.replay_loss(inputs, np.random.default_rng(0))
    replay = ReplayData(obs.numpy(), next_obs.numpy(), np.zeros((4, 1), np.float32), np.zeros(4), np.ones(4))
    RepresentationObjective(rep, "decoupled", action_dim=1)  # delta_t = 1 is accepted
    rep.check_data(replay)


def test_learns_on_env_frames_trains_the_encoder_and_round_trips(cartpole, tmp_path):
    data = RolloutData(cartpole)
    torch.manual_seed(0)
    rep = make("atc", (9, SIZE, SIZE), arch="fast", latent_dim=16, hidden=32)
    batch = rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0)))
    rep.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.encoder.parameters())
    assert all(p.grad is not None for p in [*rep.predictor.parameters(), rep.W.weight])

    model, summary = pretrain(
        "atc",
        cartpole,
        out=tmp_path / "atc",
        steps=20,
        batch_size=16,
        config={"arch": "fast", "latent_dim": 16, "hidden": 32},
        log_every=1,
        progress=False,
    )
    losses = [float(line.split('"loss": ')[1].split(",")[0]) for line in (tmp_path / "atc" / "metrics.jsonl").open()]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])  # 0.80 here (0.73-0.84 over 3 seeds)
    loaded = load_representation(tmp_path / "atc" / "model.pt")
    state, back = model.state_dict(), loaded.state_dict()
    assert state.keys() == back.keys() and all(torch.equal(state[k], back[k]) for k in state)  # predictor, W, target
    frames = data.stack(np.arange(5), k=3)
    assert np.array_equal(loaded.embed(frames), model.embed(frames))


def test_a_tiny_decoupled_run_trains_the_encoder(tiny_regime_run):
    start, state = tiny_regime_run("atc", "decoupled", arch="fast", latent_dim=8, hidden=16)
    assert state["counters"]["updates"] > 0
    encoder = state["modules"]["encoder"]
    assert any(not torch.equal(v, encoder[f"encoder.{k}"]) for k, v in start.encoder.state_dict().items())
    assert not torch.equal(state["aux"]["rep.W.weight"], start.W.weight.detach())
    target = start.target_encoder.state_dict()
    assert any(not torch.equal(v, state["aux"][f"rep.target_encoder.{k}"]) for k, v in target.items())
