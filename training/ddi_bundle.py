"""Export the S1 interaction model to its bundle (`clinassist export ddi`) and evaluate it
(`clinassist evaluate ddi`): the bundle on S1 and the external validation, or a `train ddi`
output folder on all three splits as well.

Everything the bundle decides is fitted on validation pairs: Platt scaling of P(interaction)
and the type temperature (S1 validation), the thresholds (false-alarm upper bound <= 5 % on S1
validation negatives and on their subsample matched to the other sources' positives; for a drug
never seen, on external-validation negatives), and the applicability-domain cut-off
(external-validation pairs of two drugs the model never saw). Test pairs are only scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clinassist.bundle import Bundle, file_sha256
from clinassist.training import bundle_metadata, ddi_data, ddi_external
from clinassist.training.cxr_export import PARITY_TOLERANCE, ExportError
from clinassist.training.ddi_calibration import (
    Domain,
    Platt,
    Threshold,
    applicability_cut_off,
    fit_platt,
    fit_type_temperature,
    threshold_for_false_alarm,
)
from clinassist.training.ddi_evaluate import (
    DegreeBaseline,
    PairOutputs,
    ServedTable,
    existence_scores,
    onnx_outputs,
    save_reliability,
    served_table,
    torch_logits,
    type_scores,
)
from clinassist.training.ddi_model import DdiServing, DdiTraining
from clinassist.training.ddi_negatives import LabelledPairs
from clinassist.training.ddi_sources import VOCAB_PREFIX
from clinassist.training.ddi_train import (
    Prepared,
    SplitData,
    SplitPairs,
    load_trained,
    prepare,
    run_of,
    split_pairs,
)
from clinassist.training.onnx_export import OPSET, round_to_half_precision, store_weights_as_half
from clinassist.training.trainer import load_config
from clinassist.serving.medication.predictor import (
    BUNDLE_NAME,
    NAMES_FILE,
    OUTPUTS,
    TABLE_FILE,
    read_table,
)

ENCODER_FILE = "encoder.onnx"
INPUTS = ("embeddings", "neighbours", "similarity", "first", "second")
RELIABILITY_EXISTENCE = "reliability_interaction.png"
RELIABILITY_TYPE = "reliability_type.png"
DOMAIN_CANDIDATES = np.round(np.arange(0.20, 0.75, 0.05), 2)
# Field guide §2: HetDDI (Brief. Bioinform. 2023), DrugBank-86, 5-fold CV, multi-class accuracy.
PUBLISHED_ACCURACY = {
    "DeepDDI": {"s1": 0.856, "s2": 0.620, "s3": 0.409},
    "MDF-SA-DDI": {"s1": 0.931, "s2": 0.661, "s3": 0.465},
    "HetDDI": {"s1": 0.981, "s2": 0.819, "s3": 0.666},
}
# DSN-DDI's binary figures (1 negative per positive) as quoted in HDN-DDI (field guide §2).
PUBLISHED_EXISTENCE_AUROC = {"s1": 0.995, "s2": 0.910, "s3": 0.818}
GOALS = {"type_accuracy": PUBLISHED_ACCURACY["HetDDI"],
         "existence_auroc": {"s1": 0.95, "s2": 0.91, "s3": 0.82}, "false_alarm_rate": 0.05}
LICENCE = ("NON-COMMERCIAL USE ONLY: trained on DrugBank data (CC BY-NC 4.0), with negatives "
           "chosen through DDInter (CC BY-NC-SA 4.0) and WHO ATC classes (CC BY-NC-SA 4.0). "
           "Do not enable this model in a commercial deployment.")


@dataclass
class Calibration:
    platt: Platt
    type_temperature: float
    threshold: Threshold  # pairs of two training drugs
    threshold_unseen: Threshold | None = None  # pairs with a drug outside the training drugs

    def existence(self, logits: np.ndarray) -> np.ndarray:
        return self.platt(logits)

    def types(self, logits: np.ndarray) -> np.ndarray:
        scaled = logits / self.type_temperature
        scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return scaled / scaled.sum(axis=1, keepdims=True)


def table_of(model: DdiTraining, prepared: Prepared, data: SplitData) -> ServedTable:
    nb = data.neighbours
    return served_table(model, prepared.features.values, nb.seen, nb.seen_similarity)


def typed_pairs(benchmark: ddi_data.Pairs) -> LabelledPairs:
    """A part's benchmark rows (universe rows = benchmark drug indices), in their order."""
    return LabelledPairs(benchmark.first, benchmark.second, np.ones(len(benchmark), np.int64),
                         benchmark.classes)


