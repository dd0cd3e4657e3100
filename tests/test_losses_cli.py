"""``distill losses list`` and ``distill losses plot`` (the curve data given to matplotlib)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from distill import losses


def test_list_shows_every_loss(cli):
    code, out, _ = cli("losses", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "kind", "params", "reference"]
    names = [line.split()[0] for line in lines[2:]]
    assert names == list(losses.available())
    arcface = next(line for line in lines if line.startswith("arcface "))
    assert "scale=64, margin=0.5" in arcface and "arXiv:1801.07698" in arcface
    code, out, _ = cli("losses", "list", "--kind", "metric")
    assert [line.split()[0] for line in out.splitlines()[2:]] == [
        "triplet_batch_hard", "triplet_batch_all", "triplet_semihard", "center"]
    code, _, err = cli("losses", "list", "--kind", "nope")
    assert code == 2 and "unknown kind 'nope'" in err


def reference_curve(theta, m1, m2, m3):
    """InsightFace rule: cos(m1·θ + m2) − m3 while m1·θ + m2 ≤ π, else cosθ − mm − m3."""
    theta_th = min((math.pi - m2) / m1, math.pi)
    mm = math.sin(theta_th) * ((m1 - 1) * theta_th + m2)
    return np.where(m1 * theta + m2 < math.pi, np.cos(m1 * theta + m2), np.cos(theta) - mm) - m3


def test_plot_passes_the_margin_curves_to_matplotlib(cli, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    drawn = {}
    original = Axes.plot

    def record(self, x, y, *args, label=None, **kwargs):
        drawn[label] = (np.asarray(x), np.asarray(y))
        return original(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(Axes, "plot", record)
    out = tmp_path / "plots" / "margins.png"
    code, stdout, _ = cli("losses", "plot", "--out", out)
    assert code == 0 and f"wrote {out}" in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    presets = {"arcface": (1, .5, 0), "cosface": (1, 0, .35), "sphereface": (1.35, 0, 0),
               "sphere_arc": (1.2, .4, 0), "cm1": (1, .3, .2), "cm2": (.9, .4, .15)}
    assert len(drawn) == len(presets) + 1
    degrees, cosine = drawn["no margin"]
    np.testing.assert_allclose(cosine, np.cos(np.radians(degrees)), atol=1e-12)
    assert degrees[0] == 0 and degrees[-1] == pytest.approx(180)
    for name, margins in presets.items():
        (label,) = [k for k in drawn if k.startswith(name + " (")]
        x, y = drawn[label]
        theta = np.radians(x)
        inside = np.abs(theta - min((math.pi - margins[1]) / margins[0], math.pi)) > 1e-3
        # atol 5e-4: the transform clips cosθ to 1 − 1e-7 before acos (θ ≥ 4.5e-4 rad)
        np.testing.assert_allclose(y[inside], reference_curve(theta, *margins)[inside], atol=5e-4)
        assert np.all(y <= np.cos(theta) + 1e-6)


def test_plot_one_name_and_errors(cli, tmp_path, monkeypatch):
    code, _, _ = cli("losses", "plot", "--out", tmp_path / "a.png", "--name", "arcface")
    assert code == 0 and (tmp_path / "a.png").is_file()
    code, _, err = cli("losses", "plot", "--out", tmp_path / "b.png", "--name", "adacos")
    assert code == 2 and "not a combined-margin loss" in err
    code, _, err = cli("losses", "plot", "--out", tmp_path / "c.png", "--name", "arcfac")
    assert code == 2 and "did you mean arcface" in err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = cli("losses", "plot", "--out", tmp_path / "d.png")
    assert code == 2 and "needs matplotlib" in err and not (tmp_path / "d.png").exists()
