"""The `datasets` features of a movie sample, derived from the pydantic contract.

Deriving them (instead of writing them by hand) keeps the card's ``dataset_info.features`` in step with
:class:`~moviellm_data.script.MovieScript`: a field added to the contract appears in the card, and a
field that `datasets` would silently drop cannot exist.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from .script import MovieScript

_SCALARS = {str: "string", int: "int64", float: "float64", bool: "bool"}


def feature_of(annotation: Any):
    """The `datasets` feature for one pydantic field annotation."""
    import datasets

    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unions other than Optional cannot map to Arrow: {annotation}")
        return feature_of(inner[0])
    if origin is Literal:
        return datasets.Value("string")
    if origin in (list, typing.List):  # noqa: UP006 - both spellings occur
        return datasets.List(feature_of(get_args(annotation)[0]))
    if origin is dict:
        key, value = get_args(annotation)
        raise TypeError(f"free-form dict[{key}, {value}] has no fixed Arrow struct; use a list of records")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {name: feature_of(f.annotation) for name, f in annotation.model_fields.items()}
    if annotation in _SCALARS:
        return datasets.Value(_SCALARS[annotation])
    raise TypeError(f"no datasets feature for {annotation!r}")


def movie_features(with_style: bool = False, with_portraits: bool = False):
    """Features of one WebDataset movie sample as `datasets` loads it.

    ``with_style``: the sample carries the learned style embedding (``style.safetensors``); ``with_portraits``: the
    character portraits its frames were conditioned on (``portraits.safetensors``). Both are bytes.
    """
    import datasets

    features = {
        "__key__": datasets.Value("string"),
        "__url__": datasets.Value("string"),
        "json": feature_of(MovieScript),
        "mp4": datasets.Video(),
    }
    if with_style:
        features["style.safetensors"] = datasets.Value("binary")
    if with_portraits:
        features["portraits.safetensors"] = datasets.Value("binary")
    return datasets.Features(features)
