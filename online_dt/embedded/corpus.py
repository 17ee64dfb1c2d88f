"""A synthetic corpus of short review-like texts for the embedded default model.

**This corpus is synthetic. It is not natural-language data** and nothing about real products,
films or places can be learned from it. Each text is produced by a few hand-written templates
filled from small word lists (:mod:`online_dt.embedded.words`). Its only purpose is to train a
tiny base language model offline, without downloads (:mod:`online_dt.embedded.bootstrap`),
whose completions vary widely in sentiment, so that reward conditioning on VADER sentiment can
be learned and tested on a laptop.

A text is an *opening* (the prompt: a neutral phrase naming a film, book, dish, hotel, product,
game or event, such as ``"I thought the pasta was"``; every opening scores exactly 0 with VADER)
followed by a *completion* of one to three clauses (``" really wonderful, and the service was
good."``). Every text draws a latent mood, uniform in ``[-1, 1]``, that biases each word choice
towards one end of VADER's valence range, so a whole text is coherent in sentiment while the
corpus covers the range from strongly negative to strongly positive (VADER compound of the
completions: mean about 0, standard deviation about 0.7). The grammar is small and regular so a
model of about a million parameters learns it in a few minutes of CPU training.

The sentiment-bearing words are grouped into seven valence levels, ``-3`` (strongly negative)
to ``+3`` (strongly positive); a text's mood picks the levels of its words.

Pure Python; importing this module loads neither torch nor VADER.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from online_dt.embedded.words import (
    ADJECTIVES,
    ASPECTS,
    BOOSTERS,
    DAMPENERS,
    EXPERIENCE,
    FILLERS,
    NEUTRAL_ADVERBS,
    NOUN_MODIFIER,
    NOUNS,
    OPENING_TEMPLATES,
    SUBJECTS,
    VERBS,
)

__all__ = [
    "CORPUS_VERSION",
    "Review",
    "all_openings",
    "embedded_prompts",
    "generate_reviews",
]

CORPUS_VERSION = 1
"""Bumped whenever the generator's output changes; part of the embedded model's cache key."""

_LEVELS = (-3, -2, -1, 0, 1, 2, 3)
# Width of the mood's preference over valence levels, in mood units (a level k sits at k / 3).
_MOOD_WIDTH = 0.22


@dataclass(frozen=True)
class Review:
    """One synthetic review: an opening (the prompt) and its completion.

    Attributes:
        prompt: the neutral opening, without trailing space (``"The movie was"``).
        completion: the rest, starting with a space (``" really wonderful."``).
    """

    prompt: str
    completion: str

    @property
    def text(self) -> str:
        """The whole review: ``prompt + completion``."""
        return self.prompt + self.completion


# ---------------------------------------------------------------------------------------------
# openings
# ---------------------------------------------------------------------------------------------


def _opening_table() -> list[tuple[str, str, str]]:
    """All (opening, domain, tense) triples in a fixed canonical order; tense is "was"/"is"."""
    out: list[tuple[str, str, str]] = []
    for template in OPENING_TEMPLATES:
        tense = "is" if template.endswith(" is") or template.startswith("So far") else "was"
        for domain, subjects in SUBJECTS.items():
            for subject in subjects:
                out.append((template.format(s=subject), domain, tense))
    return out


_OPENINGS = _opening_table()


def all_openings() -> list[str]:
    """Every opening the corpus uses, in a fixed canonical order (distinct strings)."""
    return [o for o, _, _ in _OPENINGS]


def embedded_prompts(n: int | None = None, seed: int = 0) -> list[str]:
    """Distinct review openings to use as prompts, in a seeded shuffled order.

    The strings are exactly the openings :func:`generate_reviews` uses (no trailing space), so
    the embedded model has seen every one of them in training.

    Args:
        n: how many; ``None`` returns all of them (``len(all_openings())``, 742).
        seed: the order; the same seed always gives the same list.

    Raises:
        ValueError: ``n`` is negative or larger than the number of distinct openings.
    """
    openings = all_openings()
    if n is not None and not 0 <= n <= len(openings):
        raise ValueError(f"n must be between 0 and {len(openings)}, got {n}")
    random.Random(seed).shuffle(openings)
    return openings if n is None else openings[:n]


# ---------------------------------------------------------------------------------------------
# completions
# ---------------------------------------------------------------------------------------------


def _draw_level(rng: random.Random, mood: float, allowed: Sequence[int] = _LEVELS) -> int:
    """A valence level near ``mood``: weights ``exp(-(k/3 - mood)^2 / (2 w^2))``."""
    weights = [math.exp(-((k / 3 - mood) ** 2) / (2 * _MOOD_WIDTH**2)) for k in allowed]
    return rng.choices(list(allowed), weights=weights)[0]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _adjective_phrase(rng: random.Random, level: int, attributive: bool = False) -> str:
    """An adjective of ``level``, sometimes with an intensifier suited to its strength.

    ``attributive``: the phrase goes between an article and a noun ("a really good meal"), where
    "so" and "quite" would be ungrammatical.
    """
    adj = rng.choice(ADJECTIVES[level])
    r = rng.random()
    if abs(level) >= 2 and r < 0.5:
        boosters = BOOSTERS[:-2] if attributive else BOOSTERS
        return f"{rng.choice(boosters)} {adj}"
    if abs(level) == 1 and r < 0.35:
        return f"{rng.choice(DAMPENERS)} {adj}"
    if level == 0 and r < 0.3:
        adverbs = NEUTRAL_ADVERBS[:-1] if attributive else NEUTRAL_ADVERBS
        return f"{rng.choice(adverbs)} {adj}"
    return adj


def _predicate(rng: random.Random, mood: float, domain: str) -> tuple[str, int]:
    """The first clause's predicate (after "was"/"is"): returns (text, valence level)."""
    level = _draw_level(rng, mood)
    r = rng.random()
    if r < 0.05 and level != 0:
        # sparing negation: "not bad" for a positive mood, "not good" for a negative one
        return f"not {rng.choice(ADJECTIVES[-level])}", level
    if r < 0.25:
        other = _draw_level(rng, mood)
        if (other > 0) != (level > 0) and other * level != 0:
            other = level
        first, second = rng.choice(ADJECTIVES[level]), rng.choice(ADJECTIVES[other])
        if first == second:
            return _adjective_phrase(rng, level), level
        return f"{first} and {second}", level
    if r < 0.4 and level in NOUNS:
        noun = rng.choice(NOUNS[level])
        modifier = NOUN_MODIFIER[level]
        return f"{_article(modifier)} {modifier} {noun}", level
    if r < 0.55:
        adj = _adjective_phrase(rng, level, attributive=True)
        noun = rng.choice(EXPERIENCE[domain])
        return f"{_article(adj)} {adj} {noun}", level
    return _adjective_phrase(rng, level), level


