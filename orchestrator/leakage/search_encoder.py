"""Coordinate search against a bidirectional encoder's hidden states: the probe's guess, corrected token by token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from orchestrator.leakage.forward import EncoderForward
from orchestrator.leakage.probe import RidgeProbe


@dataclass
class CoordinateStats:
    """What a search did: candidate sequences whose hidden states were computed, sequences matched exactly."""

    candidates: int = 0
    exact: int = 0
    sequences: int = 0


class EncoderSearch:
    """Recovers a text from the hidden states after `depth` layers of a bidirectional encoder. It starts from
    the probe's token at every position (the special tokens at the ends are the tokenizer's public format),
    then, while the sequence's hidden states are not within `tolerance` (relative) of the observed ones, sweeps
    over the positions worst matched first, trying the probe's next `top` candidates at each and keeping a
    substitution that brings the whole sequence closer. Every position's state depends on every token, so a
    sequence is verified as a whole: a match within tolerance is the text itself."""

    def __init__(self, fwd: EncoderForward, depth: int, probe: RidgeProbe, tolerance: float = 1e-3,
                 top: int = 8, sweeps: int = 2, worst: int = 8) -> None:
        self.fwd, self.depth, self.probe = fwd, depth, probe
        self.tolerance, self.top, self.sweeps, self.worst = tolerance, top, sweeps, worst

    def _states(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.fwd.hidden_at(seqs, self.depth)

    def _distance(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Relative distance of each candidate's states (B, T, d) to the target (T, d)."""
        return (h - target).flatten(1).norm(dim=-1) / target.norm().clamp_min(1e-12)

    @torch.no_grad()
    def recover(self, observed: torch.Tensor, fixed: dict[int, int], stats: CoordinateStats | None = None
                ) -> list[int]:
        """The token ids whose hidden states are `observed` (T, d); `fixed` maps positions to known ids (the
        tokenizer's [CLS] and [SEP])."""
        stats = stats if stats is not None else CoordinateStats()
        ranking = self.probe.ranking(observed)[:, : self.top + 1]  # (T, top + 1)
        x = ranking[:, 0].clone()
        for p, i in fixed.items():
            x[p] = i
        free = [p for p in range(len(x)) if p not in fixed]
        h = self._states(x[None])[0]
        best = float(self._distance(h[None], observed)[0])
        stats.candidates += 1
        for _ in range(self.sweeps):
            if best < self.tolerance:
                break
            errors = ((h - observed).norm(dim=-1) / observed.norm(dim=-1).clamp_min(1e-12)).tolist()
            for p in sorted(free, key=lambda q: -errors[q])[: self.worst]:
                cands = ranking[p][ranking[p] != x[p]][: self.top]
                batch = x.repeat(len(cands), 1)
                batch[:, p] = cands
                hs = self._states(batch)
                d = self._distance(hs, observed)
                stats.candidates += len(cands)
                i = int(d.argmin())
                if float(d[i]) < best:
                    best, x, h = float(d[i]), batch[i].clone(), hs[i]
                if best < self.tolerance:
                    break
        stats.sequences += 1
        stats.exact += best < self.tolerance
        return x.tolist()
