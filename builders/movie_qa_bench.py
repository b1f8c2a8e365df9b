"""Deprecated: this is :mod:`moviellm_data.builders.movie_qa_bench` (the same module object)."""

import sys

from moviellm_data.builders import movie_qa_bench as _module

sys.modules[__name__] = _module
