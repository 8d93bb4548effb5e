"""Hostile sizes and values from a config (YAML aliases and nesting, model sizes, workers,
threads, augmentation values): each is bounded or checked before it is used, and fails in one
line naming the key or file (docs/files.md, "Limits")."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import kpfast
from kpfast import train as train_cli
from kpfast.cli import run_cli
from .helpers import one_line_error
from kpfast.engine.config import ConfigError, load_config

WORKTREE = Path(os.path.abspath(kpfast.__file__)).parents[1]


def _limited(code: str, limit_bytes: int = 12 << 30, timeout: int = 60):
    """Run python ``code`` with an address-space limit: a blow-up is a failure, not an OOM kill."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    env = dict(os.environ, PYTHONPATH=str(WORKTREE))
    env.pop("KPFAST_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code], cwd=WORKTREE, env=env, preexec_fn=limit,
                          capture_output=True, text=True, timeout=timeout)


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", '
             '"xxxxxxxx", "xxxxxxxx"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nmodel:\n  overrides:\n    base_width: *a{levels - 1}\n"


# ------------------------------------------------------------------ YAML: alias bombs, nesting

@pytest.mark.parametrize("print_config", [False, True])
def test_yaml_alias_bomb_is_refused_quickly_in_one_line(tmp_path, print_config):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    assert bomb.stat().st_size < 1000
    argv = ["--config", str(bomb), "--output_dir", str(tmp_path / "runs")]
    argv += ["--print-config"] if print_config else []
    done = _limited("import sys; from kpfast import train; from kpfast.cli import run_cli; "
                    f"sys.exit(run_cli(train.main, {argv!r}))")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bomb) in lines[0] and "values" in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_override_alias_bomb_is_refused():
    items = ['a0: &a0 ["xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx", "xxxxxxxx"]']
    items += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(ConfigError, match="more than .* values"):
        load_config(None, ["model.overrides={" + ", ".join(items) + "}"])


DEEP_MAPPING = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(200))


@pytest.mark.parametrize("text", ["[" * 20000 + "]" * 20000, DEEP_MAPPING])
def test_deeply_nested_yaml_is_one_config_error(tmp_path, text, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    assert run_cli(train_cli.main, ["--config", str(path), "--print-config"]) == 2
    one_line_error(capsys, str(path))


# ------------------------------------------------------------------ config values

@pytest.mark.parametrize("section,value,needle", [
    ("rotation", {"max_degrees": float("nan")}, "rotation.max_degrees"),
    ("rotation", {"max_degrees": "lots"}, "rotation.max_degrees"),
    ("rotation", {"max_degrees": 1e9}, "rotation.max_degrees"),
    ("shift", {"factor": float("inf")}, "shift.factor"),
    ("half_body", {"padding": float("nan")}, "half_body.padding"),
    ("half_body", {"min_keypoints": "8"}, "half_body.min_keypoints"),
    ("scale", {"range": [0.5, float("nan")]}, "scale.range"),
    ("scale", {"range": ["a", "b"]}, "scale.range"),
    ("flip", {"p": float("nan")}, "flip.p"),
])
def test_augmentation_values_are_validated_with_the_key(section, value, needle):
    with pytest.raises(ConfigError, match=rf"data\.augmentation: .*{needle}"):
        text = json.dumps({section: value}).replace("NaN", ".nan").replace("Infinity", ".inf")
        load_config(None, [f"data.augmentation={text}"])


def test_nan_rotation_on_the_command_line_fails_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--set", "data.augmentation={rotation: {max_degrees: .nan}}", "--output_dir", str(out)]
    assert run_cli(train_cli.main, argv) == 2
    one_line_error(capsys, "data.augmentation", "rotation.max_degrees")
    assert not out.exists()


@pytest.mark.parametrize("override,key", [
    ("model.overrides={base_width: 20000}", "base_width"),
    ("model.overrides={num_modules: [1000, 1000, 1000]}", "num_modules"),
    ("model.overrides={stem_channels: 100000}", "stem_channels"),
    ("model.num_keypoints=100000000", "model.num_keypoints"),
    ("data.num_workers=5000", "data.num_workers"),
    ("train.cpu_threads=100000", "train.cpu_threads"),
    ("train.batch_size=100000000", "train.batch_size"),
])
def test_sizes_from_the_config_are_bounded_before_anything_is_built(tmp_path, override, key):
    argv = ["--set", override, "--output_dir", str(tmp_path / "runs"), "--print-config"]
    done = _limited("import sys; from kpfast import train; from kpfast.cli import run_cli; "
                    f"sys.exit(run_cli(train.main, {argv!r}))", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and key in lines[0], done.stderr[-2000:]


def test_workers_above_what_this_machine_runs_are_refused(monkeypatch, tmp_path, capsys):
    from kpfast.engine import arguments

    monkeypatch.setattr(arguments.os, "cpu_count", lambda: 2)
    argv = ["--set", "data.num_workers=200", "--output_dir", str(tmp_path / "runs")]
    assert run_cli(train_cli.main, argv) == 2
    one_line_error(capsys, "data.num_workers", "2 CPUs")


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "5e-4", "+1e+2"])
def test_float_keys_accept_numbers_yaml_11_reads_as_strings(text):
    assert load_config(None, [f"optim.lr={text}"]).optim.lr == float(text)


def test_string_keys_keep_their_text():
    assert load_config(None, ["data.root=1e5"]).data.root == "1e5"
