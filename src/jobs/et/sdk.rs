//! The bridge between the domain model and `aws-sdk-elastictranscoder`: the
//! CreateJob request as the SDK's fluent builder, ET's answered `Job` as
//! ET's rest-json, and the pipeline facts the broker checks keys against.
//!
//! Owns only shape mapping; it validates nothing and talks to no network.
//! The model it maps holds wrapped keys only, and this module must never
//! see, take or produce a plaintext key.

use std::collections::HashMap;

use aws_sdk_elastictranscoder::Client;
use aws_sdk_elastictranscoder::operation::create_job::builders::CreateJobFluentBuilder;
use aws_sdk_elastictranscoder::types;
use serde_json::{Map, Value};

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

/// ET's `Job` as ET's own rest-json (PascalCase), for the RPC's `job_json`:
/// callers read the same document ET's API reference describes. Fields the
/// SDK did not receive are left out, and so are the members ET deprecated
/// (`Composition`, `Captions.MergePolicy`, `Captions.CaptionSources`), which
/// the jobs the broker submits never set.
pub fn job_to_json(job: &types::Job) -> Value {
    JsonObject::default()
        .text("Id", job.id())
        .text("Arn", job.arn())
        .text("PipelineId", job.pipeline_id())
        .text("Status", job.status())
        .text("OutputKeyPrefix", job.output_key_prefix())
        .object("Input", job.input(), job_input_json)
        .array("Inputs", job.inputs.as_deref(), job_input_json)
        .object("Output", job.output(), job_output_json)
        .array("Outputs", job.outputs.as_deref(), job_output_json)
        .array("Playlists", job.playlists.as_deref(), playlist_json)
        .strings_map("UserMetadata", job.user_metadata())
        .object("Timing", job.timing(), timing_json)
        .build()
}

/// What the broker needs to know of a pipeline to wrap keys ET can use:
/// the KMS key must be the pipeline's and live in the pipeline's region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineInfo {
    /// The pipeline id.
    pub id: String,
    /// The pipeline ARN.
    pub arn: String,
    /// The pipeline's `AwsKmsKeyArn`; `None` means S3's default key.
    pub kms_key_arn: Option<String>,
    /// The IAM role ET assumes, which must be a user of the KMS key.
    pub role: String,
    /// The region named in the ARN, when it is a well-formed ET pipeline ARN.
    pub region: Option<String>,
}

/// Extracts [`PipelineInfo`] from ET's `ReadPipeline` answer, so the rest
/// of the broker does not depend on SDK types.
pub fn pipeline_info(pipeline: &types::Pipeline) -> PipelineInfo {
    let arn = pipeline.arn().unwrap_or_default().to_owned();
    PipelineInfo {
        id: pipeline.id().unwrap_or_default().to_owned(),
        region: region_of_pipeline_arn(&arn),
        arn,
        kms_key_arn: pipeline.aws_kms_key_arn().and_then(non_empty),
        role: pipeline.role().unwrap_or_default().to_owned(),
    }
}

/// The region of `arn:PARTITION:elastictranscoder:REGION:ACCOUNT:pipeline/ID`.
fn region_of_pipeline_arn(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("elastictranscoder"), Some(region), Some(_account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if partition.is_empty() || !resource.starts_with("pipeline/") {
        return None;
    }
    non_empty(region)
}

/// `None` for an empty string: the model writes no member for it.
fn non_empty(text: &str) -> Option<String> {
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

/// A JSON object built member by member, each member left out when absent:
/// one place for the "skip `None`" rule that every ET shape below follows.
#[derive(Default)]
struct JsonObject(Map<String, Value>);

impl JsonObject {
    fn member(mut self, name: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), value);
        }
        self
    }

    fn text(self, name: &str, value: Option<&str>) -> Self {
        self.member(name, value.map(Value::from))
    }

    fn integer(self, name: &str, value: Option<i64>) -> Self {
        self.member(name, value.map(Value::from))
    }

    fn object<T>(self, name: &str, value: Option<&T>, to_json: fn(&T) -> Value) -> Self {
        self.member(name, value.map(to_json))
    }

    fn array<T>(self, name: &str, values: Option<&[T]>, to_json: fn(&T) -> Value) -> Self {
        self.member(name, values.map(|values| values.iter().map(to_json).collect()))
    }

    fn strings(self, name: &str, values: Option<&[String]>) -> Self {
        self.member(name, values.map(|values| values.iter().map(String::as_str).map(Value::from).collect()))
    }

    fn strings_map(self, name: &str, map: Option<&HashMap<String, String>>) -> Self {
        let object = |map: &HashMap<String, String>| {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
        };
        self.member(name, map.map(object))
    }

    fn build(self) -> Value {
        Value::Object(self.0)
    }
}

