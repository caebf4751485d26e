"""SpecKD gate: acceptance rules, weights, loss normalisation and the absence of gradient through it."""

import copy

import pytest
import torch
from conftest import backward_step
from tiny_models import tiny_llama

from speckd_bench.api.method_config import KDConfig, MethodConfig
from speckd_bench.api.methods import Method
from speckd_bench.data.examples import Example, collate
from speckd_bench.errors import UserError
from speckd_bench.loss.divergences import per_token_divergence
from speckd_bench.loss.gate import speckd_gate
from speckd_bench.loss.objective import LiveTeacher, kd_loss_sum
from speckd_bench.methods.discovery import check_method

# Teacher ranks tokens 0 > 1 > 2 > 3 > 4 > 5.
TEACHER = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]] * 2)
# Row 0: the student's argmax is token 1 (in the teacher's top-2); row 1: token 5 (outside it).
STUDENT = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 3.0]])


def spec(**kw):
    return KDConfig(gate="speckd", **kw)


def test_topk_accepts_proposal_inside_teacher_topk_only():
    gate = speckd_gate(STUDENT, TEACHER, spec(rule="topk", k=2))
    assert gate.accepted.tolist() == [True, False]
    assert gate.weights.tolist() == [1.0, 0.0]
    assert speckd_gate(STUDENT, TEACHER, spec(rule="topk", k=6)).accepted.all()


def test_topk_with_greedy_proposals_is_deterministic():
    torch.manual_seed(0)
    s, t = torch.randn(64, 30), torch.randn(64, 30)
    first = speckd_gate(s, t, spec(rule="topk", k=5), torch.Generator().manual_seed(1))
    second = speckd_gate(s, t, spec(rule="topk", k=5), torch.Generator().manual_seed(99))
    assert torch.equal(first.accepted, second.accepted)
    in_top5 = (t.topk(5, dim=-1).indices == s.argmax(-1, keepdim=True)).any(-1)
    assert torch.equal(first.accepted, in_top5)


def test_prob_rule_thresholds_the_teachers_probability_of_the_proposal():
    # Teacher probabilities of token 1 (row 0) and token 5 (row 1).
    p = torch.softmax(TEACHER, -1)
    tau = float(p[0, 1] + p[1, 5]) / 2
    assert speckd_gate(STUDENT, TEACHER, spec(rule="prob", tau=tau)).accepted.tolist() == [True, False]


