"""Typed, frozen configuration built from plain dicts (YAML), validated at load.

`build(cls, data, path)` turns a dict into the frozen dataclass `cls`, checking
every key against the dataclass fields and every value against its annotation.
Errors are `ConfigError`s that name the field path (``serving.scheduler.policy``),
the offending value and what is allowed. Range checks that types cannot express
live in each dataclass's ``validate()`` and use `require`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
from typing import TYPE_CHECKING, Any, Callable, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    import yaml

# Sanity bounds every number in a configuration file obeys (fields have tighter ones of their
# own). Beyond them a value is a typo or an attack, and numpy/SimPy would fail far from the
# field (OverflowError, MemoryError) instead of naming it.
MAX_ABS_FLOAT = 1e15
MAX_ABS_INT = 2**53  # exact in a float64; token counts, request counts and seeds all sit far below
# A YAML document may share nodes through aliases (&a / *a); expanded, a 1 KB file can grow to
# gigabytes (the "billion laughs"). Documents whose expanded tree exceeds this many nodes, or that
# nest deeper than MAX_YAML_DEPTH, are refused before anything walks them.
MAX_SEED = 2**32 - 1  # numpy's SeedSequence takes any int >= 0; a 32-bit seed is what people type
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 64


class ConfigError(ValueError):
    """A scenario, catalog or profile value is not allowed. The message names the field.

    `field` is the dotted path of the offending field (``serving.scheduler.max_num_seqs``), so a
    UI can put the message next to its widget without parsing text; by default it is what the
    message starts with, before the first colon.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field if field is not None else message.split(":", 1)[0].strip()


_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxtuple, _short.maxdict = 2, 6, 6, 4
_short.maxstring, _short.maxother, _short.maxlong = 60, 60, 40


def short_repr(value: Any) -> str:
    """repr(value) cut to about a line: an error message never prints an unbounded value."""
    return _short.repr(value)


def is_file(p: Any) -> bool:
    """Path(p).is_file(), False (not an exception) for a name too long for the file system or a NUL byte."""
    from pathlib import Path

    try:
        return Path(p).is_file()
    except (OSError, ValueError):
        return False


def set_path(data: dict, dotted: str, value: Any, label: str | None = None) -> dict:
    """A copy of the nested mapping `data` with `dotted` (a.b.c) set to `value`: the one dotted-path
    setter (`--set`, plan candidates). Mappings along the path are copied, `data` is never changed;
    a missing or null step becomes a new mapping, any other value there is a ConfigError (prefixed by
    `label`, default the path): a catalog name cannot be refined key by key."""
    import copy

    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"{label or dotted}: empty key segment in {dotted!r}")
    root = dict(data)
    node = root
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{label or dotted}: {'.'.join(parts[:i + 1])} is {short_repr(child)}, not a mapping")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return root


def merge_mappings(base: dict, patch: dict, replaces_whole: Callable[[str, dict], bool] | None = None) -> dict:
    """A copy of the nested mapping `base` with `patch` laid over it: the one nested-dict merge. A
    mapping in `patch` merges key by key into a mapping at the same key of `base`, recursively,
    unless `replaces_whole(key, mapping)` says it takes the old one's place whole; any other value
    replaces. Neither argument is changed."""
    import copy

    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (
                replaces_whole is not None and replaces_whole(key, value)):
            out[key] = merge_mappings(out[key], value, replaces_whole)
        else:
            out[key] = copy.deepcopy(value)
    return out


def short_path(path: Any) -> str:
    """A path for a message: whole up to 200 characters (people need to see which file), cut beyond."""
    text = str(path)
    return repr(text) if len(text) <= 200 else repr(text[:120] + "..." + text[-40:])