fn encryption_json(encryption: &types::Encryption) -> Value {
    JsonObject::default()
        .text("Mode", encryption.mode())
        .text("Key", encryption.key())
        .text("KeyMd5", encryption.key_md5())
        .text("InitializationVector", encryption.initialization_vector())
        .build()
}

fn time_span_json(span: &types::TimeSpan) -> Value {
    JsonObject::default().text("StartTime", span.start_time()).text("Duration", span.duration()).build()
}

fn caption_source_json(source: &types::CaptionSource) -> Value {
    JsonObject::default()
        .text("Key", source.key())
        .text("Language", source.language())
        .text("TimeOffset", source.time_offset())
        .text("Label", source.label())
        .object("Encryption", source.encryption(), encryption_json)
        .build()
}

fn input_captions_json(captions: &types::InputCaptions) -> Value {
    JsonObject::default()
        .text("MergePolicy", captions.merge_policy())
        .array("CaptionSources", captions.caption_sources.as_deref(), caption_source_json)
        .build()
}

fn detected_properties_json(properties: &types::DetectedProperties) -> Value {
    JsonObject::default()
        .integer("Width", properties.width().map(i64::from))
        .integer("Height", properties.height().map(i64::from))
        .text("FrameRate", properties.frame_rate())
        .integer("FileSize", properties.file_size())
        .integer("DurationMillis", properties.duration_millis())
        .build()
}

fn job_input_json(input: &types::JobInput) -> Value {
    JsonObject::default()
        .text("Key", input.key())
        .text("FrameRate", input.frame_rate())
        .text("Resolution", input.resolution())
        .text("AspectRatio", input.aspect_ratio())
        .text("Interlaced", input.interlaced())
        .text("Container", input.container())
        .object("Encryption", input.encryption(), encryption_json)
        .object("TimeSpan", input.time_span(), time_span_json)
        .object("InputCaptions", input.input_captions(), input_captions_json)
        .object("DetectedProperties", input.detected_properties(), detected_properties_json)
        .build()
}

fn watermark_json(watermark: &types::JobWatermark) -> Value {
    JsonObject::default()
        .text("PresetWatermarkId", watermark.preset_watermark_id())
        .text("InputKey", watermark.input_key())
        .object("Encryption", watermark.encryption(), encryption_json)
        .build()
}

fn artwork_json(artwork: &types::Artwork) -> Value {
    JsonObject::default()
        .text("InputKey", artwork.input_key())
        .text("MaxWidth", artwork.max_width())
        .text("MaxHeight", artwork.max_height())
        .text("SizingPolicy", artwork.sizing_policy())
        .text("PaddingPolicy", artwork.padding_policy())
        .text("AlbumArtFormat", artwork.album_art_format())
        .object("Encryption", artwork.encryption(), encryption_json)
        .build()
}

fn album_art_json(album_art: &types::JobAlbumArt) -> Value {
    JsonObject::default()
        .text("MergePolicy", album_art.merge_policy())
        .array("Artwork", album_art.artwork.as_deref(), artwork_json)
        .build()
}

fn caption_format_json(format: &types::CaptionFormat) -> Value {
    JsonObject::default()
        .text("Format", format.format())
        .text("Pattern", format.pattern())
        .object("Encryption", format.encryption(), encryption_json)
        .build()
}

fn captions_json(captions: &types::Captions) -> Value {
    JsonObject::default().array("CaptionFormats", captions.caption_formats.as_deref(), caption_format_json).build()
}

