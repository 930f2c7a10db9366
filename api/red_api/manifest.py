"""Reading a Federation manifest from a file as `kubectl apply -f` would take it, with every size bounded.

The document this returns is the one that is validated, stored in the run folder and sent to the driver: the
manifest is parsed once. A file is read up to MAX_FILE_BYTES; YAML nested deeper than MAX_DEPTH, or whose
aliases would expand to more than MAX_NODES values (an "alias bomb"), is refused while it is composed,
before anything is built from it, so no manifest can hang or overflow the parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from red_api.kinds import SpecError
from red_api.spec import KIND, Federation, parse_manifest

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000


class _ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping, as kubectl does (otherwise the later
    value wins without a word, and a pasted-in second `count:` silently changes the run), and bounding depth
    and alias expansion while composing."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded(node, {}) > MAX_NODES:
            raise yaml.composer.ComposerError(
                problem=f"expands to more than {MAX_NODES} values (aliases repeat what they point at)",
                problem_mark=node.start_mark,
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key, which PyYAML itself reports
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r} (first at line {first + 1}); kubectl refuses it too",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _expanded(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values a node stands for once every alias is expanded (a shared node counts each time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once; PyYAML makes it a cycle, which JSON refuses later
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded(k, sizes) + _expanded(v, sizes) for k, v in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, MAX_NODES + 1)
    return sizes[id(node)]


def load_documents(text: str, source: str) -> list[Any]:
    """Every document of a YAML text, strictly and within bounds; a SpecError naming `source` and the line."""
    try:
        return [d for d in yaml.load_all(text, Loader=_ManifestLoader) if d is not None]
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = " ".join(filter(None, [err.problem, f"({err.context})" if err.context else ""]))
        raise SpecError([f"{source}: {where}{reason}"]) from None
    except yaml.YAMLError as err:  # the reader's: a character YAML does not allow
        raise SpecError([f"{source}: not YAML: {err}"]) from None
    except RecursionError:
        raise SpecError([f"{source}: nested too deeply"]) from None


def read_manifest(path: str) -> tuple[dict[str, Any], Federation]:
    """The one Federation in a YAML file: the document as read, and the Federation it validates to.

    Every way a file can be unreadable as a manifest (too large, YAML syntax, a duplicate key, not UTF-8, two
    Federations) is a SpecError naming the file and line; a missing file is an OSError.
    """
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise SpecError([f"{path}: larger than {MAX_FILE_BYTES} bytes; a Federation manifest is far smaller"])
    return parse_text(data, path)


def parse_text(data: bytes, path: str) -> tuple[dict[str, Any], Federation]:
    """read_manifest's work on a file's bytes, read from wherever `path` names."""
    if len(data) > MAX_FILE_BYTES:
        raise SpecError([f"{path}: larger than {MAX_FILE_BYTES} bytes; a Federation manifest is far smaller"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError([f"{path}: not UTF-8 text: {err}"]) from None
    docs = load_documents(text, path)
    feds = [d for d in docs if isinstance(d, Mapping) and d.get("kind") == KIND]
    if not feds:
        raise SpecError([f"{path}: no document of kind {KIND} found"])
    if len(feds) > 1:
        raise SpecError(
            [f"{path}: holds {len(feds)} Federation documents; `red run` takes one: put each in a file of its own"]
        )
    return feds[0], parse_manifest(feds[0])


def load_manifest(path: str) -> Federation:
    """The one Federation in a YAML file, validated (read_manifest, without the document)."""
    return read_manifest(path)[1]
