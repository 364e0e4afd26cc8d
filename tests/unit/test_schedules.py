"""LR schedules: values at the key iterations of warm-up + cosine / constant / step."""

from __future__ import annotations

import math

import pytest
import torch

from gpen_fewshot.training.schedules import LRSchedule, apply_lr


def test_cosine_defaults_at_key_iterations() -> None:
    s = LRSchedule(base_lr=1e-4, total_iters=2000, warmup_iters=100, eta_min=1e-6)
    assert s.lr_at(0) == pytest.approx(1e-6)  # 1e-4 * 1 / 100
    assert s.lr_at(49) == pytest.approx(5e-5)
    assert s.lr_at(99) == pytest.approx(1e-4)  # warm-up complete
    assert s.lr_at(100) == pytest.approx(1e-4)  # cosine starts at the peak
    mid = 100 + (2000 - 100) // 2
    assert s.lr_at(mid) == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5, rel=1e-3)
    assert s.lr_at(2000) == pytest.approx(1e-6)
    assert s.lr_at(5000) == pytest.approx(1e-6)  # clamped after the end
    quarter = 100 + 475
    expected = 1e-6 + (1e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert s.lr_at(quarter) == pytest.approx(expected)


def test_cosine_is_monotonic_after_warmup() -> None:
    s = LRSchedule(base_lr=5e-5, total_iters=300, warmup_iters=30)
    lrs = [s.lr_at(i) for i in range(301)]
    assert all(a < b for a, b in zip(lrs[:29], lrs[1:30], strict=True))
    assert all(a >= b for a, b in zip(lrs[30:], lrs[31:], strict=False))


def test_constant_and_step() -> None:
    constant = LRSchedule(base_lr=2e-4, total_iters=100, kind="constant", warmup_iters=10)
    assert constant.lr_at(4) == pytest.approx(1e-4)
    assert constant.lr_at(10) == constant.lr_at(99) == pytest.approx(2e-4)
    step = LRSchedule(base_lr=1.0, total_iters=100, kind="step", warmup_iters=0, step_size=10, gamma=0.5)
    assert [step.lr_at(i) for i in (0, 9, 10, 19, 20, 35)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.125])


def test_no_warmup_starts_at_base() -> None:
    assert LRSchedule(base_lr=3e-4, total_iters=10, warmup_iters=0).lr_at(0) == pytest.approx(3e-4)


@pytest.mark.parametrize("kwargs", [
    {"kind": "linear"}, {"base_lr": 0.0}, {"total_iters": 0}, {"eta_min": 1.0}, {"warmup_iters": -1},
])
def test_invalid_schedules_raise(kwargs: dict) -> None:
    params = {"base_lr": 1e-4, "total_iters": 100, **kwargs}
    with pytest.raises(ValueError):
        LRSchedule(**params)


def test_apply_lr_uses_group_scales() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], lr=1.0)
    apply_lr(opt, 2e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4, 2e-5])


def test_ema_rampup_caps_the_half_life_at_a_fraction_of_the_run() -> None:
    from gpen_fewshot.training.ema import ema_decay_at

    assert ema_decay_at(5, 0.999, start_iteration=10, rampup=0.1) == 0.0  # plain copy before the start
    assert ema_decay_at(199, 0.999) == 0.999  # no ramp-up: fixed decay
    decay = ema_decay_at(199, 0.999, rampup=0.1)  # half-life capped at 0.1 * 200 = 20 iterations
    assert abs(decay ** 20 - 0.5) < 1e-9
    assert ema_decay_at(100_000, 0.999, rampup=0.1) == 0.999  # long runs reach the configured decay
    # over a 200-iteration run the capped EMA follows the weights: its share of the starting value is small
    share = 1.0
    for it in range(200):
        share *= ema_decay_at(it, 0.999, rampup=0.1)
    assert share < 1e-3 < 0.999 ** 200
