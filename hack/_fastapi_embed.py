"""(d) of bench-serve-text.py: what a user writes to serve sentence embeddings without Triton.

FastAPI + uvicorn, transformers' AutoTokenizer + AutoModel loaded once, torch eager, one text per request,
the model card's mean pooling + L2 normalisation, JSON in and out. ``/embed`` is a plain ``def`` endpoint (FastAPI
runs it in its thread pool), ``/embed-async`` the same code under ``async def`` (run on the event loop, one at a
time). The counters behind ``/stats`` are the benchmark's instrumentation: tokenizing against the forward pass.

    python hack/_fastapi_embed.py MODEL_FOLDER PORT THREADS MAX_LENGTH
"""

import sys
import time

import torch
import torch.nn.functional as F
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModel, AutoTokenizer

MODEL, PORT, THREADS, MAX_LENGTH = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(THREADS)
tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(MODEL).eval()  # loaded once
spent = {"requests": 0, "tokenize_ns": 0, "forward_ns": 0}
app = FastAPI()


class Request(BaseModel):
    text: str


def embed(text: str) -> list[float]:
    t0 = time.perf_counter_ns()
    batch = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    t1 = time.perf_counter_ns()
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vector: list[float] = F.normalize(pooled, p=2, dim=1)[0].tolist()
    spent["requests"] += 1
    spent["tokenize_ns"] += t1 - t0
    spent["forward_ns"] += time.perf_counter_ns() - t1
    return vector


@app.get("/health")
def health():  # no return annotations: FastAPI would validate replies against them
    return "ok"


@app.get("/stats")
def stats():
    return spent


@app.post("/embed")
def embed_sync(body: Request):
    return {"embedding": embed(body.text)}


@app.post("/embed-async")
async def embed_async(body: Request):
    return {"embedding": embed(body.text)}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
