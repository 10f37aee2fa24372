"""The pinned providers' schemas, read from their installed Python SDKs, and a check of what the program
sends the engine against them.

The provider plugins cannot run here, and their schema.json files are not shipped with the SDKs. The
generated SDKs carry the same facts, since pulumi generates them from the schema: each resource's Args
class lists its inputs (Python name, wire name through `@pulumi.getter(name=...)`), which are required
(no default in `__init__`), their types (the annotations, nested `...Args` input types, enums), and the
Cloudflare SDK's descriptions end with the allowed values ("Available values: ..."). Functions list their
arguments' wire names in `__args__[...]`.

`violations(token, inputs)` answers what the engine would refuse before the provider sees the request
(an unknown input, a missing required one, a wrong type) and what the provider's own schema refuses (a
value outside the allowed ones). Provider-side checks that no schema carries live in provider_rules.py.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import importlib
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pulumi
from pulumi import _types

# The wire's own markers for values the engine fills in (secrets are unwrapped before the check).
_AVAILABLE = re.compile(r"Available values: (.*?)\.\s*$", re.M)
_ARGS_ASSIGNMENT = re.compile(r"__args__\['(\w+)'\] = (\w+)")
_TOKEN_LITERAL = re.compile(r"__init__\(\s*'([^']+)'")


@dataclass(frozen=True)
class Shape:
    """One value's type as the schema gives it."""

    kind: str  # string | number | integer | boolean | array | map | object | any | asset
    items: Shape | None = None  # array and map
    fields: Mapping[str, Field] = field(default_factory=dict)  # object, by wire name
    allowed: tuple[str, ...] = ()  # string: the only values the provider accepts ("" = any)
    name: str = ""  # object: the SDK's input type, for messages


@dataclass(frozen=True)
class Field:
    shape: Shape
    required: bool


def _package(token: str) -> ModuleType:
    """`cloudflare:index/dnsRecord:DnsRecord` -> pulumi_cloudflare; `command:remote:Command` -> pulumi_command.remote."""
    package, module = token.split(":")[:2]
    root = importlib.import_module(f"pulumi_{package}")
    if module == "index" or module.startswith("index/"):
        return root
    return importlib.import_module(f"pulumi_{package}.{module.split('/')[0]}")


def _resource_class(token: str) -> type[pulumi.CustomResource]:
    cls = getattr(_package(token), token.rsplit(":", 1)[1])
    found = _TOKEN_LITERAL.findall(inspect.getsource(cls._internal_init))
    if token not in found:
        raise KeyError(f"{token}: the SDK class {cls.__name__} registers {found}")
    return cls  # type: ignore[no-any-return]


def _function(token: str) -> Any:
    name = token.rsplit(":", 1)[1]
    return getattr(_package(token), re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())


def _allowed(getter: Any) -> tuple[str, ...]:
    """The Cloudflare SDK's "Available values: "a", "b"." (its docs write an underscore as *)."""
    match = _AVAILABLE.search(inspect.getdoc(getter) or "")
    if not match:
        return ()
    return tuple(v.replace("*", "_") for v in re.findall(r'"([^"]*)"', match.group(1)))


def _forward(ref: typing.ForwardRef | str, module: ModuleType) -> Any:
    """A forward reference of the SDK ("FooArgs", "outputs.Foo", "Output[T]") resolved in its package."""
    text = ref.__forward_arg__ if isinstance(ref, typing.ForwardRef) else ref
    if text.startswith("Output["):
        return pulumi.Output
    package = importlib.import_module(module.__name__.split(".")[0])
    for where in (module, importlib.import_module(f"{module.__package__}._inputs"),
                  getattr(module, "_enums", None), package):
        if where is not None and hasattr(where, text):
            return getattr(where, text)
    if text.startswith("outputs."):
        return pulumi.Output  # an output type: never what the program sends
    raise KeyError(f"cannot resolve {text!r} in {module.__name__}")


def _shape(annotation: Any, module: ModuleType) -> Shape:
    """The schema type behind an SDK annotation: Inputs, Awaitables, Outputs, None and TypedDict forms
    are the SDK's ways of passing one value, not other types."""
    if isinstance(annotation, (typing.ForwardRef, str)):
        annotation = _forward(annotation, module)
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        options = [a for a in typing.get_args(annotation)
                   if a is not type(None) and typing.get_origin(a) is not collections.abc.Awaitable]
        shapes = [_shape(a, module) for a in options]
        shapes = [s for s in shapes if s.kind != "output" and not s.name.endswith("ArgsDict")]
        if not shapes:
            return Shape("any")
        objects = [s for s in shapes if s.kind == "object"]
        return objects[0] if objects else shapes[0]
    if origin in (collections.abc.Sequence, list):
        return Shape("array", items=_shape(typing.get_args(annotation)[0], module))
    if origin in (collections.abc.Mapping, dict):
        return Shape("map", items=_shape(typing.get_args(annotation)[1], module))
    if annotation is pulumi.Output or origin is pulumi.Output:
        return Shape("output")
    if annotation is Any:
        return Shape("any")
    if inspect.isclass(annotation):
        if issubclass(annotation, enum.Enum):
            return Shape("string", allowed=tuple(str(m.value) for m in annotation))
        if issubclass(annotation, (pulumi.Asset, pulumi.Archive)):
            return Shape("asset")
        if annotation is bool:
            return Shape("boolean")
        if annotation is int:
            return Shape("integer")
        if annotation is float:
            return Shape("number")
        if annotation is str:
            return Shape("string")
        if annotation.__name__.endswith("ArgsDict"):
            return Shape("object", name=annotation.__name__)
        if annotation.__name__.endswith("Args"):
            return Shape("object", fields=_fields(typing.cast(Any, annotation)), name=annotation.__name__)
    raise TypeError(f"no schema type for {annotation!r} ({module.__name__})")


