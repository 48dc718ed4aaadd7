"""Video pretext methods and their judge: ground-truth masks from replayed states, the samplers
(frames in the claimed order, from the claimed windows), the losses by hand, the attention copy,
the mask-propagation score, and learning on real frames."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrl.envs.rollouts import Episode
from ssrl.representations import RolloutData, load_representation, make
from ssrl.representations.pretext.video import judge
from ssrl.representations.pretext.video.clips import (
    order_tuples,
    shuffle_not_identity,
    window_starts,
)
from ssrl.representations.pretext.video.shuffle_learn import make_tuples
from ssrl.representations.pretext.video.tracking import (
    cosine_distance,
    moving_patch_corners,
    ranking_loss,
    track_box,
)
from ssrl.representations.pretext.video.video_colorization import kmeans
from ssrl.representations.pretrain import pretrain, probe_split

VIDEO_METHODS = ("tracking", "shuffle-learn", "o3n", "arrow-of-time", "video-colorization")
SMALL = {
    "tracking": dict(patch=16, gap=3, search=3),
    "shuffle-learn": dict(tau_max=4, tau_min=2),
    "o3n": dict(n_clips=3, clip_len=3),
    "arrow-of-time": dict(clip_len=3),
    "video-colorization": dict(n_colours=4, kmeans_frames=64),
}


def episode(frames: np.ndarray, state: np.ndarray | None = None) -> Episode:
    t = len(frames) - 1
    return Episode(
        frames={"cam": frames},
        action=np.zeros((t, 1), np.float32),
        reward=np.zeros(t, np.float32),
        terminated=np.zeros(t, bool),
        truncated=np.zeros(t, bool),
        state=np.zeros((t + 1, 1), np.float32) if state is None else state,
        info={},
    )


def clock_data(lengths=(20, 20), size=16, still=()):
    """Episodes whose frames show their own time: every pixel of frame t of episode e is
    (t, e, 0) ... so a batch's frames can be decoded back into (episode, t). Episodes listed in
    ``still`` show the same frame throughout (no motion)."""
    eps = []
    for e, n in enumerate(lengths):
        frames = np.zeros((n + 1, 3, size, size), np.uint8)
        frames[:, 0] = 0 if e in still else np.arange(n + 1)[:, None, None] * 5
        frames[:, 1] = e
        eps.append(episode(frames))
    return RolloutData(eps)


def decode(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, episodes) of clock frames ``(..., 3, H, W)``."""
    return frames[..., 0, 0, 0].astype(int) // 5, frames[..., 1, 0, 0].astype(int)


# -- ground truth -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole84(tmp_path_factory):
    from ssrl.envs.rollouts import collect

    out = tmp_path_factory.mktemp("video") / "cartpole"
    collect(
        "ssrl/cartpole-swingup-v0",
        policy="sticky_random",
        episodes=3,
        out=out,
        size=48,
        cameras=["fixed"],
        max_steps=40,
        seed=0,
        progress=False,
    )
    return RolloutData(out)


def test_replayed_states_render_the_recorded_frames_and_their_body_masks(cartpole84):
    from ssrl.envs.segmentation import BodyMasks

    data = cartpole84
    with BodyMasks(data.meta) as masks:
        assert masks.names == ["cart", "pole_1"]
        idx = np.arange(0, len(data), 7)
        np.testing.assert_array_equal(masks.frames(data.state[idx]), data.frames["fixed"][idx])  # exact replay
        seg = masks.masks(data.state[idx])
        # The background is what no geom covers: where the depth buffer says so.
        rgb, background = masks.observer.renderer.render(masks.base.data, depth=True)
        np.testing.assert_array_equal(seg[-1] == -1, background[0])
        cart, pole = masks.moving
        assert (seg[0] == cart).sum() > 10 and (seg[0] == pole).sum() > 5  # the reset frame shows both
        assert set(np.unique(seg)) <= {-1, 0, cart, pole}
        # Move the cart along the rail by hand: its mask moves the same way in the image.
        state = data.state[0].copy()
        cols = []
        for x in (-0.5, 0.5):
            state[0] = x
            cols.append(np.nonzero(masks.masks(state[None])[0] == cart)[1].mean())
        assert cols[1] > cols[0] + 3
    with pytest.raises(ValueError, match="states have 4 values"):
        masks = BodyMasks(data.meta)
        try:
            masks.set_state(np.zeros(3))
        finally:
            masks.close()


