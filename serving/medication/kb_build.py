"""Build the versioned SQLite knowledge base from `$CLINASSIST_DATA` (`clinassist kb build`).

Order matters: English names first (drug-names dictionary, then WHO ATC), so that ANSM's
French substances join onto the same ingredients, then ANSM rules are expanded through its
substance index, then (optionally, non-commercial) DDInter pairs join by name.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from clinassist.errors import ClinassistError
from clinassist.serving.medication.severity import ANSM_LEVELS, DDINTER_LEVELS
from clinassist.serving.medication.sources import ANSM, ATC, DDINTER, DRUG_NAMES
from clinassist.serving.medication.text import fold, strip_salt

SCHEMA_VERSION = 1
SCHEMA = Path(__file__).with_name("kb_schema.sql")
COMBINATION = re.compile(r",\s*and\s+|,\s*|\s+and\s+|\s*\+\s*|\s*/\s*")


@dataclass
class Ingredients:
    """Ingredients by id and every folded name pointing at them, kept in memory while building."""

    db: sqlite3.Connection
    by_name: dict[str, set[int]] = field(default_factory=dict)

    def add(self, name: str, ansm_name: str | None = None) -> int:
        cursor = self.db.execute("INSERT INTO ingredients (name, ansm_name) VALUES (?, ?)",
                                 (name, ansm_name))
        ingredient = int(cursor.lastrowid)
        self.alias(fold(name), {ingredient}, "generic")
        return ingredient

    def alias(self, folded: str, ingredients: set[int], origin: str) -> None:
        if not folded or not ingredients or folded in self.by_name:
            return
        self.by_name[folded] = set(ingredients)
        self.db.executemany("INSERT INTO names VALUES (?, ?, ?)",
                            [(folded, ingredient, origin) for ingredient in ingredients])

    def find(self, name: str) -> set[int]:
        """Exact folded name, else without salt words, else every part of a combination."""
        folded = fold(name)
        found = self.by_name.get(folded) or self.by_name.get(strip_salt(folded))
        if found:
            return found
        parts = [fold(part) for part in COMBINATION.split(name.lower()) if fold(part)]
        if len(parts) > 1:
            found_parts = [self.find(part) for part in parts]
            if all(found_parts):
                return set().union(*found_parts)
        return set()


def build(data_dir: Path, output: Path, *, with_ddinter: bool = False,
          with_atc: bool = True) -> dict:
    """Write the KB to `output` (atomically) and return its meta: version, sources, counts.
    Without ATC (non-commercial) the KB is commercially clean, but ATC codes do not resolve
    and the ATC-class checks (duplicate class, allergy class) find nothing."""
    started = time.perf_counter()
    sources = [ANSM, DRUG_NAMES] + ([ATC] if with_atc else []) + ([DDINTER] if with_ddinter else [])
    for source in sources:
        source.paths(data_dir)  # fail early, naming every missing file
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")  # one per builder
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    try:
        db.executescript(SCHEMA.read_text())
        ingredients = Ingredients(db)
        manifests = [DRUG_NAMES.manifest(data_dir, **load_drug_names(ingredients, data_dir))]
        if with_atc:
            manifests.append(ATC.manifest(data_dir, **load_atc(ingredients, data_dir)))
        manifests.append(ANSM.manifest(data_dir, **load_ansm(ingredients, data_dir)))
        if with_ddinter:
            manifests.append(DDINTER.manifest(data_dir, **load_ddinter(ingredients, data_dir)))
        meta = write_meta(db, manifests, time.perf_counter() - started)
        db.commit()
        db.close()
    except BaseException:
        db.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)
    return meta


def kb_version(manifests: list[dict]) -> str:
    """Schema, sources and a digest of the exact input files and of this builder: equal inputs
    give equal versions."""
    digest = hashlib.sha256(json.dumps([m["files"] for m in manifests], sort_keys=True).encode())
    digest.update(Path(__file__).read_bytes() + SCHEMA.read_bytes())
    ids = "+".join(m["id"] for m in manifests)
    return f"{SCHEMA_VERSION}.{ids}.{digest.hexdigest()[:10]}"


def write_meta(db: sqlite3.Connection, manifests: list[dict], seconds: float) -> dict:
    db.executemany("INSERT INTO sources VALUES (?, ?)",
                   [(m["id"], json.dumps(m, ensure_ascii=False)) for m in manifests])
    meta = {"schema_version": str(SCHEMA_VERSION), "kb_version": kb_version(manifests),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": f"{seconds:.2f}",
            "commercial_use": str(all(m["commercial_use"] for m in manifests)).lower()}
    db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    return {**meta, "sources": [m["id"] for m in manifests]}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_drug_names(ingredients: Ingredients, data_dir: Path) -> dict[str, int]:
    """Canonical drugs become ingredients (combination products point at their parts);
    every synonym and brand becomes a name."""
    canonical_path, synonyms_path = DRUG_NAMES.paths(data_dir)
    canonicals = [row["canonical"] for row in read_csv(canonical_path)]
    synonyms = read_csv(synonyms_path)
    products, salts = [], []
    for name in canonicals:
        if len(COMBINATION.split(name.lower())) > 1:
            products.append(name)
        elif strip_salt(fold(name)) != fold(name):
            salts.append(name)  # "naproxen sodium" joins "naproxen" when that exists
        else:
            ingredients.add(name)
    pending = add_synonyms(ingredients, synonyms)
    for name in salts + products:
        found = ingredients.find(name)
        if found:
            ingredients.alias(fold(name), found, "combination" if name in products else "salt")
        else:
            ingredients.add(name)
    add_synonyms(ingredients, pending)  # those of salt forms and combination products
    return {"canonical": len(canonicals), "combination_products": len(products),
            "synonyms": len(synonyms)}


def add_synonyms(ingredients: Ingredients, synonyms: list[dict[str, str]]
                 ) -> list[dict[str, str]]:
    """Alias each synonym to its canonical drug's ingredients; return those not yet known."""
    pending = []
    for row in synonyms:
        found = ingredients.find(row["canonical"])
        if found:
            ingredients.alias(fold(row["variant"]), found, "synonym")
        else:
            pending.append(row)
    return pending


