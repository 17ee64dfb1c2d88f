"""Build (once) and cache the embedded default base model: a tiny GPT-2 trained from scratch.

Nothing is downloaded. :func:`ensure_embedded_model` generates the synthetic review corpus of
:mod:`online_dt.embedded.corpus`, trains a byte-level BPE tokenizer on it, pretrains a small
``GPT2LMHeadModel`` on ``text + <|endoftext|>`` sequences and saves both with
``save_pretrained``, so the result is an ordinary Hugging Face model directory::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = ensure_embedded_model(BootstrapConfig())
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

The directory is cached under ``<cache>/embedded-<hash>``: ``<cache>`` is ``cfg.cache_dir``,
else ``$ONLINE_DT_CACHE``, else ``~/.cache/online-dt``; ``<hash>`` covers every config field that
changes the result (all but ``cache_dir``) and the corpus and build versions. A model is built
into a temporary sibling directory and renamed into place only when complete (its
``BUILD_INFO.json`` is written last), under an exclusive ``fcntl.flock`` on a lock file, so a
crash never leaves a half-built model and concurrent processes (pytest workers, two CLI runs)
build it once: the others wait for the lock and reuse the result.

The pretraining loop is :mod:`online_dt.embedded.pretrain`;
:func:`~online_dt.embedded.vader_spread.sample_vader_spread` measures how widely the base model's
unconditioned completions vary in VADER sentiment, the property reward conditioning relies on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online_dt.config import BootstrapConfig
from online_dt.embedded.corpus import CORPUS_VERSION, generate_reviews
from online_dt.embedded.pretrain import num_threads, pretrain_model
from online_dt.embedded.vader_spread import vader_summary
from online_dt.rewards import VaderSentimentReward

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BUILD_INFO",
    "BUILD_VERSION",
    "EOS_TOKEN",
    "cache_root",
    "config_hash",
    "describe",
    "embedded_model_dir",
    "ensure_embedded_model",
    "is_complete",
]

log = logging.getLogger(__name__)

BUILD_VERSION = 2
"""Bumped whenever the build recipe changes its output; part of the cache key (2: the fused
``gelu_pytorch_tanh`` activation instead of ``gelu_new``)."""

BUILD_INFO = "BUILD_INFO.json"
"""Marker file written last into a model directory; its presence means the build is complete."""

EOS_TOKEN = "<|endoftext|>"
"""The tokenizer's only special token, used as BOS, EOS, padding and unknown token."""

# Texts whose completions are scored to report the corpus's VADER spread in BUILD_INFO.json.
_CORPUS_VADER_TEXTS = 5000


# ---------------------------------------------------------------------------------------------
# cache layout
# ---------------------------------------------------------------------------------------------


