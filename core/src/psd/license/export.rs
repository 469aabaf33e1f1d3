//! EXPORT SET (seed 003 Fig. 5, claim 4): see `docs/licenses.md`.