def calibrate(model: DdiTraining, table: ServedTable, data: SplitData,
              target: float) -> Calibration:
    """Platt scaling and threshold on the validation pairs, type temperature on the
    validation positives."""
    val = data.binary[ddi_data.VAL]
    existence = torch_logits(model.net, table, val.first, val.second).existence
    platt = fit_platt(existence, val.label)
    typed = typed_pairs(data.benchmark(ddi_data.VAL))
    types = torch_logits(model.net, table, typed.first, typed.second).types
    return Calibration(platt, fit_type_temperature(types, typed.classes),
                       threshold_for_false_alarm(platt(existence), val.label, target))


def kb_silent(prepared: Prepared, pairs: LabelledPairs) -> np.ndarray:
    """Pairs the default knowledge base (ANSM) has no rule for."""
    from clinassist.training.ddi_negatives import keys_of

    return ~np.isin(pairs.keys(), keys_of(prepared.sources.listed.ansm))


@dataclass
class SplitResult:
    metrics: dict
    existence: tuple[np.ndarray, np.ndarray]  # test probabilities, labels
    types: tuple[np.ndarray, np.ndarray]  # test confidence, correct


def split_result(prepared: Prepared, data: SplitPairs, calibration: Calibration,
                 existence: PairOutputs, types: PairOutputs) -> SplitResult:
    """Test metrics of one split from calibrated outputs (`existence` on the matched test
    pairs, `types` on the test benchmark rows), with the degree-only baseline."""
    test = data.binary[ddi_data.TEST]
    typed = typed_pairs(data.benchmark(ddi_data.TEST))
    threshold = calibration.threshold.value
    silent = kb_silent(prepared, test)
    drugbank86 = (test.label == 0) | (test.classes >= 0)  # DrugBank-86 positives only
    baseline = DegreeBaseline.fit(prepared.task.cells.union_degree, data.training_degree,
                                  data.binary[ddi_data.TRAIN])
    metrics = {
        "train_pairs": len(data.split.train), "new_drugs": len(data.split.new_drugs),
        "validation_drugs": len(data.split.val_drugs),
        "type": type_scores(types.types, typed.classes),
        "existence": existence_scores(existence.existence, test.label, threshold),
        "existence_kb_silent": existence_scores(existence.existence[silent], test.label[silent],
                                                threshold),
        "existence_drugbank86": existence_scores(existence.existence[drugbank86],
                                                 test.label[drugbank86], threshold),
        "degree_baseline": baseline.scores(test),
        "calibration": {"platt": vars(calibration.platt),
                        "type_temperature": calibration.type_temperature,
                        "threshold": calibration.threshold.to_json()},
    }
    predicted = types.types.argmax(1)
    return SplitResult(metrics, (existence.existence, test.label),
                       (types.types.max(1), (predicted == typed.classes).astype(int)))


def test_outputs(model: DdiTraining, table: ServedTable, data: SplitData,
                 calibration: Calibration) -> tuple[PairOutputs, PairOutputs]:
    """Calibrated P(interaction) of the matched test pairs and type probabilities of the test
    benchmark rows (PyTorch, as served)."""
    test = data.binary[ddi_data.TEST]
    typed = typed_pairs(data.benchmark(ddi_data.TEST))
    existence = torch_logits(model.net, table, test.first, test.second).existence
    types = torch_logits(model.net, table, typed.first, typed.second).types
    return (PairOutputs(calibration.existence(existence), np.zeros((0, 0))),
            PairOutputs(np.zeros(0), calibration.types(types)))


UNSEEN_GROUPS = ("one_unseen", "both_unseen")


