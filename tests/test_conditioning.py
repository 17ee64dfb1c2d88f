"""Layout invariants, incremental-decoding parity and save/load of the conditioned policy."""

from __future__ import annotations

import json

import pytest
import torch

from online_dt.config import ConditioningConfig, NormalizationConfig
from online_dt.policy.conditioner import RewardConditioner
from online_dt.policy.conditioner_state import CONDITIONING_FILE
from online_dt.policy.layout import IGNORE_INDEX, layout_batch, positions_from_mask
from online_dt.policy.logprobs import completion_logprobs
from online_dt.policy.normalization import RewardBinning, RewardNormalizer, reward_token
from online_dt.policy.policy import RewardConditionedPolicy
from tests.tiny import build_tiny_model, randomize_objective_weights, randomize_rbf_weights

PROMPTS = ["the movie was", "honestly the game is fun and", "i"]
TARGETS = [0.9, -0.5, 0.1]
OBJECTIVES = [
    {"name": "sentiment", "low": -1.0, "high": 1.0},
    {"name": "brevity", "low": -20.0, "high": 0.0},
]
"""The two objectives of the ``scalar+objectives`` and ``token+objectives`` variants (ranges of
different widths)."""
VECTOR_TARGETS = [(0.9, -15.0), (-0.5, -2.0), (0.1, -8.0)]
"""One target vector per prompt of :data:`PROMPTS` for the ``+objectives`` variants (in
``token+objectives`` each target's two values fall in different bins of their objective)."""


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def base_dir(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp(request.param), request.param)


def make_policy(base_dir, mode="scalar", **kw):
    if mode == "scalar+prompt":  # reward_on_prompt, its weight moved off zero so it matters
        cfg = ConditioningConfig(mode="scalar", reward_on_prompt=True, **kw)
        policy = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")
        with torch.no_grad():
            weight = policy.conditioner.prompt_head.weight
            weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)))
        return policy.eval()
    if mode == "scalar+rbf":  # reward_features: rbf, its zero-initialised weights moved
        cfg = ConditioningConfig(mode="scalar", reward_features="rbf", **kw)
        policy = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")
        randomize_rbf_weights(policy)
        return policy.eval()
    if mode == "scalar+objectives":  # two objectives, every head column moved off its start
        cfg = ConditioningConfig(mode="scalar", objectives=OBJECTIVES, **kw)
        policy = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")
        randomize_objective_weights(policy)
        return policy.eval()
    if mode == "token+objectives":  # two objectives, a reward token of each in the slot
        cfg = ConditioningConfig(mode="token", objectives=OBJECTIVES, **kw)
        return RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager").eval()
    cfg = ConditioningConfig(mode=mode, **kw)
    policy = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager")
    return policy.eval()


MODES = ["scalar", "token", "scalar+prompt", "scalar+rbf"]
"""Conditioning variants the layout tests run: both modes, and scalar with reward_on_prompt
or with radial-basis reward features."""
CONDITIONED = [*MODES, "scalar+objectives", "token+objectives"]
"""Variants the decoding-parity tests run: :data:`MODES`, scalar mode conditioned on two
objectives at once (a target vector per prompt, a ``[hidden, 2]`` head), and token mode on
two objectives (a two-column slot, one reward token per objective)."""


def targets_for(mode, targets=TARGETS):
    """``targets`` (floats) as the variant takes them: unchanged, or for the ``+objectives``
    variants a vector per target (:data:`VECTOR_TARGETS`, cycled)."""
    if not mode.endswith("+objectives"):
        return list(targets)
    return [VECTOR_TARGETS[i % len(VECTOR_TARGETS)] for i in range(len(targets))]


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------


def test_left_padded_rows_get_unpadded_positions():
    batch = layout_batch([7, 8], [[1, 2, 3, 4], [5]], pad_id=0, padding_side="left")
    assert batch.input_ids.tolist() == [[7, 1, 2, 3, 4], [8, 0, 0, 0, 5]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1]]
    # the slot is position 0 and the first real token position 1 in both rows
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4]
    assert batch.position_ids[1, 0].item() == 0
    assert batch.position_ids[1, -1].item() == 1
    alone = layout_batch([8], [[5]], pad_id=0, padding_side="left")
    assert alone.position_ids.tolist() == [[0, 1]]
    assert batch.labels is None


