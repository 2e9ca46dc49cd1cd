"""Prompt styles: the same question as plain completion text or in the model's chat template.

Which style suits a model is an empirical question (SmolLM2-Instruct retrieves
worse inside its chat template), so the style is chosen per model and task on
the *baseline* model only (:mod:`pear_lens.evaluation.tasks.calibration`) and recorded with
the results. ``+prefix`` styles end the prompt with the answer's opening (the
KV value's quote), which keeps small models from wandering before answering.
"""
from __future__ import annotations

from enum import Enum

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.items import PromptText
from pear_lens.vocabulary import parse_member


class PromptStyle(str, Enum):
    PLAIN = "plain"
    """The prompt text as is; the tokenizer adds its usual special tokens (e.g. BOS)."""
    PLAIN_PREFIX = "plain+prefix"
    """Plain, followed by a space and the answer prefix."""
    CHAT = "chat"
    """The prompt as the user turn of the tokenizer's chat template, ending with the assistant header."""
    CHAT_PREFIX = "chat+prefix"
    """Chat, with the answer prefix opening the assistant's turn."""

    @property
    def is_chat(self) -> bool:
        return self in (PromptStyle.CHAT, PromptStyle.CHAT_PREFIX)

    @property
    def uses_prefix(self) -> bool:
        return self in (PromptStyle.PLAIN_PREFIX, PromptStyle.CHAT_PREFIX)

    @classmethod
    def parse(cls, value: "str | PromptStyle") -> "PromptStyle":
        return parse_member(cls, value, "prompt style", colon=False)


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def candidate_styles(tokenizer, has_prefix: bool) -> list[PromptStyle]:
    """The styles worth comparing for a tokenizer and a task (with or without an answer prefix)."""
    styles = [PromptStyle.PLAIN] + ([PromptStyle.PLAIN_PREFIX] if has_prefix else [])
    if has_chat_template(tokenizer):
        styles += [PromptStyle.CHAT] + ([PromptStyle.CHAT_PREFIX] if has_prefix else [])
    return styles


def default_style(tokenizer) -> PromptStyle:
    """Without a calibration: the chat template when the model has one (as the issue asks), else plain."""
    return PromptStyle.CHAT if has_chat_template(tokenizer) else PromptStyle.PLAIN


def render(prompt: PromptText, style: PromptStyle, tokenizer) -> str:
    """The full prompt string; :func:`encode` tokenises it the way the style needs."""
    if style.is_chat:
        if not has_chat_template(tokenizer):
            raise PearLensError(f"prompt style {style.value!r} needs a chat template, and this tokenizer has none; "
                                "use plain or plain+prefix")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt.body}], tokenize=False,
                                             add_generation_prompt=True)
        return text + (prompt.answer_prefix if style.uses_prefix else "")
    if style.uses_prefix and prompt.answer_prefix:
        return f"{prompt.body} {prompt.answer_prefix}"
    return prompt.body


def encode(prompt: PromptText, style: PromptStyle, tokenizer) -> list[int]:
    """Token ids of the rendered prompt (chat templates already hold their special tokens)."""
    text = render(prompt, style, tokenizer)
    return list(tokenizer(text, add_special_tokens=not style.is_chat)["input_ids"])
