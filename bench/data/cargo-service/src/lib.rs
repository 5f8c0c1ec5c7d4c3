//! Benchmark input: only the lockfile matters.
