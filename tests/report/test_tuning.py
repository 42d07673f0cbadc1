"""The report's Tuning section: what each arm selected, and a warning wherever a selection sits on the edge
of its grid or a best epoch on the cap (the signs that an arm may be under-tuned)."""
import json

from test_report import make_run_dir, rewrite_results, table_row

from stacked_ae.report.render import render_report


def check(md: str, *cells: str) -> list[str] | None:
    """The cells after `cells` of the Tuning row that starts with them."""
    row = table_row(md, *cells)
    return None if row is None else row[len(cells):]


def tuned_run(tmp_path, edit):
    run = make_run_dir(tmp_path / "tuned", seeds=(0, 1, 2), arms=["pretrained", "random", "logreg"])
    config = json.loads((run / "config.json").read_text())
    config["finetune"].update(lr=[0.001, 0.01, 0.1], epochs=5)
    (run / "config.json").write_text(json.dumps(config))
    rewrite_results(run, edit)
    return render_report(run).read_text()


def test_selections_inside_the_grid_and_before_the_cap_pass(tmp_path):
    def edit(res):
        nn = res["arm"] != "logreg"
        res.loc[nn, "lr"], res.loc[nn, "best_epoch"] = 0.01, 3
        res.loc[~nn, "C"], res.loc[~nn, "on_grid_edge"] = 1.0, False
        return res
    md = tuned_run(tmp_path, edit)
    assert check(md, "10", "pretrained", "lr 0.01 ×3", "3, 3, 3 of 5") == ["inside the grid and before the cap"]
    assert check(md, "10", "logreg", "C 1 ×3", "—") == ["inside the grid"]


def test_edges_of_the_lr_grid_the_C_grid_and_the_epoch_cap_are_flagged(tmp_path):
    def edit(res):
        nn = res["arm"] != "logreg"
        res.loc[nn, "lr"], res.loc[nn, "best_epoch"] = 0.01, 3
        res.loc[nn & (res["seed"] == 0), "lr"] = 0.1        # top of the lr grid, one seed of each budget
        res.loc[nn & (res["seed"] == 1), "best_epoch"] = 5  # on the 5-epoch cap
        res.loc[~nn, "C"], res.loc[~nn, "on_grid_edge"] = 1.0, False
        res.loc[~nn & (res["seed"] == 2), ["C", "on_grid_edge"]] = [1000.0, True]
        return res
    md = tuned_run(tmp_path, edit)
    flag = check(md, "all", "random", "lr 0.01 ×2, 0.1 ×1", "3, 3, 5 of 5")
    assert flag == ["may be under-tuned: 1 of 3 at the top of the grid: widen the grid; "
                    "1 of 3 best epochs on the cap: allow more epochs"], flag
    assert check(md, "all", "logreg", "C 1 ×2, 1000 ×1", "—") == [
        "may be under-tuned: 1 of 3 at an end of the C grid: widen the grid"]
    summary = md.split("## Summary", 1)[1].split("## Results", 1)[0]
    assert "random at budget all (a selection on an edge of what was tried; best epochs at or near the epoch cap)" \
        in summary and "logreg at budget all (a selection on an edge of what was tried)" in summary, summary


def test_runs_without_the_edge_column_say_nothing_about_C(tmp_path):
    """Rows made before on_grid_edge existed cannot be judged: a dash, not a false 'inside the grid'."""
    def edit(res):
        res.loc[res["arm"] == "logreg", "C"] = 100.0
        return res.drop(columns=[c for c in ("on_grid_edge",) if c in res])
    md = tuned_run(tmp_path, edit)
    assert check(md, "10", "logreg", "C 100 ×3", "—") == ["—"]


def test_a_best_epoch_within_the_patience_of_the_cap_is_flagged(tmp_path):
    """Best at 8 of a 10-epoch cap with patience 3: the cap stopped training before early stopping could
    confirm the best (the loss may still be falling). Best at 7 (7 + 3 = 10) was confirmed."""
    run = make_run_dir(tmp_path / "near", seeds=(0, 1, 2), arms=["pretrained", "random"])
    config = json.loads((run / "config.json").read_text())
    config["finetune"].update(lr=[0.001, 0.01, 0.1], epochs=10, patience=3)
    (run / "config.json").write_text(json.dumps(config))

    def edit(res):
        res["lr"], res["best_epoch"] = 0.01, 7
        res.loc[(res["arm"] == "random") & (res["seed"] == 0), "best_epoch"] = 8
        return res
    rewrite_results(run, edit)
    md = render_report(run).read_text()
    assert check(md, "all", "pretrained", "lr 0.01 ×3", "7, 7, 7 of 10") == ["inside the grid and before the cap"]
    assert check(md, "all", "random", "lr 0.01 ×3", "7, 7, 8 of 10") == [
        "may be under-tuned: 1 of 3 best epochs within the patience (3) of the cap: the cap, not early "
        "stopping, ended training; allow more epochs"]
    assert "early stopping patience 3" in md
    summary = md.split("## Summary", 1)[1].split("## Results", 1)[0]
    assert "Possibly under-tuned (see **Tuning**): random at budget 10 (best epochs at or near the epoch cap), " \
        "random at budget all (best epochs at or near the epoch cap)." in summary


def test_the_summary_names_no_arm_when_every_selection_is_inside(tmp_path):
    def edit(res):
        nn = res["arm"] != "logreg"
        res.loc[nn, "lr"], res.loc[nn, "best_epoch"] = 0.01, 3
        res.loc[~nn, "C"], res.loc[~nn, "on_grid_edge"] = 1.0, False
        return res
    assert "Possibly under-tuned" not in tuned_run(tmp_path, edit)
