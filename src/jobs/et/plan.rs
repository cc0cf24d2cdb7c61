//! Finds every protected file of a job, in one fixed order, so the broker
//! can plan its KMS work from a job and later fill the results back in.
//!
//! Holds no plaintext: content keys are moved straight from the request into
//! the tasks that wrap them.

use super::model::{CreateJob, Encryption, HlsContentProtection, JobInput, JobOutput, PlayReadyDrm};
use crate::jobs::place::Place;

/// The inputs of a job with their places: `input`, then `inputs[i]`.
pub fn inputs(job: &CreateJob) -> Vec<(Place, &JobInput)> {
    let root = Place::root();
    let single = job.input.iter().map(|input| (root.field("input", "Input"), input));
    single.chain(job.inputs.iter().enumerate().map(|(i, input)| (root.item("inputs", "Inputs", i), input))).collect()
}

/// The outputs of a job with their places: `output`, then `outputs[i]`.
pub fn outputs(job: &CreateJob) -> Vec<(Place, &JobOutput)> {
    let root = Place::root();
    let single = job.output.iter().map(|output| (root.field("output", "Output"), output));
    single
        .chain(job.outputs.iter().enumerate().map(|(i, output)| (root.item("outputs", "Outputs", i), output)))
        .collect()
}

/// One protected element of a job.
pub enum Block<'a> {
    /// A file the caller supplies and encrypted (input, caption source,
    /// watermark, album art): its key is the caller's.
    Supplied(&'a mut Encryption),
    /// A file ET writes (output, thumbnails, caption file): the broker may
    /// make its key.
    Written(&'a mut Encryption),
    /// HLS content protection of a playlist.
    Hls(&'a mut HlsContentProtection),
    /// PlayReady DRM of playlist `index`.
    PlayReady {
        /// The playlist's index.
        index: usize,
        /// The settings.
        drm: &'a mut PlayReadyDrm,
    },
}

/// Calls `visit` for every protected element of `job` with its place and the
/// object it protects, always in the same order; stops at the first error.
///
/// # Errors
/// Whatever `visit` returns.
pub fn visit_blocks<E>(
    job: &mut CreateJob,
    visit: &mut dyn FnMut(Place, &str, Block<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let root = Place::root();
    let single_input = job.input.iter_mut().map(|input| (root.field("input", "Input"), input));
    let many_inputs = job.inputs.iter_mut().enumerate().map(|(i, input)| (root.item("inputs", "Inputs", i), input));
    for (place, input) in single_input.chain(many_inputs) {
        if let Some(block) = &mut input.encryption {
            visit(place.field("encryption", "Encryption"), &input.key, Block::Supplied(block))?;
        }
        if let Some(captions) = &mut input.input_captions {
            let captions_place = place.field("input_captions", "InputCaptions");
            for (i, source) in captions.caption_sources.iter_mut().enumerate() {
                if let Some(block) = &mut source.encryption {
                    let at =
                        captions_place.item("caption_sources", "CaptionSources", i).field("encryption", "Encryption");
                    visit(at, &source.key, Block::Supplied(block))?;
                }
            }
        }
    }

    let single_output = job.output.iter_mut().map(|output| (root.field("output", "Output"), output));
    let many_outputs =
        job.outputs.iter_mut().enumerate().map(|(i, output)| (root.item("outputs", "Outputs", i), output));
    for (place, output) in single_output.chain(many_outputs) {
        if let Some(block) = &mut output.encryption {
            visit(place.field("encryption", "Encryption"), &output.key, Block::Written(block))?;
        }
        if let Some(block) = &mut output.thumbnail_encryption {
            let at = place.field("thumbnail_encryption", "ThumbnailEncryption");
            visit(at, &output.thumbnail_pattern, Block::Written(block))?;
        }
        for (i, mark) in output.watermarks.iter_mut().enumerate() {
            if let Some(block) = &mut mark.encryption {
                let at = place.item("watermarks", "Watermarks", i).field("encryption", "Encryption");
                visit(at, &mark.input_key, Block::Supplied(block))?;
            }
        }
        if let Some(album_art) = &mut output.album_art {
            let art_place = place.field("album_art", "AlbumArt");
            for (i, art) in album_art.artwork.iter_mut().enumerate() {
                if let Some(block) = &mut art.encryption {
                    let at = art_place.item("artwork", "Artwork", i).field("encryption", "Encryption");
                    visit(at, &art.input_key, Block::Supplied(block))?;
                }
            }
        }
        if let Some(captions) = &mut output.captions {
            let captions_place = place.field("captions", "Captions");
            for (i, format) in captions.caption_formats.iter_mut().enumerate() {
                if let Some(block) = &mut format.encryption {
                    let at =
                        captions_place.item("caption_formats", "CaptionFormats", i).field("encryption", "Encryption");
                    visit(at, &format.pattern, Block::Written(block))?;
                }
            }
        }
    }

    for (index, playlist) in job.playlists.iter_mut().enumerate() {
        let place = root.item("playlists", "Playlists", index);
        if let Some(hls) = &mut playlist.hls_content_protection {
            visit(place.field("hls_content_protection", "HlsContentProtection"), &playlist.name, Block::Hls(hls))?;
        }
        if let Some(drm) = &mut playlist.play_ready_drm {
            visit(place.field("play_ready_drm", "PlayReadyDrm"), &playlist.name, Block::PlayReady { index, drm })?;
        }
    }
    Ok(())
}
