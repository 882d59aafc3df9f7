"""The RNG kernels a run of S2 and S3 calls, named for `warmup` so that a child compiles them ahead of the run
(the check kernels are named by `checks.evaluation`); the bodies of S2 and S3 wait for them (`wait_for_kernels`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import counts, extreme_kernels, grid_kernels, latent, warmup
from ..contracts import parse_yaml  # within the document limits: a policy is a user's file
from ..rng import gamma_kernels, normal_kernels, poisson_kernels, streams, variates
from ..strata import StratumLaw

PHASE = "rng kernels"
COUNT_POLICY, LGCP_POLICY = "arrival_count_config_5B.yaml", "arrival_lgcp_config_5B.yaml"


def policy_laws(config_dir: Path) -> tuple[str, str]:
    """(count law, latent model) of the policy files in a folder, read by their own parsers."""
    count_policy = counts.parse_count_policy(parse_yaml((config_dir / COUNT_POLICY).read_text()))
    lgcp_policy = latent.parse_lgcp_policy(parse_yaml((config_dir / LGCP_POLICY).read_text()))
    return count_policy.law, lgcp_policy.latent_model_id


def rng_kernels(count_law: str, latent_model: str) -> tuple:
    """The kernels a run of this law and model calls from Python (S2, S3 and the replays; callees compile into
    them)."""
    used = [streams._blocks_slice, counts._count_blocks_slice, poisson_kernels._poisson_inv_slice,
            grid_kernels._misaligned, extreme_kernels._extremes]
    if latent_model != "none":
        used += [normal_kernels._box_muller_slice, normal_kernels._exp_slice]
    if count_law == "nb2":
        used += [variates._factorize_small, gamma_kernels.gamma_table, gamma_kernels._gamma_inv_table_slice]
    return tuple(used)


def compile_rng_kernels(count_law: str, latent_model: str) -> None:
    """Call each of `rng_kernels` through the run's own function, on two elements of the run's types: its
    signatures."""
    words = np.arange(1, 3, dtype=np.uint64)
    grid_kernels.compile_misaligned()  # the alignment of the λ surface's chunks
    extreme_kernels.compile_extremes()  # the value sets of the streamed outputs (and of their checks)
    x0, x1 = streams.blocks(words, words, words, words)
    if latent_model != "none":
        variates.box_muller(x0, x1)
        variates.exp(np.zeros(2))
    policy = counts.CountPolicy(version="warmup", law=count_law, lambda_zero_eps=0.0, max_count=1,
                                kappa=StratumLaw({}, (), (1.0, 1.0)))
    counts.draw_counts(np.ones(2), np.arange(2), np.zeros(2, dtype=np.int32), (words, words, words),
                       np.ones(2) if count_law == "nb2" else None, policy)


def warmup_phases(config_dir: Path) -> tuple[warmup.Phase, ...]:
    """The phase compiling the RNG kernels of the policies in `config_dir` (none when they cannot be read: the run
    reports a bad policy with its own code)."""
    try:
        laws = policy_laws(config_dir)
    except Exception:  # noqa: BLE001 - only a head start
        return ()
    return (warmup.Phase(PHASE, f"{__name__}:compile_rng_kernels", laws, rng_kernels(*laws)),)


def wait_for_kernels() -> None:
    """Before the first RNG kernel call of a state: let a compiling child of this run finish them."""
    warmup.wait(PHASE)


def load_kernels(config_dir: Path) -> None:
    """Wait for the compiling child, then load the RNG kernels of the policies in `config_dir` from numba's cache
    (a state starts this on the pool while it reads its inputs, so its first draw does not wait for the loading);
    only a head start: a policy that cannot be read loads nothing, and the state reports it with its own code."""
    wait_for_kernels()
    try:
        laws = policy_laws(config_dir)
    except Exception:  # noqa: BLE001 - only a head start
        return
    compile_rng_kernels(*laws)
