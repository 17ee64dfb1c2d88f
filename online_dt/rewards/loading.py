"""Building the reward model a config names: a built-in one, or a user class given as
``package.module:ClassName``."""

from __future__ import annotations

import importlib
from typing import Any

from online_dt.config import RewardModelConfig
from online_dt.rewards.builtins import HFClassifierReward, VaderSentimentReward
from online_dt.rewards.errors import RewardModelLoadError
from online_dt.rewards.protocol import RewardModel


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
            public = sorted(  # the module's own classes, not the ones it imports
                n
                for n, v in vars(module).items()
                if isinstance(v, type)
                and not n.startswith("_")
                and getattr(v, "__module__", None) == module.__name__
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
