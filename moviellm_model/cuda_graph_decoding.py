"""One CUDA graph per static cache for `generate`'s decoding steps (`LlamaVidConfig.cuda_graph_decoding`).

`generate(cache_implementation="static")` compiles the decoding step with torch.compile's "reduce-overhead" mode (CUDA
graph trees). On an H100 a Llama-7B step over a 14.6k-token cache then kept the GPU busy 8.5 ms of the 11.9 ms per token
(benchmarks/RESULTS.md): `generate` synchronises on every token, and the host work between two graphs (guards, graph-tree
bookkeeping over ~400 static inputs, transformers' loop) left the GPU idle for the rest.

`CudaGraphDecoder` is what the model returns from `get_compiled_call`: the same forward compiled by inductor without its
own CUDA graphs, captured here into a single `torch.cuda.CUDAGraph` when a new cache arrives (one capture per `generate`
call, a few tens of milliseconds; the first also warms up and compiles), and replayed for every token after copying the
few per-token inputs (token ids, mask) into the captured buffers. The cache tensors and the weights are read in place;
the cache's write position is a device tensor that the graph advances itself. Steps that do not fit (several new
tokens, a dynamic or offloaded cache, inputs that are neither tensors nor plain values) run the compiled forward.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable

import torch

__all__ = ["CudaGraphDecoder"]

_CACHE_FIELDS = ("past_key_values", "cache")  # the output field's name before and after transformers 5.2x


class _CudaGraph:
    """`torch.cuda.CUDAGraph` behind the small interface `CudaGraphDecoder` needs (tests pass an emulation)."""

    def __init__(self):
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable):
        with torch.cuda.graph(self.graph):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphDecoder:
    """Callable that `generate` uses for decoding steps: captured CUDA graph per static cache, compiled forward otherwise.

    Args:
        forward: the model's compiled `__call__` (inductor, no CUDA graphs of its own).
        weights: a parameter whose storage must not move while a graph is alive (a moved model drops the graph).
        graph_factory: builds an empty graph object (`capture(fn)` returns fn's outputs, `replay()`).
    """

    def __init__(self, forward: Callable, weights: torch.Tensor, graph_factory: Callable = _CudaGraph):
        self.forward = forward
        self.weights = weights
        self.graph_factory = graph_factory
        self.graph = None
        self.key = None
        self.cache = None  # weak reference: the graph reads this cache's tensors in place
        self.buffers: dict[str, torch.Tensor] = {}
        self.output = None
        self.captures = 0  # for tests and diagnostics

    def __call__(self, **kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        key = self._key(kwargs, cache)
        if key is None:
            return self.forward(**kwargs)
        if self.graph is None or key != self.key or self.cache() is not cache:
            self._capture(kwargs, key, cache)
        for name, buffer in self.buffers.items():
            buffer.copy_(kwargs[name])
        self.graph.replay()
        # the captured outputs (logits in the graph's memory), with this step's cache; no reference to a cache is kept
        result = copy.copy(self.output)
        for name in _CACHE_FIELDS:
            if name in result:
                result[name] = cache
        return result

    def _key(self, kwargs, cache):
        """Hashable description of a graph-able single-token step, or None."""
        tokens = kwargs.get("input_ids")
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None or tokens.ndim < 2 or tokens.shape[1] != 1:
            return None
        layers = getattr(cache, "layers", None)
        if not layers or not getattr(cache, "is_compileable", False) or getattr(cache, "offloading", False):
            return None  # offloaded caches move tensors from Python between layers: not something a graph replays
        if not all(getattr(layer, "is_initialized", False) and hasattr(layer, "cumulative_length") for layer in layers):
            return None
        parts = [id(cache), self.weights.data_ptr()]
        for name, value in sorted(kwargs.items()):
            if value is cache:
                continue
            if isinstance(value, torch.Tensor):
                if value.device != self.weights.device or value.requires_grad:
                    return None
                parts.append((name, tuple(value.shape), value.dtype, tuple(value.stride())))
            elif value is None or isinstance(value, (bool, int, float, str)):
                parts.append((name, value))
            else:
                return None
        return tuple(parts)

    def _warm_up(self, call, restore):
        """A side-stream run before a capture: compiles, initialises kernels and library handles, so that nothing but
        kernel launches happens while capturing (CUDA only; the cache is left where it was)."""
        if not self.weights.is_cuda:
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.forward(**call)
            restore()
        torch.cuda.current_stream().wait_stream(stream)

    def _capture(self, kwargs, key, cache):
        self.graph = self.output = None  # release the previous graph (and its memory) first
        buffers = {name: value.clone() for name, value in kwargs.items() if isinstance(value, torch.Tensor)}
        call = dict(kwargs, **buffers)
        # Warming up and capturing must leave the cache where the step found it: the graph itself advances the write
        # position on every replay. (A real capture does not run the kernels; the keys and values a warm-up writes at the
        # current position are written again by the replay.)
        positions = [layer.cumulative_length.clone() for layer in cache.layers]

        def restore():
            for layer, position in zip(cache.layers, positions):
                layer.cumulative_length.copy_(position)

        # A new cache with the inputs of the last capture (the next `generate` call) needs no warm-up: same shapes, same
        # compiled code. Anything else is warmed up first.
        warmed = self.key is None or key[1:] != self.key[1:]
        if warmed:
            self._warm_up(call, restore)
        graph = self.graph_factory()
        try:
            output = graph.capture(lambda: self.forward(**call))
        except Exception:
            if warmed:
                raise
            # should the compiled forward need to recompile for this cache after all, that cannot happen inside a
            # capture: warm up and capture again
            restore()
            self._warm_up(call, restore)
            graph = self.graph_factory()
            output = graph.capture(lambda: self.forward(**call))
        restore()
        for name in _CACHE_FIELDS:
            if name in output:
                output[name] = None  # `__call__` puts the current cache back; a finished cache can be freed
        self.graph, self.output, self.buffers, self.key = graph, output, buffers, key
        self.cache = weakref.ref(cache)
        self.captures += 1
