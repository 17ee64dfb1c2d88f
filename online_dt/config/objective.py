"""An objective of a reward model that returns several scores per sample
(``conditioning.objectives``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from online_dt.config.base import StrictModel


class ObjectiveConfig(StrictModel):
    """One named objective of a reward model that returns several scores per sample.

    The policy is conditioned on every objective at once: in scalar mode the head reads the
    vector of normalised rewards, ``(r_m - centre_m) / half_width_m`` with ``centre_m`` and
    ``half_width_m`` the middle and half the width of ``[low, high]``, so each objective's
    range maps to ``[-1, 1]``."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    """The key the reward model returns this objective's score under (an identifier)."""

    low: float
    """Lower end of the objective's range (its reward units): normalised to -1, the lowest
    target the schedule asks for, and the reference point of the hypervolume."""

    high: float
    """Upper end of the objective's range (its reward units, higher is better): normalised to
    1 and the highest target the schedule asks for."""

    @model_validator(mode="after")
    def _check_range(self) -> ObjectiveConfig:
        if self.high <= self.low:
            raise ValueError(f"objective {self.name!r}: high must be greater than low")
        return self

    @property
    def center(self) -> float:
        """The middle of ``[low, high]`` (reward units)."""
        return (self.low + self.high) / 2

    @property
    def half_width(self) -> float:
        """Half the width of ``[low, high]`` (reward units, > 0)."""
        return (self.high - self.low) / 2
