"""Offline conditioned training on the embedded model: asking for more reward gets more."""

from __future__ import annotations

import json

import pytest

from online_dt.config import OfflineRunConfig
from online_dt.offline import run_offline


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_high_target_beats_low_target(embedded_model_dir, tmp_path, mode):
    cfg = OfflineRunConfig.model_validate(
        {
            "model": {"name_or_path": str(embedded_model_dir), "device": "cpu"},
            "conditioning": {"mode": mode, "normalization": {"center": 0.0, "scale": 0.5}},
            "prompts": {"limit": 256},
            "training": {"steps": 150, "batch_size": 64, "lr": 1e-3, "warmup_steps": 20},
            "offline": {
                "run_dir": str(tmp_path / "run"),
                "samples_per_prompt": 4,
                "eval_targets": [-0.6, 0.0, 0.6],
                "eval_samples_per_target": 128,
            },
        }
    )
    report = run_offline(cfg, progress=False)
    low, mid, high = (row["mean"] for row in report["calibration"])
    print(json.dumps({k: v for k, v in report.items() if k != "calibration"}, indent=1))
    print(mode, "achieved per target -0.6/0/0.6:", round(low, 3), round(mid, 3), round(high, 3))
    assert high - low >= 0.3
    assert low < mid < high
    saved = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert saved["calibration"][0]["target"] == -0.6
    assert (tmp_path / "run" / "policy" / "reward_conditioning" / "conditioning.json").is_file()
