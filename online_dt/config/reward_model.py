"""The ``reward_model`` section: which reward model scores (prompt, completion) pairs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel


class RewardModelConfig(StrictModel):
    """Which reward model scores (prompt, completion) pairs."""

    kind: Literal["vader", "hf_classifier", "custom"] = "vader"
    """``vader``: VADER compound sentiment in [-1, 1]. ``hf_classifier``: a sequence classifier's
    logit or probability for ``label``. ``custom``: the class at ``class_path``."""

    score_prompt: bool = False
    """Score ``prompt + completion`` instead of the completion alone (vader, hf_classifier)."""

    model_name_or_path: str | None = None
    """``hf_classifier``: hub name or local directory of a sequence-classification model."""

    label: str | int = 1
    """``hf_classifier``: the label whose score is the reward, by name (``POSITIVE``) or index."""

    output: Literal["logit", "probability"] = "probability"
    """``hf_classifier``: reward is the label's raw logit or its softmax probability in [0, 1]."""

    max_length: int = Field(512, ge=8)
    """``hf_classifier``: texts are truncated to this many tokens."""

    batch_size: int = Field(64, ge=1)
    """Texts per forward pass of a neural reward model."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of a neural reward model."""

    class_path: str | None = None
    """``custom``: ``package.module:ClassName`` of a class following the ``RewardModel``
    protocol of ``online_dt.rewards``."""

    kwargs: dict[str, Any] = Field(default_factory=dict)
    """``custom``: keyword arguments passed to the class's constructor."""

    @model_validator(mode="after")
    def _check_kind(self) -> RewardModelConfig:
        defaults = RewardModelConfig.model_construct()
        ignored = [
            name
            for name, kinds in _FIELD_KINDS.items()
            if self.kind not in kinds and getattr(self, name) != getattr(defaults, name)
        ]
        if ignored:
            raise ValueError(
                f"kind {self.kind!r} does not read "
                + ", ".join(f"{n} (used by {' and '.join(_FIELD_KINDS[n])})" for n in ignored)
                + "; remove them or change kind"
            )
        if self.kind == "hf_classifier" and not self.model_name_or_path:
            raise ValueError("model_name_or_path is required when kind is 'hf_classifier'")
        if self.kind == "custom":
            if not self.class_path:
                raise ValueError("class_path is required when kind is 'custom'")
            module, sep, name = self.class_path.partition(":")
            if not sep or not module or not name:
                raise ValueError(
                    f"class_path must look like 'package.module:ClassName', got {self.class_path!r}"
                )
        return self


_FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "score_prompt": ("vader", "hf_classifier"),
    "model_name_or_path": ("hf_classifier",),
    "label": ("hf_classifier",),
    "output": ("hf_classifier",),
    "max_length": ("hf_classifier",),
    "batch_size": ("hf_classifier",),
    "device": ("hf_classifier",),
    "class_path": ("custom",),
    "kwargs": ("custom",),
}
"""The kinds that read each kind-specific field; another kind refuses a non-default value."""
