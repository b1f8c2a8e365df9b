"""Deprecated: this is :mod:`moviellm_data.builders.video_qa` (the same module object)."""

import sys

from moviellm_data.builders import video_qa as _module

sys.modules[__name__] = _module
