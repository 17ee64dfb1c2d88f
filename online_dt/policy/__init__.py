"""The reward-conditioned policy: the shared sequence layout, reward normalisation and binning,
the conditioner (and its files), the policy and the cached decoding loop.
"""
