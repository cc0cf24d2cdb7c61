//! Transcoding jobs: what every transcoder shares (the [`place::Place`] of a
//! key block in a job, the request token's [`ticket::Ticket`], the KMS
//! [`preflight`] parts), then one folder per transcoder.

pub mod et;
pub mod mediaconvert;
pub mod place;
pub mod preflight;
pub mod ticket;
