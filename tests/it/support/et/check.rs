//! The endpoint's judgement of a CreateJob: model constraints and the
//! developer guide's cross-field rules, in document order.

use super::*;

// ---------------------------------------------------------------- validation
//
// Phases, each stopping at its first violation:
// 1. model constraints, walking the request in document order
//    (PipelineId, Input, Inputs, Output, Outputs, OutputKeyPrefix,
//    Playlists, UserMetadata);
// 2. the pipeline exists;
// 3. playlist rules (OutputKeys name outputs; protections exclude each other);
// 4. every AES block in document order: KMS Decrypt, key length, KeyMd5, IV.

/// A message naming the JSON path of the violation.
pub(super) type Invalid = String;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlockKind {
    /// `Encryption`/`ThumbnailEncryption` with an `aes-*` mode.
    File,
    /// `HlsContentProtection` with a `Key`.
    Hls,
    /// `PlayReadyDrm`.
    PlayReady,
}

pub(super) struct AesBlock {
    pub(super) path: String,
    pub(super) kind: BlockKind,
    pub(super) mode: String,
    pub(super) key: String,
    pub(super) key_md5: String,
    pub(super) iv: String,
}

pub(super) struct OutputInfo {
    pub(super) key: String,
    pub(super) aes_encrypted: bool,
}

pub(super) struct PlaylistInfo {
    pub(super) path: String,
    pub(super) output_keys: Vec<String>,
    pub(super) hls: bool,
    pub(super) play_ready: bool,
}

pub(super) struct CheckedJob<'p> {
    pub(super) pipeline: &'p PipelineFixture,
    pub(super) blocks: Vec<AesBlock>,
}

#[derive(Default)]
pub(super) struct Walk {
    pub(super) blocks: Vec<AesBlock>,
    pub(super) outputs: Vec<OutputInfo>,
    pub(super) playlists: Vec<PlaylistInfo>,
}

pub(super) fn check_job<'p>(
    request: &Value,
    pipelines: &'p HashMap<String, PipelineFixture>,
) -> Result<CheckedJob<'p>, Invalid> {
    let job = request.as_object().ok_or_else(|| "request body: must be a JSON object".to_owned())?;
    let mut walk = Walk::default();

    // Phase 1: model constraints.
    let pipeline_id = req_str(job, "PipelineId", "")?;
    if !is_et_id(pipeline_id) {
        return Err(format!("PipelineId: {pipeline_id:?} does not match ^\\d{{13}}-\\w{{6}}$"));
    }
    let input = opt_obj(job, "Input", "")?;
    let inputs = opt_list(job, "Inputs", "")?.unwrap_or_default();
    let input_count = usize::from(input.is_some()) + inputs.len();
    if input_count == 0 {
        return Err("Inputs: a job needs an Input or at least one entry in Inputs".to_owned());
    }
    if input_count > MAX_INPUTS {
        return Err(format!("Inputs: a job has at most {MAX_INPUTS} inputs (Input + Inputs), got {input_count}"));
    }
    if let Some(input) = input {
        check_input(input, "Input", &mut walk)?;
    }
    for (i, input) in inputs.iter().enumerate() {
        let path = format!("Inputs[{i}]");
        check_input(as_obj(input, &path)?, &path, &mut walk)?;
    }

    let output = opt_obj(job, "Output", "")?;
    let outputs = opt_list(job, "Outputs", "")?.unwrap_or_default();
    let output_count = usize::from(output.is_some()) + outputs.len();
    if output_count == 0 {
        return Err("Outputs: a job needs an Output or at least one entry in Outputs".to_owned());
    }
    if output_count > MAX_OUTPUTS {
        return Err(format!("Outputs: a job has at most {MAX_OUTPUTS} outputs (Output + Outputs), got {output_count}"));
    }
    if let Some(output) = output {
        check_output(output, "Output", &mut walk)?;
    }
    for (i, output) in outputs.iter().enumerate() {
        let path = format!("Outputs[{i}]");
        check_output(as_obj(output, &path)?, &path, &mut walk)?;
    }

    if let Some(prefix) = opt_str(job, "OutputKeyPrefix", "")? {
        check_len("OutputKeyPrefix", prefix, 1, 255)?;
    }

    let playlists = opt_list(job, "Playlists", "")?.unwrap_or_default();
    if playlists.len() > MAX_PLAYLISTS {
        return Err(format!("Playlists: a job has at most {MAX_PLAYLISTS} playlists, got {}", playlists.len()));
    }
    for (i, playlist) in playlists.iter().enumerate() {
        let path = format!("Playlists[{i}]");
        check_playlist(as_obj(playlist, &path)?, &path, &mut walk)?;
    }

    if let Some(metadata) = opt_obj(job, "UserMetadata", "")? {
        check_user_metadata(metadata)?;
    }

    // Phase 2: the pipeline.
    let pipeline = pipelines.get(pipeline_id).ok_or_else(|| {
        format!("PipelineId: The specified pipeline was not found: account={ACCOUNT_ID}, pipelineId={pipeline_id}.")
    })?;

    // Phase 3: playlists against outputs.
    for playlist in &walk.playlists {
        if playlist.hls && playlist.play_ready {
            return Err(format!(
                "{}.PlayReadyDrm: cannot be combined with HlsContentProtection in one playlist",
                playlist.path
            ));
        }
        for (j, key) in playlist.output_keys.iter().enumerate() {
            let path = format!("{}.OutputKeys[{j}]", playlist.path);
            let Some(output) = walk.outputs.iter().find(|o| &o.key == key) else {
                return Err(format!("{path}: {key:?} names no output of this job"));
            };
            if output.aes_encrypted && (playlist.hls || playlist.play_ready) {
                let protection = if playlist.hls { "HlsContentProtection" } else { "PlayReadyDrm" };
                return Err(format!(
                    "{path}: output {key:?} has file-level AES Encryption, which excludes the playlist's {protection}"
                ));
            }
            if let Some(other) = walk.playlists.iter().find(|other| {
                other.output_keys.contains(key)
                    && ((playlist.hls && other.play_ready) || (playlist.play_ready && other.hls))
            }) {
                return Err(format!(
                    "{path}: output {key:?} is also in {}, and HLS content protection and PlayReady DRM exclude each other",
                    other.path
                ));
            }
        }
    }

    Ok(CheckedJob { pipeline, blocks: walk.blocks })
}

