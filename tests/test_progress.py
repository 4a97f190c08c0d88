"""Progress: periodic lines in a log, a bar on a terminal, nothing when turned off."""

import io

import pytest

from mot.errors import MotError
from mot.progress import Progress, ProgressError, format_duration, format_rate, format_value, progress


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_forced_mode(monkeypatch):
    monkeypatch.delenv("MOT_PROGRESS", raising=False)


def lines_progress(lines, clock, description="image tokenizer (VQ)", total=1000, bar=False, **kwargs):
    """A task of ``total`` steps whose lines go to ``lines`` (a bar only when asked for)."""
    return Progress(description, total, log=lines.append, unit="steps", bar=bar, clock=clock, **kwargs)


def test_a_line_shows_counts_rate_times_and_the_latest_values():
    lines, clock = [], Clock()
    task = lines_progress(lines, clock, every_seconds=20)
    clock.now += 24.4
    task.update(300, loss=0.123449, grad=2)
    assert lines == ["image tokenizer (VQ): 300/1,000 steps (30%), 12.3 steps/s, 0:24 elapsed, ~0:57 left, "
                     "loss=0.1234, grad=2"]


def test_the_first_line_comes_after_every_seconds_and_then_one_per_period():
    lines, clock = [], Clock()
    task = lines_progress(lines, clock, every_seconds=30)
    for _ in range(29):
        clock.now += 1
        task.update()
    assert lines == []
    clock.now += 1
    task.update()
    assert len(lines) == 1 and lines[0].startswith("image tokenizer (VQ): 30/1,000 steps (3%), 1 steps/s, 0:30")
    for _ in range(30):
        clock.now += 1
        task.update()
    assert len(lines) == 2 and "60/1,000" in lines[1]


def test_close_logs_the_final_line_once():
    lines, clock = [], Clock()
    with lines_progress(lines, clock, total=10) as task:
        clock.now += 5
        task.update(10, loss=1.5)
    assert lines == ["image tokenizer (VQ): 10/10 steps (100%), 2 steps/s, 0:05 elapsed, loss=1.5"]
    task.close()
    assert len(lines) == 1


def test_every_update_is_logged_with_every_seconds_zero_and_close_repeats_nothing():
    lines, clock = [], Clock()
    with lines_progress(lines, clock, total=3, every_seconds=0) as task:
        for _ in range(3):
            clock.now += 1
            task.update()
    assert [line.split(": ")[1].split(",")[0] for line in lines] == ["1/3 steps (33%)", "2/3 steps (66%)",
                                                                      "3/3 steps (100%)"]


def test_an_unknown_total_shows_the_count_and_no_time_left():
    lines, clock = [], Clock()
    with lines_progress(lines, clock, total=None, description="shapescenes") as task:
        clock.now += 4
        task.update(1234)
    assert lines == ["shapescenes: 1,234 steps, 308 steps/s, 0:04 elapsed"]


def test_rates_durations_and_values_are_formatted_for_reading():
    assert [format_rate(r) for r in (12.345, 0.5623, 5.0, 2512.6)] == ["12.3", "0.562", "5", "2,513"]
    assert [format_duration(s) for s in (0, 24.4, 725, 3723)] == ["0:00", "0:24", "12:05", "1:02:03"]
    assert [format_value(v) for v in (2.34567, 0.000123456, 7, "x")] == ["2.346", "0.0001235", "7", "x"]


def test_the_wrapper_counts_every_item_and_closes_when_the_loop_ends():
    lines, clock = [], Clock()
    items = list(progress(range(4), "documents", log=lines.append, bar=False, clock=clock, every_seconds=60))
    assert items == [0, 1, 2, 3]
    assert lines == ["documents: 4/4 it (100%), 0:00 elapsed"]


def test_off_prints_nothing(monkeypatch, capsys):
    monkeypatch.setenv("MOT_PROGRESS", "off")
    lines, clock = [], Clock()
    with lines_progress(lines, clock, every_seconds=0, bar=True) as task:
        clock.now += 1
        task.update(5, loss=1.0)
    assert lines == [] and capsys.readouterr() == ("", "")


def test_a_bar_does_not_log_each_update_only_the_final_line(capsys):
    lines, clock = [], Clock()
    with lines_progress(lines, clock, total=3, every_seconds=0, bar=True) as task:
        for _ in range(3):
            clock.now += 1
            task.update(loss=0.5)
        assert lines == []
    assert len(lines) == 1 and lines[0].startswith("image tokenizer (VQ): 3/3 steps (100%)")
    assert "image tokenizer (VQ)" in capsys.readouterr().err  # the bar, drawn on stderr


def test_the_environment_forces_lines_or_a_bar(monkeypatch, capsys):
    lines, clock = [], Clock()
    monkeypatch.setenv("MOT_PROGRESS", "lines")
    with lines_progress(lines, clock, every_seconds=0, bar=True) as task:
        task.update()
    assert len(lines) == 1 and capsys.readouterr().err == ""
    monkeypatch.setenv("MOT_PROGRESS", "BAR")
    with lines_progress(lines, clock, every_seconds=0, bar=False) as task:
        task.update()
    assert len(lines) == 2 and "image tokenizer (VQ)" in capsys.readouterr().err


def test_a_bad_environment_value_is_a_clear_error(monkeypatch):
    assert issubclass(ProgressError, MotError) and issubclass(ProgressError, ValueError)  # one line from the CLI
    monkeypatch.setenv("MOT_PROGRESS", "quiet")
    with pytest.raises(ProgressError, match=r"MOT_PROGRESS='quiet': must be one of bar, lines, off"):
        Progress("x")


def test_without_a_terminal_the_default_is_lines(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    lines = []
    with Progress("x", 2, log=lines.append, every_seconds=0) as task:
        task.update(2)
    assert len(lines) == 1 and lines[0].startswith("x: 2/2 it (100%)")


def test_a_task_that_fails_before_its_first_unit_logs_nothing_but_one_that_fails_later_does():
    def failing(after):
        yield from range(after)
        raise LookupError("not installed")

    for after, logged in ((0, 0), (2, 1)):
        lines = []
        with pytest.raises(LookupError):
            list(progress(failing(after), "source", log=lines.append, bar=False, every_seconds=60))
        assert len(lines) == logged
    assert lines[0].startswith("source: 2 it")


def test_printed_lines_are_flushed_so_a_log_file_shows_them_at_once(monkeypatch):
    class Buffered(io.StringIO):
        flushed = ""

        def flush(self):
            self.flushed = self.getvalue()

    stdout = Buffered()
    monkeypatch.setattr("sys.stdout", stdout)
    clock = Clock()
    task = Progress("x", 10, bar=False, every_seconds=0, clock=clock)  # logs with print
    task.update(3)
    assert stdout.flushed.startswith("x: 3/10 it (30%)")