def test_training_layout_labels_completion_only():
    batch = layout_batch([9, 9], [[1, 2], [3]], [[4, 5, 0], [6, 0]], pad_id=0)
    assert batch.input_ids.tolist() == [[9, 1, 2, 4, 5, 0], [9, 3, 6, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    ignore = IGNORE_INDEX
    assert batch.labels.tolist() == [
        [ignore, ignore, ignore, 4, 5, 0],
        [ignore, ignore, 6, 0, ignore, ignore],
    ]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 3, 3]]
    with_prompt = layout_batch([9], [[1, 2]], [[4]], pad_id=0, include_prompt_loss=True)
    assert with_prompt.labels.tolist() == [[ignore, 1, 2, 4]]


def _layout_row_by_row(slots, prompts, completions, pad_id, side, prompt_loss):
    """The layout's rule written out per row: the reference for :func:`layout_batch`."""
    width = len(slots[0]) + max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    ids, mask, labels, in_prompt = [], [], [], []
    for slot, p, c in zip(slots, prompts, completions, strict=True):
        pad = width - len(slot) - len(p) - len(c)
        p, c = [int(t) for t in p], [int(t) for t in c]
        body, body_mask = p + c, [1] * (len(p) + len(c))
        row_labels = ([IGNORE_INDEX] * len(p) if not prompt_loss else p) + c
        row_prompt = [True] * len(p) + [False] * len(c)
        if side == "right":
            body, body_mask = body + [pad_id] * pad, body_mask + [0] * pad
            row_labels, row_prompt = row_labels + [IGNORE_INDEX] * pad, row_prompt + [False] * pad
        else:
            body, body_mask = [pad_id] * pad + body, [0] * pad + body_mask
            row_labels, row_prompt = [IGNORE_INDEX] * pad + row_labels, [False] * pad + row_prompt
        ids.append(list(slot) + body)
        mask.append([1] * len(slot) + body_mask)
        labels.append([IGNORE_INDEX] * len(slot) + row_labels)
        in_prompt.append([False] * len(slot) + row_prompt)
    return ids, mask, labels, in_prompt


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("prompt_loss", [False, True])
@pytest.mark.parametrize("slot_width", [1, 2])
def test_layout_matches_the_row_by_row_rule(side, prompt_loss, slot_width):
    rng = torch.Generator().manual_seed(slot_width + 2 * prompt_loss)
    pad_id = 3  # real tokens include the pad id, as a completion's EOS does
    for case in range(20):
        n = int(torch.randint(1, 9, (1,), generator=rng))

        def seq():
            size = int(torch.randint(0, 7, (1,), generator=rng))
            return torch.randint(0, 8, (size,), generator=rng).tolist()

        slots = [[100 + 10 * row + k for k in range(slot_width)] for row in range(n)]
        prompts = [seq() for _ in range(n)]
        completions = [seq() for _ in range(n)]
        if all(len(p) + len(c) == 0 for p, c in zip(prompts, completions, strict=True)):
            completions[0] = [7]
        if case % 4 == 3:  # tuples and tensors are sequences of ids too
            prompts = [tuple(p) for p in prompts]
            completions = [torch.tensor(c, dtype=torch.long) for c in completions]
        batch = layout_batch(
            slots,
            prompts,
            completions,
            pad_id=pad_id,
            padding_side=side,
            include_prompt_loss=prompt_loss,
        )
        ids, mask, labels, in_prompt = _layout_row_by_row(
            slots, prompts, [list(map(int, c)) for c in completions], pad_id, side, prompt_loss
        )
        assert batch.input_ids.tolist() == ids
        assert batch.attention_mask.tolist() == mask
        assert batch.labels.tolist() == labels
        assert batch.prompt_mask.tolist() == in_prompt
        assert batch.position_ids.tolist() == positions_from_mask(batch.attention_mask).tolist()
        if any(prompts):  # a generation batch: prompts only
            alone = layout_batch(slots, prompts, pad_id=pad_id, padding_side=side)
            ids, mask, _, in_prompt = _layout_row_by_row(
                slots, prompts, [[] for _ in prompts], pad_id, side, prompt_loss
            )
            assert alone.labels is None
            assert alone.input_ids.tolist() == ids
            assert alone.attention_mask.tolist() == mask
            assert alone.prompt_mask.tolist() == in_prompt


