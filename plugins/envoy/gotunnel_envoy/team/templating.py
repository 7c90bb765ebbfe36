"""Fast protobuf for rendered dicts that differ only in a few strings (one per published name).

`json_format.ParseDict` walks a dict in Python: about 1.5 ms for one name's route configuration,
which at 10,000 names is most of a hub's CPU during a bulk start. The resources of two names
differ only in the strings derived from the name and its backend, so `TemplateCache` parses each
*shape* once: the rendered JSON with those strings replaced by tokens. A new name then costs a
copy of the parsed template (in C) and setting the few string fields that held a token.

Correctness does not rest on the token bookkeeping: the first resource of every shape is also
built the slow way and compared byte for byte; a shape that does not match (a token inside an
`Any`'s bytes or a map key, which the field paths cannot reach) always takes the slow way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

#: A field path from the message down to a string: ("attr", field name) or ("item", index or map key).
Path = tuple[tuple[str, Any], ...]


def _token(index: int) -> str:
    return f"@@gotunnel-template-{index}@@"


@dataclass
class _Template:
    message: Message | None  # None: this shape takes the slow way
    fields: list[tuple[Path, str]] = field(default_factory=list)
    verified: bool = False


class _Unreachable(Exception):
    """A token sits where a field path cannot reach it (bytes, a map key)."""


def _find(message: Message, path: Path, tokens: Sequence[str], out: list[tuple[Path, str]]) -> None:
    for desc, value in message.ListFields():
        here: Path = (*path, ("attr", desc.name))
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            value_desc = desc.message_type.fields_by_name["value"]
            for key in value:
                if isinstance(key, str) and any(t in key for t in tokens):
                    raise _Unreachable(desc.full_name)
                if value_desc.message_type is not None:
                    _find(value[key], (*here, ("item", key)), tokens, out)
                elif isinstance(value[key], str) and any(t in value[key] for t in tokens):
                    out.append(((*here, ("item", key)), value[key]))
                elif isinstance(value[key], bytes) and any(t.encode() in value[key] for t in tokens):
                    raise _Unreachable(desc.full_name)
            continue
        items = list(enumerate(value)) if desc.is_repeated else [(None, value)]
        for index, item in items:
            at = here if index is None else (*here, ("item", index))
            if isinstance(item, Message):
                _find(item, at, tokens, out)
            elif isinstance(item, str) and any(t in item for t in tokens):
                out.append((at, item))
            elif isinstance(item, bytes) and any(t.encode() in item for t in tokens):
                raise _Unreachable(desc.full_name)


def _set(message: Any, path: Path, value: str) -> None:
    for kind, step in path[:-1]:
        message = getattr(message, step) if kind == "attr" else message[step]
    kind, last = path[-1]
    if kind == "attr":
        setattr(message, last, value)
    else:
        message[last] = value


M = TypeVar("M", bound=Message)


class TemplateCache:
    """Builds protobuf messages from rendered dicts, parsing each shape once (see the module)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._shapes: dict[tuple[type, str], _Template] = {}

    def build(self, cls: type[M], doc: Mapping[str, Any], values: Sequence[str]) -> M:
        """`doc` as a `cls` message; `values` are the strings that vary between names."""
        text = json.dumps(doc, sort_keys=True)
        ordered = sorted({v for v in values if v}, key=len, reverse=True)
        escaped = [json.dumps(v)[1:-1] for v in ordered]
        tokens = [_token(i) for i in range(len(ordered))]
        if any(t in text for t in tokens):
            return self._slow(cls, doc)
        shape = text
        for value, token in zip(escaped, tokens):
            shape = shape.replace(value, token)
        key = (cls, shape)
        template = self._shapes.get(key)
        if template is None:
            template = self._parse(cls, shape, tokens)
            if len(self._shapes) >= self.limit:
                self._shapes.pop(next(iter(self._shapes)))
            self._shapes[key] = template
        if template.message is None:
            return self._slow(cls, doc)
        message = cls()
        message.CopyFrom(template.message)
        for path, pattern in template.fields:
            for value, token in zip(ordered, tokens):
                pattern = pattern.replace(token, value)
            _set(message, path, pattern)
        if not template.verified:
            slow = self._slow(cls, doc)
            if slow.SerializeToString(deterministic=True) != message.SerializeToString(deterministic=True):
                template.message = None
                return slow
            template.verified = True
        return message

    @staticmethod
    def _slow(cls: type[M], doc: Mapping[str, Any]) -> M:
        message = cls()
        json_format.ParseDict(doc, message)
        return message

    @staticmethod
    def _parse(cls: type[M], shape: str, tokens: Sequence[str]) -> _Template:
        message = cls()
        found: list[tuple[Path, str]] = []
        try:
            # A token in a number, an enum or a duration does not parse: that shape goes slow.
            json_format.ParseDict(json.loads(shape), message)
            _find(message, (), tokens, found)
        except (_Unreachable, ValueError, json_format.ParseError):
            return _Template(None)
        return _Template(message, found)
