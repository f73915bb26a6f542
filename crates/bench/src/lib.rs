//! Evaluation protocols and benchmarks. Each returns a serialisable report; the CLI prints it.

pub mod calibrate;
pub mod index;
pub mod lfw;
pub mod lfw1n;
pub mod probe;
pub mod recall;
pub mod speed;
