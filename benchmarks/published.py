"""Published PlaNet-benchmark returns (mean, std over 10 seeds) to print beside ours.

DrQ [K=2, M=2] from the DrQ paper (Kostrikov, Yarats and Fergus, ICLR 2021, Table 1) and CURL
from the CURL paper (Laskin, Srinivas and Abbeel, ICML 2020, Table 1), at 100k and 500k *environment*
steps (agent steps x action repeat), 84x84 pixels, 3 frames, PlaNet action repeats. Facts, not
our measurements: reports label them "published".
"""

from __future__ import annotations

# task -> {steps: (mean, std)}
DRQ = {
    "finger-spin": {100_000: (901, 104), 500_000: (938, 103)},
    "cartpole-swingup": {100_000: (759, 92), 500_000: (868, 10)},
    "reacher-easy": {100_000: (601, 213), 500_000: (942, 71)},
    "cheetah-run": {100_000: (344, 67), 500_000: (660, 96)},
    "walker-walk": {100_000: (612, 164), 500_000: (921, 45)},
    "ball_in_cup-catch": {100_000: (913, 53), 500_000: (963, 9)},
}
CURL = {
    "finger-spin": {100_000: (767, 56), 500_000: (926, 45)},
    "cartpole-swingup": {100_000: (582, 146), 500_000: (841, 45)},
    "reacher-easy": {100_000: (538, 233), 500_000: (929, 44)},
    "cheetah-run": {100_000: (299, 48), 500_000: (518, 28)},
    "walker-walk": {100_000: (403, 24), 500_000: (902, 43)},
    "ball_in_cup-catch": {100_000: (769, 43), 500_000: (959, 27)},
}
STATE_SAC_CURL = {
    "finger-spin": {100_000: (811, 46), 500_000: (923, 21)},
    "cartpole-swingup": {100_000: (835, 22), 500_000: (848, 15)},
    "reacher-easy": {100_000: (746, 25), 500_000: (923, 24)},
    "cheetah-run": {100_000: (616, 18), 500_000: (795, 30)},
    "walker-walk": {100_000: (891, 82), 500_000: (948, 54)},
    "ball_in_cup-catch": {100_000: (746, 91), 500_000: (974, 33)},
}
PUBLISHED = {
    "DrQ (published)": DRQ,
    "CURL (published)": CURL,
    "SAC state (published, CURL Table 1, action repeat 1)": STATE_SAC_CURL,
}


def published_at(task: str, steps: int) -> dict[str, tuple[int, int]]:
    """The published (mean, std) of each source for ``task`` at exactly ``steps`` env steps."""
    return {name: table[task][steps] for name, table in PUBLISHED.items() if task in table and steps in table[task]}
