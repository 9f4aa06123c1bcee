"""Learned probes: hidden state -> input-embedding row -> nearest token (ridge), and a bag-of-tokens probe."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

LAMBDAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # ridge penalties tried, relative to the mean feature variance
HELD_OUT = 2000  # at most this many training states choose the penalty


def features(x: torch.Tensor) -> torch.Tensor:
    """Each state scaled to unit RMS: the direction carries the token; the scale varies with position (the
    first position's norm is ~10x the others' in a Llama)."""
    return x / x.pow(2).mean(-1, keepdim=True).clamp_min(1e-12).sqrt()


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    gram = x.T @ x
    scale = gram.diagonal().mean().clamp_min(1e-12)
    return torch.linalg.solve(gram + lam * scale * torch.eye(gram.shape[0]), x.T @ y)


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = min(max(1, n // 10), HELD_OUT)
    return perm[cut:], perm[:cut]


class RidgeProbe:
    """Maps a hidden state to the embedding row of the token at its position by ridge regression, then ranks
    the vocabulary by cosine similarity to it. The penalty is chosen on a tenth of the training states."""

    def __init__(self, embeddings: torch.Tensor, candidates: torch.Tensor) -> None:
        self.candidates = candidates
        self.rows = F.normalize(embeddings[candidates], dim=-1)  # (C, d)
        self.embeddings = embeddings
        self.lam = 0.0
        self.mx = self.my = self.w = torch.empty(0)

    def fit(self, states: torch.Tensor, ids: torch.Tensor, seed: int = 0) -> RidgeProbe:
        """Fit on training states (N, d) and the ids of their tokens (N,)."""
        x, y = features(states), self.embeddings[ids]
        self.mx, self.my = x.mean(0), y.mean(0)
        x, y = x - self.mx, y - self.my
        fit, held = _split(len(x), seed)
        best = -1.0
        for lam in LAMBDAS:
            self.w = _ridge(x[fit], y[fit], lam)
            acc = (self._predict_centred(x[held]) == ids[held]).float().mean().item()
            if acc > best:
                best, self.lam = acc, lam
        self.w = _ridge(x, y, self.lam)
        return self

    def _scores_centred(self, xc: torch.Tensor) -> torch.Tensor:
        return F.normalize(xc @ self.w + self.my, dim=-1) @ self.rows.T

    def _predict_centred(self, xc: torch.Tensor) -> torch.Tensor:
        return self.candidates[self._scores_centred(xc).argmax(-1)]

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each state's predicted embedding row to every candidate token, (N, C)."""
        return self._scores_centred(features(states) - self.mx)

    def predict(self, states: torch.Tensor) -> torch.Tensor:
        """The nearest token of each state, (N,)."""
        return self.candidates[self.scores(states).argmax(-1)]

    def ranking(self, states: torch.Tensor) -> torch.Tensor:
        """Every candidate token, best first, for each state, (N, C)."""
        return self.candidates[self.scores(states).argsort(-1, descending=True)]


class BagProbe:
    """Predicts which tokens a text contains from one vector (a pooled embedding, a last position's state):
    ridge regression onto the token-presence indicator, and onto the number of distinct tokens; the bag is the
    top-scoring tokens, as many as predicted."""

    def __init__(self, vocab: int, candidates: torch.Tensor) -> None:
        self.vocab, self.candidates = vocab, candidates
        self.lam = 0.0
        self.mx = self.w = self.prior = self.wn = torch.empty(0)
        self.mn = 0.0

    def _fit(self, x: torch.Tensor, bags: list[list[int]], lam: float) -> None:
        rows = torch.tensor([i for i, bag in enumerate(bags) for _ in set(bag)], dtype=torch.long)
        cols = torch.tensor([t for bag in bags for t in sorted(set(bag))], dtype=torch.long)
        xty = torch.zeros(x.shape[1], self.vocab)
        xty.index_add_(1, cols, x[rows].T)
        self.prior = torch.bincount(cols, minlength=self.vocab).float() / len(bags)
        xty -= x.sum(0)[:, None] * self.prior[None, :]  # centre the targets
        gram = x.T @ x
        reg = lam * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0])
        self.w = torch.linalg.solve(gram + reg, xty)
        n = torch.tensor([float(len(set(b))) for b in bags])
        self.mn = float(n.mean())
        self.wn = torch.linalg.solve(gram + reg, x.T @ (n - self.mn))

    def fit(self, states: torch.Tensor, bags: list[list[int]], seed: int = 0) -> BagProbe:
        """Fit on one vector per training text (N, d) and the token ids of each text."""
        x = features(states)
        self.mx = x.mean(0)
        x = x - self.mx
        fit, held = _split(len(x), seed)
        best = -1.0
        for lam in LAMBDAS:
            self._fit(x[fit], [bags[i] for i in fit.tolist()], lam)
            guess = self._bags(x[held])
            acc = sum(len(set(g) & set(bags[i])) / max(len(g), len(set(bags[i])), 1)
                      for g, i in zip(guess, held.tolist(), strict=True))
            if acc > best:
                best, self.lam = acc, lam
        self._fit(x, bags, self.lam)
        return self

    def _bags(self, xc: torch.Tensor) -> list[list[int]]:
        scores = (xc @ self.w + self.prior)[:, self.candidates]
        sizes = (xc @ self.wn + self.mn).round().clamp(1, 256).long().tolist()
        top = scores.argsort(-1, descending=True)
        return [self.candidates[top[i, :n]].tolist() for i, n in enumerate(sizes)]

    def predict(self, states: torch.Tensor) -> list[list[int]]:
        """The predicted bag of distinct tokens of each vector, best first."""
        return self._bags(features(states) - self.mx)

    def ranking(self, states: torch.Tensor) -> torch.Tensor:
        """Every candidate token, most likely present first, (N, C)."""
        xc = features(states) - self.mx
        return self.candidates[(xc @ self.w + self.prior)[:, self.candidates].argsort(-1, descending=True)]
