"""Reward models: score (prompt, completion) pairs with one finite float each.

A reward model is any object with a ``score(prompts, completions) -> list[float]`` method (the
:class:`RewardModel` protocol). The training loop never calls ``score`` directly but goes
through :func:`score_checked`, which checks the inputs, calls the model and validates what came
back (:func:`validate_scores`): a wrong number of scores, a value that is not a number, NaN or
infinity raises :class:`RewardModelError` naming the offending samples, so a broken reward model
fails loudly at the batch that broke it instead of silently poisoning the reward normaliser.

Built-in models:

* :class:`VaderSentimentReward`: VADER compound sentiment in ``[-1, 1]`` (Hutto & Gilbert,
  2014). Rule based, CPU only, no downloads.
* :class:`HFClassifierReward`: a Hugging Face sequence classifier's probability (``[0, 1]``) or
  raw logit for one label.

:func:`load_reward_model` builds one of these, or a user class named by
``package.module:ClassName``, from a :class:`~online_dt.config.RewardModelConfig`.

Importing this module is cheap: ``vaderSentiment``, ``torch`` and ``transformers`` are imported
by the classes that need them, when they are constructed.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from online_dt.config import RewardModelConfig

if TYPE_CHECKING:
    import torch

__all__ = [
    "HFClassifierReward",
    "RewardModel",
    "RewardModelError",
    "RewardModelLoadError",
    "VaderSentimentReward",
    "load_reward_model",
    "score_checked",
    "validate_scores",
]

# how many offending samples an error message shows (all of them are kept on the exception)
_SHOWN_SAMPLES = 3
# characters of a prompt or completion shown per sample in an error message
_SHOWN_CHARS = 40


@runtime_checkable
class RewardModel(Protocol):
    """Anything that scores (prompt, completion) pairs.

    Contract of ``score``:

    * Inputs: ``prompts`` and ``completions`` are sequences of ``str`` of equal length ``N``;
      sample ``i`` is the completion ``completions[i]`` generated for ``prompts[i]`` (the
      completion alone, without the prompt in front). ``N`` may be 0.
    * Output: a ``list`` of ``N`` finite floats, one per sample, in the order of the inputs.
      Higher means better. The units and range are the model's own and must be documented by
      the model (VADER: ``[-1, 1]``; a classifier's probability: ``[0, 1]``; a logit: all
      reals). Numpy or torch scalars are accepted by :func:`validate_scores` and converted.
    * Errors: raising any exception means the whole batch failed and no score of it is used;
      there is no way to fail a single sample. Returning NaN, an infinity, a non-number or the
      wrong number of scores is a bug of the model, reported by :func:`score_checked` as
      :class:`RewardModelError`.
    * ``score`` must not modify its inputs. It may be called many times with batches of any
      size, so expensive set-up belongs in the constructor.
    """

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Score each (prompt, completion) pair; see the class docstring for the contract."""
        ...


class RewardModelError(ValueError):
    """A reward model returned unusable scores for a batch.

    Attributes:
        indices: indices (into the batch) of the offending samples. For ``wrong_count`` and
            ``not_a_sequence`` the scores cannot be matched to samples, so every sample of the
            batch is listed.
        reason: what was wrong: ``"nan"``, ``"inf"`` (either sign), ``"not_a_number"`` (``None``,
            a string, a bool, a nested list, ...), ``"wrong_count"`` (not one score per sample)
            or ``"not_a_sequence"`` (``score`` did not return a list-like).
        samples: ``(prompt, completion)`` of every offending sample, in the order of
            ``indices``; the message shows only the first few.
        model_name: the name of the model used in the message.
    """

    def __init__(
        self,
        message: str,
        *,
        indices: Sequence[int],
        reason: str,
        samples: Sequence[tuple[str, str]],
        model_name: str = "",
    ) -> None:
        super().__init__(message)
        self.indices: list[int] = list(indices)
        self.reason: str = reason
        self.samples: list[tuple[str, str]] = list(samples)
        self.model_name: str = model_name


class RewardModelLoadError(RuntimeError):
    """A reward model could not be built: a classifier failed to load (path missing, Hub
    unreachable, not a sequence classifier), or a custom class could not be imported or
    constructed. The message names what was being loaded and the underlying cause."""


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _short(text: str) -> str:
    """``repr`` of ``text`` cut to about ``_SHOWN_CHARS`` characters."""
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return repr(text)


