"""Medication risk for pharmacists: a versioned knowledge base, drug normalisation, checks.

`kb_build` writes the SQLite knowledge base from `$CLINASSIST_DATA`; `kb` reads it;
`normalise` turns names and codes into ingredients; `checks` and `risk_score` find the
problems; `api` is the HTTP layer (`POST /v1/medication/risk`).
"""