def test_masks_need_the_data_sets_meta_and_a_named_camera(cartpole84):
    from ssrl.envs.segmentation import BodyMasks

    with pytest.raises(ValueError, match="meta.json"):
        BodyMasks({})
    with pytest.raises(ValueError, match="no camera 'top'"):
        BodyMasks(cartpole84.meta, camera="top")


def test_a_split_keeps_the_meta_that_masks_are_rendered_from(cartpole84):
    train, test = cartpole84.split(0.34)
    assert test.meta["env_id"] == "ssrl/cartpole-swingup-v0" and train.meta is cartpole84.meta


# -- samplers ------------------------------------------------------------------------------------


def test_motion_is_the_mean_pixel_change_since_the_previous_frame_of_the_episode():
    data = clock_data((3, 2))
    m = data.motion()
    # Channel 0 rises by 5 per frame: |5| / 255 on one channel of three; episode starts are 0.
    expected = np.array([0, 5, 5, 5, 0, 5, 5]) / 255 / 3
    np.testing.assert_allclose(m, expected, rtol=1e-6)


def test_windows_stay_in_one_episode_and_come_from_where_the_video_moves():
    data = clock_data((10, 30), still=(1,))
    starts = window_starts(data, 500, 4, np.random.default_rng(0))
    assert (data.frame_episode[starts] == 0).all()  # the still episode is never drawn
    assert (data.frame_t[starts] + 3 <= data.ep_len[data.frame_episode[starts]]).all()
    only = window_starts(data, 50, 4, np.random.default_rng(0), episode=1)  # when asked, even a still one
    assert (data.frame_episode[only] == 1).all()
    with pytest.raises(ValueError, match="no window of 40 frames"):
        window_starts(data, 1, 40, np.random.default_rng(0))


def test_shuffle_and_learn_tuples_respect_tau_and_their_labels():
    data = clock_data((40, 25))
    five = order_tuples(data, 300, np.random.default_rng(1), tau_max=6, tau_min=2)
    a, b, c, d, e = five.T
    assert (data.frame_episode[five] == data.frame_episode[a][:, None]).all()
    assert ((a < b) & (b < c) & (c < d) & (d < e)).all()
    assert ((d - b >= 2) & (d - b <= 6)).all()
    assert ((b - a >= 2) & (b - a <= 6) & (e - d >= 2) & (e - d <= 6)).all()
    rows = np.array([[0, 1, 2, 3, 4]] * 4)
    shown = make_tuples(
        rows,
        np.array([False, True, True, False]),
        np.array([True, True, False, True]),
        np.array([False, False, False, True]),
    )
    np.testing.assert_array_equal(shown, [[1, 2, 3], [1, 0, 3], [1, 4, 3], [3, 2, 1]])

    rep = make("shuffle-learn", (3, 16, 16), arch="resnet", tau_max=6, tau_min=2)
    batch = rep.sample_batch(data, 200, np.random.default_rng(2))
    times, eps = decode(batch["frames"])
    monotone = (np.diff(times, axis=1) > 0).all(1) | (np.diff(times, axis=1) < 0).all(1)
    np.testing.assert_array_equal(monotone, batch["label"] == 1)  # label 1 exactly when in order
    assert 0.35 < batch["label"].mean() < 0.65 and (eps == eps[:, :1]).all()
    assert ((np.diff(times[batch["label"] == 1], axis=1) < 0).all(1)).mean() > 0.3  # reversed positives too


def test_o3n_has_one_shuffled_clip_among_ordered_ones_from_one_episode():
    data = clock_data((30, 30))
    rep = make("o3n", (3, 16, 16), arch="resnet", n_clips=4, clip_len=4, clip_stride=2)
    batch = rep.sample_batch(data, 50, np.random.default_rng(0))
    times, eps = decode(batch["frames"])  # (B, 4 clips, 4 frames)
    assert (eps == eps[:, :1, :1]).all()
    ordered = (np.diff(times, axis=2) == 2).all(2)
    np.testing.assert_array_equal(~ordered, np.eye(4, dtype=bool)[batch["odd"]])
    assert (np.sort(times, axis=2)[..., 1:] - np.sort(times, axis=2)[..., :-1] == 2).all()  # same frames, shuffled
    assert set(batch["odd"]) == {0, 1, 2, 3}
    perm = [shuffle_not_identity(2, np.random.default_rng(s)) for s in range(5)]
    assert all(p.tolist() == [1, 0] for p in perm)


