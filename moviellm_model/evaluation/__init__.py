"""Judging predictions with the LLaMA-VID, Video-ChatGPT and MovieLLM protocols (``moviellm eval``).

Plain Python: no torch. The judge is any OpenAI-compatible chat model reached through the project's
chat client (:mod:`moviellm_data.llm`): structured answers validated by pydantic, retries, one SQLite
cache (reruns are free, killed runs resume), cost accounting and limits.

- :mod:`.predictions`: reading ``predictions.jsonl`` (written by ``moviellm answer``);
- :mod:`.judges`: the versioned judge prompts in ``prompts/`` and the answers they ask for;
- :mod:`.protocols`: which predictions each protocol reads, what it asks, how it aggregates;
- :mod:`.runner`: sending the judge calls; :mod:`.report`: results.json, results.md, charts, model-index;
- :func:`evaluate`: all of it, as ``moviellm eval`` runs it.
"""

from .evaluate import EvalReport, evaluate
from .predictions import Prediction, PredictionsError, PredictionsFile, read_predictions
from .protocols import PROTOCOLS

__all__ = ["EvalReport", "PROTOCOLS", "Prediction", "PredictionsError", "PredictionsFile", "evaluate",
           "read_predictions"]
