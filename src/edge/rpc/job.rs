//! `SubmitEncryptedJob` at the protobuf edge: maps the request to the domain
//! [`JobRequest`] (and back, for the CLI, which reads ET's JSON form of a job
//! and calls the RPC).
//!
//! Owns only the field-for-field mapping and the rules that belong to the
//! wire form (which protobuf fields exclude each other, which empty messages
//! mean "absent"). It must never put a plaintext key anywhere but a
//! [`DataKey`]: PlayReady content keys leave the request straight into
//! zeroizing memory, before anything else can fail, so an early error drops
//! them wiped.

use zeroize::Zeroizing;

use super::parse_optional_key_id;
use crate::custody::broker::BrokerError;
use crate::custody::keys::{DataKey, KeyError};
use crate::edge::pb;
use crate::jobs::et::JobRequest;
use crate::jobs::et::model;
use crate::ledger::RequestToken;

/// Parses a `SubmitEncryptedJob` request into the domain's CreateJob spec.
///
/// Empty protobuf messages become `None` (proto3 cannot tell an empty
/// message from an absent one, and ET treats `{}` differently from no
/// element), so callers may send defaults without asking for anything.
///
/// # Errors
/// [`BrokerError::Invalid`] naming `playlists[i].play_ready_drm` when both
/// `content_key` and `key` are given, or
/// `playlists[i].play_ready_drm.content_key` when the content key is not
/// 16, 24 or 32 bytes; [`BrokerError::KeyId`] for a malformed `kms_key_id`.
pub fn job_request_from_proto(mut req: pb::SubmitEncryptedJobRequest) -> Result<JobRequest, BrokerError> {
    // First, and infallibly: move every content key into zeroizing storage.
    let content_keys = take_content_keys(&mut req.playlists);
    let kms_key_id = parse_optional_key_id(&req.kms_key_id, "kms_key_id")?;
    let request_token = RequestToken::parse_optional(&req.request_token, "request_token")?;

    let mut playready_content_keys = std::collections::BTreeMap::new();
    for (index, mut content_key) in content_keys {
        let drm_field = format!("playlists[{index}].play_ready_drm");
        let wrapped_given = req.playlists[index].play_ready_drm.as_ref().is_some_and(|drm| !drm.key.is_empty());
        if wrapped_given {
            return Err(KeyError::invalid(drm_field, "give content_key or key, not both").into());
        }
        // Moves the buffer, never copies it; a rejected key is wiped by `from_vec`.
        let key = DataKey::from_vec(std::mem::take(&mut *content_key), &format!("{drm_field}.content_key"))?;
        playready_content_keys.insert(index, key);
    }

    let playlists = req
        .playlists
        .into_iter()
        .enumerate()
        .map(|(index, p)| playlist_from_proto(p, playready_content_keys.contains_key(&index)));
    let job = model::CreateJob {
        pipeline_id: req.pipeline_id,
        input: req.input.and_then(job_input_from_proto),
        inputs: req.inputs.into_iter().filter_map(job_input_from_proto).collect(),
        output: req.output.and_then(job_output_from_proto),
        outputs: req.outputs.into_iter().filter_map(job_output_from_proto).collect(),
        output_key_prefix: req.output_key_prefix,
        playlists: playlists.collect(),
        user_metadata: req.user_metadata.into_iter().collect(),
    };
    Ok(JobRequest { job, playready_content_keys, kms_key_id, validate_only: req.validate_only, request_token })
}

/// The RPC request for a job spec, so the CLI can submit ET's JSON form.
/// PlayReady blocks travel as their wrapped `key` text: the CLI never
/// handles plaintext content keys.
pub fn job_request_to_proto(job: &model::CreateJob, validate_only: bool) -> pb::SubmitEncryptedJobRequest {
    pb::SubmitEncryptedJobRequest {
        pipeline_id: job.pipeline_id.clone(),
        input: job.input.as_ref().map(job_input_to_proto),
        inputs: job.inputs.iter().map(job_input_to_proto).collect(),
        output: job.output.as_ref().map(job_output_to_proto),
        outputs: job.outputs.iter().map(job_output_to_proto).collect(),
        output_key_prefix: job.output_key_prefix.clone(),
        playlists: job.playlists.iter().map(playlist_to_proto).collect(),
        user_metadata: job.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        validate_only,
        kms_key_id: String::new(),
        request_token: String::new(),
    }
}

