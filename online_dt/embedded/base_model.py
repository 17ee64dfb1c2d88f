"""Where a config's base model is: a hub name or directory, or the embedded model."""

from __future__ import annotations

from online_dt.config import EMBEDDED, BootstrapConfig, ModelConfig


def resolve_base_model(model: ModelConfig, bootstrap: BootstrapConfig, progress: bool) -> str:
    """The base model's path: ``model.name_or_path``, or the embedded model, built if absent
    (about 2 minutes on 2 CPU cores the first time, then cached)."""
    if model.name_or_path != EMBEDDED:
        return model.name_or_path
    from online_dt.embedded.bootstrap import ensure_embedded_model

    return str(ensure_embedded_model(bootstrap, progress=progress))
