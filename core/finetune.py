"""Fine-tuning sentence encoders in a Siamese setting, saved as folders ``core.load_model`` loads.

Objectives (``FinetuneConfig.objective``):

- ``shifted-dot``: the *adjusted* exact-attribution model of Möller et al. (2023, §2.2): embeddings are shifted by
  the embedding of the input's reference (padding tokens of the same length, special tokens kept),
  e(x) = e'(x) - e'(r_x), and compared by dot product; the loss is the MSE of e(a)·e(b) against the target (gold/5
  for STS-b). Saved with ``simlens.json`` ``{"shifted_embeddings": true}`` and dot-product similarity, so
  ``core.load_model`` returns a shifted model whose ``model_score`` is exactly what ``ij`` decomposes.
- ``cosine``: the standard sentence-transformers objective (MSE of cos(e(a), e(b)) against the target).
- ``dot``: MSE of the plain dot product of the (mean-)pooled embeddings against the target (the noun-counting
  model of the BiLRP ground-truth task, BiLRP §4.3).

Training follows App. H of Möller et al.: AdamW (weight decay 0.1, none on biases and LayerNorm weights), learning
rate 2e-5 with linear warm-up over 10 % of the steps and linear decay, batch size 16, five epochs, gradient norm
clipped at 1 (the sentence-transformers default). Batches are drawn in a seeded order per epoch; a checkpoint
(weights, optimiser, scheduler, RNG state) is written atomically to ``<output>/.checkpoint`` every few minutes, at
the end of each epoch and when the process is interrupted (Ctrl-C / SIGTERM finish the current step first), and the
same call resumes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.loading import as_model
from core.metrics import score_metrics
from core.model_files import SIMLENS_CONFIG
from core.models import SimilarityModel
from core.token_batch import TokenBatch

OBJECTIVES = ("cosine", "shifted-dot", "dot")
#: Written into a fine-tuned model folder last: how it was trained (its presence means the folder is complete).
FINETUNE_FILE = "simlens_finetune.json"
CHECKPOINT_DIR = ".checkpoint"
_CHECKPOINT = "state.pt"
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias", "layer_norm.bias")


@dataclass
class FinetuneConfig:
    """Training settings (defaults: Möller et al. 2023, App. H). ``normalize``: whether the saved model
    normalises its embeddings (None keeps the base model's choice; the ``dot`` objective of the ground-truth
    task sets False)."""

    objective: str = "cosine"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.1
    warmup: float = 0.1
    seed: int = 0
    normalize: bool | None = None
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight-decay must be >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.warmup, (int, float)) and 0 <= self.warmup < 1):
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")


@dataclass
class FinetuneResult:
    """``status``: ``trained`` (from scratch), ``resumed`` (from a checkpoint) or ``skipped`` (the output already
    holds a finished model of the same settings); ``losses``: mean training loss per epoch."""

    output: Path
    status: str
    seconds: float
    steps: int
    losses: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)


class TrainingInterrupted(Exception):
    """Training stopped early (Ctrl-C, SIGTERM or ``max_steps``) after writing a checkpoint."""


# ------------------------------------------------------------------------------------------------
# differentiable embeddings
# ------------------------------------------------------------------------------------------------


def _pooled(model: SimilarityModel, batch: TokenBatch, normalize: bool) -> torch.Tensor:
    """The model's own forward (its position ids) and pooling (which may exclude the prompt), with gradients."""
    pooled = model.pool(model.last_hidden_state(batch), batch)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


