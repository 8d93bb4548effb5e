"""kpfast.data's package interface: lazy exports, and its modules run cleanly as scripts."""

import subprocess
import sys

import pytest

import kpfast.data


@pytest.mark.parametrize("module", ["kpfast.data.coco", "kpfast.data.synthetic"])
def test_data_modules_run_as_scripts_without_runpy_warning(module):
    # runpy warns (and runs a second copy of the module) when the package imported it already.
    result = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "RuntimeWarning" not in result.stderr


def test_every_exported_name_resolves():
    for name in kpfast.data.__all__:
        assert getattr(kpfast.data, name) is not None, name
        assert name in dir(kpfast.data)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        kpfast.data.no_such_name  # noqa: B018
