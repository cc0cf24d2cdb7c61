//! The Elastic Transcoder `CreateJob` request (API 2012-09-25) as its
//! rest-json body: the job spec callers write (`aws elastictranscoder
//! create-job --cli-input-json` form, PascalCase) and the body the broker
//! POSTs to `/2012-09-25/jobs`.
//!
//! Holds wrapped keys only, never plaintext, so it may be serialised, logged
//! at debug level and answered to callers. The one field that is not ET's,
//! [`Encryption::key_bits`], is never serialised.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_empty(text: &str) -> bool {
    text.is_empty()
}

/// ET's `Encryption` element, and a protection request: an AES mode with an
/// empty `key` asks the broker for a fresh key of `key_bits`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Encryption {
    /// `s3`, `s3-aws-kms`, `aes-cbc-pkcs7`, `aes-ctr`, `aes-gcm`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub mode: String,
    /// The KMS-wrapped key, base64.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// base64 of the 16-byte MD5 digest.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key_md5: String,
    /// base64 of the 16-byte IV.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub initialization_vector: String,
    /// For keys the broker makes: 128, 192 or 256; 0 means 256. Not ET's.
    #[serde(skip)]
    pub key_bits: u32,
}

impl Encryption {
    /// Whether nothing is set (no protection asked).
    pub fn is_unset(&self) -> bool {
        self.mode.is_empty() && self.key.is_empty() && self.key_md5.is_empty() && self.initialization_vector.is_empty()
    }
}

/// `TimeSpan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TimeSpan {
    /// `StartTime`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub start_time: String,
    /// `Duration`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub duration: String,
}

/// `CaptionSource`: a caption file the caller supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CaptionSource {
    /// `Key`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// `Language`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub language: String,
    /// `TimeOffset`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub time_offset: String,
    /// `Label`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub label: String,
    /// The caller's block, when the caller encrypted the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `InputCaptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct InputCaptions {
    /// `MergePolicy`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub merge_policy: String,
    /// `CaptionSources`, up to 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caption_sources: Vec<CaptionSource>,
}

/// `JobInput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct JobInput {
    /// `Key`, 1 to 1024 characters.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// `FrameRate`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub frame_rate: String,
    /// `Resolution`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub resolution: String,
    /// `AspectRatio`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub aspect_ratio: String,
    /// `Interlaced`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub interlaced: String,
    /// `Container`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub container: String,
    /// `TimeSpan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_span: Option<TimeSpan>,
    /// `InputCaptions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_captions: Option<InputCaptions>,
    /// The caller's block, when the caller encrypted the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `JobWatermark`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct JobWatermark {
    /// `PresetWatermarkId`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub preset_watermark_id: String,
    /// `InputKey`: a .jpg, .jpeg or .png.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub input_key: String,
    /// The caller's block for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `Artwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Artwork {
    /// `InputKey`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub input_key: String,
    /// `MaxWidth`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub max_width: String,
    /// `MaxHeight`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub max_height: String,
    /// `SizingPolicy`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub sizing_policy: String,
    /// `PaddingPolicy`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub padding_policy: String,
    /// `AlbumArtFormat`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub album_art_format: String,
    /// The caller's block for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `JobAlbumArt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct JobAlbumArt {
    /// `MergePolicy`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub merge_policy: String,
    /// `Artwork`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artwork: Vec<Artwork>,
}

/// `CaptionFormat`: a caption file ET writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CaptionFormat {
    /// `Format`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub format: String,
    /// `Pattern`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub pattern: String,
    /// Protection asked for (AES without `Key`: the broker makes one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `Captions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Captions {
    /// `CaptionFormats`, up to 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caption_formats: Vec<CaptionFormat>,
}

/// `CreateJobOutput`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct JobOutput {
    /// `Key`, 1 to 255 characters.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// `ThumbnailPattern`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub thumbnail_pattern: String,
    /// Protection for the thumbnails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_encryption: Option<Encryption>,
    /// `Rotate`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub rotate: String,
    /// `PresetId`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub preset_id: String,
    /// `SegmentDuration`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub segment_duration: String,
    /// `Watermarks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watermarks: Vec<JobWatermark>,
    /// `AlbumArt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album_art: Option<JobAlbumArt>,
    /// `Captions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<Captions>,
    /// Protection for the output file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `HlsContentProtection`: an empty `key` asks the broker for a fresh
/// 128-bit key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HlsContentProtection {
    /// `Method`: `aes-128`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub method: String,
    /// `Key`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// `KeyMd5`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key_md5: String,
    /// `InitializationVector`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub initialization_vector: String,
    /// `LicenseAcquisitionUrl`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub license_acquisition_url: String,
    /// `KeyStoragePolicy`: `NoStore` or `WithVariantPlaylists`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key_storage_policy: String,
}

/// `PlayReadyDrm`. `Key` is the wrapped content key; the broker fills it
/// (and `KeyMd5`) from a content key passed beside the job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PlayReadyDrm {
    /// `Format`: `microsoft` or `discretix-3.0`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub format: String,
    /// `Key`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key: String,
    /// `KeyMd5`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key_md5: String,
    /// `KeyId`: a GUID.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub key_id: String,
    /// `InitializationVector`: base64 of 8 bytes, optional.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub initialization_vector: String,
    /// `LicenseAcquisitionUrl`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub license_acquisition_url: String,
}

/// `CreateJobPlaylist`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Playlist {
    /// `Name`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub name: String,
    /// `Format`: `HLSv3`, `HLSv4`, `MPEG-DASH`, `Smooth`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub format: String,
    /// `OutputKeys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_keys: Vec<String>,
    /// `HlsContentProtection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_content_protection: Option<HlsContentProtection>,
    /// `PlayReadyDrm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_ready_drm: Option<PlayReadyDrm>,
}

/// The `CreateJob` request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateJob {
    /// `PipelineId`.
    #[serde(default)]
    pub pipeline_id: String,
    /// `Input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<JobInput>,
    /// `Inputs` (clip stitching).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<JobInput>,
    /// `Output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<JobOutput>,
    /// `Outputs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<JobOutput>,
    /// `OutputKeyPrefix`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub output_key_prefix: String,
    /// `Playlists`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub playlists: Vec<Playlist>,
    /// `UserMetadata`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_metadata: BTreeMap<String, String>,
}