def training_embeddings(model: SimilarityModel, texts: Sequence[str], shifted: bool, normalize: bool) -> torch.Tensor:
    """Sentence embeddings (B, D) with gradients: pooled (and normalised when ``normalize``), minus the
    embedding of the reference when ``shifted``. References depend only on a sentence's length, so each
    distinct length's reference is encoded once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        batch = model.tokenize(list(texts))
    embeddings = _pooled(model, batch, normalize)
    if not shifted:
        return embeddings
    reference = model.reference_batch(batch)
    lengths = batch.attention_mask.sum(1)
    unique, inverse = torch.unique(lengths, return_inverse=True)
    first = torch.stack([torch.nonzero(lengths == n)[0, 0] for n in unique])
    width = int(unique.max())
    refs = TokenBatch(texts=[reference.texts[i] for i in first.tolist()],
                      tokens=[reference.tokens[i] for i in first.tolist()],
                      input_ids=reference.input_ids[first, :width], attention_mask=reference.attention_mask[first, :width],
                      special=reference.special[first, :width], offsets=[reference.offsets[i] for i in first.tolist()],
                      word_ids=[reference.word_ids[i] for i in first.tolist()],
                      truncated=[reference.truncated[i] for i in first.tolist()])
    return embeddings - _pooled(model, refs, normalize)[inverse]


def pair_scores(model: SimilarityModel, texts_a: Sequence[str], texts_b: Sequence[str], objective: str,
                normalize: bool) -> torch.Tensor:
    """The score the ``objective`` trains, with gradients: cosine, or the dot product of (shifted) embeddings."""
    shifted = objective == "shifted-dot"
    ea = training_embeddings(model, texts_a, shifted, normalize)
    eb = training_embeddings(model, texts_b, shifted, normalize)
    if objective == "cosine":
        return torch.nn.functional.cosine_similarity(ea, eb, dim=-1)
    return (ea * eb).sum(-1)


# ------------------------------------------------------------------------------------------------
# saving
# ------------------------------------------------------------------------------------------------


def save_model(model: SimilarityModel, output: str | os.PathLike, *, similarity: str, shifted: bool,
               normalize: bool) -> Path:
    """Write ``model`` as a sentence-transformers folder (encoder + tokenizer, modules.json, 1_Pooling,
    config_sentence_transformers.json, sentence_bert_config.json, and simlens.json with the shift flag)."""
    if len(model.pipeline.modules) != 1:  # a Dense (or inner Normalize) would be lost in the saved folder
        raise ValueError(f"model {model.name}: fine-tuned models are saved with a Pooling module only; its "
                         f"modules are {model.pipeline.description}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "modules.json", modules)
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": model.hidden_size, "pooling_mode": list(model.pipeline.pooling.modes),
        "include_prompt": model.pipeline.pooling.include_prompt,
    })
    _write_json(out / "config_sentence_transformers.json", {
        "similarity_fn_name": similarity, "prompts": model.pipeline.prompts,
        "default_prompt_name": model.pipeline.default_prompt_name,
    })
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": model.max_length, "do_lower_case": False})
    _write_json(out / SIMLENS_CONFIG, {"shifted_embeddings": bool(shifted)})
    return out


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_finetune_info(folder: str | os.PathLike) -> dict | None:
    """How a SimLens-fine-tuned model folder was trained (None for other folders)."""
    path = Path(folder) / FINETUNE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


class _StopRequest:
    """Within the block, the first SIGINT/SIGTERM only sets ``requested`` (the loop finishes its step and writes
    a checkpoint); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _fingerprint(model: SimilarityModel, pairs: Sequence[tuple[str, str]], targets: np.ndarray,
                 config: FinetuneConfig) -> dict:
    digest = hashlib.sha256()
    for (a, b), t in zip(pairs, targets, strict=True):
        digest.update(f"{a}\t{b}\t{float(t)!r}\n".encode())
    return {"base_model": model.name, "base_revision": model.revision, "train_pairs": len(pairs),
            "data_hash": digest.hexdigest()[:16], "config": asdict(config)}


