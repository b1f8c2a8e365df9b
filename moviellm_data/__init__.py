"""moviellm_data: write, render, pack and publish synthetic movies."""

__version__ = "0.1.0"
