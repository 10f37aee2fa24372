"""The part of Cloudflare's Rules language the edge stand-in evaluates (Cloudflare docs, "Rules language":
fields, `eq`/`ne`/`in`, sets `{"a" "b"}`, `not`/`and`/`or`, parentheses, `starts_with()`, `concat()`).

A field or function outside this subset raises, so a rule the stand-in cannot read fails the test
instead of being skipped. Precedence as in the docs: `not` binds to the comparison after it, then
`and`, then `or`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

FIELDS = ("http.host", "http.request.uri.path", "http.request.scheme", "http.user_agent", "ssl", "cf.tls_version",
          "ip.src")
_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<op>[(){},])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))')


class RulesError(ValueError):
    """An expression outside the modelled subset."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise RulesError(f"cannot read {text[pos:pos + 20]!r} in {text!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        out.append((kind, value[1:-1].replace('\\"', '"') if kind == "string" else value))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, Any]) -> None:
        self.tokens, self.at, self.fields, self.text = _tokens(text), 0, fields, text

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise RulesError(f"expected {value!r}, found {token[1]!r} in {self.text!r}")
        self.at += 1
        return token

    def expression(self) -> Any:
        value = self.conjunction()
        while self.peek() == ("word", "or"):
            self.take()
            right = self.conjunction()
            value = bool(value) or bool(right)
        return value

    def conjunction(self) -> Any:
        value = self.negation()
        while self.peek() == ("word", "and"):
            self.take()
            right = self.negation()
            value = bool(value) and bool(right)
        return value

    def negation(self) -> Any:
        if self.peek() == ("word", "not"):
            self.take()
            return not self.negation()
        return self.comparison()

    def comparison(self) -> Any:
        left = self.value()
        kind, word = self.peek()
        if kind == "word" and word in ("eq", "ne", "in"):
            self.take()
            if word == "in":
                return left in self.set()
            right = self.value()
            return left == right if word == "eq" else left != right
        return left

    def set(self) -> set[str]:
        self.take("{")
        items = set()
        while self.peek()[1] != "}":
            kind, value = self.take()
            if kind != "string":
                raise RulesError(f"only string sets are modelled: {self.text!r}")
            items.add(value)
        self.take("}")
        return items

    def value(self) -> Any:
        kind, value = self.take()
        if kind == "string":
            return value
        if value == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if kind == "word" and self.peek()[1] == "(":
            return self.call(value)
        if kind == "word" and value in FIELDS:
            return self.fields[value]
        raise RulesError(f"field or function {value!r} is not modelled (in {self.text!r})")

    def call(self, name: str) -> Any:
        self.take("(")
        args = [self.value()]
        while self.peek()[1] == ",":
            self.take()
            args.append(self.value())
        self.take(")")
        if name == "starts_with" and len(args) == 2:
            return str(args[0]).startswith(str(args[1]))
        if name == "concat":
            return "".join(str(a) for a in args)
        raise RulesError(f"function {name!r} is not modelled (in {self.text!r})")


def evaluate(expression: str, fields: Mapping[str, Any]) -> Any:
    """The value of `expression` for a request described by `fields` (every name in FIELDS)."""
    parser = _Parser(expression, fields)
    value = parser.expression()
    if parser.peek()[0] != "end":
        raise RulesError(f"unread rest {parser.tokens[parser.at:]} in {expression!r}")
    return value