def _optimizer(model: SimilarityModel, config: FinetuneConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.encoder.named_parameters():
        (no_decay if any(k in name for k in _NO_DECAY) else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def _save_checkpoint(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{_CHECKPOINT}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / _CHECKPOINT)


@contextlib.contextmanager
def _trainable(model: SimilarityModel) -> Iterator[None]:
    model.encoder.train()
    for param in model.encoder.parameters():
        param.requires_grad_(True)
    try:
        yield
    finally:
        model.encoder.eval()
        for param in model.encoder.parameters():
            param.requires_grad_(False)


def finetune(
    model: SimilarityModel | str,
    pairs: Sequence[tuple[str, str]],
    targets: Sequence[float],
    output: str | os.PathLike,
    config: FinetuneConfig | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    device: str | None = None,
    checkpoint_seconds: float = 300.0,
    max_steps: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (anything ``load_model`` takes, or a SimilarityModel, which is then trained in place) on
    ``pairs`` to predict ``targets`` and save it to ``output`` (a folder ``core.load_model`` loads).

    An ``output`` that already holds a finished model of the same base model, data and settings is left as it
    is (status ``skipped``); one holding a checkpoint of them resumes; anything else there (a different run, other
    files) is an error unless ``force``, which starts afresh (only SimLens's own files are replaced).
    ``max_steps`` stops with a checkpoint after that many optimiser steps in this call (TrainingInterrupted),
    as Ctrl-C/SIGTERM do.
    """
    config = config or FinetuneConfig()
    config.validate()
    if len(pairs) != len(targets):
        raise ValueError(f"{len(pairs)} pairs but {len(targets)} targets")
    if not pairs:
        raise ValueError("no training pairs")
    targets_np = np.asarray(targets, dtype=np.float64)
    if not np.isfinite(targets_np).all():
        raise ValueError("targets must be finite numbers")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} exists and is not a folder")
    base = as_model(model, device=device, quiet=True)
    base.encoder.float()
    normalize = base.normalize if config.normalize is None else bool(config.normalize)
    fingerprint = _fingerprint(base, pairs, targets_np, config)
    info = read_finetune_info(out)
    checkpoint_dir = out / CHECKPOINT_DIR
    checkpoint_file = checkpoint_dir / _CHECKPOINT
    state = None
    if force:
        (out / FINETUNE_FILE).unlink(missing_ok=True)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        info = None
    if info is not None:
        if info.get("fingerprint") == fingerprint:
            return FinetuneResult(output=out, status="skipped", seconds=0.0, steps=int(info.get("steps", 0)),
                                  losses=list(info.get("losses", [])), info=info)
        raise ValueError(f"output {str(out)!r} holds a model fine-tuned with other settings or data "
                         f"({info.get('fingerprint', {}).get('config')}); pass --force to retrain it there, "
                         f"or choose another --output")
    if checkpoint_file.is_file():
        state = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"output {str(out)!r} holds a checkpoint of a different fine-tuning "
                             f"({state.get('fingerprint', {}).get('config')}); pass --force to start over, "
                             f"or choose another --output")
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"output {str(out)!r} is not empty; pass --force to write the model there anyway, "
                         f"or choose another --output")

    n = len(pairs)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    torch.manual_seed(config.seed)
    optimizer = _optimizer(base, config)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * total_steps), total_steps)
    epoch, step, losses, epoch_loss, seconds_before = 0, 0, [], 0.0, 0.0
    status = "trained"
    if state is not None:
        base.encoder.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        epoch, step, losses = state["epoch"], state["step"], list(state["losses"])
        epoch_loss, seconds_before = state["epoch_loss"], state["seconds"]
        status = "resumed"
    started = time.perf_counter()

    def snapshot() -> dict:
        return {"model": base.encoder.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch, "step": step,
                "losses": losses, "epoch_loss": epoch_loss, "fingerprint": fingerprint,
                "seconds": seconds_before + time.perf_counter() - started}

    texts_a = [a for a, _ in pairs]
    texts_b = [b for _, b in pairs]
    bar = tqdm(total=total_steps, initial=epoch * steps_per_epoch + step, unit="step", disable=not progress,
               desc=f"fine-tune ({config.objective})")
    last_checkpoint = time.monotonic()
    done_here = 0
    try:
        with _StopRequest() as stop, _trainable(base):
            while epoch < config.epochs:
                order = np.random.default_rng(config.seed + epoch).permutation(n)
                while step < steps_per_epoch:
                    idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                    scores = pair_scores(base, [texts_a[i] for i in idx], [texts_b[i] for i in idx],
                                         config.objective, normalize)
                    target = torch.as_tensor(targets_np[idx], dtype=scores.dtype, device=scores.device)
                    loss = torch.nn.functional.mse_loss(scores, target)
                    loss.backward()
                    if config.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(base.encoder.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    epoch_loss += float(loss.detach()) * len(idx)
                    step += 1
                    done_here += 1
                    bar.update(1)
                    bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{float(loss.detach()):.4f}")
                    epoch_done = step == steps_per_epoch
                    if epoch_done:
                        losses.append(epoch_loss / n)
                        epoch, step, epoch_loss = epoch + 1, 0, 0.0
                        if epoch == config.epochs:
                            break
                    stopping = stop.requested or (max_steps is not None and done_here >= max_steps)
                    if epoch_done or stopping or time.monotonic() - last_checkpoint > checkpoint_seconds:
                        _save_checkpoint(checkpoint_dir, snapshot())
                        last_checkpoint = time.monotonic()
                    if stopping:
                        where = f"epoch {epoch + 1}/{config.epochs}, step {step}/{steps_per_epoch}"
                        raise TrainingInterrupted(
                            f"fine-tuning stopped at {where}; checkpoint saved in {checkpoint_dir}: run the same "
                            f"command again to resume")
                    if epoch_done:
                        break  # the next epoch draws its own batch order
    finally:
        bar.close()
    seconds = seconds_before + time.perf_counter() - started
    similarity = "cosine" if config.objective == "cosine" else "dot"
    save_model(base, out, similarity=similarity, shifted=config.objective == "shifted-dot", normalize=normalize)
    info = {"status": "done", "fingerprint": fingerprint, "base_model": base.name, "objective": config.objective,
            "adjusted": config.objective == "shifted-dot", "epochs": config.epochs, "train_pairs": n,
            "steps": total_steps, "losses": losses, "seconds": seconds, "config": asdict(config)}
    _write_json(out / FINETUNE_FILE, info)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return FinetuneResult(output=out, status=status, seconds=seconds, steps=total_steps, losses=losses, info=info)


# ------------------------------------------------------------------------------------------------
# Table 1 of Möller et al. (2023)
# ------------------------------------------------------------------------------------------------


def table1_scores(model: SimilarityModel, pairs: Sequence[tuple[str, str]], gold: Sequence[float],
                  batch_size: int = 64) -> dict[str, float]:
    """Spearman x100 between gold and (a) the cosine, (b) the dot product of the model's embeddings (its
    shifted embeddings for an adjusted model), as in Table 1 of Möller et al. (2023)."""
    if not pairs:
        raise ValueError("no evaluation pairs")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was truncated.*")
        ea = model.embed([a for a, _ in pairs], batch_size=batch_size).astype(np.float64)
        eb = model.embed([b for _, b in pairs], batch_size=batch_size).astype(np.float64)
    dot = np.einsum("nd,nd->n", ea, eb)
    norms = np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1)
    cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    gold = np.asarray(gold, dtype=np.float64)
    span = np.ptp(gold) or 1.0
    norm_gold = (gold - gold.min()) / span
    return {"cosine": score_metrics(cosine, gold, norm_gold)["spearman"],
            "dot": score_metrics(dot, gold, norm_gold)["spearman"]}
