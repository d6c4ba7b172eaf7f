"""service.plots: every figure renders from a stored JobResult, as a real (non-blank) PNG or an SVG."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from service.plots import PLOT_KINDS, NoFinishedTrials, render_all, render_plot

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "job_result.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stored() -> dict:
    with FIXTURE.open() as f:
        return json.load(f)


@pytest.fixture
def result(stored: dict) -> dict:
    return copy.deepcopy(stored)


@pytest.fixture(scope="module")
def pngs(stored: dict) -> dict[str, bytes]:
    return {kind: render_plot(kind, stored) for kind in PLOT_KINDS}


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return imread(io.BytesIO(png), format="png")


def _assert_nontrivial(png: bytes) -> None:
    img = _decode(png)
    h, w = img.shape[:2]
    assert w >= 800 and h >= 450, (w, h)
    rgb = (img[..., :3] * 255).astype(np.uint32).reshape(-1, 3)
    assert rgb.std() > 20
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    assert len(np.unique(packed)) > 50  # lines, fills, text: far from a blank canvas


def test_fixture_is_consistent(stored: dict) -> None:
    trials = {t["trial_id"]: t for t in stored["trials"]}
    assert stored["control_trial_id"] in trials and trials[stored["control_trial_id"]]["is_control"]
    assert stored["best_trial"]["trial_id"] in trials
    assert any(t["status"] == "stopped" and len(t["history"]) < 10 for t in trials.values())
    k = len(stored["dataset"]["class_counts"])
    for t in trials.values():
        for m in (t["final"], t["best"]["metrics"]):
            assert len(m["per_class_accuracy"]) == k
            assert len(m["reliability"]["bin_edges"]) == 16 and len(m["reliability"]["count"]) == 15
        assert t["best"]["value"] == t["history"][t["best"]["epoch"] - 1][stored["metric"]]
    for b in stored["branches"]:
        assert b["best_trial_id"] in trials and b["gain"] == pytest.approx(b["best_value"] - b["control_value"])


@pytest.mark.parametrize("kind", PLOT_KINDS)
def test_png_is_a_real_image(pngs: dict[str, bytes], kind: str) -> None:
    _assert_nontrivial(pngs[kind])


@pytest.mark.parametrize("kind", PLOT_KINDS)
def test_svg(stored: dict, kind: str) -> None:
    svg = render_plot(kind, stored, "svg")
    text = svg.decode("utf-8")
    assert text.lstrip().startswith(("<?xml", "<svg"))
    assert "<svg" in text and text.rstrip().endswith("</svg>")


def test_same_result_same_png(stored: dict, pngs: dict[str, bytes]) -> None:
    assert render_plot("shots", stored) == pngs["shots"]


def _change_per_class(result: dict) -> None:
    for t in result["trials"]:
        t["best"]["metrics"]["per_class_accuracy"] = [0.3] * len(t["best"]["metrics"]["per_class_accuracy"])


def _change_history(result: dict) -> None:
    result["trials"][1]["history"][3][result["metric"]] = 0.2


def _change_shots(result: dict) -> None:
    for t in result["trials"]:
        t["best"]["metrics"]["few_shot_accuracy"] = 0.1


def _change_reliability(result: dict) -> None:
    rel = result["trials"][0]["best"]["metrics"]["reliability"]
    rel["accuracy"] = [None if a is None else 1.0 - a for a in rel["accuracy"]]


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("per-class", _change_per_class),
        ("curves", _change_history),
        ("shots", _change_shots),
        ("calibration", _change_reliability),
    ],
)
def test_changed_result_changes_the_image(result: dict, pngs: dict[str, bytes], kind: str, change) -> None:
    change(result)
    assert render_plot(kind, result) != pngs[kind]


@pytest.mark.parametrize("kind", PLOT_KINDS)
def test_no_finished_trial(result: dict, kind: str) -> None:
    for t in result["trials"]:
        t["history"] = []
        t["final"] = t["best"] = None
    with pytest.raises(NoFinishedTrials):
        render_plot(kind, result)
    with pytest.raises(NoFinishedTrials):
        render_plot(kind, {"job_name": "j", "metric": "balanced_accuracy", "mode": "max", "trials": []})


def test_unknown_kind_or_format(stored: dict) -> None:
    with pytest.raises(ValueError, match="kind"):
        render_plot("histogram", stored)
    with pytest.raises(ValueError, match="format"):
        render_plot("curves", stored, "jpg")  # type: ignore[arg-type]


def test_none_shot_groups(result: dict) -> None:
    """A dataset without many-shot classes: the group is None in every metrics dict, and is skipped."""
    result["dataset"]["shot_groups"]["many"] = []
    for t in result["trials"]:
        for m in [t["final"], t["best"]["metrics"], *t["history"]]:
            m["many_shot_accuracy"] = None
    for b in result["branches"]:
        b["best_metrics"]["many_shot_accuracy"] = None
    for kind in PLOT_KINDS:
        _assert_nontrivial(render_plot(kind, result))
    # Every group None: still a figure (with a message), no crash.
    for t in result["trials"]:
        for key in ("medium_shot_accuracy", "few_shot_accuracy"):
            t["best"]["metrics"][key] = None
    assert render_plot("shots", result).startswith(PNG_SIGNATURE)


def test_partial_result_of_a_running_job(result: dict) -> None:
    """While running: no branches summary, no best_trial, some trials with history only or none at all."""
    del result["branches"], result["best_trial"]
    for t in result["trials"][:3]:
        t["history"] = t["history"][:2]
        t["final"] = t["best"] = None
        t["status"] = "running"
    result["trials"][-1]["history"] = []
    result["trials"][-1]["final"] = result["trials"][-1]["best"] = None
    for kind in PLOT_KINDS:
        assert render_plot(kind, result).startswith(PNG_SIGNATURE)


def test_partial_result_from_the_store(result: dict) -> None:
    """service.results.partial_result: ``dataset`` is null until the job ends; the control's branch is "control"."""
    result["dataset"] = None
    control = next(t for t in result["trials"] if t["is_control"])
    control["branch"], control["branch_index"] = "control", -1
    for kind in PLOT_KINDS:
        _assert_nontrivial(render_plot(kind, result))


