"""Every display step, by its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import reference_nets

from xai_widgets import render
from xai_widgets.errors import ParameterError
from xai_widgets.render import RenderSettings


def test_unsigned_normalisation_keeps_zero_and_divides_by_the_max() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]],
                         [[0.0, 0.0], [0.0, 0.0]]])
    unit = render.normalise(maps, signed=False)
    torch.testing.assert_close(unit[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    torch.testing.assert_close(unit[1], torch.ones(2, 2))  # flat positive stays flat, not 0
    torch.testing.assert_close(unit[2], torch.zeros(2, 2))


def test_signed_normalisation_is_centred_on_zero() -> None:
    unit = render.normalise(torch.tensor([[[-2.0, 1.0], [0.0, 4.0]]]), signed=True)
    torch.testing.assert_close(unit, torch.tensor([[[-0.5, 0.25], [0.0, 1.0]]]))


def test_percentile_clip() -> None:
    maps = torch.arange(101, dtype=torch.float32).view(1, 1, 101)
    unit = render.normalise(maps, signed=False, clip_percentile=50)
    assert float(unit[0, 0, 50]) == pytest.approx(1.0)
    assert float(unit[0, 0, 25]) == pytest.approx(0.5)
    assert float(unit[0, 0, 100]) == 1.0


def test_channel_reductions_and_polarities() -> None:
    g = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # (1, 3, 1, 1)
    assert float(render.reduce_channels(g, "max_abs")) == 3.0
    assert float(render.reduce_channels(g, "sum_abs")) == 6.0
    assert float(render.reduce_channels(g, "sum")) == 0.0
    assert float(render.reduce_channels(g, "l2")) == pytest.approx(14 ** 0.5)
    m = torch.tensor([-2.0, 3.0])
    assert render.apply_polarity(m, "positive").tolist() == [0.0, 3.0]
    assert render.apply_polarity(m, "negative").tolist() == [2.0, 0.0]
    assert render.apply_polarity(m, "absolute").tolist() == [2.0, 3.0]
    assert render.apply_polarity(m, "signed").tolist() == [-2.0, 3.0]


def test_gradient_views_follow_the_original_definitions() -> None:
    g = torch.tensor([[-2.0, 0.0, 4.0]]).view(1, 3, 1, 1).expand(1, 3, 1, 1)
    colour = render.gradient_picture(g, "colour").flatten().tolist()
    positive = render.gradient_picture(g, "positive").flatten().tolist()
    negative = render.gradient_picture(g, "negative").flatten().tolist()
    assert colour == pytest.approx([0.0, 1 / 3, 1.0])  # (g - min) / (max - min)
    assert positive == pytest.approx([0.0, 0.0, 1.0])  # [g]+ / max g
    assert negative == pytest.approx([1.0, 0.0, 0.0])  # [-g]+ / -min g
    wide = torch.randn(1, 3, 20, 20)
    gray = render.gradient_picture(wide, "gray")[0, 0]
    total = wide.abs().sum(dim=1)[0]
    low = total.min()
    expected = ((total - low) / (torch.quantile(total.flatten(), 0.99) - low)).clamp(0, 1)
    torch.testing.assert_close(gray, expected)


def test_gray_view_stretches_from_the_minimum_to_the_99th_percentile() -> None:
    # Σ_c |g_c| = [2, 2, 4, 6, 10]; P99 by linear interpolation: 6 + 0.96 · (10 − 6) = 9.84;
    # the original: clip((G − 2) / (9.84 − 2), 0, 1)
    g = torch.tensor([[1.0, -1.0, 2.0, -3.0, 5.0], [-1.0, 1.0, -2.0, 3.0, 5.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0]]).view(1, 3, 1, 5)
    gray = render.gradient_picture(g, "gray")
    expected = [0.0, 0.0, 2 / 7.84, 4 / 7.84, 1.0]
    for channel in range(3):
        assert gray[0, channel, 0].tolist() == pytest.approx(expected, abs=1e-6)
    flat = render.gradient_picture(torch.ones(1, 3, 2, 2), "gray")
    assert flat.tolist() == torch.zeros(1, 3, 2, 2).tolist()  # no contrast: nothing to show


def test_bilinear_upsampling_matches_the_half_pixel_definition() -> None:
    maps = torch.randn(2, 3, 4)
    up = render.upsample(maps, (9, 8))
    expected = reference_nets.np_bilinear(maps.double().numpy(), (9, 8))
    np.testing.assert_allclose(up.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert render.upsample(maps, (3, 4)) is maps
    spiky = torch.zeros(1, 4, 4)
    spiky[0, 1, 1] = 1
    bicubic = render.upsample(spiky, (16, 16), "bicubic")
    assert float(bicubic.min()) >= 0 and float(bicubic.max()) <= 1


def test_colours_and_alpha() -> None:
    unsigned = render.colourise(torch.tensor([[[0.0, 1.0]]]), "inferno", False, 0.4)
    assert unsigned[..., 3].tolist() == [[[102, 102]]]
    assert unsigned[0, 0, 0, :3].tolist() == [0, 0, 3]  # inferno starts black
    signed = render.colourise(torch.tensor([[[0.0, -1.0, 0.5]]]), "RdBu_r", True, 1.0)
    assert signed[0, 0, :, 3].tolist() == [0, 255, 128]  # zero is transparent
    assert signed[0, 0, 1, 2] > signed[0, 0, 1, 0]  # negative is blue


def test_render_maps_builds_aligned_frames() -> None:
    raw = torch.zeros(2, 4, 4)
    raw[0, 0, 0] = 2.0
    raw[1, 3, 3] = -1.0
    display = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    frames = render.render_maps(raw, display, RenderSettings(opacity=1.0), ["a", "b"])
    assert [f.caption for f in frames] == ["a", "b"]
    assert frames[0].heat.shape == (8, 8, 4) and frames[0].values.shape == (8, 8)
    assert frames[0].values[0, 0] == pytest.approx(2.0)
    assert frames[0].values[7, 7] == 0.0
    assert frames[1].values.max() == 0.0  # positive polarity drops the negative peak
    composite = frames[0].composite()
    assert composite[0, 0].tolist() == frames[0].heat[0, 0, :3].tolist()  # opacity 1


def test_composite_blends_by_alpha() -> None:
    frame = render.Frame(np.full((1, 1, 3), 200, np.uint8),
                         np.array([[[0, 100, 0, 128]]], np.uint8), "", np.zeros((1, 1)))
    blended = frame.composite()[0, 0].tolist()
    assert blended == [round(200 * (1 - 128 / 255)), round(100 * 128 / 255 + 200 * (1 - 128 / 255)),
                       round(200 * (1 - 128 / 255))]


def test_settings_pick_colormaps_by_sign() -> None:
    assert RenderSettings().colormap == "inferno"
    assert RenderSettings(polarity="signed").colormap == "RdBu_r"
    assert RenderSettings(polarity="signed", cmap="PuOr_r").colormap == "PuOr_r"
    assert RenderSettings().updated(opacity=0.9).opacity == 0.9


@pytest.mark.parametrize(("changes", "message"), [
    ({"cmap": "nosuch"}, "unknown colormap 'nosuch'"),
    ({"cmap": "viridsi"}, "did you mean 'viridis'"),
    ({"polarity": "postive"}, "unknown polarity 'postive'.*did you mean 'positive'"),
    ({"polarity": None}, "unknown polarity None; choose one of 'positive'"),
    ({"channels": "max"}, "unknown channels 'max'"),
    ({"gradient_view": "grey"}, "did you mean 'gray'"),
    ({"resampling": "lanczos"}, "unknown resampling"),
    ({"clip_percentile": float("nan")}, r"clip_percentile must be a number in \(0, 100\]"),
    ({"clip_percentile": 0}, r"\(0, 100\], got 0"),
    ({"clip_percentile": 101}, "got 101"),
    ({"clip_percentile": "99"}, "got '99'"),
    ({"opacity": 5}, r"opacity must be a number in \[0, 1\], got 5"),
    ({"opacity": -1}, "got -1"),
    ({"opacity": float("nan")}, "got nan"),
    ({"opacity": True}, "got True"),
])
def test_bad_settings_are_refused_with_what_is_accepted(changes: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        RenderSettings(**changes)
    with pytest.raises(ParameterError, match=message):
        RenderSettings().updated(**changes)


def test_every_step_refuses_unknown_names_with_the_toolkit_error() -> None:
    maps = torch.ones(1, 3, 2, 2)
    with pytest.raises(ParameterError, match="did you mean 'sum'"):
        render.reduce_channels(maps, "sum_")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="did you mean 'signed'"):
        render.apply_polarity(maps, "singed")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="unknown gradient_view"):
        render.gradient_picture(maps, "sepia")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="unknown colormap"):
        render.colourise(torch.zeros(1, 2, 2), "nosuch", False, 0.5)


def test_valid_settings_are_kept() -> None:
    settings = RenderSettings(cmap="jet", opacity=0, clip_percentile=np.float32(99.5),
                              gradient_view="gray", resampling="nearest")
    assert (settings.cmap, settings.opacity, settings.gradient_view) == ("jet", 0, "gray")
    assert RenderSettings(opacity=1, clip_percentile=100).opacity == 1