def load_atc(ingredients: Ingredients, data_dir: Path) -> dict[str, int]:
    """Every ATC code with its name; level-5 codes link to ingredients (found or added).
    Codes of combinations ("amoxicillin and beta-lactamase inhibitor", "ibuprofen,
    combinations") resolve as products (`atc-product`) but classify no single ingredient."""
    rows = read_csv(ATC.paths(data_dir)[0])
    classes = {row["atc_code"]: row["atc_name"] for row in rows if row["atc_code"]}
    ingredients.db.executemany("INSERT INTO atc_classes VALUES (?, ?)", classes.items())
    links = []
    for code, name in classes.items():
        if len(code) == 7:
            found = ingredients.find(name) or {ingredients.add(name)}
            system = "atc-product" if "combination" in name or len(found) > 1 else "atc"
            links += [(system, code, ingredient) for ingredient in found]
    ingredients.db.executemany("INSERT OR IGNORE INTO codes VALUES (?, ?, ?)", links)
    return {"codes": len(classes), "level5_links": len(links)}


def english_candidates(french: str) -> list[str]:
    """English INN spellings a French substance name may have: "warfarine" -> "warfarin",
    "acide acetylsalicylique" -> "acetylsalicylic acid". Only a name the English sources
    already hold is ever used."""
    name = fold(french)
    candidates = [name]
    acid = re.fullmatch(r"acide (\w+)ique(.*)", name)
    if acid:
        candidates.append(f"{acid.group(1)}ic acid{acid.group(2)}")
    for french_end, english_end in (("ine", "in"), ("ene", "en"), ("ole", "ol"), ("e", "")):
        if name.endswith(french_end):
            candidates.append(name[: -len(french_end)] + english_end)
    return candidates


def ansm_ingredients(ingredients: Ingredients, substance: str) -> set[int]:
    """The ingredients of an ANSM substance ("a + b" names two), added under the French name
    when no English name matches."""
    parts = [part for part in re.split(r"\s*\+\s*", substance) if part]
    found: set[int] = set()
    for part in parts:
        match = next((found for candidate in english_candidates(part)
                      if (found := ingredients.find(candidate))), None)
        found |= match or {ingredients.add(part, ansm_name=part)}
    ingredients.db.executemany("UPDATE ingredients SET ansm_name = coalesce(ansm_name, ?) "
                               "WHERE id = ?", [(substance, i) for i in found])
    ingredients.alias(fold(substance), found, "ansm")
    return found