def test_positions_from_mask_clamps_leading_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_training_layout_fits_the_model_positions_when_a_completion_tokenises_longer(base_dir):
    """A sampled byte-level token that holds part of a UTF-8 character decodes to U+FFFD,
    which tokenises to three byte tokens: the completion text of 24 sampled tokens came back as
    up to 52 tokens, and training on it failed in GPT-2's position embeddings (``IndexError:
    index out of range in self``) with ``sampling.max_new_tokens: 24`` and 64 positions."""
    policy = make_policy(base_dir, "scalar")
    limit = 64  # the tiny models' positions
    prompt = "the movie was"
    completion = "\ufffd" * 24  # 24 sampled tokens, as the sampler decodes them
    assert len(policy.encode([completion])[0]) > limit
    batch = policy.layout([prompt, "i"], [0.5, -0.5], [completion, "fun"])
    assert batch.input_ids.shape[1] == limit
    assert batch.position_ids.max().item() == limit - 1
    assert batch.labels is not None and batch.labels[0, -1].item() == policy.eos_token_id
    assert policy(batch, torch.tensor([0.5, -0.5])).logits.shape[1] == limit
    assert policy.max_positions == limit
    # a completion that fits is laid out whole
    assert batch.labels[1].ne(IGNORE_INDEX).sum().item() == len(policy.encode(["fun"])[0]) + 1


def test_layout_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        layout_batch([1, 2], [[1]], pad_id=0)
    with pytest.raises(ValueError, match="empty"):
        layout_batch([], [], pad_id=0)


# ---------------------------------------------------------------------------------------------
# normalisation and bins
# ---------------------------------------------------------------------------------------------


def test_running_normalizer_tracks_mean_and_std():
    norm = RewardNormalizer(NormalizationConfig(kind="running", center=0.0, scale=1.0))
    values = [1.0, 3.0, 5.0, 7.0]
    norm.update(values)
    t = torch.tensor(values)
    assert norm.center == pytest.approx(t.mean().item())
    assert norm.scale == pytest.approx(t.std().item())
    assert norm(torch.tensor([4.0])).item() == pytest.approx(0.0)
    affine = RewardNormalizer(NormalizationConfig(kind="affine", center=1.0, scale=2.0))
    affine.update(values)
    assert affine(torch.tensor([5.0])).item() == pytest.approx(2.0)


def test_quantile_normalizer_gives_normal_scores_of_the_seen_rewards():
    cfg = NormalizationConfig(kind="quantile", scale=0.5, min_count=4)
    norm = RewardNormalizer(cfg)
    norm.update([0.0, 1.0])
    # affine until min_count rewards are seen
    assert norm(torch.tensor([1.0])).item() == pytest.approx(2.0)
    norm.update([2.0, 3.0])
    # mid-ranks 1/8, 3/8, 5/8, 7/8; linear in F between the values seen
    got = norm(torch.tensor([0.0, 1.5, 3.0])).tolist()
    want = torch.special.ndtri(torch.tensor([0.125, 0.5, 0.875], dtype=torch.float64)).tolist()
    assert got == pytest.approx(want, abs=1e-6)
    # beyond the rewards seen: slope 1 / scale
    top = norm(torch.tensor([3.0, 3.5])).tolist()
    assert top[1] - top[0] == pytest.approx(1.0)
    # ties share one mid-rank: three zeros out of four sit at F = 3/8
    tied = RewardNormalizer(cfg)
    tied.update([0.0, 0.0, 0.0, 1.0])
    assert tied(torch.tensor([0.0])).item() == pytest.approx(
        torch.special.ndtri(torch.tensor(0.375, dtype=torch.float64)).item(), abs=1e-6
    )


def test_quantile_normalizer_can_freeze_on_the_first_rewards():
    cfg = NormalizationConfig(kind="quantile", min_count=4, fit_count=4)
    frozen = RewardNormalizer(cfg)
    frozen.update([0.0, 1.0, 2.0])
    frozen.update([3.0, 100.0, 200.0])  # only 3.0 is taken
    assert frozen.knots == [0.0, 1.0, 2.0, 3.0] and frozen.count == 4
    before = frozen(torch.tensor([1.5])).item()
    frozen.update([-5.0] * 10)
    assert frozen(torch.tensor([1.5])).item() == before == pytest.approx(0.0, abs=1e-9)


def test_quantile_normalizer_summary_stays_bounded_and_keeps_quantiles():
    gen = torch.Generator().manual_seed(0)
    values = (torch.rand(5000, generator=gen) ** 3).tolist()  # skewed towards 0
    small = RewardNormalizer(NormalizationConfig(kind="quantile", max_knots=64))
    exact = RewardNormalizer(NormalizationConfig(kind="quantile", max_knots=10_000))
    for i in range(0, 5000, 250):  # batch by batch, as the learner appends
        small.update(values[i : i + 250])
        exact.update(values[i : i + 250])
    assert len(small.knots) <= 64 and sum(small.weights) == pytest.approx(5000)
    probe = torch.tensor([0.001, 0.05, 0.125, 0.4, 0.9])
    assert small(probe).tolist() == pytest.approx(exact(probe).tolist(), abs=0.1)
    assert exact(torch.tensor([0.125])).item() == pytest.approx(0.0, abs=0.05)  # the median
    state = json.loads(json.dumps(small.state_dict()))
    loaded = RewardNormalizer(NormalizationConfig(kind="quantile"))
    loaded.load_state_dict(state)
    assert torch.equal(loaded(probe), small(probe))