def external_result(prepared: Prepared, data: SplitPairs, table: ServedTable,
                    groups: dict[str, dict[int, LabelledPairs]], score,
                    calibration: Calibration, domain: Domain) -> dict:
    """Each external group's test pairs at its threshold (pairs with a drug never seen: the
    unseen threshold): all of them, and those inside the applicability domain (what the
    service would answer), with the degree-only baseline (S1 training)."""
    baseline = DegreeBaseline.fit(prepared.task.cells.union_degree, data.training_degree,
                                  data.binary[ddi_data.TRAIN])
    nearest = table.similarity[:, 0]
    result = {}
    for group, parts in groups.items():
        test = parts[ddi_data.TEST]
        p = score(test)
        threshold = (calibration.threshold_unseen if group in UNSEEN_GROUPS
                     else calibration.threshold).value
        inside = np.maximum(nearest[test.first], nearest[test.second]) >= domain.cut_off
        result[group] = {"threshold": threshold,
                         "all": existence_scores(p, test.label, threshold),
                         "inside_domain": existence_scores(p[inside], test.label[inside],
                                                           threshold)
                         if len(np.unique(test.label[inside])) == 2 else None,
                         "share_inside_domain": float(inside.mean()),
                         "degree_baseline": baseline.scores(test)}
    return result


def unseen_threshold(groups: dict[str, dict[int, LabelledPairs]], score,
                     target: float) -> Threshold:
    """The threshold for pairs with a drug never seen, on the external-validation pairs."""
    val = LabelledPairs.concat([groups[g][ddi_data.VAL] for g in UNSEEN_GROUPS])
    return threshold_for_false_alarm(score(val), val.label, target)


def set_thresholds(calibration: Calibration, groups: dict[str, dict[int, LabelledPairs]],
                   score, target: float) -> None:
    """Both thresholds from validation pairs. Two training drugs: the stricter of the S1
    validation threshold and the one the `new_pairs` validation negatives need (S1 validation
    negatives matched to the DDInter/ANSM-only positives: busier degree cells, where the S1
    threshold alone let 6.3 % of external-test negatives through). A drug never seen: the
    external-validation pairs of `UNSEEN_GROUPS`."""
    val = groups["new_pairs"][ddi_data.VAL]
    busier = threshold_for_false_alarm(score(val), val.label, target)
    if busier.value > calibration.threshold.value:
        calibration.threshold = busier
    calibration.threshold_unseen = unseen_threshold(groups, score, target)


def choose_domain(table: ServedTable, groups: dict[str, dict[int, LabelledPairs]], score,
                  minimum_auroc: float) -> Domain:
    """The cut-off from the external-validation pairs of two unseen drugs."""
    val = groups["both_unseen"][ddi_data.VAL]
    nearest = table.similarity[:, 0]
    closer = np.maximum(nearest[val.first], nearest[val.second])
    return applicability_cut_off(closer, score(val), val.label, minimum_auroc, DOMAIN_CANDIDATES)


def export_graphs(model: DdiTraining, calibration: Calibration, bundle: Path,
                  table: ServedTable) -> None:
    """`model.onnx` (the served graph, calibration inside) and `encoder.onnx` (features to
    embeddings, to check or extend the drug table), weights stored as float16."""
    from torch.export import Dim

    served = DdiServing(model.net, calibration.platt.scale, calibration.platt.bias,
                        calibration.type_temperature).eval()
    rows = np.arange(6)
    first, second = np.triu_indices(len(rows), k=1)
    example = (torch.from_numpy(table.embeddings[rows]), torch.from_numpy(table.neighbours[rows]),
               torch.from_numpy(table.similarity[rows]), torch.from_numpy(first.astype(np.int64)),
               torch.from_numpy(second.astype(np.int64)))
    drugs, pairs = Dim("drugs", min=2), Dim("pairs")
    shapes = {"embeddings": {0: drugs}, "neighbours": {0: drugs}, "similarity": {0: drugs},
              "first": {0: pairs}, "second": {0: pairs}}
    torch.onnx.export(served, example, str(bundle / "model.onnx"), dynamo=True,
                      external_data=False, opset_version=OPSET, input_names=list(INPUTS),
                      output_names=list(OUTPUTS), dynamic_shapes=shapes, verbose=False)
    store_weights_as_half(bundle / "model.onnx")
    encoder = model.net.encoder.eval()
    features = model.features[:3].clone()
    torch.onnx.export(encoder, (features,), str(bundle / ENCODER_FILE), dynamo=True,
                      external_data=False, opset_version=OPSET, input_names=["features"],
                      output_names=["embeddings"], dynamic_shapes={"features": {0: Dim("n")}},
                      verbose=False)
    store_weights_as_half(bundle / ENCODER_FILE)


