"""engine.playbook.write: the customers file's action columns."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.playbook import write
from engine.playbook.write import with_actions

ACTIONS = ["call", "mail", "visit"]
RULES = ["r1", "r2", "r3"]


def joined(customers: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """The definition: each customer's one action and rule, as text, by a left join on the id."""
    per = actions.select("customer_id", pl.col("action").cast(pl.String),
                         pl.col("rule").cast(pl.String).alias("action_rule"))
    return customers.join(per, on="customer_id", how="left", maintain_order="left")


@settings(settings.get_profile("key"))
@given(st.lists(st.integers(-5, 40), unique=True, max_size=30), st.data(), st.booleans())
def test_one_action_each_equals_the_join(ids, data, text_ids):
    """With sorted ids (as the feature pass writes them) the actions are placed by position, not joined: the same
    table as the join, whatever order the actions come in, some customers without one, string ids too."""
    ids = sorted(str(i).zfill(3) for i in ids) if text_ids else sorted(ids)
    customers = pl.DataFrame({"customer_id": ids, "monetary": [float(i) for i in range(len(ids))]}).sort("customer_id")
    chosen = data.draw(st.permutations(ids)).copy()[:data.draw(st.integers(0, len(ids)))]
    picks = data.draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=len(chosen),
                               max_size=len(chosen)))
    actions = pl.DataFrame({"customer_id": pl.Series(chosen, dtype=customers.schema["customer_id"]),
                            "rule": pl.Series([RULES[r] for r, _ in picks], dtype=pl.Enum(RULES)),
                            "action": pl.Series([ACTIONS[a] for _, a in picks], dtype=pl.Enum(ACTIONS))})
    got = with_actions(customers, actions, one_per_customer=True)
    assert got.equals(joined(customers, actions))
    assert got.schema["action"] == pl.String and got.schema["action_rule"] == pl.String


def test_placed_by_position_only_when_that_is_exact():
    """The positions are used for sorted, non-null ids with Enum rule and action columns; a customer given two
    actions is refused as the join refuses it, an action of an id not in the table is left out as the join
    leaves it out, and unsorted ids are joined."""
    customers = pl.DataFrame({"customer_id": [1, 4, 6, 9], "monetary": [1.0, 2.0, 3.0, 4.0]}).sort("customer_id")
    actions = pl.DataFrame({"customer_id": [9, 1], "rule": pl.Series(["r2", "r1"], dtype=pl.Enum(RULES)),
                            "action": pl.Series(["mail", "call"], dtype=pl.Enum(ACTIONS))})
    assert write._by_position(customers, actions) is not None
    assert with_actions(customers, actions, one_per_customer=True).rows() == [
        (1, 1.0, "call", "r1"), (4, 2.0, None, None), (6, 3.0, None, None), (9, 4.0, "mail", "r2")]
    twice = pl.concat([actions, actions.head(1)])
    assert write._by_position(customers, twice) is None
    with pytest.raises(pl.exceptions.ComputeError):
        with_actions(customers, twice, one_per_customer=True)
    stranger = pl.concat([actions, actions.head(1).with_columns(pl.lit(5, pl.Int64).alias("customer_id"))])
    assert write._by_position(customers, stranger) is None
    assert with_actions(customers, stranger, one_per_customer=True).equals(joined(customers, stranger))
    doubled = pl.concat([customers, customers.tail(1)]).sort("customer_id")  # the join refuses it (1:1)
    assert write._by_position(doubled, actions) is None
    unsorted = customers.reverse()
    assert write._by_position(unsorted, actions) is None
    assert with_actions(unsorted, actions, one_per_customer=True).equals(joined(unsorted, actions))


def _actions(ids, *, dtype=pl.Int64, kinds=True) -> pl.DataFrame:
    """Actions of rule r1 (call) for ``ids``; Enum rule and action columns as evaluate_rules builds them, or text."""
    return pl.DataFrame({"customer_id": pl.Series(ids, dtype=dtype),
                         "rule": pl.Series(["r1"] * len(ids), dtype=pl.Enum(RULES) if kinds else pl.String),
                         "action": pl.Series(["call"] * len(ids), dtype=pl.Enum(ACTIONS) if kinds else pl.String)})


