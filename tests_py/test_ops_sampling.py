"""rocmforge.ops.sample against the exact distribution, computed here in NumPy from the
semantics of src/ops/sampling/mod.rs (penalties, then top-k, top-p, min-p, temperature in
llama.cpp's order; ties: the lower id first), independently of the code under test.

Draw counts: 200,000 draws per case on every device, as issue 24 asks. On the CPU that is
cheap because draws of one distribution (1-D logits with per-row keys) are prepared once
(penalties, filters and the cumulative weights: O(vocab)) and each draw is then one Philox
block and a binary search; the whole file runs in well under a minute on two cores. Rows
prepared one by one (2-D logits) are checked with 4,000 draws of a 1,000-token row.

A case passes when no filtered-out token is ever drawn and a chi-square test of the counts
against the exact probabilities (cells with small expected counts merged) gives p > 1e-4."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import rocmforge as rf
from devices import HAS_GPU

DRAWS = 200_000
VOCABS = [7, 1000, 50_000, 262_144]

# Filter combinations: (name, parameters). top_k is scaled down for the 7-token row.
COMBOS = [
    ("none", dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)),
    ("top_k", dict(temperature=0.8, top_k=5, top_p=1.0, min_p=0.0)),
    ("top_p", dict(temperature=1.2, top_k=0, top_p=0.9, min_p=0.0)),
    ("min_p", dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1)),
    ("defaults", dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)),
    (
        "penalties",
        dict(temperature=1.0, top_k=50, top_p=0.98, min_p=0.0, repeat_penalty=1.3, presence_penalty=0.4,
             frequency_penalty=0.3, penalty_last_n=48),
    ),
]


def make_logits(rng, vocab):
    """Logits with ties (values on a grid of 0.1) and -inf entries."""
    if vocab == 7:
        return np.array([0.5, 2.0, 1.0, 2.0, -np.inf, 1.5, -0.3], dtype=np.float32)
    x = np.round(rng.standard_normal(vocab) * 2.5, 1).astype(np.float32)
    x[rng.choice(vocab, size=max(1, vocab // 100), replace=False)] = -np.inf
    return x


def penalized(logits, history, p):
    """The logits after llama.cpp's penalties over the last penalty_last_n tokens."""
    z = logits.astype(np.float32).copy()
    n = p.get("penalty_last_n", 64)
    window = np.asarray(history[len(history) - n:] if n > 0 else [], dtype=np.int64)
    rep, pres, freq = p.get("repeat_penalty", 1.0), p.get("presence_penalty", 0.0), p.get("frequency_penalty", 0.0)
    if window.size and (rep != 1.0 or pres != 0.0 or freq != 0.0):
        ids, counts = np.unique(window, return_counts=True)
        l = z[ids].astype(np.float64)
        pen = counts * np.float64(np.float32(freq)) + np.float64(np.float32(pres))
        rep = np.float64(np.float32(rep))
        z[ids] = (np.where(l <= 0, l * rep, l / rep) - pen).astype(np.float32)
    return z


def exact_probs(logits, p, history=()):
    """The probability of each token under the semantics, in float64."""
    z = penalized(logits, list(history), p).astype(np.float64)
    vocab = z.size
    order = np.lexsort((np.arange(vocab), -z))  # z descending, then the lower id
    zs = z[order]
    top = zs[0]
    temperature = p.get("temperature", 0.8)
    if temperature == 0:
        out = np.zeros(vocab)
        out[order[0]] = 1.0
        return out
    k = p.get("top_k", 40)
    k = vocab if k == 0 or k >= vocab else k
    c = k
    top_p = p.get("top_p", 0.95)
    if top_p < 1.0:
        cum = np.cumsum(np.exp(zs[:k] - top))
        c = min(c, int(np.searchsorted(cum, np.float32(top_p) * cum[-1])) + 1)
    min_p = p.get("min_p", 0.05)
    if min_p > 0:
        floor = np.float32(top) + np.log(np.float32(min_p))  # float32, as specified
        c = min(c, int(np.count_nonzero(zs >= floor)))
    kept = order[:c]
    out = np.zeros(vocab)
    out[kept] = np.exp((z[kept] - top) / np.float64(np.float32(temperature)))
    return out / out.sum()


