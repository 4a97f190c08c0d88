"""``read_yaml`` reads what ``yaml.safe_load`` reads, and refuses in moments a YAML file that
would cost too much (billion laughs, merge-key bombs, deep nesting, a huge file) or that asks
to build Python objects; each error names the file and what was wrong."""

import re
import time
from pathlib import Path

import pytest
import yaml

from mot.errors import MotError
from mot.io import MAX_YAML_BYTES, MAX_YAML_DEPTH, YamlError, read_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def expanding(tmp_path, levels=9, fanout=9):
    """Anchors whose aliases expand each other: ``fanout ** levels`` strings in a few hundred bytes."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * fanout)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fanout)}]" for i in range(1, levels + 1)]
    return write(tmp_path, "\n".join(lines) + "\n")


def test_a_config_with_anchors_aliases_and_merge_keys_reads_as_safe_load_reads_it(tmp_path):
    path = write(tmp_path, "optim: &optim {lr: 1.0e-3, betas: [0.9, 0.95]}\n"
                           "finetune:\n  <<: *optim\n  lr: 1.0e-4\n"
                           "stages: [*optim, *optim]\nname: run\nsteps: 10\nempty:\n")
    assert read_yaml(path) == yaml.safe_load(path.read_text())
    assert read_yaml(path)["finetune"] == {"lr": 1.0e-4, "betas": [0.9, 0.95]}
    assert read_yaml(write(tmp_path, "", "empty.yaml")) is None


def test_every_shipped_config_reads_as_safe_load_reads_it():
    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert paths
    for path in paths:
        assert read_yaml(path) == yaml.safe_load(path.read_text()), path


def test_a_billion_laughs_is_refused_in_moments(tmp_path):
    path = expanding(tmp_path)
    assert path.stat().st_size < 1000
    started = time.perf_counter()
    with pytest.raises(YamlError, match=re.escape(f"{path} holds more than 100000 values with its aliases followed")):
        read_yaml(path)
    assert time.perf_counter() - started < 1.0
    assert read_yaml(expanding(tmp_path, levels=3))["a3"][0][0][0] == ["lol"] * 9  # the same, small, reads


def test_a_merge_key_bomb_is_refused_in_moments(tmp_path):
    lines = ["m0: &m0 {k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7, k8: 8}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}], x{i}: {i}}}" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(YamlError, match=r"more than 100000 mapping entries with its merge keys \(<<\) followed"):
        read_yaml(path)
    assert time.perf_counter() - started < 1.0


def test_deep_nesting_is_refused_in_the_file_and_through_aliases(tmp_path):
    path = write(tmp_path, "[" * 10_000 + "]" * 10_000)
    with pytest.raises(YamlError, match=re.escape(f"{path}: nested deeper than {MAX_YAML_DEPTH} levels (line 1)")):
        read_yaml(path)
    assert read_yaml(write(tmp_path, "[" * MAX_YAML_DEPTH + "]" * MAX_YAML_DEPTH))  # the limit itself reads
    with pytest.raises(YamlError, match="nested deeper"):
        read_yaml(write(tmp_path, "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1)))
    # each anchor is 40 deep and holds the one before at its bottom: shallow in the file, deep when followed
    lines = [f"a0: &a0 {'[' * 40}0{']' * 40}"]
    lines += [f"a{i}: &a{i} {'[' * 40}*a{i - 1}{']' * 40}" for i in (1, 2)]
    with pytest.raises(YamlError, match=f"nests deeper than {MAX_YAML_DEPTH} levels with its aliases followed"):
        read_yaml(write(tmp_path, "\n".join(lines)))


def test_a_value_that_contains_itself_is_refused(tmp_path):
    with pytest.raises(YamlError, match="contains itself"):
        read_yaml(write(tmp_path, "a: &a [1, *a]\n"))


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    path = write(tmp_path, "# padding\n" * (MAX_YAML_BYTES // 10 + 1))
    with pytest.raises(YamlError, match=re.escape(f"{path} is larger than {MAX_YAML_BYTES} bytes")):
        read_yaml(path)


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = write(tmp_path, b"name: caf\xe9\n")
    with pytest.raises(YamlError, match=re.escape(f"{path} is not UTF-8 text: invalid continuation byte at byte 9")):
        read_yaml(path)


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    for text in (f"!!python/object/apply:os.system ['touch {marker}']\n",
                 f"!!python/object/apply:pathlib.Path.touch ['{marker}']\n",
                 "x: !!python/object:argparse.Namespace {a: 1}\n",
                 "x: !!python/name:os.system\n"):
        with pytest.raises(YamlError, match=r"is not valid YAML: could not determine a constructor for the tag "
                                            r"'tag:yaml.org,2002:python/"):
            read_yaml(write(tmp_path, text))
    assert not marker.exists()


def test_invalid_yaml_and_missing_files_name_the_file_and_line(tmp_path):
    path = write(tmp_path, "a: 1\n  b: [\n")
    where = re.escape(f'in "{path}", line 2, column 4')
    with pytest.raises(YamlError, match=rf"(?s)is not valid YAML: mapping values .* {where}"):
        read_yaml(path)
    with pytest.raises(YamlError, match=r"missing.yaml cannot be read: No such file or directory"):
        read_yaml(tmp_path / "missing.yaml")
    with pytest.raises(YamlError, match="Exceeds the limit"):  # Python refuses to build the integer
        read_yaml(write(tmp_path, "x: " + "9" * 5000 + "\n"))


def test_yaml_error_is_a_mot_error_and_a_value_error():
    assert issubclass(YamlError, MotError) and issubclass(YamlError, ValueError)