def test_binning_fixed_and_quantile():
    bins = RewardBinning.evenly(-1.0, 1.0, 4)
    assert bins.edges == pytest.approx([-0.5, 0.0, 0.5])
    assert bins(torch.tensor([-2.0, -0.5, -0.1, 0.0, 0.49, 0.5, 3.0])).tolist() == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    rewards = torch.linspace(0, 1, 1001).tolist()
    q = RewardBinning.from_quantiles(rewards, 4)
    assert q.edges == pytest.approx([0.25, 0.5, 0.75])
    counts = torch.bincount(q(torch.tensor(rewards)), minlength=4)
    assert counts.min() >= 240
    ties = RewardBinning.from_quantiles([0.0] * 50 + [1.0] * 50, 4)
    assert all(b > a for a, b in zip(ties.edges, ties.edges[1:], strict=False))
    with pytest.raises(ValueError, match="increasing"):
        RewardBinning([0.5, 0.1])


# ---------------------------------------------------------------------------------------------
# policy construction
# ---------------------------------------------------------------------------------------------


def test_token_mode_adds_reward_tokens(base_dir):
    before = make_policy(base_dir, "scalar")
    policy = make_policy(base_dir, "token", num_reward_tokens=5, bin_method="fixed")
    tok = policy.tokenizer
    ids = [tok.convert_tokens_to_ids(reward_token(k)) for k in range(5)]
    assert ids == policy.reward_token_ids
    assert len(set(ids)) == 5 and min(ids) >= len(before.tokenizer)
    # each reward token stays one token and decodes away as a special token
    assert tok.encode(reward_token(3), add_special_tokens=False) == [ids[3]]
    emb = policy.model.get_input_embeddings().weight.detach()
    old = emb[: len(before.tokenizer)]
    new = emb[ids]
    # new rows are drawn around the old rows' mean with their spread
    assert (new.mean(0) - old.mean(0)).abs().mean() < 3 * old.std(0).mean()
    assert new.std() == pytest.approx(old.std().item(), rel=0.6)
    # slot ids: targets map through evenly spaced bins over [-1, 1]
    assert policy.slot_token_ids([-0.95, 0.95]) == [ids[0], ids[4]]
    batch = policy.layout(["the movie"], [0.95])
    assert batch.input_ids[0, 0].item() == ids[4]


def test_scalar_slot_embedding_depends_on_reward(base_dir):
    policy = make_policy(base_dir, "scalar")
    a = policy.prompt_embeds([5, 6], 1.0)
    b = policy.prompt_embeds([5, 6], -1.0)
    assert a.shape == (3, policy.model.config.hidden_size)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1:], b[1:])
    token_embeds = policy.model.get_input_embeddings()(torch.tensor([5, 6]))
    assert torch.equal(a[1:], token_embeds)