fn job_output_json(output: &types::JobOutput) -> Value {
    JsonObject::default()
        .text("Id", output.id())
        .text("Key", output.key())
        .text("ThumbnailPattern", output.thumbnail_pattern())
        .object("ThumbnailEncryption", output.thumbnail_encryption(), encryption_json)
        .text("Rotate", output.rotate())
        .text("PresetId", output.preset_id())
        .text("SegmentDuration", output.segment_duration())
        .text("Status", output.status())
        .text("StatusDetail", output.status_detail())
        .integer("Duration", output.duration())
        .integer("Width", output.width().map(i64::from))
        .integer("Height", output.height().map(i64::from))
        .text("FrameRate", output.frame_rate())
        .integer("FileSize", output.file_size())
        .integer("DurationMillis", output.duration_millis())
        .array("Watermarks", output.watermarks.as_deref(), watermark_json)
        .object("AlbumArt", output.album_art(), album_art_json)
        .object("Captions", output.captions(), captions_json)
        .object("Encryption", output.encryption(), encryption_json)
        .text("AppliedColorSpaceConversion", output.applied_color_space_conversion())
        .build()
}

fn hls_content_protection_json(hls: &types::HlsContentProtection) -> Value {
    JsonObject::default()
        .text("Method", hls.method())
        .text("Key", hls.key())
        .text("KeyMd5", hls.key_md5())
        .text("InitializationVector", hls.initialization_vector())
        .text("LicenseAcquisitionUrl", hls.license_acquisition_url())
        .text("KeyStoragePolicy", hls.key_storage_policy())
        .build()
}

fn play_ready_drm_json(drm: &types::PlayReadyDrm) -> Value {
    JsonObject::default()
        .text("Format", drm.format())
        .text("Key", drm.key())
        .text("KeyMd5", drm.key_md5())
        .text("KeyId", drm.key_id())
        .text("InitializationVector", drm.initialization_vector())
        .text("LicenseAcquisitionUrl", drm.license_acquisition_url())
        .build()
}

fn playlist_json(playlist: &types::Playlist) -> Value {
    JsonObject::default()
        .text("Name", playlist.name())
        .text("Format", playlist.format())
        .strings("OutputKeys", playlist.output_keys.as_deref())
        .object("HlsContentProtection", playlist.hls_content_protection(), hls_content_protection_json)
        .object("PlayReadyDrm", playlist.play_ready_drm(), play_ready_drm_json)
        .text("Status", playlist.status())
        .text("StatusDetail", playlist.status_detail())
        .build()
}

fn timing_json(timing: &types::Timing) -> Value {
    JsonObject::default()
        .integer("SubmitTimeMillis", timing.submit_time_millis())
        .integer("StartTimeMillis", timing.start_time_millis())
        .integer("FinishTimeMillis", timing.finish_time_millis())
        .build()
}

/// Jobs for tests of this module and of `api::job`.
#[cfg(test)]
pub(crate) mod fixtures {
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
                    CaptionFormat {
                        format: "dfxp".to_owned(),
                        pattern: "dfxp-{language}".to_owned(),
                        encryption: None,
                    },
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
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_elastictranscoder::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_elastictranscoder::config::{
        BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
    };
    use serde_json::json;

    use super::*;
    use crate::jobs::et::sdk::fixtures::job_with_every_field;

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

    fn sdk_encryption(n: u8) -> types::Encryption {
        types::Encryption::builder()
            .mode("aes-cbc-pkcs7")
            .key(format!("key{n}"))
            .key_md5(format!("md5{n}"))
            .initialization_vector(format!("iv{n}"))
            .build()
    }

    fn encryption_value(n: u8) -> Value {
        json!({"Mode": "aes-cbc-pkcs7", "Key": format!("key{n}"), "KeyMd5": format!("md5{n}"), "InitializationVector": format!("iv{n}")})
    }

