"""Statistics with known answers: mean/std, coefficient of variation, paired bootstrap, spike counts."""

import math

import numpy as np
import pytest

from speckd_bench.results import count_spikes
from speckd_bench.stats import coefficient_of_variation, mean_std, paired_bootstrap


def test_mean_std_is_the_sample_std():
    stats = mean_std([1.0, 2.0, 3.0, 4.0])
    assert stats.mean == 2.5 and stats.n == 4
    assert stats.std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([7.0]).std == 0.0
    assert mean_std([]) is None


def test_coefficient_of_variation():
    assert coefficient_of_variation([1.0, 3.0, 1.0, 3.0]) == pytest.approx(0.5)
    assert coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
    assert coefficient_of_variation([5.0]) is None
    assert coefficient_of_variation([1.0, None, 3.0, float("nan")]) == pytest.approx(0.5)


def _scores(rng, seeds=3, prompts=50):
    return rng.uniform(0, 40, size=(seeds, prompts))


def test_identical_runs_give_an_interval_at_zero():
    a = _scores(np.random.default_rng(1))
    ci = paired_bootstrap(a, a.copy(), seeds_paired=True)
    assert (
        ci.diff == 0.0 and ci.low == pytest.approx(0.0, abs=1e-9) and ci.high == pytest.approx(0.0, abs=1e-9)
    )
    assert not ci.excludes_zero


def test_a_constant_shift_gives_an_interval_at_the_shift():
    b = _scores(np.random.default_rng(2))
    ci = paired_bootstrap(b + 2.5, b, seeds_paired=True)
    assert ci.diff == pytest.approx(2.5)
    assert ci.low == pytest.approx(2.5) and ci.high == pytest.approx(2.5)
    assert ci.excludes_zero


def test_noisy_differences_match_the_normal_interval():
    """One seed, 2000 prompts, per-prompt differences ~ N(0.3, 1): CI ~ mean ± 1.96 sd / sqrt(n)."""
    rng = np.random.default_rng(3)
    b = rng.uniform(0, 40, size=(1, 2000))
    d = rng.normal(0.3, 1.0, size=(1, 2000))
    ci = paired_bootstrap(b + d, b, seeds_paired=True, resamples=4000)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert ci.diff == pytest.approx(d.mean())
    assert ci.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert ci.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert ci.excludes_zero and ci.n_prompts == 2000


def test_seed_variation_widens_the_interval():
    """Same prompts, but whole seeds shifted by +-3: resampling seeds must show that uncertainty."""
    rng = np.random.default_rng(4)
    b = _scores(rng, seeds=3, prompts=200)
    a = b + np.array([[-3.0], [0.0], [3.0]]) + 0.5
    ci = paired_bootstrap(a, b, seeds_paired=True)
    assert ci.diff == pytest.approx(0.5)
    assert ci.low < -1.0 and ci.high > 2.0 and not ci.excludes_zero


def test_unpaired_seeds_and_shape_errors():
    rng = np.random.default_rng(5)
    a, b = _scores(rng, seeds=2), _scores(rng, seeds=3)
    ci = paired_bootstrap(a + 100, b, seeds_paired=False)
    assert not ci.seeds_paired and ci.excludes_zero
    with pytest.raises(ValueError, match="paired seeds"):
        paired_bootstrap(a, b, seeds_paired=True)
    with pytest.raises(ValueError, match="same prompts"):
        paired_bootstrap(a, b[:, :10], seeds_paired=False)


def test_bootstrap_is_reproducible():
    rng = np.random.default_rng(6)
    a, b = _scores(rng), _scores(rng)
    assert paired_bootstrap(a, b, seeds_paired=True) == paired_bootstrap(a, b, seeds_paired=True)


@pytest.mark.parametrize(
    ("losses", "spikes"),
    [
        ([1.0] * 30, 0),
        ([1.0 - 0.02 * i for i in range(30)], 0),
        ([1.0] * 15 + [2.5] + [1.0] * 14, 1),  # 2.5 > 2 x median 1.0
        ([1.0] * 15 + [1.9] + [1.0] * 14, 0),  # below the threshold
        ([1.0] * 12 + [3.0, 3.0] + [1.0] * 16, 2),  # the median of the previous 10 is still 1.0
        ([5.0] + [1.0] * 29, 0),  # the first 10 steps have no history and are never spikes
    ],
)
def test_spike_rule(losses, spikes):
    assert count_spikes(losses, factor=2.0) == spikes
