"""Deprecated: this is :mod:`moviellm_data.builders.synthetic_movies` (the same module object)."""

import sys

from moviellm_data.builders import synthetic_movies as _module

sys.modules[__name__] = _module