    #[test]
    fn job_to_json_writes_ets_rest_json() {
        let output = types::JobOutput::builder()
            .id("1")
            .key("out/1.ts")
            .preset_id("1351620000001-200010")
            .status("Complete")
            .status_detail("done")
            .thumbnail_pattern("thumbs/{count}")
            .thumbnail_encryption(sdk_encryption(2))
            .rotate("auto")
            .segment_duration("10")
            .duration(31)
            .width(1920)
            .height(1080)
            .frame_rate("29.97")
            .file_size(123_456_789_012)
            .duration_millis(31_000)
            .watermarks(
                types::JobWatermark::builder()
                    .preset_watermark_id("TopLeft")
                    .input_key("logo.png")
                    .encryption(sdk_encryption(3))
                    .build(),
            )
            .album_art(
                types::JobAlbumArt::builder()
                    .merge_policy("Replace")
                    .artwork(types::Artwork::builder().input_key("cover.jpg").max_width("600").build())
                    .build(),
            )
            .captions(
                types::Captions::builder()
                    .caption_formats(
                        types::CaptionFormat::builder()
                            .format("webvtt")
                            .pattern("cc-{language}")
                            .encryption(sdk_encryption(4))
                            .build(),
                    )
                    .build(),
            )
            .encryption(sdk_encryption(1))
            .applied_color_space_conversion("None")
            .build();
        let input = types::JobInput::builder()
            .key("in.mp4")
            .container("auto")
            .encryption(sdk_encryption(0))
            .time_span(types::TimeSpan::builder().start_time("1").build())
            .input_captions(
                types::InputCaptions::builder()
                    .merge_policy("Override")
                    .caption_sources(types::CaptionSource::builder().key("in.srt").language("en").build())
                    .build(),
            )
            .detected_properties(types::DetectedProperties::builder().width(640).duration_millis(5000).build())
            .build();
        let job = types::Job::builder()
            .id("3333333333333-abcdef")
            .arn("arn:aws:elastictranscoder:eu-west-1:111122223333:job/3333333333333-abcdef")
            .pipeline_id("1111111111111-abcdef")
            .status("Complete")
            .output_key_prefix("jobs/")
            .input(input.clone())
            .inputs(input)
            .output(output.clone())
            .outputs(output)
            .playlists(
                types::Playlist::builder()
                    .name("hls")
                    .format("HLSv3")
                    .output_keys("out/1.ts")
                    .status("Complete")
                    .status_detail("ok")
                    .hls_content_protection(
                        types::HlsContentProtection::builder()
                            .method("aes-128")
                            .key("hk")
                            .key_md5("hm")
                            .initialization_vector("hi")
                            .license_acquisition_url("https://k.example.com")
                            .key_storage_policy("NoStore")
                            .build(),
                    )
                    .play_ready_drm(
                        types::PlayReadyDrm::builder()
                            .format("microsoft")
                            .key("pk")
                            .key_md5("pm")
                            .key_id("01234567-89ab-cdef-0123-456789abcdef")
                            .initialization_vector("pi")
                            .license_acquisition_url("https://l.example.com")
                            .build(),
                    )
                    .build(),
            )
            .user_metadata("customer", "acme")
            .timing(types::Timing::builder().submit_time_millis(1).start_time_millis(2).finish_time_millis(3).build())
            .build();

        let input_json = json!({
            "Key": "in.mp4",
            "Container": "auto",
            "Encryption": encryption_value(0),
            "TimeSpan": {"StartTime": "1"},
            "InputCaptions": {"MergePolicy": "Override", "CaptionSources": [{"Key": "in.srt", "Language": "en"}]},
            "DetectedProperties": {"Width": 640, "DurationMillis": 5000},
        });
        let output_json = json!({
            "Id": "1",
            "Key": "out/1.ts",
            "PresetId": "1351620000001-200010",
            "Status": "Complete",
            "StatusDetail": "done",
            "ThumbnailPattern": "thumbs/{count}",
            "ThumbnailEncryption": encryption_value(2),
            "Rotate": "auto",
            "SegmentDuration": "10",
            "Duration": 31,
            "Width": 1920,
            "Height": 1080,
            "FrameRate": "29.97",
            "FileSize": 123_456_789_012_i64,
            "DurationMillis": 31_000,
            "Watermarks": [{"PresetWatermarkId": "TopLeft", "InputKey": "logo.png", "Encryption": encryption_value(3)}],
            "AlbumArt": {"MergePolicy": "Replace", "Artwork": [{"InputKey": "cover.jpg", "MaxWidth": "600"}]},
            "Captions": {"CaptionFormats": [{"Format": "webvtt", "Pattern": "cc-{language}", "Encryption": encryption_value(4)}]},
            "Encryption": encryption_value(1),
            "AppliedColorSpaceConversion": "None",
        });
        assert_eq!(
            job_to_json(&job),
            json!({
                "Id": "3333333333333-abcdef",
                "Arn": "arn:aws:elastictranscoder:eu-west-1:111122223333:job/3333333333333-abcdef",
                "PipelineId": "1111111111111-abcdef",
                "Status": "Complete",
                "OutputKeyPrefix": "jobs/",
                "Input": input_json,
                "Inputs": [input_json],
                "Output": output_json,
                "Outputs": [output_json],
                "Playlists": [{
                    "Name": "hls",
                    "Format": "HLSv3",
                    "OutputKeys": ["out/1.ts"],
                    "Status": "Complete",
                    "StatusDetail": "ok",
                    "HlsContentProtection": {
                        "Method": "aes-128", "Key": "hk", "KeyMd5": "hm", "InitializationVector": "hi",
                        "LicenseAcquisitionUrl": "https://k.example.com", "KeyStoragePolicy": "NoStore",
                    },
                    "PlayReadyDrm": {
                        "Format": "microsoft", "Key": "pk", "KeyMd5": "pm",
                        "KeyId": "01234567-89ab-cdef-0123-456789abcdef", "InitializationVector": "pi",
                        "LicenseAcquisitionUrl": "https://l.example.com",
                    },
                }],
                "UserMetadata": {"customer": "acme"},
                "Timing": {"SubmitTimeMillis": 1, "StartTimeMillis": 2, "FinishTimeMillis": 3},
            })
        );
    }

