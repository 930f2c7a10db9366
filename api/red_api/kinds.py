"""The vocabulary a Federation is declared in: each kind of field checks a value and describes itself in OpenAPI.

A field is declared once, as a dataclass field whose metadata holds its kind (`api(Int(8, minimum=1))`): the
type, default, bounds, enum and description live there and nowhere else. `Obj.check` is the one generic walker
that parses a plain mapping into the frozen dataclass, reporting every problem at once as "path: value:
reason"; `Kind.openapi()` is what crd.py assembles into the CRD's schema. A rule over several fields of one
object (`Rule`) is declared beside them, with its CEL for the API server and its Python for `red run`.

Every kind is bounded (strings, lists and maps have a maximum size; numbers are finite and within a range),
so that nothing a tenant writes can exhaust the API server's or the operator's memory or recursion.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

INT64_MAX = 2**63 - 1
# The longest excerpt of a value that an error message repeats: a 10 MB string is not printed back whole.
EXCERPT = 120
ABSENT: Any = object()

log = logging.getLogger("red.spec")
_warned: set[str] = set()


def excerpt(value: Any) -> str:
    """repr(value), cut to EXCERPT characters; a value nested too deeply for repr says so."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deeply to show>"
    return text if len(text) <= EXCERPT else f"{text[: EXCERPT - 20]}... ({len(text)} characters)"


def finite_number(value: Any) -> bool:
    """A YAML number that fits a double and is neither NaN nor infinite (`.nan`, `.inf`, 1e400 are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the range of a double
        return False


class SpecError(ValueError):
    """A manifest that cannot run; `problems` holds one "path: value: reason" line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid Federation:\n" + "\n".join(f"  - {p}" for p in problems))


class Checker:
    """Collects problems instead of raising on the first.

    `stored`: the object came from the API server, whose schema already pruned what the CRD does not
    declare. A field this model does not know is then one of a newer CRD than this code (an operator or
    driver mid-upgrade), not a typo: it is ignored with a warning, so a CRD upgraded before the operator
    never turns running Federations invalid (and their compute released).
    """

    def __init__(self, stored: bool = False) -> None:
        self.problems: list[str] = []
        self.stored = stored

    def fail(self, path: str, value: Any, reason: str) -> None:
        self.problems.append(f"{path}: {excerpt(value)}: {reason}")

    def unknown(self, data: Mapping, path: str, known: tuple[str, ...]) -> None:
        # YAML keys need not be strings (`1:`, `~:`), so they are sorted as text.
        for extra in sorted(set(data) - set(known), key=str):
            if self.stored:
                message = f"{path}.{extra}: not known to this version of Red (a newer CRD?): ignored"
                if message not in _warned:
                    _warned.add(message)
                    log.warning(message)
            else:
                self.fail(f"{path}.{extra}", data[extra], f"unknown field (known: {', '.join(known)})")


@dataclass(frozen=True)
class Rule:
    """A rule over the fields of one object, said twice side by side: CEL for the API server (None where CEL
    cannot say it: graph connectivity, per-strategy options) and `check` for the parser. `check` gets the
    parsed object and the raw mapping and returns (value, reason) to report at `field`, or (suffix, value,
    reason) to report at an item of it (`field` + "[2]"), or None."""

    field: str
    message: str
    check: Callable[[Any, Mapping[str, Any]], tuple[Any, str] | None] | None = None  # None: CEL only (the
    # parser's wording for it is another rule's, which says more)
    cel: str | None = None
    required: bool = False  # the CRD's reason FieldValueRequired

    def openapi(self) -> dict[str, Any] | None:
        if self.cel is None:
            return None
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = f".{self.field}"
        if self.required:
            out["reason"] = "FieldValueRequired"
        return out