def _describe_samples(
    indices: Sequence[int], prompts: Sequence[str], completions: Sequence[str]
) -> str:
    shown = [f"#{i} {_short(prompts[i])} -> {_short(completions[i])}" for i in indices]
    text = ", ".join(shown[:_SHOWN_SAMPLES])
    if len(shown) > _SHOWN_SAMPLES:
        text += f", ... ({len(shown) - _SHOWN_SAMPLES} more)"
    return text


def _to_float(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is not a real number.

    Accepts Python and numpy reals and 0-d / one-element arrays and tensors (via ``.item()``);
    rejects ``None``, strings, bools and anything else.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    count = numel() if callable(numel) else size if isinstance(size, int) else None
    if callable(item) and count == 1:
        try:
            inner = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return _to_float(inner)
    return None


def validate_scores(
    scores: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    model_name: str,
) -> list[float]:
    """Check a reward model's output for one batch and return it as a list of floats.

    Args:
        scores: what ``score`` returned: a list or tuple of numbers (Python, numpy or 0-d torch
            scalars) or a 1-d numpy array / torch tensor.
        prompts: the batch's prompts (used to name offending samples).
        completions: the batch's completions, same length as ``prompts``.
        model_name: name of the model, for the message (e.g. its class name).

    Returns:
        ``len(prompts)`` finite Python floats, in order.

    Raises:
        RewardModelError: with ``reason`` ``"not_a_sequence"`` or ``"wrong_count"`` when the
            output is not one score per sample; otherwise ``"not_a_number"``, ``"nan"`` or
            ``"inf"`` (checked in that order; the first kind found is reported, with every
            sample of that kind in ``indices``).
    """
    n = len(prompts)
    everything = list(range(n))
    if hasattr(scores, "tolist") and not isinstance(scores, list | tuple):
        # a numpy array or torch tensor: a 1-d one becomes a list of floats
        scores = scores.tolist()
    if isinstance(scores, str | bytes) or not isinstance(scores, Sequence):
        raise RewardModelError(
            f"reward model {model_name} returned {type(scores).__name__} instead of a list of"
            f" {n} scores",
            indices=everything,
            reason="not_a_sequence",
            samples=list(zip(prompts, completions, strict=True)),
            model_name=model_name,
        )
    if len(scores) != n:
        message = f"reward model {model_name} returned {len(scores)} scores for {n} samples"
        if n:
            message += f"; the batch was: {_describe_samples(everything, prompts, completions)}"
        raise RewardModelError(
            message,
            indices=everything,
            reason="wrong_count",
            samples=list(zip(prompts, completions, strict=True)),
            model_name=model_name,
        )

    values: list[float] = []
    bad: dict[str, list[int]] = {"not_a_number": [], "nan": [], "inf": []}
    for i, raw in enumerate(scores):
        value = _to_float(raw)
        if value is None:
            bad["not_a_number"].append(i)
            values.append(math.nan)
            continue
        if math.isnan(value):
            bad["nan"].append(i)
        elif math.isinf(value):
            bad["inf"].append(i)
        values.append(value)

    for reason, label in (("not_a_number", "a non-number"), ("nan", "NaN"), ("inf", "inf")):
        indices = bad[reason]
        if not indices:
            continue
        if reason == "not_a_number":
            kinds = sorted({type(scores[i]).__name__ for i in indices})
            label = f"a non-number ({', '.join(kinds)})"
        elif reason == "inf":
            signs = sorted({"+inf" if values[i] > 0 else "-inf" for i in indices})
            label = "/".join(signs)
        raise RewardModelError(
            f"reward model {model_name} returned {label} for {len(indices)} of {n} samples: "
            f"{_describe_samples(indices, prompts, completions)}",
            indices=indices,
            reason=reason,
            samples=[(prompts[i], completions[i]) for i in indices],
            model_name=model_name,
        )
    return values


def _check_inputs(prompts: Sequence[str], completions: Sequence[str]) -> None:
    for name, seq in (("prompts", prompts), ("completions", completions)):
        if isinstance(seq, str | bytes):
            raise ValueError(f"{name} must be a sequence of strings, got a single string")
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions must have the same length, got {len(prompts)} prompts"
            f" and {len(completions)} completions"
        )


