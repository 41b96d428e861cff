"""``tierbook run`` with a stand-in rule compiler, for as long as engine/rules.py is absent.

    python bench/tierbook_run_standin.py PLAYBOOK [tierbook run options]

At the commit measured, engine/playbook.py imports ``engine.rules`` (the rule
language, see docs/decisions/0004-rule-language.md) but the module is not in
the repository, so ``tierbook run`` stops with ModuleNotFoundError. This script
registers a minimal ``engine.rules`` in ``sys.modules`` that compiles a rule's
``when`` with ``polars.sql_expr`` (enough for the benchmark playbooks'
comparisons, IN lists and AND), then runs the real command line: loading and
validating the playbook, the one-pass features, the classifiers, the engine's
own rule evaluation (capacity, hit policy, actions, cut, summary) and the
atomic writes are all tierbook's code. Only parsing ``when`` differs, which the
decision record puts at milliseconds.

If ``engine.rules`` can be imported, the stand-in is not installed and this is
exactly ``tierbook run``.
"""

import sys
import types


def _install_standin() -> None:
    import polars as pl

    class RuleError(Exception):
        pass

    class Compiled:
        def __init__(self, expr):
            self.expr = expr

        def explain_text(self, row):  # pragma: no cover - not used by run
            return ""

    def compile_rule(when, schema, *, labels=None, as_of=None):
        try:
            expr = pl.sql_expr(when)
        except Exception as exc:  # noqa: BLE001
            raise RuleError(str(exc)) from None
        return Compiled(expr.fill_null(False))

    mod = types.ModuleType("engine.rules")
    mod.RuleError, mod.compile_rule = RuleError, compile_rule
    sys.modules["engine.rules"] = mod


def main() -> int:
    try:
        import engine.rules  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "engine.rules":
            raise
        _install_standin()
    from engine.cli import main as cli_main

    return cli_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
