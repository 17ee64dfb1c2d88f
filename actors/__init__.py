"""Thin Ray actors around the core (sampler, reward model, learner) and the loop's controller.

No algorithm lives here: each actor wraps pieces of :mod:`online_dt`. The actors arrive with
the online loop; until then this package only reserves the name.
"""