def score_checked(
    model: RewardModel, prompts: Sequence[str], completions: Sequence[str]
) -> list[float]:
    """Score a batch with ``model`` and validate the result.

    Returns ``[]`` for an empty batch without calling the model.

    Args:
        model: any :class:`RewardModel`.
        prompts: ``N`` prompts.
        completions: ``N`` completions (without the prompt).

    Returns:
        ``N`` finite floats in the model's units, in order.

    Raises:
        ValueError: ``prompts`` and ``completions`` differ in length, or one is a single string.
        RewardModelError: the model's output failed :func:`validate_scores`.
        Exception: whatever ``model.score`` raised, unchanged (the whole batch failed).
    """
    _check_inputs(prompts, completions)
    if len(prompts) == 0:
        return []
    scores = model.score(prompts, completions)
    return validate_scores(scores, prompts, completions, type(model).__name__)


# ---------------------------------------------------------------------------------------------
# built-in models
# ---------------------------------------------------------------------------------------------


def _texts(prompts: Sequence[str], completions: Sequence[str], score_prompt: bool) -> list[str]:
    _check_inputs(prompts, completions)
    if score_prompt:
        # completions continue their prompt, so the two are joined as they were generated
        return [p + c for p, c in zip(prompts, completions, strict=True)]
    return list(completions)


