"""``python -m moviellm_data``: the same as the ``moviellm`` command."""

import sys

from moviellm_data.cli import main

sys.exit(main())
