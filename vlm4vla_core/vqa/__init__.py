"""Embodied VQA: conversation data (``data``), scorers (``scoring``), the Meta-World generator
(``metaworld``) and the evaluation by generation (``evaluate``)."""
