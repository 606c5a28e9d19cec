"""The pictures people read at a glance: one colour per variant across panels and pictures, one legend, budgets
drawn, label-free models plotted by their fidelity, no text drawn over other text; the Markdown figures table
without repeated columns."""

from __future__ import annotations

import itertools

import matplotlib
import pytest

from tinygate import plots, reports
from tinygate.checks import Check

matplotlib.use("Agg")

FIGURES = {
    "beauty-float": {"model": "beauty", "variant": "float", "size_kb": 90.0, "psnr_db": 39.0},
    "beauty-onnx": {"model": "beauty", "variant": "onnx", "size_kb": 91.0, "psnr_db": 39.0},
    "beauty-int8": {"model": "beauty", "variant": "int8", "size_kb": 25.0, "psnr_db": 38.2},
    "beauty-coreml": {"model": "beauty", "variant": "coreml", "size_kb": 45.0, "psnr_db": float("nan")},
    "enc-float": {"model": "enc", "variant": "float", "size_kb": 300.0},
    "enc-onnx": {"model": "enc", "variant": "onnx", "size_kb": 310.0,
                 "fidelity": {"emb": {"sqnr_db": 140.0}, "logits": {"sqnr_db": 150.0}}},
    "enc-int8": {"model": "enc", "variant": "int8", "size_kb": 80.0,
                 "fidelity": {"emb": {"sqnr_db": 31.0}, "logits": {"sqnr_db": 35.0}}},
}
BUDGETS = {"beauty-int8": {"min_psnr_db": 37.5, "max_size_kb": 30.0}, "enc-int8": {"min_output_sqnr_db": 28.0}}
TASKS = {"beauty": "image", "enc": "fidelity"}


def _no_overlap(figure) -> None:
    """No drawn text (title, axis label, legend entry, tick label) overlaps another; only an x tick label and a
    y tick label meeting at a panel's corner are matplotlib's own business."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    ticks = {id(t): ("x", ax) for ax in figure.axes for t in ax.get_xticklabels()}
    ticks |= {id(t): ("y", ax) for ax in figure.axes for t in ax.get_yticklabels()}
    undrawn = {id(t) for ax in figure.axes for axis, labels, (lo, hi) in (
        (0, ax.get_xticklabels(), sorted(ax.get_xlim())), (1, ax.get_yticklabels(), sorted(ax.get_ylim())))
        for t in labels if not lo - 1e-9 <= t.get_position()[axis] <= hi + 1e-9}  # ticks beyond the limits
    texts = [t for t in figure.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
             and id(t) not in undrawn]
    clashes = []
    for a, b in itertools.combinations(texts, 2):
        ka, kb = ticks.get(id(a)), ticks.get(id(b))
        if ka and kb and ka[1] is kb[1] and ka[0] != kb[0]:
            continue
        if a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)):
            clashes.append((a.get_text(), b.get_text()))
    assert not clashes, clashes
    page = figure.bbox
    cut = [t.get_text() for t in texts if not (
        page.x0 - 1 <= (box := t.get_window_extent(renderer)).x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0)]
    assert not cut, f"drawn past the picture's edge: {cut}"


def _colour_of(ax, label_colour: dict) -> None:
    """Each point's colour, by its position: (size, quality) -> RGBA."""
    for collection in ax.collections:
        for (x, y), colour in zip(collection.get_offsets(), collection.get_facecolors(), strict=False):
            label_colour[(float(x), float(y))] = tuple(colour[:3])


