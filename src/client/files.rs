//! `encrypt` and `decrypt`: one EncryptObject or DecryptObject stream,
//! either over S3 objects the broker reads and writes itself, or over local
//! files streamed through the broker in chunks.
//!
//! Owns `--in`/`--out` routing, the progress bar, and the output file: a
//! temporary file beside the destination, renamed into place only after the
//! broker's final result and a clean end of stream. Must never leave
//! provisional output at `--out` (a failed GCM tag, a broken stream or
//! Ctrl-C leaves nothing), nor let a short read pass as a whole file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::client::args::{ClientArgs, DecryptArgs, EncryptArgs};
use crate::client::connect::connect;
use crate::client::error::CliError;
use crate::client::keys::{print_encryption, read_encryption};
use crate::edge::pb;
use crate::edge::pb::key_broker_client::KeyBrokerClient;
use crate::objects::S3Location;

/// Where `encrypt` and `decrypt` read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Local files, streamed through the broker.
    Files {
        /// `--in`.
        input: PathBuf,
        /// `--out`.
        output: PathBuf,
    },
    /// S3 objects the broker reads and writes itself.
    S3 {
        /// `--in`.
        source: S3Location,
        /// `--out`.
        destination: S3Location,
    },
}

/// Reads `--in` and `--out`: both files or both `s3://` URLs.
///
/// # Errors
/// [`CliError::Usage`] for a malformed S3 URL, a mix of file and S3, or
/// the same file twice.
pub fn route(input: &str, output: &str) -> Result<Route, CliError> {
    let url = |text: &str, flag: &str, parsed: Result<S3Location, crate::custody::keys::KeyError>| {
        parsed.map_err(|e| CliError::Usage(format!("{flag} {text}: not a usable s3://BUCKET/KEY URL ({e})")))
    };
    match (S3Location::from_url(input), S3Location::from_url(output)) {
        (None, None) => {
            let (input, output) = (PathBuf::from(input), PathBuf::from(output));
            let same =
                input == output || matches!((input.canonicalize(), output.canonicalize()), (Ok(a), Ok(b)) if a == b);
            if same {
                return Err(CliError::Usage(format!("--out must differ from --in ({})", input.display())));
            }
            Ok(Route::Files { input, output })
        }
        (Some(source), Some(destination)) => {
            Ok(Route::S3 { source: url(input, "--in", source)?, destination: url(output, "--out", destination)? })
        }
        _ => Err(CliError::Usage(format!(
            "--in {input} and --out {output}: both must be local files or both s3:// URLs \
             (with S3 the broker reads and writes the objects itself; it does not mix S3 and local files)"
        ))),
    }
}

/// The start message's `source` and `destination`: set in S3 mode only.
fn s3_locations(route: &Route) -> (Option<pb::S3Location>, Option<pb::S3Location>) {
    let proto =
        |location: &S3Location| pb::S3Location { bucket: location.bucket().to_owned(), key: location.key().to_owned() };
    match route {
        Route::S3 { source, destination } => (Some(proto(source)), Some(proto(destination))),
        Route::Files { .. } => (None, None),
    }
}

/// `keybroker encrypt`.
pub(super) async fn encrypt_file(args: EncryptArgs) -> Result<(), CliError> {
    let route = route(&args.input, &args.output)?;
    let (source, destination) = s3_locations(&route);
    let start = pb::EncryptObjectStart {
        mode: args.mode,
        key_bits: args.key_bits,
        kms_key_id: args.kms_key_id,
        context: args.context.to_proto(),
        source,
        destination,
        request_token: args.request_token,
    };
    let start = pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Start(start)) };
    let result = stream_object::<EncryptObject>(&args.client, route, start).await?;
    eprintln!("kms_key_arn: {}", result.kms_key_arn);
    eprintln!("plaintext_bytes: {}, ciphertext_bytes: {}", result.plaintext_bytes, result.ciphertext_bytes);
    if !result.etag.is_empty() {
        eprintln!("version_id: {}, etag: {}", result.version_id, result.etag);
    }
    print_encryption(result.encryption)
}

/// `keybroker decrypt`.
pub(super) async fn decrypt_file(args: DecryptArgs) -> Result<(), CliError> {
    let route = route(&args.input, &args.output)?;
    let encryption = read_encryption(&args.encryption)?;
    let (source, destination) = s3_locations(&route);
    let start =
        pb::DecryptObjectStart { encryption: Some(encryption), context: args.context.to_proto(), source, destination };
    let start = pb::DecryptObjectRequest { message: Some(pb::decrypt_object_request::Message::Start(start)) };
    let result = stream_object::<DecryptObject>(&args.client, route, start).await?;
    eprintln!("plaintext_bytes: {}", result.plaintext_bytes);
    Ok(())
}

