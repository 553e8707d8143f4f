"""The SRAE: loss terms against hand computations, the re-tuning rule, determinism, resume."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from xai_widgets.errors import ParameterError
from xai_widgets.jobs import Cancelled
from xai_widgets.xfeatures import (
    SRAEConfig,
    XFeatureFileError,
    accept,
    pull_away,
    reconstruction_loss,
)
from xai_widgets.xfeatures.srae import SRAE, contribution_vectors, correlation, train_srae


def test_log_penalty_reconstruction_by_hand() -> None:
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    z_hat = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # batch means of the squared errors per dimension: 0.5 and 2.5
    expected = (math.log(1 + 100 * 0.5) + math.log(1 + 100 * 2.5)) / 2
    assert float(reconstruction_loss(z_hat, z, q=100)) == pytest.approx(expected, rel=1e-6)
    assert float(reconstruction_loss(z_hat, z, q=2)) == pytest.approx(
        (math.log(2.0) + math.log(6.0)) / 2, rel=1e-6)
    assert float(reconstruction_loss(z_hat, z, sparse=False)) == pytest.approx(1.5)


def test_pull_away_along_images_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # squared cosines between rows: (1,2) 1/2, (1,3) 0, (2,3) 1/2; both orders, over 3·2 pairs
    assert float(pull_away(s, "images")) == pytest.approx(2 * (0.5 + 0.0 + 0.5) / 6)


def test_pull_away_along_features_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # columns (1,1,0) and (0,1,2): cosine 1/(√2·√5), squared 1/10, both orders over 2·1 pairs
    assert float(pull_away(s, "features")) == pytest.approx(0.1)


def test_pull_away_of_one_row_is_zero_and_contributions_offset() -> None:
    assert float(pull_away(torch.tensor([[1.0, 2.0]]), "images")) == 0.0
    s = contribution_vectors(torch.tensor([[0.0, 2.0]]), torch.tensor([3.0, -1.0]))
    assert s[0].tolist() == pytest.approx([1e-8, -2.0 + 1e-8])


def test_acceptance_rule_of_the_retuning_loop() -> None:
    assert accept(torch.tensor([3.0, 1.0, -0.5]))            # 2 positive, 1/3 ≥ 0.3
    assert not accept(torch.tensor([3.0, 0.8]))              # 0.8/3 < 0.3
    assert not accept(torch.tensor([3.0, -1.0, -2.0]))       # one positive only
    assert not accept(torch.tensor([0.0, 0.0]))
    assert accept(torch.tensor([1.0, 0.2]), min_ratio=0.2)
    assert not accept(torch.tensor([1.0, 0.5, 0.4]), min_positive=4)


def test_correlation_of_a_dead_feature_is_zero() -> None:
    c = torch.tensor([[1.0, 0.0, 2.0], [2.0, 0.0, 4.0], [3.0, 0.0, 5.0]])
    matrix = correlation(c)
    assert matrix[0, 2] == pytest.approx(0.98198, abs=1e-4)
    assert matrix[1].tolist() == [0.0, 1.0, 0.0]


def _problem(n: int = 60, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    z = torch.rand(n, dim, generator=generator) * 2
    y = z[:, :3].sum(dim=1) - z[:, 3]
    return z, y


QUICK = SRAEConfig(n_features=3, hidden=(16, 8), pretrain_epochs=2, epochs=6, batch_size=10)


def _train(config: SRAEConfig = QUICK, seed: int = 0, **kwargs: object):
    z, y = _problem()
    train, test = torch.arange(48), torch.arange(48, 60)
    return train_srae(z, y, train, test, config, seed, **kwargs)  # type: ignore[arg-type]


def _same(a: SRAE, b: SRAE) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))


def test_deterministic_for_a_seed_without_the_global_rng() -> None:
    state = torch.get_rng_state()
    first, second = _train(seed=5), _train(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert _same(first.model, second.model)
    assert first.history == second.history
    assert not _same(first.model, _train(seed=6).model)


def test_retuning_loop_reweights_and_retrains() -> None:
    refused = SRAEConfig(n_features=3, hidden=(16, 8), pretrain_epochs=1, epochs=2,
                         batch_size=10, retune_rounds=3, min_positive=4)  # never accepted
    result = _train(refused)
    assert [r.accepted for r in result.rounds] == [False, False, False]
    assert [r.alpha_rec for r in result.rounds] == pytest.approx([10, 12, 14.4])
    assert [r.alpha_pt for r in result.rounds] == pytest.approx([10, 8, 6.4])
    accepting = SRAEConfig(n_features=3, hidden=(16, 8), pretrain_epochs=1, epochs=2,
                           batch_size=10, retune_rounds=3, min_positive=0, min_ratio=0.0)
    assert len(_train(accepting).rounds) == 1


def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    config = SRAEConfig(n_features=3, hidden=(16, 8), pretrain_epochs=2, epochs=4,
                        batch_size=10, retune_rounds=2, min_positive=4)
    whole = _train(config)
    checkpoint = tmp_path / "run.ckpt"
    calls: list[float] = []
    seen: dict[str, object] = {}

    def stop_at(limit: int):
        def progress(fraction: float, **series: object) -> None:
            calls.append(fraction)
            seen.update(series)
            if len(calls) == limit:
                raise Cancelled

        return progress

    for limit in (3, 6, 8):  # stops after epochs 3 (pretraining), 9 (fine-tuning), 17 (round 2)
        calls.clear()
        with pytest.raises(Cancelled):
            _train(config, progress=stop_at(limit), checkpoint=checkpoint)
    resumed = _train(config, checkpoint=checkpoint)
    assert _same(whole.model, resumed.model)
    assert whole.history == resumed.history
    assert [r.mean_contributions for r in whole.rounds] == \
        [r.mean_contributions for r in resumed.rounds]
    assert {"loss", "prediction", "reconstruction", "pull_away", "pretrain"} <= set(seen)


def test_checkpoint_of_another_training_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.ckpt"
    _train(checkpoint=checkpoint)
    with pytest.raises(XFeatureFileError, match="another training"):
        _train(seed=1, checkpoint=checkpoint)


def test_settings_are_checked() -> None:
    with pytest.raises(ParameterError, match="n_features"):
        SRAEConfig(n_features=0)
    with pytest.raises(ParameterError, match="pull_away"):
        SRAEConfig(pull_away="pixels")  # type: ignore[arg-type]


def test_variant_defaults_of_the_original_driver() -> None:
    assert SRAEConfig().alphas == (1.0, 10.0, 10.0)
    assert SRAEConfig(pull_away="features").alphas == (1.0, 15.0, 5.0)
    schedule = SRAEConfig().schedule(8500)  # the original's size: its own epochs
    assert schedule == {"pretrain": 1, "head": 1, "finetune": 10, "lr_step": 40}


def test_step_schedule_of_the_fine_tuning_learning_rate() -> None:
    # lr × 0 after the first fine-tuning epoch: later epochs change nothing
    frozen = SRAEConfig(n_features=3, hidden=(16, 8), pretrain_epochs=1, batch_size=10,
                        retune_rounds=1, lr_step_epochs=1, lr_gamma=0.0)
    one = _train(replace(frozen, epochs=1))
    three = _train(replace(frozen, epochs=3))
    assert _same(one.model, three.model)
    assert not _same(one.model, _train(replace(frozen, epochs=3, lr_gamma=0.1)).model)
