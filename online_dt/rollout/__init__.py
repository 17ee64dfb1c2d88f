"""Samplers (vLLM and the HF reference) and weight sync from the learner to them."""
