//! Our model to the SDK: the CreateJob request as
//! `aws-sdk-elastictranscoder`'s fluent builder, member for member.
//!
//! Owns only shape mapping; it validates nothing and talks to no network.
//! The model it maps holds wrapped keys only, and this module must never
//! see, take or produce a plaintext key.

use std::collections::HashMap;

use aws_sdk_elastictranscoder::Client;
use aws_sdk_elastictranscoder::operation::create_job::builders::CreateJobFluentBuilder;
use aws_sdk_elastictranscoder::types;

use crate::jobs::et::model;

/// The SDK's CreateJob call for `job`, ready to `send()`.
///
/// The SDK then serialises the same rest-json body as
/// `serde_json::to_value(job)`, so the body the broker reports
/// (`create_job_request_json`) is the body ET receives. Empty strings,
/// lists and maps are left unset because the model omits them;
/// `PipelineId` is always set because the model always writes it.
pub fn create_job_request(client: &Client, job: &model::CreateJob) -> CreateJobFluentBuilder {
    let user_metadata: Option<HashMap<String, String>> = (!job.user_metadata.is_empty())
        .then(|| job.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    client
        .create_job()
        .pipeline_id(job.pipeline_id.clone())
        .set_input(job.input.as_ref().map(job_input))
        .set_inputs(non_empty_list(&job.inputs, job_input))
        .set_output(job.output.as_ref().map(create_job_output))
        .set_outputs(non_empty_list(&job.outputs, create_job_output))
        .set_output_key_prefix(non_empty(&job.output_key_prefix))
        .set_playlists(non_empty_list(&job.playlists, create_job_playlist))
        .set_user_metadata(user_metadata)
}

/// `None` for an empty string: the model writes no member for it.
pub(super) fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// `None` for an empty list: the model writes no member for it.
fn non_empty_list<T, U>(items: &[T], map: impl Fn(&T) -> U) -> Option<Vec<U>> {
    (!items.is_empty()).then(|| items.iter().map(map).collect())
}

fn encryption(encryption: &model::Encryption) -> types::Encryption {
    types::Encryption::builder()
        .set_mode(non_empty(&encryption.mode))
        .set_key(non_empty(&encryption.key))
        .set_key_md5(non_empty(&encryption.key_md5))
        .set_initialization_vector(non_empty(&encryption.initialization_vector))
        .build()
}

fn time_span(span: &model::TimeSpan) -> types::TimeSpan {
    types::TimeSpan::builder()
        .set_start_time(non_empty(&span.start_time))
        .set_duration(non_empty(&span.duration))
        .build()
}

fn caption_source(source: &model::CaptionSource) -> types::CaptionSource {
    types::CaptionSource::builder()
        .set_key(non_empty(&source.key))
        .set_language(non_empty(&source.language))
        .set_time_offset(non_empty(&source.time_offset))
        .set_label(non_empty(&source.label))
        .set_encryption(source.encryption.as_ref().map(encryption))
        .build()
}

fn input_captions(captions: &model::InputCaptions) -> types::InputCaptions {
    types::InputCaptions::builder()
        .set_merge_policy(non_empty(&captions.merge_policy))
        .set_caption_sources(non_empty_list(&captions.caption_sources, caption_source))
        .build()
}

fn job_input(input: &model::JobInput) -> types::JobInput {
    types::JobInput::builder()
        .set_key(non_empty(&input.key))
        .set_frame_rate(non_empty(&input.frame_rate))
        .set_resolution(non_empty(&input.resolution))
        .set_aspect_ratio(non_empty(&input.aspect_ratio))
        .set_interlaced(non_empty(&input.interlaced))
        .set_container(non_empty(&input.container))
        .set_encryption(input.encryption.as_ref().map(encryption))
        .set_time_span(input.time_span.as_ref().map(time_span))
        .set_input_captions(input.input_captions.as_ref().map(input_captions))
        .build()
}

fn watermark(watermark: &model::JobWatermark) -> types::JobWatermark {
    types::JobWatermark::builder()
        .set_preset_watermark_id(non_empty(&watermark.preset_watermark_id))
        .set_input_key(non_empty(&watermark.input_key))
        .set_encryption(watermark.encryption.as_ref().map(encryption))
        .build()
}

fn artwork(artwork: &model::Artwork) -> types::Artwork {
    types::Artwork::builder()
        .set_input_key(non_empty(&artwork.input_key))
        .set_max_width(non_empty(&artwork.max_width))
        .set_max_height(non_empty(&artwork.max_height))
        .set_sizing_policy(non_empty(&artwork.sizing_policy))
        .set_padding_policy(non_empty(&artwork.padding_policy))
        .set_album_art_format(non_empty(&artwork.album_art_format))
        .set_encryption(artwork.encryption.as_ref().map(encryption))
        .build()
}

fn album_art(album_art: &model::JobAlbumArt) -> types::JobAlbumArt {
    types::JobAlbumArt::builder()
        .set_merge_policy(non_empty(&album_art.merge_policy))
        .set_artwork(non_empty_list(&album_art.artwork, artwork))
        .build()
}

fn caption_format(format: &model::CaptionFormat) -> types::CaptionFormat {
    types::CaptionFormat::builder()
        .set_format(non_empty(&format.format))
        .set_pattern(non_empty(&format.pattern))
        .set_encryption(format.encryption.as_ref().map(encryption))
        .build()
}

fn captions(captions: &model::Captions) -> types::Captions {
    types::Captions::builder().set_caption_formats(non_empty_list(&captions.caption_formats, caption_format)).build()
}

fn create_job_output(output: &model::JobOutput) -> types::CreateJobOutput {
    types::CreateJobOutput::builder()
        .set_key(non_empty(&output.key))
        .set_thumbnail_pattern(non_empty(&output.thumbnail_pattern))
        .set_thumbnail_encryption(output.thumbnail_encryption.as_ref().map(encryption))
        .set_rotate(non_empty(&output.rotate))
        .set_preset_id(non_empty(&output.preset_id))
        .set_segment_duration(non_empty(&output.segment_duration))
        .set_watermarks(non_empty_list(&output.watermarks, watermark))
        .set_album_art(output.album_art.as_ref().map(album_art))
        .set_captions(output.captions.as_ref().map(captions))
        .set_encryption(output.encryption.as_ref().map(encryption))
        .build()
}

fn hls_content_protection(hls: &model::HlsContentProtection) -> types::HlsContentProtection {
    types::HlsContentProtection::builder()
        .set_method(non_empty(&hls.method))
        .set_key(non_empty(&hls.key))
        .set_key_md5(non_empty(&hls.key_md5))
        .set_initialization_vector(non_empty(&hls.initialization_vector))
        .set_license_acquisition_url(non_empty(&hls.license_acquisition_url))
        .set_key_storage_policy(non_empty(&hls.key_storage_policy))
        .build()
}

fn play_ready_drm(drm: &model::PlayReadyDrm) -> types::PlayReadyDrm {
    types::PlayReadyDrm::builder()
        .set_format(non_empty(&drm.format))
        .set_key(non_empty(&drm.key))
        .set_key_md5(non_empty(&drm.key_md5))
        .set_key_id(non_empty(&drm.key_id))
        .set_initialization_vector(non_empty(&drm.initialization_vector))
        .set_license_acquisition_url(non_empty(&drm.license_acquisition_url))
        .build()
}

fn create_job_playlist(playlist: &model::Playlist) -> types::CreateJobPlaylist {
    types::CreateJobPlaylist::builder()
        .set_name(non_empty(&playlist.name))
        .set_format(non_empty(&playlist.format))
        .set_output_keys(non_empty_list(&playlist.output_keys, String::clone))
        .set_hls_content_protection(playlist.hls_content_protection.as_ref().map(hls_content_protection))
        .set_play_ready_drm(playlist.play_ready_drm.as_ref().map(play_ready_drm))
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_elastictranscoder::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_elastictranscoder::config::{
        BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::jobs::et::fixtures::job_with_every_field;

    /// Records the request body the SDK serialised, then stops the call
    /// before anything is sent.
    #[derive(Debug, Clone, Default)]
    struct CaptureBody(Arc<Mutex<Option<Vec<u8>>>>);

    impl Intercept for CaptureBody {
        fn name(&self) -> &'static str {
            "CaptureBody"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _runtime_components: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            *self.0.lock().unwrap() = context.request().body().bytes().map(<[u8]>::to_vec);
            Err("captured by the test; not sent".into())
        }
    }

    /// The body and path the SDK would POST for `job`.
    async fn sdk_body(job: &model::CreateJob) -> Value {
        let capture = CaptureBody::default();
        let config = aws_sdk_elastictranscoder::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .interceptor(capture.clone())
            .build();
        let client = Client::from_conf(config);
        let err = create_job_request(&client, job).send().await.unwrap_err();
        let body = capture.0.lock().unwrap().take().unwrap_or_else(|| panic!("no body captured: {err:?}"));
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn the_sdk_serialises_the_body_the_model_does() {
        let job = job_with_every_field();
        let expected = serde_json::to_value(&job).unwrap();
        // Guard the fixture: every member of CreateJob is present.
        for member in
            ["PipelineId", "Input", "Inputs", "Output", "Outputs", "OutputKeyPrefix", "Playlists", "UserMetadata"]
        {
            assert!(expected.get(member).is_some(), "fixture lacks {member}");
        }
        assert_eq!(sdk_body(&job).await, expected);
    }

    #[tokio::test]
    async fn empty_members_stay_out_of_the_sdk_body() {
        let job = model::CreateJob {
            pipeline_id: "1111111111111-abcdef".to_owned(),
            input: Some(model::JobInput {
                key: "in.mp4".to_owned(),
                time_span: Some(model::TimeSpan::default()),
                ..Default::default()
            }),
            outputs: vec![model::JobOutput {
                key: "out.mp4".to_owned(),
                captions: Some(model::Captions::default()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = sdk_body(&job).await;
        assert_eq!(body, serde_json::to_value(&job).unwrap());
        assert_eq!(
            body,
            json!({
                "PipelineId": "1111111111111-abcdef",
                "Input": {"Key": "in.mp4", "TimeSpan": {}},
                "Outputs": [{"Key": "out.mp4", "Captions": {}}],
            })
        );
    }
}
