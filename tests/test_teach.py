"""xai_widgets.teach: the checks recompute with the toolkit, say right / wrong (and why) /
not yet, and never raise on a malformed answer; solutions are code for the notebooks."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiny_models
import torch
import torch.nn.functional as F

import xai_widgets as xw
from xai_widgets import teach
from xai_widgets.teach import check, solution
from xai_widgets.teach._common import compare
from xai_widgets.teach.core import Exercise, Unreadable
from xai_widgets.teach.gradients import gray_original

ROOT = Path(__file__).resolve().parent.parent
VERDICT = re.compile(r"^(✓|✗|…) (\S+): (right|wrong|not yet) — ")


def test_registry_matches_the_course() -> None:
    tasks = teach.exercises()
    assert len({t.id for t in tasks}) == len(tasks) >= 16
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    for task in tasks:
        assert task.notebook in notebooks, task.id
        compile(task.solution, task.id, "exec")  # solutions are valid code
        assert re.search(rf"\b{task.answer.split(',')[0].strip()}\s*=", task.solution), \
            f"{task.id}: the solution assigns the answer"
    per_notebook: dict[str, int] = {}
    for task in tasks:
        per_notebook[task.notebook] = per_notebook.get(task.notebook, 0) + 1
    assert all(2 <= n <= 4 for n in per_notebook.values()), per_notebook


def test_not_yet_unknown_and_missing() -> None:
    verdict = check("gradients.saliency", None, gradient=torch.zeros(3, 4, 4))
    assert verdict.status == "not yet" and not verdict
    assert VERDICT.match(repr(verdict))
    assert "not yet" in verdict._repr_html_()
    assert check("gradients.saliency", ..., gradient=torch.zeros(3, 4, 4)).status == "not yet"
    with pytest.raises(xw.XaiError, match=r"did you mean 'cam\.weights'"):
        check("cam.weight", None)
    with pytest.raises(xw.XaiError, match="needs gradient"):
        check("gradients.saliency", torch.zeros(4, 4))


def test_solution_shows_collapsed_and_is_code() -> None:
    shown = solution("cam.weights")
    assert str(shown) == teach.EXERCISES["cam.weights"].solution
    assert "<details>" in shown._repr_html_() and "weights =" in repr(shown)


def test_malformed_answers_are_wrong_not_errors() -> None:
    g = torch.randn(3, 8, 8)
    for answer in ("max", torch.zeros(5), [[1, 2], [3]], object()):
        verdict = check("gradients.saliency", answer, gradient=g)
        assert verdict.status == "wrong", (answer, verdict)


def test_compare_phrases_every_verdict() -> None:
    task = Exercise("demo.map", "demo", "a map", "answer", "answer = reference\n",
                    verify=lambda answer: task.right(""))
    reference = torch.arange(1.0, 13.0).reshape(3, 4)

    def verdict(answer, **options):
        return compare(task, answer, reference, "answer", tolerance=1e-6, right="the map",
                       mistakes=((2 * reference, "twice the map"),), shape_hint="one per cell",
                       hint="the map is 1..12", **options)

    right = verdict(reference[None].numpy())  # a batch dimension of 1 is accepted
    assert right.right and right.message == "the map (relative error 0.0e+00)"
    with pytest.raises(Unreadable, match=r"^`answer` has shape \(4, 3\), but it should have "
                       r"shape \(3, 4\), the right number of values in another layout .* — "
                       "one per cell$"):
        verdict(reference.T)
    nan = reference.clone()
    nan[1, 2] = float("nan")
    nan[2, 0] = float("inf")
    with pytest.raises(Unreadable, match=r"has 1 NaN and 1 infinite value\(s\) of 12 \(the "
                       r"first at index \(1, 2\)\): a division by zero\?"):
        verdict(nan)
    assert verdict(2 * reference).message.startswith("twice the map")
    near = verdict(reference * (1 + 3e-6)).message
    assert near.startswith("close: `answer` differs from the toolkit's by 3.0e-06 (relative "
                           "L2), and the check allows 1.0e-06; look for a small slip")
    assert "the map is 1..12" in near
    far = verdict(reference + 1).message
    assert far.startswith("`answer` differs from the toolkit's by 13.6% (relative L2): the "
                          "map is 1..12")
    assert verdict(torch.zeros(3, 4)).message.startswith("`answer` is 0 everywhere")
    largest = verdict(reference + 0.25, measure="largest").message
    assert largest.startswith("`answer` differs from the toolkit's by up to 0.25")
    assert verdict(reference, diagnose=lambda value: "never asked").right
    assert verdict(reference + 1, diagnose=lambda value: "too large").message.startswith(
        "too large")


def test_unreadable_answers_say_why_in_the_verdict() -> None:
    g = torch.randn(3, 4, 4)
    nan = torch.zeros(4, 4) / 0
    assert check("gradients.saliency", nan, gradient=g).message.startswith(
        "`saliency` has 16 NaN value(s) of 16")
    assert check("gradients.saliency", "max", gradient=g).message.startswith(
        "`saliency` should be a tensor")


def test_saliency_right_and_diagnosed() -> None:
    g = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert check("gradients.saliency", g.abs().amax(0), gradient=g).right
    assert "absolute" in check("gradients.saliency", g.amax(0), gradient=g).message
    assert "gray" in check("gradients.saliency", g.abs().sum(0), gradient=g).message
    assert "shape" in check("gradients.saliency", g.abs(), gradient=g).message


def test_gray_right_and_diagnosed() -> None:
    g = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(2))
    total = g.abs().sum(0)
    top = torch.quantile(total.flatten(), 0.99)
    right = ((total - total.min()) / (top - total.min())).clamp(0, 1)
    assert torch.allclose(right.double(), gray_original(g), atol=1e-6)
    assert check("gradients.gray", right, gradient=g).right
    assert "minimum" in check("gradients.gray", (total / top).clamp(0, 1), gradient=g).message
    by_max = (total - total.min()) / (total.max() - total.min())
    assert "percentile" in check("gradients.gray", by_max, gradient=g).message


def test_psnr() -> None:
    truth = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    estimate = (truth + 0.05).clamp(0, 1)
    mse = float((estimate - truth).pow(2).mean())
    right = 10 * torch.log10(torch.tensor(1 / mse))
    assert check("li.psnr", float(right), estimate=estimate, truth=truth).right
    peak_255 = 10 * torch.log10(torch.tensor(255 ** 2 / mse))
    assert "255" in check("li.psnr", float(peak_255), estimate=estimate, truth=truth).message


def test_auc_trapezoid() -> None:
    fractions = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    scores = torch.tensor([[0.9, 0.5, 0.3, 0.2, 0.1]])
    curve = SimpleNamespace(fractions=fractions, scores=scores)
    area = float(torch.trapezoid(scores[0], fractions))
    assert check("trust.auc", area, curve=curve).right
    rectangle = float((scores[0, :-1] * 0.25).sum())
    assert "rectangle" in check("trust.auc", rectangle, curve=curve).message


def test_feature_inversion_blend_and_mask() -> None:
    generator = torch.Generator().manual_seed(4)
    x, p = torch.randn(1, 3, 16, 16, generator=generator), torch.randn(1, 3, 16, 16)
    layer_mask = torch.rand(1, 4, 4, generator=generator)
    up = F.interpolate(layer_mask[:, None], size=(16, 16), mode="bilinear",
                       align_corners=True)[:, 0]
    m = ((up - up.min()) / up.max()).clamp(0, 1)
    kept, removed = x * m[:, None] + p * (1 - m[:, None]), x * (1 - m[:, None]) + p * m[:, None]
    fi = SimpleNamespace(map=m, extras={"blended": kept, "removed": removed,
                                        "layer_mask": layer_mask,
                                        "probabilities": torch.tensor([[0.9, 0.8, 0.1]])})
    assert check("fi.blend", (kept, removed), explanation=fi).right
    assert "other blend" in check("fi.blend", (removed, kept), explanation=fi).message
    assert check("fi.mask", m, explanation=fi).right
    minmax = (up - up.min()) / (up.max() - up.min())
    assert "min-max" in check("fi.mask", minmax, explanation=fi).message


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    return tiny_models.bundle(tiny_models.PlainNet(classes=5), size=16, classes=5)


def test_grad_cam_weights_on_a_tiny_model(plain) -> None:
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    layer = "features.3"
    t = teach.trace(plain, image, layer)
    dA = t.gradient((2,), layer)[0]
    given = dict(bundle=plain, image=image, layer=layer, target=2)
    assert check("cam.weights", dA.mean(dim=(1, 2)), **given).right
    summed = check("cam.weights", dA.sum(dim=(1, 2)), **given)
    assert summed.status == "wrong" and "summed" in summed.message
    activation_means = t.activation(layer)[0].mean(dim=(1, 2))
    assert "activations" in check("cam.weights", activation_means, **given).message
    assert "shape" in check("cam.weights", dA, **given).message


def test_excitation_through_the_classifier_on_a_tiny_model(plain) -> None:
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    layer = "features.3"
    a = teach.trace(plain, image, layer).activation(layer)[0].mean(dim=(1, 2))
    W = plain.model.fc.weight.detach()
    w = W[1].clamp(min=0)
    given = dict(bundle=plain, image=image, layer=layer, target=1)
    assert check("eb.top_layer", a * w / (a @ w), **given).right
    assert check("eb.top_layer", a * W[1], **given).status == "wrong"
    z = a * W[1]
    positive, negative = z.clamp(min=0), (-z).clamp(min=0)
    contrast = positive / positive.sum() - negative / negative.sum()
    assert check("eb.contrastive_top", contrast, **given).right
    assert check("eb.contrastive_top", positive / positive.sum(), **given).status == "wrong"


def test_integrated_gradients_on_a_tiny_model(plain) -> None:
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    baseline = torch.zeros_like(image)
    steps = 4
    alphas = torch.arange(1, steps + 1) / steps
    path = baseline + alphas.view(-1, 1, 1, 1) * (image - baseline)
    ig = (image - baseline) * teach.input_gradients(plain, path, 3).mean(0)
    given = dict(bundle=plain, image=image, target=3, baseline=baseline, steps=steps)
    assert check("ig.riemann", ig, **given).right
    assert "too large" in check("ig.riemann", ig * steps, **given).message
    with torch.no_grad():
        f = plain.model(torch.cat([image, baseline]))[:, 3]
    given.pop("steps")
    assert check("ig.completeness", float(f[0] - f[1]), **given).right
    assert "f(x) alone" in check("ig.completeness", float(f[0]), **given).message


@pytest.mark.slow
def test_quickstart_checks_on_the_embedded_model(embedded, photos) -> None:
    cat = photos["chelsea"]
    top = xw.explain(embedded, cat, "cam").top(3)[0]
    assert check("quickstart.runner_up", top[1][1], bundle=embedded, image=cat).right
    assert check("quickstart.runner_up", top[1][0], bundle=embedded, image=cat).right
    wrong = check("quickstart.runner_up", top[0][1], bundle=embedded, image=cat)
    assert "most probable" in wrong.message
    outside = check("quickstart.occlusion", (200, 0), bundle=embedded, image=cat)
    assert "outside" in outside.message