def exported_graph(bundle: Path) -> Bundle:
    """The exported graph in a session, before its metadata is written."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return Bundle(bundle, {}, session)


def parity(model: DdiTraining, calibration: Calibration, bundle: Path, table: ServedTable,
           pairs: LabelledPairs) -> float:
    """Largest |PyTorch - ONNX Runtime| of P(interaction) and type probabilities."""
    onnx = onnx_outputs(exported_graph(bundle), table, pairs.first, pairs.second)
    torch_out = torch_logits(model.net, table, pairs.first, pairs.second)
    return float(max(np.abs(onnx.existence - calibration.existence(torch_out.existence)).max(),
                     np.abs(onnx.types - calibration.types(torch_out.types)).max()))


def write_table(bundle: Path, prepared: Prepared, data: SplitData, table: ServedTable) -> None:
    universe = prepared.sources.universe
    np.savez_compressed(bundle / TABLE_FILE, embeddings=table.embeddings.astype(np.float16),
                        neighbours=table.neighbours.astype(np.int16),
                        similarity=table.similarity.astype(np.float16),
                        references=data.neighbours.references.astype(np.int32),
                        keys=np.array([d.key for d in universe.drugs]),
                        names=np.array([d.name for d in universe.drugs]))
    (bundle / NAMES_FILE).write_text(json.dumps(universe.names, sort_keys=True,
                                                separators=(",", ":")) + "\n")


def metadata(bundle: Path, version: str, cfg: dict, prepared: Prepared, data: SplitData,
             calibration: Calibration, domain: Domain, worst: float) -> dict:
    universe = prepared.sources.universe
    k = cfg["features"]["neighbours"]
    spec = {
        "embeddings": {"dtype": "float32", "shape": ["drugs", cfg["network"]["embedding"]],
                       "format": f"rows of {TABLE_FILE}:embeddings (float16 stored)"},
        "neighbours": {"dtype": "int64", "shape": ["drugs", k],
                       "format": f"rows of {TABLE_FILE}:neighbours: reference indices"},
        "similarity": {"dtype": "float32", "shape": ["drugs", k], "value_range": [0, 1],
                       "format": f"rows of {TABLE_FILE}:similarity: Tanimoto (Morgan r2)"},
        "first": {"dtype": "int64", "shape": ["pairs"], "format": "index into the drug rows"},
        "second": {"dtype": "int64", "shape": ["pairs"], "format": "index into the drug rows"},
    }
    top = cfg["network"]["analogue_top"]
    outputs = {
        "p_interaction": {"dtype": "float32", "shape": ["pairs"], "value_range": [0, 1],
                          "meaning": "calibrated P(the pair interacts), for a 1:1 degree-matched "
                                     "mix of interacting and non-interacting pairs"},
        "type_probabilities": {"dtype": "float32", "shape": ["pairs", prepared.types],
                               "meaning": "calibrated P(type | interaction), index i = "
                                          "DrugBank-86 type i + 1, for the ordered pair"},
        "analogue_first": {"dtype": "int64", "shape": ["pairs", top],
                           "meaning": "reference index of the first drug of an interacting "
                                      "analogue pair from the training data"},
        "analogue_second": {"dtype": "int64", "shape": ["pairs", top],
                            "meaning": "reference index of its second drug"},
        "analogue_similarity": {"dtype": "float32", "shape": ["pairs", top],
                                "meaning": "min of the two drugs' similarity to the analogue's "
                                           "(0: no interacting analogue)"},
    }
    sources = prepared.sources
    return {
        "name": BUNDLE_NAME, "version": version,
        "task": "does a drug pair interact (P(interaction)), and how (DrugBank-86 type)",
        "created": bundle_metadata.now(), "model_file": "model.onnx",
        "sha256": file_sha256(bundle / "model.onnx"),
        "encoder_file": ENCODER_FILE, "encoder_sha256": file_sha256(bundle / ENCODER_FILE),
        "encoder_input": {
            "features": "ddi_features.features_for(smiles, atc_codes, spec): Morgan radius 2 "
                        "bits, MACCS keys, log1p ErG, scaled RDKit properties, ATC classes",
            "blocks": prepared.features.blocks, "spec": prepared.features.spec.to_json(),
            "use": "not served: the drug table holds its output for every known drug; run it "
                   "to check the table or to embed a new drug"},
        "framework": bundle_metadata.framework(),
        "network_data_format": {"inputs": spec, "outputs": outputs},
        "classes": [{"label": t.label, "sentence": t.sentence, "first_is_drug2": t.first_is_drug2}
                    for t in sources.benchmark.types],
        "directional": "types are directional: score both orders of a pair; the first drug "
                       "fills #Drug2 of the sentence where `first_is_drug2`, else #Drug1",
        "threshold": {**calibration.threshold.to_json(), "applies_to": "pairs of two training "
                      "(DrugBank-86) drugs", "chosen_on": "S1 validation negatives, and their "
                      "subsample matched to DDInter/ANSM-only positives (new_pairs): the "
                      "stricter of the two",
                      "rule": "lowest P(interaction) whose false-alarm 95 % upper bound "
                              "(Clopper-Pearson) on validation negatives <= target"},
        "threshold_unseen": {**calibration.threshold_unseen.to_json(),
                             "applies_to": "pairs with a drug outside the training drugs",
                             "chosen_on": "external-validation negatives (one_unseen, "
                                          "both_unseen)", "rule": "as `threshold`"},
        "calibration": {"existence": {"method": "Platt scaling", **vars(calibration.platt)},
                        "types": {"method": "temperature", "value": calibration.type_temperature},
                        "fitted_on": "S1 validation pairs"},
        "applicability_domain": {
            **domain.to_json(), "similarity": "Tanimoto, Morgan radius 2, "
            f"{cfg['features']['morgan_bits']} bits, to the nearest training drug",
            "rule": "answer only when at least one drug's nearest training drug has similarity "
                    ">= cut_off (a training drug has 1)",
            "chosen_on": "external-validation pairs of two drugs outside DrugBank-86"},
        "drug_table": {
            "file": TABLE_FILE, "drugs": len(universe),
            "drugbank86_drugs": int(universe.drugbank86.sum()),
            "other_drugs": f"{int((~universe.drugbank86).sum())} drugs of vocab_drug_names "
                           f"with a SMILES (keys {VOCAB_PREFIX}<name>)",
            "references": len(data.neighbours.references),
            "arrays": "embeddings (float16), neighbours (int16), similarity (float16), "
                      "references (rows), keys, names"},
        "drug_names": {"file": NAMES_FILE, "names": len(universe.names),
                       "source": "vocab_drug_names (MIT; DrugBank open vocabulary CC0, MeSH "
                                 "public domain): folded name -> drug row"},
        "export_parity_max_abs_diff": worst,
        "training_data": {
            "sources": sources.file_sha256, "split": "S1 random pairs",
            "split_sha256": {"train": data.split.train.sha256(), "val": data.split.val.sha256(),
                             "test": data.split.test.sha256()},
            "matched_pairs_sha256": {name: data.binary[part].sha256() for name, part in
                                     (("train", ddi_data.TRAIN), ("val", ddi_data.VAL),
                                      ("test", ddi_data.TEST))},
        },
        "training_config": cfg,
        "licence": LICENCE, "commercial_use": False,
    }


def export(output: Path, bundle: Path, version: str) -> dict:
    """Bundle the S1 model of `output` (a `train ddi` folder)."""
    cfg = load_config(output / "config.yaml")
    prepared = prepare(cfg)
    model, data = load_trained(run_of(output, "s1"), prepared, "s1")
    round_to_half_precision(model.net)
    table = table_of(model, prepared, data)
    calibration = calibrate(model, table, data, cfg["false_alarm_target"])
    bundle.mkdir(parents=True, exist_ok=True)
    export_graphs(model, calibration, bundle, table)
    worst = parity(model, calibration, bundle, table, data.binary[ddi_data.TEST].take(
        np.arange(min(2048, len(data.binary[ddi_data.TEST])))))
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch interaction outputs differ by {worst:.2e}")
    graph = exported_graph(bundle)
    groups = ddi_external.external_sets(prepared, data.binary, cfg)

    def score(pairs: LabelledPairs) -> np.ndarray:
        return onnx_outputs(graph, table, pairs.first, pairs.second).existence

    set_thresholds(calibration, groups, score, cfg["false_alarm_target"])
    domain = choose_domain(table, groups, score, cfg["domain_min_auroc"])
    write_table(bundle, prepared, data, table)
    meta = metadata(bundle, version, cfg, prepared, data, calibration, domain, worst)
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def bundle_table(bundle: Bundle) -> ServedTable:
    stored = read_table(bundle.path)
    return ServedTable(stored.embeddings, stored.neighbours, stored.similarity)


def bundle_calibration(bundle: Bundle) -> Calibration:
    meta = bundle.metadata

    def threshold(entry: dict) -> Threshold:
        return Threshold(**{key: entry[key] for key in Threshold.__dataclass_fields__})

    existence = meta["calibration"]["existence"]
    return Calibration(Platt(existence["scale"], existence["bias"]),
                       meta["calibration"]["types"]["value"], threshold(meta["threshold"]),
                       threshold(meta["threshold_unseen"]))


def evaluate_bundle(bundle: Bundle) -> dict:
    """The served ONNX model on the S1 test pairs and the external test pairs."""
    cfg = bundle.metadata["training_config"]
    prepared = prepare(cfg, with_features=False)
    pairs = split_pairs(prepared, cfg, "s1")
    table = bundle_table(bundle)
    calibration = bundle_calibration(bundle)
    test = pairs.binary[ddi_data.TEST]
    typed = typed_pairs(pairs.benchmark(ddi_data.TEST))
    s1 = split_result(prepared, pairs, calibration,
                      onnx_outputs(bundle, table, test.first, test.second),
                      onnx_outputs(bundle, table, typed.first, typed.second))
    domain = Domain(**{key: bundle.metadata["applicability_domain"][key]
                       for key in Domain.__dataclass_fields__})
    groups = ddi_external.external_sets(prepared, pairs.binary, cfg)
    external = external_result(prepared, pairs, table, groups, lambda p: onnx_outputs(
        bundle, table, p.first, p.second).existence, calibration, domain)
    return {"model": bundle.name, "version": bundle.version,
            "threshold": calibration.threshold.value,
            "threshold_unseen": calibration.threshold_unseen.value, "splits": {"s1": s1.metrics},
            "external": external, "goals": GOALS, "published_accuracy": PUBLISHED_ACCURACY,
            "published_existence_auroc": PUBLISHED_EXISTENCE_AUROC}


def evaluate_runs(output: Path, bundle: Bundle, plots: Path | None = None) -> dict:
    """Each split's run on its own test pairs (PyTorch, as served, each calibrated on its
    validation pairs), the external validation of the S1 model with the bundle's domain, and
    reliability diagrams in `plots`."""
    cfg = load_config(output / "config.yaml")
    prepared = prepare(cfg)
    result: dict = {"model": BUNDLE_NAME, "splits": {}}
    curves_existence, curves_type = {}, {}
    trained: dict[Path, tuple] = {}
    for name in ddi_data.SPLITS:
        run = run_of(output, name)
        if run not in trained:
            trained[run] = load_trained(run, prepared, name)
        model, data = trained[run]
        if name == "s3":  # the S2/S3 run, with the S3 test pairs
            data = replace_pairs(data, split_pairs(prepared, cfg, "s3"))
        round_to_half_precision(model.net)
        table = table_of(model, prepared, data)
        calibration = calibrate(model, table, data, cfg["false_alarm_target"])
        if name == "s1":
            groups = ddi_external.external_sets(prepared, data.binary, cfg)
            score = external_scorer(model, table, calibration)
            set_thresholds(calibration, groups, score, cfg["false_alarm_target"])
        split = split_result(prepared, data, calibration,
                             *test_outputs(model, table, data, calibration))
        result["splits"][name] = split.metrics
        curves_existence[ddi_data.SPLIT_NAMES[name]] = split.existence
        curves_type[ddi_data.SPLIT_NAMES[name]] = split.types
        if name == "s1":
            domain = Domain(**{key: bundle.metadata["applicability_domain"][key]
                               for key in Domain.__dataclass_fields__})
            result["threshold"] = calibration.threshold.value
            result["threshold_unseen"] = calibration.threshold_unseen.value
            result["external"] = external_result(prepared, data, table, groups, score,
                                                 calibration, domain)
            for group in ("one_unseen", "both_unseen"):
                test = groups[group][ddi_data.TEST]
                curves_existence[f"external, {group.replace('_', ' ')}"] = (score(test),
                                                                           test.label)
    result.update(goals=GOALS, published_accuracy=PUBLISHED_ACCURACY,
                  published_existence_auroc=PUBLISHED_EXISTENCE_AUROC)
    if plots:
        save_reliability(curves_existence, plots / RELIABILITY_EXISTENCE,
                         "P(interaction), test pairs", "predicted P(interaction)",
                         "observed share interacting")
        save_reliability(curves_type, plots / RELIABILITY_TYPE, "type, test positives",
                         "probability of the predicted type", "observed share right")
    return result


def replace_pairs(data: SplitData, pairs: SplitPairs) -> SplitData:
    """S3 uses the S2/S3 run (same training set) with the S3 test part."""
    return SplitData(pairs.split, pairs.binary, pairs.training_degree, data.neighbours,
                     data.table, data.items)


def external_scorer(model: DdiTraining, table: ServedTable, calibration: Calibration):
    return lambda pairs: calibration.existence(
        torch_logits(model.net, table, pairs.first, pairs.second).existence)


def evaluate(target: Path | Bundle, bundle: Bundle | None = None,
             plots: Path | None = None) -> dict:
    """A bundle (S1 and external, as served) or a `train ddi` output folder (all splits)."""
    if isinstance(target, Bundle):
        return evaluate_bundle(target)
    if (Path(target) / "metadata.json").is_file():
        return evaluate_bundle(Bundle.load(target))
    return evaluate_runs(Path(target), bundle or Bundle.load(BUNDLE_NAME), plots)


def format_table(result: dict) -> str:
    lines = [f"{result['model']}: thresholds {result['threshold']:.3f} (two training drugs) "
             f"and {result['threshold_unseen']:.3f} (a drug never seen), each with a false-alarm "
             "upper bound <= 5 % on validation negatives; degree-only baseline AUROC in brackets",
             f"  {'split':<22}{'type acc':>9}{'macroF1':>8}{'kappa':>7} | {'AUROC':>6}"
             f"{'(deg)':>7}{'AUPRC':>7}{'FA':>7}{'sens':>7}{'KB-silent AUROC':>16}"]
    for name, s in result["splits"].items():
        t, e = s["type"], s["existence"]
        lines.append(f"  {ddi_data.SPLIT_NAMES[name]:<22}{t['accuracy']:>9.3f}"
                     f"{t['macro_f1']:>8.3f}{t['cohen_kappa']:>7.3f} | {e['auroc']:>6.3f}"
                     f"({s['degree_baseline']['auroc']:.3f}){e['auprc']:>7.3f}"
                     f"{e['false_alarm_rate']:>7.3f}{e['sensitivity']:>7.3f}"
                     f"{s['existence_kb_silent']['auroc']:>16.3f}")
    for group, g in result.get("external", {}).items():
        e = g["all"]
        lines.append(f"  {'external ' + group:<22}{'':>24} | {e['auroc']:>6.3f}"
                     f"({g['degree_baseline']['auroc']:.3f}){e['auprc']:>7.3f}"
                     f"{e['false_alarm_rate']:>7.3f}{e['sensitivity']:>7.3f}"
                     f"   {e['positives']}+{e['negatives']} pairs")
    return "\n".join(lines)
