"""The word lists of the synthetic corpus (:mod:`online_dt.embedded.corpus`).

Sentiment-bearing words are grouped into seven valence levels, ``-3`` (strongly negative) to
``+3`` (strongly positive); level 0 holds words absent from VADER's lexicon. The levels were
chosen with the VADER lexicon's valences (``tests/test_bootstrap.py`` checks that every word
sits on the side of zero its level claims). Everything else (subjects, aspects, fillers,
opening templates) is neutral.

The order of every list is part of the corpus: the generator draws by index, so reordering or
editing a list changes the generated texts (bump ``CORPUS_VERSION`` when doing so).
"""

from __future__ import annotations

# Subjects of the openings, by domain. Every subject is a singular noun.
SUBJECTS: dict[str, tuple[str, ...]] = {
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
ASPECTS: dict[str, tuple[tuple[str, bool], ...]] = {
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
EXPERIENCE: dict[str, tuple[str, ...]] = {
    "film": ("experience", "evening", "watch"),
    "book": ("experience", "read", "week"),
    "food": ("experience", "meal", "evening", "lunch"),
    "hotel": ("experience", "stay", "weekend", "trip"),
    "product": ("experience", "purchase", "device"),
    "game": ("experience", "weekend", "game"),
    "event": ("experience", "evening", "night", "afternoon"),
}

# Neutral filler clauses (no word in VADER's lexicon), per domain.
FILLERS: dict[str, tuple[str, ...]] = {
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
BOOSTERS = ("really", "very", "absolutely", "extremely", "incredibly", "so", "quite")
DAMPENERS = ("somewhat", "slightly")
NEUTRAL_ADVERBS = ("fairly", "rather", "quite")  # the last is not used before a noun

# Evaluative nouns: "a real masterpiece", "a total disaster".
NOUNS: dict[int, tuple[str, ...]] = {
    3: ("masterpiece", "delight", "joy", "pleasure", "winner", "success"),
    2: ("treat", "favorite", "triumph"),
    -2: ("mess", "waste of money", "flop", "mistake", "problem"),
    -3: ("disaster", "failure", "tragedy", "scam", "pain"),
}
NOUN_MODIFIER = {3: "real", 2: "real", -2: "total", -3: "complete"}

# "I loved it", "I hated it".
VERBS: dict[int, tuple[str, ...]] = {
    3: ("loved", "adored"),
    2: ("enjoyed", "liked"),
    -2: ("regretted", "despised"),
    -3: ("hated",),
}

# Openings. "{s}" is the subject; a trailing "was"/"is" means the completion starts with a
# predicate ("really wonderful"), otherwise it starts with the verb ("was really wonderful").
OPENING_TEMPLATES: tuple[str, ...] = (
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
