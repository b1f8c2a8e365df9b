"""Sub-commands of ``moviellm`` beyond ``generate``: one module per verb.

Each module registers its verb with :func:`moviellm_data.cli.verb` at import time; the command line
imports every module in this package, so adding a verb means adding a file here.
"""
