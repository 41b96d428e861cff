"""Print docs/bad-input.md, the table of the bad-input corpus (tests/engine/bad_input/cases).

    python tools/bad_input_table.py > docs/bad-input.md

tests/engine/test_bad_input.py checks that the file is current, so the table
never drifts from the cases the tests run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "engine" / "bad_input" / "cases"
SECTIONS = {
    "data": "Data files",
    "cli": "Command-line arguments",
    "playbook": "Playbooks (beyond the malformed-playbook corpus)",
    "plugin": "Plugins that misbehave",
}

HEADER = """# Bad input: what tierbook says

Generated from the corpus in `tests/engine/bad_input/cases/` by `python tools/bad_input_table.py >
docs/bad-input.md`; a test fails when this file is not current. Each case is one YAML file: the
files it creates, the command, the exit code and the message. Every failing case prints exactly
one line, `tierbook: error: <message>` (the message below is a part of that line), prints no
traceback and writes nothing: no output file, no temporary file. Every user error exits with
code 2. Cases with exit code 0 are inputs that look wrong but are accepted on purpose; the
"message" column then says what tierbook reports instead.

Decisions recorded by the corpus:

- **UTF-8 with a byte-order mark** is read as if the mark were absent. Other encodings are
  refused with the line and byte of the first non-UTF-8 byte (Latin-1, Windows-1252) or at
  once (UTF-16); save the file as UTF-8.
- **A short row** (fewer fields than the header) has empty trailing values: it is an
  unusable row, counted and written to `--rejects`, like any row with an empty customer id,
  date or amount. **A long row** (more fields) or an unclosed quote stops the run with its line.
- **Dates with a time-zone offset** (`2024-01-02T23:30:00-05:00`) count on the calendar day as
  written (the offset is dropped, not converted to UTC); a column mixing times with and without
  an offset stops the run, naming one row of each.
- **Semicolons** separate fields when the header has no comma but has semicolons (noted);
  `--delimiter` chooses any one character. A **decimal comma** (`12,50`) needs `--decimal-comma`
  (the message says so); with it, `1.5` is refused rather than read as 15.
- **Day and month first** (`12/01/2010`, `01.02.2011`, `1-2-2011`): the order is never guessed.
  A first field above 12 anywhere in the column proves day-first, a second field above 12
  proves month-first (the report notes which and why); a column where no value tells, or
  where values prove both orders, stops the run and asks for `--date-format`. Two-digit years
  need `--date-format` too.
- **Customer ids** from CSV are text: `007` and `7` are two customers. Float ids (Parquet,
  NDJSON, pandas frames) are normalised before grouping: `-0.0` is `0.0`, and NaN, pandas'
  missing value, is an empty id. A quoted empty field `""` is empty, like an unquoted one. NDJSON ids that are
  numbers in some records and strings in others are read as text too.
- **Excel** cells are read as text and parsed like CSV, so a cell `n/a` in the amount column
  stops the run (type inference would have turned it into an empty cell); a workbook with
  several sheets needs `--sheet`.
- **Amounts** must be finite and at most 10^14 in size (they are summed exactly as integers of
  1/10,000, in Int128 when Int64 could wrap). **The amount has one source**: an `amount` column
  (mapped or named so) with a mapped `quantity` or `unit_price` is refused, naming both; a
  canonical column mapped twice to two columns is refused; a playbook key given twice is a
  YAML error with its line.
- **Plugins** run under a time limit (`TIERBOOK_PLUGIN_TIMEOUT`, default 60 s, 0 = none) for
  their import, registration hooks and `expressions()`. A failing plugin is named with its
  package and version (or its module when it was named with `--plugin`);
  `--skip-failing-plugins` (classify, describe, run) goes on without it, leaves its columns
  empty and says so on stderr and in `summary.json` (`skipped_plugins`).
"""


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _command(args: list) -> str:
    return "`tierbook " + " ".join(str(a) for a in args) + "`"


def render() -> str:
    rows: dict[str, list[str]] = {key: [] for key in SECTIONS}
    for path in sorted(CASES.glob("*.yaml")):
        case = yaml.safe_load(path.read_text(encoding="utf-8"))
        category = path.stem.split("-")[0]
        if case["exit"] == 0:
            said = case.get("stderr") or case.get("stdout") or "(classified)"
            outcome = f"accepted; reports `{_cell(said)}`"
        else:
            outcome = f"`{_cell(case['message'])}`"
        rows[category].append(f"| [{path.stem}](../tests/engine/bad_input/cases/{path.name}) | {_cell(case['about'])} "
                              f"| {_cell(_command(case['args']))} | {case['exit']} | {outcome} |")
    out = [HEADER]
    total = sum(len(r) for r in rows.values())
    out.append(f"{total} cases: " + ", ".join(f"{len(rows[k])} {v.split(' (')[0].lower()}"
                                               for k, v in SECTIONS.items()) + ".\n")
    for key, title in SECTIONS.items():
        out.append(f"## {title}\n")
        out.append("| case | input | command | exit | message |")
        out.append("| --- | --- | --- | --- | --- |")
        out.extend(rows[key])
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
