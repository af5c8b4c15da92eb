"""Who a request acts for, once its credentials have been checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinassist.serving.security.roles import Role

AuthMethod = Literal["api-key", "jwt"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user with an API key, or a trusted JWT issuer."""

    name: str
    role: Role
    method: AuthMethod
