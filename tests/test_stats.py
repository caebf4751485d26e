"""Statistics with known answers: mean/std, coefficient of variation, seed-level t-tests with Holm's
correction, paired bootstrap, spike counts."""

import math

import numpy as np
import pytest

from speckd_bench.leaderboard.stats import (
    coefficient_of_variation,
    compare_family,
    mean_std,
    paired_bootstrap,
)
from speckd_bench.records.train_log import count_spikes


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


def _paired(diffs, base=(10.0, 20.0, 30.0)):
    return ([b + d for b, d in zip(base, diffs, strict=True)], list(base), True)


def test_paired_t_interval_on_per_seed_differences():
    """Diffs -0.68, -2.27, -1.45: mean -1.4667, sd 0.7951, se 0.4591, t(0.975, df 2) = 4.3027, so
    -1.4667 -+ 1.9752; t = -3.195 with 2 df gives p = 0.0856."""
    (only,) = compare_family([_paired((-0.68, -2.27, -1.45))])
    assert only.diff == pytest.approx(-1.4667, abs=1e-4) and only.paired and only.confidence == 0.95
    assert only.low == pytest.approx(-3.4419, abs=1e-4) and only.high == pytest.approx(0.5085, abs=1e-4)
    assert only.p == pytest.approx(0.0856, abs=1e-4) and only.p_holm == only.p and not only.significant


def test_holm_over_a_family_of_three():
    """Raw p (paired, df 2): A diffs (2.1, 1.9, 2.0) 0.00083, C (1.0, 1.2, 0.7) 0.0219, B 0.0856.
    Holm: A 3 x 0.00083 = 0.0025, C max(0.0025, 2 x 0.0219) = 0.0437, B max(0.0437, 0.0856) = 0.0856:
    A and C rejected (C would not be with Bonferroni: 3 x 0.0219 > 0.05). Intervals at 1 - 0.05/3,
    1 - 0.05/2 and 0.95: C = 0.9667 -+ t(1 - 0.025/2, 2) 6.2053 x 0.2517 / sqrt(3) = 0.9667 -+ 0.9016."""
    a, b, c = compare_family(
        [_paired((2.1, 1.9, 2.0)), _paired((-0.68, -2.27, -1.45)), _paired((1.0, 1.2, 0.7))]
    )
    assert a.p == pytest.approx(0.000832, abs=1e-6) and c.p == pytest.approx(0.02185, abs=1e-5)
    assert a.p_holm == pytest.approx(3 * a.p)
    assert c.p_holm == pytest.approx(max(3 * a.p, 2 * c.p)) == pytest.approx(0.0437, abs=1e-4)
    assert b.p_holm == pytest.approx(b.p)
    assert (a.significant, b.significant, c.significant) == (True, False, True)
    assert (a.confidence, c.confidence, b.confidence) == pytest.approx((1 - 0.05 / 3, 0.975, 0.95))
    assert c.low == pytest.approx(0.0651, abs=1e-4) and c.high == pytest.approx(1.8683, abs=1e-4)
    assert a.low == pytest.approx(2.0 - 7.6488 * 0.1 / math.sqrt(3), abs=1e-4)
    assert (b.low, b.high) == pytest.approx((-3.4419, 0.5085), abs=1e-4)


def test_welch_for_unpaired_seeds():
    """a = (1, 2, 3), b = (5, 6, 9, 8): var 1 and 10/3, se = sqrt(1/3 + 10/12) = 1.0801, Welch df =
    1.1667^2 / ((1/3)^2 / 2 + (10/12)^2 / 3) = 4.742, t(0.975, 4.742) = 2.6132: -5 -+ 2.8226."""
    (w,) = compare_family([([1.0, 2.0, 3.0], [5.0, 6.0, 9.0, 8.0], False)])
    assert not w.paired and (w.n, w.n_base) == (3, 4)
    assert w.low == pytest.approx(-5 - 2.8226, abs=1e-3) and w.high == pytest.approx(-5 + 2.8226, abs=1e-3)
    assert w.significant and w.p < 0.05


def test_too_few_seeds_or_no_variation_give_no_interval():
    one, two, flat, strong = compare_family(
        [
            ([5.0], [1.0, 2.0, 3.0], False),
            _paired((4.1, 3.9), base=(1.0, 2.0)),
            _paired((2.0, 2.0, 2.0)),
            _paired((2.1, 1.9, 2.0)),
        ]
    )
    for c in (one, flat):
        assert c.low is None and c.high is None and c.p is None and c.p_holm is None and not c.significant
    assert one.diff == pytest.approx(3.0) and flat.diff == pytest.approx(2.0)
    # n = 2 gets an interval and a p but never the mark; the family is the two testable comparisons
    assert two.low is not None and two.p_holm is not None and not two.significant
    assert strong.significant and strong.confidence == pytest.approx(1 - 0.05 / 2)


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