def test_encode_caches_token_ids_bounded_and_returns_copies(base_dir, monkeypatch):
    import online_dt.policy.tokens as tokens_module

    policy = make_policy(base_dir, "scalar")
    texts = ["a b c", "b c", "", "a b c", "the end"]
    expected = [policy.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert policy.encode(texts) == expected
    first = policy.encode(["a b c"])[0]
    first.append(-1)  # a caller's change must not reach the cache
    assert policy.encode(["a b c"]) == [expected[0]]
    monkeypatch.setattr(tokens_module, "TOKEN_CACHE_SIZE", 2)
    assert policy.encode(["x", "y", "z"]) == [
        policy.tokenizer.encode(t, add_special_tokens=False) for t in ["x", "y", "z"]
    ]
    assert policy._token_ids.texts() == ["y", "z"]  # least recently used texts evicted


def test_reward_on_prompt_shifts_prompt_tokens_only_and_starts_at_zero(base_dir):
    plain = make_policy(base_dir, "scalar")
    cfg = ConditioningConfig(mode="scalar", reward_on_prompt=True)
    fresh = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager").eval()
    batch = plain.layout(PROMPTS, TARGETS, ["a b", "c", "d e f"])
    rewards = torch.tensor(TARGETS)
    with torch.no_grad():  # the untrained prompt head changes nothing
        assert torch.equal(plain(batch, rewards).logits, fresh(batch, rewards).logits)
    shifted = make_policy(base_dir, "scalar+prompt")
    with torch.no_grad():
        a = plain.embed(batch.input_ids, rewards, batch.prompt_mask)
        b = shifted.embed(batch.input_ids, rewards, batch.prompt_mask)
    moved = (a - b).abs().amax(-1) > 0
    assert torch.equal(moved[:, 1:], batch.prompt_mask[:, 1:])  # prompt tokens, nothing else
    # the vLLM form ([slot, *prompt], no mask) shifts every prompt token the same way
    ids = shifted.encode(PROMPTS[:1])[0]
    embeds = shifted.prompt_embeds(ids, TARGETS[0])
    row = batch.prompt_mask[0].nonzero().squeeze(-1)
    assert torch.allclose(embeds[1:], b[0, row], atol=1e-6)
    with pytest.raises(ValueError, match="reward_on_prompt needs mode: scalar"):
        ConditioningConfig(mode="token", reward_on_prompt=True)


def test_rbf_reward_features_start_as_the_linear_head_and_separate_rewards(base_dir):
    """``reward_features: rbf``: the untrained head gives the linear head's slot (the radial
    basis columns start at zero); its features are the normalised reward then one Gaussian
    bump per centre, peaking at its centre; a saved head of the wrong width is refused."""
    linear = make_policy(base_dir, "scalar")
    cfg = ConditioningConfig(mode="scalar", reward_features="rbf", rbf_centers=5)
    rbf = RewardConditionedPolicy.from_base(base_dir, cfg, attn_implementation="eager").eval()
    assert rbf.conditioner.head.weight.shape[1] == cfg.head_inputs == 6
    batch = linear.layout(PROMPTS, TARGETS, ["a b", "c", "d e f"])
    rewards = torch.tensor(TARGETS)
    with torch.no_grad():
        # equal up to float rounding: the zero columns still enter the matmul's sums, and on
        # some CPUs (Xeon, torch 2.13) that moves logits by up to 4e-6
        torch.testing.assert_close(
            linear(batch, rewards).logits, rbf(batch, rewards).logits, rtol=0, atol=1e-4
        )
    rewards = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 0.25])  # the centres, then between two
    feats = rbf.conditioner.head_features(rewards, rbf.conditioner.normalizer(rewards))
    assert feats.shape == (6, 6)
    assert torch.allclose(feats[:, 0], rbf.conditioner.normalizer(rewards))
    assert torch.allclose(feats[:5, 1:].diagonal(), torch.ones(5))  # each centre's own bump
    assert torch.argmax(feats[:5, 1:], dim=1).tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(feats[5, 3], feats[5, 4])  # halfway between the centres 0 and 0.5
    assert feats[5, 1:].max() < 1.0
    # a head saved with the linear features does not load as rbf (nor the other way round)
    state = linear.conditioner.to_state()
    state["meta"]["config"]["reward_features"] = "rbf"
    with pytest.raises(ValueError, match="need 10 inputs"):
        RewardConditioner.from_state(state)
    with pytest.raises(ValueError, match="reward_features needs mode: scalar"):
        ConditioningConfig(mode="token", reward_features="rbf")


def test_missing_model_gives_clear_error(tmp_path):
    with pytest.raises(OSError, match="cannot load model"):
        RewardConditionedPolicy.from_base(tmp_path / "nope", ConditioningConfig())


# ---------------------------------------------------------------------------------------------
# teacher-forced vs incremental logits
# ---------------------------------------------------------------------------------------------


