//! What the job benchmarks share: the jobs they submit and how they read
//! their latencies.

use std::time::Duration;

use keybroker::pb;

fn protection(mode: &str) -> Option<pb::Protection> {
    Some(pb::Protection { encryption: Some(pb::Encryption { mode: mode.into(), ..Default::default() }), key_bits: 256 })
}

/// A `validate_only` job on `pipeline_id` with `outputs` AES outputs; with
/// `extras`, thumbnails and two caption files each (4 keys an output).
pub fn job(pipeline_id: &str, outputs: usize, extras: bool) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: pipeline_id.into(),
        input: Some(pb::JobInput { key: "in.mov".into(), ..Default::default() }),
        outputs: (0..outputs)
            .map(|i| pb::JobOutput {
                key: format!("out/{i}.mp4"),
                encryption: protection("aes-cbc-pkcs7"),
                thumbnail_pattern: if extras { format!("t/{i}-{{count}}") } else { String::new() },
                thumbnail_encryption: if extras { protection("aes-gcm") } else { None },
                captions: extras.then(|| pb::Captions {
                    caption_formats: (0..2)
                        .map(|c| pb::CaptionFormat {
                            format: "webvtt".into(),
                            pattern: format!("c/{i}-{c}"),
                            encryption: protection("aes-ctr"),
                        })
                        .collect(),
                }),
                ..Default::default()
            })
            .collect(),
        validate_only: true,
        ..Default::default()
    }
}

/// The `p` quantile (0 to 1) of `samples`.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
