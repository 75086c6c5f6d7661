"""Tests of dynsel_cli.kernels: Philox, Gumbel, factor scores, and CPU-vs-Triton identical selections.

The Triton kernels run on the CPU through the Triton interpreter; TRITON_INTERPRET must be set before
triton is imported anywhere in the process, hence the first lines of this module.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import itertools  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dynsel_cli.kernels import SelectionParams, factor_scores, resolve_device, select_epochs  # noqa: E402
from dynsel_cli.kernels.cpu import composite_keys  # noqa: E402
from dynsel_cli.kernels.philox import (  # noqa: E402
    gumbel_from_uint32,
    gumbel_noise,
    philox4x32,
    philox_uint32,
)


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _triton():
    """The Triton path module, or skip when triton is not installed."""
    pytest.importorskip("triton")
    from dynsel_cli.kernels import triton_kernels

    assert triton_kernels.INTERPRET, "TRITON_INTERPRET=1 must be set before triton is imported"
    return triton_kernels


# ---------------------------------------------------------------------------------------------------
# Philox and Gumbel
# ---------------------------------------------------------------------------------------------------

KAT = [  # Random123 kat_vectors, philox4x32 10 rounds: counter, key, expected output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32(counter, key)
    assert tuple(int(w) for w in out) == expected
    # vectorised: the same counter repeated gives the same words everywhere
    vec = philox4x32(tuple(np.full(5, c, dtype=np.uint32) for c in counter), key)
    for w, e in zip(vec, expected):
        assert w.dtype == np.uint32 and (w == e).all()


def test_philox_vectorised_matches_scalar_calls():
    idx = np.array([0, 1, 2, 1000, 2**31, 2**32 - 1], dtype=np.uint64)
    x = philox_uint32(17, 3, idx)
    for i, v in zip(idx, x):
        assert int(philox4x32((int(i), 3, 0, 0), (17, 0))[0]) == int(v)


@pytest.mark.parametrize("seed,epoch", [(0, 0), (1, 0), (7, 5), (2**31 - 1, 1), (2**31, 2), (2**32 - 1, 99)])
def test_philox_numpy_matches_triton_randint(seed, epoch):
    tk = _triton()
    n = 3000
    assert np.array_equal(tk.philox_uint32_triton(seed, epoch, n), philox_uint32(seed, epoch, np.arange(n)))


def test_gumbel_numpy_matches_triton():
    tk = _triton()
    rng = np.random.default_rng(1)
    x = np.concatenate(
        [
            np.array([0, 1, 255, 256, 0x5E2D58D8, 0xFFFFFF00, 0xFFFFFFFF], dtype=np.uint32),
            rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32),
        ]
    )
    g_np = gumbel_from_uint32(x)
    assert g_np.dtype == np.float32 and np.isfinite(g_np).all()
    assert np.array_equal(g_np.view(np.uint32), tk.gumbel_from_uint32_triton(x).view(np.uint32))
    # the noise of one (seed, epoch) is the Gumbel map of the Philox stream, sample by sample
    assert np.array_equal(gumbel_noise(5, 2, 3000), gumbel_from_uint32(philox_uint32(5, 2, np.arange(3000))))


def test_gumbel_noise_is_gumbel_distributed():
    g = gumbel_noise(123, 0, 200_000).astype(np.float64)
    assert abs(g.mean() - 0.5772156649) < 0.01  # Euler–Mascheroni
    assert abs(g.var() - np.pi**2 / 6) < 0.03


def test_gumbel_float32_rounding_is_robust_to_last_bit_log_differences():
    """All 2**24 possible u: the float64 result is far from a float32 rounding boundary.

    Another float64 log with up to 2 ulp error (e.g. CUDA's libdevice ``__nv_log``, max 1 ulp) changes
    ``G = -log(-log(u))`` by at most ~2**-50·(1 + |G|); only the few u listed here could then round to a
    different float32 (by one ulp). The benchmark's device check compares all 2**24 values on a GPU.
    """
    fragile = []
    step = 1 << 22
    for start in range(0, 1 << 24, step):
        m = np.arange(start, start + step, dtype=np.float64)
        g = -np.log(-np.log((m + 0.5) * 2.0**-24))
        g32 = g.astype(np.float32)
        up = np.nextafter(g32, np.float32(np.inf)).astype(np.float64)
        dn = np.nextafter(g32, np.float32(-np.inf)).astype(np.float64)
        c = g32.astype(np.float64)
        dist = np.minimum(np.abs((c + up) / 2 - g), np.abs((c + dn) / 2 - g))
        fragile.extend((start + np.nonzero(dist < 2.0**-50 * (1 + np.abs(g)))[0]).tolist())
    assert len(fragile) <= 6, fragile


# ---------------------------------------------------------------------------------------------------
# composite keys
# ---------------------------------------------------------------------------------------------------


def test_composite_keys_order_and_ties():
    tk = _triton()
    rng = np.random.default_rng(2)
    special = np.array(
        [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, np.inf, -np.inf, 1.0, -1.0, 3.4e38, -3.4e38], dtype=np.float32
    )
    key = np.concatenate([special, special, rng.standard_normal(3000).astype(np.float32), np.full(50, 0.5, np.float32)])
    comp = composite_keys(key)
    assert np.array_equal(comp, tk.composite_keys_triton(key))
    assert np.unique(comp).size == key.size
    # descending composite == descending key, ties (incl. +0/-0) by ascending index
    idx = np.arange(key.size)
    expected = np.lexsort((idx, -key.astype(np.float64)))
    assert np.array_equal(np.argsort(-comp, kind="stable"), expected)


# ---------------------------------------------------------------------------------------------------
# factor scores
# ---------------------------------------------------------------------------------------------------


def _codes(n: int, k: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    units = rng.integers(0, m, (n, k)).astype(np.int32)
    acts = (rng.random((n, k), dtype=np.float32) * 3).astype(np.float32)
    units[rng.random((n, k)) < 0.1] = -1  # padding
    acts[rng.random((n, k)) < 0.05] = 0.0
    acts[:5] = 0.0  # all-zero rows
    units[5] = -1  # all-padding row
    freq = rng.random(m).astype(np.float32) ** 3
    freq[:3] = 0.0  # never used units
    freq[3] = 1.0
    units[6:20, 0] = np.arange(14) % 4  # rows touching f = 0 and f = 1
    return units, acts, freq


def _factor_reference(units, acts, freq):
    w = np.where(units >= 0, acts, 0).astype(np.float64)
    s = w.sum(1, keepdims=True)
    a = np.divide(w, s, out=np.zeros_like(w), where=s > 0)
    f = freq.astype(np.float64)
    with np.errstate(divide="ignore"):
        log_term = np.where(f > 0, -np.log(np.where(f > 0, f, 1)), 0.0)
    u = np.where(units >= 0, units, 0)
    return (a * f[u]).sum(1), (a * log_term[u]).sum(1)


@pytest.mark.parametrize("k", [1, 8, 32])
def test_factor_scores_cpu_triton_identical_and_accurate(k):
    tk = _triton()
    units, acts, freq = _codes(2500, k, 300, seed=k)
    r_cpu, d_cpu = factor_scores(units, acts, freq, device="cpu")
    r_tr, d_tr = factor_scores(units, acts, freq, device="triton-cpu")
    assert r_cpu.dtype == d_cpu.dtype == np.float32 and r_cpu.shape == (2500,)
    assert np.array_equal(r_cpu.view(np.uint32), r_tr.view(np.uint32))
    assert np.array_equal(d_cpu.view(np.uint32), d_tr.view(np.uint32))
    assert tk.INTERPRET
    r_ref, d_ref = _factor_reference(units, acts, freq)
    np.testing.assert_allclose(r_cpu, r_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_cpu, d_ref, rtol=1e-6, atol=1e-6)
    assert (r_cpu[:6] == 0).all() and (d_cpu[:6] == 0).all()


def test_factor_scores_validation():
    units, acts, freq = _codes(30, 4, 20, seed=0)
    with pytest.raises(ValueError, match="float32"):
        factor_scores(units, acts.astype(np.float64), freq)
    with pytest.raises(ValueError, match="shape"):
        factor_scores(units, acts[:, :3], freq)
    with pytest.raises(ValueError, match="unit ids"):
        factor_scores(np.full_like(units, 20), acts, freq)
    with pytest.raises(ValueError, match="unit ids"):
        factor_scores(np.full_like(units, -2), acts, freq)
    with pytest.raises(ValueError, match=">= 0"):
        factor_scores(units, -acts - 1, freq)
    with pytest.raises(ValueError, match="unit_freq"):
        factor_scores(units, acts, freq * 0 + 2)
    with pytest.raises(ValueError, match="integer"):
        factor_scores(units.astype(np.float32), acts, freq)
    with pytest.raises(ValueError, match="device"):
        factor_scores(units, acts, freq, device="tpu")


# ---------------------------------------------------------------------------------------------------
# selection: CPU vs Triton
# ---------------------------------------------------------------------------------------------------


def _scores(n: int, seed: int, levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if levels:
        r = (rng.integers(0, levels, n) / (levels - 1)).astype(np.float32)
        d = (rng.integers(0, levels, n) / (levels - 1)).astype(np.float32)
    else:
        r = rng.random(n, dtype=np.float32)
        d = np.clip(1 - r + 0.2 * rng.standard_normal(n).astype(np.float32), 0, 1).astype(np.float32)
    return r, d


def _lambdas(epochs: int) -> list[float]:
    return [float(0.5 - 0.5 * np.cos(np.pi * t / max(epochs - 1, 1))) for t in range(epochs)]


def _run(r, d, params, device):
    return list(select_epochs(r, d, params, device=device))


def _assert_same(a, b):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert np.array_equal(x, y), f"epoch {t} differs"


CASES = [
    # (seed, ratio, tau, penalty, decay, levels)
    *[(s, r, tau, "additive", 1.0, None) for s, r, tau in itertools.product([0, 11], [0.1, 0.5, 0.9], [0.0, 0.3, 1.0])],
    *[(3, r, tau, "multiplicative", 1.0, None) for r, tau in itertools.product([0.1, 0.5, 0.9], [0.0, 0.3])],
    (5, 0.5, 0.3, "additive", 0.8, None),
    (6, 0.3, 0.0, "multiplicative", 0.5, None),
    (7, 0.5, 0.0, "additive", 1.0, 4),
    (8, 0.5, 0.0, "multiplicative", 0.9, 4),
    (9, 0.1, 0.3, "additive", 1.0, 4),
    (2**32 - 1, 0.9, 1.0, "multiplicative", 0.7, 4),
]


@pytest.mark.parametrize("seed,ratio,tau,penalty,decay,levels", CASES)
def test_select_cpu_triton_identical(seed, ratio, tau, penalty, decay, levels):
    _triton()
    n = 2000
    r, d = _scores(n, seed % 1000, levels)
    params = SelectionParams(
        n_select=int(np.ceil(ratio * n)),
        lambdas=_lambdas(6),
        ratio=ratio,
        beta=1.0,
        penalty=penalty,
        decay=decay,
        tau=tau,
        seed=seed,
    )
    cpu = _run(r, d, params, "cpu")
    _assert_same(cpu, _run(r, d, params, "triton-cpu"))
    for sel in cpu:
        assert sel.dtype == np.int64 and sel.size == params.n_select
        assert np.all(np.diff(sel) > 0) and sel[0] >= 0 and sel[-1] < n


@pytest.mark.parametrize("tau,levels", [(0.0, None), (0.3, None), (0.0, 4)])
def test_select_class_quota_identical(tau, levels):
    _triton()
    n, n_classes = 3000, 5
    rng = np.random.default_rng(4)
    labels = rng.integers(0, n_classes, n).astype(np.int64)
    sizes = np.bincount(labels, minlength=n_classes)
    quota = np.minimum(sizes, [400, 0, 300, 250, sizes[4]]).astype(np.int64)  # one empty, one full class
    r, d = _scores(n, 4, levels)
    params = SelectionParams(
        n_select=int(quota.sum()),
        lambdas=_lambdas(5),
        ratio=quota.sum() / n,
        tau=tau,
        seed=9,
        labels=labels,
        class_quota=quota,
    )
    cpu = _run(r, d, params, "cpu")
    _assert_same(cpu, _run(r, d, params, "triton-cpu"))
    for sel in cpu:
        assert np.array_equal(np.bincount(labels[sel], minlength=n_classes), quota)
        assert np.unique(sel).size == sel.size


def test_select_edge_budgets_identical():
    _triton()
    r, d = _scores(1500, 1)
    for n_select in (0, 1, 1499, 1500):
        params = SelectionParams(n_select=n_select, lambdas=[0.0, 0.5, 1.0], ratio=0.5, tau=0.3, seed=2)
        cpu = _run(r, d, params, "cpu")
        _assert_same(cpu, _run(r, d, params, "triton-cpu"))
        assert all(s.size == n_select for s in cpu)
    params = SelectionParams(n_select=3, lambdas=[], ratio=0.5)
    assert _run(r, d, params, "cpu") == [] == _run(r, d, params, "triton-cpu")


# ---------------------------------------------------------------------------------------------------
# selection semantics
# ---------------------------------------------------------------------------------------------------


def _reference_selection(r, d, params):
    """Plain re-statement of the spec: float32 formula, full sort by (key desc, index asc)."""
    f = np.float32
    n = r.size
    c = np.zeros(n, np.float32)
    out = []
    for t, lam in enumerate(params.lambdas):
        b = r + f(lam) * (d - r)
        q = c / f(params.ratio * max(t, 1))
        s = b / (f(1) + f(params.beta) * q) if params.penalty == "multiplicative" else b - f(params.beta) * q
        if params.tau > 0:
            s = s + f(params.tau) * gumbel_noise(params.seed, t, n)
        order = np.lexsort((np.arange(n), -s.astype(np.float64)))
        sel = np.sort(order[: params.n_select])
        out.append(sel)
        c = f(params.decay) * c
        c[sel] += f(1)
    return out


@pytest.mark.parametrize(
    "levels,tau,penalty", [(None, 0.3, "additive"), (4, 0.0, "additive"), (None, 0.0, "multiplicative")]
)
def test_select_matches_plain_reference(levels, tau, penalty):
    r, d = _scores(4000, 3, levels)
    params = SelectionParams(
        n_select=1300, lambdas=_lambdas(5), ratio=0.33, tau=tau, penalty=penalty, decay=0.9, seed=4
    )
    _assert_same(_run(r, d, params, "cpu"), _reference_selection(r, d, params))


def test_ties_go_to_smaller_index():
    n = 1000
    r = np.full(n, 0.5, np.float32)
    d = np.full(n, 0.5, np.float32)
    params = SelectionParams(n_select=100, lambdas=[0.3], ratio=0.1, beta=0.0)
    assert np.array_equal(_run(r, d, params, "cpu")[0], np.arange(100))


def test_determinism_and_seed_dependence():
    r, d = _scores(3000, 5)
    p1 = SelectionParams(n_select=900, lambdas=_lambdas(4), ratio=0.3, tau=0.3, seed=1)
    p2 = SelectionParams(n_select=900, lambdas=_lambdas(4), ratio=0.3, tau=0.3, seed=2)
    a, b = _run(r, d, p1, "cpu"), _run(r, d, p1, "cpu")
    _assert_same(a, b)
    c = _run(r, d, p2, "cpu")
    assert all(not np.array_equal(x, y) for x, y in zip(a, c))
    # tau = 0: the seed is irrelevant
    q1 = SelectionParams(n_select=900, lambdas=_lambdas(4), ratio=0.3, seed=1)
    q2 = SelectionParams(n_select=900, lambdas=_lambdas(4), ratio=0.3, seed=2)
    _assert_same(_run(r, d, q1, "cpu"), _run(r, d, q2, "cpu"))


def test_penalty_rotates_samples():
    n = 2000
    r, d = _scores(n, 6)
    lambdas = _lambdas(10)
    rotating = SelectionParams(n_select=n // 2, lambdas=lambdas, ratio=0.5, beta=1.0)
    devices = ["cpu"] + (["triton-cpu"] if _has_triton() else [])
    for device in devices:
        sels = _run(r, d, rotating, device)
        times = np.bincount(np.concatenate(sels), minlength=n)
        assert times.max() < 10, device
    frozen = SelectionParams(n_select=n // 2, lambdas=[0.5] * 10, ratio=0.5, beta=0.0, tau=0.0)
    sels = _run(r, d, frozen, "cpu")
    assert all(np.array_equal(s, sels[0]) for s in sels)


def test_progress_callback():
    r, d = _scores(500, 0)
    seen: list[int] = []
    params = SelectionParams(n_select=50, lambdas=[0.0, 0.5, 1.0], ratio=0.1)
    list(select_epochs(r, d, params, progress=seen.append))
    assert seen == [1, 2, 3]


def test_selection_validation():
    r, d = _scores(100, 0)
    ok = dict(n_select=10, lambdas=[0.0], ratio=0.1)
    with pytest.raises(ValueError, match="n_select"):
        select_epochs(r, d, SelectionParams(**{**ok, "n_select": 101}))
    with pytest.raises(ValueError, match="float32"):
        select_epochs(r.astype(np.float64), d, SelectionParams(**ok))
    with pytest.raises(ValueError, match="same length"):
        select_epochs(r, d[:50], SelectionParams(**ok))
    with pytest.raises(ValueError, match="finite"):
        select_epochs(np.full(100, np.nan, np.float32), d, SelectionParams(**ok))
    labels = np.arange(100) % 2
    with pytest.raises(ValueError, match="sums to"):
        select_epochs(r, d, SelectionParams(**ok, labels=labels, class_quota=np.array([5, 4])))
    with pytest.raises(ValueError, match="exceeds the class size"):
        select_epochs(r, d, SelectionParams(**{**ok, "n_select": 60}, labels=labels, class_quota=np.array([51, 9])))
    with pytest.raises(ValueError, match="needs labels"):
        select_epochs(r, d, SelectionParams(**ok, class_quota=np.array([5, 5])))
    with pytest.raises(ValueError, match="class ids"):
        select_epochs(r, d, SelectionParams(**ok, labels=labels + 1, class_quota=np.array([5, 5])))
    for bad in (
        dict(ratio=0.0),
        dict(beta=-1.0),
        dict(tau=-0.1),
        dict(decay=1.5),
        dict(seed=2**32),
        dict(seed=-1),
        dict(penalty="log"),
        dict(lambdas=[float("nan")]),
        dict(n_select=-1),
    ):
        with pytest.raises(ValueError):
            SelectionParams(**{**ok, **bad})


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):  # a DeviceError: exit 2 on the command line
            resolve_device("cuda")


def test_cpu_results_do_not_depend_on_thread_count(monkeypatch):
    units, acts, freq = _codes(20_000, 8, 500, seed=3)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("DYNSEL_NUM_THREADS", threads)
        results.append((gumbel_noise(9, 4, 100_000), *factor_scores(units, acts, freq)))
    for a, b in zip(*results):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