    #[test]
    fn job_to_json_of_an_empty_job_is_empty() {
        assert_eq!(job_to_json(&types::Job::builder().build()), json!({}));
    }

    #[test]
    fn pipeline_info_reads_region_key_and_role() {
        let pipeline = types::Pipeline::builder()
            .id("1111111111111-abcdef")
            .arn("arn:aws:elastictranscoder:eu-west-1:111122223333:pipeline/1111111111111-abcdef")
            .role("arn:aws:iam::111122223333:role/Elastic_Transcoder_Default_Role")
            .aws_kms_key_arn("arn:aws:kms:eu-west-1:111122223333:key/abc")
            .build();
        assert_eq!(
            pipeline_info(&pipeline),
            PipelineInfo {
                id: "1111111111111-abcdef".to_owned(),
                arn: "arn:aws:elastictranscoder:eu-west-1:111122223333:pipeline/1111111111111-abcdef".to_owned(),
                kms_key_arn: Some("arn:aws:kms:eu-west-1:111122223333:key/abc".to_owned()),
                role: "arn:aws:iam::111122223333:role/Elastic_Transcoder_Default_Role".to_owned(),
                region: Some("eu-west-1".to_owned()),
            }
        );
    }

    #[test]
    fn pipeline_info_without_key_or_good_arn() {
        let pipeline = types::Pipeline::builder().id("p").arn("not-an-arn").aws_kms_key_arn("").build();
        let info = pipeline_info(&pipeline);
        assert_eq!(info.kms_key_arn, None);
        assert_eq!(info.region, None);
        assert_eq!(info.role, "");
        for arn in [
            "arn:aws:s3:eu-west-1:111122223333:pipeline/x",
            "arn:aws:elastictranscoder::111122223333:pipeline/x",
            "arn:aws:elastictranscoder:eu-west-1:111122223333:job/x",
        ] {
            assert_eq!(region_of_pipeline_arn(arn), None, "{arn}");
        }
        assert_eq!(
            region_of_pipeline_arn("arn:aws-cn:elastictranscoder:cn-north-1:111122223333:pipeline/x").as_deref(),
            Some("cn-north-1")
        );
    }
}
