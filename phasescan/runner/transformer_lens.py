"""A phasescan transformer as a TransformerLens `HookedTransformer` with the same weights.

Needs the optional extra: pip install "phasescan[interp]" (transformer_lens 3.x and torch:
TransformerLens 4.0 removed HookedTransformer, the class for a model built from its own config
and weights, which 3.x marks deprecated). Reached through `LoadedModel.to_transformer_lens()`
(runner/loaded.py); docs/interp.md.

The map (phasescan's row-vector arrays are TransformerLens's own convention, `x @ W`):
  embed -> embed.W_E, pos_embed -> pos_embed.W_pos, unembed -> unembed.W_U (b_U = 0),
  W_Q/W_K/W_V[l] -> blocks.l.attn.W_Q/W_K/W_V (b_Q/b_K/b_V = 0),
  W_O[l] (n_heads * d_head, d) -> blocks.l.attn.W_O (n_heads, d_head, d) (b_O = 0),
  W_in, b_in, W_out, b_out[l] -> blocks.l.mlp.*;
no LayerNorm (normalization_type=None), no causal mask (attention_dir="bidirectional"), scores
divided by sqrt(d_head) (TransformerLens's default attn_scale), act_fn "relu" or "gelu"
(TransformerLens's "gelu" is torch's exact erf GeLU, as phasescan's).
The attention rate is no standard attention: A = attn_rate * softmax(scores) + (1 - attn_rate).
A permanent forward hook on every blocks.{l}.attn.hook_pattern maps the softmax pattern to A, so
every forward pass (run_with_cache, run_with_hooks, ...) computes phasescan's model, and the
cached hook_pattern is A. `model.reset_hooks(including_permanent=True)` would remove it.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..core.config import ConfigError

INSTALL = 'pip install "phasescan[interp]"'
# The state-dict entries phasescan has no counterpart of: zero in the exported model.
ZERO_BIASES = ("b_Q", "b_K", "b_V", "b_O")


def import_transformer_lens():
    """(torch, HookedTransformer, HookedTransformerConfig), or an ImportError saying what to install."""
    try:
        import torch
        import transformer_lens
    except ImportError as error:
        raise ImportError(f"to_transformer_lens() needs TransformerLens and PyTorch ({error.name} "
                          f"is not installed): {INSTALL}") from None
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:  # TransformerLens 4 removed HookedTransformer for TransformerBridge
        raise ImportError(f"to_transformer_lens() needs a TransformerLens with HookedTransformer "
                          f"(3.x); this one has none: {INSTALL} installs a fitting one "
                          f'(pip install "transformer_lens>=3,<4")') from None
    return torch, HookedTransformer, HookedTransformerConfig


def hooked_config(config: dict, device: str = "cpu"):
    """The HookedTransformerConfig of a LoadedModel's config."""
    torch, _, HookedTransformerConfig = import_transformer_lens()
    return HookedTransformerConfig(
        n_layers=config["n_layers"], d_model=config["d_model"], d_head=config["d_head"],
        n_heads=config["n_heads"], d_mlp=config["d_mlp"], d_vocab=config["vocab"],
        d_vocab_out=config["vocab"], n_ctx=config["n_ctx"], act_fn=config["act"],
        normalization_type=None, attn_only=False, positional_embedding_type="standard",
        attention_dir="bidirectional", use_attn_scale=True, default_prepend_bos=False,
        init_weights=False, device=device, dtype=torch.float32,
        model_name=f"phasescan-{config.get('run_id', 'model')}")


def state_dict(arrays: dict, config: dict) -> dict[str, np.ndarray]:
    """The HookedTransformer state dict (numpy float32) of an interchange dict."""
    f32 = lambda x: np.asarray(x, np.float32)
    heads, d_head, d = config["n_heads"], config["d_head"], config["d_model"]
    state = {"embed.W_E": f32(arrays["embed"]), "pos_embed.W_pos": f32(arrays["pos_embed"]),
             "unembed.W_U": f32(arrays["unembed"]),
             "unembed.b_U": np.zeros(config["vocab"], np.float32)}
    for i in range(config["n_layers"]):
        block = f"blocks.{i}"
        for key in ("W_Q", "W_K", "W_V"):
            state[f"{block}.attn.{key}"] = f32(arrays[key][i])
        state[f"{block}.attn.W_O"] = f32(arrays["W_O"][i]).reshape(heads, d_head, d)
        for key in ("b_Q", "b_K", "b_V"):
            state[f"{block}.attn.{key}"] = np.zeros((heads, d_head), np.float32)
        state[f"{block}.attn.b_O"] = np.zeros(d, np.float32)
        for key in ("W_in", "b_in", "W_out", "b_out"):
            state[f"{block}.mlp.{key}"] = f32(arrays[key][i])
    return state


def attention_rate_hook(attn_rate: float):
    """pattern -> attn_rate * pattern + (1 - attn_rate), in the pattern's dtype (float32), the
    operations of engine/model.py."""
    rate = np.float32(attn_rate)
    # Python floats holding the float32 values exactly (torch applies them in float32): 1 - rate
    # rounded once in float32 as phasescan rounds it, not first in float64.
    scale, constant = float(rate), float(np.float32(1.0) - rate)

    def apply_attention_rate(pattern, hook):
        return scale * pattern + constant

    return apply_attention_rate


def to_hooked_transformer(arrays: dict, config: dict, device: str = "cpu"):
    """A HookedTransformer computing the model of `arrays` (the interchange layout); config is
    LoadedModel.config. Logits at the last position: model(tokens)[:, -1]."""
    if config.get("kind", "transformer") != "transformer":
        raise ConfigError(f"to_transformer_lens(): model.kind={config['kind']} is a linear model: "
                          f"it needs no export")
    torch, HookedTransformer, _ = import_transformer_lens()
    with warnings.catch_warnings():  # 3.x: "deprecated, removed in 4.0": chosen knowingly (above)
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(hooked_config(config, device))
    own = state_dict(arrays, config)
    current = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    missing, unknown = params - set(own), set(own) - set(current)
    if missing or unknown:  # a TransformerLens whose parameters phasescan does not know
        raise RuntimeError(f"TransformerLens's HookedTransformer has parameters phasescan cannot "
                           f"fill: {sorted(missing)}; or lacks {sorted(unknown)}")
    for name, value in own.items():
        if tuple(current[name].shape) != value.shape:
            raise RuntimeError(f"{name}: TransformerLens expects shape {tuple(current[name].shape)}, "
                               f"phasescan has {value.shape}")
    model.load_state_dict({**current, **{k: torch.from_numpy(v) for k, v in own.items()}}, strict=True)
    hook = attention_rate_hook(config["attn_rate"])
    for i in range(config["n_layers"]):
        model.add_perma_hook(f"blocks.{i}.attn.hook_pattern", hook)
    model.phasescan_config = dict(config)  # where it came from, attn_rate included
    return model.eval()
