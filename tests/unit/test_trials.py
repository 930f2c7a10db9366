"""A sweep's table: rows read from trial run folders, the best trial, trials.csv."""

import csv
import json
import pickle
import threading

import pytest

from red_runtime.tune.trials import best_trial, format_table, read_trial, write_csv

pytestmark = pytest.mark.unit


def folder(tmp_path, name, accuracies, complete):
    out = tmp_path / name
    out.mkdir()
    rows = [{"round": i + 1, "accuracy": a, "loss": 1 - a} for i, a in enumerate(accuracies)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if complete:
        (out / "summary.json").write_text("{}")
        (out / "model.pt").write_bytes(b"")
    return out


def test_the_best_is_the_finished_trial_with_the_best_final_metric(tmp_path):
    rows = [
        read_trial(folder(tmp_path, "a", [0.5, 0.8, 0.9], True), "a", {"lr": 0.1}, 3),
        read_trial(folder(tmp_path, "b", [0.95], False), "b", {"lr": 0.3}, 3),  # stopped early: no model
        read_trial(folder(tmp_path, "c", [0.6, 0.7, 0.85], True), "c", {"lr": 0.01}, 3),
        read_trial(tmp_path / "d", "d", {"lr": 9.0}, 3, error="Diverged: loss is nan"),
    ]
    assert [r.stopped_early for r in rows] == [False, True, False, False]
    assert best_trial(rows, "accuracy", "max").trial == "a"
    assert best_trial(rows, "loss", "min").trial == "a"
    assert best_trial(rows[1:2], "accuracy", "max") is None
    table = format_table(rows, rows[0])
    assert "* a" in table and "stopped early" in table and "failed: Diverged" in table and "1/3" in table


def test_csv_has_a_row_per_trial_with_config_outcome_and_no_nan(tmp_path):
    rows = [
        read_trial(folder(tmp_path, "a", [0.5, 0.9], True), "a", {"task.train.lr": 0.1}, 2),
        read_trial(tmp_path / "d", "d", {"task.train.lr": 9.0}, 2, error="Diverged"),
    ]
    write_csv(rows, tmp_path / "trials.csv")
    got = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert got[0] == {
        "trial": "a",
        "task.train.lr": "0.1",
        "accuracy": "0.9",
        "loss": "0.1",
        "rounds_run": "2",
        "stopped_early": "false",
        "error": "",
    }
    assert got[1]["accuracy"] == "" and got[1]["error"] == "Diverged"


def test_status_counts_trials_and_names_the_best(tmp_path):
    from red_api.sweep import parse_sweep
    from red_runtime.tune.status import trial_fields

    sweep = parse_sweep(["task.train.lr=uniform:0.01:0.5"], 4, "accuracy", "max", "asha", 0)
    rows = [
        read_trial(folder(tmp_path, "a", [0.5, 0.8], True), "a", {"task.train.lr": 0.1}, 2),
        read_trial(folder(tmp_path, "b", [0.3], False), "b", {"task.train.lr": 0.01}, 2),
    ]
    fields = trial_fields(4, 1, rows, sweep)
    assert fields["trials"] == {"total": 4, "running": 1, "done": 1, "stopped": 1, "failed": 0}
    assert fields["best"] == {"trial": "a", "config": {"task.train.lr": "0.1"}, "accuracy": 0.8}
    assert fields["metrics"]["accuracy"] == 0.8 and fields["progress"] == "2/4 trials"
    assert "best" not in trial_fields(4, 2, [], sweep)


def report(round_no, accuracy):
    from red_runtime.engine.events import RoundReport

    return RoundReport(round_no, 3, 1 - accuracy, accuracy, 4, 4, 0.1)


def test_tune_hears_each_round_one_late_and_the_last_only_after_every_sink_closed():
    from red_runtime.tune.tuning import TuneSink

    sent = []
    sink = TuneSink(sent.append)
    sink.round_done(report(1, 0.5), [])
    assert sent == []  # a report can end the trial: round 1 goes when round 2 is in
    sink.round_done(report(2, 0.7), [])
    assert [s["round"] for s in sent] == [1]
    sink.round_done(report(3, 0.9), [])
    sink.finished(None, None, None)
    assert [s["round"] for s in sent] == [1, 2]  # the last waits for close, after the model and MLflow
    sink.close()
    assert sent[-1] == {"round": 3, "accuracy": 0.9, "loss": pytest.approx(0.1)}


def test_a_trial_the_scheduler_stops_ends_as_stopped_not_failed():
    from red_runtime.tune.tuning import TrialStopped, TuneSink

    def stopping(_):
        raise SystemExit(0)  # what Tune's report does to a trial it stops

    sink = TuneSink(stopping)
    sink.round_done(report(1, 0.5), [])
    with pytest.raises(TrialStopped, match="stopped early by the sweep's scheduler"):
        sink.round_done(report(2, 0.6), [])
    failed_run = TuneSink(stopping)
    failed_run.round_done(report(1, 0.5), [])
    failed_run.close()  # a run that failed never reports its last round


def test_the_status_callback_does_not_count_a_trial_tune_is_completing_as_running(tmp_path):
    import types

    from red_api.sweep import parse_sweep
    from red_runtime.tune.status import SweepStatus

    class Sink:
        def __init__(self):
            self.fields = {}

        def update(self, **fields):
            self.fields.update(fields)

    sweep = parse_sweep(["task.train.lr=uniform:0.01:0.5"], 2, "accuracy", "max", "asha", 0)
    (tmp_path / "trials").mkdir()
    folder(tmp_path / "trials", "fed-00000", [0.4, 0.9], True)
    sink = Sink()
    sink.lock = threading.Lock()  # a StatusSink holds locks, threads and the API client's socket
    callback = SweepStatus(sink, sweep, tmp_path, 2, lambda tid: f"fed-{tid.split('_')[1]}")
    pickle.dumps(callback)  # Tune pickles its callbacks into the experiment's state
    callback.setup()
    assert sink.fields["trials"]["total"] == 2 and sink.fields["progress"] == "0/2 trials"
    done = types.SimpleNamespace(trial_id="ab_00000", status="RUNNING", config={"task.train.lr": 0.2})
    other = types.SimpleNamespace(trial_id="ab_00001", status="RUNNING", config={"task.train.lr": 0.1})
    callback.on_trial_complete(0, [done, other], done)  # Tune's order: the callback, then TERMINATED
    assert sink.fields["trials"] == {"total": 2, "running": 1, "done": 1, "stopped": 0, "failed": 0}
    assert sink.fields["best"]["trial"] == "fed-00000" and sink.fields["metrics"]["accuracy"] == 0.9
