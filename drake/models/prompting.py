"""Prompt and answer formatting: plain text for tiny zoo models, the chat template for hub models.

The canonical row's prompt already holds one ``<image>`` per image in place, so both formats keep it verbatim
and the processor expands each placeholder to the vision tower's token count.
"""

from __future__ import annotations

from typing import Any


def _chat_template(processor: Any) -> str | None:
    tok = getattr(processor, "tokenizer", processor)
    return getattr(tok, "chat_template", None) or getattr(processor, "chat_template", None)


def uses_chat_template(processor: Any) -> bool:
    """True for hub checkpoints that ship a chat template; the tiny zoo models have none."""
    return bool(_chat_template(processor))


def format_prompt(processor: Any, prompt: str) -> str:
    """The text fed to the processor for ``prompt``: one user turn + generation prompt, or the prompt as is."""
    if not uses_chat_template(processor):
        return prompt
    tok = getattr(processor, "tokenizer", processor)
    messages = [{"role": "user", "content": prompt}]
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_answer(processor: Any, answer: str) -> str:
    """The answer text that follows the formatted prompt (a space separates it from ``Your answer is:``)."""
    return answer if uses_chat_template(processor) else " " + answer


def add_special_tokens(processor: Any) -> bool:
    """A chat template already writes BOS and role markers; plain prompts get the tokenizer's defaults."""
    return not uses_chat_template(processor)
