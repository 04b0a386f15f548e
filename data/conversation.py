"""The normalized form every source is parsed into: a conversation of role-tagged messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from philora.data.errors import DataError

ROLES = ("system", "user", "assistant")

# Role names seen in the wild, mapped onto ours (ShareGPT, oasst1, OpenAI-style files).
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "human": "user",
    "prompter": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}


@dataclass(frozen=True)
class Message:
    """One turn. ``train`` False keeps an assistant turn out of the loss (OpenAI's ``weight: 0``)."""

    role: str
    content: str
    train: bool = True


@dataclass(frozen=True)
class Conversation:
    """A training example before rendering.

    Either ``messages`` (system first if any, then user/assistant turns) or, for plain
    language-modelling data, ``text`` (trained on as a whole). ``origin`` says where it
    came from (``file:line`` or ``file row N``) for error messages. ``meta`` holds what a
    template needs beyond the messages (an Alpaca record's ``instruction`` and ``input``).
    """

    messages: tuple[Message, ...] = ()
    text: str | None = None
    origin: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def has_target(self) -> bool:
        """True when something would be trained on (an assistant turn with ``train``, or text)."""
        if self.text is not None:
            return bool(self.text)
        return any(m.role == "assistant" and m.train for m in self.messages)


def normalize_role(role, where: str) -> str:
    """Map a role name onto system/user/assistant, or raise naming the record."""
    key = str(role).strip().lower()
    if key not in ROLE_ALIASES:
        raise DataError(f"{where}: unknown role {role!r}; expected one of {sorted(ROLE_ALIASES)}")
    return ROLE_ALIASES[key]


def make_conversation(messages: list[Message], origin: str, meta: dict | None = None) -> Conversation:
    """Build a conversation, repairing the common defects and rejecting the rest.

    Empty turns are dropped; consecutive turns of the same role are joined with a blank
    line (some exports split one reply in two); trailing user turns are dropped since
    nothing answers them. A system message anywhere but first is an error.
    """
    cleaned: list[Message] = []
    for index, message in enumerate(messages):
        if not message.content.strip():
            continue
        if message.role == "system" and (cleaned or index > 0 and any(m.content.strip() for m in messages[:index])):
            raise DataError(f"{origin}: a system message may only come first (found at turn {index})")
        if cleaned and cleaned[-1].role == message.role and message.role != "system":
            last = cleaned.pop()
            message = Message(message.role, last.content + "\n\n" + message.content, last.train and message.train)
        cleaned.append(message)
    while cleaned and cleaned[-1].role != "assistant":
        cleaned.pop()
    return Conversation(messages=tuple(cleaned), origin=origin, meta=meta or {})
