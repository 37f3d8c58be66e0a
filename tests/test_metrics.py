"""emorl.metrics against scikit-learn (the oracle EmoBox uses), in one process and under DDP."""

from __future__ import annotations

import math
import os
import queue as queue_module
import socket
import traceback
import warnings
from datetime import timedelta

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from emorl.metrics import (
    UNPARSED,
    EmotionMetrics,
    confusion_figure,
    LENIENT_READING,
    format_table,
    prefixed,
    scores_from_confusion,
)


def sklearn_scores(y_true, y_pred) -> dict[str, float]:
    """The specification: sklearn with -1 for unparsed answers, never a label in the F1 average."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = sorted((set(y_true.tolist()) | set(y_pred.tolist())) - {UNPARSED})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return {
            "wa": accuracy_score(y_true, y_pred),
            "ua": balanced_accuracy_score(y_true, y_pred),
            "f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
            "parse_rate": float(np.mean(y_pred != UNPARSED)),
        }


def random_case(rng: np.random.Generator, num_classes: int, n: int):
    """Targets over a random subset of classes, predictions over another, some unparsed."""
    true_classes = rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False)
    pred_classes = rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False)
    y_true = rng.choice(true_classes, size=n)
    y_pred = rng.choice(pred_classes, size=n)
    correct = rng.random(n) < rng.uniform(0.0, 0.8)  # some signal, so diagonals are not empty
    y_pred = np.where(correct, y_true, y_pred)
    unparsed = rng.random(n) < rng.choice([0.0, 0.1, 0.5, 1.0], p=[0.3, 0.4, 0.2, 0.1])
    y_pred = np.where(unparsed, UNPARSED, y_pred)
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def names(num_classes: int) -> list[str]:
    return [f"c{k}" for k in range(num_classes)]


def assert_matches_sklearn(scores, y_true, y_pred, num_classes, class_names=None):
    class_names = class_names or names(num_classes)
    expected = sklearn_scores(y_true, y_pred)
    for key in ("ua", "wa", "f1", "parse_rate"):
        assert float(scores[key]) == pytest.approx(expected[key], abs=1e-6), key
    supported = sorted(set(y_true.tolist()))
    recalls = recall_score(y_true, y_pred, labels=supported, average=None, zero_division=0)
    for k in range(num_classes):
        value = float(scores[f"recall/{class_names[k]}"])
        if k in supported:
            assert value == pytest.approx(recalls[supported.index(k)], abs=1e-6)
        else:
            assert math.isnan(value)


# ---------------------------------------------------------------------------------------------
# single process


def test_hand_computed_example():
    # 3 classes; class 2 never true but predicted once; two unparsed answers.
    y_true = [0, 0, 0, 0, 1, 1, 1, 0]
    y_pred = [0, 0, 1, -1, 1, -1, 2, 0]
    metric = EmotionMetrics(["ang", "hap", "sad"])
    metric.update(torch.tensor(y_pred), torch.tensor(y_true))
    expected_confusion = torch.tensor([[3, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0]])
    assert torch.equal(metric.confusion(), expected_confusion)
    assert metric.num_samples == 8
    scores = metric.compute()
    assert set(scores) == {"ua", "wa", "f1", "parse_rate", "recall/ang", "recall/hap", "recall/sad"}
    # recall: ang 3/5, hap 1/3, sad no support
    assert float(scores["recall/ang"]) == pytest.approx(3 / 5)
    assert float(scores["recall/hap"]) == pytest.approx(1 / 3)
    assert math.isnan(float(scores["recall/sad"]))
    assert float(scores["ua"]) == pytest.approx((3 / 5 + 1 / 3) / 2)  # sad has no support: not averaged
    assert float(scores["wa"]) == pytest.approx(4 / 8)
    assert float(scores["parse_rate"]) == pytest.approx(6 / 8)
    # F1: ang tp3 fp0 fn2 -> 6/8; hap tp1 fp1 fn2 -> 2/5; sad tp0 fp1 fn0 -> 0 (predicted, so in the average)
    assert float(scores["f1"]) == pytest.approx((6 / 8 + 2 / 5 + 0.0) / 3)
    assert_matches_sklearn(scores, np.array(y_true), np.array(y_pred), 3, ["ang", "hap", "sad"])


def test_scores_from_confusion_fields():
    confusion = torch.tensor([[2, 0, 1], [1, 1, 0]])
    scores = scores_from_confusion(confusion)
    assert torch.equal(scores["support"], torch.tensor([3, 2]))
    assert torch.allclose(scores["recall"], torch.tensor([2 / 3, 1 / 2]))
    assert all(scores[k].ndim == 0 for k in ("ua", "wa", "f1", "parse_rate"))
    with pytest.raises(ValueError, match=r"\(C, C \+ 1\)"):
        scores_from_confusion(torch.zeros(3, 3, dtype=torch.long))


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        num_classes = int(rng.integers(2, 9))
        n = int(rng.choice([1, 2, 3, 7, 50, 400]))
        y_true, y_pred = random_case(rng, num_classes, n)
        metric = EmotionMetrics(names(num_classes))
        metric.update(torch.from_numpy(y_pred), torch.from_numpy(y_true))
        assert_matches_sklearn(metric.compute(), y_true, y_pred, num_classes)


def test_chunked_updates_equal_one_update():
    rng = np.random.default_rng(123)
    for _ in range(20):
        num_classes = int(rng.integers(2, 9))
        y_true, y_pred = random_case(rng, num_classes, 300)
        whole = EmotionMetrics(names(num_classes))
        whole.update(torch.from_numpy(y_pred), torch.from_numpy(y_true))
        chunked = EmotionMetrics(names(num_classes))
        cuts = np.sort(rng.choice(np.arange(1, 300), size=int(rng.integers(1, 10)), replace=False))
        for p, t in zip(np.split(y_pred, cuts), np.split(y_true, cuts)):
            chunked.update(torch.from_numpy(p), torch.from_numpy(t))
        assert torch.equal(whole.confusion(), chunked.confusion())
        a, b = whole.compute(), chunked.compute()
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], equal_nan=True)
        assert_matches_sklearn(b, y_true, y_pred, num_classes)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_reset_and_empty_compute_warns_and_gives_nan():
    metric = EmotionMetrics(["a", "b"])
    with pytest.warns(UserWarning, match="no samples"):
        scores = metric.compute()
    assert all(math.isnan(float(v)) for v in scores.values())
    assert metric.num_samples == 0
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert float(metric.compute()["wa"]) == pytest.approx(0.5)
    metric.reset()
    assert metric.num_samples == 0
    metric.update(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))  # empty batch: no-op
    assert metric.num_samples == 0


def test_all_unparsed():
    metric = EmotionMetrics(["a", "b", "c"])
    metric.update(torch.full((5,), -1), torch.tensor([0, 1, 1, 2, 2]))
    scores = metric.compute()
    assert float(scores["parse_rate"]) == 0.0
    assert float(scores["ua"]) == float(scores["wa"]) == float(scores["f1"]) == 0.0


@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        ([0, 3], [0, 1], r"preds ids must be in \[-1, 3\).*\[3\]"),
        ([0, -2], [0, 1], r"preds ids must be in \[-1, 3\).*\[-2\]"),
        ([0, 1], [0, 3], r"target ids must be in \[0, 3\).*\[3\]"),
        ([0, 1], [-1, 1], r"target ids must be in \[0, 3\).*\[-1\]"),
        ([0, 1, 2], [0, 1], "same shape"),
    ],
)
def test_bad_ids_raise(preds, target, match):
    metric = EmotionMetrics(["a", "b", "c"])
    with pytest.raises(ValueError, match=match):
        metric.update(torch.tensor(preds), torch.tensor(target))
    assert metric.confusion().sum() == 0  # nothing was counted


def test_float_inputs_and_bad_class_names_raise():
    metric = EmotionMetrics(["a", "b"])
    with pytest.raises(ValueError, match="integer class ids"):
        metric.update(torch.tensor([[0.2, 0.8]]).squeeze(0), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unique"):
        EmotionMetrics(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        EmotionMetrics([])


def test_metric_attributes():
    assert EmotionMetrics.full_state_update is False
    assert EmotionMetrics.higher_is_better is True
    metric = EmotionMetrics(["a", "b"])
    assert metric._reductions.keys() == {"confmat"}


def test_prefixed():
    scores = {"ua": torch.tensor(0.5), "recall/a": torch.tensor(1.0)}
    assert prefixed(scores, "test/meld") == {"test/meld/ua": scores["ua"], "test/meld/recall/a": scores["recall/a"]}
    assert list(prefixed(scores, "val/")) == ["val/ua", "val/recall/a"]
    assert prefixed(scores, "") == scores


# ---------------------------------------------------------------------------------------------
# figure and table


def test_confusion_figure(tmp_path):
    from matplotlib.figure import Figure

    class_names = ["neutral", "happy", "sad", "angry"]
    confusion = torch.tensor([[5, 1, 0, 0, 2], [0, 3, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 4, 1]])
    figure = confusion_figure(confusion, class_names, title="meld")
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    xlabels = [t.get_text() for t in axes.get_xticklabels()]
    ylabels = [t.get_text() for t in axes.get_yticklabels()]
    assert xlabels == class_names + ["unparsed"]
    assert len(ylabels) == 4 and ylabels[0].startswith("neutral")
    assert axes.get_xlabel() and axes.get_ylabel() and "meld" in axes.get_title()
    assert len(axes.texts) == 4 * 5
    figure.savefig(tmp_path / "confusion.png")  # renders headless
    assert (tmp_path / "confusion.png").stat().st_size > 0
    with pytest.raises(ValueError, match="shape"):
        confusion_figure(confusion, class_names[:3])


def test_confusion_figure_goes_to_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    figure = confusion_figure(torch.tensor([[1, 0, 1], [0, 2, 0]]), ["a", "b"])
    writer.add_figure("test/x/confusion", figure, global_step=0)
    writer.close()
    assert any(path.name.startswith("events.out.tfevents") for path in tmp_path.iterdir())


def test_format_table():
    results = {
        "meld": {"ua": 0.31544, "wa": 0.5189, "f1": 0.32951, "parse_rate": 1.0, "recall/joy": 0.4},
        "iemocap_fold_1": {"ua": torch.tensor(0.7354), "wa": torch.tensor(0.72861), "f1": float("nan")},
    }
    table = format_table(results)
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == ["test", "set", "UA", "WA", "F1", "parse"]
    assert "meld" in lines[2] and "iemocap_fold_1" in lines[3]
    assert lines[2].split()[1:] == ["31.54", "51.89", "32.95", "100.00"]
    assert lines[3].split()[1:] == ["73.54", "72.86", "nan", "-"]
    lenient = format_table({"meld": {**results["meld"], LENIENT_READING: 1.0}, "iemocap": results["meld"]})
    assert lenient.splitlines()[2].split()[-1] == "100.00*" and lenient.splitlines()[3].split()[-1] == "100.00"
    assert lenient.splitlines()[-1].startswith("* lenient reading")
    assert "lenient" not in table
    custom = format_table(results, columns=("wa", "recall/joy"))
    assert custom.splitlines()[0].split() == ["test", "set", "WA", "recall/joy"]
    assert custom.splitlines()[2].split() == ["meld", "51.89", "40.00"]


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes, uneven shards, every rank must see the scores of all shards together

NUM_CLASSES = 5
DDP_SCENARIOS = {
    # scenario -> rank -> list of batch sizes (different numbers of updates per rank)
    "uneven": {0: [7, 3, 11], 1: [5, 1, 9, 4, 2]},
    "rank1_empty": {0: [6, 6], 1: []},
}


def ddp_shard(scenario: str, rank: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic batches of (y_pred, y_true) for one rank; class 4 never true on rank 0."""
    rng = np.random.default_rng(1000 * len(scenario) + rank)
    batches = []
    for size in DDP_SCENARIOS[scenario][rank]:
        y_true, y_pred = random_case(rng, NUM_CLASSES, size)
        if rank == 0:
            y_true = np.where(y_true == 4, 0, y_true)
        batches.append((y_pred, y_true))
    return batches


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
        try:
            out = {}
            for scenario in DDP_SCENARIOS:
                metric = EmotionMetrics(names(NUM_CLASSES))
                for y_pred, y_true in ddp_shard(scenario, rank):
                    metric.update(torch.from_numpy(y_pred), torch.from_numpy(y_true))
                local = metric.confmat.clone()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torchmetrics: compute before update on an empty rank
                    scores = {k: float(v) for k, v in metric.compute().items()}
                out[scenario] = {
                    "scores": scores,
                    "confusion": metric.confusion().tolist(),
                    "num_samples": metric.num_samples,
                    "local_after": metric.confmat.tolist(),  # local state is restored after syncing
                    "local_before": local.tolist(),
                }
            results.put((rank, "ok", out))
        finally:
            dist.destroy_process_group()
    except BaseException:  # report, never hang the parent
        results.put((rank, "error", traceback.format_exc()))


