"""Deprecated: the ``datasets`` builders are :mod:`moviellm_data.builders` now.

``builders`` was too generic a top-level name for an installed distribution (it can collide with other
packages in a user's environment). This shim keeps ``import builders`` and ``from builders.video_qa import
...`` working for one more release, with a DeprecationWarning; its modules are the same module objects as
those of :mod:`moviellm_data.builders`.
"""

import warnings

warnings.warn(
    "the top-level `builders` package is deprecated and will be removed; import moviellm_data.builders instead "
    "(e.g. from moviellm_data.builders.synthetic_movies import SyntheticMovies).",
    DeprecationWarning,
    stacklevel=2,
)
