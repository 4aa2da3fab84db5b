"""vlm4vla: turn Hugging Face vision-language models into vision-language-action policies."""

__version__ = "0.1.0"
