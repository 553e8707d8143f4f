"""The registry, the kernel modules, the card folders and the test files agree."""

from __future__ import annotations

from pathlib import Path

import pytest

import xai_widgets as xw
from xai_widgets.kernels import REGISTRY, get_method

ROOT = Path(__file__).resolve().parent.parent
NOT_METHODS = {"__init__", "spec"}


def test_registry_modules_cards_and_tests_agree() -> None:
    modules = {p.stem for p in (ROOT / "xai_widgets" / "kernels").glob("*.py")
               if p.stem not in NOT_METHODS and not p.stem.startswith("_")}
    cards = {p.name for p in (ROOT / "kernels").iterdir() if p.is_dir() and
             not p.name.startswith(("_", "."))}
    tested = {p.stem.removeprefix("test_") for p in (ROOT / "tests" / "kernels").glob("test_*.py")}
    assert set(REGISTRY) == modules
    assert set(REGISTRY) == cards
    assert set(REGISTRY) <= tested


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_card_folder_is_complete(name: str) -> None:
    folder = ROOT / "kernels" / name
    card = (folder / "CARD.md").read_text()
    assert (folder / "make_reference.py").is_file()
    assert (folder / "reference.npz").is_file()
    for heading in ("Paper", "Equation", "Output contract", "Invariants", "Reference"):
        assert f"**{heading}" in card, f"{name}/CARD.md lacks a '{heading}' paragraph"


@pytest.mark.parametrize("spec", list(REGISTRY.values()), ids=list(REGISTRY))
def test_spec_is_consistent(spec: xw.MethodSpec) -> None:
    assert spec.name.isidentifier()
    assert spec.paper
    assert spec.label
    assert spec.summary
    assert spec.rules
    assert spec.validate({}) == spec.defaults()
    for param in spec.params:
        assert param.validate(param.default, spec.name) == param.default
    assert get_method(spec.name) is spec
    assert get_method(spec.label) is spec


def test_unknown_method_suggests() -> None:
    with pytest.raises(xw.MethodError, match="did you mean 'grad_cam'"):
        get_method("gradcam")
