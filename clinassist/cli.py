"""The `clinassist` command: train/calibrate/compare/export/evaluate models; services, users, audit.

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
from clinassist.processes import Program, supervise

BUNDLES = {"cxr": "cxr_pneumonia", "qc": "qc_radiograph", "ddi": "ddi_drugbank86"}
CONFIGS = {"cxr": "cxr_pneumonia.yaml", "qc": "qc.yaml", "ddi": "ddi.yaml"}
MODEL_HELP = ("cxr: pneumonia triage; qc: pixel quality control; "
              "ddi: drug interactions (does a pair interact, and how: DrugBank-86 type)")
CONFIG_DIR = Path(__file__).resolve().parent / "training" / "configs"
IN_FLIGHT_GRACE_S = 5  # `serve` lets requests in flight finish this long after SIGTERM


def cmd_train(args: argparse.Namespace) -> None:
    config = args.config or CONFIG_DIR / CONFIGS[args.model]
    output = args.output or Path("runs") / args.model
    if args.model == "ddi":
        from clinassist.training.ddi_train import train

        train(config, output, resume=args.resume, limit=args.limit, epochs=args.epochs,
              split=args.split, seed=args.seed)
        return
    if args.model == "qc":
        from clinassist.training.qc_train import train

        train(config, output, resume=args.resume, limit=args.limit, epochs=args.epochs)
        return
    from clinassist.training.cxr_export import calibrate
    from clinassist.training.cxr_train import train

    run = train(config, output, resume=args.resume, limit=args.limit, epochs=args.epochs,
                init_from=args.init_from, init_member=args.init_member, sites=args.data)
    print(json.dumps(calibrate([run]), indent=2))


def cmd_calibrate(args: argparse.Namespace) -> int:
    from clinassist.training.cxr_export import calibrate

    print(json.dumps(calibrate(args.run or [Path("runs/cxr")]), indent=2))
    return 0


def cmd_calibrate_site(args: argparse.Namespace) -> int:
    from clinassist.config import home_dir
    from clinassist.serving.imaging.site_calibration import SiteCalibrationStore
    from clinassist.site_calibration import (calibrate_site, format_report,
                                             remove_site_calibration)

    home, model = home_dir(), BUNDLES["cxr"]
    if args.remove:
        version = remove_site_calibration(home, model)
        print(f"site calibration v{version} removed: the bundle's operating points apply"
              if version else "no site calibration was in force")
        return 0
    if args.show:
        store = SiteCalibrationStore(home, model)
        version = store.active_version()
        if version is None:
            print(f"no site calibration in force (versions on file: {store.versions() or 'none'})")
            return 0
        overlay = store.read(version)
        print(json.dumps(overlay, indent=2) if args.json else format_report(overlay))
        return 0
    if args.labels is None or not args.inputs:
        raise ClinassistError("calibrate site needs --labels FILE and the labelled studies' "
                              "DICOM files or folders (or --show / --remove)")
    overlay = calibrate_site(home, args.labels, args.inputs)
    print(json.dumps(overlay, indent=2) if args.json else format_report(overlay))
    return 0


def cmd_compare(args: argparse.Namespace) -> None:
    from clinassist.training.cxr_compare import compare, format_table

    rows = compare(args.run)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


def cmd_export(args: argparse.Namespace) -> None:
    if args.model == "ddi":
        from clinassist.training.ddi_bundle import export
    elif args.model == "qc":
        from clinassist.training.qc_bundle import export
    else:
        from clinassist.training.cxr_export import export
    bundle = args.bundle or bundle_dir(BUNDLES[args.model])
    runs = args.run or [Path("runs") / args.model]
    if args.model != "cxr" and len(runs) > 1:
        raise ClinassistError(f"{args.model} exports one run; only cxr takes several (an ensemble)")
    meta = export(runs if args.model == "cxr" else runs[0], bundle, args.version)
    print(f"wrote {bundle}/model.onnx (sha256 {meta['sha256'][:12]}…), parity max abs diff "
          f"{meta['export_parity_max_abs_diff']:.1e}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.model == "ddi" and args.write and not args.run:
        raise ClinassistError("evaluate ddi --write needs --run (the `train ddi` output), so "
                              "metrics.json keeps all three splits")
    if args.model == "ddi":
        from clinassist.training.ddi_bundle import evaluate, format_table
    elif args.model == "qc":
        from clinassist.training.qc_bundle import evaluate, format_table
    else:
        from clinassist.training.cxr_evaluate import evaluate, format_table

    bundle = Bundle.load(args.bundle or BUNDLES[args.model])
    plots = bundle.path if args.write else args.plots
    if args.model == "cxr":
        result = evaluate(bundle, plots_dir=plots)
    elif args.model == "ddi" and args.run:
        result = evaluate(args.run, bundle, plots)  # all splits; reliability diagrams
    else:
        result = evaluate(bundle)
    if args.write:
        (bundle.path / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the BentoML service (and with --gateway the DICOM gateway, when configured) in the
    foreground, offline, with its state in CLINASSIST_HOME, until SIGTERM or SIGINT stops all."""
    from clinassist.config import REPO_ROOT, api_workers, home_dir, max_batch_size

    from clinassist.serving.ops.home import check as check_home
    from clinassist.serving.security import UserStore

    api_workers(), max_batch_size()  # a bad setting stops here, named, not in each worker
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True)
    check_home(home)  # a missing, locked or damaged database stops here, named, with its remedy
    if not any(user.revoked is None for user in UserStore(home).list()):
        print(f"clinassist: no active users in {home}; every API call will get 401 until you "
              "create one: clinassist users add --name NAME --role radiologist", file=sys.stderr)
    env = {**service_environment(), "BENTOML_DO_NOT_TRACK": "true",
           "BENTOML_HOME": str(home / "bentoml"), "CLINASSIST_HOME": str(home),
           "CLINASSIST_STOP_GRACE_S": str(IN_FLIGHT_GRACE_S)}
    command = [sys.executable, "-m", "clinassist.serving.bentoml_main", "serve",
               "clinassist.serving.service:Clinassist",
               "--host", args.host, "--port", str(args.port), "--working-dir", str(REPO_ROOT),
               "--timeout-graceful-shutdown", str(IN_FLIGHT_GRACE_S)]
    programs = [Program("serve", command, env, home)]
    if args.gateway:
        programs += gateway_programs(home)
    return supervise(programs)


