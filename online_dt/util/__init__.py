"""The bottom layer: atomic file writes and reward / diversity statistics; no model code."""
