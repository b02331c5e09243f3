"""The training loop, top to bottom: data, split, network, loss, Adam + schedule, epochs, validation,
checkpoints, early stopping, export, test figures.

    result = train(TrainConfig(dataset="att_faces", out="runs/att", loss="contrastive"))
    result["test"]["accuracy"], result["model"]            # figures on the unseen identities, the .onnx

A run directory holds ``config.json``, ``split.json`` (+ ``test_pairs_*.txt`` for ``siamface evaluate``),
``last.pt`` and ``best.pt`` (state dicts of encoder, head, optimiser, schedule and random generators, with the
config: self-describing), ``metrics.csv``, ``curves.png`` (with matplotlib), ``model.onnx`` and
``result.json``. ``resume=True`` continues from ``last.pt`` where it stopped, with the same random stream:
the result equals an uninterrupted run's.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .._files import atomic_file, atomic_write_bytes
from .._progress import Progress, printable
from ..alignment import ChipSpec
from ..decision import Threshold
from ..embedding.onnx_file import preprocess
from ..errors import ConfigError
from ..evaluation.calibrate import UnsupportedTargetError, choose_threshold
from ..evaluation.metrics import best_accuracy_threshold, eer, tar_at_far
from . import require_torch
from .augment import Augment
from .data import FaceSet, load_faces, split_identities, verification_pairs, write_split
from .sampling import batch_pairs, pk_batches

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    dataset: str
    out: str = "runs/train"
    loss: str = "contrastive"  # contrastive | bce | triplet
    encoder: str = "small"  # small | resnet | facenet
    epochs: int = 40
    batch: int = 64
    per_identity: int = 4  # K images per identity in a batch
    lr: float | None = None  # default: 2e-3 small, 1e-4 resnet and facenet
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step | none
    margin: float | None = None  # default per loss (losses.DEFAULT_MARGIN)
    hard_negatives: bool = True  # pair losses: impostor = nearest other identity in the batch
    augment: str = "default"  # see Augment.parse ("none": frozen blocks run once, cached)
    freeze: int = 0  # freeze the first N blocks (negative: all but the last -N)
    seed: int = 0
    val: float = 0.1  # identities: count (>= 1) or fraction
    test: float = 0.25
    aligned: bool = False
    padding: float = 0.25  # context around the face in the aligned chip (dlib's: 0.25; not facenet)
    detector: str = "retinaface"
    max_per_identity: int | None = None
    min_per_identity: int = 2
    input_size: int = 64  # small encoder only
    channels: int = 1  # small encoder only (1 grey, 3 RGB)
    embedding_size: int = 128  # small encoder only
    width: int = 16  # small encoder only
    patience: int = 10  # early stopping: epochs without a better validation EER
    far: float = 1e-3  # threshold target when validation has >= 1/far impostor pairs
    threads: int | None = None
    cache_dir: str | None = None
    name: str | None = None  # model name in the exported metadata (default: run folder name)
    progress: bool = True
    plot: bool = True

    def check(self) -> None:
        """`ConfigError` naming the first setting out of its range: a run's own, or those a checkpoint holds
        (any JSON value there: a wrong type is refused, not a TypeError)."""
        if self.loss not in ("contrastive", "bce", "triplet"):
            raise ConfigError(f"--loss must be contrastive, bce or triplet, not {self.loss!r}")
        if self.encoder not in ("small", "resnet", "facenet"):
            raise ConfigError(f"--encoder must be small, resnet or facenet, not {self.encoder!r}")
        if self.schedule not in ("cosine", "step", "none"):
            raise ConfigError(f"--schedule must be cosine, step or none, not {self.schedule!r}")
        self._whole("epochs", 1)
        self._whole("batch", 4)
        self._whole("per_identity", 2, self.batch // 2, "(a batch holds at least two people)")
        self._whole("patience", 1)
        self._whole("min_per_identity", 2)
        self._whole("max_per_identity", self.min_per_identity, None, "(images of each person)", optional=True)
        self._whole("threads", 1, optional=True)
        self._whole("seed", 0, 2**63 - 1)  # torch takes seeds below 2**64; the pair samplers add a few
        self._whole("freeze", None)
        if self.encoder == "small":
            self._whole("input_size", 16, 512, "(a multiple of 16)")
            if self.input_size % 16:
                raise ConfigError(f"--input-size must be a multiple of 16, not {self.input_size}")
            self._whole("embedding_size", 1, 8192)
            self._whole("width", 1, 512)
            if self.channels not in (1, 3):
                raise ConfigError(f"--channels must be 1 or 3, not {self.channels!r}")
        self._number("lr", 0, 1, optional=True, above=True)
        self._number("margin", 0, 2, optional=True, above=True)  # 2: the distance of opposite unit vectors
        self._number("weight_decay", 0)
        self._number("padding", 0)
        self._number("val", 0)
        self._number("test", 0)
        self._number("far", 0, 1, above=True)
        for text in ("augment", "detector", "dataset", "out"):
            if not isinstance(getattr(self, text), str):
                raise ConfigError(f"{_option(text)} must be text, not {getattr(self, text)!r}")
        Augment.parse(self.augment)
        name = self.name or Path(self.out).resolve().name  # the exported model's name, as `train` sets it
        if not isinstance(name, str) or len(name) > 200 or printable(name) != name:
            # the model file would be refused when loaded (`siamface.embedding.onnx_file`), after the whole run
            raise ConfigError(f"--name {name!r}: a model's name has no control characters and at most 200")

    def _number(self, name: str, low=None, high=None, *, optional=False, above=False) -> None:
        """The setting `name` is a finite number in [low, high] (``above``: above `low`), or None when
        `optional`."""
        value = getattr(self, name)
        if value is None and optional:
            return
        fine = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if fine and low is not None:
            fine = value > low if above else value >= low
        if fine and high is not None:
            fine = value <= high
        if not fine:
            bounds = f"{'above' if above else 'at least'} {low:g}" if low is not None else "a finite number"
            bounds += f" and at most {high:g}" if high is not None else ""
            raise ConfigError(f"{_option(name)} must be {bounds}, not {value!r}")

    def _whole(self, name: str, low, high=None, why: str = "", *, optional=False) -> None:
        """The setting `name` is a whole number in [low, high] (None: unbounded), or None when `optional`."""
        value = getattr(self, name)
        if value is None and optional:
            return
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (low is None or value >= low)
            and (high is None or value <= high)
        ):
            bounds = "a whole number" if low is None else f"{low} or more" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{_option(name)} must be {bounds}{' ' + why if why else ''}, not {value!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: The settings `siamface train` takes as options (the others are named as fields of `TrainConfig`).
_OPTIONS = {
    "epochs", "batch", "per_identity", "patience", "max_per_identity", "threads", "seed", "freeze", "input_size",
    "embedding_size", "lr", "margin", "padding", "val", "test", "augment", "detector", "out",
}  # fmt: skip


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}" if name in _OPTIONS else name


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** (epoch // max(1, epochs // 3))
    return 1.0


def _embed(torch, encoder, x: np.ndarray, batch: int = 128, forward=None) -> np.ndarray:
    """L2-normalised embeddings of network inputs ``x`` (or, with ``forward=encoder.tail``, of cached
    trunk outputs)."""
    encoder.eval()
    forward = forward or encoder
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(torch.nn.functional.normalize(forward(torch.from_numpy(x[s : s + batch])), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.embedding_size), np.float32)


def _trunk_outputs(torch, encoder, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """The frozen blocks run once over network inputs ``x`` (see `facenet_net.FaceNetNet.trunk`)."""
    encoder.eval()
    with torch.no_grad():
        parts = [encoder.trunk(torch.from_numpy(x[s : s + batch])).numpy() for s in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else x


def _pair_scores(emb: np.ndarray, pairs) -> tuple[np.ndarray, np.ndarray]:
    a, b, same = pairs
    return np.sum(emb[a] * emb[b], axis=1), same.astype(np.int64)


def verification_figures(scores: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict:
    """Accuracy at ``threshold`` (when given), EER, best accuracy and TAR at FAR 1e-3 of cosine scores."""
    e, e_thr = eer(scores, labels)
    best = best_accuracy_threshold(scores, labels)
    out = {
        "pairs": int(len(labels)),
        "genuine": int(labels.sum()),
        "impostor": int(len(labels) - labels.sum()),
        "eer": float(e),
        "eer_threshold": float(e_thr),
        "best_accuracy": float(best.accuracy),
        "best_threshold": float(best.threshold),
    }
    t = tar_at_far(scores, labels, 1e-3)
    out["tar_at_far_1e-3"] = float(t.tar)
    if threshold is not None:
        out["threshold"] = float(threshold)
        accepted = Threshold(float(threshold), "").accepts(scores)  # the decision verify makes, per pair
        out["accuracy"] = float(np.mean(accepted == (labels == 1)))
        out["far"] = float(np.mean(accepted[labels == 0])) if (labels == 0).any() else float("nan")
        out["frr"] = float(np.mean(~accepted[labels == 1])) if (labels == 1).any() else float("nan")
    return out


def calibrate_threshold(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, str]:
    """The threshold exported with a trained model, chosen as ``siamface calibrate`` chooses it
    (`evaluation.calibrate.choose_threshold`): FAR ``far`` when there are >= 1/far impostor pairs, else the
    EER. Returns (threshold, how it was chosen); ConfigError when no threshold reaches FAR ``far``."""
    try:
        return choose_threshold(scores, labels, f"far={far!r}").threshold, f"FAR {far:g}"
    except UnsupportedTargetError:
        eer_point = choose_threshold(scores, labels, "eer")
        return eer_point.threshold, f"EER ({eer_point.n_impostor} impostor pairs are too few for FAR {far:g})"


#: The layout of the checkpoints this trainer writes (``format`` in them; absent: 1). A later layout (settings
#: or state this code does not know, which it would drop without a word) is refused, not half read.
CHECKPOINT_FORMAT = 1

#: What a checkpoint must hold to resume a run from it.
RESUME_KEYS = (
    "config",
    "epoch",
    "encoder",
    "head",
    "optimiser",
    "schedule",
    "numpy_rng",
    "torch_rng",
    "history",
    "best",
)


def read_checkpoint(path: Path, keys: tuple[str, ...]) -> dict:
    """A checkpoint this trainer wrote, read as tensors and plain values only (``weights_only``: a checkpoint
    is a pickle, and a crafted one would run code when loaded the default way); `ConfigError` when it is not
    one, or lacks one of `keys`."""
    torch = require_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for a file not its own
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not a siamface training checkpoint ({why[:200]})") from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise ConfigError(f"{path}: not a siamface training checkpoint (no {', '.join(missing)})")
    layout = state.get("format", 1)
    if layout != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{path}: a checkpoint of format {layout!r}, written by another version of siamface; this one reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    return state


def _same_split(state: dict, split: dict[str, list[str]], out: Path) -> None:
    """`ConfigError` when the identities split now are not those the interrupted run trained, validated and
    tested on (the dataset gained or lost people since: the seeded split then deals them out anew, and some of
    the test identities would be trained on). The split is in the checkpoint; in an older one, in
    ``split.json``."""
    saved = state.get("split")
    if saved is None:
        try:
            doc = json.loads((out / "split.json").read_text())
            saved = {part: doc[part]["identities"] for part in ("train", "val", "test")}
        except (OSError, ValueError, KeyError, TypeError):
            return  # nothing to compare with
    if saved != split:
        was = {name for part in saved.values() for name in part} if isinstance(saved, dict) else set()
        now = {name for part in split.values() for name in part}
        raise ConfigError(
            f"--resume: the identities of the dataset changed since the run in {out} started ({len(now - was)} "
            f"new, {len(was - now)} gone): the split would differ and test identities could be trained on; "
            "start a new run"
        )


def train(
    config: TrainConfig, resume: bool = False, faces: FaceSet | None = None, stop_after: int | None = None
) -> dict:
    """Run (or resume) a training run; returns the figures written to ``result.json``.

    faces: the dataset already loaded (else read from ``config.dataset``); stop_after: run at most this many
    epochs in this call (an interrupted run, resumed later with ``resume=True``). A file that cannot be read or
    written (``out`` an existing file, a full disk) is a `ConfigError` naming it, not a traceback.
    """
    try:
        return _train(config, resume, faces, stop_after)
    except OSError as exc:
        where = exc.filename or config.out
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None


def _train(config: TrainConfig, resume: bool, faces: FaceSet | None, stop_after: int | None) -> dict:
    torch = require_torch()
    from .export import export_onnx
    from .losses import PAIR_LOSSES, build_loss
    from .networks import build_encoder

    config.check()
    out = Path(config.out)
    ckpt_last = out / "last.pt"
    if resume:
        if not ckpt_last.is_file():
            raise ConfigError(f"--resume: no checkpoint {ckpt_last}")
        state = read_checkpoint(ckpt_last, RESUME_KEYS)
        if not isinstance(state["config"], dict):
            raise ConfigError(f"{ckpt_last}: not a siamface training checkpoint (its config is not a mapping)")
        given = config
        config = TrainConfig.from_dict({**state["config"], "dataset": given.dataset, "out": given.out})
        # the dataset named now is read (it may have moved; the split is checked below), to as many epochs as
        # asked now or before
        config.progress = given.progress
        config.epochs = max(given.epochs, config.epochs) if isinstance(config.epochs, int) else given.epochs
        try:
            config.check()
        except ConfigError as exc:
            raise ConfigError(f"{ckpt_last}: the run's settings are not valid: {exc}") from None
    else:
        state = None
    out.mkdir(parents=True, exist_ok=True)
    from ..embedding.onnx_runtime import default_num_threads

    torch.set_num_threads(config.threads or default_num_threads())
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    bar = Progress(0, enabled=config.progress)  # epoch and step figures, redrawn in place on a terminal

    if config.encoder == "facenet":
        from ..embedding.facenet import FACENET_CHIP

        chip = FACENET_CHIP  # FaceNet's crop contract: the detector box, +10 % a side, stretched to 160x160
    else:
        chip = ChipSpec(150, config.padding)

    # -- data ---------------------------------------------------------------------------------------------
    if faces is None:
        faces = load_faces(
            config.dataset,
            detector=config.detector,
            aligned=config.aligned,
            chip=chip,
            max_per_identity=config.max_per_identity,
            min_per_identity=config.min_per_identity,
            cache_dir=config.cache_dir,
            progress=lambda i, n: bar.show(f"aligning faces {i}/{n}", end=i == n),
        )
    split = split_identities(faces.identities, config.val, config.test, config.seed)
    if state is not None:
        _same_split(state, split, out)
    atomic_write_bytes(out / "config.json", json.dumps(asdict(config), indent=1).encode())
    train_set, val_set, test_set = (faces.subset(split[k]) for k in ("train", "val", "test"))
    test_pairs = verification_pairs(test_set.labels, seed=config.seed + 2)
    val_pairs = verification_pairs(val_set.labels, seed=config.seed + 1, max_genuine=5000)
    write_split(out, faces, split, config.seed, test_pairs)

    encoder = build_encoder(
        config.encoder,
        input_size=config.input_size,
        channels=config.channels,
        embedding_size=config.embedding_size,
        width=config.width,
    )
    c = encoder.contract()
    size, ch, mean, std = c["input_size"], c["channels"], c["mean"], c["std"]
    # Training chips at the input size, uint8 RGB (augmented per batch); the others preprocessed once.
    small = np.stack([preprocess_rgb(chip, size) for chip in train_set.chips])
    x_val = preprocess(val_set.chips, size, ch, mean, std)
    x_test = preprocess(test_set.chips, size, ch, mean, std)
    augment = Augment.parse(config.augment)

    head = build_loss(config.loss, config.margin, encoder.embedding_size)
    frozen = encoder.freeze(config.freeze) if config.freeze else 0
    if frozen >= len(encoder.blocks()):
        raise ConfigError(
            f"--freeze {config.freeze} freezes all {len(encoder.blocks())} blocks of the {config.encoder} encoder: "
            "nothing of it would train"
        )
    # Frozen blocks whose output never changes (no augmentation) run once: every step then costs only the
    # trainable blocks (FaceNet fine-tuning on CPU). `forward` maps what is stored in x_* to embeddings.
    cached = bool(frozen) and hasattr(encoder, "trunk") and not augment.active
    forward = encoder.tail if cached else encoder
    if cached:
        h_train = _trunk_outputs(torch, encoder, preprocess(small, size, ch, mean, std))
        x_val, x_test = _trunk_outputs(torch, encoder, x_val), _trunk_outputs(torch, encoder, x_test)
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    lr = config.lr if config.lr is not None else (2e-3 if config.encoder == "small" else 1e-4)
    optimiser = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda e: _lr_factor(config.schedule, e, config.epochs))

    history: list[dict] = []
    best = {"eer": math.inf, "accuracy": -1.0, "epoch": -1}
    start = 0
    if state is not None:
        try:
            encoder.load_state_dict(state["encoder"])
            head.load_state_dict(state["head"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"]) + 1
            best["epoch"], best["eer"] = int(best["epoch"]), float(best["eer"])
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:  # weights of another shape, a wrong value
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"{ckpt_last}: its state does not fit the run it describes ({why[:200]})") from None
        log.info("resuming %s at epoch %d", out, start + 1)

    def checkpoint(path: Path, epoch: int) -> None:
        with atomic_file(path) as f:  # a random temporary name, never through a link, renamed into place
            torch.save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": asdict(config),
                    "epoch": epoch,
                    "encoder": encoder.state_dict(),
                    "head": head.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                    "contract": c,
                    "frozen_blocks": frozen,
                    "split": split,
                },
                f,
            )

    stale = sum(1 for row in history[best["epoch"] + 1 :]) if history else 0
    t_start = time.monotonic() - sum(row["seconds"] for row in history)
    for epoch in range(start, config.epochs):
        if stale >= config.patience or (stop_after is not None and epoch - start >= stop_after):
            break
        t0 = time.monotonic()
        encoder.train()
        head.train()
        batches = pk_batches(train_set.labels, config.batch, config.per_identity, rng)
        total_loss = total_acc = 0.0
        lr_used = optimiser.param_groups[0]["lr"]
        for step, idx in enumerate(batches, 1):
            if cached:
                x = torch.from_numpy(h_train[idx])
            else:
                x = torch.from_numpy(preprocess(augment(small[idx], rng), size, ch, mean, std))
            labels = train_set.labels[idx]
            emb = torch.nn.functional.normalize(forward(x), dim=1)
            if config.loss in PAIR_LOSSES:
                dist = torch.cdist(emb, emb).detach().numpy() if config.hard_negatives else None
                a, b, y = batch_pairs(labels, rng, dist)
                loss, acc = head(emb[a], emb[b], torch.from_numpy(y))
            else:
                loss, acc = head(emb, torch.from_numpy(labels))
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, step {step}; a lower "
                    f"--lr (now {lr_used:g}) may help"
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total_loss += float(loss.detach())
            total_acc += float(acc.detach())
            bar.show(
                f"epoch {epoch + 1}/{config.epochs} step {step}/{len(batches)}  "
                f"loss {total_loss / step:.4f}  acc {total_acc / step:.3f}"
            )
        schedule.step()
        row = {
            "epoch": epoch + 1,
            "lr": lr_used,
            "train_loss": total_loss / len(batches),
            "train_accuracy": total_acc / len(batches),
        }
        if len(val_set) and len(val_pairs[0]):
            scores, labels = _pair_scores(_embed(torch, encoder, x_val, forward=forward), val_pairs)
            fig = verification_figures(scores, labels)
            row.update(val_eer=fig["eer"], val_accuracy=fig["best_accuracy"])
            better = (fig["eer"], -fig["best_accuracy"]) < (best["eer"], -best["accuracy"])
        else:  # no validation identities: the last epoch is the best
            row.update(val_eer=float("nan"), val_accuracy=float("nan"))
            better = True
        row["seconds"] = time.monotonic() - t0
        history.append(row)
        if better:
            best = {
                "eer": row["val_eer"] if not math.isnan(row["val_eer"]) else math.inf,
                "accuracy": row["val_accuracy"],
                "epoch": epoch,
            }
            stale = 0
        else:
            stale += 1
        checkpoint(ckpt_last, epoch)
        if better:
            checkpoint(out / "best.pt", epoch)
        bar.show(
            f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_accuracy']:.3f}  val EER {row['val_eer']:.4f}  "
            f"val acc {row['val_accuracy']:.3f}  {row['seconds']:.1f}s",
            end=True,
        )
        _write_csv(out / "metrics.csv", history)
    train_seconds = time.monotonic() - t_start

    # -- best weights, threshold on validation, test figures, export --------------------------------------
    encoder.load_state_dict(read_checkpoint(out / "best.pt", ("encoder",))["encoder"])
    if len(val_pairs[0]):
        scored = _pair_scores(_embed(torch, encoder, x_val, forward=forward), val_pairs)
        source = f"on the validation split ({len(val_set.identities)} identities) of {faces.root}"
    else:
        tr_pairs = verification_pairs(train_set.labels, seed=config.seed + 3, max_genuine=5000)
        x_tr = h_train if cached else preprocess(train_set.chips, size, ch, mean, std)
        scored = _pair_scores(_embed(torch, encoder, x_tr, forward=forward), tr_pairs)
        source = f"on the training identities of {faces.root} (no validation split)"
    threshold, how = calibrate_threshold(*scored, config.far)
    where, source = source, f"{how} {source}"
    impostors = scored[0][scored[1] == 0]
    # the floor of the model's plausible thresholds (siamface.decision.check_threshold), measured as ours are
    floor = {"impostor_median": round(float(np.median(impostors)), 4)} if len(impostors) else {}
    if floor.get("impostor_median", 0.0) >= 1.0:
        # every embedding points one way: the model would be refused when loaded (its plausible thresholds
        # start at 1), so none is exported
        raise ConfigError(
            f"the trained encoder does not tell people apart: half the impostor pairs {where} "
            f"score {floor['impostor_median']:g} (best epoch {best['epoch'] + 1}); no model exported (more epochs or "
            "another --lr may help)"
        )
    test = {}
    if len(test_pairs[0]):
        test = verification_figures(
            *_pair_scores(_embed(torch, encoder, x_test, forward=forward), test_pairs), threshold
        )
    name = config.name or out.resolve().name
    training = (
        f"{config.loss} loss, {config.encoder} encoder, {len(train_set.identities)} identities / "
        f"{len(train_set)} images of {Path(faces.root).name}, seed {config.seed}, "
        f"best epoch {best['epoch'] + 1}"
    )
    model_path = export_onnx(
        encoder,
        out / "model.onnx",
        name=name,
        threshold=threshold,
        threshold_source=source,
        training=training,
        chip=chip,
        extra={"loss": config.loss, "encoder": config.encoder, **floor},
    )
    result = {
        "run": str(out),
        "model": str(model_path),
        "threshold": threshold,
        "threshold_source": source,
        "train_seconds": train_seconds,
        "epochs_run": len(history),
        "best_epoch": best["epoch"] + 1,
        "frozen_blocks": frozen,
        "trunk_cached": cached,
        "identities": {k: len(v) for k, v in split.items()},
        "images": {"train": len(train_set), "val": len(val_set), "test": len(test_set), "skipped": len(faces.skipped)},
        "test": test,
        "training": training,
    }
    atomic_write_bytes(out / "result.json", json.dumps(result, indent=1).encode())
    if config.plot:
        _plot(out / "curves.png", history)
    return result


def preprocess_rgb(chip: np.ndarray, size: int) -> np.ndarray:
    """A chip resized to the network's side, still uint8 RGB (what augmentation works on)."""
    import cv2

    if chip.shape[0] == size:
        return chip
    interp = cv2.INTER_AREA if chip.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(chip, (size, size), interpolation=interp)


def _write_csv(path: Path, history: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(path, text.getvalue().encode())


def _plot(path: Path, history: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no %s", path.name)
        return
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [r["train_accuracy"] for r in history], label="train accuracy (batch pairs)")
    ax2.plot(epochs, [r["val_accuracy"] for r in history], label="validation accuracy (best threshold)")
    ax2.plot(epochs, [r["val_eer"] for r in history], label="validation EER")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    from ..evaluation.plots import save_figure

    save_figure(fig, path, dpi=90)
    plt.close(fig)
