"""The loss registry as a table, and the margin presets' target-logit curves as a plot."""
from __future__ import annotations

from pathlib import Path

MARGIN_LOSSES = ("arcface", "cosface", "sphereface", "sphere_arc", "cm1", "cm2")


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def loss_rows(kind: Optional[str] = None) -> list[dict]:
    """One row per registered loss: name, kind, params with defaults, reference."""
    from distill.losses import available

    return [{"name": name, "kind": spec.kind,
             "params": ", ".join(f"{k}={_format(v)}" for k, v in spec.defaults.items()),
             "reference": spec.reference}
            for name, spec in available().items() if kind in (None, spec.kind)]


def margin_curves(names=MARGIN_LOSSES, points: int = 361) -> dict:
    """name → (θ in degrees, target logit) of the registry's margin losses, computed with
    the losses' own transform; ``"no margin"`` is cosθ."""
    import numpy as np

    from distill.losses import get
    from distill.losses.margin import CombinedMargin, margin_target

    theta = np.linspace(0.0, np.pi, points)
    curves = {"no margin": (np.degrees(theta), np.cos(theta))}
    for name in names:
        loss = get(name)
        if not isinstance(loss, CombinedMargin):
            raise ValueError(f"'{name}' is not a combined-margin loss; valid: {', '.join(MARGIN_LOSSES)}, combined_margin")
        target = margin_target(np.cos(theta).astype(np.float32), loss.m1, loss.m2, loss.m3,
                               loss.easy_margin).numpy()
        label = f"{name} ({_format(loss.m1)}, {_format(loss.m2)}, {_format(loss.m3)})"
        curves[label] = (np.degrees(theta), target.astype(np.float64))
    return curves


def plot_curves(curves: dict, out) -> Path:
    """One labelled line per curve; x: θ (degrees), y: target logit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib; install it with: pip install 'distill[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, linestyle="--" if label == "no margin" else "-")
    ax.set_xlabel("θ (degrees) between embedding and class weight")
    ax.set_ylabel("target logit  cos(m1·θ + m2) − m3")
    ax.set_xlim(0, 180)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
