//! Benchmarks for AI SuperApp; see README.md in this folder.
