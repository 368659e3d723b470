"""GPU check: a few training steps of a real-size LLaVA-style model built from config (random weights).

Prints tokens/s and model FLOPs utilisation (MFU). Nothing is downloaded: the model is built from
transformers configs shaped like llava-interleave-qwen-0.5b (SigLIP-so400m tower + Qwen2-0.5B) or, with
``--text llama-1b``, a Llama-3.2-1B text model.

    python benchmarks/gpu_check.py                 # LoRA on the text model, bf16, batch 8
    python benchmarks/gpu_check.py --mode full     # full fine-tuning

FLOPs per token are counted as 2*N for the forward pass and 2*N (LoRA: activation gradients only, base
frozen) or 4*N (full: activation + weight gradients) for the backward pass, N = parameters touched per
token (text model + projector; the vision tower per image token). Peak bf16 dense FLOP/s is looked up
from the device name (H100 SXM 989e12, H200 989e12, A100 312e12) or given with ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import time

import torch

PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def build(text: str) -> torch.nn.Module:
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
        image_size=384, patch_size=14, vision_use_head=False,
    )  # fmt: skip
    if text == "qwen-0.5b":
        tcfg = Qwen2Config(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151_936, max_position_embeddings=4096, tie_word_embeddings=True,
        )  # fmt: skip
    else:
        tcfg = LlamaConfig(
            hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128_256, max_position_embeddings=4096, tie_word_embeddings=True,
        )  # fmt: skip
    cfg = LlavaConfig(
        vision_config=vision, text_config=tcfg, image_token_id=tcfg.vocab_size - 1,
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_seq_length=729,
    )  # fmt: skip
    return LlavaForConditionalGeneration(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", choices=["qwen-0.5b", "llama-1b"], default="qwen-0.5b", help="text-model size to build")
    p.add_argument("--mode", choices=["lora", "full"], default="lora", help="train a LoRA adapter or every weight")
    p.add_argument("--batch", type=int, default=8, help="samples per step")
    p.add_argument("--text-len", type=int, default=256, help="text tokens per sample (plus 729 image tokens)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's peak bf16 TFLOP/s, for the MFU")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run it on a GPU machine")
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    model = build(args.text).to(dev, dtype=torch.bfloat16)
    text_params = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" not in n and "embed_tokens" not in n)
    vision_params = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n)
    if args.mode == "lora":
        from peft import LoraConfig, get_peft_model

        # the same regex as drake.models.loading.language_model_target_regex (kept standalone: the GPU box
        # may not have the project's data dependencies installed)
        regex = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
        model = get_peft_model(model, LoraConfig(r=128, lora_alpha=256, target_modules=regex))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    image_tokens = 729
    seq = image_tokens + args.text_len
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(0, vocab - 2, (args.batch, seq), device=dev)
    ids[:, 1 : 1 + image_tokens] = model.config.image_token_id
    pixels = torch.randn(args.batch, 3, 384, 384, device=dev, dtype=torch.bfloat16)
    labels = ids.clone()
    labels[:, : 1 + image_tokens] = -100

    def step() -> float:
        out = model(input_ids=ids, pixel_values=pixels, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    bwd = 2 if args.mode == "lora" else 4
    recompute = 2  # gradient checkpointing re-runs the forward pass
    flops = args.batch * (seq * text_params + image_tokens * vision_params) * (2 + recompute + bwd)
    name = torch.cuda.get_device_name(0)
    peak = (args.peak_tflops * 1e12) if args.peak_tflops else next((v for k, v in PEAKS.items() if k in name), None)
    tokens_s = args.batch * seq / dt
    print(f"device            {name}")
    print(f"model             llava {args.text} + siglip-so400m  text {text_params / 1e6:.0f}M  vision {vision_params / 1e6:.0f}M")
    print(f"mode              {args.mode} (bf16, gradient checkpointing), batch {args.batch} x {seq} tokens")
    print(f"step time         {dt * 1000:.1f} ms")
    print(f"tokens/s          {tokens_s:,.0f}")
    print(f"model TFLOP/s     {flops / dt / 1e12:.1f}")
    print(f"MFU               {flops / dt / peak:.1%}" if peak else "MFU               (unknown peak; pass --peak-tflops)")
    print(f"peak memory       {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
