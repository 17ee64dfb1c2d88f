"""The run's ``config.yaml`` as the dashboard shows it: secrets redacted, and a flat summary.

:func:`redact` hides the values of secret-looking keys (:data:`SECRET_WORDS`);
:func:`config_summary` digests the fields that matter most into ``{label: value}``.
"""

from __future__ import annotations

from typing import Any

from online_dt.launch.rundir import finite_or_none as finite

SECRET_WORDS = ("token", "secret", "password", "passwd", "api_key", "apikey", "credential")
"""Config keys holding one of these words are shown as ``"***"`` (a custom reward model's
``kwargs`` may carry an API token, and the dashboard can be bound to every interface)."""


def redact(value: Any) -> Any:
    """``value`` with the values of secret-looking keys (:data:`SECRET_WORDS`, any case)
    replaced by ``"***"``, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def config_summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """A flat ``{label: value}`` digest of a run config (model, conditioning, reward model,
    schedule, loop sizes, sampler, buffer); missing sections are left out."""

    def get(*keys: str) -> Any:
        node: Any = cfg
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    schedule = get("schedule") or {}
    sched = str(schedule.get("kind", "")) if isinstance(schedule, dict) else ""
    if sched == "quantile":
        sched += f" q {get('schedule', 'q_start')}->{get('schedule', 'q_end')}"
    elif sched == "linear":
        sched += f" {get('schedule', 'start')}->{get('schedule', 'end')}"
    elif sched == "constant":
        sched += f" {get('schedule', 'value')}"
    if get("schedule", "max_increase") is not None:
        sched += f", max +{get('schedule', 'max_increase')}/iteration"
    items = {
        "model": get("model", "name_or_path"),
        "conditioning": get("conditioning", "mode"),
        "reward model": get("reward_model", "kind"),
        "schedule": sched or None,
        "iterations": get("online", "iterations"),
        "prompts x samples": (
            f"{get('online', 'prompts_per_iteration')} x {get('online', 'samples_per_prompt')}"
            if get("online") is not None
            else None
        ),
        "train steps / iteration": get("online", "train_steps_per_iteration"),
        "mode": get("online", "mode"),
        "sampler": get("sampler", "backend"),
        "buffer capacity": get("buffer", "capacity"),
        "learning rate": get("training", "lr"),
    }
    return {k: finite(v) for k, v in items.items() if v is not None}
