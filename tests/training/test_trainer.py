"""The trainer on tiny real data (the AT&T fixture faces): loss falls, checkpoints resume exactly, the
exported ONNX model runs without torch and equals the torch module, the CLI drives it all."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ATT, att, plant_links, run_cli  # noqa: E402

from siamface.embedding.onnx_file import preprocess  # noqa: E402
from siamface.errors import ConfigError  # noqa: E402
from siamface.training.data import load_faces  # noqa: E402
from siamface.training.networks import SmallCNN  # noqa: E402
from siamface.training.trainer import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return load_faces(ATT, aligned=True, cache_dir=tmp_path_factory.mktemp("chips"))


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(ATT),
        out=str(out),
        aligned=True,
        input_size=32,
        width=8,
        embedding_size=32,
        batch=16,
        epochs=4,
        val=2,
        test=2,
        augment="default",
        threads=1,
        progress=False,
        plot=False,
        patience=100,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory, faces):
    out = tmp_path_factory.mktemp("run") / "att"
    return out, train(_config(out, epochs=8, augment="none", lr=3e-3), faces=faces)


@pytest.mark.parametrize("loss", ["contrastive", "bce", "triplet"])
def test_loss_falls(tmp_path, faces, loss):
    train(_config(tmp_path, loss=loss, epochs=6, augment="none", lr=3e-3), faces=faces)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


def test_run_folder(run):
    out, result = run
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "split.json",
        "last.pt",
        "best.pt",
        "metrics.csv",
        "model.onnx",
        "result.json",
        "test_pairs_same.txt",
        "test_pairs_different.txt",
    } <= names
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]["identities"]) & set(split["test"]["identities"])
    same = (out / "test_pairs_same.txt").read_text().split()
    assert {p.split("/")[0] for p in same} <= set(split["test"]["identities"])
    assert result["test"]["genuine"] == 2 * 6 and result["test"]["impostor"] == 12
    assert 0 <= result["test"]["accuracy"] <= 1 and -1 <= result["threshold"] <= 1


def test_resume_continues_from_the_saved_state(tmp_path, faces):
    straight = train(_config(tmp_path / "a", epochs=4), faces=faces)
    train(_config(tmp_path / "b", epochs=4), faces=faces, stop_after=2)  # interrupted after two epochs
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    resumed = train(_config(tmp_path / "b", epochs=4), resume=True, faces=faces)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert b["epoch"] == 3
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in a["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in b["history"]]
    assert straight["test"] == resumed["test"]


def test_freeze_keeps_the_first_blocks(tmp_path, faces):
    train(_config(tmp_path, epochs=1, freeze=2, input_size=32, width=8), faces=faces)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    torch.manual_seed(0)  # the trainer's initial weights
    fresh = SmallCNN(input_size=32, channels=1, embedding_size=32, width=8).state_dict()
    assert state["frozen_blocks"] == 2
    for key, value in state["encoder"].items():
        if key.startswith(("features.0.", "features.1.")):
            assert torch.equal(value, fresh[key]), key
    assert not torch.equal(state["encoder"]["features.2.0.weight"], fresh["features.2.0.weight"])


_NO_TORCH = """
import sys, json, numpy as np
sys.modules["torch"] = None
from siamface.embedding import create_encoder
enc = create_encoder(sys.argv[1])
chips = np.load(sys.argv[2])
print(json.dumps({"emb": enc.embed(chips).tolist(), "name": enc.info.name, "threshold": enc.info.threshold,
                  "torch": "torch" in sys.modules and sys.modules["torch"] is not None}))
