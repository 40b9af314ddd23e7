"""A small renderer for the part of Go's text/template that Ollama chat templates use, and the values Ollama gives a
chat template, so a test can see the prompt an Ollama Modelfile's TEMPLATE renders.

Go text/template (https://pkg.go.dev/text/template): `{{ .Field }}`, `{{ if PIPE }}…{{ else }}…{{ end }}`,
`{{ range .Field }}…{{ end }}` (the dot becomes each element), the functions `eq`, `ne`, `and`, `or`, `not`,
string literals, `$` (the data the template started with), and the trim markers `{{-` / `-}}` (remove the
whitespace before / after the action). Truthiness as Go's: false, 0, "", nil and empty lists are false.
Anything else raises, so a template outside this subset fails the test instead of rendering wrongly.

Ollama (template/template.go, server/routes.go): the Modelfile's SYSTEM becomes a first system message when the
conversation does not start with one; consecutive messages of one role are merged with a blank line between them;
`.System` is every system message joined by a blank line; `.Messages` keeps the system messages too.
"""
from __future__ import annotations

import re

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+')


def ollama_values(conversation: list[dict], modelfile_system: str | None) -> dict:
    """What Ollama's chat endpoint hands a template that uses .Messages."""
    messages = [dict(m) for m in conversation]
    if modelfile_system and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": modelfile_system})
    collated: list[dict] = []
    for message in messages:
        if collated and collated[-1]["role"] == message["role"]:
            collated[-1]["content"] += "\n\n" + message["content"]
        else:
            collated.append(dict(message))
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in collated],
            "Response": "", "Tools": None}


def _parse(template: str) -> list:
    """Text and actions as a tree: str, ("expr", words), ("if", words, body, else_body), ("range", words, body)."""
    pieces: list = []
    position = 0
    for match in ACTION.finditer(template):
        pieces.append(template[position:match.start()])
        pieces.append((bool(match.group(1)), match.group(2).strip(), bool(match.group(3))))
        position = match.end()
    pieces.append(template[position:])
    for i, piece in enumerate(pieces):  # trim markers eat the whitespace of the neighbouring text
        if isinstance(piece, tuple):
            left, _, right = piece
            if left:
                pieces[i - 1] = pieces[i - 1].rstrip(" \t\r\n")
            if right:
                pieces[i + 1] = pieces[i + 1].lstrip(" \t\r\n")

    def block(at: int, closers: tuple[str, ...]) -> tuple[list, int, str | None]:
        nodes: list = []
        while at < len(pieces):
            piece = pieces[at]
            if isinstance(piece, str):
                if piece:
                    nodes.append(piece)
                at += 1
                continue
            words = WORD.findall(piece[1])
            head = words[0] if words else ""
            if head in closers:
                return nodes, at + 1, head
            if head == "if":
                body, at, closer = block(at + 1, ("else", "end"))
                other = []
                if closer == "else":
                    other, at, _ = block(at, ("end",))
                nodes.append(("if", words[1:], body, other))
            elif head == "range":
                body, at, _ = block(at + 1, ("end",))
                nodes.append(("range", words[1:], body))
            elif head in ("else", "end", "with", "define", "template", "block") or head.startswith("/*"):
                raise ValueError(f"{{{{ {piece[1]} }}}} is outside the subset this renderer knows")
            else:
                nodes.append(("expr", words))
                at += 1
        return nodes, at, None

    nodes, _, _ = block(0, ())
    return nodes


def _field(dot, root, name: str):
    value = root if name.startswith("$") else dot
    for part in [p for p in name.lstrip("$").split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"no field {part} in {name}")
        value = value[part]
    return value


def _evaluate(words: list[str], dot, root):
    def operand(word):
        if word.startswith('"'):
            return bytes(word[1:-1], "utf-8").decode("unicode_escape")
        if word.startswith((".", "$")):
            return _field(dot, root, word)
        raise ValueError(f"{word!r} is outside the subset this renderer knows")

    def call(items: list[str]):
        if not items:
            raise ValueError("empty pipeline")
        name, args = items[0], items[1:]
        values = []
        i = 0
        while i < len(args):  # parenthesised sub-pipelines
            if args[i] == "(":
                depth, j = 1, i + 1
                while depth:
                    depth += {"(": 1, ")": -1}.get(args[j], 0)
                    j += 1
                values.append(call(args[i + 1:j - 1]))
                i = j
            else:
                values.append(operand(args[i]))
                i += 1
        functions = {"eq": lambda a, *b: any(a == x for x in b), "ne": lambda a, b: a != b,
                     "and": lambda *v: next((x for x in v if not _true(x)), v[-1]),
                     "or": lambda *v: next((x for x in v if _true(x)), v[-1]), "not": lambda v: not _true(v)}
        if name in functions:
            return functions[name](*values)
        if args:
            raise ValueError(f"{name} is outside the subset this renderer knows")
        return operand(name)

    return call(words)


def _true(value) -> bool:
    return bool(value)  # false, 0, "", None and empty lists are false in Go as in Python


def _run(nodes: list, dot, root, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "expr":
            value = _evaluate(node[1], dot, root)
            out.append("" if value is None else str(value))
        elif node[0] == "if":
            _run(node[2] if _true(_evaluate(node[1], dot, root)) else node[3], dot, root, out)
        elif node[0] == "range":
            for item in _evaluate(node[1], dot, root) or []:
                _run(node[2], item, root, out)


def render(template: str, values: dict) -> str:
    out: list[str] = []
    _run(_parse(template), values, values, out)
    return "".join(out)