def load_ansm(ingredients: Ingredients, data_dir: Path) -> dict[str, int]:
    """Substances, classes and RxNorm codes from the index, then every rule expanded."""
    thesaurus_path, index_path, rxnorm_path = ANSM.paths(data_dir)
    substances: dict[str, set[int]] = {}
    classes: dict[str, set[int]] = {}
    for entry in json.loads(index_path.read_text(encoding="utf-8")):
        members = ansm_ingredients(ingredients, entry["substance"])
        substances[fold(entry["substance"])] = members
        for drug_class in entry["drug_classes"]:
            classes.setdefault(fold(drug_class), set()).update(members)
    ingredients.db.executemany("INSERT OR IGNORE INTO ansm_classes VALUES (?, ?)",
                               [(c, i) for c, members in classes.items() for i in members])
    rxnorm = [("rxnorm", row["RxNorm"], i) for row in read_tsv(rxnorm_path)
              if row["RxNorm"] not in ("", "NA")
              for i in substances.get(fold(row["substance"]), ())]
    ingredients.db.executemany("INSERT OR IGNORE INTO codes VALUES (?, ?, ?)", rxnorm)
    rules = json.loads(thesaurus_path.read_text(encoding="utf-8"))
    skipped, seen = 0, set()
    for rule in rules:
        key = (frozenset((fold(rule["main_drug"]), fold(rule["plus_drug"]))),
               json.dumps(rule["severity_levels"]), fold(rule["interaction_mechanism"]))
        if key in seen:
            continue  # the thesaurus lists most rules twice, once under each drug
        seen.add(key)
        main = expand_ansm_term(rule["main_drug"], substances, classes)
        plus = expand_ansm_term(rule["plus_drug"], substances, classes)
        if not (main[0] and plus[0]):
            skipped += 1  # a non-drug term: alcohol, grapefruit, latex, "oral drugs", ...
            continue
        rule_id = insert_ansm_rule(ingredients.db, rule)
        insert_pairs(ingredients.db, rule_id, main, plus)
    return {"substances": len(substances), "classes": len(classes), "rxnorm_codes": len(rxnorm),
            "records": len(rules), "rules": len(seen) - skipped,
            "rules_without_drug_terms": skipped}


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def expand_ansm_term(term: str, substances: dict[str, set[int]],
                     classes: dict[str, set[int]]) -> tuple[set[int], int]:
    """The ingredients an ANSM rule term names, and its specificity (2 substance, 1 class).
    A term that is both ("INSULINE") covers both."""
    folded = fold(term)
    if folded in substances:
        return substances[folded] | classes.get(folded, set()), 2
    return classes.get(folded, set()), 1


def unwrap(text: str) -> str:
    """The thesaurus text without the line breaks of its PDF layout."""
    return " ".join(text.split())


def insert_ansm_rule(db: sqlite3.Connection, rule: dict) -> int:
    levels = []
    for level in rule["severity_levels"]:
        if fold(level["level"]) not in ANSM_LEVELS:
            raise ClinassistError(f"ANSM rule {rule['main_drug']} + {rule['plus_drug']}: unknown "
                                  f"level {level['level']!r}; add it to severity.ANSM_LEVELS")
        severity, label = ANSM_LEVELS[fold(level["level"])]
        levels.append({"severity": int(severity), "label": label, "label_original": level["level"],
                       "condition": unwrap(level["info"]) or None})
    management = "\n".join(level["condition"] for level in levels if level["condition"]) or None
    cursor = db.execute(
        "INSERT INTO rules (source, main, plus, severity, levels, mechanism, management, language)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'fr')",
        (ANSM.id, rule["main_drug"], rule["plus_drug"], max(l["severity"] for l in levels),
         json.dumps(levels, ensure_ascii=False), unwrap(rule["interaction_mechanism"]) or None,
         management))
    return int(cursor.lastrowid)


def insert_pairs(db: sqlite3.Connection, rule_id: int, main: tuple[set[int], int],
                 plus: tuple[set[int], int]) -> None:
    specificity = main[1] + plus[1]
    pairs = {(min(a, b), max(a, b)) for a, b in itertools.product(main[0], plus[0]) if a != b}
    db.executemany("INSERT OR IGNORE INTO interactions VALUES (?, ?, ?, ?)",
                   [(a, b, rule_id, specificity) for a, b in pairs])


def load_ddinter(ingredients: Ingredients, data_dir: Path) -> dict[str, int]:
    """DDInter pairs whose two names resolve; one rule per pair, English severity only."""
    seen: set[tuple[str, str]] = set()
    loaded = unmatched = unknown = 0
    for path in DDINTER.paths(data_dir):
        for row in read_csv(path):
            key = tuple(sorted((row["DDInterID_A"], row["DDInterID_B"])))
            if key in seen:
                continue
            seen.add(key)
            severity = DDINTER_LEVELS.get(row["Level"])
            a, b = ingredients.find(row["Drug_A"]), ingredients.find(row["Drug_B"])
            if severity is None:
                unknown += 1
            elif not (a and b):
                unmatched += 1
            else:
                levels = [{"severity": int(severity), "label": row["Level"].lower(),
                           "label_original": row["Level"], "condition": None}]
                cursor = ingredients.db.execute(
                    "INSERT INTO rules (source, main, plus, severity, levels, language) "
                    "VALUES (?, ?, ?, ?, ?, 'en')",
                    (DDINTER.id, row["Drug_A"], row["Drug_B"], int(severity), json.dumps(levels)))
                insert_pairs(ingredients.db, int(cursor.lastrowid), (a, 2), (b, 2))
                loaded += 1
    return {"pairs": len(seen), "loaded": loaded, "unknown_level": unknown,
            "unmatched_names": unmatched}