pub(super) fn check_input(input: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let key = req_str(input, "Key", path)?;
    check_len(&at(path, "Key"), key, 1, 1024)?;
    check_enum_opt(input, "FrameRate", path, &["auto", "10", "15", "23.97", "24", "25", "29.97", "30", "50", "60"])?;
    if let Some(resolution) = opt_str(input, "Resolution", path)?
        && resolution != "auto"
        && !is_resolution(resolution)
    {
        return Err(format!("{}: must be auto or WIDTHxHEIGHT", at(path, "Resolution")));
    }
    check_enum_opt(input, "AspectRatio", path, &["auto", "1:1", "4:3", "3:2", "16:9"])?;
    check_enum_opt(input, "Interlaced", path, &["auto", "true", "false"])?;
    check_enum_opt(
        input,
        "Container",
        path,
        &[
            "auto", "3gp", "asf", "avi", "divx", "flv", "mkv", "mov", "mp4", "mpeg", "mpeg-ps", "mpeg-ts", "mxf",
            "ogg", "ts", "vob", "wav", "webm", "mp3", "m4a", "aac",
        ],
    )?;
    if let Some(encryption) = opt_obj(input, "Encryption", path)? {
        check_encryption(encryption, &at(path, "Encryption"), walk)?;
    }
    if let Some(captions) = opt_obj(input, "InputCaptions", path)? {
        let captions_path = at(path, "InputCaptions");
        check_enum_opt(captions, "MergePolicy", &captions_path, &["MergeOverride", "MergeRetain", "Override"])?;
        check_caption_sources(captions, &captions_path, walk)?;
    }
    Ok(())
}

