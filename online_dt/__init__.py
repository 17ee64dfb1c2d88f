"""online-dt: online decision-transformer training of reward-conditioned language models.

The core (this package) needs no Ray cluster: conditioning, training, reward models, the
embedded default model and the offline demo. Heavy libraries (torch, transformers) are imported
by the submodules that need them, so ``online-dt --help`` stays fast.
"""

__version__ = "0.1.0"
