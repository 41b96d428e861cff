"""Copies of the bundled playbooks for tests: the sample read by absolute path, text replaced as asked."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABC = ROOT / "playbooks" / "abc-resource-allocation.yaml"


def copy_playbook(tmp_path: Path, source: Path = ABC, *, name: str = "pb.yaml", **replace: str) -> Path:
    """``source`` copied to ``tmp_path / name``, each ``old=new`` of ``replace`` applied (``old`` must be there)."""
    text = source.read_text().replace("../engine/sample", f"{ROOT}/engine/sample")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path
