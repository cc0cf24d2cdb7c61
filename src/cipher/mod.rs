//! File encryption in Elastic Transcoder's formats (placeholder being written).
