"""Hugging Face models through transformers (the ``transformers`` extra): a local folder, a
local GGUF file, or a hub id already in the local cache. Nothing is downloaded at run time
unless the model's ``allow_download`` setting says so.

On a GPU the model runs in FP16 with a device map; on the CPU in FP32. Eval mode, greedy
decoding with one beam, the KV cache on, and the prompt prefix's cache computed once and
copied for each request. The attention implementation falls back from SDPA to eager where a
model does not support SDPA.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from mriscribe.errors import library_reason
from mriscribe.report.engines.base import (
    DeadlineExceededError,
    EngineLoadError,
    Generation,
    ModelTurn,
    Prompt,
)
from mriscribe.settings import LanguageModel

DEPENDENCIES = ("torch", "transformers")
EXTRA = "transformers"

log = logging.getLogger(__name__)


def _source(model: str) -> tuple[str, dict[str, Any]]:
    """from_pretrained's first argument and options for a folder, a .gguf file or a hub id."""
    if model in ("", "default"):
        from mriscribe.report.engines.llama_cpp import resolve_model

        model = str(resolve_model("default"))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise EngineLoadError(f"{path.name}: GGUF model file not found")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    if model.startswith((".", "/", "~")):
        raise EngineLoadError(f"{path.name}: model folder not found")
    return model, {}  # a hub id: from the local cache unless downloads are allowed


class TransformersEngine:
    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        allow_download: bool = False,
        warm_prefix: str = "",
        dtype: str | None = None,
    ) -> None:
        import torch
        import transformers

        self._torch = torch
        # generate() takes the key/value cache as `cache` from transformers 5.x on (the old
        # `past_key_values` is deprecated there) and as `past_key_values` before.
        from transformers.generation import utils as generation_utils

        cache_names = getattr(generation_utils, "ALL_CACHE_NAMES", ())
        self._cache_kwarg = "cache" if "cache" in cache_names else "past_key_values"
        source, options = _source(model)
        self.name = f"transformers:{Path(options.get('gguf_file', source)).name}"
        self.device = _pick_device(device, torch)
        gpu = self.device.startswith("cuda")
        torch_dtype = getattr(torch, dtype) if dtype else torch.float16 if gpu else torch.float32
        options["local_files_only"] = not allow_download
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **options)
            self.model = self._load_model(transformers, source, options, torch_dtype, gpu)
        except OSError as exc:
            hint = "" if allow_download else " (not in the local cache; downloads are off)"
            raise EngineLoadError(
                f"{Path(source).name}: cannot be loaded{hint} ({library_reason(exc)})"
            ) from None
        except (ValueError, ImportError, RuntimeError) as exc:
            raise EngineLoadError(
                f"{Path(source).name}: cannot be loaded ({library_reason(exc)})"
            ) from None
        self.model.eval()
        self._turn = ModelTurn()
        self._prefix = ""
        self._prefix_cache: Any = None
        if warm_prefix:
            self._cache_prefix(warm_prefix)

    def _load_model(
        self, transformers: Any, source: str, options: dict[str, Any], dtype: Any, gpu: bool
    ) -> Any:
        kwargs = {**options, "dtype": dtype}
        if gpu and importlib.util.find_spec("accelerate") is not None:
            kwargs["device_map"] = "auto" if self.device == "cuda" else {"": self.device}
        for attention in ("sdpa", "eager"):
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    source, attn_implementation=attention, **kwargs
                )
                break
            except (ValueError, ImportError) as exc:
                if attention == "eager":
                    raise
                log.info("attention fallback to eager", extra={"reason": str(exc)[:200]})
        if "device_map" not in kwargs:
            model = model.to(self.device)
        return model

    def _encode(self, text: str) -> Any:
        return self.tokenizer(text, return_tensors="pt").to(self.model.device)

    def _cache_prefix(self, prefix: str) -> None:
        """Run the prefix once and keep its key/value cache for every request."""
        with self._torch.inference_mode():
            encoded = self._encode(prefix)
            output = self.model(**encoded, use_cache=True)
        self._prefix = prefix
        self._prefix_ids = encoded["input_ids"][0]
        self._prefix_cache = output.past_key_values

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompt: Prompt, *, deadline: float, max_new_tokens: int) -> Generation:
        return self._turn.run(
            deadline,
            "transformers",
            lambda: self._generate(prompt, deadline, max_new_tokens),
        )

    def _generate(self, prompt: Prompt, deadline: float, max_new_tokens: int) -> Generation:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("the deadline passed before generation started")
        encoded = self._encode(prompt.text)
        length = int(encoded["input_ids"].shape[1])
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "use_cache": True,
            "max_time": remaining,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if prompt.stop:
            options["stop_strings"] = list(prompt.stop)
            options["tokenizer"] = self.tokenizer
        if self._prefix_cache is not None and prompt.prefix == self._prefix:
            shared = encoded["input_ids"][0, : len(self._prefix_ids)]
            if self._torch.equal(shared, self._prefix_ids):
                options[self._cache_kwarg] = copy.deepcopy(self._prefix_cache)
        with self._torch.inference_mode():
            output = self.model.generate(**encoded, **options)
        produced = output[0, length:]
        if time.monotonic() > deadline:
            raise DeadlineExceededError(f"the deadline passed after {len(produced)} tokens")
        text = self.tokenizer.decode(produced, skip_special_tokens=True)
        ended = len(produced) > 0 and int(produced[-1]) == self.tokenizer.eos_token_id
        stopped = ended or len(produced) < max_new_tokens or any(s in text for s in prompt.stop)
        for stop in prompt.stop:
            text = text.split(stop, 1)[0]
        return Generation(
            text=text,
            finish_reason="stop" if stopped else "length",
            prompt_tokens=length,
            completion_tokens=len(produced),
        )

    def close(self) -> None:
        self.model = None
        self._prefix_cache = None


def _pick_device(device: str, torch: Any) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load(spec: LanguageModel, *, warm_prefix: str = "") -> TransformersEngine:
    return TransformersEngine(
        spec.model,
        device=spec.device,
        allow_download=spec.allow_download,
        warm_prefix=warm_prefix,
    )


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """Save a GGUF model as a transformers folder (FP32 weights and the tokenizer): loading the
    folder takes seconds, where dequantizing the GGUF takes about a minute on two cores. The
    folder appears whole or not at all."""
    import shutil
    import tempfile

    import transformers

    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    part = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        options = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), **options)
        # The weights are already dequantized to FP32; only the GGUF marker forbids saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer.save_pretrained(part)
        model.save_pretrained(part)
        part.rename(folder)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return folder
