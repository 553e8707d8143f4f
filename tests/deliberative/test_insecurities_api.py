"""The public API of deliberative explanations: the model is never changed, bad input gives
clear errors, ``hardest()`` ranks a folder, the hardness predictor trains and plugs in, the
result draws itself, and the real photo of the issue."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_contract import assert_same, snapshot, user_model
from tiny_models import ARCHITECTURES, PlainNet, bundle
from torch import nn

import xai_widgets as xw
from xai_widgets import deliberative as dl
from xai_widgets.kernels.spec import Cancelled


class Head(nn.Module):
    """A hardness predictor on pooled features with a given number of outputs."""

    def __init__(self, outputs: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(8, outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
@pytest.mark.parametrize("attribution", ["gradient", "integrated_gradients", "gradient_hessian"])
def test_model_and_input_unchanged(kind: str, attribution: str) -> None:
    model = user_model(kind)
    predictor = Head().train()
    x = torch.randn(2, 3, 16, 16)
    x_before = x.clone()
    before, predictor_before = snapshot(model), snapshot(predictor)
    b = bundle(model, 16, classes=5)
    for difficulty in ("entropy", predictor):
        with contextlib.suppress(xw.XaiError):
            dl.analyse(b, x, difficulty=difficulty, attribution=attribution, top_classes=3,
                       ig_steps=2, chunk_size=4)
    dl.hardest(b, list(x), k=1, difficulty=predictor)
    assert_same(before, snapshot(model))
    assert_same(predictor_before, snapshot(predictor))
    assert torch.equal(x, x_before)


def test_model_unchanged_when_a_progress_callback_cancels() -> None:
    model = user_model("inplace_resnet")
    before = snapshot(model)

    def cancel(fraction: float, **_series: object) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        dl.insecurities(bundle(model, 16, classes=5), torch.randn(1, 3, 16, 16),
                        attribution="integrated_gradients", ig_steps=4, chunk_size=2,
                        progress=cancel)
    assert_same(before, snapshot(model))


@pytest.fixture
def tiny() -> xw.ModelBundle:
    torch.manual_seed(0)
    return bundle(PlainNet(5), 16, classes=5)


def test_bad_input_gives_clear_errors(tiny: xw.ModelBundle) -> None:
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(xw.ParameterError, match=r"top_classes=7 but this model has 5 classes"):
        dl.insecurities(tiny, x, top_classes=7)
    with pytest.raises(xw.ParameterError, match="a pair needs two classes"):
        dl.insecurities(tiny, x, top_classes=1)
    r = dl.insecurities(tiny, x, top_classes=3)
    for area in (0, -0.1, 1.5, float("nan"), "10%"):
        with pytest.raises(xw.ParameterError, match=r"a number in \(0, 1\]"):
            r.segment(0, area=area)
    with pytest.raises(xw.ModelError, match=r"must return one pre-sigmoid value per image"):
        dl.insecurities(tiny, x, difficulty=Head(outputs=2))
    with pytest.raises(xw.ParameterError, match="did you mean 'entropy'"):
        dl.insecurities(tiny, x, difficulty="entropie")
    with pytest.raises(xw.ParameterError, match="needs a hardness predictor"):
        dl.insecurities(tiny, x, difficulty="hp")
    with pytest.raises(xw.ParameterError, match="'sigmoid'"):
        dl.insecurities(tiny, x, difficulty=Head(), hp_score="probability")
    with pytest.raises(xw.ParameterError, match="did you mean 'gradient'"):
        dl.insecurities(tiny, x, attribution="gradients")
    with pytest.raises(xw.ImageError, match="analyse"):
        dl.insecurities(tiny, torch.randn(2, 3, 16, 16))
    with pytest.raises(xw.LayerError):
        dl.insecurities(tiny, x, layer="features.9")
    with pytest.raises(xw.ParameterError, match="rank 99 is out of range"):
        r.segment(99)
    outsider = next(i for i in range(5) if i not in [c for c, _, _ in r.classes])
    with pytest.raises(xw.TargetError, match="not one of the top classes"):
        r.segment((r.classes[0][0], outsider))
    with pytest.raises(xw.ParameterError, match="'ours' or 'original'"):
        r.picture(0, style="paper")


def test_results_are_the_same_one_by_one_and_batched(tiny: xw.ModelBundle) -> None:
    x = torch.randn(3, 3, 16, 16)
    batched = dl.analyse(tiny, x, difficulty="cs", top_classes=3)
    for i in range(3):
        alone = dl.insecurities(tiny, x[i:i + 1], difficulty="cs", top_classes=3)
        torch.testing.assert_close(batched[i].class_maps, alone.class_maps, rtol=1e-5,
                                   atol=1e-7)
        torch.testing.assert_close(batched[i].difficulty.map, alone.difficulty.map, rtol=1e-5,
                                   atol=1e-8)
        assert [p.ranks for p in batched[i].pairs] == [p.ranks for p in alone.pairs]


def test_a_difficulty_switch_reuses_the_forward_and_the_class_maps(tiny: xw.ModelBundle) -> None:
    analysis = dl.Analysis(tiny, torch.randn(1, 3, 16, 16), top_classes=3)
    first = analysis.result(0, "entropy")
    second = analysis.result(0, "cs")
    assert analysis.traces.forward_passes == 1
    assert first.class_maps.equal(second.class_maps)
    assert first.difficulty.score != second.difficulty.score


def test_pictures_and_figure(tiny: xw.ModelBundle) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    r = dl.insecurities(tiny, photo, top_classes=3)
    ours = r.picture(0, area=0.25)
    original = r.picture(0, area=0.25, style="original")
    assert ours.shape == original.shape == r.display.shape
    segment = r.segment(0, 0.25).mask.numpy()
    np.testing.assert_array_equal(original[segment], r.display[segment])  # display = input here
    np.testing.assert_array_equal(original[~segment],
                                  np.round(r.display[~segment] * 0.4).astype(np.uint8))
    assert r._repr_png_().startswith(b"\x89PNG")
    record = r.to_dict()
    assert record["pairs"][0]["names"] == list(r.pairs[0].names)
    assert len(record["difficulty"]["map"]) == r.difficulty.map.shape[0]


# ---------------------------------------------------------------------------- hardest


def test_hardest_ranks_by_the_score_of_each_image(tiny: xw.ModelBundle) -> None:
    x = torch.randn(7, 3, 16, 16)
    with torch.no_grad():
        scores = dl.normalised_entropy(tiny.model.eval()(x).double())
    ranking = dl.hardest(tiny, list(x), k=3, difficulty="entropy", batch_size=2)
    expected = torch.argsort(scores, descending=True)[:3].tolist()
    assert [h.index for h in ranking] == expected
    assert [h.score for h in ranking] == pytest.approx(scores[expected].tolist())
    assert ranking.total == 7 and len(dl.hardest(tiny, list(x), k=50)) == 7


def test_hardest_over_a_folder_lists_unreadable_files(tiny: xw.ModelBundle, tmp_path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    ranking = dl.hardest(tiny, tmp_path, k=2, difficulty="cs")
    assert len(ranking) == 2 and ranking.total == 4
    assert [name for name, _ in ranking.failed] == ["broken.png"]
    assert ranking[0].score >= ranking[1].score
    assert "hardest of 4 images" in ranking.table()


# ---------------------------------------------------------------------------- hardness predictor


def test_train_a_hardness_predictor_and_use_it(tiny: xw.ModelBundle) -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16)
    with torch.no_grad():
        tiny.model.fc.weight.mul_(30)  # probabilities spread around 1/2: easy and hard images
        logits = tiny.model.eval()(x).double()
    labels = logits.argmax(dim=1).tolist()
    p = logits.softmax(dim=1).amax(dim=1)  # the label's probability
    seen: list[tuple[float, int]] = []

    def progress(fraction: float, **series: torch.Tensor) -> None:
        seen.append((fraction, len(series["loss"])))

    before = snapshot(tiny.model)
    predictor = dl.train_hardness_predictor(tiny, list(x), labels, epochs=60, batch_size=16,
                                            lr=1e-2, hidden=(16, 8), dropout=0.0,
                                            progress=progress)
    assert_same(before, snapshot(tiny.model))
    assert seen[-1] == (1.0, 60) and len(seen) == 60
    assert predictor.history[-5:].mean() < predictor.history[:5].mean()
    assert not predictor.training and predictor.output == "sigmoid"
    # the images whose label the classifier gives a low probability rank as the hardest
    ranking = dl.hardest(tiny, list(x), k=16, difficulty=predictor)
    least_sure = set(torch.argsort(p)[:16].tolist())
    assert len(least_sure & {h.index for h in ranking}) >= 10  # chance: 4
    r = dl.insecurities(tiny, x[:1], difficulty="hp", predictor=predictor, top_classes=3,
                        attribution="gradient_hessian")
    assert r.difficulty.kind == "hp" and r.difficulty.closed_form is True
    assert 0 < r.difficulty.score < 1


def test_training_can_be_cancelled(tiny: xw.ModelBundle) -> None:
    def cancel(fraction: float, **_series: object) -> None:
        if fraction >= 0.5:
            raise Cancelled

    with pytest.raises(Cancelled):
        dl.train_hardness_predictor(tiny, list(torch.randn(8, 3, 16, 16)), [0] * 8, epochs=4,
                                    batch_size=4, hidden=(4, 4), progress=cancel)


def test_hardness_loss_values() -> None:
    z = torch.tensor([0.0, 2.0])
    p = torch.tensor([0.9, 0.1])
    s = torch.sigmoid(z)
    expected = (1 - ((1 - p) * s + (1 - s) * p)).mean()
    assert float(dl.hardness_loss(z, p)) == pytest.approx(float(expected))
    assert float(dl.hardness_loss(torch.tensor([-30.0]), torch.tensor([1.0]))) == \
        pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------- real photo


@pytest.mark.slow
def test_chelsea_hesitates_between_tiger_cat_and_egyptian_cat(embedded, photos) -> None:
    r = dl.insecurities(embedded, photos["chelsea"], difficulty="entropy")
    names = [name for _, name, _ in r.classes[:3]]
    assert names == ["tiger cat", "Egyptian cat", "tabby"]
    assert r.pairs[0].names == ("tiger cat", "Egyptian cat")
    assert 0 < r.difficulty.score < 1 and not math.isnan(r.pairs[0].score)
    segment = r.segment(r.pairs[0], area=0.1)
    assert segment.pixels == round(0.1 * 224 * 224)
    # the hesitation is on the cat's fur and face, not on the background above the head:
    # the top third of the picture holds little of it
    assert float(segment.mask[:75].float().mean()) < 0.1


def test_an_existing_trace_set_is_reused(tiny: xw.ModelBundle) -> None:
    from xai_widgets.trace import TraceSet

    x = torch.randn(1, 3, 16, 16)
    traces = TraceSet(tiny, x, [tiny.layers.default])
    traces.get("gradient", [tiny.layers.default])
    analysis = dl.Analysis(tiny, x, top_classes=3, traces=traces)
    r = analysis.result(0, "cs")
    assert traces.forward_passes == 1
    torch.testing.assert_close(r.class_maps, dl.insecurities(tiny, x, "cs",
                                                             top_classes=3).class_maps)
    with pytest.raises(xw.ParameterError, match="TraceSet"):
        dl.Analysis(tiny, torch.randn(2, 3, 16, 16), traces=traces)
