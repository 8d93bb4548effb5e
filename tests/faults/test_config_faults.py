"""Careless command lines: every bad value fails at start-up, in one line naming the key,
before the run directory (or anything else) is written; configs resolve from any folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import kpfast
from kpfast import train as train_cli
from kpfast.cli import run_cli
from kpfast.engine.config import load_config, shipped_config_names

WORKTREE = Path(os.path.abspath(kpfast.__file__)).parents[1]


def _train(cwd, *args, env=None):
    """python -m kpfast.train in a subprocess started in ``cwd`` (not the repository)."""
    environ = dict(os.environ, PYTHONPATH=str(WORKTREE))
    environ.pop("KPFAST_DEBUG", None)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "kpfast.train", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    "args,key",
    [
        (["--set", "eval.blur_kernel=4"], "eval.blur_kernel"),
        (["--seed", "-1"], "train.seed"),
        (["--device", "tpu"], "train.device"),
        (["--set", "train.run_name=../../x"], "train.run_name"),
        (["--set", "train.run_name=/tmp/elsewhere"], "train.run_name"),
        (["--ops-backend", "gpu"], "train.ops_backend"),
    ],
)
def test_bad_value_fails_before_the_output_dir_is_touched(tmp_path, capsys, args, key):
    out = tmp_path / "runs"
    code = run_cli(train_cli.main, [*args, "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(f"config error: {key}")
    assert not out.exists()


def test_device_tpu_lists_the_accepted_forms(capsys):
    assert run_cli(train_cli.main, ["--device", "tpu"]) == 2
    assert "auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_device_without_gpu_is_one_line_at_startup(tmp_path, capsys):
    out = tmp_path / "runs"
    assert run_cli(train_cli.main, ["--device", "cuda", "--output_dir", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train.device" in line and "--device cpu" in line and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_ops_backend_without_gpu_gives_the_registry_reason_at_startup(tmp_path, capsys):
    from kpfast import backends

    out = tmp_path / "runs"
    assert run_cli(train_cli.main, ["--ops-backend", "cuda", "--output_dir", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    reason = backends._device_reason("cuda", torch.device("cpu"))
    assert "train.ops_backend" in line and reason in line and not out.exists()


def test_bad_kpfast_backend_env_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KPFAST_BACKEND", "fastest")
    assert run_cli(train_cli.main, ["--output_dir", str(tmp_path / "r")]) == 2
    assert "KPFAST_BACKEND" in _one_error_line(capsys.readouterr().err)


def test_output_dir_that_is_a_file_fails_at_startup(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("keep me")
    assert run_cli(train_cli.main, ["--output_dir", str(target)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "train.output_dir" in line and str(target) in line
    assert target.read_text() == "keep me"


def test_keyboard_interrupt_is_never_swallowed():
    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cli(interrupted, [])


def test_traceback_only_with_kpfast_debug(tmp_path):
    plain = _train(tmp_path, "--seed", "-1")
    assert plain.returncode == 2
    assert _one_error_line(plain.stderr).startswith("config error: train.seed")
    debug = _train(tmp_path, "--seed", "-1", env={"KPFAST_DEBUG": "1"})
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "config error: train.seed" in debug.stderr


def test_shipped_config_resolves_by_name_from_any_folder(tmp_path):
    proc = _train(tmp_path, "--config", "coco_litehrnet18_256x192", "--print-config")
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    expected = load_config("coco_litehrnet18_256x192")
    assert printed["model"]["name"] == expected.model.name == "litehrnet_18"
    assert printed["optim"]["name"] == "adam" and printed["schedule"]["milestones"] == [170, 200]
    assert not any(tmp_path.iterdir())  # --print-config writes nothing


def test_users_own_config_file_by_path_wins(tmp_path):
    (tmp_path / "default.yaml").write_text("train:\n  epochs: 3\n")
    proc = _train(tmp_path, "--config", "default.yaml", "--print-config")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["train"]["epochs"] == 3
    shipped = _train(tmp_path, "--config", "default", "--print-config")
    assert yaml.safe_load(shipped.stdout)["train"]["epochs"] == load_config("default").train.epochs


def test_unknown_config_name_is_one_line_listing_the_names(tmp_path):
    proc = _train(tmp_path, "--config", "coco_litehrnet18")
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "coco_litehrnet18" in line and all(name in line for name in shipped_config_names())


def test_list_configs_from_any_folder(tmp_path):
    proc = _train(tmp_path, "--list-configs")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == shipped_config_names()
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every name has a description


def test_help_lists_every_flag_with_its_real_default(tmp_path):
    proc = _train(tmp_path, "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    parser = train_cli.build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.option_strings[0] in text
    default = load_config("default")
    assert "--epochs" in text and f"sets train.epochs (default: the config's value, {default.train.epochs} " in text
    assert f"sets optim.lr (default: the config's value, {default.optim.lr!r} " in text
    assert f"sets data.num_workers (default: the config's value, {default.data.num_workers} " in text
    # Every option's help states a default.
    help_lines = [a.help for a in parser._actions if a.option_strings and a.dest not in ("help", "list_configs")]
    formatter = parser._get_formatter()
    assert all("(default" in formatter._get_help_string(a) for a in parser._actions
               if a.option_strings and a.dest not in ("help", "list_configs")), help_lines