def gateway_programs(home: Path) -> list[Program]:
    """`clinassist gateway serve` when `home` configures a gateway; it may stop on its own."""
    from clinassist.serving.gateway.config import CONFIG_FILE

    if not (home / CONFIG_FILE).exists():
        print(f"clinassist: no {home / CONFIG_FILE}, so no DICOM gateway; serving HTTP only",
              file=sys.stderr)
        return []
    command = [sys.executable, "-m", "clinassist", "gateway", "serve"]
    return [Program("gateway", command, {**service_environment(), "CLINASSIST_HOME": str(home)},
                    home, required=False)]


def service_environment() -> dict[str, str]:
    """This environment, with glibc's malloc arenas capped from each service's start (unless
    MALLOC_ARENA_MAX is set already): the triage modules cap them for the threads they start,
    this covers the threads before (README, "Benchmark": +21.8 % memory after a burst, not
    +31.8 %)."""
    import os

    from clinassist.serving.imaging.allocator import ARENAS

    return {"MALLOC_ARENA_MAX": str(ARENAS), **os.environ}


def add_model_argument(parser: argparse.ArgumentParser, choices=tuple(BUNDLES)) -> None:
    parser.add_argument("model", choices=choices, help=MODEL_HELP)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="clinassist", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model (cxr is then calibrated)")
    add_model_argument(train)
    train.add_argument("--config", type=Path, help="hyperparameters (default: training/configs/)")
    train.add_argument("--output", type=Path, help="run directory (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint in the run directory")
    train.add_argument("--epochs", type=float, help="override the configured epochs")
    train.add_argument("--limit", type=int, help="train on this many items (smoke runs)")
    train.add_argument("--split", choices=("s1", "s2", "s3"),
                       help="ddi: train one split only (default: all three)")
    train.add_argument("--seed", type=int,
                       help="ddi: override the configured seed (negatives, splits, weights)")
    train.add_argument("--init-from", type=Path,
                       help="cxr: start from this run's weights, or from a bundle's member "
                            "(its architecture is taken too)")
    train.add_argument("--init-member", type=int, default=0,
                       help="cxr: which member of an ensemble bundle --init-from names")
    train.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                       help="cxr: site datasets (`dataset export`) whose training patients join "
                            "the public training data; their held-out patients never do")
    train.set_defaults(func=cmd_train)

    cal = commands.add_parser(
        "calibrate", help="cxr: fit temperature and threshold per population on validation; "
                          "site: fit them on this imaging centre's labelled studies")
    targets = cal.add_subparsers(dest="model", required=True)
    cal_cxr = targets.add_parser("cxr", help="fit a trained run's points on validation")
    cal_cxr.add_argument("--run", type=Path, action="append",
                         help="run directory, repeated for an ensemble (default: runs/cxr)")
    cal_cxr.set_defaults(func=cmd_calibrate)
    cal_site = targets.add_parser(
        "site", help="fit a site overlay of the cxr bundle on the site's labelled studies")
    cal_site.add_argument("inputs", type=Path, nargs="*",
                          help="the labelled studies' DICOM files or folders")
    cal_site.add_argument("--labels", type=Path,
                          help="CSV with columns sop_instance_uid,label (pneumonia or normal)")
    cal_site.add_argument("--show", action="store_true", help="print the overlay in force")
    cal_site.add_argument("--remove", action="store_true",
                          help="stop using the site overlay (its versions stay on file)")
    cal_site.add_argument("--json", action="store_true", help="print the overlay as JSON")
    cal_site.set_defaults(func=cmd_calibrate_site)

    compare = commands.add_parser(
        "compare", help="rank each run and every ensemble of runs on validation "
                         "(worst-group AUC, then NLL)")
    add_model_argument(compare, choices=("cxr",))
    compare.add_argument("--run", type=Path, action="append", required=True,
                         help="run directory, repeated")
    compare.add_argument("--json", action="store_true", help="print the ranking as JSON")
    compare.set_defaults(func=cmd_compare)

    export = commands.add_parser("export", help="export a trained run to an ONNX bundle")
    add_model_argument(export)
    export.add_argument("--run", type=Path, action="append",
                        help="run directory (default: runs/MODEL); cxr: repeat it to export "
                             "the runs as one ensemble")
    export.add_argument("--bundle", type=Path, help="bundle folder (default: models/NAME)")
    export.add_argument("--version", default="1.0.0", help="semantic version of the bundle")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="evaluate a bundle on held-out data")
    add_model_argument(evaluate)
    evaluate.add_argument("--bundle", type=Path, help="bundle folder (default: models/NAME)")
    evaluate.add_argument("--run", type=Path,
                          help="ddi: a `train ddi` output folder, to score all three splits")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--plots", type=Path, help="cxr: write ROC/calibration/confusion PNGs here")
    evaluate.add_argument("--write", action="store_true",
                          help="write metrics.json (and cxr plots) into the bundle")
    evaluate.set_defaults(func=cmd_evaluate)

    serve = commands.add_parser("serve", help="run the HTTP services with the bundled models")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--gateway", action="store_true",
                       help="also run the DICOM gateway when CLINASSIST_HOME/gateway.json exists")
    serve.set_defaults(func=cmd_serve)

    from clinassist.serving.deid.cli import register as register_deid
    from clinassist.serving.imaging.learning_cli import register as register_learning
    from clinassist.serving.imaging.registry_cli import register as register_models
    from clinassist.serving.gateway.cli import register as register_gateway
    from clinassist.serving.medication.cli import register as register_medication
    from clinassist.serving.ops.cli import register as register_ops
    from clinassist.serving.security.cli import register as register_security
    from clinassist.training.gate_cli import register as register_gate

    register_security(commands)
    register_medication(commands)
    register_gateway(commands)
    register_deid(commands)
    register_learning(commands)
    register_gate(commands)
    register_models(commands)
    register_ops(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ClinassistError as error:
        print(f"clinassist: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