def test_one_colour_per_variant_one_legend_budgets_drawn_and_no_text_over_text():
    figure = plots.draw_results(FIGURES, BUDGETS, TASKS)
    assert len(figure.legends) == 1 and not any(ax.get_legend() for ax in figure.axes)
    colours: dict = {}
    for ax in figure.axes:
        _colour_of(ax, colours)
    expected = plots.variant_colours([f["variant"] for f in FIGURES.values()])
    for name, here, there in (("int8", (25.0, 38.2), (80.0, 31.0)), ("onnx", (91.0, 39.0), (310.0, 140.0))):
        assert colours[here] == pytest.approx(tuple(expected[name]))  # the same variant, the same colour
        assert colours[there] == pytest.approx(tuple(expected[name]))
    beauty, enc = figure.axes
    assert enc.get_ylabel() == "worst output SQNR vs float (dB)"  # label-free: plotted by fidelity, not skipped
    dashed = [line for ax in figure.axes for line in ax.get_lines() if line.get_linestyle() == "--"
              and len(line.get_xdata())]
    assert len(dashed) == 3  # beauty-int8's floor and size limit, enc-int8's floor
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "coreml (quality not measured here)" in legend and "size / quality front" in legend
    _no_overlap(figure)


def test_one_label_free_model_with_long_legend_entries_keeps_its_legend_inside_the_picture():
    """One panel (5.5 in wide) and legend entries such as "float (the reference: size only)": the legend takes as
    many columns as fit, not four cut at both edges."""
    figures = {vid: f for vid, f in FIGURES.items() if f["model"] == "enc"}
    figure = plots.draw_results(figures, {"enc-int8": {"min_output_sqnr_db": 28.0, "max_size_kb": 90.0}}, TASKS)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "float (the reference: size only)" in legend and "budget (dashed: quality floor, size limit)" in legend
    _no_overlap(figure)


def test_the_trend_of_a_label_free_model_plots_its_fidelity_from_the_history(tmp_path):
    from tinygate import history

    rec = reports.Recorder()
    for vid, fig in FIGURES.items():
        rec.figure(vid, **fig)
    doc = history.entry(rec, 0, tmp_path)
    assert doc["variants"]["enc-int8"]["worst_output_sqnr_db"] == 31.0  # the worst output, kept in the history
    assert "worst_output_sqnr_db" not in doc["variants"]["enc-float"]
    figure = plots.draw_trend([doc, doc])
    quality = [ax for ax in figure.axes if ax.get_title().startswith("enc: ")][1]
    assert quality.get_title() == "enc: worst output SQNR vs float (dB)"
    assert sorted(line.get_ydata()[0] for line in quality.get_lines() if len(line.get_xdata()) == 2) == [31.0, 140.0]
    assert {ax.get_xlim() for ax in figure.axes} == {(-0.5, 1.5)}  # every panel spans the whole history
    _no_overlap(figure)


def test_the_front_keeps_only_points_nothing_beats():
    assert plots.front([(90, 39), (91, 39), (25, 38.2), (45, 38.0)]) == [(25, 38.2), (90, 39)]


def test_the_trend_uses_the_same_colours_and_one_legend():
    runs = [{"kind": "run", "baseline": i == 0, "variants": {
        vid: {k: v for k, v in f.items() if k in ("model", "size_kb", "psnr_db")} | {"p50_ms": 10.0 + i}
        for vid, f in FIGURES.items()}} for i in range(3)]
    figure = plots.draw_trend(runs)
    assert len(figure.legends) == 1 and not any(ax.get_legend() for ax in figure.axes)
    expected = plots.variant_colours([vid.split("-", 1)[1] for vid in FIGURES])
    for ax in figure.axes:
        for line in ax.get_lines():
            if len(line.get_xdata()) == 3 and line.get_linestyle() == "-":
                assert matplotlib.colors.to_rgb(line.get_color()) in {tuple(c) for c in expected.values()}
    _no_overlap(figure)


def test_the_markdown_figures_table_repeats_no_column():
    rec = reports.Recorder()
    rec.checks.append(Check("beauty", "int8", "min_psnr_db", 38.2, 37.5, "dB", "pass", "onnx", op=">="))
    for vid, fig in FIGURES.items():
        rec.figure(vid, **fig)
    text = reports.markdown(rec, 0)
    header = next(line for line in text.splitlines() if line.startswith("| variant | size_kb"))
    assert "| model |" not in header and "| variant |" not in header[2:] and "fidelity" not in header
    assert "worst_output_sqnr_db" in header


