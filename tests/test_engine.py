"""Where the engine cuts its batches: the cheapest plan of padded tokens plus a cost per batch,
never over the token budget, every window once and in order; one length a batch where padding
would change the vectors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from genome_index.embedding.engine import BATCH_COST, BatchEngine, equal_length_batches, plan_batches
from genome_index.embedding.reference import filled_batches
from genome_index.io.fasta import read_genome


def cost(widths: np.ndarray, cuts: list[tuple[int, int]], batch_cost: float) -> float:
    return sum((stop - start) * int(widths[start]) + batch_cost for start, stop in cuts)


def every_plan(n: int):
    """Every way to cut n sorted windows into contiguous batches."""
    for bounds in itertools.product([False, True], repeat=n - 1):
        edges = [0, *(i + 1 for i, cut in enumerate(bounds) if cut), n]
        yield list(itertools.pairwise(edges))


def assert_valid(widths: np.ndarray, cuts: list[tuple[int, int]], budget: int) -> None:
    assert [start for start, _ in cuts] == [0, *(stop for _, stop in cuts[:-1])] and cuts[-1][1] == len(widths)
    assert all(stop - start == 1 or (stop - start) * widths[start] <= budget for start, stop in cuts)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("kinds", [3, 60], ids=["runs of equal widths", "mostly distinct widths"])
def test_the_plan_is_the_cheapest_of_every_possible_cut(seed: int, kinds: int) -> None:
    rng = np.random.default_rng(seed)
    widths = np.sort(rng.choice(rng.integers(1, 60, size=kinds), size=int(rng.integers(1, 11))))[::-1]
    budget, batch_cost = int(rng.integers(60, 200)), float(rng.integers(0, 50))
    cuts = plan_batches(widths, budget, batch_cost)
    assert_valid(widths, cuts, budget)
    fitting = [p for p in every_plan(len(widths)) if all((b - a) * widths[a] <= budget for a, b in p)]
    assert cost(widths, cuts, batch_cost) == min(cost(widths, p, batch_cost) for p in fitting)


def test_a_window_wider_than_the_budget_is_a_batch_of_its_own() -> None:
    assert plan_batches(np.array([500, 90, 80]), 100, 5) == [(0, 1), (1, 2), (2, 3)]
    assert plan_batches(np.array([500, 50, 50]), 100, 5) == [(0, 1), (1, 3)]


def test_anchored_windows_carry_less_padding_than_full_batches(embedder, example_genomes) -> None:
    """The reason for the plan: a genome's anchored windows vary in length, and batches filled
    to the budget (the GPU's, here) pad the short ones heavily."""
    chunks = embedder.chunk(read_genome(example_genomes[0]))
    real = sum(c.n_tokens for c in chunks)
    planned = sum(ids.size for _, ids, _ in BatchEngine(embedder.encoder, 65536).batches(chunks))
    widths = np.sort([c.n_tokens for c in chunks])[::-1]
    filled = sum((stop - start) * widths[start] for start, stop in filled_batches(widths, 65536))
    assert planned - real < 0.6 * (filled - real)
    assert cost(widths, plan_batches(widths, 65536, 65536 * BATCH_COST), 65536 * BATCH_COST) <= cost(
        widths, filled_batches(widths, 65536), 65536 * BATCH_COST
    )


def test_equal_length_batches_hold_one_length_up_to_the_budget() -> None:
    lengths = np.array([5, 5, 5, 4, 4, 1])
    assert equal_length_batches(lengths, 10) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert equal_length_batches(np.array([30, 2]), 10) == [(0, 1), (1, 2)]  # a window over the budget alone