class VaderSentimentReward:
    """VADER compound sentiment of the completion, in ``[-1, 1]`` (positive is higher).

    VADER (Valence Aware Dictionary and sEntiment Reasoner; Hutto & Gilbert, 2014, "VADER: A
    Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM) sums
    lexicon valences adjusted by rules for negation, intensifiers, ``but``, capitals and
    punctuation, and squashes the sum into ``(-1, 1)`` with ``x / sqrt(x^2 + 15)``. Text with no
    sentiment words scores 0. Implementation: the ``vaderSentiment`` package (lexicon shipped
    with it, no downloads, CPU only, deterministic).

    Args:
        score_prompt: score ``prompt + completion`` (joined without a separator) instead of the
            completion alone.
    """

    def __init__(self, score_prompt: bool = False) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.score_prompt = score_prompt
        self._analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Compound sentiment in ``[-1, 1]`` per sample.

        Raises:
            ValueError: ``prompts`` and ``completions`` differ in length.
        """
        texts = _texts(prompts, completions, self.score_prompt)
        return [float(self._analyzer.polarity_scores(t)["compound"]) for t in texts]

    def __repr__(self) -> str:
        return f"VaderSentimentReward(score_prompt={self.score_prompt})"


def _looks_like_local_path(name: str) -> bool:
    """True for names that cannot be a Hub repo id (``owner/name`` or ``name``)."""
    return (
        name.startswith(("/", "./", "../", "~", "."))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


class HFClassifierReward:
    """A Hugging Face sequence classifier's score for one label.

    The model and tokenizer are loaded with ``AutoModelForSequenceClassification`` and
    ``AutoTokenizer`` ``.from_pretrained(model_name_or_path)``, so a Hub name works where the
    Hub is reachable and a local directory works everywhere (set ``HF_HUB_OFFLINE=1`` on an
    offline machine to skip the network retries for cached Hub names).

    Units: with ``output="probability"`` the label's probability in ``[0, 1]`` (softmax over the
    labels; a sigmoid of the label's logit for single-logit or multi-label models); with
    ``output="logit"`` the label's raw logit (any real number; the model's own scale).

    Texts are tokenized with truncation to ``max_length`` tokens (lowered to the model's
    position limit and the tokenizer's ``model_max_length`` where those are smaller), padded on
    the right, and run in batches of ``batch_size`` in eval mode under ``torch.no_grad()``.
    A text that tokenizes to nothing (an empty completion for a tokenizer that adds no special
    tokens) is scored as the single BOS/EOS/pad token.

    Args:
        model_name_or_path: Hub name or local directory of a sequence-classification model
            with its tokenizer.
        label: the label whose score is the reward: an index, or a name looked up in the
            model config's ``label2id`` (exactly, else case-insensitively).
        output: ``"probability"`` or ``"logit"``.
        max_length: truncate texts to this many tokens.
        batch_size: texts per forward pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        score_prompt: score ``prompt + completion`` instead of the completion alone.

    Raises:
        RewardModelLoadError: the model or tokenizer could not be loaded (missing local path,
            Hub unreachable, not a sequence classifier), or ``device="cuda"`` without CUDA.
        ValueError: ``label`` is not one of the model's labels (the message lists them), or
            ``output``, ``max_length`` or ``batch_size`` is invalid.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        label: int | str = 1,
        output: Literal["probability", "logit"] = "probability",
        max_length: int = 512,
        batch_size: int = 64,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        score_prompt: bool = False,
    ) -> None:
        if output not in ("probability", "logit"):
            raise ValueError(f"output must be 'probability' or 'logit', got {output!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        name = os.fspath(model_name_or_path)
        self.model_name_or_path = name
        self.output = output
        self.batch_size = batch_size
        self.score_prompt = score_prompt
        from online_dt.util.devices import resolve_device

        try:
            self.device = resolve_device(device)
        except ValueError as e:
            raise RewardModelLoadError(f"reward model: {e}") from e

        if _looks_like_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
            raise RewardModelLoadError(
                f"reward classifier {name!r} not found: there is no such local directory"
            )
        path = os.path.expanduser(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path)
        except Exception as e:
            raise RewardModelLoadError(
                f"could not load reward classifier {name!r}: {type(e).__name__}: {e}\n"
                "If this is a Hugging Face Hub name, the Hub may be unreachable from this machine"
                " (no network, or offline mode): download the model where the Hub is reachable"
                " and give its local directory instead. If it is a local directory, it must hold"
                " config.json, the weights and the tokenizer files (save_pretrained output)."
            ) from e

        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
            if fallback is None:
                raise RewardModelLoadError(
                    f"reward classifier {name!r}: the tokenizer has no pad, EOS, UNK or BOS"
                    " token to pad batches with"
                )
            tokenizer.pad_token = fallback
        if getattr(model.config, "pad_token_id", None) is None:
            # decoder classifiers (GPT-2 style) find each row's last token via pad_token_id
            model.config.pad_token_id = tokenizer.pad_token_id

        self.label_index = self._resolve_label(label, model.config, name)
        self.label_name = str(model.config.id2label.get(self.label_index, self.label_index))
        num_labels = int(model.config.num_labels)
        multi = getattr(model.config, "problem_type", None) == "multi_label_classification"
        self._sigmoid = num_labels == 1 or multi

        limits = [max_length]
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and 0 < model_max < 1_000_000:
            limits.append(model_max)
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
        self.max_length = min(limits)

        special = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
        self._empty_id: int | None = next((t for t in special if t is not None), None)
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        self._torch = torch

    @staticmethod
    def _resolve_label(label: int | str, config: Any, name: str) -> int:
        num_labels = int(config.num_labels)
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        available = ", ".join(f"{v} ({k})" for k, v in sorted(id2label.items())) or "none"
        if isinstance(label, str):
            label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}
            if label in label2id:
                return label2id[label]
            folded = [v for k, v in label2id.items() if k.lower() == label.lower()]
            if len(folded) == 1:
                return folded[0]
            if label.strip().isdigit():
                label = int(label)
            else:
                raise ValueError(
                    f"label {label!r} is not a label of reward classifier {name!r};"
                    f" available labels: {available}"
                )
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"label must be an index or a label name, got {label!r}")
        if not 0 <= label < num_labels:
            raise ValueError(
                f"label index {label} is out of range for reward classifier {name!r} with"
                f" {num_labels} labels; available labels: {available}"
            )
        return label

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        features = [{key: enc[key][i] for key in enc} for i in range(len(texts))]
        for row in features:
            if len(row["input_ids"]) == 0 and self._empty_id is not None:
                for key in row:
                    row[key] = [1] if key == "attention_mask" else [0]
                row["input_ids"] = [self._empty_id]
        return self.tokenizer.pad(features, padding=True, return_tensors="pt")

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """All labels' logits for ``texts`` as a float32 ``[len(texts), num_labels]`` CPU
        tensor."""
        torch = self._torch
        out: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self._encode(list(texts[start : start + self.batch_size]))
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out.append(self.model(**batch).logits.float().cpu())
        if not out:
            return torch.zeros(0, int(self.model.config.num_labels))
        return torch.cat(out)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The label's probability in ``[0, 1]`` or raw logit, per sample.

        Raises:
            ValueError: ``prompts`` and ``completions`` differ in length.
        """
        texts = _texts(prompts, completions, self.score_prompt)
        logits = self.logits(texts)
        if self.output == "logit":
            values = logits[:, self.label_index]
        elif self._sigmoid:
            values = logits[:, self.label_index].sigmoid()
        else:
            values = logits.softmax(-1)[:, self.label_index]
        return [float(v) for v in values.tolist()]

    def __repr__(self) -> str:
        return (
            f"HFClassifierReward({self.model_name_or_path!r}, label={self.label_name!r},"
            f" output={self.output!r}, device={str(self.device)!r})"
        )


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def import_reward_class(class_path: str) -> Any:
    """Import ``package.module:ClassName`` (``ClassName`` may be dotted) without calling it.

    Used to check a config before any worker starts; :func:`load_reward_model` then builds it.

    Raises:
        RewardModelLoadError: the path is malformed, the module does not import, the attribute
            is missing (the message lists the module's classes) or is not callable.
    """
    module_name, sep, attr_path = class_path.partition(":")
    if not sep or not module_name or not attr_path:
        raise RewardModelLoadError(
            f"custom reward model class_path must look like 'package.module:ClassName',"
            f" got {class_path!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise RewardModelLoadError(
            f"custom reward model {class_path!r}: could not import module {module_name!r}:"
            f" {type(e).__name__}: {e} (is the package installed or on PYTHONPATH?)"
        ) from e

    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            where = getattr(target, "__name__", module_name)
            public = sorted(
                n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
            )
            hint = f"; classes in {module_name!r}: {', '.join(public)}" if public else ""
            raise RewardModelLoadError(
                f"custom reward model {class_path!r}: {where!r} has no attribute {part!r}{hint}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise RewardModelLoadError(
            f"custom reward model {class_path!r} is a {type(target).__name__}, not a class"
        )
    return target


def _load_custom(class_path: str, kwargs: dict[str, Any]) -> RewardModel:
    target = import_reward_class(class_path)
    try:
        model = target(**kwargs)
    except Exception as e:
        raise RewardModelLoadError(
            f"custom reward model {class_path!r}: constructing it with kwargs {kwargs!r} failed:"
            f" {type(e).__name__}: {e}"
        ) from e
    if not isinstance(model, RewardModel) or not callable(getattr(model, "score", None)):
        raise RewardModelLoadError(
            f"custom reward model {class_path!r} has no callable score(prompts, completions)"
            " method; it must follow the online_dt.rewards.RewardModel protocol"
        )
    return model


def load_reward_model(cfg: RewardModelConfig) -> RewardModel:
    """Build the reward model described by ``cfg``.

    * ``vader``: :class:`VaderSentimentReward` (``score_prompt``).
    * ``hf_classifier``: :class:`HFClassifierReward` (``model_name_or_path``, ``label``,
      ``output``, ``max_length``, ``batch_size``, ``device``, ``score_prompt``).
    * ``custom``: imports ``package.module:ClassName`` (``ClassName`` may be a dotted path to a
      nested class, or any callable returning a model) and calls it with ``cfg.kwargs``.

    Raises:
        RewardModelLoadError: the classifier could not be loaded; or, for ``custom``, the module
            could not be imported, the attribute is missing or not callable, the constructor
            raised, or the object has no callable ``score``. The message names the class path
            or model path and the cause (chained as ``__cause__``).
        ValueError: an invalid classifier ``label``.
    """
    if cfg.kind == "vader":
        return VaderSentimentReward(score_prompt=cfg.score_prompt)
    if cfg.kind == "hf_classifier":
        if not cfg.model_name_or_path:
            raise RewardModelLoadError("hf_classifier reward model needs model_name_or_path")
        return HFClassifierReward(
            cfg.model_name_or_path,
            label=cfg.label,
            output=cfg.output,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
            device=cfg.device,
            score_prompt=cfg.score_prompt,
        )
    if cfg.kind == "custom":
        if not cfg.class_path:
            raise RewardModelLoadError("custom reward model needs class_path")
        return _load_custom(cfg.class_path, dict(cfg.kwargs))
    raise RewardModelLoadError(f"unknown reward model kind {cfg.kind!r}")
