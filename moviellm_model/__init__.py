"""moviellm_model: LLaMA-VID as Hugging Face transformers classes.

Importing this package registers the classes with the transformers Auto classes, so that

```python
import moviellm_model  # noqa: F401
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("path/to/converted-llamavid")
processor = AutoProcessor.from_pretrained("path/to/converted-llamavid")
```

works without `trust_remote_code`. Without torch and transformers (the data side's core install), only the
plain-Python `moviellm_model.input_format` is available.
"""

from . import input_format  # plain Python: the prompt format, usable without torch

__all__ = [
    "LlamaVidConfig",
    "LlamaVidForConditionalGeneration",
    "LlamaVidImageProcessor",
    "LlamaVidModel",
    "LlamaVidPreTrainedModel",
    "LlamaVidProcessor",
    "LlamaVidVisionConfig",
    "LlamaVidVisionModel",
    "input_format",
]

try:  # the classes need torch and transformers (the `model` extra); the data side's core install has neither
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as _error:
    _MISSING = _error.name or "torch"
else:
    _MISSING = None


def __getattr__(name: str):
    if _MISSING is not None and name in __all__:
        raise ImportError(
            f"moviellm_model.{name} needs {_MISSING}, which is not installed; install the model extra: "
            "pip install 'moviellm[model]' (after the CPU or CUDA build of torch)."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _MISSING is None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    from .configuration_llamavid import LlamaVidConfig, LlamaVidVisionConfig
    from .image_processing_llamavid import LlamaVidImageProcessor
    from .modeling_llamavid import (
        LlamaVidForConditionalGeneration,
        LlamaVidModel,
        LlamaVidPreTrainedModel,
        LlamaVidVisionModel,
    )
    from .processing_llamavid import LlamaVidProcessor


def _register() -> None:
    # exist_ok: re-importing (e.g. importlib.reload in tests) must not fail.
    AutoConfig.register(LlamaVidConfig.model_type, LlamaVidConfig, exist_ok=True)
    AutoConfig.register(LlamaVidVisionConfig.model_type, LlamaVidVisionConfig, exist_ok=True)
    AutoModel.register(LlamaVidConfig, LlamaVidModel, exist_ok=True)
    AutoModelForImageTextToText.register(LlamaVidConfig, LlamaVidForConditionalGeneration, exist_ok=True)
    try:  # removed from recent transformers releases
        from transformers import AutoModelForVision2Seq
    except ImportError:
        pass
    else:
        AutoModelForVision2Seq.register(LlamaVidConfig, LlamaVidForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(LlamaVidConfig, LlamaVidProcessor, exist_ok=True)
    try:  # transformers 5.17 without torchvision exposes AutoImageProcessor only as a placeholder
        from transformers import AutoImageProcessor

        AutoImageProcessor.register(LlamaVidConfig, LlamaVidImageProcessor, exist_ok=True)
    except Exception:  # noqa: BLE001 - the processor loads its image processor itself
        pass


if _MISSING is None:
    _register()
