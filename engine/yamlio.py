"""Safe YAML loading that remembers where every value came from.

Playbooks are loaded with PyYAML's ``SafeLoader`` (no Python tags, no code), but
each mapping and list remembers the line of each key and value, so validation
errors can say ``vip.yaml:12``. Duplicate keys, which plain YAML loading
silently resolves to the last one, are an error here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import PlaybookError, Problem

__all__ = ["MarkedDict", "MarkedList", "load_marked", "MAX_NODES", "MAX_CHARS"]

#: The most values a playbook may hold once its aliases are expanded. Aliases
#: are shared, not copied, when loading, but anything that walks the result
#: (validation messages, JSON summaries) would expand them: a few lines of
#: nested aliases ("billion laughs") would otherwise stand for billions of values.
MAX_NODES = 100_000
#: The most characters of text a playbook may hold once its aliases are expanded: one long value
#: aliased many times (a 10 KB text aliased 1,000 times in a rule's params) would otherwise be
#: written into every action row (a 13 KB playbook made a 2.48 GB actions.csv).
MAX_CHARS = 1_000_000


class MarkedDict(dict):
    """A dict with ``line`` (of the mapping) and ``key_line(k)`` / ``value_line(k)`` (1-based)."""

    line: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))


class MarkedList(list):
    """A list with ``line`` and ``item_line(i)`` (1-based)."""

    line: int = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    out = MarkedDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {out.key_lines[key]})", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
        out.value_lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> MarkedList:
    out = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


def _refuse_tag(loader: _Loader, node: yaml.Node):
    """Every tag SafeLoader does not know (``!!python/...``, ``!include``) is refused here, with its mark."""
    raise yaml.constructor.ConstructorError(
        None, None, f"the tag {node.tag!r} is not allowed (playbooks are plain data)", node.start_mark)


#: The most digits of a whole number in a playbook (Python refuses to read more than 4,300; no
#: setting needs more than a few).
MAX_DIGITS = 100


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    digits = sum(ch.isdigit() for ch in str(node.value))
    if digits > MAX_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"a whole number of {digits:,} digits; at most {MAX_DIGITS} are accepted", node.start_mark)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """A value that looks like a date but is none (``2011-13-01``) is a problem at its line, not a crash."""
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.value!r} is not a date ({exc})", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor(None, _refuse_tag)  # instead of rewording PyYAML's message after the fact


def _expanded_size(root: yaml.Node, limit: int, chars_limit: int = MAX_CHARS) -> tuple[int, int]:
    """How many nodes and characters of text ``root`` stands for with every alias expanded.

    Counting stops past ``limit`` nodes or ``chars_limit`` characters.
    """
    sizes: dict[int, int] = {}
    chars: dict[int, int] = {}
    visiting: set[int] = set()  # a recursive alias counts once
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            sizes[id(node)] = 1
            chars[id(node)] = len(str(node.value))
            continue
        if children_done:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes.get(id(c), 1) for c in children))
            chars[id(node)] = min(chars_limit + 1, sum(chars.get(id(c), 0) for c in children))
        elif id(node) not in visiting:
            visiting.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes and id(c) not in visiting)
    return sizes.get(id(root), 1), chars.get(id(root), 0)


def _load(text: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        nodes, chars = _expanded_size(node, MAX_NODES, MAX_CHARS)
        if nodes > MAX_NODES:
            mark = node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"the document stands for more than {MAX_NODES:,} values once its aliases (*name) are "
                            f"expanded; a playbook needs far fewer (an alias bomb?)", mark)
        if chars > MAX_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document stands for more than {MAX_CHARS:,} characters of text once its aliases "
                            f"(*name) are expanded; a playbook needs far fewer (an alias bomb?)", node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_marked(path: Path, text: str | None = None) -> Any:
    """Load ``path`` safely; a syntax error or a tag becomes a :class:`PlaybookError` with ``file:line``."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PlaybookError([f"{path}: no such playbook"]) from None
        except IsADirectoryError:
            raise PlaybookError([f"{path}: is a directory, expected a playbook file"]) from None
        except UnicodeDecodeError as exc:
            raise PlaybookError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
        except OSError as exc:  # permission denied, a name too long ...
            raise PlaybookError([f"{str(path)[:200]}: cannot read the playbook: {exc.strerror}"]) from None
    try:
        return _load(text)  # _Loader derives from SafeLoader: no Python tags
    except RecursionError:
        raise PlaybookError([Problem(path, 1, "YAML syntax: the document is nested too deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise PlaybookError([Problem(path, line, f"YAML syntax: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([Problem(path, 1, f"YAML syntax: {exc}")]) from None
