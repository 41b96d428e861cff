"""Saving tuned parameters back into the playbook file, comments and key order kept."""

from __future__ import annotations

import difflib
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from .model import Playbook


def save_params(pb: Playbook, path: str | Path | None = None) -> str:
    """Write the current parameters into the playbook file, keeping comments and key order.

    Only parameter values that differ from the file are touched. Returns a
    unified diff of the change ("" when nothing changed).
    """
    from ruamel.yaml import YAML

    from ..io import atomic_write_text

    target = Path(path) if path is not None else pb.path
    source_text = pb.path.read_text(encoding="utf-8")
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    # keep the author's list indentation ("  - name:" under "rules:"), so the diff is only the values
    from ruamel.yaml.util import load_yaml_guess_indent

    _, seq_indent, dash_offset = load_yaml_guess_indent(source_text)
    rt.indent(mapping=2, sequence=seq_indent or 4, offset=dash_offset if dash_offset is not None else 2)
    doc = rt.load(source_text)
    classifiers = doc["classifiers"]
    for name, values in pb.classifier_params.items():
        if classifiers.get(name) is None:
            classifiers[name] = {}
        node = classifiers[name]
        for key, value in values.items():
            if key not in node or node[key] != value:
                node[key] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    new_text = buf.getvalue()
    old_text = target.read_text(encoding="utf-8") if target.exists() else ""
    diff = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                        fromfile=str(target), tofile=str(target)))
    if new_text != old_text:
        atomic_write_text(new_text, target)
    return diff