def require(ok: bool, path: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError for `path` unless `ok`. `allowed` says what would be accepted."""
    if not ok:
        raise ConfigError(f"{path}: got {short_repr(value)}; {allowed}", field=path)


def _num(v: float | int) -> str:
    """A bound as people write it: 86,400 and 1,000,000, but 0.05 and 1e+15."""
    return f"{v:,.0f}" if float(v).is_integer() and abs(v) < 1e13 else f"{v:g}"


def require_range(value: float | int | None, path: str, lo: float, hi: float, unit: str = "",
                  lo_open: bool = False) -> None:
    """`value` must be None or lie in [lo, hi] (or (lo, hi] with `lo_open`); the message states the range."""
    if value is None:
        return
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    unit = f" {unit}" if unit else ""
    lo_text, hi_text = _num(lo), _num(hi)
    require(ok, path, value, f"allowed {lo_text} {'<' if lo_open else '<='} x <= {hi_text}{unit}")


@functools.lru_cache(maxsize=1)
def _loader_class() -> type:
    """The YAML loader every configuration file is read with, made on first use: importing yaml
    is left to the commands that read a file (`servesim --version` and `--help` do not)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when present: ~10x faster
        """The safe loader, refusing duplicate keys (YAML's "last one wins" hides typos)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:
                        continue  # an unhashable key: the base constructor says so
                    if first != key_node.start_mark.line + 1:
                        raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {short_repr(key)} "
                                          f"(first at line {first}); each key may appear once")
            return super().construct_mapping(node, deep=deep)

    return Loader


def _check_expansion(node: yaml.Node) -> None:
    """Refuse a node graph whose expanded tree is too large or too deep (aliases share nodes)."""
    import yaml

    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        key = id(n)
        if key in sizes:
            continue
        if isinstance(n, yaml.ScalarNode):
            sizes[key], depths[key] = 1, 1
            continue
        children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else list(n.value)
        if not done:
            stack.append((n, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        sizes[key] = 1 + sum(sizes.get(id(c), 0) for c in children)
        depths[key] = 1 + max((depths.get(id(c), 0) for c in children), default=0)
        if sizes[key] > MAX_YAML_NODES:
            if len(sizes) < sizes[key]:  # nodes reached more than once: aliases multiply the document
                raise ConfigError(f"the document expands to more than {MAX_YAML_NODES:,} values (YAML aliases "
                                  f"&x/*x repeated); write the values out or shrink the file")
            raise ConfigError(f"the document holds more than {MAX_YAML_NODES:,} values; put long lists of "
                              f"lengths or arrivals in a trace file")
        if depths[key] > MAX_YAML_DEPTH:
            raise ConfigError(f"values nested more than {MAX_YAML_DEPTH} levels deep; a scenario needs a handful")


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse one YAML document with the safe loader, bounded in size and depth; errors are one line.

    `where` names the source (a file path, "--set serving.replicas") in every message.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                              f"save the file as UTF-8") from None
    import yaml

    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: values nested too deeply; a scenario needs a handful of levels") from None
    finally:
        loader.dispose()


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {sorted(_settable(tp))}"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        require(value in get_args(tp), path, value, f"allowed: {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            require(type(None) in options, path, value, f"expected {_type_name(tp)}")
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{path}: got {short_repr(value)}; expected {_type_name(tp)}")
    if origin is tuple:
        require(isinstance(value, (list, tuple)), path, value, f"expected {_type_name(tp)}")
        (item_tp, *_rest) = get_args(tp)
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        require(isinstance(value, dict), path, value, f"expected {_type_name(tp)}")
        key_tp, val_tp = get_args(tp)
        return {_convert(key_tp, k, f"{path}.{k}"): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is bool:
        require(isinstance(value, bool), path, value, "expected true or false")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        require(ok, path, value, "expected an integer")
        require(abs(value) <= MAX_ABS_INT, path, value, "expected an integer of magnitude <= 2**53")
        return value
    if tp is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), path, value, "expected a number")
        require(isinstance(value, int) or math.isfinite(value), path, value, "expected a finite number")
        require(abs(value) <= MAX_ABS_FLOAT, path, value, f"expected a number of magnitude <= {MAX_ABS_FLOAT:g}")
        return float(value)
    if tp is str:
        require(isinstance(value, str), path, value, "expected a string")
        return value
    raise TypeError(f"configio cannot convert annotation {tp!r} at {path}")


def _settable(cls: type) -> dict[str, dataclasses.Field]:
    """The fields a file may set: not `init=False`, not marked `metadata={"internal": True}`."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints(cls), evaluated once per class: the annotations are strings (postponed
    evaluation), and evaluating them on every build was most of the cost of reading the catalogs."""
    return typing.get_type_hints(cls)


def build(cls: type, data: Any, path: str) -> Any:
    """Build frozen dataclass `cls` from mapping `data`; `path` prefixes error messages."""
    if isinstance(data, cls):
        return data
    require(isinstance(data, dict), path or "<root>", data, f"expected {_type_name(cls)}")
    hints = _hints(cls)
    fields = _settable(cls)
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{short_repr(unknown[0]).strip(chr(39))}: unknown key; "
                          f"allowed keys here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: missing; expected {_type_name(hints[name])}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of `build`: a plain dict/list tree (for writing the edited scenario back)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
