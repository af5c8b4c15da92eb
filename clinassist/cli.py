"""The `clinassist` command: train, calibrate, export and evaluate models.

Heavy modules (torch, MONAI, transformers) are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clinassist.bundle import Bundle
from clinassist.config import bundle_dir
from clinassist.errors import ClinassistError

CXR_BUNDLE = "cxr_pneumonia"
DEFAULT_RUN = Path("runs/cxr")


def cmd_train(args: argparse.Namespace) -> None:
    from training.cxr_export import calibrate
    from training.cxr_train import train

    run = train(args.config, args.output, resume=args.resume, limit=args.limit, epochs=args.epochs)
    print(json.dumps(calibrate(run), indent=2))


def cmd_calibrate(args: argparse.Namespace) -> None:
    from training.cxr_export import calibrate

    print(json.dumps(calibrate(args.run), indent=2))


def cmd_export(args: argparse.Namespace) -> None:
    from training.cxr_export import export

    meta = export(args.run, args.bundle, args.version)
    print(f"wrote {args.bundle}/model.onnx (sha256 {meta['sha256'][:12]}…), parity max abs diff "
          f"{meta['export_parity_max_abs_diff']:.1e}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from training.cxr_evaluate import evaluate, format_table, write_metrics

    bundle = Bundle.load(args.bundle)
    result = evaluate(bundle, plots_dir=bundle.path if args.write else args.plots)
    if args.write:
        write_metrics(result, bundle.path / "metrics.json")
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=["cxr"], help="which model family")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="clinassist", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (then calibrate it on validation)")
    add_model_argument(train)
    train.add_argument("--config", type=Path,
                       default=Path(__file__).resolve().parent.parent / "training" / "configs"
                       / "cxr_pneumonia.yaml")
    train.add_argument("--output", type=Path, default=DEFAULT_RUN, help="run directory")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in the run directory")
    train.add_argument("--epochs", type=float, help="override the configured epochs")
    train.add_argument("--limit", type=int, help="train on this many images (smoke runs)")
    train.set_defaults(func=cmd_train)

    cal = commands.add_parser("calibrate", help="fit temperature and threshold on validation")
    add_model_argument(cal)
    cal.add_argument("--run", type=Path, default=DEFAULT_RUN)
    cal.set_defaults(func=cmd_calibrate)

    export = commands.add_parser("export", help="export a trained run to an ONNX bundle")
    add_model_argument(export)
    export.add_argument("--run", type=Path, default=DEFAULT_RUN)
    export.add_argument("--bundle", type=Path, default=bundle_dir(CXR_BUNDLE))
    export.add_argument("--version", default="1.0.0", help="semantic version of the bundle")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="evaluate a bundle on the official test split")
    add_model_argument(evaluate)
    evaluate.add_argument("--bundle", type=Path, default=bundle_dir(CXR_BUNDLE))
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--plots", type=Path, help="write ROC/calibration/confusion PNGs here")
    evaluate.add_argument("--write", action="store_true",
                          help="write metrics.json and the plots into the bundle")
    evaluate.set_defaults(func=cmd_evaluate)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except ClinassistError as error:
        print(f"clinassist: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
