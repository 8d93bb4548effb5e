"""The kernel layer runs with torch and numpy alone; the trainer says in one line what is missing.

The trainer's packages are hidden from a subprocess (``sys.modules[name] = None``: import fails and
``importlib.util.find_spec`` reports them absent), as in an environment where kpfast was installed
with ``--no-deps`` next to torch and numpy only. CI does the same for real (.ci/run)."""

import subprocess
import sys
import types

import pytest

from kpfast import _dependencies

HIDE = "import sys\nfor name in {names!r}: sys.modules[name] = None\n"


def _run(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    hide = HIDE.format(names=sorted(_dependencies.TRAINER))
    env_code = hide + code
    return subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"})


def test_the_kernel_layer_imports_and_self_tests_without_the_trainers_packages():
    proc = _run("import kpfast, kpfast.ops, kpfast.nn, kpfast.models, kpfast.info\n"
                "assert not any(sys.modules.get(m) for m in " + repr(sorted(_dependencies.TRAINER)) + ")\n"
                "import torch\n"
                "maps, _ = kpfast.ops.render_heatmaps(torch.tensor([[[3.0, 4.0]]]), size=(8, 8))\n"
                "coords, _ = kpfast.ops.decode_heatmaps(maps, method='dark')\n"
                "assert abs(float(coords[0, 0, 0]) - 3.0) < 0.1\n"
                "model = kpfast.models.build_model('litehrnet_18')\n"
                "sys.exit(kpfast.info.main(['--no-self-test']))\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kpfast._C" in proc.stdout


@pytest.mark.parametrize("command", ["kpfast.train", "kpfast.eval", "kpfast.predict", "kpfast.export",
                                     "kpfast.data.synthetic", "kpfast.data.show_augmentations"])
def test_each_trainer_command_says_in_one_line_what_is_missing(command):
    proc = _run(f"import runpy, sys\nsys.argv = [{command!r}, '--help']\n"
                f"runpy.run_module({command!r}, run_name='__main__', alter_sys=True)\n")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("kpfast: ") and "opencv-python-headless" in lines[0] and "PyYAML" in lines[0]


def test_a_library_import_of_the_trainer_raises_an_import_error_naming_the_packages():
    proc = _run("try:\n    import kpfast.engine.trainer\nexcept ImportError as error:\n"
                "    print(type(error).__name__, error)\nelse:\n    sys.exit('imported')\n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("MissingDependencyError kpfast: ") and "pycocotools" in proc.stdout


def test_require_is_silent_when_everything_is_installed_and_names_the_absent(monkeypatch):
    _dependencies.require("x", {"os": "os-dist"})
    assert _dependencies.missing({"os": "os-dist", "kpfast_no_such_module": "no-such-dist"}) == ["no-such-dist"]
    with pytest.raises(_dependencies.MissingDependencyError, match="no-such-dist"):
        _dependencies.require("kpfast.something", {"kpfast_no_such_module": "no-such-dist"})
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="kpfast.train")
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(SystemExit, match="^kpfast: kpfast.something needs .* no-such-dist"):
        _dependencies.require("kpfast.something", {"kpfast_no_such_module": "no-such-dist"})
