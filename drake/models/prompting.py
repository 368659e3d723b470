"""Prompt and answer formatting: plain text for tiny zoo models, the chat template for hub models.

The canonical row's prompt already holds one ``<image>`` per image in place, so both formats keep it verbatim
and the processor expands each placeholder to the vision tower's token count.
"""

from __future__ import annotations

from typing import Any

from drake.errors import DrakeError


def _chat_template(processor: Any) -> str | None:
    tok = getattr(processor, "tokenizer", processor)
    return getattr(tok, "chat_template", None) or getattr(processor, "chat_template", None)


def uses_chat_template(processor: Any) -> bool:
    """True for hub checkpoints that ship a chat template; the tiny zoo models have none."""
    return bool(_chat_template(processor))


def _render(processor: Any, content: Any) -> str:
    messages = [{"role": "user", "content": content}]
    if getattr(processor, "chat_template", None) and hasattr(processor, "apply_chat_template"):
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tok = getattr(processor, "tokenizer", processor)
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompt(processor: Any, prompt: str) -> str:
    """The text fed to the processor for ``prompt``: one user turn + generation prompt, or the prompt as is.

    Multimodal templates (LLaVA processors) expect a list of typed parts, text-only ones (Llama-3, Qwen
    tokenizers) a string: both are tried, and the first rendering that keeps the prompt verbatim wins.
    """
    if not uses_chat_template(processor):
        return prompt
    for content in ([{"type": "text", "text": prompt}], prompt):
        try:
            text = _render(processor, content)
        except Exception:  # a template that rejects this content shape
            continue
        if prompt.strip() in text:
            return text
    raise DrakeError(
        "the model's chat template drops the prompt text; pass a processor without chat_template"
    )


def format_answer(processor: Any, answer: str) -> str:
    """The answer text that follows the formatted prompt (a space separates it from ``Your answer is:``)."""
    return answer if uses_chat_template(processor) else " " + answer


def add_special_tokens(processor: Any) -> bool:
    """A chat template already writes BOS and role markers; plain prompts get the tokenizer's defaults."""
    return not uses_chat_template(processor)