/// One message of an object stream's answer.
enum Answer<R> {
    /// Output bytes; provisional until the result.
    Chunk(Vec<u8>),
    /// The last message.
    Result(R),
}

/// What differs between EncryptObject and DecryptObject for the CLI: the
/// message types and the client method. [`stream_object`] does the rest.
trait ObjectRpc {
    /// For the progress bar: `encrypting` or `decrypting`.
    const VERB: &'static str;
    /// A request message: the start, or a chunk.
    type Request: Send + 'static;
    /// A response message: a chunk, or the result.
    type Response;
    /// The result message.
    type Result;

    /// A request carrying input bytes.
    fn chunk(bytes: Vec<u8>) -> Self::Request;

    /// What a response carries; `None` when it carries nothing.
    fn answer(response: Self::Response) -> Option<Answer<Self::Result>>;

    /// Opens the call.
    async fn call(
        client: &mut KeyBrokerClient<Channel>,
        requests: impl Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status>;
}

/// `EncryptObject`.
struct EncryptObject;

impl ObjectRpc for EncryptObject {
    const VERB: &'static str = "encrypting";
    type Request = pb::EncryptObjectRequest;
    type Response = pb::EncryptObjectResponse;
    type Result = pb::EncryptObjectResult;

    fn chunk(bytes: Vec<u8>) -> Self::Request {
        pb::EncryptObjectRequest { message: Some(pb::encrypt_object_request::Message::Chunk(bytes)) }
    }

    fn answer(response: Self::Response) -> Option<Answer<Self::Result>> {
        use pb::encrypt_object_response::Message;
        response.message.map(|message| match message {
            Message::Chunk(bytes) => Answer::Chunk(bytes),
            Message::Result(result) => Answer::Result(result),
        })
    }

    async fn call(
        client: &mut KeyBrokerClient<Channel>,
        requests: impl Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(client.encrypt_object(requests).await?.into_inner())
    }
}

/// `DecryptObject`.
struct DecryptObject;

impl ObjectRpc for DecryptObject {
    const VERB: &'static str = "decrypting";
    type Request = pb::DecryptObjectRequest;
    type Response = pb::DecryptObjectResponse;
    type Result = pb::DecryptObjectResult;

    fn chunk(bytes: Vec<u8>) -> Self::Request {
        pb::DecryptObjectRequest { message: Some(pb::decrypt_object_request::Message::Chunk(bytes)) }
    }

    fn answer(response: Self::Response) -> Option<Answer<Self::Result>> {
        use pb::decrypt_object_response::Message;
        response.message.map(|message| match message {
            Message::Chunk(bytes) => Answer::Chunk(bytes),
            Message::Result(result) => Answer::Result(result),
        })
    }

    async fn call(
        client: &mut KeyBrokerClient<Channel>,
        requests: impl Stream<Item = Self::Request> + Send + 'static,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(client.decrypt_object(requests).await?.into_inner())
    }
}

/// Runs one object call along `route`, `start` first, and answers its
/// result once the broker has ended the stream OK. In file mode the output
/// appears at `--out` only then.
async fn stream_object<R: ObjectRpc>(
    client_args: &ClientArgs,
    route: Route,
    start: R::Request,
) -> Result<R::Result, CliError> {
    match route {
        Route::S3 { source, destination } => {
            let mut client = connect(client_args).await?;
            let bar = progress(None, &format!("{} {source} -> {destination}", R::VERB));
            let mut responses = R::call(&mut client, futures::stream::iter([start])).await?;
            let result = match responses.message().await?.and_then(R::answer) {
                Some(Answer::Result(result)) => result,
                Some(Answer::Chunk(_)) => return Err(CliError::Answer("the broker sent data in S3 mode".to_owned())),
                None => return Err(no_result()),
            };
            expect_end(&mut responses).await?;
            bar.finish_and_clear();
            Ok(result)
        }
        Route::Files { input, output } => {
            let (file, len) = open_input(&input).await?;
            let mut out = TempOutput::create(&output)?;
            let mut client = connect(client_args).await?;
            let bar = progress(Some(len), &format!("{} {}", R::VERB, input.display()));
            let (requests, mut read_failed) = file_requests(start, file, input, bar.clone(), R::chunk);
            let mut responses = R::call(&mut client, requests).await?;
            // Everything written before the result is provisional: it stays
            // in the temporary file, which is removed unless persisted.
            let result = loop {
                let message = tokio::select! {
                    message = responses.message() => message?,
                    Some(err) = read_failed.recv() => return Err(err),
                };
                match message.and_then(R::answer) {
                    Some(Answer::Chunk(bytes)) => out.write(&bytes).await?,
                    Some(Answer::Result(result)) => break result,
                    None => return Err(no_result()),
                }
            };
            expect_end(&mut responses).await?;
            out.persist().await?;
            bar.finish_and_clear();
            Ok(result)
        }
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise, so
/// scripts and logs get none.
fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(len) => indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr())
            .with_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
        None => {
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        }
    };
    bar.set_message(what.to_owned());
    bar
}

