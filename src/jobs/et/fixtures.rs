//! Jobs for tests of the ET mapping and of the `SubmitEncryptedJob` RPC.
//!
//! Test-only: its keys are made-up base64, never real key material, and it
//! must never be compiled into the server.

use crate::jobs::et::model::*;

fn caller_block(n: u8) -> Option<Encryption> {
    Some(Encryption {
        mode: "aes-cbc-pkcs7".to_owned(),
        key: format!("d3JhcHBlZC1rZXkt{n:02}AA=="),
        key_md5: format!("bWQ1LW9mLWtleS0{n:02}AA=="),
        initialization_vector: format!("aXYtb2YtZmlsZS0{n:02}AA=="),
        key_bits: 0,
    })
}

fn protection(mode: &str, key_bits: u32) -> Option<Encryption> {
    Some(Encryption { mode: mode.to_owned(), key_bits, ..Default::default() })
}

fn input(n: u8) -> JobInput {
    JobInput {
        key: format!("in/clip-{n}.mp4"),
        frame_rate: "auto".to_owned(),
        resolution: "1920x1080".to_owned(),
        aspect_ratio: "16:9".to_owned(),
        interlaced: "false".to_owned(),
        container: "mp4".to_owned(),
        time_span: Some(TimeSpan { start_time: "00:00:01.000".to_owned(), duration: "30".to_owned() }),
        input_captions: Some(InputCaptions {
            merge_policy: "MergeOverride".to_owned(),
            caption_sources: vec![
                CaptionSource {
                    key: format!("in/clip-{n}.en.srt"),
                    language: "en".to_owned(),
                    time_offset: "-00:00:02.500".to_owned(),
                    label: "English".to_owned(),
                    encryption: caller_block(n + 10),
                },
                CaptionSource {
                    key: format!("in/clip-{n}.fr.srt"),
                    language: "fr".to_owned(),
                    time_offset: "1.5".to_owned(),
                    label: "Français".to_owned(),
                    encryption: None,
                },
            ],
        }),
        encryption: caller_block(n),
    }
}

fn output(n: u8) -> JobOutput {
    JobOutput {
        key: format!("out/{n}.ts"),
        thumbnail_pattern: format!("thumbs/{n}-{{count}}"),
        thumbnail_encryption: protection("aes-ctr", 192),
        rotate: "auto".to_owned(),
        preset_id: "1351620000001-200010".to_owned(),
        segment_duration: "10".to_owned(),
        watermarks: vec![JobWatermark {
            preset_watermark_id: "BottomRight".to_owned(),
            input_key: "marks/logo.png".to_owned(),
            encryption: caller_block(n + 20),
        }],
        album_art: Some(JobAlbumArt {
            merge_policy: "Prepend".to_owned(),
            artwork: vec![Artwork {
                input_key: "art/cover.jpg".to_owned(),
                max_width: "600".to_owned(),
                max_height: "auto".to_owned(),
                sizing_policy: "ShrinkToFit".to_owned(),
                padding_policy: "NoPad".to_owned(),
                album_art_format: "jpg".to_owned(),
                encryption: caller_block(n + 30),
            }],
        }),
        captions: Some(Captions {
            caption_formats: vec![
                CaptionFormat {
                    format: "webvtt".to_owned(),
                    pattern: format!("captions/{n}-{{language}}"),
                    encryption: protection("aes-gcm", 256),
                },
                CaptionFormat { format: "dfxp".to_owned(), pattern: "dfxp-{language}".to_owned(), encryption: None },
            ],
        }),
        encryption: Some(Encryption {
            mode: "aes-cbc-pkcs7".to_owned(),
            key: "Y2FsbGVyLW93bi1rZXk=".to_owned(),
            key_md5: "bWQ1LW9mLWNhbGxlci1rZXk=".to_owned(),
            initialization_vector: "Y2FsbGVyLW93bi1pdg==".to_owned(),
            key_bits: 128,
        }),
    }
}

/// A job in which every field of every shape is set at least once.
pub(crate) fn job_with_every_field() -> CreateJob {
    let mut second = output(2);
    second.encryption = protection("aes-gcm", 128);
    let mut third = output(3);
    third.encryption = protection("s3-aws-kms", 0);
    CreateJob {
        pipeline_id: "1111111111111-abcdef".to_owned(),
        input: Some(input(0)),
        inputs: vec![input(1), input(2)],
        output: Some(output(0)),
        outputs: vec![output(1), second, third],
        output_key_prefix: "jobs/42/".to_owned(),
        playlists: vec![
            Playlist {
                name: "hls".to_owned(),
                format: "HLSv4".to_owned(),
                output_keys: vec!["out/1.ts".to_owned(), "out/2.ts".to_owned()],
                hls_content_protection: Some(HlsContentProtection {
                    method: "aes-128".to_owned(),
                    key: "aGxzLXdyYXBwZWQta2V5".to_owned(),
                    key_md5: "aGxzLWtleS1tZDU=".to_owned(),
                    initialization_vector: "aGxzLWl2LWJ5dGVz".to_owned(),
                    license_acquisition_url: "https://keys.example.com/hls".to_owned(),
                    key_storage_policy: "NoStore".to_owned(),
                }),
                play_ready_drm: None,
            },
            Playlist {
                name: "smooth".to_owned(),
                format: "Smooth".to_owned(),
                output_keys: vec!["out/3.ts".to_owned()],
                hls_content_protection: None,
                play_ready_drm: Some(PlayReadyDrm {
                    format: "microsoft".to_owned(),
                    key: "cGxheXJlYWR5LXdyYXBwZWQ=".to_owned(),
                    key_md5: "cGxheXJlYWR5LW1kNQ==".to_owned(),
                    key_id: "01234567-89ab-cdef-0123-456789abcdef".to_owned(),
                    initialization_vector: "aXYtOGJ5dGU=".to_owned(),
                    license_acquisition_url: "https://license.example.com/rightsmanager.asmx".to_owned(),
                }),
            },
        ],
        user_metadata: [("customer", "acme"), ("ticket", "T-1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}
