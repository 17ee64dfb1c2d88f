"""Evaluation of a trained policy: calibration of achieved against target reward."""
