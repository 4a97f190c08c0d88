"""How ``mot`` reports failures: one line and an exit status per kind, the traceback only with ``--debug``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mot.cli import main
from mot.cli.errors import describe
from mot.config import ConfigError
from mot.errors import MotError


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MOT_DEBUG", raising=False)  # MOT_DEBUG=1 in the shell would re-raise


def fail_with(monkeypatch, error: BaseException) -> None:
    """Make ``mot config list`` raise ``error``."""
    def listing(args, console):
        raise error

    monkeypatch.setattr("mot.cli.config._list", listing)


def run(capsys, *argv: str):
    code = main(list(argv))
    return code, capsys.readouterr().err


def library_error_classes():
    from mot.data.documents import DocumentError
    from mot.data.loader import LoaderError
    from mot.data.packing import PackingError
    from mot.data.prepare import PrepareError
    from mot.data.prepare.streams import StreamError
    from mot.data.settings import CorpusError
    from mot.data.shards import ShardError
    from mot.data.sources.errors import SourceUnavailable
    from mot.data.sources.speech import SynthesisError
    from mot.generate.transfusion import SamplingError
    from mot.model.inputs import InputError
    from mot.io import CheckpointError
    from mot.objectives.diffusion_schedule import ScheduleError
    from mot.progress import ProgressError
    from mot.tokenizers.vocab import VocabError
    from mot.runs.metrics import MetricsError
    from mot.train.errors import TrainingError

    return [(ConfigError, ValueError), (InputError, ValueError), (CheckpointError, RuntimeError),
            (VocabError, ValueError), (ScheduleError, ValueError), (TrainingError, RuntimeError),
            (DocumentError, ValueError), (LoaderError, ValueError), (CorpusError, ValueError),
            (PackingError, ValueError), (SourceUnavailable, RuntimeError), (SynthesisError, RuntimeError),
            (PrepareError, RuntimeError), (ShardError, RuntimeError), (StreamError, ValueError),
            (SamplingError, ValueError), (MetricsError, ValueError), (ProgressError, ValueError)]


def test_every_library_error_is_a_mot_error_and_still_what_it_was():
    for cls, builtin in library_error_classes():
        assert issubclass(cls, MotError) and issubclass(cls, builtin), cls


def test_a_mot_error_is_one_line_and_exit_2(monkeypatch, capsys):
    fail_with(monkeypatch, ConfigError("n_layers=0: must be positive\n\nsee the docs"))
    code, err = run(capsys, "config", "list")
    assert code == 2
    assert err == "mot: error: n_layers=0: must be positive\n  see the docs\n"


def test_a_stopped_run_exits_1(monkeypatch, capsys):
    from mot.train.errors import TrainingError

    fail_with(monkeypatch, TrainingError("step 3: the image loss is not finite"))
    code, err = run(capsys, "config", "list")
    assert (code, err) == (1, "mot: training stopped: step 3: the image loss is not finite\n")


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_says_so_and_names_the_file(monkeypatch, capsys, tmp_path, number):
    out = tmp_path / "model.yaml"

    def full(config, path):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr("mot.cli.config.save_config", full)
    code, err = run(capsys, "config", "save", "--config", "tiny-mot", "--out", str(out))
    assert code == 2
    assert err == f"mot: error: the disk is full ({os.strerror(number)}) while writing {out}\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_real_write_to_a_full_device(capsys):
    code, err = run(capsys, "config", "save", "--config", "tiny-mot", "--out", "/dev/full")
    assert code == 2
    assert err.startswith("mot: error: the disk is full (No space left on device)") and err.count("\n") == 1


def test_an_unreadable_file_is_named(monkeypatch, capsys):
    fail_with(monkeypatch, FileNotFoundError(errno.ENOENT, "No such file or directory", "runs/x/config.yaml"))
    assert run(capsys, "config", "list") == (2, "mot: error: runs/x/config.yaml: No such file or directory\n")


def test_os_errors_without_a_file_or_an_errno():
    assert describe(OSError(errno.ENOSPC, "No space left on device")) == (
        "mot: error: the disk is full (No space left on device)", 2)
    assert describe(OSError("the socket closed")) == ("mot: error: the socket closed", 2)
    assert describe(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"))[0] == (
        "mot: error: a -> b: Invalid cross-device link")


def test_a_message_quoting_a_lone_surrogate_still_prints(monkeypatch, capsys, tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text('n_layers: "\\ud800"\n')  # YAML's escape of a code point no encoding holds
    code, err = run(capsys, "config", "show", "--config", str(config))
    assert code == 2 and "\\ud800" in err and err.count("\n") == 1


def test_anything_else_is_an_internal_error_without_a_traceback(monkeypatch, capsys):
    fail_with(monkeypatch, TypeError("unsupported operand\nmore"))
    code, err = run(capsys, "config", "list")
    assert code == 1
    assert err == ("mot: internal error: TypeError: unsupported operand (run with --debug for the traceback)\n")


def test_an_accounting_mismatch_is_a_bug_not_bad_input(monkeypatch, capsys):
    from mot.model.accounting import AccountingError

    assert not issubclass(AccountingError, MotError)
    fail_with(monkeypatch, AccountingError("non_embedding_per_group differs"))
    code, err = run(capsys, "config", "list")
    assert code == 1 and err.startswith("mot: internal error: AccountingError: non_embedding_per_group differs")


def test_ctrl_c_exits_130(monkeypatch, capsys):
    fail_with(monkeypatch, KeyboardInterrupt())
    assert run(capsys, "config", "list") == (130, "mot: interrupted\n")


def test_debug_shows_the_traceback(monkeypatch):
    fail_with(monkeypatch, ConfigError("bad"))
    with pytest.raises(ConfigError, match="bad"):
        main(["--debug", "config", "list"])
    fail_with(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", "config", "list"])


@pytest.mark.parametrize("value, debug", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_mot_debug_in_the_environment(monkeypatch, capsys, value, debug):
    monkeypatch.setenv("MOT_DEBUG", value)
    fail_with(monkeypatch, TypeError("boom"))
    if debug:
        with pytest.raises(TypeError, match="boom"):
            main(["config", "list"])
    else:
        assert run(capsys, "config", "list")[0] == 1
