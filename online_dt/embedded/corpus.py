"""A synthetic corpus of short review-like texts for the embedded default model.

**This corpus is synthetic. It is not natural-language data** and nothing about real products,
films or places can be learned from it. Each text is produced by a few hand-written templates
filled from small word lists defined in this module. Its only purpose is to train a tiny base
language model offline, without downloads (:mod:`online_dt.embedded.bootstrap`), whose
completions vary widely in sentiment, so that reward conditioning on VADER sentiment can be
learned and tested on a laptop.

A text is an *opening* (the prompt: a neutral phrase naming a film, book, dish, hotel, product,
game or event, such as ``"I thought the pasta was"``; every opening scores exactly 0 with VADER)
followed by a *completion* of one to three clauses (``" really wonderful, and the service was
good."``). Every text draws a latent mood, uniform in ``[-1, 1]``, that biases each word choice
towards one end of VADER's valence range, so a whole text is coherent in sentiment while the
corpus covers the range from strongly negative to strongly positive (VADER compound of the
completions: mean about 0, standard deviation about 0.7). The grammar is small and regular so a
model of about a million parameters learns it in a few minutes of CPU training.

The word lists are grouped into seven valence levels, ``-3`` (strongly negative) to ``+3``
(strongly positive); level 0 holds words absent from VADER's lexicon. The levels were chosen with
the VADER lexicon's valences (``tests/test_bootstrap.py`` checks that every word sits on the side
of zero its level claims).

Pure Python; importing this module loads neither torch nor VADER.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ADJECTIVES",
    "CORPUS_VERSION",
    "Review",
    "all_openings",
    "embedded_prompts",
    "generate_reviews",
    "vader_compound",
]

CORPUS_VERSION = 1
"""Bumped whenever the generator's output changes; part of the embedded model's cache key."""

# ---------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------

# Subjects of the openings, by domain. Every subject is a singular noun.
_SUBJECTS: dict[str, tuple[str, ...]] = {
    "film": ("movie", "film", "documentary", "sequel", "mystery", "drama", "cartoon", "musical"),
    "book": ("book", "paperback", "memoir", "story", "cookbook", "biography"),
    "food": (
        "pasta",
        "pizza",
        "burger",
        "soup",
        "steak",
        "sushi",
        "restaurant",
        "cafe",
        "bakery",
        "diner",
    ),
    "hotel": ("hotel", "room", "resort", "hostel", "cabin", "apartment"),
    "product": (
        "phone",
        "laptop",
        "blender",
        "headset",
        "camera",
        "vacuum",
        "jacket",
        "mattress",
        "printer",
        "watch",
    ),
    "game": ("game", "puzzle game", "board game", "shooter", "racing game", "card game"),
    "event": ("concert", "album", "ballet", "exhibition", "museum", "tour", "podcast"),
}

# Aspects mentioned in later clauses, by domain: (noun phrase, is_plural).
_ASPECTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "film": (
        ("acting", False),
        ("plot", False),
        ("ending", False),
        ("soundtrack", False),
        ("dialogue", False),
        ("pacing", False),
        ("script", False),
        ("cast", False),
        ("visuals", True),
        ("characters", True),
    ),
    "book": (
        ("writing", False),
        ("plot", False),
        ("ending", False),
        ("pacing", False),
        ("prose", False),
        ("cover", False),
        ("characters", True),
        ("chapters", True),
    ),
    "food": (
        ("service", False),
        ("staff", False),
        ("sauce", False),
        ("price", False),
        ("waiter", False),
        ("menu", False),
        ("bread", False),
        ("coffee", False),
        ("portions", True),
        ("desserts", True),
    ),
    "hotel": (
        ("staff", False),
        ("bed", False),
        ("view", False),
        ("breakfast", False),
        ("pool", False),
        ("location", False),
        ("shower", False),
        ("lobby", False),
        ("towels", True),
    ),
    "product": (
        ("battery", False),
        ("screen", False),
        ("design", False),
        ("price", False),
        ("sound", False),
        ("setup", False),
        ("case", False),
        ("charger", False),
        ("manual", False),
        ("buttons", True),
    ),
    "game": (
        ("story", False),
        ("music", False),
        ("ending", False),
        ("multiplayer", False),
        ("controls", True),
        ("graphics", True),
        ("levels", True),
        ("puzzles", True),
    ),
    "event": (
        ("crowd", False),
        ("venue", False),
        ("sound", False),
        ("lighting", False),
        ("guide", False),
        ("seats", True),
        ("songs", True),
        ("tickets", True),
    ),
}

# A neutral word for "the whole experience" per domain, used in "it was a wonderful meal".
_EXPERIENCE: dict[str, tuple[str, ...]] = {
    "film": ("experience", "evening", "watch"),
    "book": ("experience", "read", "week"),
    "food": ("experience", "meal", "evening", "lunch"),
    "hotel": ("experience", "stay", "weekend", "trip"),
    "product": ("experience", "purchase", "device"),
    "game": ("experience", "weekend", "game"),
    "event": ("experience", "evening", "night", "afternoon"),
}

# Neutral filler clauses (no word in VADER's lexicon), per domain.
_FILLERS: dict[str, tuple[str, ...]] = {
    "film": (
        "I watched it on a Friday night",
        "it runs about two hours",
        "we saw it at the cinema downtown",
        "I watched it with my brother",
    ),
    "book": (
        "I read it in two days",
        "it has about three hundred pages",
        "I read it on the train",
        "my sister gave it to me",
    ),
    "food": (
        "we went there on a Tuesday",
        "we ordered the special",
        "we sat by the window",
        "I went there for lunch",
    ),
    "hotel": (
        "we stayed there for three nights",
        "we checked in on a Monday",
        "our room was on the fifth floor",
        "we booked it in March",
    ),
    "product": (
        "I bought it last month",
        "I have used it every day since March",
        "it arrived on a Monday",
        "I ordered it online",
    ),
    "game": (
        "I played it for two weeks",
        "I finished it in ten hours",
        "I played it with my cousin",
        "it took me a month to finish",
    ),
    "event": (
        "we went on a Saturday",
        "it lasted about three hours",
        "we sat near the back",
        "I went with my parents",
    ),
}

ADJECTIVES: dict[int, tuple[str, ...]] = {
    3: (
        "wonderful",
        "amazing",
        "excellent",
        "superb",
        "brilliant",
        "outstanding",
        "perfect",
        "delightful",
        "lovely",
        "great",
        "charming",
        "beautiful",
        "gorgeous",
        "magnificent",
        "marvelous",
        "awesome",
        "splendid",
        "remarkable",
        "fantastic",
    ),
    2: (
        "good",
        "nice",
        "pleasant",
        "enjoyable",
        "fun",
        "clever",
        "comfortable",
        "impressive",
        "terrific",
        "satisfying",
        "elegant",
        "sweet",
        "neat",
        "clean",
        "easy",
        "useful",
        "interesting",
        "creative",
        "lively",
        "fabulous",
    ),
    1: ("fine", "okay", "solid", "fair", "warm", "fresh", "calm", "cool"),
    0: (
        "average",
        "ordinary",
        "standard",
        "typical",
        "plain",
        "long",
        "short",
        "simple",
        "quiet",
        "busy",
        "predictable",
        "basic",
        "familiar",
        "loud",
        "slow",
        "expensive",
        "cheap",
        "crowded",
        "small",
        "modern",
    ),
    -1: (
        "noisy",
        "awkward",
        "confusing",
        "weird",
        "strange",
        "odd",
        "boring",
        "dreary",
        "messy",
        "empty",
        "careless",
    ),
    -2: (
        "dull",
        "terrible",
        "awful",
        "dreadful",
        "weak",
        "annoying",
        "dirty",
        "sad",
        "painful",
        "useless",
        "worthless",
        "frustrating",
        "unpleasant",
        "bitter",
        "lame",
        "uncomfortable",
        "disappointing",
        "harsh",
        "inferior",
    ),
    -3: (
        "horrible",
        "disgusting",
        "pathetic",
        "bad",
        "ugly",
        "crappy",
        "horrid",
        "vile",
        "lousy",
        "nasty",
        "rotten",
        "stupid",
        "grim",
        "miserable",
    ),
}
"""Adjectives by valence level (``-3`` strongly negative ... ``+3`` strongly positive)."""

# Intensifiers for strong words (VADER boosters) and dampeners for mild ones.
# (the last two are not used before a noun: "a so good meal")
_BOOSTERS = ("really", "very", "absolutely", "extremely", "incredibly", "so", "quite")
_DAMPENERS = ("somewhat", "slightly")
_NEUTRAL_ADVERBS = ("fairly", "rather", "quite")  # the last is not used before a noun

# Evaluative nouns: "a real masterpiece", "a total disaster".
_NOUNS: dict[int, tuple[str, ...]] = {
    3: ("masterpiece", "delight", "joy", "pleasure", "winner", "success"),
    2: ("treat", "favorite", "triumph"),
    -2: ("mess", "waste of money", "flop", "mistake", "problem"),
    -3: ("disaster", "failure", "tragedy", "scam", "pain"),
}
_NOUN_MODIFIER = {3: "real", 2: "real", -2: "total", -3: "complete"}

# "I loved it", "I hated it".
_VERBS: dict[int, tuple[str, ...]] = {
    3: ("loved", "adored"),
    2: ("enjoyed", "liked"),
    -2: ("regretted", "despised"),
    -3: ("hated",),
}

# Openings. "{s}" is the subject; a trailing "was"/"is" means the completion starts with a
# predicate ("really wonderful"), otherwise it starts with the verb ("was really wonderful").
_OPENING_TEMPLATES: tuple[str, ...] = (
    "The {s} was",
    "This {s} is",
    "I thought the {s} was",
    "Frankly, the {s} was",
    "Overall, this {s} was",
    "To be frank, the {s} was",
    "In my opinion, the {s} is",
    "My sister said the {s} was",
    "I found the {s}",
    "The {s}",
    "Frankly, this {s}",
    "I thought the {s}",
    "Last week, the {s}",
    "So far, this {s}",
)

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
    for template in _OPENING_TEMPLATES:
        tense = "is" if template.endswith(" is") or template.startswith("So far") else "was"
        for domain, subjects in _SUBJECTS.items():
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
        boosters = _BOOSTERS[:-2] if attributive else _BOOSTERS
        return f"{rng.choice(boosters)} {adj}"
    if abs(level) == 1 and r < 0.35:
        return f"{rng.choice(_DAMPENERS)} {adj}"
    if level == 0 and r < 0.3:
        adverbs = _NEUTRAL_ADVERBS[:-1] if attributive else _NEUTRAL_ADVERBS
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
    if r < 0.4 and level in _NOUNS:
        noun = rng.choice(_NOUNS[level])
        modifier = _NOUN_MODIFIER[level]
        return f"{_article(modifier)} {modifier} {noun}", level
    if r < 0.55:
        adj = _adjective_phrase(rng, level, attributive=True)
        noun = rng.choice(_EXPERIENCE[domain])
        return f"{_article(adj)} {adj} {noun}", level
    return _adjective_phrase(rng, level), level


def _extra_clause(
    rng: random.Random, mood: float, domain: str, tense: str, used_aspects: set[str]
) -> tuple[str, int]:
    """A follow-up clause (lower case, no punctuation): returns (text, valence level)."""
    level = _draw_level(rng, mood)
    r = rng.random()
    if level == 0 and r < 0.4:
        return rng.choice(_FILLERS[domain]), 0
    if r < 0.55:
        aspect, plural = rng.choice([a for a in _ASPECTS[domain] if a[0] not in used_aspects])
        used_aspects.add(aspect)
        verb = {"was": "were", "is": "are"}[tense] if plural else tense
        return f"the {aspect} {verb} {_adjective_phrase(rng, level)}", level
    if r < 0.7 and level in _VERBS:
        return f"I {rng.choice(_VERBS[level])} it", level
    if r < 0.8 and level != 0:
        if level >= 2:
            return rng.choice(("I would recommend it", "I would recommend it to anyone")), level
        if level == 1:
            return "I might recommend it", level
        if level == -1:
            return "I would probably avoid it", level
        return rng.choice(("I would avoid it", "I would never recommend it")), level
    adj = _adjective_phrase(rng, level, attributive=True)
    return f"it {tense} {_article(adj)} {adj} {rng.choice(_EXPERIENCE[domain])}", level


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


def vader_compound(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment (in ``[-1, 1]``) of each text, the project's default reward.

    Raises:
        ImportError: ``vaderSentiment`` is not installed.
    """
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]