def test_whatever_the_positions_cannot_place_is_joined():
    """Each case the placement by position does not cover gives exactly the join's table (or its refusal): text
    rule and action columns (names that read as numbers too), ids of another integer type, an action without an
    id or of an id before, between or after the customers' (left out), no action at all, a customer without an
    id, a customers table that has action columns already (the join's suffix), and unsorted ids
    with a customer twice (refused)."""
    customers = pl.DataFrame({"customer_id": [1, 4, 6, 9], "monetary": [1.0, 2.0, 3.0, 4.0]}).sort("customer_id")
    no_id = pl.DataFrame({"customer_id": [None, 1, 4]}, schema={"customer_id": pl.Int64}).sort("customer_id")
    digits = pl.DataFrame({"customer_id": [9, 1], "rule": ["1", "2"], "action": ["3", "4"]})  # text, not Enum
    cases = [(customers, _actions([9, 1], kinds=False)), (customers, digits),
             (customers, _actions([9, 1], dtype=pl.Int32)), (customers, _actions([None, 9])),
             (customers, _actions([0, 9])), (customers, _actions([5, 9])), (customers, _actions([10, 1])),
             (customers, _actions([])), (no_id, _actions([1])),
             (customers.with_columns(pl.lit("x").alias("action")), _actions([9, 1]))]
    for people, actions in cases:
        assert with_actions(people, actions, one_per_customer=True).equals(joined(people, actions)), (people, actions)
    twice = pl.DataFrame({"customer_id": [1, 4, 1, 6], "monetary": [1.0, 2.0, 3.0, 4.0]})
    assert not twice["customer_id"].flags["SORTED_ASC"]
    with pytest.raises(pl.exceptions.ComputeError):
        with_actions(twice, _actions([1]), one_per_customer=True)


@settings(settings.get_profile("key"))
@given(st.sampled_from([(pl.Int8, -128, 127), (pl.UInt8, 0, 255), (pl.Int32, -2**31, 2**31 - 1),
                        (pl.UInt32, 0, 2**32 - 1), (pl.Int64, -2**63, 2**63 - 1), (pl.UInt64, 0, 2**64 - 1)]),
       st.integers(0, 3), st.data())
def test_rows_found_by_an_id_indexed_table_are_the_binary_searchs(kind, spread, data):
    """Integer ids not spread far beyond their number are found through a table indexed by the id, others by binary
    search: the same rows where an id is there, and never a row holding another id where it is not (the caller's
    check then refuses the placement); the placement equals the join either way, at the ends of each integer type."""
    dtype, low, high = kind
    width = [40, 300, 2**20, 2**40][spread]
    start = data.draw(st.integers(low, max(low, high - min(width, high - low))))
    ids = sorted(data.draw(st.sets(st.integers(start, min(high, start + width)), min_size=1, max_size=40)))
    near = [i for i in (ids[0] - 1, ids[-1] + 1, *(i + 1 for i in ids)) if low <= i <= high and i not in ids]
    wanted = data.draw(st.lists(st.sampled_from(ids), unique=True)) + data.draw(st.lists(st.sampled_from(near or ids),
                                                                                        max_size=2, unique=True))
    ids_s, wanted_s = pl.Series(ids, dtype=dtype), pl.Series(wanted, dtype=dtype)
    rows = write._rows_of(ids_s, wanted_s)
    if rows is not None:
        for w, r in zip(wanted, rows.to_list()):
            if w in ids:
                assert r == ids.index(w)
            elif spread < 2 and dtype != pl.UInt64:  # the table: no row for an id it does not hold
                assert r is None
            else:
                assert r is None or r >= len(ids) or ids[r] != w
    customers = pl.DataFrame({"customer_id": ids_s, "monetary": [1.0] * len(ids)}).sort("customer_id")
    unique = list(dict.fromkeys(wanted))
    actions = _actions(unique, dtype=dtype)
    assert with_actions(customers, actions, one_per_customer=True).equals(joined(customers, actions))
    if unique and all(w in ids for w in unique):
        assert write._by_position(customers, actions) is not None


