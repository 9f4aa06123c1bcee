"""Exact sequential search against a causal decoder's hidden states: token t from the recovered prefix."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from orchestrator.leakage.forward import DecoderForward, KVCache
from orchestrator.leakage.probe import RidgeProbe

CHUNKS = (8, 56, 448, 3584)  # candidates checked per round: 8, then 64, 512, 4096 in all, then the rest
LM_TOP = 256  # how deep the model's own next-token ranking is merged into the candidate order


@dataclass
class SearchStats:
    """What a search did: candidates whose hidden state was computed, positions matched exactly."""

    candidates: int = 0
    exact: int = 0
    positions: int = 0
    widened: int = 0
    distances: list[float] = field(default_factory=list)


def _order(probe_rank: torch.Tensor, lm_rank: torch.Tensor | None) -> torch.Tensor:
    """Candidates best first: the probe's and the model's rankings interleaved (then the probe's alone)."""
    if lm_rank is None:
        return probe_rank
    head = torch.stack([lm_rank, probe_rank[: len(lm_rank)]], dim=1).flatten()
    merged = torch.cat([head, probe_rank[len(lm_rank):]])
    positions = torch.arange(len(merged))
    first = torch.full((int(merged.max()) + 1,), len(merged)).scatter_reduce(0, merged, positions, "amin")
    return merged[first[merged] == positions]  # each id where it first occurs


class DecoderSearch:
    """Recovers a prompt from the hidden states after `depth` blocks of a causal decoder, position by position.
    At position t, with the recovered prefix in a KV cache, candidates ranked by the probe and by the model's
    next-token distribution are run through the first `depth` blocks in batches; the first whose state is
    within `tolerance` (relative) of the observed one is taken. When none is, the search widens (8, 64, 512,
    4096 candidates, ...) until `budget` token-blocks are spent, then takes the closest; it also stops once the
    closest is `ratio` times closer than the runner-up after 64 candidates (an earlier wrong token leaves the
    right one clearly closest but no longer exact). Once a position matched nothing exactly, no later one can
    (its prefix is wrong), so later positions check 64 candidates at most."""

    def __init__(self, fwd: DecoderForward, depth: int, probe: RidgeProbe, tolerance: float = 1e-3,
                 budget: int = 2 ** 13, ratio: float = 0.25) -> None:
        self.fwd, self.depth, self.probe = fwd, depth, probe
        self.tolerance, self.budget, self.ratio = tolerance, budget, ratio

    def _distances(self, cands: torch.Tensor, cache: KVCache, target: torch.Tensor) -> torch.Tensor:
        if self.depth == 0:
            h = self.fwd.embed(cands)
        else:
            h = self.fwd.hidden_at(cands[:, None], self.depth, cache)[0][:, 0]
        return (h - target).norm(dim=-1) / target.norm().clamp_min(1e-12)

    def _lm_rank(self, cache: KVCache, pending: list[torch.Tensor]) -> tuple[torch.Tensor, KVCache]:
        """The model's own next-token ranking after the recovered prefix: the prefix positions not yet run
        through the layers above `depth` (their states at `depth` in `pending`, emptied) are run now."""
        h, new = self.fwd.blocks(torch.cat(pending, dim=1), self.depth, self.fwd.layers, cache)
        pending.clear()
        return self.fwd.logits(h[0, -1]).topk(LM_TOP).indices, cache.extend(new)

    @torch.no_grad()
    def recover(self, observed: torch.Tensor, stats: SearchStats | None = None) -> list[int]:
        """The token ids whose hidden states are `observed` (T, d). The probe's first 8 candidates are tried
        first; only when none matches is the model's next-token ranking computed and merged in."""
        stats = stats if stats is not None else SearchStats()
        cache = KVCache()  # the recovered prefix: layers below `depth` always, those above as far as run
        pending: list[torch.Tensor] = []  # states at `depth` of prefix positions not yet run above it
        probe_ranks = self.probe.ranking(observed)
        out: list[int] = []
        cost, budget = max(self.depth, 1), self.budget
        for t in range(observed.shape[0]):
            order = probe_ranks[t]
            best_id, best, second, done, rounds = int(order[0]), float("inf"), float("inf"), 0, 0
            for size in (*CHUNKS, len(order)):
                if done >= len(order) or (done and done * cost >= budget):
                    break
                if done and pending:  # the probe's best failed: merge in the model's own ranking
                    lm_rank, cache = self._lm_rank(cache, pending)
                    merged = _order(probe_ranks[t], lm_rank)
                    order = torch.cat([order[:done], merged[~torch.isin(merged, order[:done])]])
                cands = order[done:done + max(size, 1)]
                if done and (done + len(cands)) * cost > budget:
                    cands = cands[: max(1, budget // cost - done)]
                dist = self._distances(cands, cache, observed[t])
                done += len(cands)
                rounds += 1
                two = torch.topk(dist, min(2, len(dist)), largest=False)
                for d, i in zip(two.values.tolist(), two.indices.tolist(), strict=True):
                    if d < best:
                        best, second, best_id = d, best, int(cands[i])
                    elif d < second:
                        second = d
                if best < self.tolerance or (done >= 64 and best < self.ratio * second):
                    break
            stats.candidates += done
            stats.positions += 1
            stats.exact += best < self.tolerance
            stats.widened += rounds > 1
            stats.distances.append(best)
            if best >= self.tolerance:
                budget = min(budget, 64 * cost)
            out.append(best_id)
            h, new = self.fwd.hidden_at(torch.tensor([[best_id]]), self.depth, cache)
            cache = cache.extend(new)
            pending.append(h)
        return out
