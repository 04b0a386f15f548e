"""A small Go text/template interpreter: the subset Ollama Modelfile templates use, with Go's semantics.

Supported: text; ``{{ .Field }}``, ``{{ $var }}``; ``range PIPE``, ``if``/``else if``/``else``/``end``;
``$v := x`` (declare) and ``$v = x`` (assign to the variable in the enclosing scope, as Go does since 1.11);
the functions ``eq``, ``ne``, ``and``, ``or``, ``not``; string literals, ``true``/``false``, parentheses;
``{{-``/``-}}`` trim markers. Truth is Go's: false, "", 0, nil and empty collections are false; ``and``/``or``
return an argument, not a bool. Inside ``range`` the dot is the element.
"""

from __future__ import annotations

import re
import shlex

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _truth(value) -> bool:
    return bool(value) if value is not None else False


def _parse(template: str):
    """A flat token list: ('text', s) / ('act', words)."""
    tokens, pos = [], 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        tokens.append(("act", match.group(2)))
        if match.group(3):
            tokens.append(("trim", ""))
        pos = match.end()
    rest = template[pos:]
    if tokens and tokens[-1][0] == "trim":
        tokens.pop()
        rest = rest.lstrip()
    tokens.append(("text", rest))
    return tokens


def _tree(tokens, i=0, stop=("end",)):
    """Nodes until one of ``stop`` keywords; returns (nodes, index of the stop action, its words)."""
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        head = value.split(None, 1)[0] if value else ""
        if head in stop or value.startswith("else"):
            return nodes, i, value
        if head in ("if", "range"):
            branches, i = [], i
            cond = value[len(head) :].strip()
            while True:
                body, i, ending = _tree(tokens, i + 1, ("end",))
                branches.append((cond, body))
                if ending == "end":
                    break
                cond = ending[len("else") :].strip()
                cond = cond[len("if") :].strip() if cond.startswith("if") else None
            nodes.append((head, branches))
            i += 1
            continue
        nodes.append(("expr", value))
        i += 1
    return nodes, i, None


class _Scope:
    def __init__(self, parent=None):
        self.vars, self.parent = {}, parent

    def find(self, name):
        scope = self
        while scope is not None:
            if name in scope.vars:
                return scope
            scope = scope.parent
        raise KeyError(f"undefined variable {name}")


def _words(expr: str) -> list:
    """Split an expression into words, keeping quoted strings and parenthesised groups whole."""
    out, depth, current, quoted = [], 0, "", False
    for ch in expr:
        if ch == '"' and depth == 0:
            quoted = not quoted
        if ch == "(" and not quoted:
            depth += 1
        if ch == ")" and not quoted:
            depth -= 1
        if ch.isspace() and depth == 0 and not quoted:
            if current:
                out.append(current)
            current = ""
        else:
            current += ch
    if current:
        out.append(current)
    return out


def _value(word: str, dot, scope: _Scope):
    if word.startswith("(") and word.endswith(")"):
        return _eval(word[1:-1], dot, scope)
    if word.startswith('"'):
        return shlex.split(word)[0].encode().decode("unicode_escape") if "\\" in word else word[1:-1]
    if word in ("true", "false"):
        return word == "true"
    if word == ".":
        return dot
    if word.startswith("$"):
        name, _, field = word.partition(".")
        value = scope.find(name).vars[name] if name != "$" else scope.find("$").vars["$"]
        return value.get(field) if field else value
    if word.startswith("."):
        return dot.get(word[1:]) if isinstance(dot, dict) else None
    raise ValueError(f"unsupported word {word!r}")


def _eval(expr: str, dot, scope: _Scope):
    words = _words(expr)
    if len(words) >= 2 and words[1] in (":=", "="):
        value = _eval(" ".join(words[2:]), dot, scope)
        target = scope if words[1] == ":=" else scope.find(words[0])
        target.vars[words[0]] = value
        return None  # a declaration or assignment prints nothing
    head, args = words[0], words[1:]
    values = lambda: [_value(a, dot, scope) for a in args]  # noqa: E731
    if head == "eq":
        first, *rest = values()
        return any(first == other for other in rest)
    if head == "ne":
        a, b = values()
        return a != b
    if head == "not":
        return not _truth(values()[0])
    if head in ("and", "or"):
        result = None
        for arg in args:  # short-circuit like Go 1.18+
            result = _value(arg, dot, scope)
            if _truth(result) != (head == "and"):
                return result
        return result
    return _value(head, dot, scope)


def _run(nodes, dot, scope: _Scope, out: list) -> None:
    for kind, value in nodes:
        if kind == "text":
            out.append(value)
        elif kind == "expr":
            result = _eval(value, dot, scope)
            if isinstance(result, bool):
                out.append("true" if result else "false")  # Go prints booleans
            elif result is not None:
                out.append(str(result))
        elif kind == "if":
            for cond, body in value:
                if cond is None or _truth(_eval(cond, dot, scope)):
                    _run(body, dot, _Scope(scope), out)
                    break
        elif kind == "range":
            (cond, body), *otherwise = value
            items = _eval(cond, dot, scope) or []
            for item in items:
                _run(body, item, _Scope(scope), out)
            if not items and otherwise:
                _run(otherwise[0][1], dot, _Scope(scope), out)


def render(template: str, data: dict) -> str:
    """Render ``template`` with ``data`` as the dot (and ``$``)."""
    nodes, _, _ = _tree(_parse(template))
    scope = _Scope()
    scope.vars["$"] = data
    out: list[str] = []
    _run(nodes, data, scope, out)
    return "".join(out)
