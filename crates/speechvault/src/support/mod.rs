//! Small helpers every layer uses and that talk to no outside system: byte units, secrets that
//! never print, the stop flag, progress, text, the local file system, encodings.

pub mod encoding;
pub(crate) mod fs;
pub mod interrupt;
pub mod progress;
pub mod secret;
pub(crate) mod text;
pub mod units;