pub(super) fn check_caption_sources(captions: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let sources = opt_list(captions, "CaptionSources", path)?.unwrap_or_default();
    if sources.len() > MAX_CAPTION_SOURCES {
        return Err(format!(
            "{}: at most {MAX_CAPTION_SOURCES} caption sources, got {}",
            at(path, "CaptionSources"),
            sources.len()
        ));
    }
    for (k, source) in sources.iter().enumerate() {
        let source_path = format!("{path}.CaptionSources[{k}]");
        let source = as_obj(source, &source_path)?;
        let key = req_str(source, "Key", &source_path)?;
        check_len(&at(&source_path, "Key"), key, 1, 1024)?;
        if let Some(encryption) = opt_obj(source, "Encryption", &source_path)? {
            check_encryption(encryption, &at(&source_path, "Encryption"), walk)?;
        }
    }
    Ok(())
}

pub(super) fn check_output(output: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let key = req_str(output, "Key", path)?;
    check_len(&at(path, "Key"), key, 1, 255)?;
    if let Some(pattern) = opt_str(output, "ThumbnailPattern", path)?
        && !pattern.is_empty()
        && !pattern.contains("{count}")
    {
        return Err(format!("{}: must be empty or contain {{count}}", at(path, "ThumbnailPattern")));
    }
    if let Some(encryption) = opt_obj(output, "ThumbnailEncryption", path)? {
        check_encryption(encryption, &at(path, "ThumbnailEncryption"), walk)?;
    }
    check_enum_opt(output, "Rotate", path, &["auto", "0", "90", "180", "270"])?;
    if let Some(preset) = opt_str(output, "PresetId", path)?
        && !is_et_id(preset)
    {
        return Err(format!("{}: {preset:?} does not match ^\\d{{13}}-\\w{{6}}$", at(path, "PresetId")));
    }
    for (j, watermark) in opt_list(output, "Watermarks", path)?.unwrap_or_default().iter().enumerate() {
        let wm_path = format!("{path}.Watermarks[{j}]");
        let watermark = as_obj(watermark, &wm_path)?;
        if let Some(id) = opt_str(watermark, "PresetWatermarkId", &wm_path)? {
            check_len(&at(&wm_path, "PresetWatermarkId"), id, 1, 40)?;
        }
        check_image_key(watermark, &wm_path)?;
        if let Some(encryption) = opt_obj(watermark, "Encryption", &wm_path)? {
            check_encryption(encryption, &at(&wm_path, "Encryption"), walk)?;
        }
    }
    if let Some(album_art) = opt_obj(output, "AlbumArt", path)? {
        let art_path = at(path, "AlbumArt");
        check_enum_opt(album_art, "MergePolicy", &art_path, &["Replace", "Prepend", "Append", "Fallback"])?;
        for (j, artwork) in opt_list(album_art, "Artwork", &art_path)?.unwrap_or_default().iter().enumerate() {
            let artwork_path = format!("{art_path}.Artwork[{j}]");
            let artwork = as_obj(artwork, &artwork_path)?;
            check_image_key(artwork, &artwork_path)?;
            check_enum_opt(artwork, "AlbumArtFormat", &artwork_path, &["jpg", "png"])?;
            if let Some(encryption) = opt_obj(artwork, "Encryption", &artwork_path)? {
                check_encryption(encryption, &at(&artwork_path, "Encryption"), walk)?;
            }
        }
    }
    if let Some(captions) = opt_obj(output, "Captions", path)? {
        let captions_path = at(path, "Captions");
        // Deprecated in the model, but it still carries Encryption blocks.
        check_caption_sources(captions, &captions_path, walk)?;
        let formats = opt_list(captions, "CaptionFormats", &captions_path)?.unwrap_or_default();
        if formats.len() > MAX_CAPTION_FORMATS {
            return Err(format!(
                "{captions_path}.CaptionFormats: at most {MAX_CAPTION_FORMATS} caption formats, got {}",
                formats.len()
            ));
        }
        for (j, format) in formats.iter().enumerate() {
            let format_path = format!("{captions_path}.CaptionFormats[{j}]");
            let format = as_obj(format, &format_path)?;
            check_enum_opt(format, "Format", &format_path, &["mov-text", "srt", "scc", "webvtt", "dfxp", "cea-708"])?;
            if let Some(pattern) = opt_str(format, "Pattern", &format_path)?
                && !pattern.is_empty()
                && !pattern.contains("{language}")
            {
                return Err(format!("{format_path}.Pattern: must be empty or contain {{language}}"));
            }
            if let Some(encryption) = opt_obj(format, "Encryption", &format_path)? {
                check_encryption(encryption, &at(&format_path, "Encryption"), walk)?;
            }
        }
    }
    let aes_encrypted = match opt_obj(output, "Encryption", path)? {
        Some(encryption) => check_encryption(encryption, &at(path, "Encryption"), walk)?,
        None => false,
    };
    walk.outputs.push(OutputInfo { key: key.to_owned(), aes_encrypted });
    Ok(())
}