/// Moves each non-empty PlayReady `content_key` out of the request, by
/// playlist index.
fn take_content_keys(playlists: &mut [pb::Playlist]) -> Vec<(usize, Zeroizing<Vec<u8>>)> {
    playlists
        .iter_mut()
        .enumerate()
        .filter_map(|(index, playlist)| {
            let drm = playlist.play_ready_drm.as_mut()?;
            (!drm.content_key.is_empty()).then(|| (index, Zeroizing::new(std::mem::take(&mut drm.content_key))))
        })
        .collect()
}

/// `Some(value)` unless it is the type's default (an empty message).
fn unless_default<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

fn encryption_from_proto(block: Option<pb::Encryption>) -> Option<model::Encryption> {
    let block = block?;
    let encryption = model::Encryption {
        mode: block.mode,
        key: block.key,
        key_md5: block.key_md5,
        initialization_vector: block.initialization_vector,
        key_bits: 0,
    };
    (!encryption.is_unset()).then_some(encryption)
}

fn protection_from_proto(protection: Option<pb::Protection>) -> Option<model::Encryption> {
    let protection = protection?;
    let mut encryption = encryption_from_proto(protection.encryption)?;
    encryption.key_bits = protection.key_bits;
    Some(encryption)
}

fn time_span_from_proto(span: pb::TimeSpan) -> Option<model::TimeSpan> {
    unless_default(model::TimeSpan { start_time: span.start_time, duration: span.duration })
}

fn caption_source_from_proto(source: pb::CaptionSource) -> Option<model::CaptionSource> {
    unless_default(model::CaptionSource {
        key: source.key,
        language: source.language,
        time_offset: source.time_offset,
        label: source.label,
        encryption: encryption_from_proto(source.encryption),
    })
}

fn input_captions_from_proto(captions: pb::InputCaptions) -> Option<model::InputCaptions> {
    unless_default(model::InputCaptions {
        merge_policy: captions.merge_policy,
        caption_sources: captions.caption_sources.into_iter().filter_map(caption_source_from_proto).collect(),
    })
}

fn job_input_from_proto(input: pb::JobInput) -> Option<model::JobInput> {
    unless_default(model::JobInput {
        key: input.key,
        frame_rate: input.frame_rate,
        resolution: input.resolution,
        aspect_ratio: input.aspect_ratio,
        interlaced: input.interlaced,
        container: input.container,
        time_span: input.time_span.and_then(time_span_from_proto),
        input_captions: input.input_captions.and_then(input_captions_from_proto),
        encryption: encryption_from_proto(input.encryption),
    })
}

fn watermark_from_proto(watermark: pb::JobWatermark) -> Option<model::JobWatermark> {
    unless_default(model::JobWatermark {
        preset_watermark_id: watermark.preset_watermark_id,
        input_key: watermark.input_key,
        encryption: encryption_from_proto(watermark.encryption),
    })
}

fn artwork_from_proto(artwork: pb::Artwork) -> Option<model::Artwork> {
    unless_default(model::Artwork {
        input_key: artwork.input_key,
        max_width: artwork.max_width,
        max_height: artwork.max_height,
        sizing_policy: artwork.sizing_policy,
        padding_policy: artwork.padding_policy,
        album_art_format: artwork.album_art_format,
        encryption: encryption_from_proto(artwork.encryption),
    })
}

fn album_art_from_proto(album_art: pb::JobAlbumArt) -> Option<model::JobAlbumArt> {
    unless_default(model::JobAlbumArt {
        merge_policy: album_art.merge_policy,
        artwork: album_art.artwork.into_iter().filter_map(artwork_from_proto).collect(),
    })
}

fn caption_format_from_proto(format: pb::CaptionFormat) -> Option<model::CaptionFormat> {
    unless_default(model::CaptionFormat {
        format: format.format,
        pattern: format.pattern,
        encryption: protection_from_proto(format.encryption),
    })
}

fn captions_from_proto(captions: pb::Captions) -> Option<model::Captions> {
    unless_default(model::Captions {
        caption_formats: captions.caption_formats.into_iter().filter_map(caption_format_from_proto).collect(),
    })
}

fn job_output_from_proto(output: pb::JobOutput) -> Option<model::JobOutput> {
    unless_default(model::JobOutput {
        key: output.key,
        thumbnail_pattern: output.thumbnail_pattern,
        thumbnail_encryption: protection_from_proto(output.thumbnail_encryption),
        rotate: output.rotate,
        preset_id: output.preset_id,
        segment_duration: output.segment_duration,
        watermarks: output.watermarks.into_iter().filter_map(watermark_from_proto).collect(),
        album_art: output.album_art.and_then(album_art_from_proto),
        captions: output.captions.and_then(captions_from_proto),
        encryption: protection_from_proto(output.encryption),
    })
}

