"""The tested torch / Triton range (kpfast/versions.py) and what kpfast says outside it."""

import re
from pathlib import Path

import pytest

from kpfast.versions import TESTED, minor, untested

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version, expected", [("2.15.0+cu132", (2, 15)), ("3.9.0", (3, 9)), ("2.16.0a0+git1", (2, 16)),
                                               ("3.10", (3, 10)), ("", ()), (None, ()), ("garbage", ())])
def test_minor(version, expected):
    assert minor(version) == expected


def test_inside_the_range_nothing_is_said():
    assert untested({"torch": TESTED["torch"][1] + ".0", "triton": TESTED["triton"][0] + ".0"}) == []
    assert untested({"torch": TESTED["torch"][0] + ".1+cu130", "triton": None}) == []


def test_a_newer_release_than_the_newest_tested_is_named_with_the_newest():
    (warning,) = untested({"torch": "2.15.0", "triton": "3.10.0"})
    assert warning.startswith("triton 3.10.0 is newer") and f"triton {TESTED['triton'][1]}" in warning
    (warning,) = untested({"torch": "3.0.0", "triton": "3.9.0"})
    assert warning.startswith("torch 3.0.0 is newer")


def test_an_older_release_than_the_oldest_is_refused_in_words():
    (warning,) = untested({"torch": "2.10.1", "triton": "3.6.0"})
    assert warning.startswith("torch 2.10.1 is older") and "upgrade" in warning


def test_the_range_is_the_one_stated_in_pyproject_readme_and_ci():
    """One range, written in four places that users and CI read: they must agree."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    torch_old, torch_new = TESTED["torch"]
    triton_old, triton_new = TESTED["triton"]
    assert f'"torch>={torch_old}"' in pyproject and f'"triton>={triton_old}"' in pyproject
    assert f"torch {torch_old}-{torch_new}" in readme and f"Triton {triton_old}-{triton_new}" in readme
    assert re.search(rf"OLDEST_TORCH=\"?{re.escape(torch_old)}\.", ci)
    assert re.search(rf"OLDEST_TRITON=\"?{re.escape(triton_old)}\.", ci)
