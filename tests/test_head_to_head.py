"""The leaderboard's library (scribbleseg.lab.head_to_head): cells by hand, the job list, the CRF cache, step costs,
the README block, and the seaborn figures."""
import json

import pytest

from scribbleseg.baseline import PartialCE
from scribbleseg.data.folder import ScribbleVariant
from scribbleseg.lab import head_to_head as h2h
from scribbleseg.lab import plots
from scribbleseg.potts.method import PottsGD


def test_cell_by_hand():
    c = h2h.cell([60.0, 62.0], full=70.0, pce=50.0)
    assert c == {"mean": 61.0, "std": 1.41, "n": 2, "of_full": 87.1, "gap_closed": 55.0}
    assert h2h.cell([50.0], 70.0, 50.0)["gap_closed"] == 0.0 and h2h.cell([70.0], 70.0, 50.0)["gap_closed"] == 100.0
    assert h2h.cell([55.0], full=50.0, pce=52.0)["gap_closed"] is None          # pCE above full: no gap to close
    assert h2h.cell([55.0], 70.0, 50.0)["std"] == 0.0


def test_columns_are_the_four_training_sets():
    cols = h2h.columns(3, 0.5, (0.5, 1.0))
    assert cols == {"scribbles": ScribbleVariant(3), "drop 0.5": ScribbleVariant(3, drop=0.5),
                    "shrink 0.5": ScribbleVariant(3, shrink=0.5), "shrink 1": ScribbleVariant(3, shrink=1.0)}


def test_leaderboard_and_markdown_from_scores():
    cols = {"a": None, "b": None}
    score = {(h2h.FULL, "a"): [80.0], (h2h.FULL, "b"): [80.0], ("pCE", "a"): [60.0, 62.0], ("pCE", "b"): [85.0],
             ("X", "a"): [70.0, 72.0], ("X", "b"): [70.0]}
    table = h2h.leaderboard(score, cols, {"pCE": 1.0, "X": 2.5})
    assert [r["method"] for r in table] == [h2h.FULL, "pCE", "X"]
    x = table[2]
    assert x["cost"] == 2.5 and x["a"]["gap_closed"] == 52.6 and x["a"]["of_full"] == 88.8    # (71-61)/(80-61)
    text = h2h.markdown(table, cols, {"a": [0, 1], "b": [0]})
    assert "| method | step cost (x pCE) | a (2 seeds) | b (1 seed) |" in text
    assert "| X | 2.50 | 71.00 ± 1.41 (88.8%, 53%) | 70.00 ± 0.00 (87.5%, no gap) |" in text


def test_crf_rows_are_measured_against_full_masks_and_pce_with_crf():
    cols = {"a": None}
    score = {(h2h.FULL, "a"): [80.0], ("pCE", "a"): [60.0], ("X", "a"): [70.0],
             (h2h.FULL + h2h.CRF, "a"): [84.0], ("pCE" + h2h.CRF, "a"): [68.0], ("X" + h2h.CRF, "a"): [80.0]}
    rows = {r["method"]: r for r in h2h.leaderboard(score, cols, {"pCE": 1.0, "X": 2.0})}
    assert rows["X"]["a"]["gap_closed"] == 50.0                                  # (70-60)/(80-60)
    crf = rows["X + CRF"]["a"]
    assert crf["gap_closed"] == 75.0 and crf["of_full"] == 95.2                  # (80-68)/(84-68), 80/84
    assert rows["X + CRF"]["cost"] == 2.0
    without = {k: v for k, v in score.items() if k[0] != h2h.FULL + h2h.CRF}     # no full + CRF row: the plain ones
    assert {r["method"]: r for r in h2h.leaderboard(without, cols)}["X + CRF"]["a"]["of_full"] == 100.0


def test_update_readme_replaces_only_the_block():
    text = f"top\n{h2h.START}\nold\n{h2h.END}\nbottom\n"
    assert h2h.update_readme(text, "new table") == f"top\n{h2h.START}\nnew table\n{h2h.END}\nbottom\n"
    with pytest.raises(ValueError, match="no '<!-- head-to-head:start -->'"):
        h2h.update_readme("no markers", "x")


def test_readme_cli_writes_the_results_table(tmp_path, monkeypatch):
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"profile": "cpu", "device": "2-core CPU", "commit": "abc", "markdown": "| t |"}))
    monkeypatch.setattr(h2h, "results_path", lambda nb, profile: res)
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{h2h.START}\n{h2h.END}\n")
    h2h.main([str(readme)])
    assert "(cpu profile, 2-core CPU, commit abc)" in readme.read_text() and "| t |" in readme.read_text()
    monkeypatch.setattr(h2h, "results_path", lambda nb, profile: tmp_path / "missing.json")
    with pytest.raises(SystemExit, match="missing.json does not exist"):
        h2h.main([str(readme)])


