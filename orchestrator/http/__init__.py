"""The OpenAI-compatible HTTP API (`hsi serve --http-port`): embeddings, chat completions, models, probes, metrics."""

from orchestrator.http.state import HttpSettings

__all__ = ["HttpSettings"]
