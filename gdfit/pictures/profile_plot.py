"""`--ci-plot`: each fitted parameter's profile, the F-test probability of the refits against the
parameter's value, with the confidence levels, the profile intervals and, for comparison, the
covariance's value ± sigma x stderr (matplotlib, the `plot` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from gdfit.pictures.plotting import _pyplot, _save, check_format, require_matplotlib

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def check_ci_plot(path: Path) -> None:
    """Fail before the run: the folder must exist, the format be known, matplotlib be installed."""
    from gdfit.errors import OutputError
    from gdfit.files.writing import check_writable

    check_writable(path, key="--ci-plot")
    try:
        check_format(path)
    except OutputError as err:
        err.key = "--ci-plot"
        raise
    require_matplotlib()


def plot_profiles(path: Path, profiles: list, result) -> None:
    """A panel per parameter; a fit without intervals gets a figure that says why."""
    plt = _pyplot()
    confidence = result.confidence or {}
    if not profiles:
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "\n".join(confidence.get("notes") or ["no intervals"]), ha="center", va="center", wrap=True)
        _save(fig, path)
        plt.close(fig)
        return
    columns = 2 if len(profiles) > 1 else 1
    rows = math.ceil(len(profiles) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    for ax, profile in zip(axes.flat, profiles):
        _panel(ax, profile, confidence.get("probabilities") or {})
    for ax in list(axes.flat)[len(profiles):]:
        ax.axis("off")
    fig.suptitle(f"gdfit: profile likelihood ({confidence.get('refits', 0)} refits, F-test)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _panel(ax, profile, probabilities: dict[str, float]) -> None:
    xs = [x for x, _, _ in profile.points]
    ax.plot(xs, [p for _, _, p in profile.points], marker=".", color="tab:grey", linewidth=1, label="profile")
    ax.axvline(profile.best, color="black", linewidth=1, label=f"best {profile.best:.6g}")
    for colour, (level, bounds) in zip(COLOURS, (profile.ci or {}).items()):
        probability = probabilities.get(level)
        if probability is not None:
            ax.axhline(probability, color=colour, linestyle="--", linewidth=0.8)
        for bound in bounds:
            if bound is not None:
                ax.axvline(bound, color=colour, linewidth=1.2)
        shown = ", ".join("unreachable" if b is None else f"{b:.6g}" for b in bounds)
        ax.plot([], [], color=colour, label=f"{level}σ: [{shown}]")
        if profile.stderr is not None and math.isfinite(profile.stderr):
            for sign in (-1, 1):
                ax.axvline(profile.best + sign * float(level) * profile.stderr, color=colour, linestyle=":",
                           linewidth=0.8)
    ax.plot([], [], color="grey", linestyle=":", label="value ± σ·stderr")
    ax.set_xlabel(profile.name)
    ax.set_ylabel("F-test probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)

