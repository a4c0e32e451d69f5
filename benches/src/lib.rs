//! Benchmarks of the workspace crates and the compare program against cryptsetup.
