"""Regenerate the RNG reference data in tests/data (needs mpmath, a dev dependency; never used at run time).

    python tests/data/make_rng_reference.py

Writes philox2x64_10_kat.txt, normal_icdf_reference.csv, poisson_inv_reference.csv and gamma_inv_reference.csv.
Every high-precision value is computed twice (at 40 and 60 significant digits) and must agree to 30 digits.
Nothing here imports arrival_core: the references are independent of the code they test.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import mpmath as mp

mp.mp.dps = 60  # the working precision between computations: results must not be rounded on return
HERE = Path(__file__).resolve().parent
MASK = (1 << 64) - 1
PHILOX_M, PHILOX_W = 0xD2B74407B1CE6E93, 0x9E3779B97F4A7C15

# Random123 (D. E. Shaw Research) kat_vectors, philox2x64 with 10 rounds: ctr0 ctr1 key -> out0 out1.
PUBLISHED_KAT = [
    ("0000000000000000", "0000000000000000", "0000000000000000", "ca00a0459843d731", "66c24222c9a845b5"),
    ("ffffffffffffffff", "ffffffffffffffff", "ffffffffffffffff", "65b021d60cd8310f", "4d02f3222f86df20"),
    ("243f6a8885a308d3", "13198a2e03707344", "a4093822299f31d0", "0a5e742c2997341c", "b0f883d38000de5d"),
]


def philox_bigint(c0: int, c1: int, key: int) -> tuple[int, int]:
    """Philox2x64-10 with Python integers (exact 128-bit products)."""
    for r in range(10):
        if r:
            key = (key + PHILOX_W) & MASK
        product = PHILOX_M * c0
        c0, c1 = (product >> 64) ^ key ^ c1, product & MASK
    return c0, c1


def write(name: str, header: list[str], rows: list[str]) -> None:
    text = "".join(f"# {line}\n" if line else "#\n" for line in header) + "".join(row + "\n" for row in rows)
    (HERE / name).write_text(text)
    print(f"{name}: {len(rows)} rows")


def twice(fn, *args) -> mp.mpf:
    """fn(*args) at 40 and 60 digits; they must agree to 30 digits (a guard against a silently poor method)."""
    with mp.workdps(40):
        a = fn(*args)
    with mp.workdps(60):
        b = fn(*args)
    if a != b and abs(a - b) > mp.mpf(10) ** -30 * max(abs(a), abs(b)):
        raise AssertionError(f"precision check failed for {fn.__name__}{args}: {a} vs {b}")
    return b


def make_kat() -> None:
    rows = []
    for c0, c1, key, o0, o1 in PUBLISHED_KAT:
        got = philox_bigint(int(c0, 16), int(c1, 16), int(key, 16))
        if got != (int(o0, 16), int(o1, 16)):
            raise AssertionError(f"big-int Philox disagrees with the published vector {c0} {c1} {key}")
        rows.append(f"philox2x64 10 {c0} {c1} {key} {o0} {o1}")
    extra = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (MASK, 0, 0x0123456789ABCDEF), (1 << 63, 1 << 63, 0x9E3779B97F4A7C15)]
    for c0, c1, key in extra:
        o0, o1 = philox_bigint(c0, c1, key)
        rows.append(f"philox2x64 10 {c0:016x} {c1:016x} {key:016x} {o0:016x} {o1:016x}")
    write("philox2x64_10_kat.txt", [
        "Philox2x64-10 known-answer vectors: ctr0 ctr1 key -> out0 out1 (64-bit hex words).",
        "The first three rows are Random123's published kat_vectors for philox2x64 (10 rounds): zero, all-ones",
        "and pi digits. make_rng_reference.py checks them against an independent Python big-int implementation",
        "of the published algorithm; the remaining rows come from that big-int implementation.",
    ], rows)


def _ndtri_mp(u: float) -> mp.mpf:
    p = mp.mpf(u)
    tail = min(p, 1 - p)
    if abs(p - 0.5) < 0.25:  # ncdf(x) - p would cancel here; erfinv of the exact 2p - 1 does not
        return mp.sqrt(2) * mp.erfinv(2 * p - 1)
    x = mp.mpf(statistics.NormalDist().inv_cdf(float(tail)))
    for _ in range(200):
        step = (mp.ncdf(x) - tail) / mp.npdf(x)
        x -= step
        if abs(step) < mp.mpf(10) ** (-mp.mp.dps + 3) * abs(x):
            break
    return x if p < 0.5 else -x


def make_normal() -> None:
    us = set()
    us.update(float(f"{m}e-{k}") for k in (*range(1, 301, 3), 300) for m in (1, 3))
    us.update(2.0 ** -k for k in range(2, 54))
    us.update(1 - 2.0 ** -k for k in range(2, 54))
    us.update(1 - float(f"{m}e-{k}") for k in range(1, 16) for m in (1, 3))
    us.update(k / 200 for k in range(1, 200))
    us.update((0.075, 0.0749999, 0.0750001, 0.925, 0.9250001, 0.9249999, 1.3887943864964021e-11,
               1.388794386496e-11, 0.5 + 2.0 ** -40, 0.5 - 2.0 ** -40))
    rows = [f"{u!r},{mp.nstr(twice(_ndtri_mp, u), 30)}" for u in sorted(us)]
    write("normal_icdf_reference.csv", [
        "Standard normal quantile reference: u (exact float64, repr), Phi^-1(u) to 30 significant digits.",
        "Computed by make_rng_reference.py with mpmath: Newton on ncdf(x) = min(u, 1-u) at 40 and 60 digits.",
        "Grid: both tails down to 1e-300 and 2^-53 from 1, the AS241 break points (0.075, 0.925, e^-25), the centre.",
        "u,x",
    ], rows)


def _poisson_cdf(n: int, lam: float) -> mp.mpf:
    if n < 0:
        return mp.mpf(0)
    if lam == 0:
        return mp.mpf(1)
    return mp.gammainc(n + 1, mp.mpf(lam), mp.inf, regularized=True)


def _poisson_quantile(lam: float, u: float) -> int:
    """Smallest n with F(n) >= u, found by walking from a normal guess and checked at both ends."""
    if lam == 0:
        return 0
    n = max(0, int(lam + lam ** 0.5 * statistics.NormalDist().inv_cdf(u)))
    uu = mp.mpf(u)
    while n > 0 and twice(_poisson_cdf, n - 1, lam) >= uu:
        n -= 1
    while twice(_poisson_cdf, n, lam) < uu:
        n += 1
    return n


POISSON_LAMBDAS = (0.0, 1e-6, 0.3, 3.0, 13.5, 13.6, 40.0, 100.0, 500.0, 1e4, 1e5, 1e7)
GRID_U = (2.0 ** -53, 1e-12, 1e-6, 1e-3, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999, 1 - 1e-6, 1 - 1e-12, 1 - 2.0 ** -53)


def make_poisson() -> None:
    rows = []
    for lam in POISSON_LAMBDAS:
        us = list(GRID_U)
        if lam > 0:  # just inside and just outside a CDF value, where only an accurate F decides
            for q in (0.01, 0.3, 0.7, 0.99):
                k = _poisson_quantile(lam, q)
                f = twice(_poisson_cdf, k, lam)
                us += [float(f * (1 - mp.mpf(10) ** -9)), float(f * (1 + mp.mpf(10) ** -9))]
        for u in us:
            if not 0 < u < 1:
                continue
            n = _poisson_quantile(lam, u)
            lo, hi = twice(_poisson_cdf, n - 1, lam), twice(_poisson_cdf, n, lam)
            assert lo < mp.mpf(u) <= hi
            rows.append(f"{lam!r},{u!r},{n},{mp.nstr(lo, 25)},{mp.nstr(hi, 25)}")
    write("poisson_inv_reference.csv", [
        "Poisson inverse CDF reference: lam, u (exact float64, repr), n = min{n : F(n; lam) >= u},",
        "F(n-1; lam) and F(n; lam) to 25 significant digits (F = regularised upper incomplete gamma Q(n+1, lam)).",
        "Computed by make_rng_reference.py with mpmath at 40 and 60 digits; F(n-1) < u <= F(n) holds exactly.",
        "Grid: lam in {0, 1e-6, 0.3, 3, 13.5, 13.6, 40, 100, 500, 1e4, 1e5, 1e7} x u incl. 2^-53 and 1-2^-53,",
        "plus u = F(k)(1 -/+ 1e-9) at four quantiles k of each lam.",
        "lam,u,n,F_n_minus_1,F_n",
    ], rows)


def _gamma_quantile(a: float, u: float) -> mp.mpf:
    aa, p = mp.mpf(a), mp.mpf(u)
    upper = p > 0.5
    target = 1 - p if upper else p
    x = mp.mpf(max(a * (1 - 1 / (9 * a) + statistics.NormalDist().inv_cdf(u) / (3 * a ** 0.5)) ** 3, 1e-3))
    if not upper and u < 1e-3:
        x = mp.exp((mp.log(p) + mp.loggamma(aa + 1)) / aa)
    for _ in range(500):
        tail = mp.gammainc(aa, x, mp.inf, regularized=True) if upper else mp.gammainc(aa, 0, x, regularized=True)
        dens = mp.exp((aa - 1) * mp.log(x) - x - mp.loggamma(aa))
        step = (target - tail) / dens if upper else (tail - target) / dens
        x_new = x - step
        x = x_new if x_new > 0 else x / 4
        if abs(step) < mp.mpf(10) ** (-mp.mp.dps + 5) * x:
            break
    return x


def make_gamma() -> None:
    rows = []
    for a in (0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 200.0):
        for u in GRID_U:
            rows.append(f"{a!r},{u!r},{mp.nstr(twice(_gamma_quantile, a, u), 25)}")
    write("gamma_inv_reference.csv", [
        "Gamma(shape, 1) quantile reference: shape, u (exact float64, repr), x with P(shape, x) = u to 25 digits.",
        "Computed by make_rng_reference.py with mpmath (Newton on the regularised incomplete gamma of the smaller",
        "tail, 1 - u taken exactly) at 40 and 60 digits.",
        "shape,u,x",
    ], rows)


if __name__ == "__main__":
    make_kat()
    make_normal()
    make_poisson()
    make_gamma()
