"""The verbs of ``moviellm``: one module per verb (``generate.py`` is ``moviellm generate``, and so on).

Each module registers its verb with :func:`moviellm_data.cli.verb` at import time; the command line
imports every module in this package, so adding a verb means adding a file here. A verb module parses
options and prints results; what it runs lives in the library (``pipeline``, ``hub``, ``export``, ...),
and options that several verbs share come from :mod:`moviellm_data.options`.
"""