fn hls_from_proto(hls: pb::HlsContentProtection) -> Option<model::HlsContentProtection> {
    unless_default(model::HlsContentProtection {
        method: hls.method,
        key: hls.key,
        key_md5: hls.key_md5,
        initialization_vector: hls.initialization_vector,
        license_acquisition_url: hls.license_acquisition_url,
        key_storage_policy: hls.key_storage_policy,
    })
}

/// `has_content_key`: the block's content key was taken out already; it
/// keeps the block present even when every text field is empty.
fn play_ready_from_proto(drm: pb::PlayReadyDrm, has_content_key: bool) -> Option<model::PlayReadyDrm> {
    let drm = model::PlayReadyDrm {
        format: drm.format,
        key: drm.key,
        key_md5: drm.key_md5,
        key_id: drm.key_id,
        initialization_vector: drm.initialization_vector,
        license_acquisition_url: drm.license_acquisition_url,
    };
    if has_content_key { Some(drm) } else { unless_default(drm) }
}

fn playlist_from_proto(playlist: pb::Playlist, has_content_key: bool) -> model::Playlist {
    model::Playlist {
        name: playlist.name,
        format: playlist.format,
        output_keys: playlist.output_keys,
        hls_content_protection: playlist.hls_content_protection.and_then(hls_from_proto),
        play_ready_drm: playlist.play_ready_drm.and_then(|drm| play_ready_from_proto(drm, has_content_key)),
    }
}

fn encryption_to_proto(encryption: &model::Encryption) -> pb::Encryption {
    pb::Encryption {
        mode: encryption.mode.clone(),
        key: encryption.key.clone(),
        key_md5: encryption.key_md5.clone(),
        initialization_vector: encryption.initialization_vector.clone(),
    }
}

fn protection_to_proto(encryption: &model::Encryption) -> pb::Protection {
    pb::Protection { encryption: Some(encryption_to_proto(encryption)), key_bits: encryption.key_bits }
}

fn time_span_to_proto(span: &model::TimeSpan) -> pb::TimeSpan {
    pb::TimeSpan { start_time: span.start_time.clone(), duration: span.duration.clone() }
}

fn caption_source_to_proto(source: &model::CaptionSource) -> pb::CaptionSource {
    pb::CaptionSource {
        key: source.key.clone(),
        language: source.language.clone(),
        time_offset: source.time_offset.clone(),
        label: source.label.clone(),
        encryption: source.encryption.as_ref().map(encryption_to_proto),
    }
}

fn input_captions_to_proto(captions: &model::InputCaptions) -> pb::InputCaptions {
    pb::InputCaptions {
        merge_policy: captions.merge_policy.clone(),
        caption_sources: captions.caption_sources.iter().map(caption_source_to_proto).collect(),
    }
}

fn job_input_to_proto(input: &model::JobInput) -> pb::JobInput {
    pb::JobInput {
        key: input.key.clone(),
        frame_rate: input.frame_rate.clone(),
        resolution: input.resolution.clone(),
        aspect_ratio: input.aspect_ratio.clone(),
        interlaced: input.interlaced.clone(),
        container: input.container.clone(),
        time_span: input.time_span.as_ref().map(time_span_to_proto),
        input_captions: input.input_captions.as_ref().map(input_captions_to_proto),
        encryption: input.encryption.as_ref().map(encryption_to_proto),
    }
}

fn watermark_to_proto(watermark: &model::JobWatermark) -> pb::JobWatermark {
    pb::JobWatermark {
        preset_watermark_id: watermark.preset_watermark_id.clone(),
        input_key: watermark.input_key.clone(),
        encryption: watermark.encryption.as_ref().map(encryption_to_proto),
    }
}

fn artwork_to_proto(artwork: &model::Artwork) -> pb::Artwork {
    pb::Artwork {
        input_key: artwork.input_key.clone(),
        max_width: artwork.max_width.clone(),
        max_height: artwork.max_height.clone(),
        sizing_policy: artwork.sizing_policy.clone(),
        padding_policy: artwork.padding_policy.clone(),
        album_art_format: artwork.album_art_format.clone(),
        encryption: artwork.encryption.as_ref().map(encryption_to_proto),
    }
}

