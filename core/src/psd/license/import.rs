//! IMPORT SET (seed 003 claim 5): see `docs/licenses.md`.
