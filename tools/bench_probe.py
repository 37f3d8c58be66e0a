"""The linear probe from the feature cache vs recomputing features every epoch, and batched extraction.

    python tools/bench_probe.py                                  # defaults below, ~6 min on 2 CPU cores
    python tools/bench_probe.py --size tiny --clips 64           # a quick check (seconds)
    python tools/bench_probe.py --device cuda --clips 1000 --recompute-epochs 3

Everything is made on the fly in a temporary folder: a randomly initialised WavLM of the zoo's
``wavlm-large`` architecture (layer-normed conv encoder, pre-LN transformer, gated relative
position bias, the real conv stack) at base size (hidden 768, 12 layers, 12 heads, FFN 3072,
conv channels 512; ``--size tiny``: the zoo's tiny stand-in), and a prepared corpus of
``--clips`` tones with noise whose lengths are spread evenly over ``--seconds`` x [0.5, 1.5]
(mean ``--seconds``), 4 labels, 10 % validation.

(a) Probe fit for ``--epochs`` epochs, batch 32 (EmoBox): with a feature cache (one-off
    extraction in ``setup``, then every epoch reads features from disk; the loaders decode no
    audio) vs ``cache_dir: null`` (the frozen encoder runs on every training and validation batch).
    The recompute arm runs ``--recompute-epochs`` epochs and is extrapolated to ``--epochs``
    (its one-off cost + epochs x its mean epoch time), as the printout says.
(b) Extraction throughput (encoder forward only, clips decoded beforehand) over ``--throughput-clips``
    clips: length-bucketed batches of ``--batch-size`` (``LengthBucketSampler``, as the cache's fill
    sorts by length) vs one clip at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

BASE_SIZES = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_dim": [512] * 7,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
LABELS = ("neutral", "happy", "sad", "angry")
TONE_HZ = {"neutral": 150.0, "happy": 300.0, "sad": 110.0, "angry": 400.0}


def build_model(size: str, out: Path) -> Path:
    from emorl import zoo
    from emorl.upstreams import hf

    card = zoo.load_card("wavlm-large")
    if size == "base":
        card = dataclasses.replace(card, tiny=dict(BASE_SIZES))
    return hf.build_tiny(card, out, seed=0)


def make_corpus(root: Path, clips: int, seconds: float, seed: int = 0):
    import soundfile as sf

    from emorl.data.manifest import write_prepared_corpus
    from emorl.labels import LabelSet

    rng = np.random.default_rng(seed)
    sr = 16_000
    lengths = np.linspace(0.5 * seconds, 1.5 * seconds, clips)
    rng.shuffle(lengths)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, length in enumerate(lengths):
        label = LABELS[i % len(LABELS)]
        t = np.arange(int(length * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * TONE_HZ[label] * (1 + 0.05 * rng.standard_normal()) * t)
        wave = (wave + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
        path = audio / f"clip{i:05d}.wav"
        sf.write(path, wave, sr)
        rows.append({"key": f"bench-{i:05d}", "dataset": "bench", "wav": str(path), "length": float(length),
                     "sample_rate": sr, "emo": label, "label": label, "speaker": f"s{i % 10}"})
    keys = [r["key"] for r in rows]
    n_valid = max(1, len(keys) // 10)
    splits = {"train": keys[n_valid:], "valid": keys[:n_valid], "test": keys[:1]}
    label_set = LabelSet("bench", LABELS, {label: label for label in LABELS})
    return write_prepared_corpus(root / "prepared", "bench", rows, label_set, {1: splits})


class EpochTimer:
    """A Lightning callback recording each training epoch's wall time (validation included)."""

    def __new__(cls):
        import lightning as L

        class _Timer(L.Callback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._start = 0.0

            def on_train_epoch_start(self, trainer, pl_module) -> None:
                self._start = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def fit(model_dir: Path, corpus_dir: Path, epochs: int, cache_dir: Path | None, device: str,
        extract_batch_size: int) -> dict:
    """One probe fit; returns wall time, extraction time, epoch times and decode / clip counts."""
    import lightning as L

    import emorl.data.dataset as datamodule_module
    from emorl.data.datamodule import EmoDataModule
    from emorl.models.probe import LinearProbe
    from emorl.upstreams import hf

    counts = {"decodes": 0, "encoder_clips": 0}
    load_audio, forward = datamodule_module.load_audio, hf.HFUpstream.forward

    def counting_load(*args, **kwargs):
        counts["decodes"] += 1
        return load_audio(*args, **kwargs)

    def counting_forward(self, wave, wave_lengths):
        counts["encoder_clips"] += len(wave)
        return forward(self, wave, wave_lengths)

    datamodule_module.load_audio, hf.HFUpstream.forward = counting_load, counting_forward
    try:
        L.seed_everything(0, verbose=False)
        dm = EmoDataModule(str(corpus_dir), batch_size=32, include_own_test=False, seed=0)
        probe = LinearProbe(dm.class_names, str(model_dir), cache_dir=str(cache_dir) if cache_dir else None,
                            extract_batch_size=extract_batch_size, precompute_test_sets=False)
        timer = EpochTimer()
        extraction = {"seconds": 0.0}
        fill = probe.fill_cache

        def timed_fill(*args, **kwargs):
            start = time.perf_counter()
            fill(*args, **kwargs)
            extraction["seconds"] += time.perf_counter() - start

        probe.fill_cache = timed_fill
        trainer = L.Trainer(
            max_epochs=epochs, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[timer], num_sanity_val_steps=0,
        )
        start = time.perf_counter()
        if cache_dir is None:  # load the encoder now, so that it counts as one-off, not as epoch time
            probe.loader.device = "cuda" if device.startswith("cuda") else "cpu"
            probe.loader()
        trainer.fit(probe, datamodule=dm)
        wall = time.perf_counter() - start
    finally:
        datamodule_module.load_audio, hf.HFUpstream.forward = load_audio, forward
    return {"wall": wall, "extraction": extraction["seconds"], "epochs": timer.times, **counts,
            "val_ua": float(trainer.callback_metrics.get("val/ua", float("nan")))}


def throughput(model_dir: Path, corpus_dir: Path, clips: int, batch_size: int, device: str) -> dict:
    """Clips/s of the encoder: length-bucketed batches vs one clip at a time, same clips."""
    from emorl.audio import load_audio
    from emorl.data.manifest import load_prepared_corpus
    from emorl.data.sampling import LengthBucketSampler, padding_ratio
    from emorl.upstreams import load_upstream

    corpus = load_prepared_corpus(corpus_dir)
    rows = corpus.rows()[:clips]
    waves = [torch.from_numpy(load_audio(corpus.resolve_wav(r["wav"]), 16_000)) for r in rows]
    lengths = [len(w) for w in waves]
    upstream = load_upstream(str(model_dir)).to(device)

    def run(batch: list[int]) -> None:
        n = torch.tensor([lengths[i] for i in batch])
        padded = torch.zeros(len(batch), int(n.max()))
        for row, i in enumerate(batch):
            padded[row, : lengths[i]] = waves[i]
        with torch.no_grad():
            upstream(padded.to(device), n.to(device)).select("last")
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    order = list(LengthBucketSampler(lengths, batch_size, shuffle=False))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    run([0])  # warm-up
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    bucketed = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(len(waves)):
        run([i])
    single = time.perf_counter() - start
    return {"clips": len(waves), "bucketed": len(waves) / bucketed, "single": len(waves) / single,
            "padding": padding_ratio(lengths, batch_size, order),
            "batching": getattr(upstream, "batching", "?"), "audio_seconds": sum(lengths) / 16_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=160, help="clips in the corpus (default 160)")
    parser.add_argument("--seconds", type=float, default=3.0, help="mean clip length; lengths span 0.5x-1.5x (3.0)")
    parser.add_argument("--epochs", type=int, default=20, help="probe epochs (EmoBox: 20)")
    parser.add_argument("--recompute-epochs", type=int, default=1,
                        help="epochs the no-cache arm actually runs before extrapolating to --epochs (1)")
    parser.add_argument("--size", choices=("base", "tiny"), default="base", help="random WavLM size (base)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads (2)")
    parser.add_argument("--batch-size", type=int, default=8, help="extraction batch size (8)")
    parser.add_argument("--throughput-clips", type=int, default=32, help="clips for the throughput test (32)")
    parser.add_argument("--workdir", help="keep the model, corpus and cache here (default: a temporary folder)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print("bench_probe: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_probe_") as tmp:
        work = Path(args.workdir or tmp)
        start = time.perf_counter()
        model_dir = build_model(args.size, work / "model")
        corpus = make_corpus(work / "corpus", args.clips, args.seconds)
        from emorl.upstreams import upstream_dims

        layers, dim = upstream_dims(str(model_dir))
        audio = sum(float(r["length"]) for r in corpus.rows())
        print(f"setup: random WavLM ({args.size}: {layers} layers, hidden {dim}) and {args.clips} clips "
              f"({audio / 60:.1f} min of audio, {args.seconds * 0.5:.1f}-{args.seconds * 1.5:.1f} s) "
              f"built in {time.perf_counter() - start:.1f} s; torch threads {torch.get_num_threads()}, device {args.device}")

        print(f"\n(a) probe fit, {args.epochs} epochs, batch 32 ({len(corpus.split(1, 'train'))} train + "
              f"{len(corpus.split(1, 'valid'))} validation clips)")
        cached = fit(model_dir, corpus.root, args.epochs, work / "cache", args.device, args.batch_size)
        recompute = fit(model_dir, corpus.root, args.recompute_epochs, None, args.device, args.batch_size)
        again = fit(model_dir, corpus.root, args.epochs, work / "cache", args.device, args.batch_size)

        cached_train = cached["wall"] - cached["extraction"]
        epoch = float(np.mean(recompute["epochs"]))
        one_off = recompute["wall"] - sum(recompute["epochs"])
        estimate = one_off + args.epochs * epoch
        rows = [
            ("from the cache, incl. one-off extraction", cached["wall"], cached["decodes"], cached["encoder_clips"]),
            ("from the cache, extraction excluded", cached_train, None, None),
            ("from a filled cache (a second run)", again["wall"], again["decodes"], again["encoder_clips"]),
            (f"recompute every epoch (cache_dir null), {args.recompute_epochs} epoch(s) measured",
             recompute["wall"], recompute["decodes"], recompute["encoder_clips"]),
            (f"recompute every epoch, extrapolated to {args.epochs} epochs", estimate, None, None),
        ]
        print(f"  {'arm':<62} {'wall s':>9} {'decodes':>8} {'encoder clips':>14}")
        for name, wall, decodes, clips in rows:
            print(f"  {name:<62} {wall:9.1f} {'' if decodes is None else decodes:>8} {'' if clips is None else clips:>14}")
        print(f"  one-off extraction: {cached['extraction']:.1f} s; cached epoch: "
              f"{np.mean(cached['epochs']):.2f} s; recomputed epoch: {epoch:.1f} s "
              f"(extrapolation = {one_off:.1f} s one-off + {args.epochs} x {epoch:.1f} s)")
        print(f"  speed-up, {args.epochs} epochs: {estimate / cached['wall']:.1f}x incl. extraction, "
              f"{estimate / max(cached_train, 1e-9):.1f}x excl. extraction, "
              f"{estimate / again['wall']:.1f}x for a run on a filled cache")

        print(f"\n(b) extraction throughput, encoder forward only, {args.throughput_clips} clips")
        result = throughput(model_dir, corpus.root, args.throughput_clips, args.batch_size, args.device)
        print(f"  length-bucketed batches of {args.batch_size} (padding {100 * result['padding']:.1f} %, "
              f"upstream batching {result['batching']}): {result['bucketed']:.2f} clips/s")
        print(f"  one clip at a time: {result['single']:.2f} clips/s")
        print(f"  ratio: {result['bucketed'] / result['single']:.2f}x "
              f"({result['audio_seconds'] / result['clips']:.2f} s mean clip)")
    print(f"\nbench_probe: {time.perf_counter() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
