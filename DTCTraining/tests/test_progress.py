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


def test_a_stream_nobody_reads_any_more_is_dropped_and_the_log_goes_on(tmp_path):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    log = tmp_path / "progress.jsonl"
    reporter = ProgressReporter(log, mode="json", stream=ClosedPipe())
    assert not reporter.output_lost
    reporter.emit("progress", iteration=1)  # no exception: the run decides what to do about it
    reporter.emit("stopped", iteration=1, reason="output closed")
    reporter.close()
    assert reporter.output_lost
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == ["progress", "stopped"]