@dataclass(frozen=True)
class Kind:
    """One field's type and bounds. `default` ABSENT: no default (the field is optional, None when unset)."""

    default: Any = field(default=None, kw_only=True)
    doc: str = field(default="", kw_only=True)
    # False: the default is the parser's alone, not the schema's, where a rule asks whether the field was given
    # (the API server would fill it in and then refuse it: a claim's size beside its claimName).
    schema_default: bool = field(default=True, kw_only=True)

    @property
    def fallback(self) -> Any:
        """What an unset (or refused) value reads as."""
        return None if self.default is ABSENT else self.default

    def unset(self) -> Any:
        """What the field holds when the manifest leaves it out (the dataclass default)."""
        return self.fallback

    def check(self, c: Checker, value: Any, path: str) -> Any:
        raise NotImplementedError

    def openapi(self) -> dict[str, Any]:
        raise NotImplementedError

    def _described(self, schema: dict[str, Any], default: bool = True) -> dict[str, Any]:
        # An empty default ("", []) would only add noise to every stored object: unset reads the same.
        if default and self.schema_default and self.default not in (None, ABSENT, "", ()):
            schema["default"] = _plain_default(self.default)
        if self.doc:
            schema["description"] = self.doc
        return schema


def _plain_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain_default(v) for v in value]
    return value


@dataclass(frozen=True)
class Int(Kind):
    default: Any = None
    minimum: int | None = None
    maximum: int = INT64_MAX
    format: str = ""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is None or value is ABSENT:
            return self.fallback
        if isinstance(value, bool) or not isinstance(value, int):
            c.fail(path, value, "must be an integer")
            return self.fallback
        if abs(value) > INT64_MAX:  # the API server's integers are 64-bit; so are torch's and numpy's
            c.fail(path, value, "must be a 64-bit integer")
            return self.fallback
        if self.minimum is not None and value < self.minimum:
            c.fail(path, value, f"must be at least {self.minimum}")
            return self.fallback
        if value > self.maximum:
            c.fail(path, value, f"must be at most {self.maximum}")
            return self.fallback
        return value

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.format:
            schema["format"] = self.format
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum != INT64_MAX:
            schema["maximum"] = self.maximum
        return self._described(schema)


@dataclass(frozen=True)
class Num(Kind):
    default: Any = None
    minimum: float | None = None
    maximum: float = 1e15
    exclusive_min: bool = False
    nullable: bool = False

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is None or value is ABSENT:
            return self.fallback
        if not finite_number(value):
            c.fail(path, value, "must be a finite number")
            return self.fallback
        if self.minimum is not None:
            if self.exclusive_min and value <= self.minimum:
                c.fail(path, value, f"must be greater than {_number(self.minimum)}")
                return self.fallback
            if not self.exclusive_min and value < self.minimum:
                c.fail(path, value, f"must be at least {_number(self.minimum)}")
                return self.fallback
        if value > self.maximum:
            c.fail(path, value, f"must be at most {_number(self.maximum)}")
            return self.fallback
        return float(value)

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
            if self.exclusive_min:
                schema["exclusiveMinimum"] = True
        schema["maximum"] = self.maximum
        if self.nullable:
            schema["nullable"] = True
        return self._described(schema)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 1e15 else value


@dataclass(frozen=True)
class Bool(Kind):
    default: Any = None

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT:
            return self.fallback
        if not isinstance(value, bool):
            c.fail(path, value, "must be true or false")
            return self.fallback
        return value

    def openapi(self) -> dict[str, Any]:
        return self._described({"type": "boolean"})


@dataclass(frozen=True)
class Str(Kind):
    """Text of at most `max_length` characters; `pattern` (Python and RE2 alike) with `reason` if it fails,
    and `problem`, a further check that returns a reason, or None."""

    default: Any = None
    max_length: int = 253
    pattern: str = ""
    reason: str = ""
    problem: Callable[[str], str | None] | None = None
    min_length: int = 0
    format: str = ""
    # CEL for what `problem` checks, where CEL can say it: (rule, message) pairs.
    cel: tuple[tuple[str, str], ...] = ()

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT:
            return self.fallback
        if not isinstance(value, str):
            c.fail(path, value, "must be a string")
            return self.fallback
        if len(value) > self.max_length:
            c.fail(path, value, self.reason or f"is longer than {self.max_length} characters")
            return self.fallback
        reason = self.problem(value) if self.problem else None
        if reason is None and self.pattern and not re.fullmatch(self.pattern, value):
            reason = self.reason or f"must match {self.pattern}"
        if reason is None and len(value) < self.min_length:
            reason = self.reason or "must not be empty"
        if reason:
            c.fail(path, value, reason)
            return self.fallback
        return value

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.pattern:
            schema["pattern"] = self.pattern
        if self.format:
            schema["format"] = self.format
        if self.cel:
            schema["x-kubernetes-validations"] = [{"rule": r, "message": m} for r, m in self.cel]
        return self._described(schema)