def test_the_id_indexed_table_is_taken_by_the_span_of_the_ids_not_their_size():
    """Ids far from 0 but close together take the table (no row for an id between them); ids spread wider than
    4x their number plus 1024, the binary search (the insertion row)."""
    near = pl.Series([10**12, 10**12 + 2, 10**12 + 500])
    assert write._rows_of(near, pl.Series([10**12 + 1, 10**12 + 500])).to_list() == [None, 2]
    wide = pl.Series([-(10**6), 0, 10**6])
    assert write._rows_of(wide, pl.Series([1, 10**6])).to_list() == [2, 2]



def test_the_id_indexed_table_takes_more_than_1024_ids_spread_by_up_to_4x_their_number():
    """The table's limit grows with the ids' number: 2,047 ids spanning 0..2,047 (beyond the 1,024 any number of
    ids may span, within 4x their number) take the table, so an id missing between them has no row; the binary
    search would give the row after it."""
    ids = pl.Series([i for i in range(2048) if i != 1000])
    assert write._rows_of(ids, pl.Series([1000, 999, 1001, 2047])).to_list() == [None, 999, 1000, 2046]
    assert ids.search_sorted(pl.Series([1000])).to_list() == [1000]  # what the binary search gives instead
    sparse = pl.Series(range(0, 2048 * 5, 5))  # the same number of ids spread over 5x their number: the search
    assert write._rows_of(sparse, pl.Series([6, 10])).to_list() == [2, 2]
    # the limit itself: a span of 4x the ids' number plus 1024 takes the search, one less the table
    assert write._rows_of(pl.Series([0, 4 * 2 + 1024]), pl.Series([1])).to_list() == [1]
    assert write._rows_of(pl.Series([0, 4 * 2 + 1023]), pl.Series([1])).to_list() == [None]


# ------------------------------------------------------------------ actions.csv rendered once per rule
TEXTS = ["call", "=cmd|' /C calc'!A0", "a, b", 'say "hi"', "two\nlines", "+1", "-x", "@sum", " ok", "é"]


def actions_of(ids, rules_of, rules):
    """An actions frame as evaluate_rules builds it: each action's columns are its rule's (``rules``: one tuple of
    rule, action, due day, priority and parameters per rule), and each action's rule position."""
    names = list(dict.fromkeys(r[0] for r in rules))
    kinds = list(dict.fromkeys(r[1] for r in rules))
    params = list(dict.fromkeys(r[4] for r in rules))
    frame = pl.DataFrame({
        "customer_id": pl.Series(ids, dtype=pl.Int64),
        "rule": pl.Series([rules[i][0] for i in rules_of], dtype=pl.Enum(names)),
        "action": pl.Series([rules[i][1] for i in rules_of], dtype=pl.Enum(kinds)),
        "due_date": pl.Series([rules[i][2] for i in rules_of], dtype=pl.Int32).cast(pl.Date),
        "priority": pl.Series([rules[i][3] for i in rules_of], dtype=pl.Int64),
        "parameters": pl.Series([rules[i][4] for i in rules_of], dtype=pl.Enum(params)),
        "note": pl.Series([rules[i][1] for i in rules_of], dtype=pl.String),
    })
    return frame, pl.Series(rules_of, dtype=pl.Int32)


rule_rows = st.lists(st.tuples(st.sampled_from(TEXTS), st.sampled_from(TEXTS), st.integers(-800_000, 2_900_000),
                               st.integers(-3, 3), st.sampled_from(TEXTS)), min_size=1, max_size=5)


