"""The reward-conditioned policy: the shared sequence layout, reward normalisation and binning, the
conditioner and the cached decoding loop.
"""
