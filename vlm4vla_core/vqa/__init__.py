"""Embodied VQA: conversation data (``data``), scorers (``scoring``), the generated sets (``generate``:
the shapes corpus here, the benchmark plug-ins' scene generators through their ``write_vqa_split``) and the
evaluation by generation (``evaluate``)."""
