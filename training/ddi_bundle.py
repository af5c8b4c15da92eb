"""Export the S1 interaction model to its bundle, choose its serving threshold, and evaluate
it (the bundle on S1, or each split's run) next to the published DrugBank-86 results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score, f1_score

from clinassist import config
from clinassist.bundle import Bundle, file_sha256
from clinassist.training import bundle_metadata, ddi_data
from clinassist.training.cxr_export import PARITY_TOLERANCE, ExportError
from clinassist.training.ddi_model import DdiProbabilities
from clinassist.training.ddi_train import fingerprints, load_trained, run_of, split_of
from clinassist.training.onnx_export import OPSET

BUNDLE_NAME = "ddi_drugbank86"
FINGERPRINTS_FILE = "fingerprints.npz"
NAMES_FILE = "drug_names.json"
INPUTS = ("drug1", "drug2")
PARTS = ("train", "val", "test")
OUTPUT = "probabilities"
VOCAB_FOLDER = "vocab_drug_names"
# Field guide §2: HetDDI (Brief. Bioinform. 2023), DrugBank-86, 5-fold CV, multi-class accuracy.
PUBLISHED_ACCURACY = {
    "DeepDDI": {"s1": 0.856, "s2": 0.620, "s3": 0.409},
    "MDF-SA-DDI": {"s1": 0.931, "s2": 0.661, "s3": 0.465},
    "HetDDI": {"s1": 0.981, "s2": 0.819, "s3": 0.666},
}


def probabilities_of(model: DdiProbabilities, pairs: ddi_data.Pairs, table: np.ndarray,
                     batch_size: int = 4096) -> np.ndarray:
    fp = torch.from_numpy(table.astype(np.float32))
    with torch.no_grad():
        return np.concatenate([
            model(fp[pairs.first[i:i + batch_size]], fp[pairs.second[i:i + batch_size]]).numpy()
            for i in range(0, len(pairs), batch_size)])


def serving_threshold(probabilities: np.ndarray, classes: np.ndarray, precision: float) -> dict:
    """The lowest confidence (max softmax) above which the predicted type is right at least
    `precision` of the time, with the share of pairs it keeps."""
    confidence = probabilities.max(1)
    order = np.argsort(-confidence)
    right = np.cumsum(probabilities.argmax(1)[order] == classes[order])
    running = right / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(running >= precision)
    if not len(reaching):
        raise ExportError(f"no confidence threshold reaches validation precision {precision}")
    kept = int(reaching.max()) + 1
    return {"value": float(confidence[order][kept - 1]), "target_precision": precision,
            "validation_precision": float(running[kept - 1]),
            "validation_coverage": kept / len(order)}


def type_scores(probabilities: np.ndarray, classes: np.ndarray, threshold: float) -> dict:
    predicted = probabilities.argmax(1)
    confident = probabilities.max(1) >= threshold
    return {"pairs": int(len(classes)),
            "accuracy": float(np.mean(predicted == classes)),
            "macro_f1": float(f1_score(classes, predicted, average="macro")),
            "cohen_kappa": float(cohen_kappa_score(classes, predicted)),
            "coverage_at_threshold": float(confident.mean()),
            "precision_at_threshold": float(np.mean(predicted[confident] == classes[confident]))
            if confident.any() else None}


def export_graph(model: DdiProbabilities, path: Path, bits: int) -> None:
    """One ONNX file, `drug1` and `drug2` fingerprints (N, bits) in, N dynamic."""
    from torch.export import Dim

    example = (torch.rand(3, bits).round(), torch.rand(3, bits).round())
    batch = Dim("batch")
    torch.onnx.export(model.eval(), example, str(path), dynamo=True, external_data=False,
                      opset_version=OPSET, input_names=list(INPUTS), output_names=[OUTPUT],
                      dynamic_shapes={name: {0: batch} for name in INPUTS}, verbose=False)


def parity(model: DdiProbabilities, path: Path, pairs: ddi_data.Pairs, table: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fp = table.astype(np.float32)
    actual = session.run([OUTPUT], {"drug1": fp[pairs.first], "drug2": fp[pairs.second]})[0]
    return float(np.max(np.abs(probabilities_of(model, pairs, table) - actual)))


def drug_names(drugs: list[str]) -> dict[str, str]:
    """Lower-case names, synonyms and brands from vocab_drug_names -> DrugBank ID, for the
    DrugBank-86 drugs (a name claimed by two drugs is left out)."""
    root = config.data_dir() / VOCAB_FOLDER
    wanted = set(drugs)
    with open(root / "drug_canonical.csv", newline="") as handle:
        canonical = {row["canonical"]: row["drugbank_id"] for row in csv.DictReader(handle)
                     if row["drugbank_id"] in wanted}
    claims: dict[str, set[str]] = {}
    with open(root / "drug_synonyms.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["canonical"] in canonical:
                claims.setdefault(row["variant"].lower(), set()).add(canonical[row["canonical"]])
    for name, drug in canonical.items():
        claims.setdefault(name.lower(), set()).add(drug)
    return {name: ids.pop() for name, ids in sorted(claims.items()) if len(ids) == 1}


def export(run: Path, bundle: Path, version: str) -> dict:
    """Bundle the S1 model of `run` (a `train ddi` output folder)."""
    net, cfg = load_trained(run_of(run, "s1"))
    model = DdiProbabilities(net).eval()
    data = ddi_data.load()
    table = fingerprints(data, cfg)
    split = split_of(data, cfg, "s1")
    bundle.mkdir(parents=True, exist_ok=True)
    onnx_path = bundle / "model.onnx"
    export_graph(model, onnx_path, cfg["fingerprint_bits"])
    worst = parity(model, onnx_path, split.test.sample(2048), table)
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch interaction probabilities differ by {worst:.2e}")
    np.savez_compressed(bundle / FINGERPRINTS_FILE, drugbank_ids=np.array(data.drugs),
                        packed_bits=np.packbits(table, axis=1))
    (bundle / NAMES_FILE).write_text(json.dumps(drug_names(data.drugs), indent=0) + "\n")
    threshold = serving_threshold(probabilities_of(model, split.val, table), split.val.classes,
                                  cfg["threshold_precision"])
    bits = cfg["fingerprint_bits"]
    fp_input = {"type": "fingerprint", "dtype": "float32", "shape": ["batch", bits],
                "value_range": [0, 1],
                "format": f"Morgan bits, radius {cfg['fingerprint_radius']}, {bits} bits "
                          f"(RDKit); unpack from {FINGERPRINTS_FILE}"}
    meta = {
        "name": BUNDLE_NAME,
        "version": version,
        "task": "interaction type (DrugBank-86) of an ordered drug pair, from structure",
        "created": bundle_metadata.now(),
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "framework": bundle_metadata.framework(),
        "network_data_format": {
            "inputs": {"drug1": fp_input, "drug2": fp_input},
            "outputs": {OUTPUT: {"type": "probabilities", "dtype": "float32",
                                 "shape": ["batch", len(data.types)], "value_range": [0, 1],
                                 "channel_def": "index i = DrugBank-86 interaction type i + 1"}},
        },
        "classes": [{"label": t.label, "sentence": t.sentence, "first_is_drug2": t.first_is_drug2}
                    for t in data.types],
        "directional": "the input order matters: score both orders of a pair; the first "
                       "drug fills #Drug2 of the sentence where `first_is_drug2`, else #Drug1",
        "threshold": {**threshold, "chosen_on": "S1 validation pairs",
                      "rule": "lowest max-softmax with validation precision >= target"},
        "fingerprints": {"file": FINGERPRINTS_FILE, "drugs": len(data.drugs),
                         "arrays": "drugbank_ids, packed_bits (numpy.packbits, axis 1)"},
        "drug_names": {"file": NAMES_FILE, "source": f"{VOCAB_FOLDER} (MIT; DrugBank open "
                       "vocabulary CC0, MeSH public domain): lower-case name -> DrugBank ID"},
        "export_parity_max_abs_diff": worst,
        "training_data": {
            "dataset": ddi_data.DATASET_FOLDER, "source": ddi_data.SOURCE,
            "licence": ddi_data.LICENCE, "file_sha256": data.file_sha256,
            "split": "S1 random pairs",
            "split_sha256": {part: getattr(split, part).sha256() for part in PARTS},
            "split_sizes": {part: len(getattr(split, part)) for part in PARTS},
        },
        "training_config": cfg,
        "licence": "CC BY-NC 4.0, NON-COMMERCIAL USE ONLY: trained on DrugBank data. Do not "
                   "enable this model in a commercial deployment.",
        "commercial_use": False,
    }
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def bundle_fingerprints(bundle: Bundle) -> tuple[list[str], np.ndarray]:
    with np.load(bundle.path / FINGERPRINTS_FILE) as stored:
        bits = bundle.metadata["network_data_format"]["inputs"]["drug1"]["shape"][1]
        return list(stored["drugbank_ids"]), np.unpackbits(stored["packed_bits"], axis=1)[:, :bits]


def evaluate_bundle(bundle: Bundle, limit: int | None = None) -> dict:
    """The served ONNX model on its S1 test pairs, with the bundle's own fingerprints."""
    cfg = bundle.metadata["training_config"]
    data = ddi_data.load()
    drugs, table = bundle_fingerprints(bundle)
    if drugs != data.drugs:
        raise ExportError(f"{bundle.path}: the fingerprint table's drugs are not DrugBank-86's")
    test = split_of(data, cfg, "s1").test.sample(limit)
    fp = table.astype(np.float32)
    probabilities = np.concatenate([
        bundle.run(drug1=fp[test.first[i:i + 4096]], drug2=fp[test.second[i:i + 4096]])[OUTPUT]
        for i in range(0, len(test), 4096)])
    return {"model": bundle.name, "version": bundle.version,
            "threshold": bundle.metadata["threshold"]["value"],
            "splits": {"s1": type_scores(probabilities, test.classes,
                                         bundle.metadata["threshold"]["value"])}}


