"""Compare refuses what it cannot lay out, with the toolkit's errors, before any work."""

from __future__ import annotations

import pytest
import torch
from tiny_models import PlainNet, bundle

import xai_widgets as xw


@pytest.fixture(scope="module")
def plain() -> xw.ModelBundle:
    torch.manual_seed(0)
    return bundle(PlainNet(), classes=5)


@pytest.mark.parametrize(("methods", "message"), [
    ([], "at least one method"),
    ([("smoothgrad",)], "a row of methods is a name or a \\(name, params\\) pair"),
    ([("smoothgrad", 8)], "a row of methods"),
    ([42], "a row of methods"),
])
def test_malformed_rows_of_methods(plain, methods, message) -> None:
    with pytest.raises(xw.ParameterError, match=message):
        xw.Compare(plain, torch.randn(1, 3, 16, 16), methods=methods)


def test_more_classes_than_the_model_has_is_a_value_error(plain) -> None:
    with pytest.raises(xw.TargetError, match="choose top1 to top5") as caught:
        xw.Compare(plain, torch.randn(1, 3, 16, 16), classes="top99")
    assert isinstance(caught.value, ValueError)


def test_save_checks_the_path_first(plain, tmp_path) -> None:
    grid = xw.Compare(plain, torch.randn(1, 3, 16, 16), methods=["grad_cam"], classes="top2")
    with pytest.raises(xw.ParameterError, match="does not exist"):
        grid.save(tmp_path / "nowhere" / "grid.png")
    with pytest.raises(xw.ParameterError, match="must end in"):
        grid.save(tmp_path / "grid.txt")
    assert grid.save(tmp_path / "grid.png").stat().st_size > 1000