def test_the_summary_leads_with_what_failed_and_puts_notes_after_it():
    """A note (a step's choice, a busy machine) explains; it blocks nothing, so it never stands above a failure."""
    rec = reports.Recorder()
    rec.checks.append(Check("beauty", "int8", "min_psnr_db", 30.1, 37.5, "dB", "fail", "onnx", op=">="))
    rec.note("beauty-int8, step ort_int8_static: QDQ: QDQ takes 1.02x QOperator's time")
    text = reports.markdown(rec, 1)
    assert text.index("## What failed") < text.index("## Notes") < text.index("QDQ takes") < text.index("## Every")
    passing = reports.Recorder()
    passing.note("a note")
    assert "## Notes" not in reports.markdown(passing, 0) and "- a note" in reports.markdown(passing, 0)


def test_download_times_are_drawn_per_profile_in_the_variant_colours_with_budgets_and_no_text_over_text():
    figures = {vid: {**f, "download_s": {"slow_3g": f["size_kb"] / 40, "fast_3g": f["size_kb"] / 160, "4g": 0.1}}
               for vid, f in FIGURES.items()}
    figures["beauty-int8"]["download_measured_s"] = {"slow_3g": 0.7}
    figure = plots.draw_downloads(figures, {"beauty-int8": {"download_s_slow_3g": 1.0}})
    assert len(figure.legends) == 1 and not any(ax.get_legend() for ax in figure.axes)
    expected = plots.variant_colours([vid.split("-", 1)[1] for vid in FIGURES])
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["slow_3g", "fast_3g", "4g"]
        colours = {matplotlib.colors.to_rgb(p.get_facecolor()) for p in ax.patches}
        assert colours <= {tuple(c) for c in expected.values()}
    dashed = [line for ax in figure.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert any(list(line.get_ydata()) == [1.0, 1.0] and line.get_zorder() > 1 for line in dashed)  # over the bar
    _no_overlap(figure)


def test_the_summary_tables_download_time_per_profile_with_what_was_measured():
    rec = reports.Recorder()
    rec.figure("beauty-int8", model="beauty", variant="int8", download_s={"slow_3g": 0.7, "4g": 0.1},
               download_measured_s={"slow_3g": 0.72})
    rec.figure("beauty-float", model="beauty", variant="float", download_s={"slow_3g": 2.5, "4g": 0.2})
    text = reports.markdown(rec, 0)
    table = text.split("## Download time per network profile (s)")[1]
    assert "| variant | slow_3g | 4g |" in table
    assert "| beauty-int8 | 0.7 [0.72] | 0.1 |" in table and "| beauty-float | 2.5 | 0.2 |" in table



def test_only_the_float_is_the_reference_and_one_trend_line_never_mixes_psnr_with_sqnr(tmp_path):
    figures = {"enc-float": FIGURES["enc-float"], "enc-lost": {"model": "enc", "variant": "lost", "size_kb": 90.0},
               "enc-same": {"model": "enc", "variant": "same", "size_kb": 310.0,
                            "fidelity": {"emb": {"sqnr_db": float("inf")}}}}
    legend = [t.get_text() for t in plots.draw_results(figures, {}, TASKS).legends[0].get_texts()]
    assert {"float (the reference: size only)", "lost (quality not measured here)",
            "same (identical to the float model)"} <= set(legend)
    runs = [{"variants": {"beauty-int8": {"model": "beauty", "psnr_db": 38.2, "worst_output_sqnr_db": 31.0}}},
            {"variants": {"beauty-int8": {"model": "beauty", "worst_output_sqnr_db": 30.0}}}]
    quality = plots.draw_trend(runs).axes[1]
    assert quality.get_title() == "beauty: mean PSNR (dB)"
    assert [list(line.get_ydata()) for line in quality.get_lines() if len(line.get_xdata())] == [[38.2]]
