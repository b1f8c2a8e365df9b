"""Stage-3 long-video tuning of LLaMA-VID (`moviellm train`): streaming data, the Trainer, recipes.

```python
from moviellm_model.training import load_recipe, run_training

recipe = load_recipe("configs/tiny-cpu.yaml", {"max_steps": "20"})
result = run_training(recipe, output_dir="runs/tiny")
print(result.final_loss, result.data.summary())
```
"""

from .encoding import ConversationEncoder, EncodedSample, SampleSkipped
from .records import DataError, LlavaJsonSource, MovieSource, Record
from .recipe import RecipeError, TrainRecipe, load_recipe
from .stream import DataStats, MixedStream, TrainingBatches, WeightedSource, collate
from .trainer import LlamaVidTrainer, TrainResult, apply_freeze, newest_checkpoint, rope_scaling_for, run_training

__all__ = [
    "ConversationEncoder", "DataError", "DataStats", "EncodedSample", "LlamaVidTrainer", "LlavaJsonSource",
    "MixedStream", "MovieSource", "RecipeError", "Record", "SampleSkipped", "TrainRecipe", "TrainResult",
    "TrainingBatches", "WeightedSource", "apply_freeze", "collate", "load_recipe", "newest_checkpoint",
    "rope_scaling_for", "run_training",
]
