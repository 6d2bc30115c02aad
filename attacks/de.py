"""A small batched differential evolution (DE/rand/1, binomial crossover) for pixel attacks.

Own implementation rather than ``scipy.optimize.differential_evolution`` because the attacks
evolve many independent populations (one per attacked image) at once and send every
generation of every image to the oracle in a single batched query, and stop each image at
its first misclassification. Genes live in [0, 1) and are mapped to coordinates/values by the
caller. Fitness is minimised.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def evolve(fitness: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
           n_images: int, dim: int, popsize: int, generations: int,
           rngs: list[np.random.Generator], f: float = 0.5, cr: float = 1.0,
           init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run DE for ``n_images`` independent populations of ``popsize`` genomes of ``dim`` genes.

    ``fitness(genes (m, P, dim), image_ids (m,)) -> (fitness (m, P), success (m, P) bool)`` is
    called once per generation with the still-active images only.
    Returns (best genes (n, dim), best fitness (n,), success (n,) bool). An image stops
    evolving at the first generation in which any genome is successful; its best genome is
    then a successful one.
    """
    pop = np.empty((n_images, popsize, dim))
    for i, r in enumerate(rngs):
        pop[i] = r.random((popsize, dim)) if init is None else init[i]
    ids = np.arange(n_images)
    fit, succ = fitness(pop, ids)
    best = np.empty((n_images, dim))
    best_fit = np.empty(n_images)
    done = np.zeros(n_images, dtype=bool)

    def settle(rows: np.ndarray) -> None:
        for i in rows:
            ok = np.flatnonzero(succ[i])
            j = ok[np.argmin(fit[i, ok])] if ok.size else int(np.argmin(fit[i]))
            best[i], best_fit[i] = pop[i, j], fit[i, j]
            done[i] = done[i] or bool(ok.size)

    settle(ids)
    for _ in range(generations):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        trial = np.empty((act.size, popsize, dim))
        for k, i in enumerate(act):
            r = rngs[i]
            # three distinct partners per genome, all different from the genome itself
            a = np.argsort(r.random((popsize, popsize)) + np.eye(popsize), axis=1)[:, :3]
            mutant = pop[i, a[:, 0]] + f * (pop[i, a[:, 1]] - pop[i, a[:, 2]])
            mutant = np.mod(mutant, 1.0)                  # wrap back into [0, 1)
            if cr < 1.0:
                cross = r.random((popsize, dim)) < cr
                cross[np.arange(popsize), r.integers(0, dim, popsize)] = True
                mutant = np.where(cross, mutant, pop[i])
            trial[k] = mutant
        tfit, tsucc = fitness(trial, act)
        sub_pop, sub_fit, sub_succ = pop[act], fit[act], succ[act]
        better = (tfit <= sub_fit) | tsucc
        sub_pop[better] = trial[better]
        sub_fit[better] = tfit[better]
        sub_succ[better] = tsucc[better]
        pop[act], fit[act], succ[act] = sub_pop, sub_fit, sub_succ
        settle(act)
    return best, best_fit, done
