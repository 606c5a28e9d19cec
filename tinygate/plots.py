"""The pictures in reports/latest/: size against quality per model (with its front and the budgets), and the trend
of every variant over the runs in the history.

One colour per variant name in every panel and every picture (variant_colours), one legend per picture, no
label drawn beside a point (the legend names them), budgets as dashed lines in the variant's colour. Quality is
each model's own figure: mean PSNR (dB) for image models, accuracy (%) for classifiers, and for label-free
models the worst output's SQNR against the float model (dB).
"""

from __future__ import annotations

from pathlib import Path

QUALITY = {"image": ("psnr_db", "min_psnr_db", "mean PSNR (dB)"),
           "classifier": ("accuracy_pct", "min_accuracy_pct", "accuracy (%)"),
           "fidelity": ("worst_output_sqnr_db", "min_output_sqnr_db", "worst output SQNR vs float (dB)")}


def variant_colours(names) -> dict[str, tuple]:
    """A colour per variant name, the same in every panel: the float model first, then the others in name order."""
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(set(names)) <= 10 else "tab20"].colors
    ordered = sorted(set(names), key=lambda n: (n != "float", n))
    return {name: palette[i % len(palette)] for i, name in enumerate(ordered)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_of(fig: dict, task: str) -> float | None:
    """A variant's quality figure for its model's task (see QUALITY), or None where it was not measured."""
    import math

    if task == "fidelity":
        values = [f.get("sqnr_db") for f in fig.get("fidelity", {}).values() if isinstance(f, dict)]
        values = [v for v in values if isinstance(v, int | float)]
        value = min(values) if values else None
    else:
        value = fig.get(QUALITY[task][0])
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _legend(figure, handles: dict, colours: dict, columns: int) -> None:
    """One legend for the whole picture, below it: the variants in colour order (float first), then the rest."""
    if not handles:
        return
    order = {name: i for i, name in enumerate(colours)}
    labels = sorted(handles, key=lambda k: (order.get(k.split(" (")[0], len(order)), k))
    renderer = figure.canvas.get_renderer()
    for ncol in range(min(columns, len(labels)), 0, -1):  # as many columns as fit the picture's width
        legend = figure.legend([handles[k] for k in labels], labels, loc="outside lower center", ncol=ncol,
                               fontsize=8, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= 0.98 * figure.bbox.width:
            return
        legend.remove()


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both size (smaller) and quality (higher), by size."""
    best, out = float("-inf"), []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            out.append((x, y))
            best = y
    return out


def _panels(figures: dict[str, dict], keep, height: float):
    """A row of panels, one per model among the figures `keep` accepts: the picture, (axes, model, [(variant name,
    figures)]) per panel in model order, and the colour of every variant name."""
    by_model: dict[str, list[tuple[str, dict]]] = {}
    for _, fig in sorted(figures.items()):
        if keep(fig):
            by_model.setdefault(str(fig["model"]), []).append((str(fig["variant"]), fig))
    colours = variant_colours([name for variants in by_model.values() for name, _ in variants])
    n = max(1, len(by_model))
    figure, axes = _pyplot().subplots(1, n, figsize=(5.5 * n, height), squeeze=False, layout="constrained")
    panels = [(ax, model, variants) for ax, (model, variants) in zip(axes[0], sorted(by_model.items()), strict=False)]
    return figure, panels, colours


def results(figures: dict[str, dict], budgets: dict[str, dict[str, float]], tasks: dict[str, str], path: Path) -> Path:
    """Draw draw_results into `path` (PNG)."""
    return _save(draw_results(figures, budgets, tasks), path, dpi=110)


def _save(figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    _pyplot().close(figure)
    return path


def draw_results(figures: dict[str, dict], budgets: dict[str, dict[str, float]], tasks: dict[str, str]):
    """Size against quality, one panel per model: each variant a point in its colour, the size/quality front as a
    grey step line, each variant's size budget and quality floor as dashed lines in its colour."""
    from matplotlib.ticker import MaxNLocator

    figure, panels, colours = _panels(figures, lambda f: "size_kb" in f and f.get("model") in tasks, height=4.8)
    handles = {}
    for ax, model, variants in panels:
        task = tasks[model]
        _, floor_key, ylabel = QUALITY[task]
        points = []
        for name, fig in variants:
            y = quality_of(fig, task)
            if y is None:  # not measured here (or the reference of a label-free model): a line at its size
                ax.axvline(fig["size_kb"], color=colours[name], linestyle=":", linewidth=1.2)
                sqnr = [f.get("sqnr_db") for f in (fig.get("fidelity") or {}).values() if isinstance(f, dict)]
                why = ("the reference: size only" if task == "fidelity" and name == "float" and not sqnr else
                       "identical to the float model" if sqnr and all(s == float("inf") for s in sqnr) else
                       "quality not measured here")
                handles.setdefault(f"{name} ({why})", ax.plot([], [], ":", color=colours[name])[0])
                continue
            points.append((fig["size_kb"], y))
            handles.setdefault(name, ax.scatter(fig["size_kb"], y, s=45, color=colours[name], zorder=3))
        if len(points) > 1:
            xs, ys = zip(*front(points), strict=True)
            ax.step(xs, ys, where="post", color="0.6", linewidth=1, zorder=1)
            handles.setdefault("size / quality front", ax.plot([], [], color="0.6", linewidth=1)[0])
        for name, fig in variants:
            mine = budgets.get(f"{model}-{name}", {})
            y = quality_of(fig, task)
            if floor_key in mine and y is not None:
                ax.plot([fig["size_kb"] * 0.9, fig["size_kb"] * 1.1], [mine[floor_key]] * 2, "--",
                        color=colours[name], linewidth=1.2)
            if "max_size_kb" in mine and y is not None:
                ax.plot([mine["max_size_kb"]] * 2, [y - 0.5, y + 0.5] if task != "classifier" else [y - 1, y + 1],
                        "--", color=colours[name], linewidth=1.2)
        if any(k in budgets.get(f"{model}-{name}", {}) for name, _ in variants for k in (floor_key, "max_size_kb")):
            handles.setdefault("budget (dashed: quality floor, size limit)", ax.plot([], [], "--", color="0.3")[0])
        ax.set_xlabel("size on disk (KB)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, prune="upper"))  # no tick label reaching the next panel
        ax.set_ylabel(ylabel)
        ax.set_title(model, fontsize=11)
        ax.grid(alpha=0.3)
    _legend(figure, handles, colours, columns=4)
    return figure


def downloads(figures: dict[str, dict], budgets: dict[str, dict[str, float]], path: Path) -> Path:
    """Draw draw_downloads into `path` (PNG)."""
    return _save(draw_downloads(figures, budgets), path, dpi=100)


def draw_downloads(figures: dict[str, dict], budgets: dict[str, dict[str, float]]):
    """Download time per network profile, one panel per model: a bar per variant in its colour for each profile
    (log scale, computed), a dot where it was measured in Chromium, each budget as a dark dashed tick across its bar
    (visible over a bar of any colour)."""
    figure, panels, colours = _panels(figures, lambda f: isinstance(f.get("download_s"), dict) and f.get("model"),
                                      height=4.2)
    handles = {}
    for ax, model, variants in panels:
        profiles = list(variants[0][1]["download_s"])
        width = 0.8 / len(variants)
        for i, (name, fig) in enumerate(variants):
            xs = [p + (i - (len(variants) - 1) / 2) * width for p in range(len(profiles))]
            handles.setdefault(name, ax.bar(xs, [fig["download_s"][p] for p in profiles], width, color=colours[name]))
            for x, profile in zip(xs, profiles, strict=True):
                if profile in fig.get("download_measured_s", {}):
                    handles.setdefault("measured in Chromium", ax.plot(x, fig["download_measured_s"][profile], "o",
                                                                       color="black", markersize=3)[0])
                limit = budgets.get(f"{model}-{name}", {}).get(f"download_s_{profile}")
                if limit is not None:
                    ax.plot([x - width / 2, x + width / 2], [limit] * 2, "--", color="0.1", linewidth=1.5, zorder=4)
                    handles.setdefault("budget (dashed)", ax.plot([], [], "--", color="0.3")[0])
        ax.set_xticks(range(len(profiles)), profiles)
        ax.set_yscale("log")
        ax.set_ylabel("download time (s)")
        ax.set_title(model, fontsize=11)
        ax.grid(alpha=0.3, axis="y")
    _legend(figure, handles, colours, columns=4)
    return figure


TREND_PANELS = (("size on disk (KB)", ("size_kb",)), ("quality", ("psnr_db", "accuracy_pct", "worst_output_sqnr_db")),
                ("latency p50 (ms)", ("p50_ms",)))
TREND_UNITS = {"psnr_db": "mean PSNR (dB)", "accuracy_pct": "accuracy (%)",
               "worst_output_sqnr_db": "worst output SQNR vs float (dB)"}


def trend(runs: list[dict], path: Path) -> Path:
    """Draw draw_trend into `path` (PNG)."""
    return _save(draw_trend(runs), path, dpi=90)


def draw_trend(runs: list[dict]):
    """Per model a row of panels (size, quality, latency), one line per variant over the runs, baselines marked."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    models = sorted({v["model"] for e in runs for v in e["variants"].values() if v.get("model")})
    names = [vid.split("-", 1)[1] for e in runs for vid, v in e["variants"].items() if v.get("model") in models]
    colours = variant_colours(names)
    figure, axes = plt.subplots(len(models), 3, figsize=(15, 3.4 * len(models) + 0.6), squeeze=False,
                                layout="constrained")
    handles = {}
    for row, model in zip(axes, models, strict=True):
        mine = [v for e in runs for v in e["variants"].values() if v.get("model") == model]
        for ax, (title, keys) in zip(row, TREND_PANELS, strict=True):
            # one figure per panel and model: the first of `keys` any run has (never PSNR and SQNR on one line)
            key = next((k for k in keys if any(isinstance(v.get(k), int | float) for v in mine)), None)
            unit = TREND_UNITS.get(key, title) if key else ""
            for vid in sorted({vid for e in runs for vid, v in e["variants"].items() if v.get("model") == model}):
                xs, ys = [], []
                for i, e in enumerate(runs):
                    v = e["variants"].get(vid, {})
                    if key is not None and isinstance(v.get(key), int | float):
                        xs.append(i)
                        ys.append(v[key])
                if xs:
                    name = vid.split("-", 1)[1]
                    handles.setdefault(name, ax.plot(xs, ys, marker="o", markersize=3, color=colours[name])[0])
            if not unit:  # nothing to draw: say so rather than show empty axes
                ax.text(0.5, 0.5, f"no {title} figure in the history", transform=ax.transAxes, ha="center",
                        va="center", color="0.4", fontsize=9)
                ax.set_yticks([])
            for i in (i for i, e in enumerate(runs) if e.get("baseline")):
                ax.axvline(i, color="0.6", linestyle="--", linewidth=0.8)
            ax.set_title(f"{model}: {unit or title}", fontsize=10)
            ax.set_xlabel("run")
            ax.set_xlim(-0.5, len(runs) - 0.5)  # every panel spans the whole history, figures or not
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, prune="upper", min_n_ticks=1))
            ax.grid(alpha=0.3)
    handles["baseline accepted"] = axes[0][0].plot([], [], "--", color="0.6", linewidth=0.8)[0]
    _legend(figure, handles, colours, columns=6)
    return figure
