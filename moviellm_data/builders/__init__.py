"""``datasets`` builders of the datasets moviellm publishes, usable offline.

- :mod:`moviellm_data.builders.synthetic_movies` (:class:`SyntheticMovies`): runs the generation pipeline from a
  named recipe;
- :mod:`moviellm_data.builders.movie_qa_bench` (:class:`MovieQABench`): the long-video QA benchmark in MovieLLM's
  format;
- :mod:`moviellm_data.builders.video_qa` (:class:`VideoQA`): MSVD-QA, MSRVTT-QA, ActivityNet-QA and the
  Video-ChatGPT benchmark.

Each builds Arrow files locally (``builder.download_and_prepare(); builder.as_dataset()``) and can write a
dataset folder of WebDataset shards with a card (``make_dataset_folder`` / ``pack_benchmark`` / ``pack_video_qa``,
through :mod:`moviellm_data.folder`) that ``moviellm push`` publishes and ``load_dataset("org/name")`` reads back.

(Until 0.1 they were the top-level package ``builders``; that name still imports, with a DeprecationWarning.)
"""