@pytest.mark.timeout(180)
def test_ddp_two_ranks_uneven_shards():
    import torch.multiprocessing as mp

    world_size = 2
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    processes = [ctx.Process(target=ddp_worker, args=(rank, world_size, port, results)) for rank in range(world_size)]
    for process in processes:
        process.start()
    received = {}
    try:
        for _ in range(world_size):
            rank, status, payload = results.get(timeout=150)
            assert status == "ok", f"rank {rank} failed:\n{payload}"
            received[rank] = payload
    except queue_module.Empty:
        pytest.fail(f"DDP workers did not report in time (got ranks {sorted(received)})")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
    assert all(process.exitcode == 0 for process in processes)

    for scenario in DDP_SCENARIOS:
        shards = [ddp_shard(scenario, rank) for rank in range(world_size)]
        y_pred = np.concatenate([p for shard in shards for p, _ in shard])
        y_true = np.concatenate([t for shard in shards for _, t in shard])
        single = EmotionMetrics(names(NUM_CLASSES))
        single.update(torch.from_numpy(y_pred), torch.from_numpy(y_true))
        for rank in range(world_size):
            got = received[rank][scenario]
            assert_matches_sklearn(got["scores"], y_true, y_pred, NUM_CLASSES)
            assert got["confusion"] == single.confusion().tolist()
            assert got["num_samples"] == len(y_true)
            assert got["local_after"] == got["local_before"]
        assert received[0][scenario]["local_before"] != received[1][scenario]["local_before"]
