"""The conditioned training step, the KL to the base model and the learner that owns policy and
buffer.
"""
