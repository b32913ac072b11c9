"""Train the default detector from scratch on the synthetic data set, resumable, then export.

    python -m mriscribe.training.train --data DIR/dataset.yaml [--epochs 60] [--device cpu]
    python -m mriscribe.training.train --resume runs/mriscribe/weights/last.pt
    python -m mriscribe.training.train --data DIR/dataset.yaml --init models/mriscribe-yolov8n.pt
    python -m mriscribe.training.train --average soup.pt runs/a/weights/{best,last}.pt
    python -m mriscribe.training.train --export runs/mriscribe/weights/best.pt

Training writes checkpoints every epoch, so a run stopped at the end of a CPU session goes on
with --resume in the next. --hours bounds a run by wall time (Ultralytics fits the schedule).
--average writes the mean of several checkpoints' weights (a "model soup" of one run's best and
last epochs, say), which is then exported like any checkpoint. Export writes an ONNX model with
the class names and input size in its metadata.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DEFAULT_MODEL = (
    Path(__file__).resolve().parents[1] / "detection" / "models" / "mriscribe-yolov8n.onnx"
)


def _yolo():  # noqa: ANN202 - Ultralytics types are optional
    try:
        from ultralytics import YOLO
    except ImportError:
        sys.exit("training needs the 'train' extra: pip install 'mriscribe[train]'")
    return YOLO


def _patch_ultralytics(device: str) -> None:
    """Make an offline run work: no model download for the AMP check, no polars for the CSV."""
    import csv

    from ultralytics.engine import trainer

    if device != "cpu":
        # check_amp downloads a reference model to compare fp16 with fp32; offline it cannot.
        # YOLOv8 trains well under AMP on current NVIDIA GPUs, so trust it.
        trainer.check_amp = lambda model: True
    try:
        import polars  # noqa: F401
    except ImportError:
        # Ultralytics reads results.csv with polars only to store it in the checkpoint.
        def read_results_csv(self: trainer.BaseTrainer) -> dict[str, list[float]]:
            try:
                with open(self.csv, newline="") as handle:
                    rows = list(csv.DictReader(handle))
            except FileNotFoundError:
                return {}
            if not rows:
                return {}
            return {key.strip(): [float(row[key]) for row in rows] for key in rows[0]}

        trainer.BaseTrainer.read_results_csv = read_results_csv


def train(args: argparse.Namespace) -> Path:
    yolo = _yolo()
    _patch_ultralytics(str(args.device))
    if args.resume:
        model = yolo(str(args.resume))
        results = model.train(resume=True)
    else:
        model = yolo(args.arch)
        options = {
            "data": str(args.data),
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "batch": args.batch,
            "device": args.device,
            "workers": args.workers,
            "project": str(args.project),
            "name": args.name,
            "exist_ok": True,
            "pretrained": str(args.init) if args.init else False,
            "plots": False,
            "seed": args.seed,
            "deterministic": False,
            "cache": args.cache,
            "close_mosaic": max(1, args.epochs // 6),
            "patience": 0,
            # MRI slices are grey: colour jitter would teach nothing real.
            "hsv_h": 0.0,
            "hsv_s": 0.0,
            "hsv_v": 0.3,
            "fliplr": 0.5,
            "flipud": 0.0,
            "degrees": 5.0,
            "scale": 0.3,
            "mosaic": 1.0,
            "amp": args.device != "cpu",
            "warmup_epochs": args.warmup_epochs,
        }
        if args.lr0 is not None:
            # Ultralytics zeroes the bias warm-up rate only for its automatic optimizer; its
            # default (0.1) would throw a fine-tuned model's biases around under AdamW.
            options.update(optimizer="AdamW", lr0=args.lr0, warmup_bias_lr=0.0)
        if args.hours:
            options["time"] = args.hours
        results = model.train(**options)
    save_dir = Path(getattr(results, "save_dir", "") or model.trainer.save_dir)
    return save_dir / "weights" / "best.pt"


def average(weights: list[Path], out: Path) -> Path:
    """Write a checkpoint whose weights are the mean of ``weights`` (same architecture).

    The first checkpoint supplies everything else (class names, training arguments); its EMA
    and optimizer state are dropped, as Ultralytics does for a finished run.
    """
    _yolo()  # the checkpoints pickle Ultralytics classes
    import torch

    if len(weights) < 2:
        raise ValueError("--average needs at least two checkpoints")
    checkpoints = [torch.load(path, map_location="cpu", weights_only=False) for path in weights]
    states = [ckpt["model"].float().state_dict() for ckpt in checkpoints]
    if any(state.keys() != states[0].keys() for state in states):
        raise ValueError("the checkpoints do not share one architecture")
    mean = {
        key: sum(state[key] for state in states) / len(states)
        if value.dtype.is_floating_point
        else value
        for key, value in states[0].items()
    }
    merged = checkpoints[0]
    merged["model"].load_state_dict(mean)
    merged["model"] = merged["model"].half()
    merged.update(ema=None, optimizer=None, updates=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merged, out)
    return out


def export(weights: Path, imgsz: int, out: Path, version: str = "") -> Path:
    """Export ``weights`` to ONNX (dynamic batch, opset 17) and copy it to ``out``.

    ``version`` goes into the metadata as ``model_version`` (shown in /health and the report);
    without it the export date stands in.
    """
    yolo = _yolo()
    model = yolo(str(weights))
    exported = Path(
        model.export(
            format="onnx", imgsz=imgsz, dynamic=True, simplify=True, opset=17, device="cpu"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if exported.resolve() != out.resolve():
        shutil.move(exported, out)  # Ultralytics writes beside the weights; leave nothing there
    _describe(out, version)
    return out


def _describe(path: Path, version: str = "") -> None:
    """Replace Ultralytics' generic description (which names the training folder) with ours."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props["description"] = (
        "mriscribe default brain-tumour detector: YOLOv8n trained from scratch on synthetic "
        "lesions in packaged brain MRI. Not for clinical use. See MODEL_CARD.md."
    )
    props["author"] = "mriscribe"
    if version:
        props["model_version"] = version
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="dataset.yaml from mriscribe.training.synth")
    parser.add_argument("--arch", default="yolov8n.yaml", help="model config, trained from scratch")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hours", type=float, default=None, help="wall-time budget")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="ram", help="ram, disk or false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--project", type=Path, default=Path("runs"))
    parser.add_argument("--name", default="mriscribe")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these weights (fine-tune) instead of from scratch",
    )
    parser.add_argument(
        "--lr0",
        type=float,
        default=None,
        help="AdamW learning rate, e.g. lower for fine-tuning (default: Ultralytics' choice)",
    )
    parser.add_argument("--warmup-epochs", type=float, default=3.0)
    parser.add_argument("--resume", type=Path, default=None, help="a last.pt to continue")
    parser.add_argument(
        "--average",
        type=Path,
        nargs="+",
        default=None,
        metavar=("OUT", "WEIGHTS"),
        help="write OUT, the mean of the WEIGHTS checkpoints",
    )
    parser.add_argument("--export", type=Path, default=None, help="a .pt to export to ONNX")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="where the ONNX goes")
    parser.add_argument("--model-version", default="", help="the export's model_version")
    args = parser.parse_args(argv)
    if args.cache == "false":
        args.cache = False
    if args.average:
        if len(args.average) < 3:
            parser.error("--average needs OUT and at least two checkpoints")
        print(average(args.average[1:], args.average[0]))
        return 0
    if args.export:
        print(export(args.export, args.imgsz, args.out, args.model_version))
        return 0
    if not args.resume and not args.data:
        parser.error("--data is required unless --resume or --export is given")
    best = train(args)
    print(best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
