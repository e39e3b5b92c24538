"""A reader of the Alloy configuration syntax (blocks, attributes, strings, numbers, lists,
objects, references and function calls), enough to run what `alloy/config.alloy` declares.
Reference: https://grafana.com/docs/alloy/v1.18/get-started/configuration-syntax/
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    pass


@dataclass
class Ref:
    """A reference to another component's export: `discovery.docker.containers.targets`."""
    path: str


@dataclass
class Call:
    function: str
    args: list


@dataclass
class Block:
    name: str                 # `discovery.docker`, or a sub-block name like `rule`, `stage.json`
    label: str | None
    attributes: dict = field(default_factory=dict)
    blocks: list["Block"] = field(default_factory=list)
    line: int = 0

    def children(self, name: str) -> list["Block"]:
        return [b for b in self.blocks if b.name == name]


TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+) | (?P<newline>\n) | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*") | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]()=,.:])
""", re.X | re.S)


def tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match:
            raise ConfigError(f"line {line}: unexpected character {text[pos]!r}")
        kind, value = match.lastgroup, match.group()
        line_here = line
        line += value.count("\n")
        pos = match.end()
        if kind in ("space", "newline", "comment"):
            continue
        tokens.append((kind, value, line_here))
    tokens.append(("eof", "", line))
    return tokens


class Parser:
    def __init__(self, text: str):
        self.tokens, self.index = tokenize(text), 0

    def peek(self, offset: int = 0):
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self, kind: str | None = None, value: str | None = None):
        token = self.peek()
        if (kind and token[0] != kind) or (value and token[1] != value):
            raise ConfigError(f"line {token[2]}: expected {value or kind}, found {token[1]!r}")
        self.index += 1
        return token

    def dotted(self) -> str:
        parts = [self.take("ident")[1]]
        while self.peek()[1] == "." and self.peek(1)[0] == "ident":
            self.take()
            parts.append(self.take("ident")[1])
        return ".".join(parts)

    def body(self, end: str) -> tuple[dict, list[Block]]:
        attributes, blocks = {}, []
        while self.peek()[1] != end and self.peek()[0] != "eof":
            line = self.peek()[2]
            name = self.dotted()
            if self.peek()[1] == "=":
                self.take()
                if name in attributes:
                    raise ConfigError(f"line {line}: attribute {name} set twice")
                attributes[name] = self.expression()
                continue
            label = None
            if self.peek()[0] == "string":
                label = json.loads(self.take()[1])
            self.take("punct", "{")
            inner_attributes, inner_blocks = self.body("}")
            self.take("punct", "}")
            blocks.append(Block(name, label, inner_attributes, inner_blocks, line))
        return attributes, blocks

    def expression(self):
        kind, value, line = self.peek()
        if kind == "string":
            self.take()
            return json.loads(value)
        if kind == "raw":
            self.take()
            return value[1:-1]
        if kind == "number":
            self.take()
            return float(value) if "." in value or "e" in value.lower() else int(value)
        if value == "[":
            self.take()
            items = []
            while self.peek()[1] != "]":
                items.append(self.expression())
                if self.peek()[1] == ",":
                    self.take()
            self.take("punct", "]")
            return items
        if value == "{":
            self.take()
            obj = {}
            while self.peek()[1] != "}":
                key_token = self.take()
                key = json.loads(key_token[1]) if key_token[0] == "string" else key_token[1]
                self.take("punct", "=")
                obj[key] = self.expression()
                if self.peek()[1] == ",":
                    self.take()
            self.take("punct", "}")
            return obj
        if kind == "ident":
            if value in ("true", "false"):
                self.take()
                return value == "true"
            if value == "null":
                self.take()
                return None
            path = self.dotted()
            if self.peek()[1] == "(":
                self.take()
                args = []
                while self.peek()[1] != ")":
                    args.append(self.expression())
                    if self.peek()[1] == ",":
                        self.take()
                self.take("punct", ")")
                return Call(path, args)
            return Ref(path)
        raise ConfigError(f"line {line}: unexpected {value!r}")


def parse(text: str) -> list[Block]:
    parser = Parser(text)
    attributes, blocks = parser.body("")
    if attributes:
        raise ConfigError(f"top-level attributes are not allowed: {sorted(attributes)}")
    return blocks