@functools.cache
def _fields(args_class: Any) -> Mapping[str, Field]:
    """An input type's fields by wire name."""
    module = importlib.import_module(args_class.__module__)
    wire = _types.input_type_py_to_pulumi_names(args_class)
    out: dict[str, Field] = {}
    for name, parameter in inspect.signature(args_class.__init__).parameters.items():
        if name == "__self__" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        shape = _shape(parameter.annotation, module)
        getter = getattr(args_class, name, None)
        allowed = _allowed(getter) if getter is not None else ()
        if allowed and shape.kind == "string" and not shape.allowed:
            shape = Shape("string", allowed=allowed)
        out[wire.get(name, name)] = Field(shape, required=parameter.default is inspect.Parameter.empty)
    return out


@functools.cache
def resource_inputs(token: str) -> Mapping[str, Field]:
    """A resource's inputs by wire name."""
    cls = _resource_class(token)
    args_class = getattr(importlib.import_module(cls.__module__), f"{cls.__name__}Args")
    return _fields(args_class)


@functools.cache
def resource_outputs(token: str) -> frozenset[str]:
    """A resource's output properties by wire name (what a provider, and so a mock, may answer)."""
    return frozenset(_types.resource_py_to_pulumi_names(_resource_class(token)).values()) | {"id", "urn"}


@functools.cache
def function_arguments(token: str) -> Mapping[str, Field]:
    """A function's arguments by wire name."""
    function = _function(token)
    module = importlib.import_module(function.__module__)
    wire = {python: name for name, python in _ARGS_ASSIGNMENT.findall(inspect.getsource(function))}
    out: dict[str, Field] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "opts":
            continue
        out[wire.get(name, name)] = Field(_shape(parameter.annotation, module),
                                          required=parameter.default is inspect.Parameter.empty)
    return out


def _value_violations(path: str, value: Any, shape: Shape) -> list[str]:
    if value is None or shape.kind == "any":
        return []
    kind = shape.kind
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "integer": isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer(),
        "array": isinstance(value, list),
        "map": isinstance(value, dict),
        "object": isinstance(value, dict),
        "asset": isinstance(value, (pulumi.Asset, pulumi.Archive)),
    }.get(kind, False)
    if not ok:
        return [f"{path}: {type(value).__name__} {value!r:.60} where the schema wants {kind}"]
    if kind == "string" and shape.allowed and value not in shape.allowed:
        return [f"{path}: {value!r} is not one of {', '.join(shape.allowed)}"]
    if kind == "array":
        assert shape.items is not None
        return [v for i, item in enumerate(value) for v in _value_violations(f"{path}[{i}]", item, shape.items)]
    if kind == "map":
        assert shape.items is not None
        return [v for k, item in value.items() for v in _value_violations(f"{path}.{k}", item, shape.items)]
    if kind == "object" and shape.fields:
        return _object_violations(path, value, shape.fields)
    return []


def _object_violations(path: str, value: Mapping[str, Any], fields: Mapping[str, Field]) -> list[str]:
    found = [f"{path}.{k}: not an input of the schema (known: {', '.join(sorted(fields))})"
             for k in value if k not in fields]
    found += [f"{path}.{k}: required by the schema, missing" for k, f in fields.items()
              if f.required and value.get(k) is None]
    for key, item in value.items():
        if key in fields:
            found += _value_violations(f"{path}.{key}", item, fields[key].shape)
    return found


def input_violations(token: str, inputs: Mapping[str, Any]) -> list[str]:
    """What the engine or the provider's schema refuses in a resource's inputs (secrets unwrapped)."""
    return _object_violations(token.rsplit(":", 1)[1], inputs, resource_inputs(token))


def argument_violations(token: str, arguments: Mapping[str, Any]) -> list[str]:
    """The same for a function's (invoke's) arguments."""
    return _object_violations(token.rsplit(":", 1)[1], arguments, function_arguments(token))


def output_violations(token: str, outputs: Mapping[str, Any]) -> list[str]:
    """Output properties no provider would answer: a mock that invents them hides a program bug."""
    known = resource_outputs(token)
    return [f"{token.rsplit(':', 1)[1]}.{k}: not an output of the schema" for k in outputs if k not in known]