def test_arrow_of_time_clips_play_forwards_exactly_when_labelled_so():
    data = clock_data((30,))
    rep = make("arrow-of-time", (3, 16, 16), arch="resnet", clip_len=5)
    batch = rep.sample_batch(data, 100, np.random.default_rng(0))
    times, _ = decode(batch["frames"])
    np.testing.assert_array_equal((np.diff(times, axis=1) == 1).all(1), batch["forward"] == 1)
    np.testing.assert_array_equal((np.diff(times, axis=1) == -1).all(1), batch["forward"] == 0)


def test_video_colorization_pairs_a_reference_with_a_target_a_few_frames_later():
    data = clock_data((30, 30))
    rep = make("video-colorization", (3, 16, 16), arch="resnet", max_gap=3, n_colours=2)
    batch = rep.sample_batch(data, 200, np.random.default_rng(0))
    (t_ref, e_ref), (t_tgt, e_tgt) = decode(batch["reference"]), decode(batch["target"])
    assert (e_ref == e_tgt).all() and set(t_tgt - t_ref) == {1, 2, 3}


# -- tracking: finding and following patches, the ranking loss ---------------------------------


def square_video(n=5, size=32, step=2):
    """A bright 6x6 square moving right by ``step`` px per frame on a dark textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 40, (3, size, size)).astype(np.uint8)
    frames = np.repeat(background[None], n, 0)
    for t in range(n):
        frames[t, :, 10:16, 4 + step * t : 10 + step * t] = 250
    return frames


def test_patches_start_on_what_moves_and_the_tracker_follows_it():
    frames = square_video()
    for seed in range(10):
        top, left = moving_patch_corners(frames[0], frames[1], 8, 8.0, np.random.default_rng(seed))
        assert 10 - 8 < top + 4 <= 16 and 4 - 8 < left + 4 <= 12  # the box's centre is on a changed pixel
    top, left = track_box(frames, 9, 3, 8, search=3)
    assert (top, left) == (9, 3 + 2 * 4)  # 4 frames of 2 px to the right


def test_ranking_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # D(a0,p0) = 1 - 1/sqrt2; candidates of anchor 0: a1 (D=1), p1 (D=1); of anchor 1 (D(a1,p1)=0):
    # a0 (D=1), p0 (D=1 - 1/sqrt2). Hinge with M = 0.5, hardest one negative each:
    d = 1 - 1 / math.sqrt(2)
    hand0 = max(0.0, d - 1 + 0.5)
    hand1 = max(0.0, 0 - d + 0.5)  # p0 is anchor 1's hardest negative
    got = ranking_loss(a, p, 0.5, 1, hard=True, rng=np.random.default_rng(0))
    assert float(got) == pytest.approx((hand0 + hand1) / 2, abs=1e-6)
    both = ranking_loss(a, p, 0.5, 2, hard=False, rng=np.random.default_rng(0))  # all candidates
    hand = (2 * hand0 + max(0.0, 0 - 1 + 0.5) + hand1) / 4
    assert float(both) == pytest.approx(hand, abs=1e-6)
    np.testing.assert_allclose(cosine_distance(a, p).numpy(), [[d, 1.0], [d, 0.0]], atol=1e-6)


# -- video colorization: the attention copy, the colours ----------------------------------------


def test_attention_copy_reproduces_the_reference_when_the_target_is_the_reference():
    g = torch.Generator().manual_seed(0)
    features = F.one_hot(torch.randperm(16, generator=g), 16).T.float().reshape(1, 16, 4, 4) * 50
    colours = F.one_hot(torch.randint(0, 3, (1, 4, 4), generator=g), 3).permute(0, 3, 1, 2).float()
    copied = judge.attention_copy(features, colours, features, temperature=1.0)
    torch.testing.assert_close(copied, colours, atol=1e-6, rtol=0)


def test_attention_copy_by_hand():
    ref = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]]).reshape(1, 2, 1, 2)  # f_0 = (1,0), f_1 = (0,2)
    tgt = torch.tensor([1.0, 1.0]).reshape(1, 2, 1, 1)  # f_j = (1,1): logits 1 and 2
    colours = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # location 0 colour 0, 1 colour 1
    w1 = math.exp(2) / (math.exp(1) + math.exp(2))
    torch.testing.assert_close(judge.attention_copy(ref, colours, tgt, 1.0).flatten(), torch.tensor([1 - w1, w1]))
    w1_t = math.exp(4) / (math.exp(2) + math.exp(4))  # temperature 0.5 doubles the logits
    torch.testing.assert_close(judge.attention_copy(ref, colours, tgt, 0.5).flatten(), torch.tensor([1 - w1_t, w1_t]))


def test_video_colorization_loss_is_the_cross_entropy_of_the_copied_colour():
    rep = make("video-colorization", (3, 16, 16), arch="resnet", n_colours=2)
    rep.centres.copy_(torch.tensor([[0.0, 0.0], [60.0, 40.0]]))  # grey and red-ish
    rep.fitted.fill_(True)
    grey = np.full((1, 3, 16, 16), 128, np.uint8)
    red = grey.copy()
    red[:, :, :, 8:] = np.array([200, 30, 30], np.uint8)[None, :, None, None]
    batch = rep.to_batch({"reference": red, "target": red})
    probs, target = rep.copied(batch)
    loss, _ = rep.loss(batch)
    hand = -probs.clamp_min(1e-8).log().gather(1, target[:, None]).mean()
    torch.testing.assert_close(loss, hand)
    assert set(target.flatten().tolist()) == {0, 1}  # both clusters present in the target


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(100, 2, generator=g) + 20, torch.randn(50, 2, generator=g) - 20])
    centres = kmeans(pts, 2)
    found = sorted(centres[:, 0].tolist())
    assert found[0] == pytest.approx(-20, abs=0.5) and found[1] == pytest.approx(20, abs=0.5)


# -- the judge ----------------------------------------------------------------------------------


def test_iou_by_hand_and_a_perfect_tracker_scores_one():
    truth = np.zeros((4, 4), int)
    truth[:2, :2] = 1  # 4 px
    pred = np.zeros((4, 4), int)
    pred[:2, 1:3] = 1  # 4 px, 2 shared -> IoU 2/6
    pred[3, 3] = 2  # label 2 absent from the truth -> IoU 0
    np.testing.assert_allclose(judge.iou_per_label(pred, truth, 3), [2 / 6, 0.0, np.nan])
    assert judge.frame_scores(pred[None], truth[None], 3)[0] == pytest.approx((2 / 6 + 0) / 2)

    labels = np.random.default_rng(0).integers(0, 3, (5, 8, 8))
    onehot = torch.as_tensor(np.eye(3)[labels]).permute(0, 3, 1, 2).float()
    for propagate in (
        lambda r, y, f: judge.attention_propagate(r, y, f, temperature=0.01),
        lambda r, y, f: judge.nearest_propagate(r, y, f, k=1),
    ):
        # Features that name each pixel's body: a perfect tracker.
        probs = propagate(onehot[0], judge.soft_labels(labels[0], 2, (8, 8)), onehot[1:])
        predicted = judge.upsample_argmax(probs, (8, 8))
        np.testing.assert_array_equal(predicted, labels[1:])
        assert np.nanmean(judge.frame_scores(predicted, labels[1:], 2)) == 1.0


def test_track_scores_a_copying_rule_as_the_copy_baseline(cartpole84):
    def pixels(obs):  # features at full resolution: labels go in and out unchanged
        return torch.as_tensor(obs).float()

    def copy(ref_features, ref_labels, features):
        return ref_labels.expand(len(features), *ref_labels.shape)

    scores, clips = judge.track(pixels, copy, cartpole84, horizons=(5, 10), n_clips=3)
    assert scores["track_clips"] == 3 and len(clips) == 3
    for n in (5, 10):
        assert scores[f"track_iou{n}"] == scores[f"copy_iou{n}"]
        assert 0.0 < scores[f"copy_iou{n}"] < 1.0  # the pole and the cart move
    assert scores["copy_iou5"] > scores["copy_iou10"]  # further from the first mask, less overlap
    assert 0.0 < scores["pixels_iou10"] <= 1.0 and scores["pixels_iou10"] != scores["copy_iou10"]
    np.testing.assert_array_equal(clips[0].predicted, clips[0].copied)
    assert scores["track_ceiling"] == 1.0  # full-resolution features lose nothing
    # Features on a 7x7 grid (the fast encoder's at 84 px): the thin pole, and the cart at most
    # partly, vanish into cells where the background dominates, so even a perfect tracker scores low.
    coarse, _ = judge.track(
        lambda obs: F.adaptive_avg_pool2d(pixels(obs), 7), copy, cartpole84, horizons=(5,), n_clips=3
    )
    assert coarse["track_ceiling"] < 0.5


# -- every method: a gradient reaches the encoder, the loss at chance, a saved model ------------


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_every_video_method_trains_its_encoder_and_round_trips(method, tmp_path):
    data = clock_data((20, 20), size=32)
    rep = make(method, (3, 32, 32), arch="dmc", latent_dim=8, **SMALL[method])
    batch = rep.to_batch(rep.sample_batch(data, 6, np.random.default_rng(0)))
    loss, _ = rep.loss(batch)
    loss.backward()
    grads = [p.grad for p in rep.encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)  # not a detached embedding
    rep.save(tmp_path / "m.pt")
    back = load_representation(tmp_path / "m.pt")
    x = torch.as_tensor(data.stack(np.arange(3), None, 1))
    torch.testing.assert_close(back.encoder(x), rep.eval().encoder(x))


def test_order_losses_at_uniform_outputs_are_log_of_the_choices():
    data = clock_data((20, 20), size=32)
    for method, choices in (("shuffle-learn", 2), ("o3n", 3), ("arrow-of-time", 2)):
        rep = make(method, (3, 32, 32), arch="dmc", latent_dim=8, **SMALL[method])
        last = [m for m in rep.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        loss, _ = rep.loss(rep.to_batch(rep.sample_batch(data, 8, np.random.default_rng(0))))
        assert float(loss.detach()) == pytest.approx(math.log(choices), abs=1e-6), method


def test_video_methods_refuse_episodes_shorter_than_their_windows():
    data = clock_data((3,), size=32)
    rep = make("o3n", (3, 32, 32), arch="dmc", latent_dim=8, n_clips=3, clip_len=6)
    with pytest.raises(ValueError, match="windows of 6 frames; the longest episode has 4"):
        rep.sample_batch(data, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="patch=40 must fit"):
        make("tracking", (3, 32, 32), arch="dmc", patch=40)


def test_hard_negatives_start_after_the_warm_up():
    data = clock_data((20, 20), size=32)
    rep = make("tracking", (3, 32, 32), arch="dmc", latent_dim=8, hard_after=2, **SMALL["tracking"])
    flags = []
    for _ in range(3):
        _, metrics = rep.loss(rep.to_batch(rep.sample_batch(data, 4, np.random.default_rng(0))))
        flags.append(metrics["hard_negatives"])
    assert flags == [0.0, 0.0, 1.0] and int(rep.updates) == 3


# -- learning on real frames --------------------------------------------------------------------


def test_video_colorization_learns_to_copy_colours_on_cartpole(cartpole84, tmp_path):
    rep, _ = pretrain(
        "video-colorization",
        cartpole84,
        out=tmp_path / "vc",
        steps=60,
        batch_size=8,
        seed=0,
        config=dict(arch="dmc", latent_dim=8, n_colours=4, kmeans_frames=64, eval_questions=64),
        progress=False,
    )
    untrained = make("video-colorization", rep.obs_shape, **vars(rep.config))
    untrained.centres.copy_(rep.centres)
    untrained.fitted.fill_(True)
    _, held_out = probe_split(rep, cartpole84)  # episodes pretraining did not see
    trained_acc = rep.pretext_scores(held_out)["colour_acc"]
    untrained_acc = untrained.pretext_scores(held_out)["colour_acc"]
    print("colour_acc trained / untrained:", trained_acc, untrained_acc)
    assert trained_acc > untrained_acc + 0.05
