//! Whole-system tests live in `tests/`; they start every component against real servers from `testenv`.