def cache_root(cfg: BootstrapConfig) -> Path:
    """The cache directory: ``cfg.cache_dir``, else ``$ONLINE_DT_CACHE``, else
    ``~/.cache/online-dt`` (not created here)."""
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("ONLINE_DT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "online-dt"


def config_hash(cfg: BootstrapConfig) -> str:
    """12 hex digits identifying the built model: a SHA-256 of every field of ``cfg`` except
    ``cache_dir``, plus :data:`BUILD_VERSION` and the corpus version."""
    key = {
        "config": cfg.model_dump(mode="json", exclude={"cache_dir"}),
        "build_version": BUILD_VERSION,
        "corpus_version": CORPUS_VERSION,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def embedded_model_dir(cfg: BootstrapConfig) -> Path:
    """Where the model for ``cfg`` lives (or will live): ``<cache>/embedded-<hash>``."""
    return cache_root(cfg) / f"embedded-{config_hash(cfg)}"


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a finished build (its :data:`BUILD_INFO` marker exists)."""
    return (Path(path) / BUILD_INFO).is_file()


def describe(path: str | Path) -> dict[str, Any]:
    """The build report of a built model directory (the content of its ``BUILD_INFO.json``).

    Raises:
        FileNotFoundError: ``path`` is not a complete embedded-model build.
    """
    marker = Path(path) / BUILD_INFO
    if not marker.is_file():
        raise FileNotFoundError(f"{path} is not a complete embedded-model build (no {BUILD_INFO})")
    return json.loads(marker.read_text())


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing); blocks until free."""
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_embedded_model(cfg: BootstrapConfig, *, progress: bool = True) -> Path:
    """Return the directory of the embedded base model for ``cfg``, building it if needed.

    A complete cached build is reused as is. Otherwise the model is built (about two to three
    minutes on two CPU cores with the default config) into a temporary sibling directory and
    renamed into place; the build runs under an exclusive file lock, so a second process asking
    for the same model waits and then reuses it. Leftovers of crashed builds of the same model
    are removed.

    Args:
        cfg: the bootstrap config (corpus size, tokenizer, model shape, training schedule).
        progress: show a tqdm progress bar with the training loss.

    Returns:
        A Hugging Face model directory (``config.json``, ``model.safetensors``, tokenizer files
        and ``BUILD_INFO.json``) loadable with ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained``.

    Raises:
        OSError: the cache directory cannot be created or written (e.g. read-only, disk full);
            no partial model directory remains.
    """
    final = embedded_model_dir(cfg)
    if is_complete(final):
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{final.name}.lock"):
        if is_complete(final):  # another process built it while we waited
            log.info("reusing embedded model built concurrently at %s", final)
            return final
        for stale in root.glob(f".{final.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # a directory without marker is not ours to trust
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        try:
            log.info("building the embedded base model into %s", final)
            _build(cfg, tmp, progress=progress)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with at most ``vocab_size`` entries; the corpus may need fewer (BPE stops
    merging once every word is a single token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        padding_side="left",
    )


def _build(cfg: BootstrapConfig, out_dir: Path, *, progress: bool) -> dict[str, Any]:
    """Generate the corpus, train tokenizer and model, and save everything into ``out_dir``.

    ``BUILD_INFO.json`` is written last. Returns its content.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel

    started = time.perf_counter()
    reviews = generate_reviews(cfg.num_texts, cfg.seed)
    texts = [r.text for r in reviews]
    scored = reviews[:_CORPUS_VADER_TEXTS]
    corpus_vader = vader_summary(
        VaderSentimentReward().score([r.prompt for r in scored], [r.completion for r in scored])
    )

    tokenizer = _train_tokenizer(texts, cfg.vocab_size)
    tokenizer.model_max_length = cfg.n_positions
    eos = int(tokenizer.eos_token_id)
    encoded = tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    sequences = [[*e.ids, eos][: cfg.n_positions] for e in encoded]

    previous_threads = torch.get_num_threads()
    # fork_rng: seeding here must not change the caller's global torch RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model_cfg = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=cfg.n_positions,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            # no dropout: the model is far from overfitting (less than two epochs of a corpus
            # much larger than it can memorise), and dropout would only slow learning
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            loss_type="ForCausalLM",
            # GPT-2's tanh approximation of GELU as torch's fused kernel: the same function as
            # GPT-2's default `gelu_new` (within 3e-7), whose forward and backward are six
            # element-wise ops in Python; 2.7x faster forward and backward on CPU, where it was
            # about a sixth of a training step (docs/method.md, round 10); vLLM supports it too
            activation_function="gelu_pytorch_tanh",
        )
        model = GPT2LMHeadModel(model_cfg)
        num_parameters = sum(p.numel() for p in model.parameters())
        train_started, cpu_started = time.perf_counter(), time.process_time()
        try:
            stats = pretrain_model(model, sequences, cfg, eos, progress=progress)
        finally:
            torch.set_num_threads(previous_threads)
        train_seconds = time.perf_counter() - train_started
        train_cpu_seconds = time.process_time() - cpu_started

    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses, tokens = stats.losses, stats.tokens
    tail = losses[-min(50, len(losses)) :]
    info = {
        "build_version": BUILD_VERSION,
        "corpus_version": CORPUS_VERSION,
        "config_hash": config_hash(cfg),
        "config": cfg.model_dump(mode="json", exclude={"cache_dir"}),
        "num_parameters": num_parameters,
        "vocab_size": len(tokenizer),
        "final_loss": round(sum(tail) / len(tail), 4),
        "first_loss": round(losses[0], 4),
        "train_tokens": tokens,
        "mean_tokens_per_text": round(sum(map(len, sequences)) / len(sequences), 2),
        "tokens_per_second": round(tokens / train_seconds, 1),
        "train_seconds": round(train_seconds, 2),
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "build_seconds": round(time.perf_counter() - started, 2),
        "cpu_cores": num_threads(),
        "steps_per_thread_count": {
            str(k): v for k, v in sorted(stats.steps_per_thread_count.items())
        },
        "corpus_vader": corpus_vader,
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    if progress:
        tqdm.write(
            f"embedded model: {num_parameters / 1e6:.2f}M parameters, final loss "
            f"{info['final_loss']:.3f}, {info['build_seconds']:.0f} s"
        )
    return info
