"""Tiny randomly initialised stand-ins of the zoo's models (``emorl zoo tiny NAME --out DIR``).

:func:`train_hearing` is the demo's hearing stage: it trains a tiny Qwen2-Audio's audio tower and
projector on a corpus's emotions, so that the tiny model can hear prosody (docs/rl.md, "The demo").

:func:`build_tiny` writes a tiny model of a card's architecture (same config class, same
architecture switches, tiny sizes) with its feature extractor / processor, through
``save_pretrained``, so tests and smoke runs go through the very loading path real checkpoints
take. Frozen encoders are built by their backend (:mod:`emorl.upstreams`), audio-language models
by :mod:`emorl.lalm.tiny`. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from emorl.zoo import load_card

if TYPE_CHECKING:
    import torch


def build_tiny(name: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny randomly initialised model of card ``name``'s architecture into ``out``.

    Same architecture and switches as the real checkpoint (``architecture_config``), tiny sizes
    (``tiny``), saved in the format the real checkpoint comes in, so it loads through the very
    same path (for ``hf``: ``save_pretrained`` of the hub's ``checkpoint_class`` plus its feature
    extractor). The card's backend builds it. Deterministic for a given ``seed``; returns ``out``.
    """
    card = load_card(name)
    if card.kind == "textlm":  # its card only carries published sizes (emorl plan)
        raise ValueError(f"{name} is a text LM card (sizes for `emorl plan`): no tiny stand-in is built for it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if card.kind == "lalm":  # audio-language models: emorl.lalm.tiny (backend = family)
        from emorl.lalm.tiny import build_tiny as build_tiny_lalm

        return build_tiny_lalm(card, out, seed)
    from emorl.upstreams import backend_module

    return backend_module(card.backend).build_tiny(card, out, seed)


def tiny_main(name: str, out: str | os.PathLike, seed: int = 0) -> int:
    """Build the tiny stand-in of ``name`` into ``out`` and say how to use it."""
    if name.startswith("s3prl:"):  # s3prl:hubert_local / s3prl:wavlm_local: a checkpoint file
        from emorl.upstreams.s3prl_backend import build_tiny_s3prl, tiny_kind

        path = build_tiny_s3prl(name, out, seed=seed)
        print(f"wrote a tiny random {name} to {path}; use it as `upstream: s3prl:{tiny_kind(name)}_local:{path}`")
        return 0
    path = build_tiny(name, out, seed=seed)
    if load_card(name).kind == "lalm":
        print(f"wrote a tiny random {name} to {path}; load it with emorl.lalm.load_backbone({str(path)!r}) "
              "or give the folder as the model of an SFT / GRPO / zero-shot config")
        return 0
    print(f"wrote a tiny random {name} to {path}; use it as `upstream: {path}` in a probe config")
    return 0


# -- the hearing stage: what the tiny model needs to perceive prosody ------------------------------
#: Margin of mel frames kept past a clip's last one: the two convolutions (kernel 3, the second of
#: stride 2) of the audio tower's last valid position read up to two frames beyond the clip.
MEL_MARGIN = 4


def clip_mels(feature_extractor, waveforms) -> list[tuple[torch.Tensor, int]]:
    """Each clip's log-mel frames as the model's feature extractor computes them (padded to 30 s),
    cut to the clip's frames plus :data:`MEL_MARGIN`, with its number of valid frames."""
    out = []
    for wave in waveforms:
        feats = feature_extractor([wave], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        valid = int(feats["attention_mask"].sum())
        out.append((feats["input_features"][0, :, : valid + MEL_MARGIN].clone(), valid))
    return out


def pooled_audio(tower, projector, clips: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """The mean of each clip's projected audio tokens, ``(clips, text width)``.

    The same arithmetic as the model's own path (:func:`emorl.lalm.inputs.audio_embeddings`: the
    Qwen2-Audio encoder, its key-padding mask, the projector) on the clips' own frames rather than on
    30 s of padding: the masked positions never reach a valid one, so the valid tokens are the
    same, at a tenth of the cost for clips of a few seconds.
    """
    import torch
    from torch.nn.functional import gelu
    from transformers.masking_utils import create_bidirectional_mask

    frames = max(mel.shape[1] for mel, _ in clips)
    frames += frames % 2
    mels = torch.zeros(len(clips), clips[0][0].shape[0], frames)
    for i, (mel, _) in enumerate(clips):
        mels[i, :, : mel.shape[1]] = mel
    lengths, out_lengths = tower._get_feat_extract_output_lengths(torch.tensor([n for _, n in clips]))
    hidden = gelu(tower.conv2(gelu(tower.conv1(mels)))).permute(0, 2, 1)
    hidden = hidden + tower.embed_positions.weight[: hidden.shape[1]]
    valid = (torch.arange(hidden.shape[1])[None] < lengths[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=hidden, attention_mask=valid)
    for layer in tower.layers:
        hidden = layer(hidden, mask)
    hidden = tower.layer_norm(tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1))
    tokens = projector(hidden)
    keep = (torch.arange(tokens.shape[1])[None] < out_lengths[:, None]).to(tokens.dtype)[..., None]
    return (tokens * keep).sum(1) / keep.sum(1)


def train_hearing(
    model_dir: str | os.PathLike,
    rows: list[dict],
    out: str | os.PathLike,
    epochs: int = 12,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
    progress=None,
) -> dict:
    """The hearing stage: train a tiny Qwen2-Audio's audio tower and projector to tell the emotions
    of ``rows`` (manifest rows with ``wav`` and ``label``: the training actors' clips), save the model
    with them into ``out`` (the rest unchanged), and return ``{"train_acc", "loss", "clips"}``.

    A linear head on the mean of each clip's projected audio tokens is trained with them by cross
    entropy (AdamW, one-cycle learning rate) and then dropped: what stays is an audio tower whose
    tokens carry the voice's emotion in the language model's width. ``progress`` (optional) is
    called as ``progress(epoch, epochs, loss)`` after each epoch.
    """
    import shutil

    import torch

    from emorl.audio import load_audio
    from emorl.lalm import load_backbone

    backbone = load_backbone(model_dir, dtype="float32")
    if backbone.family != "qwen2-audio":
        raise ValueError(f"the hearing stage is written for Qwen2-Audio, not {backbone.family}")
    classes = sorted({row["label"] for row in rows})
    labels = torch.tensor([classes.index(row["label"]) for row in rows])
    clips = clip_mels(backbone.processor.feature_extractor, [load_audio(row["wav"]) for row in rows])
    tower, projector = backbone.audio_tower, backbone.projector
    torch.manual_seed(seed)
    head = torch.nn.Linear(projector.linear.out_features, len(classes))
    tower.requires_grad_(True)
    projector.requires_grad_(True)
    params = [*tower.parameters(), *projector.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps_per_epoch = -(-len(clips) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15)
    order = torch.Generator().manual_seed(seed)
    tower.train()
    loss_sum = correct = 0.0
    for epoch in range(epochs):
        loss_sum = correct = 0.0
        for batch in torch.randperm(len(clips), generator=order).split(batch_size):
            logits = head(pooled_audio(tower, projector, [clips[i] for i in batch.tolist()]))
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
            correct += float((logits.argmax(-1) == labels[batch]).sum())
        if progress is not None:
            progress(epoch + 1, epochs, loss_sum / len(clips))
    tower.eval()
    out = Path(out)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)  # tokenizer, processor, chat template
    backbone.hf_model.save_pretrained(out)
    return {"train_acc": correct / len(clips), "loss": loss_sum / len(clips), "clips": len(clips)}