@dataclass(frozen=True)
class Word(Kind):
    """One of a few words (an enum); `imports` also takes "package.module:name"; `words` refuses YAML's
    booleans by name (`on`, `yes`, `true` unquoted), as an enum of words would otherwise read them."""

    default: Any = None
    choices: tuple[str, ...] = ()
    imports: bool = False
    words: bool = False

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT:
            return self.fallback
        if self.words and isinstance(value, bool):
            c.fail(path, value, f"must be one of {', '.join(self.choices)}, not a boolean")
            return self.fallback
        if not isinstance(value, str):
            c.fail(path, value, "must be a string")
            return self.fallback
        if value in self.choices or (self.imports and len(value) <= 253 and IMPORT_REF.match(value)):
            return value
        hint = f"one of {', '.join(self.choices)}"
        if self.imports:
            hint += ', or "package.module:name"'
        c.fail(path, value, f"unknown; expected {hint}")
        return self.fallback

    def openapi(self) -> dict[str, Any]:
        if self.imports:
            names = "|".join(re.escape(w) for w in self.choices)
            schema = {"type": "string", "maxLength": 253, "pattern": f"^({names}|{IMPORT_REF.pattern[1:-1]})$"}
        else:
            schema = {"type": "string", "enum": list(self.choices)}
        return self._described(schema)


# "pkg.module:attr" points at a user's dataset factory or model class.
IMPORT_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# A Kubernetes quantity as the API server parses it (resource.ParseQuantity), as text.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
}


