"""Thin Ray actors around the core (sampler, reward model, learner) and the controller that
starts them on Ray.

No algorithm lives here: each actor constructs pieces of :mod:`online_dt` where Ray placed it,
and the controller runs the core's loop (:mod:`online_dt.loop`) with Ray handles. This is the
only package that imports Ray at module level, and only :mod:`online_dt.run` imports it.
"""
