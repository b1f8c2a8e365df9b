"""moviellm_model: LLaMA-VID as Hugging Face transformers classes."""