def test_run_board_builds_one_batch_with_stage_two_from_the_right_runs(monkeypatch):
    seen = []

    def fake_run_jobs(jobs, spread, progress, log):
        seen.extend(jobs)
        for i, j in enumerate(jobs):
            if isinstance(j.init, int):
                assert 0 <= j.init < i
        return [f"run{i}" for i in range(len(jobs))]
    monkeypatch.setattr(h2h, "run_jobs", fake_run_jobs)
    cols = h2h.columns(3, 0.5, (1.0,))
    seeds = {"scribbles": [0, 1], "drop 0.5": [0], "shrink 1": [2]}
    gd = {c: PottsGD(lam=float(i)) for i, c in enumerate(cols)}
    rows = {"pCE": h2h.Row(PartialCE()), "GD": h2h.Row(gd, init="pCE")}
    board = h2h.run_board("data", rows, cols, seeds, {"epochs": 3}, {"epochs": 1}, PartialCE("mask"))
    full = [j for j in seen if j.method == PartialCE("mask")]
    assert [j.cfg.seed for j in full] == [0, 1, 2]                              # the union of the seeds, once
    assert board[(h2h.FULL, "scribbles")] == ["run0", "run1"] and board[(h2h.FULL, "shrink 1")] == ["run2"]
    stage2 = [j for j in seen if j.init is not None]
    assert len(stage2) == 4 and all(j.cfg.epochs == 1 for j in stage2)
    for j in stage2:                                                            # from pCE's run of the same cell
        first = seen[j.init]
        assert first.method == PartialCE() and first.variant == j.variant and first.cfg.seed == j.cfg.seed
        assert first.cfg.epochs == 3 and j.method == gd[next(c for c, v in cols.items() if v == j.variant)]
    assert len(board[("GD", "scribbles")]) == 2
    with pytest.raises(ValueError, match="row 'GD' starts from 'later'"):
        h2h.run_board("data", {"GD": h2h.Row(PottsGD(), init="later"), "later": h2h.Row(PartialCE())}, cols, seeds,
                      {}, {}, PartialCE("mask"))
    with pytest.raises(ValueError, match="not for 'drop 0.5'"):
        h2h.Row({"scribbles": PartialCE()}).for_column("drop 0.5")


def test_crf_miou_is_computed_once_and_stored(tmp_path, monkeypatch):
    calls = []

    class Run:
        folder = tmp_path

        def load_model(self, method):
            return "model"
    monkeypatch.setattr(h2h, "load_data", lambda ds, split: "val")
    monkeypatch.setattr(h2h, "evaluate", lambda m, d, crf: calls.append(crf) or {"miou": 55.5, "pixel_accuracy": 0.9})
    assert h2h.crf_miou(Run(), None, "ds") == 55.5 and h2h.crf_miou(Run(), None, "ds") == 55.5
    assert calls == [True] and json.loads((tmp_path / "crf_metrics.json").read_text())["miou"] == 55.5


def test_step_costs_are_ratios_to_pce(tiny_dataset, monkeypatch):
    cfg, root = tiny_dataset
    monkeypatch.setattr("scribbleseg.experiment.ensure_embedded", lambda c: root)
    costs = h2h.step_costs({"pCE": PartialCE(), "GD": PottsGD(neighbourhood="grid")}, cfg,
                           {"width": 4, "batch_size": 4}, repeats=1)
    assert costs["pCE"] == 1.0 and costs["GD"] > 0 and set(costs) == {"pCE", "GD"}


def test_seaborn_figures_draw_every_seed():
    recs = [{"method": m, "column": c, "mIoU (%)": 50.0 + i + j} for i, m in enumerate(["a", "b"])
            for c in ["x", "y"] for j in range(3)]
    fig = plots.seed_points(recs, "method", hue="column", title="t")
    points = sum(len(col.get_offsets()) for col in fig.axes[0].collections)
    assert points >= len(recs)                                                 # every seed drawn (plus the means)
    lines = [{"method": m, "shrink rate": s, "mIoU (%)": 60 - 10 * s + j} for m in "ab" for s in (0, 1) for j in range(3)]
    fig = plots.robustness(lines, "shrink rate")
    assert len(fig.axes[0].get_legend().get_texts()) == 2