"""


def test_exported_model_runs_without_torch_and_equals_the_module(run, faces, tmp_path):
    out, result = run
    chips_file = tmp_path / "chips.npy"
    np.save(chips_file, faces.chips[:6])
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(out / "model.onnx"), str(chips_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["name"] == "att" and not got["torch"]
    assert got["threshold"] == pytest.approx(result["threshold"])
    state = torch.load(out / "best.pt", weights_only=False)
    net = SmallCNN(input_size=32, channels=1, embedding_size=32, width=8)
    net.load_state_dict(state["encoder"])
    net.eval()
    with torch.no_grad():
        want = torch.nn.functional.normalize(
            net(torch.from_numpy(preprocess(faces.chips[:6], 32, 1, net.mean, net.std))), dim=1
        ).numpy()
    assert np.abs(np.array(got["emb"]) - want).max() < 1e-5


def test_cli_train_then_verify_with_the_exported_model(tmp_path, capsys):
    from siamface.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "train",
            str(ATT),
            "--aligned",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch",
            "16",
            "--val",
            "2",
            "--test",
            "2",
            "--input-size",
            "32",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "test split (2 unseen identities" in text
    assert "siamface evaluate --model" in text and "test_pairs_same.txt" in text
    model = str(out / "model.onnx")
    code = main(["verify", "--model", model, "--json", str(att(11, 1)), str(att(11, 2))])
    payload = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and payload["model"] == "cli"
    from siamface.embedding import create_encoder

    floor = create_encoder(model).info.impostor_median  # measured on the validation impostors, exported
    assert floor is not None and payload["threshold"] >= floor
    below = f"{floor - 0.05:.4f}"
    assert main(["verify", "--model", model, "--threshold", below, str(att(11, 1)), str(att(11, 2))]) == 2
    assert "plausible range" in capsys.readouterr().err
    assert main(["verify", "--model", str(tmp_path / "missing.onnx"), str(att(11, 1)), str(att(11, 2))]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_the_evaluate_command_train_prints_reads_person_folders_with_spaces(tmp_path):
    # The second attack run: person folders named as people are ("Ada Lovelace") made test pair files whose lines
    # the printed `siamface evaluate` command refused ("expected two fields"); the pair files separate by a tab
    import shlex
    import shutil

    from conftest import run_cli

    data = tmp_path / "people"
    for folder in sorted(ATT.iterdir()):
        if folder.is_dir():
            shutil.copytree(folder, data / f"Ada {folder.name} Lovelace")
    out = tmp_path / "run"
    trained = run_cli(
        "train", data, "--aligned", "--out", out, "--epochs", "1", "--batch", "16", "--val", "2", "--test", "3",
        "--input-size", "32", "--threads", "1", "--quiet",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    command = next(line for line in trained.stdout.splitlines() if "siamface evaluate" in line)
    evaluated = run_cli(*shlex.split(command)[1:], "--no-cache", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "18 genuine" in evaluated.stdout, evaluated.stdout


class _Payload:
    """What a crafted checkpoint carries: unpickling it calls ``touch`` on a file (any call would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_runs_no_code(tmp_path, faces):
    # A checkpoint is a pickle: torch.load(weights_only=False) ran whatever a file handed over as a run folder's
    # last.pt held (train --resume), or a best.pt put into the run folder (read back at the end of a run). They
    # are read as tensors and plain values only; a file that is not one is a one-line error.
    out, marker = tmp_path / "run", tmp_path / "ran"
    train(_config(out, epochs=2, augment="none"), faces=faces)
    genuine = (out / "last.pt").read_bytes()
    torch.save({"config": {"dataset": str(ATT)}, "encoder": _Payload(marker)}, out / "last.pt")
    result = run_cli("train", ATT, "--aligned", "--out", out, "--resume", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not a siamface training checkpoint" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not marker.exists()
    # the run's own last.pt back, a crafted best.pt beside it: resuming a finished run reads best.pt at once
    (out / "last.pt").write_bytes(genuine)
    torch.save({"encoder": _Payload(marker)}, out / "best.pt")
    with pytest.raises(ConfigError, match="not a siamface training checkpoint"):
        train(_config(out, epochs=2, augment="none"), resume=True, faces=faces)
    assert not marker.exists()


def test_checkpoints_and_the_model_are_never_written_through_a_link(tmp_path, faces):
    # last.pt, best.pt and model.onnx were written to last.tmp, best.tmp and .model.onnx.tmp in the run folder,
    # then renamed: a link planted at one of those names (a run folder in a shared place) made the trainer
    # overwrite the link's target. They are written under random names made O_EXCL, then renamed.
    out = tmp_path / "run"
    out.mkdir()
    victims = []
    for planted in ("last.tmp", "best.tmp", ".model.onnx.tmp"):
        victim = tmp_path / f"victim-{planted}"
        victim.write_bytes(b"keep me")
        (out / planted).symlink_to(victim)
        victims.append(victim)
    train(_config(out, epochs=1, augment="none"), faces=faces)
    assert [v.read_bytes() for v in victims] == [b"keep me"] * 3
    assert (out / "model.onnx").stat().st_size > 1000 and (out / "last.pt").is_file()


def test_the_run_files_are_never_written_through_a_link(tmp_path, faces):
    # The checkpoints were fixed (above); the run folder's other files were still opened by name for writing: a
    # link planted at config.json, split.json, the test pair files, metrics.csv, result.json or curves.png (a
    # run folder in a shared place) made the trainer overwrite the link's target with its output.
    out = tmp_path / "run"
    planted = ["config.json", "split.json", "test_pairs_same.txt", "test_pairs_different.txt", "metrics.csv"]
    planted += ["result.json"] + (["curves.png"] if importlib.util.find_spec("matplotlib") else [])
    victims = plant_links(out, planted, tmp_path)
    train(_config(out, epochs=1, augment="none", plot=True), faces=faces)
    assert [v.read_bytes() for v in victims] == [b"keep me"] * len(planted)
    for name in planted:
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "result.json").read_text())