def incremental_logits(policy, prompts, targets, continuation, buggy=False):
    """Prefill the left-padded conditioned prompts, then feed ``continuation`` one token at a
    time with the shared position rule (or, ``buggy``, reusing the last prompt position for the
    first decoded token as the defective library did)."""
    batch = policy.layout(prompts, targets)
    rewards = torch.tensor(targets)
    mask = batch.attention_mask
    out = policy.model(
        inputs_embeds=policy.embed(batch.input_ids, rewards),
        attention_mask=mask,
        position_ids=batch.position_ids,
        use_cache=True,
    )
    steps = [out.logits[:, -1]]
    cache = out.past_key_values
    position = batch.position_ids[:, -1:] + (0 if buggy else 1)
    for t in range(continuation.shape[1] - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = policy.model(
            input_ids=continuation[:, t : t + 1],
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        steps.append(out.logits[:, -1])
        position = position + 1
    return torch.stack(steps, dim=1)


def teacher_forced_logits(policy, prompts, targets, continuation):
    prompt_ids = policy.encode(prompts)
    batch = layout_batch(
        policy.slot_token_ids(targets),
        prompt_ids,
        continuation.tolist(),
        pad_id=policy.pad_token_id,
        padding_side="left",
    )
    logits = policy(batch, torch.tensor(targets)).logits
    n = continuation.shape[1]
    # logits at the last prompt token and each continuation token but the last
    return logits[:, -n - 1 : -1]


@pytest.mark.parametrize("mode", CONDITIONED)
def test_incremental_logits_equal_teacher_forced(base_dir, mode):
    torch.manual_seed(0)
    policy = make_policy(base_dir, mode)
    targets = targets_for(mode)
    vocab = len(policy.tokenizer)
    continuation = torch.randint(0, vocab - 20, (len(PROMPTS), 6))
    with torch.no_grad():
        full = teacher_forced_logits(policy, PROMPTS, targets, continuation)
        step = incremental_logits(policy, PROMPTS, targets, continuation)
        buggy = incremental_logits(policy, PROMPTS, targets, continuation, buggy=True)
    assert (full - step).abs().max().item() < 1e-4
    # the check can fail: the defective position rule is far off
    assert (full - buggy).abs().max().item() > 1e-3
    # padding does not matter: each row alone gives the same logits
    with torch.no_grad():
        for i in range(len(PROMPTS)):
            alone = teacher_forced_logits(
                policy, PROMPTS[i : i + 1], targets[i : i + 1], continuation[i : i + 1]
            )
            assert (alone[0] - full[i]).abs().max().item() < 1e-4
    if mode.endswith("+objectives"):
        # the check can fail: rows conditioned on each other's vectors (the second objective
        # alone changed) give other logits
        swapped = [(a, targets[(i + 1) % len(targets)][1]) for i, (a, _) in enumerate(targets)]
        with torch.no_grad():
            other = teacher_forced_logits(policy, PROMPTS, swapped, continuation)
        assert (full - other).abs().max().item() > 1e-3


@pytest.mark.parametrize("mode", CONDITIONED)
def test_sampled_logprobs_match_teacher_forced(base_dir, mode):
    policy = make_policy(base_dir, mode)
    prompts = PROMPTS * 4
    targets = targets_for(mode, [-1.0, 0.0, 1.0, 0.5] * 3)
    gens = policy.generate(prompts, targets, max_new_tokens=8, temperature=1.0, seed=3)
    assert [g.prompt for g in gens] == prompts
    assert [g.target for g in gens] == targets
    scored = completion_logprobs(policy, prompts, targets, [g.token_ids for g in gens])
    for g, ref in zip(gens, scored, strict=True):
        assert len(g.token_ids) == len(g.logprobs) == len(ref) >= 1
        assert max(abs(a - b) for a, b in zip(g.logprobs, ref, strict=True)) < 1e-4
        assert not set(g.token_ids) & set(policy.reward_token_ids)
        assert g.finished == (g.token_ids[-1] == policy.eos_token_id)
    # sampling is reproducible under a seed
    again = policy.generate(prompts, targets, max_new_tokens=8, temperature=1.0, seed=3)
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_guided_sampling_samples_the_guided_distribution(base_dir, mode):
    """With guidance, each sampled token's logprob is that of ``log_softmax(l + w (l - l_ref))``
    from teacher-forced logits at the target and at the reference; guidance towards the target
    itself changes nothing."""
    from online_dt.policy.logprobs import labelled_token_logprobs

    policy = make_policy(base_dir, mode)
    prompts, targets, w, ref = PROMPTS * 4, [-1.0, 0.0, 1.0, 0.5] * 3, 1.5, -0.3
    gens = policy.generate(
        prompts, targets, max_new_tokens=8, seed=3, guidance_weight=w, guidance_reference=ref
    )
    ids = [g.token_ids for g in gens]
    with torch.no_grad():
        batch = policy.layout_ids(prompts, targets, ids)
        at_target = policy(batch, policy.conditioner.reward_tensor(targets)).logits
        ref_batch = policy.layout_ids(prompts, [ref] * len(prompts), ids)
        at_ref = policy(ref_batch, policy.conditioner.reward_tensor([ref] * len(prompts))).logits
    guided = labelled_token_logprobs(at_target + w * (at_target - at_ref), batch.labels)
    plain = labelled_token_logprobs(at_target, batch.labels)
    gap = 0.0
    for g, row, own in zip(gens, guided, plain, strict=True):
        assert len(g.logprobs) == len(row) >= 1
        assert max(abs(a - b) for a, b in zip(g.logprobs, row.tolist(), strict=True)) < 1e-4
        gap = max(gap, (row - own).abs().max().item())
    assert gap > 1e-3  # the test can fail: the guided distribution is not the policy's own
    # the reference equal to each row's target: l - l_ref = 0, the policy's own samples
    same = [
        policy.generate([p], [t], max_new_tokens=8, seed=3, guidance_weight=w, guidance_reference=t)
        for p, t in zip(prompts[:3], targets[:3], strict=True)
    ]
    own = [
        policy.generate([p], [t], max_new_tokens=8, seed=3)
        for p, t in zip(prompts[:3], targets[:3], strict=True)
    ]
    assert [g[0].token_ids for g in same] == [g[0].token_ids for g in own]
    with pytest.raises(ValueError, match="exactly one"):
        policy.generate(prompts, targets, guidance_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        policy.generate(prompts, targets, guidance_weight=-0.5, guidance_reference=0.0)


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_base_guided_sampling_samples_the_guided_distribution(base_dir, mode):
    """With the base model as the guidance reference, each sampled token's logprob is that of
    ``log_softmax`` of ``l + w (l - l_base)`` on the base's columns (token mode's reward-token
    columns unguided), ``l`` teacher-forced at the target and ``l_base`` the base model's on the
    plain prompt; a base equal to the policy's own unconditioned model is not a no-op."""
    from transformers import AutoModelForCausalLM

    from online_dt.policy.layout import IGNORE_INDEX

    policy = make_policy(base_dir, mode)
    base = AutoModelForCausalLM.from_pretrained(base_dir, attn_implementation="eager").eval()
    prompts, targets, w = PROMPTS * 4, [-1.0, 0.0, 1.0, 0.5] * 3, 1.5
    gens = policy.generate(
        prompts, targets, max_new_tokens=8, seed=3, guidance_weight=w, guidance_model=base
    )
    vocab = base.get_output_embeddings().weight.shape[0]
    gap = 0.0
    for prompt, target, g in zip(prompts, targets, gens, strict=True):
        with torch.no_grad():
            batch = policy.layout_ids([prompt], [target], [g.token_ids])
            logits = policy(batch, policy.conditioner.reward_tensor([target])).logits[0]
            prompt_ids = policy.encode([prompt])[0]
            base_logits = base(torch.tensor([prompt_ids + g.token_ids])).logits[0]
        where = (batch.labels[0, 1:] != IGNORE_INDEX).nonzero().squeeze(-1)
        own = logits[where].float()
        at_base = base_logits[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(g.token_ids)]
        guided = own.clone()
        guided[:, :vocab] = own[:, :vocab] + w * (own[:, :vocab] - at_base.float())
        ids = torch.tensor(g.token_ids)[:, None]
        expected = guided.log_softmax(-1).gather(-1, ids).squeeze(-1)
        assert len(g.logprobs) == len(expected) >= 1
        assert max(abs(a - b) for a, b in zip(g.logprobs, expected.tolist(), strict=True)) < 1e-4
        gap = max(gap, (expected - own.log_softmax(-1).gather(-1, ids).squeeze(-1)).abs().max())
    assert gap > 1e-3  # the test can fail: the guided distribution is not the policy's own
    with pytest.raises(ValueError, match="exactly one"):
        policy.generate(
            prompts, targets, guidance_weight=1.0, guidance_reference=0.0, guidance_model=base
        )


@pytest.mark.parametrize("mode", ["scalar", "token"])
def test_mixture_guided_sampling_samples_the_guided_distribution(base_dir, mode):
    """With a mixture reference, each sampled token's logprob is that of
    ``log_softmax(l + w (l - log p_mix))``, where ``p_mix(y_t | y_<t)`` weights each
    conditioning's teacher-forced next-token distribution by its prior times the likelihood of
    the row's earlier tokens under it (Bayes' rule); a one-reward mixture is that reward's
    guidance, whatever its weight."""
    policy = make_policy(base_dir, mode)
    prompts, targets, w = PROMPTS * 4, [-1.0, 0.0, 1.0, 0.5] * 3, 1.5
    mixture = [(-0.9, 1.0), (0.1, 3.0), (0.8, 2.0)]
    gens = policy.generate(
        prompts, targets, max_new_tokens=8, seed=3, guidance_weight=w, guidance_mixture=mixture
    )
    ids = [g.token_ids for g in gens]

    def teacher_forced(rewards):  # [B, n, V] next-token log-probs at each completion token
        from online_dt.policy.layout import IGNORE_INDEX

        with torch.no_grad():
            batch = policy.layout_ids(prompts, rewards, ids)
            logits = policy(batch, policy.conditioner.reward_tensor(rewards)).logits.float()
        rows = []
        for i in range(len(prompts)):
            where = (batch.labels[i, 1:] != IGNORE_INDEX).nonzero().squeeze(-1)
            rows.append(logits[i, where].log_softmax(-1))
        return rows

    at_target = teacher_forced(targets)
    components = [teacher_forced([r] * len(prompts)) for r, _ in mixture]
    log_prior = torch.tensor([p for _, p in mixture]).log().log_softmax(0)
    gap = 0.0
    for i, g in enumerate(gens):
        token = torch.tensor(g.token_ids)
        comp = torch.stack([c[i] for c in components])  # [K, n, V]
        chosen = comp.gather(-1, token[None, :, None].expand(len(mixture), -1, 1)).squeeze(-1)
        before = torch.cat([torch.zeros(len(mixture), 1), chosen.cumsum(1)[:, :-1]], 1)
        weight = log_prior[:, None] + before  # [K, n]: log prior + log p(y_<t | r_k)
        mix = (weight[..., None] + comp).logsumexp(0) - weight.logsumexp(0)[:, None]
        own = at_target[i]
        expected = (own + w * (own - mix)).log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
        assert len(g.logprobs) == len(expected) >= 1
        assert max(abs(a - b) for a, b in zip(g.logprobs, expected.tolist(), strict=True)) < 1e-4
        gap = max(gap, (expected - own.gather(-1, token[:, None]).squeeze(-1)).abs().max().item())
    assert gap > 1e-3  # the test can fail: the guided distribution is not the policy's own
    one = policy.generate(
        prompts, targets, max_new_tokens=8, seed=3, guidance_weight=w, guidance_mixture=[(0.3, 5.0)]
    )
    single = policy.generate(
        prompts, targets, max_new_tokens=8, seed=3, guidance_weight=w, guidance_reference=0.3
    )
    assert [g.token_ids for g in one] == [g.token_ids for g in single]
    for bad in ([], [(0.0, -1.0), (1.0, 2.0)], [(0.0, 0.0)]):
        with pytest.raises(ValueError, match="guidance_mixture"):
            policy.generate(prompts, targets, guidance_weight=1.0, guidance_mixture=bad)


def test_greedy_generation_ignores_batch_composition(base_dir):
    policy = make_policy(base_dir, "scalar")
    together = policy.generate(PROMPTS, TARGETS, max_new_tokens=6, temperature=0.0)
    for i, g in enumerate(together):
        alone = policy.generate([PROMPTS[i]], [TARGETS[i]], max_new_tokens=6, temperature=0.0)
        assert alone[0].token_ids == g.token_ids


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_save_load_round_trip(base_dir, mode, tmp_path):
    from transformers import AutoModelForCausalLM

    policy = make_policy(base_dir, mode, normalization={"kind": "running"})
    policy.fit_reward_statistics([0.1, 0.4, -0.3, 0.9, 0.2, -0.8, 0.5, 0.0, 0.3])
    with torch.no_grad():
        if policy.conditioner.head is not None:
            policy.conditioner.head.weight.mul_(1.5)
    policy.save_pretrained(tmp_path / "p")
    loaded = RewardConditionedPolicy.from_pretrained(tmp_path / "p", attn_implementation="eager")
    batch = policy.layout(PROMPTS, TARGETS, ["a b", "c", "d e f"])
    with torch.no_grad():
        a = policy(batch, torch.tensor(TARGETS)).logits
        b = loaded.eval()(batch, torch.tensor(TARGETS)).logits
    assert torch.equal(a, b)
    assert loaded.conditioner.normalizer.state_dict() == policy.conditioner.normalizer.state_dict()
    assert loaded.reward_token_ids == policy.reward_token_ids
    if mode == "token":
        assert loaded.conditioner.binning.edges == policy.conditioner.binning.edges
    meta = json.loads((tmp_path / "p" / CONDITIONING_FILE).read_text())
    assert meta["config"]["mode"] == mode.split("+")[0]
    # a plain transformers load of the same directory gives the base weights
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    for name, value in plain.state_dict().items():
        assert torch.equal(value, policy.model.state_dict()[name]), name


def test_from_pretrained_rejects_plain_model_dir(base_dir):
    with pytest.raises(FileNotFoundError, match=CONDITIONING_FILE):
        RewardConditionedPolicy.from_pretrained(base_dir)
