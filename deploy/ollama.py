"""Ollama Modelfiles: each prompt format we train with, written in Ollama's Go text/template syntax.

Ollama renders TEMPLATE with Go's text/template over ``.Messages`` (the SYSTEM line arrives as the first
message, role "system"), ``.System`` and ``.Prompt``. Each template below renders what ``data.templates``
renders for training up to where the assistant's reply starts, so the model sees its training prompt.
Known limits: ``instruction`` strips whitespace around the user text in training (Go templates cannot), and
the phi4-mini ``tools`` system field has no Ollama counterpart.
"""

from __future__ import annotations

from philora.data.templates import ALPACA_PREAMBLE, ALPACA_PREAMBLE_INPUT
from philora.deploy.errors import DeployError


def _go_string(text: str) -> str:
    """A Go template string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _role_loop(turn: str, prompt: str, skip_empty_system: bool = False) -> str:
    # turn: how one message renders, with {{ .Role }} / {{ .Content }} in it.
    body = turn
    if skip_empty_system:
        body = '{{ if or (ne .Role "system") .Content }}' + turn + "{{ end }}"
    return "{{ range .Messages }}" + body + "{{ end }}" + prompt


_ALPACA = (
    "{{ if .System }}" + ALPACA_PREAMBLE_INPUT + "### Instruction:\n{{ .System }}\n\n### Input:\n{{ .Prompt }}"
    "\n\n### Response:\n{{ else }}" + ALPACA_PREAMBLE + "### Instruction:\n{{ .Prompt }}\n\n### Response:\n"
    "{{ end }}"
)

TEMPLATES: dict[str, str] = {
    "phi3": _role_loop("<|{{ .Role }}|>\n{{ .Content }}<|end|>\n", "<|assistant|>\n"),
    "phi3.5": _role_loop("<|{{ .Role }}|>\n{{ .Content }}<|end|>\n", "<|assistant|>\n", skip_empty_system=True),
    "phi4-mini": _role_loop("<|{{ .Role }}|>{{ .Content }}<|end|>", "<|assistant|>"),
    "phi4": _role_loop("<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>", "<|im_start|>assistant<|im_sep|>"),
    "roleplay": _role_loop("<|{{ .Role }}|>\n{{ .Content }}\n", "<|assistant|>\n"),
    "human_assistant": _role_loop(
        '{{ if eq .Role "system" }}{{ .Content }}\n\n{{ else if eq .Role "user" }}'
        "### Human: {{ .Content }}{{ else }}### Assistant: {{ .Content }}{{ end }}",
        "### Assistant:",
    ),
    # A user turn after an earlier turn starts on a new line ($seen: a user or assistant turn came before).
    "instruct": (
        '{{ $seen := false }}{{ range .Messages }}{{ if eq .Role "system" }}{{ .Content }}\n'
        '{{ else if eq .Role "user" }}{{ if $seen }}\n{{ end }}Instruct: {{ .Content }}{{ $seen = true }}'
        "{{ else }}\nOutput: {{ .Content }}{{ $seen = true }}{{ end }}{{ end }}\nOutput:"
    ),
    "alpaca": _ALPACA,
    "instruction": (
        "{{ if .System }}### Instruction: {{ .System }}\n\n### Input:\n{{ .Prompt }}\n\n### Response:\n"
        "{{ else }}### Instruction: {{ .Prompt }}\n\n### Response:\n{{ end }}"
    ),
    "plain": "{{ range .Messages }}{{ .Content }}{{ end }}",
}

# Text that starts a new turn: generation must stop there (besides the EOS token).
TURN_STOPS: dict[str, list[str]] = {
    "phi3": ["<|end|>", "<|user|>", "<|assistant|>"],
    "phi3.5": ["<|end|>", "<|user|>", "<|assistant|>"],
    "phi4-mini": ["<|end|>", "<|user|>", "<|assistant|>"],
    "phi4": ["<|im_end|>", "<|im_start|>"],
    "roleplay": ["<|user|>", "<|system|>"],
    "human_assistant": ["### Human:"],
    "instruct": ["Instruct:"],
    "alpaca": ["### Instruction:"],
    "instruction": ["### Instruction:"],
    "plain": [],
}


def template_for(name: str | None) -> str:
    """The Go template of one of our prompt formats; DeployError for one Ollama cannot express."""
    if name not in TEMPLATES:
        raise DeployError(f"template {name!r} has no Ollama TEMPLATE here; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def modelfile(
    *,
    model_file: str,
    template: str | None,
    stops: list[str],
    adapter_file: str | None = None,
    system: str | None = None,
) -> str:
    """Modelfile text: FROM, ADAPTER, TEMPLATE, one PARAMETER stop per stop string, SYSTEM when given."""
    lines = [f"FROM ./{model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER ./{adapter_file}")
    if template is not None:
        body = template_for(template)
        if '"""' in body:
            raise DeployError(f'template {template!r} contains """, which a Modelfile cannot quote')
        lines.append(f'TEMPLATE """{body}"""')
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {_go_string(stop)}")
    if system:
        if '"""' in system:
            raise DeployError('the system prompt contains """, which a Modelfile cannot quote')
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