def evaluate_runs(runs: Path) -> dict:
    """Each split's run on its own test pairs (PyTorch), with the S1 serving threshold."""
    data = ddi_data.load()
    result: dict = {"model": BUNDLE_NAME, "splits": {}}
    for name in ddi_data.SPLITS:
        net, cfg = load_trained(run_of(runs, name))
        model = DdiProbabilities(net).eval()
        table = fingerprints(data, cfg)
        split = split_of(data, cfg, name)
        if name == "s1":
            result["threshold"] = serving_threshold(probabilities_of(model, split.val, table),
                                                    split.val.classes,
                                                    cfg["threshold_precision"])["value"]
        result["splits"][name] = {
            "train_pairs": len(split.train), "new_drugs": len(split.new_drugs),
            **type_scores(probabilities_of(model, split.test, table), split.test.classes,
                          result["threshold"])}
    result["published_accuracy"] = PUBLISHED_ACCURACY
    return result


def evaluate(bundle_or_runs: Path | Bundle) -> dict:
    """A bundle (S1, as served) or a `train ddi` output folder (all three splits)."""
    if isinstance(bundle_or_runs, Bundle):
        return evaluate_bundle(bundle_or_runs)
    if (Path(bundle_or_runs) / "metadata.json").is_file():
        return evaluate_bundle(Bundle.load(bundle_or_runs))
    return evaluate_runs(Path(bundle_or_runs))


def format_table(result: dict) -> str:
    lines = [f"{result['model']}: DrugBank-86 test pairs, threshold {result['threshold']:.3f}",
             f"  {'split':<22}{'pairs':>7}{'acc':>7}{'macroF1':>8}{'kappa':>7}"
             f"{'cover':>7}{'prec':>7}  published accuracy (HetDDI table)"]
    for name, s in result["splits"].items():
        published = "  ".join(f"{model} {accuracy[name]:.3f}"
                              for model, accuracy in PUBLISHED_ACCURACY.items())
        lines.append(f"  {ddi_data.SPLIT_NAMES[name]:<22}{s['pairs']:>7}{s['accuracy']:>7.3f}"
                     f"{s['macro_f1']:>8.3f}{s['cohen_kappa']:>7.3f}"
                     f"{s['coverage_at_threshold']:>7.3f}{(s['precision_at_threshold'] or 0):>7.3f}"
                     f"  {published}")
    return "\n".join(lines)
