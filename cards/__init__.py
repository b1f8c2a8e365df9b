"""Deprecated: the card templates ship inside the package now (``moviellm_data/templates/cards/``).

``cards`` was too generic a top-level name for an installed distribution. Read a template with
:func:`moviellm_data.card.template`; this shim keeps ``import cards`` working for one more release, with a
DeprecationWarning.
"""

import warnings

from moviellm_data.card import TEMPLATES_DIR as CARDS_DIR
from moviellm_data.card import template

warnings.warn(
    "the top-level `cards` package is deprecated and will be removed; use moviellm_data.card.template(name) "
    "(the templates are in moviellm_data/templates/cards/).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["CARDS_DIR", "template"]
