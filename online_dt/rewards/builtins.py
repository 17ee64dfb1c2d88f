"""The built-in reward models: VADER sentiment and a Hugging Face sequence classifier.

* :class:`VaderSentimentReward`: VADER compound sentiment in ``[-1, 1]`` (Hutto & Gilbert,
  2014). Rule based, CPU only, no downloads.
* :class:`HFClassifierReward`: a Hugging Face sequence classifier's probability (``[0, 1]``) or
  raw logit for one label.

Importing this module is cheap: ``vaderSentiment``, ``torch`` and ``transformers`` are imported
by the classes that need them, when they are constructed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from online_dt.rewards.errors import RewardModelLoadError
from online_dt.rewards.protocol import check_inputs

if TYPE_CHECKING:
    import torch


def _texts(prompts: Sequence[str], completions: Sequence[str], score_prompt: bool) -> list[str]:
    check_inputs(prompts, completions)
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
        from online_dt.util.devices import resolve_device  # imports torch

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