fn album_art_to_proto(album_art: &model::JobAlbumArt) -> pb::JobAlbumArt {
    pb::JobAlbumArt {
        merge_policy: album_art.merge_policy.clone(),
        artwork: album_art.artwork.iter().map(artwork_to_proto).collect(),
    }
}

fn caption_format_to_proto(format: &model::CaptionFormat) -> pb::CaptionFormat {
    pb::CaptionFormat {
        format: format.format.clone(),
        pattern: format.pattern.clone(),
        encryption: format.encryption.as_ref().map(protection_to_proto),
    }
}

fn captions_to_proto(captions: &model::Captions) -> pb::Captions {
    pb::Captions { caption_formats: captions.caption_formats.iter().map(caption_format_to_proto).collect() }
}

fn job_output_to_proto(output: &model::JobOutput) -> pb::JobOutput {
    pb::JobOutput {
        key: output.key.clone(),
        thumbnail_pattern: output.thumbnail_pattern.clone(),
        thumbnail_encryption: output.thumbnail_encryption.as_ref().map(protection_to_proto),
        rotate: output.rotate.clone(),
        preset_id: output.preset_id.clone(),
        segment_duration: output.segment_duration.clone(),
        watermarks: output.watermarks.iter().map(watermark_to_proto).collect(),
        album_art: output.album_art.as_ref().map(album_art_to_proto),
        captions: output.captions.as_ref().map(captions_to_proto),
        encryption: output.encryption.as_ref().map(protection_to_proto),
    }
}

fn hls_to_proto(hls: &model::HlsContentProtection) -> pb::HlsContentProtection {
    pb::HlsContentProtection {
        method: hls.method.clone(),
        key: hls.key.clone(),
        key_md5: hls.key_md5.clone(),
        initialization_vector: hls.initialization_vector.clone(),
        license_acquisition_url: hls.license_acquisition_url.clone(),
        key_storage_policy: hls.key_storage_policy.clone(),
    }
}

fn play_ready_to_proto(drm: &model::PlayReadyDrm) -> pb::PlayReadyDrm {
    pb::PlayReadyDrm {
        format: drm.format.clone(),
        content_key: Vec::new(),
        key: drm.key.clone(),
        key_md5: drm.key_md5.clone(),
        key_id: drm.key_id.clone(),
        initialization_vector: drm.initialization_vector.clone(),
        license_acquisition_url: drm.license_acquisition_url.clone(),
    }
}