/// Watermark and album-art `InputKey`: 1 to 1024 characters, a JPEG or PNG.
pub(super) fn check_image_key(obj: &Map<String, Value>, path: &str) -> Result<(), Invalid> {
    let key_path = at(path, "InputKey");
    let key = req_str(obj, "InputKey", path)?;
    check_len(&key_path, key, 1, 1024)?;
    let image = [".jpg", ".jpeg", ".png"].iter().any(|ext| key.len() > ext.len() && key.ends_with(ext));
    if !image {
        return Err(format!("{key_path}: {key:?} must end in .jpg, .jpeg or .png"));
    }
    Ok(())
}

/// Checks an `Encryption` block; records it when its mode is AES. Answers
/// whether it is.
pub(super) fn check_encryption(encryption: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<bool, Invalid> {
    let mode = req_str(encryption, "Mode", path)?;
    if !ENCRYPTION_MODES.contains(&mode) {
        return Err(format!("{}: {mode:?} is not one of {}", at(path, "Mode"), ENCRYPTION_MODES.join(", ")));
    }
    let key = opt_base64(encryption, "Key", path)?;
    let key_md5 = opt_base64(encryption, "KeyMd5", path)?;
    let iv = opt_str(encryption, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    if !mode.starts_with("aes-") {
        return Ok(false);
    }
    require_non_empty(path, "Key", key, &format!("Mode {mode}"))?;
    require_non_empty(path, "KeyMd5", key_md5, &format!("Mode {mode}"))?;
    require_non_empty(path, "InitializationVector", iv, &format!("Mode {mode}"))?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::File,
        mode: mode.to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(true)
}

pub(super) fn check_playlist(playlist: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let name = req_str(playlist, "Name", path)?;
    check_len(&at(path, "Name"), name, 1, 255)?;
    let format = req_str(playlist, "Format", path)?;
    const FORMATS: &[&str] = &["HLSv3", "HLSv4", "Smooth", "MPEG-DASH"];
    if !FORMATS.contains(&format) {
        return Err(format!("{}: {format:?} is not one of {}", at(path, "Format"), FORMATS.join(", ")));
    }
    let keys = opt_list(playlist, "OutputKeys", path)?.unwrap_or_default();
    if keys.len() > MAX_OUTPUTS {
        return Err(format!("{}: at most {MAX_OUTPUTS} output keys, got {}", at(path, "OutputKeys"), keys.len()));
    }
    let mut output_keys = Vec::with_capacity(keys.len());
    for (j, key) in keys.iter().enumerate() {
        let key_path = format!("{path}.OutputKeys[{j}]");
        let key = key.as_str().ok_or_else(|| format!("{key_path}: must be a string"))?;
        check_len(&key_path, key, 1, 255)?;
        output_keys.push(key.to_owned());
    }

    let hls = opt_obj(playlist, "HlsContentProtection", path)?;
    if let Some(hls) = hls {
        let hls_path = at(path, "HlsContentProtection");
        if !format.starts_with("HLS") {
            return Err(format!("{hls_path}: applies only to HLSv3 and HLSv4 playlists, not {format}"));
        }
        check_hls(hls, &hls_path, walk)?;
    }
    let play_ready = opt_obj(playlist, "PlayReadyDrm", path)?;
    if let Some(drm) = play_ready {
        let drm_path = at(path, "PlayReadyDrm");
        if format != "HLSv3" && format != "Smooth" {
            return Err(format!("{drm_path}: applies only to HLSv3 and Smooth playlists, not {format}"));
        }
        check_play_ready(drm, &drm_path, walk)?;
    }
    walk.playlists.push(PlaylistInfo {
        path: path.to_owned(),
        output_keys,
        hls: hls.is_some(),
        play_ready: play_ready.is_some(),
    });
    Ok(())
}

pub(super) fn check_hls(hls: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    if let Some(method) = opt_str(hls, "Method", path)?
        && method != "aes-128"
    {
        return Err(format!("{}: {method:?} is not aes-128", at(path, "Method")));
    }
    let key = opt_base64(hls, "Key", path)?;
    let key_md5 = opt_base64(hls, "KeyMd5", path)?;
    let iv = opt_str(hls, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    let url = opt_str(hls, "LicenseAcquisitionUrl", path)?.unwrap_or("");
    let url_path = at(path, "LicenseAcquisitionUrl");
    check_len(&url_path, url, 0, 512)?;
    if !url.is_empty() && !is_absolute_url(url) {
        return Err(format!("{url_path}: must be an absolute URL"));
    }
    let policy = opt_str(hls, "KeyStoragePolicy", path)?;
    match policy {
        None | Some("NoStore") => {}
        Some("WithVariantPlaylists") => {
            if !url.is_empty() {
                return Err(format!("{url_path}: must be empty with KeyStoragePolicy WithVariantPlaylists"));
            }
        }
        Some(other) => {
            return Err(format!("{}: {other:?} is not NoStore or WithVariantPlaylists", at(path, "KeyStoragePolicy")));
        }
    }
    if key.is_empty() {
        // ET generates the key; then it generates the digest and IV too.
        for (field, value) in [("KeyMd5", key_md5), ("InitializationVector", iv)] {
            if !value.is_empty() {
                return Err(format!("{}: must be empty when Key is empty (ET generates the key)", at(path, field)));
            }
        }
        return Ok(());
    }
    require_non_empty(path, "KeyMd5", key_md5, "a Key")?;
    require_non_empty(path, "InitializationVector", iv, "a Key")?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::Hls,
        mode: "aes-128".to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(())
}

pub(super) fn check_play_ready(drm: &Map<String, Value>, path: &str, walk: &mut Walk) -> Result<(), Invalid> {
    let format = req_str(drm, "Format", path)?;
    if format != "microsoft" && format != "discretix-3.0" {
        return Err(format!("{}: {format:?} is not microsoft or discretix-3.0", at(path, "Format")));
    }
    let key = opt_base64(drm, "Key", path)?;
    require_non_empty(path, "Key", key, "PlayReadyDrm")?;
    let key_md5 = opt_base64(drm, "KeyMd5", path)?;
    require_non_empty(path, "KeyMd5", key_md5, "PlayReadyDrm")?;
    let key_id = req_str(drm, "KeyId", path)?;
    if !is_guid(key_id) {
        return Err(format!("{}: {key_id:?} is not a GUID (8-4-4-4-12 or 32 hex digits)", at(path, "KeyId")));
    }
    let iv = opt_str(drm, "InitializationVector", path)?.unwrap_or("");
    check_len(&at(path, "InitializationVector"), iv, 0, 255)?;
    let url = req_str(drm, "LicenseAcquisitionUrl", path)?;
    check_len(&at(path, "LicenseAcquisitionUrl"), url, 1, 512)?;
    walk.blocks.push(AesBlock {
        path: path.to_owned(),
        kind: BlockKind::PlayReady,
        mode: format.to_owned(),
        key: key.to_owned(),
        key_md5: key_md5.to_owned(),
        iv: iv.to_owned(),
    });
    Ok(())
}

pub(super) fn check_user_metadata(metadata: &Map<String, Value>) -> Result<(), Invalid> {
    if metadata.len() > MAX_USER_METADATA {
        return Err(format!("UserMetadata: at most {MAX_USER_METADATA} key/value pairs, got {}", metadata.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " _.:/=+-%@".contains(c);
    for (key, value) in metadata {
        let path = format!("UserMetadata.{key}");
        let value = value.as_str().ok_or_else(|| format!("{path}: must be a string"))?;
        check_len(&path, key, 1, 128)?;
        check_len(&path, value, 0, 256)?;
        if !key.chars().all(allowed) || !value.chars().all(allowed) {
            return Err(format!("{path}: keys and values use only 0-9 A-Z a-z space _.:/=+-%@"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- KMS phase
