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

:func:`sample_vader_spread` measures how widely the base model's unconditioned completions vary
in VADER sentiment, the property reward conditioning relies on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from online_dt.config import BootstrapConfig
from online_dt.embedded.corpus import CORPUS_VERSION, embedded_prompts, generate_reviews
from online_dt.rewards import VaderSentimentReward
from online_dt.util.metrics import reward_summary

if TYPE_CHECKING:
    import torch
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
    "sample_vader_spread",
]

log = logging.getLogger(__name__)

BUILD_VERSION = 1
"""Bumped whenever the build recipe changes its output; part of the cache key."""

BUILD_INFO = "BUILD_INFO.json"
"""Marker file written last into a model directory; its presence means the build is complete."""

EOS_TOKEN = "<|endoftext|>"
"""The tokenizer's only special token, used as BOS, EOS, padding and unknown token."""

# Texts whose completions are scored to report the corpus's VADER spread in BUILD_INFO.json.
_CORPUS_VADER_TEXTS = 5000
# Fraction of the steps used for linear warm-up, and the floor of the cosine decay (x peak).
_WARMUP_FRACTION = 0.05
_MIN_LR_FRACTION = 0.1
_WEIGHT_DECAY = 0.01
_BETAS = (0.9, 0.95)
_GRAD_CLIP = 1.0
# Thread-count probing of the training loop (see _ThreadTuner): every this many steps.
_PROBE_EVERY = 50
# Length bucketing: texts are sorted by length within windows of this many batches.
_BUCKET_WINDOW = 32
# Histogram of VADER compound scores: this many equal bins over [-1, 1].
_HIST_BINS = 10


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


def _lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up over
    ``_WARMUP_FRACTION`` of the steps, then cosine decay to ``_MIN_LR_FRACTION``."""
    warmup = max(1, round(_WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return _MIN_LR_FRACTION + (1 - _MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def _histogram(values: Sequence[float]) -> dict[str, list[float] | list[int]]:
    """Counts of ``values`` in ``_HIST_BINS`` equal bins over ``[-1, 1]`` (1.0 is in the last)."""
    counts = [0] * _HIST_BINS
    for v in values:
        counts[min(_HIST_BINS - 1, max(0, int((v + 1) / 2 * _HIST_BINS)))] += 1
    edges = [round(-1 + 2 * i / _HIST_BINS, 3) for i in range(_HIST_BINS + 1)]
    return {"edges": edges, "counts": counts}


def _spread(values: Sequence[float]) -> dict[str, Any]:
    """:func:`~online_dt.util.metrics.reward_summary` of VADER scores (mean, population std,
    p10, median, p90), plus extremes, the positive/negative fractions and a histogram; floats
    rounded to 4 decimals."""
    n = len(values)
    return {
        **{k: round(v, 4) for k, v in reward_summary(values).items()},
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "frac_positive": round(sum(v >= 0.05 for v in values) / n, 4),
        "frac_negative": round(sum(v <= -0.05 for v in values) / n, 4),
        "histogram": _histogram(values),
    }


def _num_threads() -> int:
    """CPU threads for training: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


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
    corpus_vader = _spread(
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
        )
        model = GPT2LMHeadModel(model_cfg)
        num_parameters = sum(p.numel() for p in model.parameters())
        train_started, cpu_started = time.perf_counter(), time.process_time()
        try:
            stats = _pretrain(model, sequences, cfg, eos, progress=progress)
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
        "cpu_cores": _num_threads(),
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


