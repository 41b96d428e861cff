"""The run manifest in ``summary.json``: what ran, on what, with which parameters, how long; and the check
that a run may replace the outputs already in its output directory.

The data's content fingerprint is *sampled*: SHA-256 over the file's size, its first MiB and its last MiB.
It costs the same for a 1 KB file as for a 50 GB one (two reads of 1 MiB), where a streaming hash would read
the whole file a second time after the feature pass has read it. It changes when the file
is replaced, appended to, truncated or edited in its first or last MiB, which is how transaction exports
change; an edit in the middle that keeps the size is not seen by it, and the manifest's row count and
modification time are beside it for that. A file of up to 2 MiB is hashed whole. The outputs themselves are
hashed whole (SHA-256): they are what the manifest vouches for, and a later run compares them.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, option

if TYPE_CHECKING:  # for annotations only (the module is above this one)
    from ..registry import Registry

#: How much of each end of a data file the fingerprint reads.
BLOCK = 1 << 20
FINGERPRINT_METHOD = "sha256 of the size, the first 1 MiB and the last 1 MiB (the whole file up to 2 MiB)"


def sha256_file(path: Path) -> str:
    """SHA-256 of a whole file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """The sampled content fingerprint of a data file (see the module's docstring)."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}\n".encode())
    with open(path, "rb") as fh:
        if size <= 2 * BLOCK:
            h.update(fh.read())
        else:
            h.update(fh.read(BLOCK))
            fh.seek(size - BLOCK)
            h.update(fh.read(BLOCK))
    return h.hexdigest()


def _files_of(source: Path) -> list[Path]:
    """The files a data source is: the file, every file under a directory, or a glob's matches."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    return sorted(Path(p) for p in glob.glob(str(source)) if Path(p).is_file())


def describe_source(source: Path | str, rows: int | None) -> dict[str, Any]:
    """Path, size, modification time, rows and fingerprint of a data source (several files: their total size,
    the latest time, and one fingerprint over each file's name and fingerprint)."""
    files = _files_of(Path(source))
    stats = [f.stat() for f in files]
    if len(files) == 1:
        print_ = fingerprint(files[0])
    else:
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.relative_to(source) if Path(source).is_dir() else f}\n{fingerprint(f)}\n".encode())
        print_ = h.hexdigest()
    latest = max((s.st_mtime for s in stats), default=None)
    out = {
        "path": str(source),
        "size": sum(s.st_size for s in stats),
        "mtime": None if latest is None else dt.datetime.fromtimestamp(latest, dt.timezone.utc).isoformat(),
        "rows": rows,
        "fingerprint": print_,
    }
    if len(files) != 1:
        out["files"] = len(files)
    return out


def plugin_versions(registry: Registry) -> list[dict[str, Any]]:
    """Every loaded plugin: name, package, version, how it was loaded, its classifiers."""
    out = []
    for name, info in sorted(registry.plugins.items()):
        out.append({"name": name, "package": info.package, "version": info.version, "source": info.source,
                    **({"path": info.path} if info.path else {}),
                    "classifiers": sorted(c for c, owner in registry.owners.items() if owner.name == name)})
    return out


def _version(distribution: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return None


def build_manifest(pb: Any, result: Any) -> dict[str, Any]:
    """The manifest of a run, without its ``outputs`` (added by the write, which hashes the written files)."""
    import polars as pl

    prov = dict(getattr(result, "provenance", None) or {})
    data = pb.data
    sources = {"transactions": describe_source(data["transactions"], result.report.rows)}
    if data.get("customers"):
        table = pb.customer_table
        sources["customers"] = describe_source(data["customers"], None if table is None else table.height)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()
                if not k.startswith("_") and k not in ("transactions", "customers")}
    return {
        "tierbook": _version("tierbook"),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "plugins": plugin_versions(pb.registry),
        "playbook": {"path": str(Path(pb.path).resolve()), "name": pb.name,
                     "sha256": getattr(pb, "sha256", "") or sha256_file(Path(pb.path))},
        "data": sources,
        "fingerprint_method": FINGERPRINT_METHOD,
        "as_of": str(result.as_of),
        "as_of_from": prov.get("as_of_from", "the day after the last transaction"),
        "parameters": {
            "classifiers": {name: dict(values) for name, values in pb.classifiers.items()},
            "overrides": {f"{name}.{k}": v for name, values in getattr(pb, "overrides", {}).items()
                          for k, v in values.items()},
            "hit_policy": pb.hit_policy,
            "engine": pb.engine,
            "data": settings,
            "outputs": {k: str(v) for k, v in pb.outputs.items()},
        },
        "durations_s": dict(prov.get("durations_s", {})),
    }


def output_hashes(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each named file of ``directory``."""
    return {name: {"size": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
            for name in names}


def check_replace(pb: Any, summary_name: str, force: bool) -> None:
    """Refuse (one line, exit 2) to replace outputs that another playbook wrote, or outputs that no longer match
    the manifest of the summary beside them (a listed file of another size or SHA-256; a listed file that is
    gone is not refused, since a later run into the directory retires files it does not write, such as an
    earlier run's snapshot files); ``force`` allows both. Nothing is checked where there is no summary
    yet, or a summary without a manifest (written before manifests were)."""
    if force:
        return
    directory = Path(pb.output_dir)
    summary_path = directory / summary_name
    if not summary_path.exists():
        return
    how = f"nothing was written; {option('force')} replaces them"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{summary_path}: not a tierbook summary ({exc.__class__.__name__}: {exc}), so the outputs "
                        f"beside it cannot be checked; {how}", file=str(summary_path)) from None
    manifest = summary.get("manifest") if isinstance(summary, Mapping) else None
    if manifest is None:
        return
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("playbook"), Mapping) \
            or not isinstance(manifest.get("outputs"), Mapping):
        raise DataError(f"{summary_path}: its manifest is not one tierbook writes (no playbook or outputs); {how}",
                        file=str(summary_path))
    written_by = manifest["playbook"]
    here = str(Path(pb.path).resolve())
    if written_by.get("path") != here:
        raise DataError(f"{directory}: these outputs were written by another playbook, {written_by.get('path')} "
                        f"(name {written_by.get('name')!r}), not {here}; {how}", file=str(summary_path))
    for name, expected in manifest["outputs"].items():
        path = directory / str(name)
        if not path.exists():  # not refused: a later run into the directory may have retired it (snapshot files)
            continue
        size = path.stat().st_size
        if size != expected.get("size"):
            raise DataError(f"{path}: {size:,} bytes, but the manifest of {summary_path.name} says "
                            f"{expected.get('size'):,}: the file was changed after tierbook wrote it; {how}",
                            file=str(path))
        digest = sha256_file(path)
        if digest != expected.get("sha256"):
            raise DataError(f"{path}: its SHA-256 is {digest[:12]}..., but the manifest of {summary_path.name} says "
                            f"{str(expected.get('sha256'))[:12]}...: the file was changed after tierbook wrote it; "
                            f"{how}", file=str(path))
