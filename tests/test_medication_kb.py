"""The knowledge base: sources and licences, versions, ANSM class expansion, severity scale."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from clinassist.config import data_dir
from clinassist.errors import ClinassistError
from clinassist.serving.medication import kb_build
from clinassist.serving.medication.cli import register
from clinassist.serving.medication.kb import KnowledgeBase
from clinassist.serving.medication.severity import Severity
from clinassist.serving.medication.sources import DDINTER


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    """The default (ANSM) KB, built on first open; shared with the other medication tests."""
    return KnowledgeBase.open(tmp_path_factory.getbasetemp() / "medication" / "kb.sqlite")


def ingredient(kb: KnowledgeBase, name: str) -> int:
    (found,) = kb.by_name(name)
    return found.id


def test_open_builds_the_kb_on_first_use(kb):
    assert kb.path.is_file()
    assert kb.version.startswith(f"{kb_build.SCHEMA_VERSION}.")


def test_default_kb_has_no_ddinter_and_a_licence_manifest_per_source(kb):
    manifests = {source["id"]: source for source in kb.sources}
    assert set(manifests) == {"ansm-2020-10", "drug-names-2.0.9", "who-atc-2026-04"}
    assert manifests["ansm-2020-10"]["commercial_use"] is True
    assert manifests["who-atc-2026-04"]["commercial_use"] is False
    for manifest in manifests.values():
        assert manifest["licence"] and manifest["attribution"] and manifest["url"]
        assert all(len(digest) == 64 for digest in manifest["files"].values())


def test_class_rule_expands_through_the_substance_index(kb):
    """ANSM names ANTICOAGULANTS ORAUX + ANTI-INFLAMMATOIRES NON STÉROÏDIENS, not warfarin."""
    best = kb.rules(ingredient(kb, "warfarin"), ingredient(kb, "ibuprofen"))[0]
    assert best.severity is Severity.MAJOR
    assert (best.main, best.plus) == ("ANTICOAGULANTS ORAUX", "ANTI-INFLAMMATOIRES NON STÉROÏDIENS")


def test_french_text_is_kept_beside_the_english_severity(kb):
    best = kb.rules(ingredient(kb, "warfarin"), ingredient(kb, "ibuprofen"))[0]
    assert best.language == "fr" and "hémorragique" in best.mechanism
    assert best.levels[0]["label"] == "combination not recommended"
    assert best.levels[0]["label_original"] == "Association DECONSEILLEE"


def test_rules_are_symmetric_and_listed_once(kb):
    a, b = ingredient(kb, "simvastatin"), ingredient(kb, "clarithromycin")
    rules = kb.rules(a, b)
    assert rules == kb.rules(b, a)
    assert len({(frozenset((r.main, r.plus)), r.severity) for r in rules}) == len(rules)


def test_severity_scale_is_ordered_and_maps_to_fhir_and_cds_hooks():
    assert Severity.CONTRAINDICATED > Severity.MAJOR > Severity.MODERATE > Severity.MINOR
    assert [s.fhir for s in reversed(Severity)] == ["high", "high", "moderate", "low"]
    assert [s.cds_indicator for s in reversed(Severity)] == [
        "critical", "critical", "warning", "info"]
    with pytest.raises(ValueError, match="use one of contraindicated"):
        Severity.parse("severe")


def test_version_depends_on_the_input_files_only():
    manifests = [{"id": "a", "files": {"x": "0" * 64}}]
    assert kb_build.kb_version(manifests) == kb_build.kb_version(manifests)
    assert kb_build.kb_version(manifests) != kb_build.kb_version(
        [{"id": "a", "files": {"x": "1" * 64}}])


def test_missing_data_is_reported_with_the_files_and_the_setting(tmp_path):
    with pytest.raises(ClinassistError, match=r"missing .*CLINASSIST_DATA"):
        kb_build.build(tmp_path, tmp_path / "kb.sqlite")
    assert not (tmp_path / "kb.sqlite").exists()


def small_ddinter_data(folder: Path, rows: int = 300) -> Path:
    """The real data folder, with each DDInter file cut to its first rows (a fast build)."""
    for name in ("ddi_ansm_thesaurus", "vocab_drug_names", "vocab_atc_who"):
        (folder / name).symlink_to(data_dir() / name)
    (folder / DDINTER.folder).mkdir()
    for name in DDINTER.files:
        lines = (data_dir() / DDINTER.folder / name).read_text().splitlines(keepends=True)
        (folder / DDINTER.folder / name).write_text("".join(lines[:rows]))
    return folder


def test_cli_with_ddinter_labels_it_non_commercial(tmp_path, capsys, monkeypatch):
    import argparse

    monkeypatch.setenv("CLINASSIST_DATA", str(small_ddinter_data(tmp_path)))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kb", "build", "--with-ddinter", "--output", str(tmp_path / "k.db")])
    args.func(args)
    assert "includes NON-COMMERCIAL sources" in capsys.readouterr().out
    with_ddinter = KnowledgeBase(tmp_path / "k.db")
    assert with_ddinter.meta["commercial_use"] == "false"
    ddinter = next(s for s in with_ddinter.sources if s["id"] == "ddinter-1.0")
    assert ddinter["commercial_use"] is False and "NON-COMMERCIAL" in ddinter["licence"]
    assert ddinter["counts"]["loaded"] > 1000
    with sqlite3.connect(tmp_path / "k.db") as db:
        (count,) = db.execute("SELECT count(*) FROM rules WHERE source = 'ddinter-1.0'").fetchone()
    assert count == ddinter["counts"]["loaded"]


def test_without_atc_the_kb_is_commercially_clean(tmp_path):
    meta = kb_build.build(data_dir(), tmp_path / "kb.sqlite", with_atc=False)
    assert meta["commercial_use"] == "true"
    assert meta["sources"] == ["drug-names-2.0.9", "ansm-2020-10"]