def test_spec_rule_accepts_with_probability_min_one_p_over_q():
    # Greedy proposal = token 0 in every row; p_T(0) = 0.3 and p_S(0) = 0.6, so acceptance = 0.5.
    n = 40_000
    student = torch.tensor([[0.6, 0.4]]).log().repeat(n, 1)
    teacher = torch.tensor([[0.3, 0.7]]).log().repeat(n, 1)
    cfg = spec(rule="spec", propose="greedy")
    gate = speckd_gate(student, teacher, cfg, torch.Generator().manual_seed(0))
    rate = gate.accepted.float().mean().item()
    assert rate == pytest.approx(0.5, abs=4 * (0.25 / n) ** 0.5)
    # p >= q always accepts.
    always = speckd_gate(student, torch.tensor([[0.9, 0.1]]).log().repeat(n, 1), cfg)
    assert always.accepted.all()
    # The seeded generator makes it reproducible.
    again = speckd_gate(student, teacher, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(gate.accepted, again.accepted)


def test_spec_rule_with_sampled_proposals_accepts_one_minus_tvd():
    # Speculative sampling: E_q[min(1, p/q)] = 1 - TVD(p, q).
    n = 40_000
    q = torch.tensor([0.5, 0.3, 0.2])
    p = torch.tensor([0.2, 0.3, 0.5])
    gate = speckd_gate(
        q.log().repeat(n, 1),
        p.log().repeat(n, 1),
        spec(rule="spec", propose="sample"),
        torch.Generator().manual_seed(0),
    )
    expected = 1 - 0.5 * (p - q).abs().sum().item()
    assert gate.accepted.float().mean().item() == pytest.approx(expected, abs=0.015)


def test_reject_weight_changes_the_loss_exactly():
    per_token = per_token_divergence("fkl", STUDENT, TEACHER)
    for weight in (0.0, 0.01, 0.5):
        out = kd_loss_sum(STUDENT, TEACHER, spec(rule="topk", k=2, divergence="fkl", reject_weight=weight))
        assert out.loss_sum.item() == pytest.approx((per_token[0] + weight * per_token[1]).item(), rel=1e-6)
        assert (out.n_tokens, out.n_accepted) == (2, 1)


def test_gate_carries_no_gradient():
    s = STUDENT.clone().requires_grad_(True)
    gate = speckd_gate(s, TEACHER, spec(rule="spec", propose="sample"), torch.Generator().manual_seed(0))
    assert not gate.weights.requires_grad
    cfg = spec(rule="topk", k=2, reject_weight=0.25)
    kd_loss_sum(s, TEACHER, cfg).loss_sum.backward()
    # The gradient is that of sum_t w_t D_t with w held constant.
    s2 = STUDENT.clone().requires_grad_(True)
    (torch.tensor([1.0, 0.25]) * per_token_divergence("fkl", s2, TEACHER)).sum().backward()
    assert torch.allclose(s.grad, s2.grad)


def test_normalize_divides_the_step_loss_by_all_or_accepted_tokens():
    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    micro = [collate([Example([3, 4, 5], list(range(6, 6 + n)), "p", ["r"]) for n in (3, 6, 2)], 0)]
    results = {}
    for normalize in ("all", "accepted"):
        model = copy.deepcopy(student)
        cfg = spec(rule="topk", k=20, reject_weight=0.1, normalize=normalize)
        stats = backward_step(model, LiveTeacher(teacher), micro, cfg, 40)
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[normalize] = (stats, grads)
    all_stats, all_grads = results["all"]
    acc_stats, acc_grads = results["accepted"]
    assert all_stats.n_tokens == 11 and 0 < all_stats.n_accepted < 11
    summed = all_stats.loss * all_stats.n_tokens
    assert acc_stats.loss == pytest.approx(summed / all_stats.n_accepted, rel=1e-5)
    ratio = all_stats.n_tokens / all_stats.n_accepted
    assert torch.allclose(acc_grads, all_grads * ratio, rtol=1e-4, atol=1e-7)


def test_gating_a_cross_entropy_method_is_refused():
    sft = Method("sft", "test", "test", config=MethodConfig)
    with pytest.raises(UserError, match="method.gate=speckd needs a divergence"):
        check_method(sft, spec())
    check_method(Method("fkl", "test", "test"), spec())


# Control gates. The teacher ranks tokens 0 > 1 > the rest in every row; its entropy orders the rows
# 3 < 1 < 0 < 2. The student proposes token 1 in rows 0 and 2 (top-2: accepted) and 5 in rows 1 and 3.
CONTROL_TEACHER = torch.tensor(
    [[2.0, 1.5, 0, 0, 0, 0], [5.0, 4.0, 0, 0, 0, 0], [1.0, 0.9, 0, 0, 0, 0], [9.0, 8.0, 0, 0, 0, 0]]
)
CONTROL_STUDENT = torch.cat([STUDENT, STUDENT])


def control(gate: str, **kw) -> KDConfig:
    return KDConfig(divergence="fkl", gate=gate, **kw)


def test_confidence_gate_keeps_the_rows_of_lowest_teacher_entropy_at_the_rate():
    cfg = control("confidence", gate_rate=0.5, reject_weight=0.25)
    out = kd_loss_sum(CONTROL_STUDENT, CONTROL_TEACHER, cfg)
    per_token = per_token_divergence("fkl", CONTROL_STUDENT, CONTROL_TEACHER)
    # rows 3 and 1 have the lowest entropy; rows 0 and 2 are rejected, at weight 0.25
    want = per_token[1] + per_token[3] + 0.25 * (per_token[0] + per_token[2])
    assert out.loss_sum.item() == pytest.approx(want.item(), rel=1e-6)
    assert (out.n_tokens, out.n_accepted) == (4, 2)
    assert (
        kd_loss_sum(CONTROL_STUDENT, CONTROL_TEACHER, control("confidence", gate_rate=0.75)).n_accepted == 3
    )


@pytest.mark.parametrize(("rate", "accepted"), [(0.1, 4), (0.25, 10), (0.5, 20), (0.3, 12), (1.0, 40)])
@pytest.mark.parametrize("gate", ["random", "confidence"])
def test_control_gates_accept_round_rate_times_the_tokens(gate, rate, accepted):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(40, 9, generator=g), torch.randn(40, 9, generator=g)
    out = kd_loss_sum(s, t, control(gate, gate_rate=rate), torch.Generator().manual_seed(1))
    assert out.n_accepted == accepted


def test_random_gate_weights_rejected_tokens_like_speckd_and_follows_its_seed():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(30, 9, generator=g), torch.randn(30, 9, generator=g)
    cfg = control("random", gate_rate=0.4, reject_weight=0.1)
    per_token = per_token_divergence("fkl", s, t)
    # the accepted rows are the 12 smallest of the gate generator's 30 uniforms
    kept = torch.zeros(30, dtype=torch.bool)
    kept[torch.rand(30, generator=torch.Generator().manual_seed(7)).argsort()[:12]] = True
    want = per_token[kept].sum() + 0.1 * per_token[~kept].sum()
    out = kd_loss_sum(s, t, cfg, torch.Generator().manual_seed(7))
    assert out.loss_sum.item() == pytest.approx(want.item(), rel=1e-6)
    again = kd_loss_sum(s, t, cfg, torch.Generator().manual_seed(7))
    assert again.loss_sum.item() == out.loss_sum.item()
    other = kd_loss_sum(s, t, cfg, torch.Generator().manual_seed(8))
    assert other.n_accepted == 12 and other.loss_sum.item() != out.loss_sum.item()


SPECKD_RULES = {
    "topk": {"rule": "topk", "k": 2},
    "spec": {"rule": "spec", "propose": "sample", "gen_temperature": 0.7},
}


@pytest.mark.parametrize("rule", list(SPECKD_RULES))
@pytest.mark.parametrize("gate", ["random", "confidence"])
def test_matched_control_gate_accepts_as_many_tokens_as_speckd_on_the_same_batch(gate, rule):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(50, 9, generator=g), 2 * torch.randn(50, 9, generator=g)
    speckd = kd_loss_sum(s, t, spec(**SPECKD_RULES[rule]), torch.Generator().manual_seed(4))
    matched = kd_loss_sum(
        s, t, control(gate, gate_match=True, **SPECKD_RULES[rule]), torch.Generator().manual_seed(4)
    )
    assert 0 < speckd.n_accepted < 50
    assert matched.n_accepted == speckd.n_accepted


def test_matched_confidence_gate_differs_from_speckd_only_in_which_tokens():
    """SpecKD top-2 accepts rows 0 and 2; matched, the confidence gate accepts two rows too: 1 and 3."""
    cfg = control("confidence", gate_match=True, rule="topk", k=2)
    speckd = speckd_gate(CONTROL_STUDENT, CONTROL_TEACHER, spec(rule="topk", k=2))
    assert speckd.accepted.tolist() == [True, False, True, False]
    out = kd_loss_sum(CONTROL_STUDENT, CONTROL_TEACHER, cfg)
    per_token = per_token_divergence("fkl", CONTROL_STUDENT, CONTROL_TEACHER)
    assert out.n_accepted == 2
    assert out.loss_sum.item() == pytest.approx((per_token[1] + per_token[3]).item(), rel=1e-6)


@pytest.mark.parametrize("gate", ["random", "confidence"])
def test_control_gates_log_tar_like_speckd(gate):
    """The trainer's TAR is n_accepted / n_tokens of the step for every gate other than none."""
    from speckd_bench.config.run_config import RunConfig
    from speckd_bench.engine.trainer import Stage

    student, teacher = tiny_llama(0), tiny_llama(1).eval()
    micro = [collate([Example([3, 4, 5], list(range(6, 6 + n)), "p", ["r"]) for n in (3, 6, 2)], 0)]
    cfg = control(gate, gate_rate=0.5)
    stats = backward_step(copy.deepcopy(student), LiveTeacher(teacher), micro, cfg, 40)
    assert (stats.n_tokens, stats.n_accepted) == (11, 6)  # round(5.5) = 6, to the even neighbour
    run = RunConfig()
    run.method = cfg
    assert Stage.kd(run, Method("fkl", "test", "test")).gated
