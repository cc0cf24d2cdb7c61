//! The SDK to our terms: ET's answered `Job` as ET's own rest-json, and a
//! `Pipeline` as the [`PipelineInfo`] the broker checks keys against.
//!
//! Owns only shape mapping; it validates nothing and talks to no network.
//! ET's answers carry wrapped keys only, and this module must never see,
//! take or produce a plaintext key.

use std::collections::HashMap;

use aws_sdk_elastictranscoder::types;
use serde_json::{Map, Value};

use crate::jobs::et::request::non_empty;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