def test_min_mode_metric(result: dict) -> None:
    result["metric"], result["mode"] = "nll", "min"
    _assert_nontrivial(render_plot("curves", result))


def test_render_all(stored: dict, tmp_path: Path) -> None:
    paths = render_all(stored, tmp_path / "plots")
    assert [p.name for p in paths] == [f"{kind}.png" for kind in PLOT_KINDS]
    for p in paths:
        assert p.read_bytes().startswith(PNG_SIGNATURE)
    svgs = render_all(stored, tmp_path / "svg", fmt="svg")
    assert sorted(p.name for p in svgs) == sorted(f"{kind}.svg" for kind in PLOT_KINDS)


def test_curves_show_validation_beside_test_and_the_selected_epoch(result: dict) -> None:
    from service import plots

    plain = plots._figure("curves", result)
    assert not [ln for ln in plain.axes[0].get_lines() if ln.get_linestyle() == ":"]
    for t in result["trials"]:
        for h in t["history"]:
            h["val_balanced_accuracy"] = h["balanced_accuracy"] - 0.03
    best = next(t for t in result["trials"] if t["trial_id"] == result["best_trial"]["trial_id"])
    best["selected"] = {"epoch": best["best"]["epoch"], "val": {}, "test": {}}
    result["selected_on"] = "val"
    fig = plots._figure("curves", result)
    ax = fig.axes[0]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == len(result["trials"])  # one validation curve per trial
    assert list(dotted[-1].get_ydata()) == [h["val_balanced_accuracy"] for h in best["history"]]  # best drawn last
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [best["selected"]["epoch"]]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "validation" in legend and "selected epoch (on validation)" in legend
    assert "validation (dotted)" in ax.get_title()
    assert render_plot("curves", result).startswith(PNG_SIGNATURE)


def test_a_validation_point_sits_at_its_own_epoch_when_a_row_lacks_the_test_metric(result: dict) -> None:
    from service import plots

    trial = next(t for t in result["trials"] if t["trial_id"] == result["best_trial"]["trial_id"])
    rows = trial["history"]
    assert len(rows) >= 3
    for h in rows:
        h["val_balanced_accuracy"] = h["balanced_accuracy"] - 0.03
    del rows[0]["balanced_accuracy"]  # the first epoch reported validation only
    result["selected_on"] = "val"
    ax = plots._figure("curves", result).axes[0]
    best_val = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"][-1]  # the best trial is drawn last
    assert list(best_val.get_xdata()) == [h["epoch"] for h in rows]
    assert list(best_val.get_ydata()) == [h["val_balanced_accuracy"] for h in rows]
