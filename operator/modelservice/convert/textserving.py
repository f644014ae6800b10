"""Text models served as a Triton ensemble: ``<name>`` (input ``text``, BYTES) = ``<name>-tokenizer`` (python
backend, the model's own tokenizer.json through the ``tokenizers`` library) then ``<name>-encoder`` (the
converted model). Work in progress: see issue 9."""

from __future__ import annotations

from modelservice.api.models import TEXT_TASKS, ModelService


def is_text_model(ms: ModelService) -> bool:
    return ms.spec.model.format == "huggingface" and ms.spec.model.task in TEXT_TASKS


def encoder_name(ms: ModelService) -> str:
    """The repository folder of the converted model: ``<name>`` itself, or ``<name>-encoder`` behind the
    ensemble of a text model."""
    return f"{ms.name}-encoder" if is_text_model(ms) else ms.name


def tokenizer_name(ms: ModelService) -> str:
    return f"{ms.name}-tokenizer"
