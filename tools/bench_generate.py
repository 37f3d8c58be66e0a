"""Clips per second of batched generation vs one clip at a time, on the same clips, in one run.

    python tools/bench_generate.py                                   # tiny Qwen2-Audio, CPU
    python tools/bench_generate.py --family qwen2.5-omni
    python tools/bench_generate.py --model qwen2-audio-7b-instruct --device cuda --dtype bfloat16 \
        --clips 32 --batch-size 16 --max-new-tokens 32

Both modes run greedy decoding for a fixed number of new tokens (no stop string, so both do the
same work) after one warm-up call; the batched outputs are checked against the one-at-a-time
ones. Prints clips/s for each mode and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="zoo name or model folder (default: a tiny random model built now)")
    parser.add_argument("--family", default="qwen2-audio", choices=["qwen2-audio", "qwen2.5-omni"],
                        help="family of the tiny model when --model is not given")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--clips", type=int, default=16, help="number of clips")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="mean clip length (s), +-50%%")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from emorl.lalm import build_prompts, generate, load_backbone
    from emorl.lalm.tiny import build_tiny_family

    with tempfile.TemporaryDirectory(prefix="emorl_bench_") as tmp:
        model = args.model or build_tiny_family(args.family, tmp, seed=args.seed)
        return _bench(args, model, build_prompts, generate, load_backbone)


def _bench(args, model, build_prompts, generate, load_backbone) -> int:
    backbone = load_backbone(model, dtype=args.dtype, device=args.device)
    rng = np.random.default_rng(args.seed)
    lengths = rng.uniform(0.5, 1.5, size=args.clips) * args.seconds
    clips = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in lengths]
    question = "What is the emotion of the speaker? Options: angry, happy, sad, neutral."
    messages = [[{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": question}]}]] * args.clips
    kwargs = {"max_new_tokens": args.max_new_tokens, "stop_strings": ()}
    if backbone.eos_token_ids:  # the same amount of work in both modes: never stop early
        kwargs["min_new_tokens"] = args.max_new_tokens

    def run(batch_size: int) -> tuple[float, list[str]]:
        texts: list[str] = []
        _sync(args.device)
        start = time.perf_counter()
        for i in range(0, args.clips, batch_size):
            batch = build_prompts(backbone, messages[i:i + batch_size], clips[i:i + batch_size])
            texts += generate(backbone, batch, **kwargs).texts
        _sync(args.device)
        return time.perf_counter() - start, texts

    run(min(args.batch_size, args.clips))  # warm-up
    batched_s, batched = run(args.batch_size)
    single_s, single = run(1)
    same = sum(a == b for a, b in zip(batched, single))
    print(f"model: {model}  family: {backbone.family}  device: {args.device}  dtype: {args.dtype}")
    print(f"{args.clips} clips of {lengths.min():.1f}-{lengths.max():.1f} s, {args.max_new_tokens} new tokens each")
    print(f"batched (batch {args.batch_size}): {args.clips / batched_s:8.2f} clips/s  ({batched_s:.2f} s)")
    print(f"one at a time:        {args.clips / single_s:8.2f} clips/s  ({single_s:.2f} s)")
    print(f"ratio batched / one-at-a-time: {single_s / batched_s:.2f}x")
    print(f"identical greedy outputs: {same}/{args.clips}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
