"""The progress log of a run folder: one JSON record per line, also across a kill and a resume."""
import io
import json

from dtc_training.progress import ProgressReporter


def test_a_line_cut_short_by_a_kill_is_dropped_before_the_resumed_run_appends(tmp_path):
    log = tmp_path / "progress.jsonl"
    log.write_text('{"event": "start", "iteration": 0}\n{"event": "progress", "itera')  # killed mid-write
    reporter = ProgressReporter(log, mode="json", stream=io.StringIO())
    reporter.emit("start", iteration=500)
    reporter.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["iteration"]) for r in records] == [("start", 0), ("start", 500)]
