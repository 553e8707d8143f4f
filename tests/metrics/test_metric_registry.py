"""The metric registry: its modules, specs, columns, the command line and the docs agree."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest

import xai_widgets as xw
from xai_widgets import cli, metrics
from xai_widgets.metrics import registry

ROOT = Path(__file__).resolve().parents[2]


def test_registry_and_modules_agree() -> None:
    package = Path(metrics.__file__).parent
    with_specs = sorted(p.stem for p in package.glob("*.py")
                        if re.search(r"^SPECS = ", p.read_text(encoding="utf-8"), re.M))
    assert sorted(registry.MODULES) == with_specs
    specs = [spec for name in registry.MODULES
             for spec in importlib.import_module(f"xai_widgets.metrics.{name}").SPECS]
    assert [spec.name for spec in specs] == list(metrics.REGISTRY)       # unique, in order
    for name in registry.MODULES:
        module = importlib.import_module(f"xai_widgets.metrics.{name}")
        for spec in module.SPECS:
            assert metrics.REGISTRY[spec.name] is spec
            assert spec.measure.__module__ == module.__name__
            assert spec.label and spec.summary and spec.paper and spec.columns
            assert spec.cost in ("instant", "pass", "iterative")
    keys = [column.key for column in metrics.columns()]
    assert len(keys) == len(set(keys)) and not any("@" in key for key in keys)


def test_directions_and_best() -> None:
    deletion, insertion = metrics.get_metric("deletion"), metrics.get_metric("insertion")
    assert (deletion.direction, deletion.headline.arrow) == ("lower", "↓")
    assert (insertion.direction, insertion.headline.better) == ("higher", "higher is better")
    assert deletion.headline.best([0.3, 0.1, 0.1, math.nan]) == {1, 2}
    assert insertion.headline.best([0.3, 0.5, math.nan]) == {1}
    assert insertion.headline.best([math.nan]) == set()
    assert metrics.get_metric("pointing").headline.proportion
    assert [spec.name for spec in metrics.REGISTRY.values() if spec.needs_boxes] == \
        ["pointing", "energy_pointing"]
    with pytest.raises(xw.ParameterError, match="unknown metric 'insertoin'; did you mean "
                                                "'insertion'"):
        metrics.get_metric("insertoin")


def test_the_command_line_offers_the_registry(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec in metrics.REGISTRY.values():
        assert f"{spec.name} ({spec.label}" in text
    assert "pointing (Pointing game, needs --boxes)" in text


def test_the_docs_name_every_metric() -> None:
    developing = (ROOT / "DEVELOPING.md").read_text(encoding="utf-8")
    assert "## Adding a metric" in developing
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Metrics"):]
    section = section[:section.index("\n## ", 1)]
    for name in metrics.REGISTRY:
        assert f"`{name}`" in section