/// The output: a temporary file beside its destination, renamed into place
/// only by [`TempOutput::persist`]; removed when dropped otherwise (an
/// error, a broken stream, Ctrl-C).
struct TempOutput {
    temp: tempfile::NamedTempFile,
    /// The same open file, for async writes.
    file: tokio::fs::File,
    destination: PathBuf,
}

impl TempOutput {
    fn create(destination: &Path) -> Result<Self, CliError> {
        use std::os::unix::fs::PermissionsExt as _;
        let name = destination
            .file_name()
            .ok_or_else(|| CliError::Usage(format!("--out {}: names no file", destination.display())))?;
        let dir = match destination.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".keybroker-");
        let io = |source| CliError::Io { path: destination.to_owned(), source };
        // 0o666 before the umask, as any new file: the output is the user's
        // file, not a private temporary one.
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".part")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io)?;
        let file = temp.as_file().try_clone().map_err(io)?;
        Ok(TempOutput { file: tokio::fs::File::from_std(file), temp, destination: destination.to_owned() })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        use tokio::io::AsyncWriteExt as _;
        self.file.write_all(bytes).await.map_err(|source| CliError::Io { path: self.temp.path().to_owned(), source })
    }

    /// Flushes to disk and renames into place.
    async fn persist(self) -> Result<(), CliError> {
        let TempOutput { temp, file, destination } = self;
        file.sync_all().await.map_err(|source| CliError::Io { path: temp.path().to_owned(), source })?;
        drop(file);
        temp.persist(&destination).map_err(|e| CliError::Io { path: destination, source: e.error })?;
        Ok(())
    }
}

/// The chunk size the CLI reads and sends.
const CLI_CHUNK: usize = 1 << 20;

/// A request stream: the start message, then the file in chunks. A read
/// error does not end the stream (the broker would take a short file as
/// whole); it is reported through the returned receiver, and the caller
/// then cancels the call.
fn file_requests<M: Send + 'static>(
    start: M,
    mut file: tokio::fs::File,
    path: PathBuf,
    bar: indicatif::ProgressBar,
    chunk: fn(Vec<u8>) -> M,
) -> (ReceiverStream<M>, tokio::sync::mpsc::Receiver<CliError>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (failed_tx, failed_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        if tx.send(start).await.is_err() {
            return;
        }
        loop {
            let mut buf = Vec::with_capacity(CLI_CHUNK);
            match (&mut file).take(CLI_CHUNK as u64).read_to_end(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    bar.inc(n as u64);
                    if tx.send(chunk(buf)).await.is_err() {
                        return;
                    }
                }
                Err(source) => {
                    let _ = failed_tx.send(CliError::Io { path, source }).await;
                    // Keep the stream open until the call is dropped.
                    tx.closed().await;
                    return;
                }
            }
        }
    });
    (ReceiverStream::new(rx), failed_rx)
}

async fn open_input(path: &Path) -> Result<(tokio::fs::File, u64), CliError> {
    let io = |source| CliError::Io { path: path.to_owned(), source };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    Ok((file, len))
}

/// Waits for the status that must follow the `result` message: plaintext
/// and ciphertext are good only when the stream then ends OK.
async fn expect_end<T>(responses: &mut tonic::Streaming<T>) -> Result<(), CliError> {
    match responses.message().await? {
        None => Ok(()),
        Some(_) => Err(CliError::Answer("the broker sent more after its result; output discarded".to_owned())),
    }
}

fn no_result() -> CliError {
    CliError::Answer("the broker ended the stream without a result; output discarded".to_owned())
}