@settings(settings.get_profile("key"))
@given(rule_rows, st.data())
def test_actions_csv_by_rule_is_the_plain_writer_byte_for_byte(tmp_path_factory, rules, data):
    """Each rule's columns rendered once and each line put together from the id and its rule's text give the very
    bytes of the plain writer: quotes, commas, line breaks and formula-like text, dates from year -220 to 9900."""
    from engine.io import write_frame

    n = data.draw(st.integers(1, 40))
    ids = data.draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n))
    rules_of = data.draw(st.lists(st.integers(0, len(rules) - 1), min_size=n, max_size=n))
    actions, positions = actions_of(ids, rules_of, rules)
    d = tmp_path_factory.mktemp("csv")
    write_frame(actions, d / "plain.csv")
    assert write._actions_csv_by_rule(actions, positions, d / "by_rule.csv")
    assert (d / "by_rule.csv").read_bytes() == (d / "plain.csv").read_bytes()


def test_actions_csv_by_rule_only_where_exact(tmp_path):
    """Nothing written (the plain writer does it) when an action does not hold its rule's values, when the ids are
    text or not the first column, or a column is a float (-0.0 equals 0.0 but is written otherwise), when a
    position is missing or negative, when there is no action (a header alone), or the output is not CSV; the file
    the run writes is the plain writer's either way."""
    from engine.io import write_frame

    rules = [("r1", "call", 10, 1, "{}"), ("r2", "a, b", 11, 2, '{"x": 1}')]
    actions, positions = actions_of([5, 3, 9], [0, 1, 0], rules)
    wrong = pl.Series([0, 0, 0], dtype=pl.Int32)  # the second action is r2's, not r1's
    text_ids = actions.with_columns(pl.col("customer_id").cast(pl.String))
    floats = actions.with_columns(pl.Series("score", [0.0, 1.0, -0.0]))
    id_last = actions.select(pl.exclude("customer_id"), "customer_id")
    negative = pl.Series([-1, 0, -1], dtype=pl.Int32)
    null = pl.Series([0, None, 0], dtype=pl.Int32)
    for frame, pos, name in ((actions, wrong, "a.csv"), (text_ids, positions, "b.csv"), (floats, positions, "c.csv"),
                             (id_last, positions, "h.csv"), (actions, negative, "i.csv"), (actions, null, "j.csv"),
                             (actions.head(0), positions.head(0), "k.csv"),
                             (actions, positions, "d.parquet"), (actions, None, "e.csv"),
                             (actions, positions.head(2), "f.csv")):
        assert not write._actions_csv_by_rule(frame, pos, tmp_path / name), name
        assert not (tmp_path / name).exists(), name
        write._write_actions(frame, pos, tmp_path / name)
        write_frame(frame, tmp_path / f"plain-{name}")
        if name.endswith(".csv"):
            assert (tmp_path / name).read_bytes() == (tmp_path / f"plain-{name}").read_bytes(), name
    assert write._actions_csv_by_rule(actions, positions, tmp_path / "g.csv")