def quantity_value(text: Any) -> Decimal | None:
    """A Kubernetes quantity's value (an int, or a string the API server would parse), or None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return Decimal(text)
    if isinstance(text, float) and finite_number(text):
        return Decimal(repr(text))
    if not isinstance(text, str) or len(text) > 64 or not re.fullmatch(QUANTITY_PATTERN, text):
        return None
    number = re.match(r"^[+-]?[0-9.]+", text)
    head, suffix = text[: number.end()], text[number.end() :]
    try:
        if suffix[:1] in ("e", "E"):
            exponent = int(suffix[1:])
            if abs(exponent) > 30:  # the API server refuses such; Decimal would happily make the number
                return None
            return Decimal(head) * Decimal(10) ** exponent
        return Decimal(head) * _SUFFIXES[suffix]
    except (InvalidOperation, KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Quantity(Kind):
    """A Kubernetes quantity (an integer or text such as "500m", "8Gi"), passed through as text, at most
    `maximum` (itself a quantity), so that what Red computes from it stays finite."""

    default: Any = None
    maximum: str = "1Ei"

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return self.fallback
        if isinstance(value, float) and finite_number(value) and value == int(value):
            value = int(value)
        # A fraction as a YAML number is no quantity to the API server (int-or-string): "500m" is.
        parsed = None if isinstance(value, float) else quantity_value(value)
        if parsed is None:
            c.fail(path, value, 'must be a Kubernetes quantity: a string such as "500m" or a whole number')
            return self.fallback
        if parsed < 0:
            c.fail(path, value, "must not be negative")
            return self.fallback
        if parsed > quantity_value(self.maximum):
            c.fail(path, value, f"must be at most {self.maximum}")
            return self.fallback
        return str(value)

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "x-kubernetes-validations": [
                {
                    "rule": "isQuantity(string(self)) && "
                    f"quantity(string(self)).compareTo(quantity('{self.maximum}')) <= 0",
                    "message": f"must be a Kubernetes quantity of at most {self.maximum}",
                },
                {
                    "rule": "!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('0')) >= 0",
                    "message": "must not be negative",
                },
            ],
        }
        return self._described(schema)


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    max_items: int = 64
    min_items: int = 0
    list_type: str = ""
    map_keys: tuple[str, ...] = ()
    # A key of the items that no two may share, and what to say of a second one.
    unique: str = ""
    duplicate: str = ""
    # One reason for the whole list when an item is wrong ("must be a list of layer names"), not one per item.
    reason: str = ""

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return self.fallback
        if isinstance(value, list) and self.unique and len(value) <= self.max_items:
            seen = set()
            for i, item in enumerate(value):
                key = item.get(self.unique) if isinstance(item, Mapping) else None
                if isinstance(key, str) and key in seen:
                    c.fail(f"{path}[{i}].{self.unique}", key, self.duplicate)
                elif isinstance(key, str):
                    seen.add(key)
        if not isinstance(value, list):
            c.fail(path, value, self.reason or "must be a list")
            return self.fallback
        if len(value) > self.max_items:
            c.fail(path, f"{len(value)} entries", f"must have at most {self.max_items}")
            return self.fallback
        if len(value) < self.min_items:
            c.fail(path, value, f"must have at least {self.min_items}")
            return self.fallback
        checker = Checker(c.stored) if self.reason else c
        before = len(checker.problems)
        items = tuple(self._item(checker, v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(checker.problems) == before:
            return items
        if self.reason:
            c.fail(path, value, self.reason)
        return self.fallback

    def _item(self, c: Checker, value: Any, path: str) -> Any:
        if value is None:  # an item is never unset: the API server refuses a null in a list
            c.fail(path, None, "must not be null")
            return None
        return self.item.check(c, value, path)

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "maxItems": self.max_items, "items": self.item.openapi()}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.list_type:
            schema["x-kubernetes-list-type"] = self.list_type
        if self.map_keys:
            schema["x-kubernetes-list-map-keys"] = list(self.map_keys)
        return self._described(schema)


@dataclass(frozen=True)
class MapOf(Kind):
    """A map of strings to `value`; `key` checks each key (a reason, or None) and `key_cel` says it in CEL."""

    value: Kind = field(default_factory=Kind)
    max_properties: int = 64
    key: Callable[[str], str | None] | None = None
    key_cel: str = ""
    key_message: str = ""
    max_key_length: int = 317
    shape: str = "must be a mapping"
    ENTRY: ClassVar[str] = "[{}]"  # as the API server names a map entry

    def unset(self) -> Any:
        return {}

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return {}
        if not isinstance(value, Mapping):
            c.fail(path, value, self.shape)
            return {}
        if len(value) > self.max_properties:
            c.fail(path, f"{len(value)} entries", f"must have at most {self.max_properties}")
            return {}
        out = {}
        for k, v in value.items():
            kp = path + self.ENTRY.format(k)
            reason = None if isinstance(k, str) else "keys must be strings"
            if reason is None and len(k) > self.max_key_length:
                reason = f"keys are at most {self.max_key_length} characters"
            if reason is None and self.key is not None:
                reason = self.key(k)
            if reason:
                c.fail(kp, k, reason)
                continue
            before = len(c.problems)
            checked = self.value.check(c, v, kp)
            if len(c.problems) == before:
                out[k] = checked
        return out

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "maxProperties": self.max_properties,
            "additionalProperties": self.value.openapi(),
        }
        rules = [
            {
                "rule": f"self.all(k, k.size() <= {self.max_key_length})",
                "message": f"keys are at most {self.max_key_length} characters",
            }
        ]
        if self.key_cel:
            rules.append({"rule": self.key_cel, "message": self.key_message})
        schema["x-kubernetes-validations"] = rules
        return self._described(schema, default=False)


def api(kind: Kind) -> Any:
    """A dataclass field declared by its kind: its default is what the kind reads an unset value as."""
    unset = kind.unset()
    if isinstance(unset, (dict, list)) or dataclasses.is_dataclass(unset):
        return field(default_factory=kind.unset, metadata={"api": kind})
    return field(default=unset, metadata={"api": kind})


@functools.cache
def declared(cls: type) -> tuple[tuple[str, Kind], ...]:
    """The API fields of a declared dataclass, in their order (read once a class: a pass parses many)."""
    return tuple((f.name, f.metadata["api"]) for f in dataclasses.fields(cls) if "api" in f.metadata)


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(name for name, _ in declared(cls))


class Declared:
    """Base of the declared dataclasses: RULES are their cross-field rules; EXTRA_CEL, CEL the API server
    checks of what the parser checks elsewhere (a strategy's options, in catalog.py)."""

    RULES: ClassVar[tuple[Rule, ...]] = ()
    EXTRA_CEL: ClassVar[tuple[dict[str, str], ...]] = ()


@dataclass(frozen=True)
class Obj(Kind):
    """A section: the declared dataclass `cls`. `default` None: optional, None when unset; else made from
    its fields' defaults when unset."""

    cls: type
    default: Any = field(default=True, kw_only=True)
    required: tuple[str, ...] = ()
    map_type: str = ""
    # Kept as the plain mapping given (the keys given, their values checked), for Kubernetes-shaped values
    # that go to a Pod as they are (a toleration, a volume).
    plain: bool = False

    def unset(self) -> Any:
        if self.default is None:
            return None
        return {} if self.plain else self.cls()

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return self.unset()
        if not isinstance(value, Mapping):
            c.fail(path, value, "must be a mapping")
            return self.unset()
        obj = parse_object(c, self.cls, value, path, self.required)
        if not self.plain:
            return obj
        return {name: _plain(getattr(obj, name)) for name, _ in declared(self.cls) if value.get(name) is not None}

    def openapi(self) -> dict[str, Any]:
        properties = {name: kind.openapi() for name, kind in declared(self.cls)}
        if self.plain:  # passed to a Pod as given: the API server adds nothing to it
            properties = {name: {k: v for k, v in p.items() if k != "default"} for name, p in properties.items()}
        schema: dict[str, Any] = {"type": "object"}
        if self.default is not None and not self.required and not self.plain:
            # The API server checks a default against the object's own rules before defaulting inside it: an
            # object with rules over its fields gets those fields' defaults spelt out.
            schema["default"] = defaults_of(self.cls) if getattr(self.cls, "RULES", ()) else {}
        if self.doc:
            schema["description"] = self.doc
        if self.required:
            schema["required"] = list(self.required)
        rules = [r for r in (rule.openapi() for rule in getattr(self.cls, "RULES", ())) if r]
        rules += list(getattr(self.cls, "EXTRA_CEL", ()))
        if rules:
            schema["x-kubernetes-validations"] = rules
        if self.map_type:
            schema["x-kubernetes-map-type"] = self.map_type
        schema["properties"] = properties
        return schema


def defaults_of(cls: type) -> dict[str, Any]:
    """A declared section's defaults as the API server would fill them in, as plain data."""
    out: dict[str, Any] = {}
    for name, kind in declared(cls):
        if isinstance(kind, Obj):
            if kind.default is not None and not kind.plain and not kind.required:
                out[name] = defaults_of(kind.cls)
        elif kind.default not in (None, ABSENT, "", ()):
            out[name] = _plain_default(kind.default)
    return out


def parse_object(c: Checker, cls: type, value: Mapping[str, Any], path: str, required: tuple[str, ...] = ()) -> Any:
    """The walker: a mapping checked field by field against `cls`'s declarations, then its rules. A field
    in error takes its default, so that the rules and later checks only ever see sane values."""
    fields = declared(cls)
    known = _names(cls)
    refuse = getattr(cls, "refuse_unknown", None)
    if refuse is None or c.stored:
        c.unknown(value, path, known)
    else:
        for extra in sorted(set(value) - set(known), key=str):
            c.fail(f"{path}.{extra}", value[extra], refuse(extra))
    values = {}
    for name, kind in fields:
        raw = value.get(name, ABSENT)
        if name in required and (raw is ABSENT or raw is None):
            c.fail(f"{path}.{name}", None, f"is required ({kind.doc or name})")
        values[name] = kind.check(c, raw, f"{path}.{name}")
    obj = cls(**values)
    for rule in getattr(cls, "RULES", ()):
        found = rule.check(obj, value) if rule.check else None
        if found is not None:
            *suffix, bad, reason = found  # a suffix names an item below the field ("[0].name")
            where = f"{path}.{rule.field}" if rule.field else path
            c.fail(where + "".join(suffix), bad, reason)
    return obj


@dataclass(frozen=True)
class K8s(Kind):
    """A Kubernetes type taken whole from the Kubernetes OpenAPI (scripts/k8s-schemas wrote `schema`), emitted
    with a bound on every string, list and map, and checked here against the same schema, those bounds
    included. The value is kept as the plain mapping given, to be passed to the Pod."""

    schema: Mapping[str, Any] = field(default_factory=dict)
    max_length: int = 317
    max_items: int = 32

    def unset(self) -> Any:
        return {}

    def check(self, c: Checker, value: Any, path: str) -> Any:
        if value is ABSENT or value is None:
            return {}
        before = len(c.problems)
        self._walk(c, self.schema, value, path)
        return _plain(value) if len(c.problems) == before else {}

    def _walk(self, c: Checker, schema: Mapping[str, Any], value: Any, path: str) -> None:
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            if not isinstance(value, Mapping):
                c.fail(path, value, "must be a mapping")
                return
            if "properties" in schema:
                c.unknown(value, path, tuple(schema["properties"]))
                for key in schema.get("required", ()):
                    if key not in value:
                        c.fail(f"{path}.{key}", None, "is required")
                for key, sub in schema["properties"].items():
                    if key in value and value[key] is not None:
                        self._walk(c, sub, value[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), Mapping):
                if len(value) > self.max_items:
                    c.fail(path, f"{len(value)} entries", f"must have at most {self.max_items}")
                    return
                for key, sub in value.items():
                    if not isinstance(key, str) or len(key) > self.max_length:
                        c.fail(f"{path}[{key}]", key, f"keys are strings of at most {self.max_length} characters")
                    else:
                        self._walk(c, schema["additionalProperties"], sub, f"{path}[{key}]")
        elif kind == "array":
            if not isinstance(value, list):
                c.fail(path, value, "must be a list")
            elif len(value) > self.max_items:
                c.fail(path, f"{len(value)} entries", f"must have at most {self.max_items}")
            else:
                for i, item in enumerate(value):
                    self._walk(c, schema.get("items", {}), item, f"{path}[{i}]")
        elif kind == "string":
            if not isinstance(value, str):
                c.fail(path, value, "must be a string")
            elif len(value) > self.max_length:
                c.fail(path, value, f"is longer than {self.max_length} characters")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**31 - 1:
                c.fail(path, value, "must be a 32-bit integer")
        elif kind == "boolean" and not isinstance(value, bool):
            c.fail(path, value, "must be true or false")

    def openapi(self) -> dict[str, Any]:
        return self._described(self._bounded(self.schema), default=False)

    def _bounded(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(schema)
        if "properties" in out:
            out["properties"] = {k: self._bounded(v) for k, v in out["properties"].items()}
            out.setdefault("type", "object")
        if isinstance(out.get("additionalProperties"), Mapping):
            out["additionalProperties"] = self._bounded(out["additionalProperties"])
            out["maxProperties"] = self.max_items
            out["x-kubernetes-validations"] = [
                {
                    "rule": f"self.all(k, k.size() <= {self.max_length})",
                    "message": f"keys are at most {self.max_length} characters",
                }
            ]
        if out.get("type") == "array":
            out["items"] = self._bounded(out.get("items", {}))
            out["maxItems"] = self.max_items
        if out.get("type") == "string":
            out["maxLength"] = self.max_length
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