def _extra_clause(
    rng: random.Random, mood: float, domain: str, tense: str, used_aspects: set[str]
) -> tuple[str, int]:
    """A follow-up clause (lower case, no punctuation): returns (text, valence level)."""
    level = _draw_level(rng, mood)
    r = rng.random()
    if level == 0 and r < 0.4:
        return rng.choice(FILLERS[domain]), 0
    if r < 0.55:
        aspect, plural = rng.choice([a for a in ASPECTS[domain] if a[0] not in used_aspects])
        used_aspects.add(aspect)
        verb = {"was": "were", "is": "are"}[tense] if plural else tense
        return f"the {aspect} {verb} {_adjective_phrase(rng, level)}", level
    if r < 0.7 and level in VERBS:
        return f"I {rng.choice(VERBS[level])} it", level
    if r < 0.8 and level != 0:
        if level >= 2:
            return rng.choice(("I would recommend it", "I would recommend it to anyone")), level
        if level == 1:
            return "I might recommend it", level
        if level == -1:
            return "I would probably avoid it", level
        return rng.choice(("I would avoid it", "I would never recommend it")), level
    adj = _adjective_phrase(rng, level, attributive=True)
    return f"it {tense} {_article(adj)} {adj} {rng.choice(EXPERIENCE[domain])}", level


def _completion(rng: random.Random, mood: float, domain: str, tense: str, verb_first: bool) -> str:
    predicate, prev = _predicate(rng, mood, domain)
    parts = [f" {tense} {predicate}" if verb_first else f" {predicate}"]
    n_extra = rng.choices((1, 2), weights=(0.35, 0.65))[0]
    used_aspects: set[str] = set()
    used_clauses: set[str] = set()
    for _ in range(n_extra):
        clause, level = _extra_clause(rng, mood, domain, tense, used_aspects)
        while clause in used_clauses:
            clause, level = _extra_clause(rng, mood, domain, tense, used_aspects)
        used_clauses.add(clause)
        if level * prev < 0:
            joiner = rng.choice((", but ", ". But "))
        else:
            joiner = rng.choice((", and ", ". ", ". "))
        if joiner == ". ":
            clause = clause[0].upper() + clause[1:]
        parts.append(joiner + clause)
        if level != 0:
            prev = level
    end = "!" if abs(mood) > 0.5 and rng.random() < abs(mood) - 0.3 else "."
    return "".join(parts) + end


def generate_reviews(n: int, seed: int) -> list[Review]:
    """``n`` synthetic reviews; the same ``(n, seed)`` always gives the same list.

    Each review draws an opening uniformly from :func:`all_openings` and a mood uniformly from
    ``[-1, 1]``; the mood biases every sentiment-bearing word of the completion. Texts are
    about 7 to 25 words long (median 16), 19 tokens on average with the embedded tokenizer.

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out: list[Review] = []
    for _ in range(n):
        opening, domain, tense = rng.choice(_OPENINGS)
        verb_first = not (opening.endswith((" was", " is")) or opening.startswith("I found"))
        mood = rng.uniform(-1.0, 1.0)
        out.append(Review(opening, _completion(rng, mood, domain, tense, verb_first)))
    return out
