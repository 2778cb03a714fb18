"""Tokenised texts as every method sees them: ids, masks, special and prompt flags, offsets and words."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.safe_text import control_character, has_visible_character
from core.sentence_pipeline import PoolingContext


def check_text(value: object, argument: str) -> str:
    """``value`` if it is a non-blank string without control characters (but tab and line breaks), else a
    ValueError naming ``argument``."""
    if not isinstance(value, str):
        raise ValueError(f"{argument} must be a string, got {type(value).__name__}")
    if not has_visible_character(value):
        raise ValueError(f"{argument} is empty or has no visible character (only spaces or zero-width characters)")
    control = control_character(value)
    if control is not None:
        raise ValueError(f"{argument} holds the control character {control} (only tab and line breaks may be in a "
                         f"text)")
    return value


@dataclass
class TokenBatch:
    """Tokenised texts, padded to a common length S (on the tokenizer's padding side).

    ``input_ids``, ``attention_mask``: (B, S) long tensors on the model's device; ``special``: (B, S) bool,
    True for the tokenizer's own special tokens. Per text, over its real tokens only (padding left out, on
    either side): ``tokens``; ``offsets``, (start, end) character spans into the text itself ((0, 0) for special
    and prompt tokens); ``word_ids``, the pre-tokenizer word of each token (None for special and prompt tokens);
    ``truncated``, whether it exceeded the model's maximum length. ``prompts``: per text, the prompt text
    prepended to it ("" for none); ``prompt``: (B, S) bool, True for the prompt's own tokens;
    ``prompt_length``: (B,) long, the leading tokens sentence-transformers counts as the prompt (the prompt
    tokenised alone, without a trailing special token; 0 without a prompt); ``first``: (B,) long, the index of
    each row's first real token (its left padding).
    """

    texts: list[str]
    tokens: list[list[str]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special: torch.Tensor
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int | None]]
    truncated: list[bool]
    prompts: list[str] | None = None
    prompt: torch.Tensor | None = None
    prompt_length: torch.Tensor | None = None
    first: torch.Tensor | None = None

    def __post_init__(self) -> None:
        mask = self.attention_mask
        if self.prompts is None:
            self.prompts = [""] * len(self.texts)
        if self.prompt is None:
            self.prompt = torch.zeros_like(mask, dtype=torch.bool)
        if self.prompt_length is None:
            self.prompt_length = torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
        if self.first is None:
            self.first = mask.to(torch.int).argmax(dim=1).long()

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.tokens]

    def real(self, row: int) -> slice:
        """The positions of row ``row``'s real tokens (its padding excluded, on either side)."""
        start = int(self.first[row])
        return slice(start, start + len(self.tokens[row]))

    def pooling_context(self) -> PoolingContext:
        return PoolingContext(attention_mask=self.attention_mask, first=self.first, prompt_length=self.prompt_length)

    def repeat(self, times: int) -> TokenBatch:
        """The batch with each row repeated ``times`` times in a row (for integration paths)."""
        return self.take([row for row in range(len(self.texts)) for _ in range(times)])

    def take(self, rows: list[int]) -> TokenBatch:
        """The batch of rows ``rows`` (indices into this batch, in that order, repeats allowed)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)

        def pick(values: list) -> list:
            return [values[row] for row in rows]

        return TokenBatch(
            texts=pick(self.texts), tokens=pick(self.tokens), input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index], special=self.special[index], offsets=pick(self.offsets),
            word_ids=pick(self.word_ids), truncated=pick(self.truncated), prompts=pick(self.prompts),
            prompt=self.prompt[index], prompt_length=self.prompt_length[index], first=self.first[index],
        )