fn playlist_to_proto(playlist: &model::Playlist) -> pb::Playlist {
    pb::Playlist {
        name: playlist.name.clone(),
        format: playlist.format.clone(),
        output_keys: playlist.output_keys.clone(),
        hls_content_protection: playlist.hls_content_protection.as_ref().map(hls_to_proto),
        play_ready_drm: playlist.play_ready_drm.as_ref().map(play_ready_to_proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::et::fixtures::job_with_every_field;

    fn playready_request(content_key: Vec<u8>, key: &str) -> pb::SubmitEncryptedJobRequest {
        pb::SubmitEncryptedJobRequest {
            pipeline_id: "1111111111111-abcdef".to_owned(),
            playlists: vec![pb::Playlist {
                name: "dash".to_owned(),
                format: "MPEG-DASH".to_owned(),
                output_keys: vec!["out.mp4".to_owned()],
                hls_content_protection: None,
                play_ready_drm: Some(pb::PlayReadyDrm {
                    format: "microsoft".to_owned(),
                    content_key,
                    key: key.to_owned(),
                    key_id: "0123456789abcdef0123456789abcdef".to_owned(),
                    license_acquisition_url: "https://license.example.com/".to_owned(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_job_with_every_field_round_trips_through_the_proto() {
        let job = job_with_every_field();
        let proto = job_request_to_proto(&job, true);
        assert!(proto.validate_only);
        let parsed = job_request_from_proto(proto).unwrap();
        assert_eq!(parsed.job, job);
        assert!(parsed.validate_only);
        assert!(parsed.playready_content_keys.is_empty());
        assert!(parsed.kms_key_id.is_none());
    }

    #[test]
    fn protections_carry_key_bits_and_caller_blocks_do_not() {
        let job = job_with_every_field();
        let proto = job_request_to_proto(&job, false);
        let output = &proto.outputs[0];
        let expected_bits = job.outputs[0].encryption.as_ref().unwrap().key_bits;
        assert_ne!(expected_bits, 0, "the fixture must exercise key_bits");
        assert_eq!(output.encryption.as_ref().unwrap().key_bits, expected_bits);
    }

    #[test]
    fn a_content_key_goes_into_a_data_key_at_its_playlist_index() {
        let mut req = playready_request(vec![7u8; 16], "");
        req.playlists.insert(0, pb::Playlist { name: "hls".to_owned(), ..Default::default() });
        req.kms_key_id = "alias/media".to_owned();
        let parsed = job_request_from_proto(req).unwrap();
        let key = &parsed.playready_content_keys[&1];
        assert_eq!(key.expose_secret(), [7u8; 16]);
        assert_eq!(parsed.playready_content_keys.len(), 1);
        let drm = parsed.job.playlists[1].play_ready_drm.as_ref().unwrap();
        assert!(drm.key.is_empty());
        assert_eq!(drm.format, "microsoft");
        assert!(parsed.kms_key_id.is_some());
    }

    #[test]
    fn a_content_key_alone_keeps_the_playready_block() {
        let mut req = playready_request(vec![1u8; 32], "");
        req.playlists[0].play_ready_drm = Some(pb::PlayReadyDrm { content_key: vec![1u8; 32], ..Default::default() });
        let parsed = job_request_from_proto(req).unwrap();
        assert_eq!(parsed.job.playlists[0].play_ready_drm, Some(model::PlayReadyDrm::default()));
    }

    #[test]
    fn a_content_key_of_the_wrong_length_names_its_field() {
        let err = job_request_from_proto(playready_request(vec![0u8; 15], "")).unwrap_err();
        assert!(matches!(err, BrokerError::Invalid(KeyError::Invalid(_))), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("playlists[0].play_ready_drm.content_key: "), "{text}");
        assert!(text.contains("16, 24 or 32"), "{text}");
    }

    #[test]
    fn content_key_and_key_exclude_each_other() {
        let err = job_request_from_proto(playready_request(vec![0u8; 16], "AAAA")).unwrap_err();
        assert_eq!(err.to_string(), "playlists[0].play_ready_drm: give content_key or key, not both", "{err:?}");
    }

    #[test]
    fn empty_messages_mean_absent() {
        let req = pb::SubmitEncryptedJobRequest {
            pipeline_id: "1111111111111-abcdef".to_owned(),
            input: Some(pb::JobInput {
                key: "in.mp4".to_owned(),
                time_span: Some(pb::TimeSpan::default()),
                input_captions: Some(pb::InputCaptions::default()),
                encryption: Some(pb::Encryption::default()),
                ..Default::default()
            }),
            inputs: vec![pb::JobInput::default()],
            output: Some(pb::JobOutput {
                key: "out.mp4".to_owned(),
                encryption: Some(pb::Protection { encryption: None, key_bits: 128 }),
                thumbnail_encryption: Some(pb::Protection { encryption: Some(pb::Encryption::default()), key_bits: 0 }),
                album_art: Some(pb::JobAlbumArt::default()),
                captions: Some(pb::Captions::default()),
                ..Default::default()
            }),
            playlists: vec![pb::Playlist {
                name: "p".to_owned(),
                hls_content_protection: Some(pb::HlsContentProtection::default()),
                play_ready_drm: Some(pb::PlayReadyDrm::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let job = job_request_from_proto(req).unwrap().job;
        assert_eq!(job.input, Some(model::JobInput { key: "in.mp4".to_owned(), ..Default::default() }));
        assert!(job.inputs.is_empty());
        assert_eq!(job.output, Some(model::JobOutput { key: "out.mp4".to_owned(), ..Default::default() }));
        assert_eq!(job.playlists, vec![model::Playlist { name: "p".to_owned(), ..Default::default() }]);
    }

    #[test]
    fn a_malformed_kms_key_id_is_refused() {
        let mut req = playready_request(vec![0u8; 16], "");
        req.kms_key_id = "alias/a b".to_owned();
        let err = job_request_from_proto(req).unwrap_err();
        assert!(matches!(err, BrokerError::KeyId(_)), "{err:?}");
        assert!(err.to_string().starts_with("kms_key_id: "), "{err}");
    }

    #[test]
    fn user_metadata_is_kept() {
        let mut req = playready_request(Vec::new(), "AAAA");
        req.user_metadata.insert("b".to_owned(), "2".to_owned());
        req.user_metadata.insert("a".to_owned(), "1".to_owned());
        let job = job_request_from_proto(req).unwrap().job;
        assert_eq!(
            job.user_metadata.into_iter().collect::<Vec<_>>(),
            [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())]
        );
    }
}
