"""Staged freezing: pattern resolution, stage switching, frozen weights bit-identical, Adam state kept."""

from __future__ import annotations

import pytest
import torch

from gpen_fewshot.training.freezing import FreezingSchedule, Stage, expand_patterns, set_trainable, stage_at

pytestmark = pytest.mark.usefixtures("torch_single_thread")

G_GROUPS = {"encoder": ["ecd0.w"], "mapping": ["style.1.w"], "decoder_coarse": ["conv1.w"],
            "decoder_fine": [], "to_rgb": ["to_rgb1.w"], "noise": ["n.w"]}
D_GROUPS = {"d_block_64": ["a"], "d_block_32": ["b"], "d_block_16": ["c"], "d_block_8": ["d"],
            "d_head": ["h"]}


def test_patterns() -> None:
    assert expand_patterns(["all"], D_GROUPS, (), "s") == list(D_GROUPS)
    assert (expand_patterns(["d_head", "d_lowres:2"], D_GROUPS, (), "s") ==
            ["d_block_16", "d_block_8", "d_head"])
    assert expand_patterns(["decoder_*"], G_GROUPS, (), "s") == ["decoder_coarse", "decoder_fine"]
    assert expand_patterns(["decoder_middle"], G_GROUPS, ("decoder_middle",), "s") == []  # valid but absent
    with pytest.raises(ValueError, match="matches no parameter group"):
        expand_patterns(["encoderr"], G_GROUPS, (), "s")


def test_stage_starts_fraction_and_iteration() -> None:
    schedule = FreezingSchedule("x", [{"name": "a", "start": 0, "generator": ["encoder"]},
                                      {"name": "b", "start": 0.4, "generator": ["all"],
                                       "discriminator": ["all"]},
                                      Stage("c", 900, ("all",), ("d_head",))])
    stages = schedule.resolve(1000, G_GROUPS, D_GROUPS)
    assert [s.start for s in stages] == [0, 400, 900]
    assert stages[0].generator_params == {"ecd0.w"} and stages[0].discriminator_params == frozenset()
    assert stages[2].discriminator_params == {"h"}
    assert [stage_at(stages, i).name for i in (0, 399, 400, 899, 900, 5000)] == ["a", "a", "b", "b", "c", "c"]


@pytest.mark.parametrize("stages", [
    [{"name": "a", "start": 5}],
    [{"name": "a", "start": 0}, {"name": "b", "start": 0.0}],
    [{"name": "a", "start": 0}, {"name": "b", "start": 1.5}],
])
def test_bad_schedules(stages: list) -> None:
    with pytest.raises(ValueError):
        FreezingSchedule("bad", stages).resolve(100, G_GROUPS, D_GROUPS)


def test_set_trainable_drops_grads() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    net(torch.ones(1, 2)).sum().backward()
    on, off = set_trainable(net, frozenset({"1.weight", "1.bias"}))
    assert (on, off) == (3, 6)
    assert net[0].weight.grad is None and not net[0].weight.requires_grad
    assert net[1].weight.grad is not None and net[1].weight.requires_grad


def _two_stage(start: int) -> FreezingSchedule:
    return FreezingSchedule("two", [
        {"name": "encoder", "start": 0, "generator": ["encoder", "noise"], "discriminator": ["d_head"]},
        {"name": "more", "start": start, "generator": ["encoder", "noise", "decoder_middle", "to_rgb"],
         "discriminator": ["d_head", "d_lowres:1"]},
    ])


def test_training_keeps_frozen_weights_bit_identical(make_module, fit) -> None:
    module = make_module(total_iters=4, freezing=_two_stage(2))
    groups = module.generator.parameter_groups()
    before_g = {k: v.clone() for k, v in module.generator.state_dict().items()}
    before_d = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    fit(module)
    assert module.iteration == 4 and module.active_stage.name == "more"
    g_after, d_after = module.generator.state_dict(), module.discriminator.state_dict()
    never_trained = set(groups["mapping"]) | set(groups["decoder_coarse"])
    for name in never_trained:
        assert torch.equal(g_after[name], before_g[name]), name
        assert torch.equal(module.generator_ema.state_dict()[name], before_g[name]), f"EMA {name}"
    for name in groups["encoder"]:
        assert not torch.equal(g_after[name], before_g[name]), f"{name} did not train"
    d_groups = module.discriminator.parameter_groups()
    for name in d_groups["d_block_32"] + d_groups["d_block_16"]:
        assert torch.equal(d_after[name], before_d[name]), name
    assert any(not torch.equal(d_after[n], before_d[n]) for n in d_groups["d_block_8"])  # stage 2 unfroze it


def test_stage_change_keeps_adam_state(make_module, fit) -> None:
    module = make_module(total_iters=4, freezing=_two_stage(2))
    trainer = fit(module)
    opt_g = trainer.optimizers[0]
    params = dict(module.generator.named_parameters())
    groups = module.generator.parameter_groups()
    encoder_param = params[groups["encoder"][0]]
    middle_param = params[groups["decoder_middle"][0]]
    frozen_param = params[groups["mapping"][0]]
    assert int(opt_g.state[encoder_param]["step"]) == 4  # stepped every iteration, state never reset
    assert int(opt_g.state[middle_param]["step"]) == 2  # only since the stage change
    assert frozen_param not in opt_g.state or not opt_g.state[frozen_param]  # Adam never touched it
