"""A tiny custom-code model written by the tests themselves: an ALiBi-style BERT with its own attention module
and a new ``model_type`` (``alibi_bert``), in a ``modeling_alibi.py`` next to its weights that ``config.json``
names through ``auto_map``, the way custom models (jina-v2, nomic) ship. sentence-transformers loads it only with
``trust_remote_code=True``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

MODELING = '''
import math

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput


class AlibiBertConfig(PretrainedConfig):
    model_type = "alibi_bert"

    def __init__(self, vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, layer_norm_eps=1e-12, exp_gate=False, pad_token_id=0, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.layer_norm_eps, self.exp_gate = layer_norm_eps, exp_gate


class AlibiSelfAttention(nn.Module):
    """Fused q/k/v, scores with a linear distance penalty per head (ALiBi), its own softmax."""

    def __init__(self, config):
        super().__init__()
        self.heads, self.size = config.num_attention_heads, config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        # computed in forward, not a non-persistent buffer: transformers 5 builds models on the meta device and
        # leaves buffers that are not in the checkpoint uninitialised
        self.slopes = [2.0 ** (-8.0 * (h + 1) / self.heads) for h in range(self.heads)]

    def forward(self, hidden, mask):
        b, s, _ = hidden.shape
        q, k, v = self.qkv(hidden).view(b, s, 3, self.heads, self.size).permute(2, 0, 3, 1, 4)
        pos = torch.arange(s, device=hidden.device)
        slopes = torch.tensor(self.slopes, dtype=hidden.dtype, device=hidden.device).view(1, -1, 1, 1)
        alibi = -slopes * (pos.view(1, -1) - pos.view(-1, 1)).abs().to(hidden.dtype)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size) + alibi + mask
        context = torch.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).reshape(b, s, -1))


class AlibiLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = AlibiSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.exp_gate = config.exp_gate

    def forward(self, hidden, mask):
        hidden = self.attention_norm(hidden + self.attention(hidden, mask))
        inner = nn.functional.gelu(self.up(hidden))
        if self.exp_gate:  # an operation no LRP rule covers
            inner = inner * torch.exp(-inner.abs())
        return self.output_norm(hidden + self.down(inner))


class AlibiBertModel(PreTrainedModel):
    config_class = AlibiBertConfig
    base_model_prefix = "alibi"

    def __init__(self, config):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(AlibiLayer(config) for _ in range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embeddings

    def set_input_embeddings(self, value):
        self.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.embedding_norm(self.word_embeddings(input_ids))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, mask)
        return BaseModelOutput(last_hidden_state=hidden)
'''
AUTO_MAP = {"AutoConfig": "modeling_alibi.AlibiBertConfig", "AutoModel": "modeling_alibi.AlibiBertModel"}


def _module(folder: Path):
    spec = importlib.util.spec_from_file_location(f"alibi_{abs(hash(str(folder)))}", folder / "modeling_alibi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def save_custom_model(folder: Path, seed: int = 0, zero_bias: bool = False, exp_gate: bool = False,
                      pooling: str = "mean") -> Path:
    """A sentence-transformers folder of a tiny random ALiBi BERT whose code lives in the folder (``auto_map``);
    ``zero_bias``: every bias zero; ``exp_gate``: its MLP multiplies by exp(-|x|), which no LRP rule covers."""
    from tiny_models import minilm_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modeling_alibi.py").write_text(MODELING, encoding="utf-8")
    module = _module(folder)
    tokenizer = minilm_tokenizer()
    torch.manual_seed(seed)
    model = module.AlibiBertModel(module.AlibiBertConfig(vocab_size=tokenizer.vocab_size, exp_gate=exp_gate,
                                                         pad_token_id=tokenizer.pad_token_id))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.zeros_like(param) if zero_bias else 0.1 * torch.randn_like(param))
            elif "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = AUTO_MAP
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode": pooling}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "cosine"}))
    return folder