def _length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """One epoch of batches of indices: shuffled, then sorted by length within windows of
    ``_BUCKET_WINDOW`` batches so each batch holds texts of similar length (little padding),
    and the batches themselves in random order. Texts left over after the last full batch
    wait for the next epoch (unless there is no full batch at all)."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * _BUCKET_WINDOW
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches  # drop a short tail
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


@dataclass
class _TrainStats:
    """What :func:`_pretrain` reports: per-step losses (nats per token), real tokens trained on,
    and how many steps ran with each CPU thread count."""

    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    steps_per_thread_count: dict[int, int] = field(default_factory=dict)


class _ThreadTuner:
    """Picks the CPU thread count for training, re-measured every ``_PROBE_EVERY`` steps.

    With all cores free, ``n`` threads are fastest (two cores: about 1.4x one thread). When
    other processes compete for the cores, OpenMP threads that wait for a descheduled sibling
    make ``n`` threads several times *slower* than one (measured: 1.3 s against 0.26 s per
    step). So at the start of every block of ``_PROBE_EVERY`` steps, two steps run with each
    candidate (1 and ``n``) and the block continues with the one that took less time per token.
    Training results do not depend on the choice beyond floating-point summation order.
    """

    def __init__(self, max_threads: int) -> None:
        self.candidates = sorted({1, max_threads})
        self.current = max_threads
        self._timings: dict[int, list[float]] = {}

    def threads_for(self, step: int) -> int:
        """The thread count to use for ``step`` (0-based)."""
        pos = step % _PROBE_EVERY
        if len(self.candidates) > 1 and 1 <= pos <= 2 * len(self.candidates):
            return self.candidates[(pos - 1) // 2]  # probing; step 0 of a block warms up
        return self.current

    def record(self, step: int, threads: int, seconds_per_token: float) -> None:
        """Report the time of ``step``; after the last probe step, pick the faster count."""
        pos = step % _PROBE_EVERY
        if len(self.candidates) == 1 or not 1 <= pos <= 2 * len(self.candidates):
            return
        self._timings.setdefault(threads, []).append(seconds_per_token)
        if pos == 2 * len(self.candidates):
            self.current = min(self._timings, key=lambda k: min(self._timings[k]))
            self._timings.clear()


def _pretrain(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    cfg: BootstrapConfig,
    pad_id: int,
    *,
    progress: bool,
) -> _TrainStats:
    """Next-token training on right-padded, length-bucketed batches of whole sequences (loss on
    every real token, including the final EOS; padding carries no loss)."""
    import torch
    from tqdm.auto import tqdm

    from online_dt.policy.layout import IGNORE_INDEX

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": _WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=_BETAS,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, cfg.steps)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = [len(s) for s in sequences]
    batches: list[list[int]] = []
    stats = _TrainStats()
    tuner = _ThreadTuner(_num_threads())
    model.train()
    # transformers warns once that input_ids contain the pad id (it is also EOS) and no mask is
    # given; that is intended here, so its logger is quietened for the loop.
    hf_logger = logging.getLogger("transformers")
    hf_level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    bar = tqdm(total=cfg.steps, desc="building embedded model", disable=not progress, leave=False)
    try:
        for step in range(cfg.steps):
            if not batches:  # a new epoch
                batches = _length_bucketed_batches(lengths, cfg.batch_size, generator)
            batch = [sequences[i] for i in batches.pop()]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, : len(seq)] = ids[row, : len(seq)]
            threads = tuner.threads_for(step)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            started = time.perf_counter()
            # Right padding: real tokens never attend to the padding after them (causal mask),
            # so no attention mask is needed and default positions 0..T-1 are correct. Passing
            # no mask also keeps SDPA on its fast causal path (about 6x faster on CPU).
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.losses.append(float(loss.detach()))
            tuner.record(step, threads, (time.perf_counter() - started) / ids.numel())
            stats.tokens += sum(len(s) for s in batch)
            counts = stats.steps_per_thread_count
            counts[threads] = counts.get(threads, 0) + 1
            bar.update(1)
            if step % 10 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{stats.losses[-1]:.3f}", threads=threads)
    finally:
        bar.close()
        hf_logger.setLevel(hf_level)
    return stats


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


def sample_vader_spread(
    model_dir: str | Path,
    n: int = 256,
    seed: int = 0,
    *,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    batch_size: int = 128,
    num_examples: int = 8,
) -> dict[str, Any]:
    """Sample unconditioned completions of the embedded prompts and summarise their VADER scores.

    Prompts are :func:`~online_dt.embedded.corpus.embedded_prompts` in the order of ``seed``,
    repeated when ``n`` exceeds their number; sampling uses the project's HF reference sampler
    (:func:`~online_dt.policy.generation.sample_unconditioned`: left padding, explicit positions,
    stops at EOS) with the given temperature and no top-p. Each *completion alone* is scored,
    as the default reward model does.

    Args:
        model_dir: a causal LM directory, e.g. the result of :func:`ensure_embedded_model`.
        n: number of completions (>= 1).
        seed: prompt order and sampling seed.
        max_new_tokens: completion length limit in tokens.
        temperature: sampling temperature (> 0; 0 is greedy).
        batch_size: prompts per generation batch.
        num_examples: how many (prompt, completion, reward) examples to include.

    Returns:
        ``n``; ``mean``, ``std`` (population), ``p10``, ``median``, ``p90``, ``min``, ``max``
        of the VADER compound scores (each in ``[-1, 1]``); ``frac_positive`` /
        ``frac_negative`` (compound ``>= 0.05`` / ``<= -0.05``, VADER's usual thresholds);
        ``histogram`` (10 bins over ``[-1, 1]``);
        ``frac_finished`` (completions that ended with EOS); ``distinct_completions``;
        ``mean_new_tokens``; ``seconds`` (wall time of sampling); ``examples``.

    Raises:
        ValueError: ``n < 1``.
        OSError: ``model_dir`` is not a loadable model directory.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from online_dt.policy.generation import sample_unconditioned

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    pool = embedded_prompts(seed=seed)
    prompts = [pool[i % len(pool)] for i in range(n)]
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    eos = int(tokenizer.eos_token_id)
    pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos
    started = time.perf_counter()
    sampled = sample_unconditioned(
        model,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
        temperature=temperature,
        generator=torch.Generator().manual_seed(seed),
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - started
    completions = tokenizer.batch_decode(sampled.token_ids, skip_special_tokens=True)
    scores = VaderSentimentReward().score(prompts, completions)
    return {
        "n": n,
        **_spread(scores),
        "frac_finished": round(sum(sampled.finished) / n, 4),
        "distinct_completions": len(set(completions)),
        "mean_new_tokens": round(sum(map(len, sampled.token_ids)) / n, 2),
        "seconds": round(seconds, 2),
        "examples": [
            {"prompt": p, "completion": c, "reward": round(s, 4)}
            for p, c, s in list(zip(prompts, completions, scores, strict=True))[:num_examples]
        ],
    }
