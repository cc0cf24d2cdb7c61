//! Transcoding jobs: one folder per transcoder.

pub mod et;
