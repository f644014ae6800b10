"""Reference architectures for scikit-learn's 8x8 digits (input ``image``: [batch, 1, 8, 8] in [0, 1]).

Self-contained (only torch): ``modelservice convert`` imports this file from the model source folder and
calls the callable named in ``spec.model.architecture`` without arguments, then loads the state dict.

- ``DigitsMLP``: 64-64-10 multilayer perceptron.
- ``DigitsCNN``: two 3x3 convolutions and a small classifier, about 38k parameters.
- ``DigitsEncoder``: a tiny transformer encoder over 2x2 patches (hidden 32, 2 layers).
- ``DigitsEncoderLarge``: the same encoder at hidden 384, 4 layers, 6 heads (benchmarks).

The encoder is written with plain Linear/MatMul/Softmax operations (no fused attention kernels), so
that the exported ONNX graph has MatMul nodes with constant weights that ONNX Runtime can quantize.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DigitsEncoder(nn.Module):
    """Transformer encoder over the 16 2x2 patches of the image; mean-pooled, then classified."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, ffn: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.position = nn.Parameter(torch.zeros(1, 16, dim))
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch = image.shape[0]
        # [B, 1, 8, 8] -> [B, 4, 2, 4, 2] -> [B, 4, 4, 2, 2] -> [B, 16, 4]: 16 patches of 2x2 pixels.
        patches = image.reshape(batch, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(batch, 16, 4)
        x = self.embed(patches) + self.position
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(dim=1))


class DigitsEncoderLarge(DigitsEncoder):
    """Hidden 384, 4 layers, 6 heads, feed-forward 1536 (about 7M parameters): the benchmark encoder."""

    def __init__(self) -> None:
        super().__init__(dim=384, depth=4, heads=6, ffn=1536)
