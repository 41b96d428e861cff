"""The malformed-playbook corpus: one file a case, its expected line and message in its header.

Each case must exit 2 with exactly one line naming ``file:line`` and the
offending value, and write nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CASES = sorted((Path(__file__).parent / "playbooks" / "malformed").glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, str]:
    head = path.read_text().splitlines()[:2]
    line = int(re.fullmatch(r"# expect-line: (\d+)", head[0]).group(1))
    message = re.fullmatch(r"# expect: (.+)", head[1]).group(1)
    return line, message


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_playbook(path: Path, command: str, run_cli, tmp_path):
    line, message = _expectation(path)
    out_dir = tmp_path / "out"
    args = [command, path]
    # --output-dir would replace the output directory a case is about; those cases run as written
    own_dir = re.search(r"^  dir: (.+)$", path.read_text(), re.M)
    if command == "run" and not own_dir:
        args += ["--output-dir", out_dir]
    before = sorted(p for p in path.parent.rglob("*"))
    target = (path.parent / own_dir.group(1)).resolve() if own_dir else None
    target_before = sorted(target.rglob("*")) if target and target.exists() else None
    code, out, err = run_cli(*args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = f"tierbook: error: {path}:{line}: "
    assert lines[0].startswith(prefix), f"expected {prefix!r}, got {lines[0]!r}"
    assert message in lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists()
    assert sorted(p for p in path.parent.rglob("*")) == before
    if target is not None:  # the playbook's own output directory: as it was (absent, or unchanged)
        assert (sorted(target.rglob("*")) if target.exists() else None) == target_before
