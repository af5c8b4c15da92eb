-- The medication knowledge base (schema 1). Ingredient names are English where a source gives one.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (id TEXT PRIMARY KEY, manifest TEXT NOT NULL);  -- licence manifest, JSON
CREATE TABLE ingredients (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, ansm_name TEXT);
-- every folded name, synonym and brand; a combination product has one row per ingredient
CREATE TABLE names (name TEXT NOT NULL, ingredient INTEGER NOT NULL REFERENCES ingredients,
                    origin TEXT NOT NULL, PRIMARY KEY (name, ingredient)) WITHOUT ROWID;
CREATE TABLE codes (system TEXT NOT NULL, code TEXT NOT NULL,
                    ingredient INTEGER NOT NULL REFERENCES ingredients,
                    PRIMARY KEY (system, code, ingredient)) WITHOUT ROWID;
CREATE INDEX codes_by_ingredient ON codes (ingredient, system);
CREATE TABLE atc_classes (code TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE ansm_classes (class TEXT NOT NULL, ingredient INTEGER NOT NULL REFERENCES ingredients,
                           PRIMARY KEY (class, ingredient)) WITHOUT ROWID;
CREATE TABLE rules (id INTEGER PRIMARY KEY, source TEXT NOT NULL REFERENCES sources,
                    main TEXT NOT NULL, plus TEXT NOT NULL, severity INTEGER NOT NULL,
                    levels TEXT NOT NULL,  -- JSON [{severity, label, label_original, condition}]
                    mechanism TEXT, management TEXT, language TEXT NOT NULL);
-- a rule expanded to ingredient pairs (a < b); specificity 2 = substance, 1 = class, per side
CREATE TABLE interactions (a INTEGER NOT NULL, b INTEGER NOT NULL, rule INTEGER NOT NULL,
                           specificity INTEGER NOT NULL, PRIMARY KEY (a, b, rule)) WITHOUT ROWID;