@pytest.mark.parametrize(
    "setting, why",
    [
        ({"val": float("nan")}, "--val must be at least 0, not nan"),  # was a ValueError traceback
        ({"test": float("inf")}, "--test must be at least 0, not inf"),  # an OverflowError traceback
        ({"val": 1}, "--val 1: a count of identities is 0 or a whole number from 2"),  # no best.pt, ever
        ({"test": 1}, "--test 1: a count of identities"),  # an 'EER nan%' on the test split
        ({"val": 2.5}, "--val 2.5: a count of identities"),  # was 2, silently
        ({"max_per_identity": -3}, "--max-per-identity must be 2 or more"),  # dropped the last 3 images
        ({"max_per_identity": 0}, "--max-per-identity must be 2 or more"),  # no limit, silently
        ({"per_identity": 0}, "--per-identity must be from 2 to 8"),  # 2, silently
        ({"patience": 0}, "--patience must be 1 or more"),  # stopped before the first epoch: no best.pt
        ({"lr": float("nan")}, "--lr must be above 0 and at most 1, not nan"),  # torch's ValueError traceback
        ({"lr": -1.0}, "--lr must be above 0"),
        ({"margin": float("nan")}, "--margin must be above 0 and at most 2, not nan"),  # NaN weights exported
        ({"margin": 1e30}, "--margin must be above 0 and at most 2"),  # an infinite loss
        ({"padding": float("nan")}, "--padding must be at least 0"),  # numpy's LinAlgError traceback
        ({"input_size": 0}, "--input-size must be from 16 to 512"),  # cv2's assertion traceback
        ({"input_size": 30}, "--input-size must be a multiple of 16"),
        ({"embedding_size": 0}, "--embedding-size must be from 1 to 8192"),  # torch's IndexError traceback
        ({"threads": 0}, "--threads must be 1 or more"),
        ({"seed": -1}, "--seed must be from 0 to"),  # numpy's ValueError traceback
        ({"seed": 2**64}, "--seed must be from 0 to"),  # torch's 'Overflow when unpacking long long'
        ({"augment": "rotate=nan"}, "--augment: rotate must be a finite number >= 0"),
        ({"augment": "flip=7"}, "--augment: flip must be from 0 to 1"),
        ({"freeze": 99}, "--freeze 99 freezes all 5 blocks of the small encoder"),  # torch's 'empty parameter list'
        ({"epochs": "4"}, "--epochs must be 1 or more, not '4'"),
        # a name the exported file would be refused for (an ESC sequence for the terminal): after the whole run
        ({"name": "evil\x1b[31mred"}, "--name 'evil\\x1b[31mred': a model's name has no control characters"),
    ],
)
def test_settings_out_of_range_are_one_line_errors(tmp_path, faces, setting, why):
    with pytest.raises(ConfigError, match=re.escape(why)):
        train(_config(tmp_path / "run", **{"epochs": 1, "augment": "none", **setting}), faces=faces)
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_the_cli_refuses_a_validation_split_of_one_identity_in_one_line(tmp_path):
    result = run_cli("train", ATT, "--aligned", "--out", tmp_path / "run", "--val", "1", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "best.pt" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--val 1" in result.stderr, result.stderr


def test_a_default_fraction_of_ten_identities_validates_on_two(tmp_path, faces):
    # --val 0.1 of the 10 fixture identities was one validation identity: no impostor pairs, an EER of NaN
    # that never improved on the last, no best.pt, and 'best.pt: not a siamface training checkpoint' at the end
    result = train(_config(tmp_path, epochs=1, augment="none", val=0.1, test=0.2), faces=faces)
    assert result["identities"] == {"train": 6, "val": 2, "test": 2}
    assert (tmp_path / "best.pt").is_file() and "validation split (2 identities)" in result["threshold_source"]


def test_a_diverging_run_stops_with_the_reason_not_a_model_of_nan(tmp_path, faces):
    # weights gone NaN (here: a checkpoint resumed from holds one) made the loss NaN: the run went on, exported a
    # model of NaN and ended with 'no comparison could be scored (no face found in any image)'
    train(_config(tmp_path, epochs=2, augment="none"), faces=faces, stop_after=1)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state["encoder"]["features.0.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "last.pt")
    model = (tmp_path / "model.onnx").read_bytes()  # the interrupted run's
    with pytest.raises(ConfigError, match=r"training diverged: the loss is nan at epoch 2, step 1"):
        train(_config(tmp_path, epochs=2, augment="none"), resume=True, faces=faces)
    assert (tmp_path / "model.onnx").read_bytes() == model


def test_resuming_a_checkpoint_that_does_not_fit_its_run_is_a_one_line_error(tmp_path, faces):
    # A checkpoint's config and weights are read as plain values: a config of the wrong type (a newer or
    # hand-edited file) was a TypeError traceback, weights of another architecture torch's RuntimeError
    train(_config(tmp_path, epochs=2, augment="none"), faces=faces, stop_after=1)
    genuine = torch.load(tmp_path / "last.pt", weights_only=True)
    for change, why in [
        ({"batch": "x"}, "the run's settings are not valid: --batch must be 4 or more, not 'x'"),
        ({"width": 16}, "its state does not fit the run it describes"),  # the weights are of width 8
        ({"loss": "hinge"}, "the run's settings are not valid: --loss must be"),
        ({"augment": 5}, "the run's settings are not valid: --augment must be text, not 5"),  # an AttributeError
        ({k: None for k in genuine["config"]}, "its state does not fit the run it describes"),  # was a TypeError
    ]:
        config = {k: v for k, v in {**genuine["config"], **change}.items() if v is not None}  # None: left out
        torch.save({**genuine, "config": config}, tmp_path / "last.pt")
        result = run_cli("train", ATT, "--aligned", "--out", tmp_path, "--resume", "--quiet")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert why in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    # one of a later layout (settings this code does not know, which it would drop): refused, not half read
    torch.save({**genuine, "format": 2}, tmp_path / "last.pt")
    result = run_cli("train", ATT, "--aligned", "--out", tmp_path, "--resume", "--quiet")
    assert result.returncode == 2 and "a checkpoint of format 2, written by another version" in result.stderr


def test_resuming_after_the_dataset_gained_a_person_is_refused(tmp_path, faces):
    # The split is seeded over the identities: one person more deals them all out anew, so resuming trained on
    # identities the first epochs had held out as test (their figures then measured on faces trained on)
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ATT, data)
    out = tmp_path / "run"
    first = train(_config(out, dataset=str(data), epochs=2, augment="none"), faces=faces, stop_after=1)
    assert first["epochs_run"] == 1
    shutil.copytree(ATT / "s3", data / "s1")
    more = load_faces(data, aligned=True, cache_dir=tmp_path / "chips")
    split_before = json.loads((out / "split.json").read_text())
    with pytest.raises(ConfigError, match=r"identities of the dataset changed .* \(1 new, 0 gone\)"):
        train(_config(out, dataset=str(data), epochs=2, augment="none"), resume=True, faces=more)
    assert json.loads((out / "split.json").read_text()) == split_before
    # the same people: it resumes
    assert train(_config(out, dataset=str(data), epochs=2, augment="none"), resume=True, faces=faces)["epochs_run"] == 2


def test_an_encoder_that_does_not_tell_people_apart_is_not_exported(tmp_path, faces):
    # One-dimensional embeddings are +1 or -1: most impostor pairs scored 1, and the exported file said so
    # (impostor_median 1.0), which the runtime refuses: the run 'succeeded' with a model no command could load.
    with pytest.raises(ConfigError, match="the trained encoder does not tell people apart: half the impostor pairs"):
        train(_config(tmp_path, epochs=2, augment="none", embedding_size=1), faces=faces)
    assert not (tmp_path / "model.onnx").exists() and (tmp_path / "best.pt").is_file()


def test_resuming_without_epochs_runs_to_the_runs_own_count(tmp_path, faces):
    # `--epochs` defaulted to 40 on --resume too: an interrupted 3-epoch run resumed from the command line ran to
    # 40 epochs, on a cosine schedule stretched to 40 from then on (no longer the uninterrupted run)
    train(_config(tmp_path, epochs=3, augment="none"), faces=faces, stop_after=1)
    result = run_cli("train", ATT, "--aligned", "--out", tmp_path, "--resume", "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs_run"] == 3


def test_a_run_folder_that_cannot_be_made_is_a_one_line_error(tmp_path):
    # --out naming an existing file was mkdir's FileExistsError traceback
    (tmp_path / "taken").write_text("a file")
    result = run_cli("train", ATT, "--aligned", "--out", tmp_path / "taken", "--val", "2", "--test", "2", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"siamface: error: {tmp_path / 'taken'}: File exists"
