"""Prompt weighting text (Deforum v0.6 "text:weight" sub-prompts), without torch: the workflow logs the
split while it plans (log_weighted_subprompts) and diffusion.prompt_conditioning encodes it."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SUBPROMPT = re.compile(
    r"""(?P<prompt>(?:\\:|[^:])+)        # text up to the next unescaped ':'
        (?::+(?P<weight>-?\d+(?:\.\d+)?)?\s*|$)  # ':weight' (missing weight = 1) or end of text""",
    re.VERBOSE,
)


@dataclass
class WeightedPrompt:
    positive: list[tuple[str, float]]
    negative: list[tuple[str, float]]  # negative weights, sign flipped: these go to the unconditional side


def split_weighted_subprompts(text: str, normalize: bool = True) -> WeightedPrompt:
    """Split "a cat:2 a dog:-1" into weighted sub-prompts; `\\:` is a literal colon, weight 0 drops a part.
    With `normalize` the positive weights are scaled to sum to 1; negative weights are never normalised."""
    positive, negative = [], []
    for match in _SUBPROMPT.finditer(text):
        part = match.group("prompt").replace("\\:", ":")
        weight = float(match.group("weight") or 1.0)
        if weight > 0:
            positive.append((part, weight))
        elif weight < 0:
            negative.append((part, -weight))
    if normalize and positive:
        total = sum(w for _, w in positive)
        positive = [(p, w / total) for p, w in positive]
    return WeightedPrompt(positive, negative)


def weighted_parts(prompt: str, negative_prompt: str, *, prompt_weighting: bool,
                   normalize_prompt_weights: bool) -> WeightedPrompt:
    """The sub-prompts of each side of the guidance: the positive parts of `prompt`; its negative-weight parts
    and `negative_prompt` (weight 1) on the unconditional side. Without prompt_weighting, `prompt` is one part."""
    if prompt_weighting:
        parts = split_weighted_subprompts(prompt, normalize_prompt_weights)
    else:
        parts = WeightedPrompt([(prompt, 1.0)], [])
    return WeightedPrompt(parts.positive, parts.negative + ([(negative_prompt, 1.0)] if negative_prompt else []))


def describe(parts: WeightedPrompt) -> list[str]:
    """log_weighted_subprompts' lines: one per sub-prompt, "+0.5 'a cat'" or "-1 'blurry'"."""
    return [f"{sign}{weight:g} {text!r}" for sign, side in (("+", parts.positive), ("-", parts.negative))
            for text, weight in side]


def log_lines(rendered: Iterable[tuple[str, str, str]], settings: Mapping) -> list[str]:
    """log_weighted_subprompts: one line per distinct (prompt, negative prompt) of `rendered`, the (where,
    prompt, negative prompt) of every frame or image in order, naming where it is first used."""
    first_use: dict[tuple[str, str], str] = {}
    for where, prompt, negative in rendered:
        first_use.setdefault((prompt, negative), where)
    return [f"weighted subprompts from {where}: " + "  ".join(describe(weighted_parts(
        prompt, negative, prompt_weighting=settings["prompt_weighting"],
        normalize_prompt_weights=settings["normalize_prompt_weights"]))) for (prompt, negative), where in
        first_use.items()]