def chi_square_p(counts, probs):
    """p-value of counts against probs; cells expecting fewer than 5 draws are merged."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = list(counts[big])
    exp = list(expected[big])
    small = (~big) & (probs > 0)
    if small.any():
        rest_obs, rest_exp = counts[small].sum(), expected[small].sum()
        if rest_exp >= 5 or not exp:
            obs.append(rest_obs)
            exp.append(rest_exp)
        else:  # too little to stand alone: merge into the smallest big cell
            i = int(np.argmin(exp))
            obs[i] += rest_obs
            exp[i] += rest_exp
    if len(obs) < 2:
        return 1.0
    return stats.chisquare(np.array(obs, dtype=np.float64), np.array(exp, dtype=np.float64)).pvalue


def check_draws(ids, probs, what):
    counts = np.bincount(np.asarray(ids), minlength=probs.size)
    drawn_but_impossible = np.flatnonzero((counts > 0) & (probs == 0))
    assert drawn_but_impossible.size == 0, f"{what}: filtered-out tokens drawn: {drawn_but_impossible[:10]}"
    p = chi_square_p(counts, probs)
    assert p > 1e-4, f"{what}: chi-square p = {p:.3g}"


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("combo", [c[0] for c in COMBOS])
def test_draws_match_the_exact_distribution(rng, device, vocab, combo):
    p = dict(dict(COMBOS)[combo])
    if vocab == 7:
        p["top_k"] = min(p["top_k"], 3)
    logits = make_logits(rng, vocab)
    history = rng.integers(0, min(vocab, 60), size=100) if "repeat_penalty" in p else None
    probs = exact_probs(logits, p, () if history is None else history)
    ids = rf.ops.sample(logits, **p, history=history, seed=int(rng.integers(2**63)),
                        position=np.arange(DRAWS), device=device)
    assert ids.shape == (DRAWS,) and ids.dtype == np.int64
    check_draws(ids, probs, f"vocab {vocab}, {combo}")


def test_rows_prepared_one_by_one(rng, device):
    """2-D logits: every row is its own distribution (here the same row, 4,000 times)."""
    p = dict(COMBOS)["defaults"]
    logits = make_logits(rng, 1000)
    ids = rf.ops.sample(np.tile(logits, (4000, 1)), **p, seed=5, device=device)
    check_draws(ids, exact_probs(logits, p), "2-D rows")


def test_greedy_is_the_penalized_argmax(rng, device):
    logits = make_logits(rng, 1000)
    logits[[10, 20]] = logits.max() + 1.0  # a tie at the top: the lower id wins
    assert rf.ops.sample(logits, temperature=0.0, device=device) == 10
    history = [10, 10, 3]
    p = dict(temperature=0.0, repeat_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.25)
    want = int(np.argmax(penalized(logits, history, dict(p, penalty_last_n=64))))
    assert want != 10
    assert rf.ops.sample(logits, **p, history=history, device=device) == want
    # Outside the window, the history changes nothing.
    assert rf.ops.sample(logits, **p, history=history + [5] * 64, device=device) == 10


def test_same_seed_same_tokens(rng, device):
    logits = rng.standard_normal((6, 5000)).astype(np.float32)
    kw = dict(temperature=1.1, top_k=0, top_p=0.97, min_p=0.0, seed=1234, sequence=np.arange(100, 106), position=17)
    a = rf.ops.sample(logits, **kw, device=device)
    b = rf.ops.sample(logits, **kw, device=device)
    assert np.array_equal(a, b)
    # Each row alone, and inside a batch of another size, draws the same token.
    for r in range(6):
        alone = rf.ops.sample(logits[r], **dict(kw, sequence=100 + r), device=device)
        assert alone == a[r]
    pair = rf.ops.sample(logits[[4, 1]], **dict(kw, sequence=[104, 101]), device=device)
    assert list(pair) == [a[4], a[1]]
    # Another seed gives other tokens (somewhere among 100 draws).
    many = dict(kw, sequence=None, position=np.arange(100))
    assert not np.array_equal(rf.ops.sample(logits[0], **many, device=device),
                              rf.ops.sample(logits[0], **dict(many, seed=99), device=device))


@pytest.mark.skipif(not HAS_GPU, reason="no GPU found")
def test_cpu_and_gpu_draw_the_same_tokens(rng):
    """Same keys, same picks, except where a draw falls within float rounding of a boundary
    (the devices sum in different orders)."""
    for vocab in [1000, 151_936]:
        logits = rng.standard_normal(vocab).astype(np.float32) * 3
        for p in [dict(), dict(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0), dict(top_k=0, top_p=0.9, min_p=0.0)]:
            kw = dict(p, seed=3, position=np.arange(2000))
            cpu = rf.ops.sample(logits, **kw, device="cpu")
            gpu = rf.ops.sample(logits, **kw, device="gpu")
            assert np.mean(cpu != gpu) < 0.005, (vocab, p)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x[np.isfinite(x)].max()
    return x - (m + np.log(np.exp(x - m).sum()))


def test_logprobs_are_the_models_log_softmax(rng, device):
    logits = np.round(rng.standard_normal((5, 3000)) * 2, 1).astype(np.float32)  # ties
    logits[:, ::17] = -np.inf
    history = [[1, 2, 3], [], [7] * 10, [4], [0, 0]]
    ids, lp, top_ids, top_lp = rf.ops.sample(logits, temperature=[0.0, 0.7, 1.0, 1.5, 0.9], repeat_penalty=1.2,
                                             history=history, seed=8, logprobs=6, device=device)
    assert ids.shape == lp.shape == (5,) and top_ids.shape == top_lp.shape == (5, 6)
    for r in range(5):
        want = log_softmax(logits[r])  # before penalties and temperature
        np.testing.assert_allclose(lp[r], want[ids[r]], rtol=1e-5, atol=1e-5)
        best = np.lexsort((np.arange(3000), -logits[r]))[:6]
        assert list(top_ids[r]) == list(best)
        np.testing.assert_allclose(top_lp[r], want[best], rtol=1e-5, atol=1e-5)
    # One row with scalar parameters gives scalars and 1-D arrays.
    one = rf.ops.sample(logits[0], temperature=0.0, logprobs=2, device=device)
    assert isinstance(one[0], int) and isinstance(one[1], float) and one[2].shape == (2,)
    assert isinstance(rf.ops.sample(logits[0], device=device), int)


def test_filtered_and_infinite_tokens_are_never_drawn(device):
    logits = np.full(64, -np.inf, dtype=np.float32)
    logits[[3, 40]] = [1.0, 1.0]
    ids = rf.ops.sample(logits, temperature=5.0, top_k=0, top_p=1.0, min_p=0.0, position=np.arange(2000),
                        device=device)
    assert set(np.unique(ids)) == {3, 40}
    ids = rf.ops.sample(logits, temperature=5.0, top_k=1, position=np.arange(200), device=device)
    assert set(np.unique(ids)) == {3}


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature=[1.0, float("nan")]), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(min_p=-0.1), "min_p"),
        (dict(min_p=1.5), "min_p"),
        (dict(min_p=float("nan")), "min_p"),
        (dict(repeat_penalty=0.0), "repeat_penalty"),
        (dict(repeat_penalty=float("nan")), "repeat_penalty"),
        (dict(presence_penalty=float("nan")), "presence_penalty"),
        (dict(frequency_penalty=float("inf")), "frequency_penalty"),
        (dict(penalty_last_n=-1), "penalty_last_n"),
        (dict(seed=-1), "seed"),
        (dict(position=-1), "position"),
        (dict(logprobs=-1), "logprobs"),
        (dict(logprobs=21), "logprobs"),
        (dict(history=[0, 5000]), "history"),
        (dict(history=[-1]), "history"),
        (dict(top_k=[1, 2, 3]), "top_k"),
    ],
)
def test_bad_parameters_raise_value_error(device, kw, name):
    logits = np.zeros((2, 100), dtype=np.float32)
    with pytest.raises(ValueError, match=name):
        rf.ops.sample(logits, **kw, device=device)


def test_bad_logits(device):
    with pytest.raises(TypeError, match="logits"):
        rf.ops.sample(np.zeros(10, dtype=np.float64), device=device)
    with pytest.raises(ValueError, match="logits"):
        rf.ops.sample(np.zeros((2, 2, 2), dtype=np.float32), device=device)
    for bad in [np.nan, np.inf]:
        x = np.zeros((3, 500), dtype=np.float32)
        x[1, 123] = bad
        with pytest.raises(rf.RocmForgeError):
            rf.ops.sample(x, device=device)
    with pytest.raises(rf.RocmForgeError):
        rf.ops.sample(np.full(50, -np.inf, dtype=np.float32), device=device)
