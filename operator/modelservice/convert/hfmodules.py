"""The torch modules a ``format: huggingface`` model is exported as: positional tensor inputs in the served order,
one output tensor per task (pooling and normalisation of sentence-transformers included in the graph)."""

from __future__ import annotations

from typing import Any

import torch


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """sentence-transformers' pooling of token embeddings [B, T, H] under the attention mask [B, T]."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return (hidden + (weights - 1.0) * 1e9).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len":
        return summed / counts.sqrt()
    return summed / counts


class TextModel(torch.nn.Module):
    """A text encoder or classifier: ``forward(input_ids, attention_mask[, token_type_ids])``."""

    def __init__(self, model: Any, task: str, names: list[str], pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.names = list(names)
        self.pooling = pooling
        self.normalize = normalize

    @classmethod
    def build(cls, model: Any, task: str, names: list[str], pooling: str, normalize: bool) -> TextModel:
        return cls(model, task, names, pooling, normalize)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        arguments = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            arguments["token_type_ids"] = token_type_ids
        result = self.model(**arguments, return_dict=True)
        if self.task in ("text-classification", "token-classification"):
            logits: torch.Tensor = result.logits
            return logits
        hidden: torch.Tensor = result.last_hidden_state
        if self.task == "feature-extraction":
            return hidden
        embedding = pool(hidden, arguments["attention_mask"], self.pooling)
        if self.normalize:
            embedding = torch.nn.functional.normalize(embedding, p=2.0, dim=1)
        return embedding


class ImageClassifier(torch.nn.Module):
    """``forward(pixel_values) -> logits``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def build(cls, model: Any) -> ImageClassifier:
        return cls(model)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=pixel_values, return_dict=True).logits
        return logits
