"""How drug names are compared: one folding rule shared by the builder and the resolver."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Counter-ions and hydrates that name a salt form, not a different ingredient (English and French).
SALT_WORDS = frozenset("""
sodium potassium calcium magnesium hydrochloride hydrobromide hcl sulfate sulphate maleate
succinate bitartrate tartrate mesylate mesilate besylate besilate fumarate citrate phosphate
acetate propionate dihydrate monohydrate trihydrate hemihydrate anhydrous trometamol
sodique calcique potassique chlorhydrate dipropionate bromide nitrate lactate gluconate
""".split())


SEPARATORS = re.compile(r"[^a-z0-9+]+")


@lru_cache(maxsize=200_000)  # the KB build folds each of ~130k names several times
def fold(name: str) -> str:
    """Lower case, accents removed, punctuation as spaces: "Ibuprofène" -> "ibuprofene"."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return " ".join(SEPARATORS.sub(" ", ascii_name.lower()).split())


def strip_salt(folded: str) -> str:
    """The name without salt words ("metformin hydrochloride" -> "metformin"); unchanged if
    nothing else would be left ("sodium" stays "sodium")."""
    kept = [word for word in folded.split() if word not in SALT_WORDS and word != "de"]
    return " ".join(kept) if kept else folded
