"""Helpers shared by the fault tests."""


def one_line_error(capsys, *needles) -> str:
    """The single non-empty stderr line (no traceback), checked to contain every needle."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