def test_a_run_renders_actions_csv_by_rule_and_times_its_write(tmp_path, monkeypatch):
    """write_outputs hands the rules' positions to the by-rule rendering of actions.csv whenever the actions are
    the rules' own (a run of the bundled playbook, on whole-number ids, takes that path and writes the plain
    writer's bytes), and the manifest's ``write_outputs`` duration is the write's own, in seconds to the
    millisecond. A result without the rules' positions is written by the plain writer."""
    import dataclasses
    import json
    import time
    from pathlib import Path

    from engine.io import write_frame
    from engine.playbook import load_playbook
    from engine.registry import get_registry

    root = Path(__file__).resolve().parents[3]
    sample = pl.read_csv(root / "engine" / "sample" / "online_retail_sample.csv", infer_schema=False)
    sample.with_columns(pl.col("CustomerID").cast(pl.Int64)).write_parquet(tmp_path / "tx.parquet")  # whole-number ids
    path = tmp_path / "p.yaml"
    path.write_text((root / "playbooks" / "abc-resource-allocation.yaml").read_text()
                    .replace("../engine/sample/online_retail_sample.csv", str(tmp_path / "tx.parquet")))
    pb = load_playbook(path, output_dir=tmp_path / "out", registry=get_registry(allow=["abc", "adc", "rfm"], strict=True))
    real, taken, seen = write._actions_csv_by_rule, [], {}

    def by_rule(actions, positions, to):
        taken.append(real(actions, positions, to))
        seen["actions"] = actions
        return taken[-1]

    monkeypatch.setattr(write, "_actions_csv_by_rule", by_rule)
    started = time.perf_counter()
    result = pb.run()
    elapsed = time.perf_counter() - started
    assert taken == [True]
    write_frame(seen["actions"], tmp_path / "plain.csv")
    assert (pb.output_dir / "actions.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    seconds = json.loads((pb.output_dir / "summary.json").read_text())["manifest"]["durations_s"]["write_outputs"]
    assert 0 <= seconds <= elapsed and round(seconds, 3) == seconds
    # A Result built without its rules' result (the dataclass allows it) is written too, by the plain writer.
    pb.write(dataclasses.replace(result, rule_result=None))
    assert taken == [True, False]
    assert (pb.output_dir / "actions.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_the_reading_back_runs_beside_the_writing_and_the_summary_waits_for_it(tmp_path, monkeypatch):
    """write_outputs checks the previous outputs, hashes each new file and reads the customers file back on a thread
    of its own while the next file is written; the summary (the manifest's hashes, the reconciliation) waits for
    all of it. A failure there fails the write as it did in the main thread: the previous set unchanged, nothing
    left running."""
    import hashlib
    import json
    import threading
    from pathlib import Path

    from engine.errors import DataError
    from engine.playbook import load_playbook
    from engine.playbook import manifest as manifest_module
    from engine.registry import get_registry

    root = Path(__file__).resolve().parents[3]
    path = tmp_path / "p.yaml"
    path.write_text((root / "playbooks" / "abc-resource-allocation.yaml").read_text()
                    .replace("../engine/sample", f"{root}/engine/sample"))
    pb = load_playbook(path, output_dir=tmp_path / "out", registry=get_registry(allow=["abc", "adc", "rfm"], strict=True))
    pb.run()
    log: list[tuple[str, str]] = []
    real_hashes, real_check, real_write = manifest_module.output_hashes, manifest_module.check_replace, write._write_frame

    def hashes(directory, names):
        log.append(("hash " + names[0], threading.current_thread().name.split("_")[0]))
        return real_hashes(directory, names)

    def check(*args):
        log.append(("check", threading.current_thread().name.split("_")[0]))
        return real_check(*args)

    def slow_write(frame, to):  # cut.csv is written after the customers file is hashed and read back
        if to.name == "cut.csv":
            for _ in range(1000):  # at most 10 s
                if any(what == "hash customers.parquet" for what, _ in log):
                    break
                threading.Event().wait(0.01)
        log.append(("write " + to.name, threading.current_thread().name))
        real_write(frame, to)

    monkeypatch.setattr(manifest_module, "output_hashes", hashes)
    monkeypatch.setattr(manifest_module, "check_replace", check)
    monkeypatch.setattr(write, "_write_frame", slow_write)
    result = pb.with_params({"abc.a": 0.6}).run()
    out = pb.output_dir
    summary = json.loads((out / "summary.json").read_text())
    written = [n for n in ("customers.parquet", "actions.csv", "cut.csv", "control.csv")]
    assert summary["manifest"]["outputs"] == {n: {"size": (out / n).stat().st_size,
                                                  "sha256": hashlib.sha256((out / n).read_bytes()).hexdigest()}
                                              for n in written}
    assert summary["reconciliation"]["ok"] and summary["reconciliation"]["customers_out"] == result.customers.height
    assert [who for what, who in log if what.startswith(("hash", "check"))] == ["tierbook-check"] * 5
    assert log.index(("hash customers.parquet", "tierbook-check")) < log.index(("write cut.csv", "MainThread"))
    assert log[0][0] == "check"

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def failing(directory, names):
        if names == ["cut.csv"]:
            raise OSError(5, "Input/output error")
        return real_hashes(directory, names)

    monkeypatch.setattr(manifest_module, "output_hashes", failing)
    with pytest.raises(DataError, match="summary.json: cannot write the outputs: Input/output error; the previous"):
        pb.with_params({"abc.a": 0.7}).run()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [t for t in threading.enumerate() if t.name.startswith("tierbook-check")]
