//! [`OciRegistry`]: the [`Registry`] trait over the async `oci-client` crate.
//!
//! The client is async; this type owns a small tokio runtime and blocks on
//! it, so callers stay synchronous. Registries on loopback (`127.0.0.0/8`,
//! `localhost`, `[::1]`) are spoken to over plain HTTP, as Docker does; all
//! others over HTTPS. The clients are made on first use (a build that
//! talks only to a loopback registry makes the plain-HTTP one alone), and
//! their TLS roots come from the system's CA bundle file
//! ([`trust_system_bundle`]); the plain-HTTP client needs them too, should
//! the registry redirect to an HTTPS host (blob storage). Credentials come from Docker's `config.json`
//! (`$DOCKER_CONFIG` or `~/.docker`, credential helpers included), then
//! podman's `auth.json`, per registry; without any, access is anonymous.
//! oci-client pings `/v2/` before every request to a registry that needs no
//! token (it caches tokens only); once such a registry is known
//! ([`OciRegistry::is_open`]), its blob and manifest requests go through
//! clients that hold no credentials and so send no pings.
//! Docker identity tokens (OAuth refresh tokens) are not supported yet.
//!
//! Failures are classified for [`super::retry`]: connection errors,
//! timeouts, 5xx and 429 answers become [`RegistryError::Unavailable`]
//! (retried), 401/403 [`RegistryError::Auth`], 404 and `*_UNKNOWN`
//! [`RegistryError::NotFound`] (final).
//!
//! Blobs are downloaded as a stream into a temporary file beside the
//! destination and renamed only after their sha256 matched. Uploads go
//! monolithically (one PUT) up to [`CHUNKED_ABOVE`] bytes and as a series
//! of PATCH chunks above.
//!
//! How big blobs avoid the heap: oci-client's upload API takes the blob
//! as `bytes::Bytes` or as a `futures::Stream`. Small blobs are read into
//! memory; blobs above [`MAP_ABOVE`] are memory-mapped read-only and handed
//! over as a `&'static [u8]` (which `Bytes` takes without copying): the
//! kernel pages them in from the file as they are sent, nothing is read into
//! the heap. The mappings live until the [`OciRegistry`] is dropped, after
//! its runtime (whose tasks might still hold a body) is shut down.
//! `Client::push_blob_stream` over `futures-util` (a dependency, for the S3
//! cache) and `bytes` would replace the mapping. oci-client keeps chunked
//! sessions private, so a failed upload is restarted from its beginning (a
//! new upload session), not resumed.

use super::{RawManifest, Registry, RegistryError};
use crate::image::manifest::{digest_of, MANIFEST_V1};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Manifest media types we accept when pulling.
const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Media types of indexes / manifest lists.
const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// Where credentials come from.
#[derive(Debug, Clone)]
enum Credentials {
    /// Docker's config.json (`$DOCKER_CONFIG`, `~/.docker`), then podman's auth.json.
    User,
    /// This Docker-format config file only.
    File(PathBuf),
    /// None.
    Anonymous,
}

/// A registry client over `oci-client`, with an internal tokio runtime.
///
/// Its methods block; do not call them from inside an async task (use
/// `tokio::task::spawn_blocking`).
pub struct OciRegistry {
    runtime: tokio::runtime::Runtime,
    /// The clients by (loopback → plain HTTP, chunked uploads), made on first use.
    clients: [std::sync::OnceLock<Client>; 4],
    /// Clients that are never given credentials, for registries that ask
    /// for none ([`OciRegistry::is_open`]), by the same index.
    open_clients: [std::sync::OnceLock<Client>; 4],
    /// Per registry: whether its `/v2/` ping asked for no credentials.
    open: Mutex<BTreeMap<String, bool>>,
    /// The clients of those pings, by protocol (HTTPS, plain HTTP); None
    /// when one could not be made.
    pingers: [std::sync::OnceLock<Option<reqwest::Client>>; 2],
    credentials: Credentials,
    auths: Mutex<BTreeMap<String, RegistryAuth>>,
    uploads: std::sync::atomic::AtomicUsize,
    mounts: std::sync::atomic::AtomicUsize,
    /// Blobs above this many bytes go in PATCH chunks ([`CHUNKED_ABOVE`]).
    chunked_above: std::sync::atomic::AtomicU64,
    // Declared last: dropped after the runtime and the clients above, so no
    // task can still be reading a mapping when it is unmapped.
    mappings: Mutex<BTreeMap<String, Mapping>>,
}

/// A read-only, private memory mapping of a whole file; unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and only ever read; the pointer is not
// tied to the thread that created it.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared reads of immutable memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `file` (of `len` > 0 bytes) read-only.
    fn new(file: &std::fs::File, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh private read-only mapping of an open file; the
        // kernel picks the address. Checked for MAP_FAILED below.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    /// The mapped bytes, as `'static`: valid as long as the mapping is
    /// kept (see [`OciRegistry`]'s field order).
    fn bytes(&self) -> &'static [u8] {
        // SAFETY: `ptr` maps `len` readable bytes that are unmapped only
        // when this Mapping is dropped, which OciRegistry does after its
        // runtime and clients, i.e. after every user of the slice.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Blobs larger than this are uploaded in PATCH chunks, smaller ones with
/// one PUT (from a memory map above [`MAP_ABOVE`]).
pub const CHUNKED_ABOVE: u64 = 1 << 30;

/// Blobs larger than this are memory-mapped rather than read into memory.
pub const MAP_ABOVE: u64 = 16 << 20;

/// The keys a Docker config may file `registry`'s credentials under.
fn credential_keys(registry: &str) -> Vec<String> {
    if registry == "docker.io" || registry == "index.docker.io" || registry == "registry-1.docker.io" {
        return vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()];
    }
    vec![registry.to_string(), format!("https://{registry}"), format!("http://{registry}")]
}

fn to_auth(c: docker_credential::DockerCredential) -> Option<RegistryAuth> {
    match c {
        docker_credential::DockerCredential::UsernamePassword(u, p) => Some(RegistryAuth::Basic(u, p)),
        docker_credential::DockerCredential::IdentityToken(_) => None,
    }
}

impl std::fmt::Debug for OciRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRegistry").finish_non_exhaustive()
    }
}

/// Whether `registry` (`host[:port]`) is on loopback.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

fn parse_reference(reference: &str) -> Result<Reference, RegistryError> {
    super::reference::parse(reference).map_err(|e| RegistryError::Reference { reference: reference.to_string(), message: e.to_string() })
}

/// What to do about an authentication failure.
const LOGIN_HINT: &str = " (credentials are read from ~/.docker/config.json or $DOCKER_CONFIG, then podman's auth.json: \
run `docker login REGISTRY` or `podman login REGISTRY`)";

fn map_err(reference: &str, what: &str, e: OciDistributionError) -> RegistryError {
    let reference = reference.to_string();
    match e {
        OciDistributionError::AuthenticationFailure(message) => {
            RegistryError::Auth { reference, message: format!("{message}{LOGIN_HINT}") }
        }
        OciDistributionError::UnauthorizedError { url } => {
            RegistryError::Auth { reference, message: format!("not authorized: {url}{LOGIN_HINT}") }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound { what: what.to_string(), reference },
        OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound { what: what.to_string(), reference },
        OciDistributionError::ServerError { code: 401 | 403, message, .. } => {
            RegistryError::Auth { reference, message: format!("{message}{LOGIN_HINT}") }
        }
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            RegistryError::NotFound { what: what.to_string(), reference }
        }
        OciDistributionError::RequestError(ref re) if matches!(re.status().map(|c| c.as_u16()), Some(401 | 403)) => {
            RegistryError::Auth { reference, message: format!("{what}: {re}{LOGIN_HINT}") }
        }
        OciDistributionError::ServerError { code, message, url } if code == 429 || code >= 500 => {
            RegistryError::Unavailable { reference, message: format!("{what}: HTTP {code} from {url}: {}", message.trim()) }
        }
        OciDistributionError::RequestError(ref re)
            if re.is_connect()
                || re.is_timeout()
                || re.is_request()
                || re.is_body()
                || matches!(re.status().map(|c| c.as_u16()), Some(429 | 500..=599)) =>
        {
            RegistryError::Unavailable { reference, message: format!("{what}: {re}") }
        }
        OciDistributionError::IoError(e) => RegistryError::Io(e),
        other => RegistryError::Transport { reference, message: format!("{what}: {other}") },
    }
}

impl OciRegistry {
    /// A client using the user's credentials: Docker's `config.json`
    /// (`$DOCKER_CONFIG` or `~/.docker`, with credential helpers), then
    /// podman's `auth.json`; anonymous for registries with none.
    pub fn new() -> Result<OciRegistry, RegistryError> {
        OciRegistry::with_credentials(Credentials::User)
    }

    /// A client that never sends credentials.
    pub fn anonymous() -> Result<OciRegistry, RegistryError> {
        OciRegistry::with_credentials(Credentials::Anonymous)
    }

    /// A client taking credentials only from the Docker-format config file
    /// `config` (`{"auths": {"host:port": {"auth": "base64(user:pass)"}}}`).
    pub fn with_docker_config(config: &Path) -> Result<OciRegistry, RegistryError> {
        OciRegistry::with_credentials(Credentials::File(config.to_path_buf()))
    }

    fn with_credentials(credentials: Credentials) -> Result<OciRegistry, RegistryError> {
        // Several threads block on this runtime at once (parallel blob
        // transfers), so it has workers of its own.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(OciRegistry {
            runtime,
            clients: Default::default(),
            open_clients: Default::default(),
            open: Mutex::default(),
            pingers: Default::default(),
            credentials,
            auths: Mutex::default(),
            uploads: Default::default(),
            mounts: Default::default(),
            chunked_above: std::sync::atomic::AtomicU64::new(CHUNKED_ABOVE),
            mappings: Mutex::default(),
        })
    }

    /// The credentials for `r`'s registry (looked up once per registry).
    fn auth(&self, r: &Reference) -> RegistryAuth {
        let registry = r.registry().to_string();
        let mut cache = self.auths.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = cache.get(&registry) {
            return a.clone();
        }
        let keys = credential_keys(&registry);
        let found = match &self.credentials {
            Credentials::Anonymous => None,
            Credentials::File(path) => keys.iter().find_map(|k| {
                let f = std::fs::File::open(path).ok()?;
                docker_credential::get_credential_from_reader(std::io::BufReader::new(f), k).ok().and_then(to_auth)
            }),
            Credentials::User => keys
                .iter()
                .find_map(|k| docker_credential::get_credential(k).ok().and_then(to_auth))
                .or_else(|| keys.iter().find_map(|k| docker_credential::get_podman_credential(k).ok().and_then(to_auth))),
        };
        let auth = found.unwrap_or(RegistryAuth::Anonymous);
        cache.insert(registry, auth.clone());
        auth
    }

    /// Upload blobs above `bytes` in PATCH chunks (default [`CHUNKED_ABOVE`]).
    pub fn set_chunked_above(&self, bytes: u64) {
        self.chunked_above.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Number of blob uploads performed (pushes skipped because the blob
    /// existed are not counted).
    pub fn uploads(&self) -> usize {
        self.uploads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Number of successful cross-repository mounts.
    pub fn mounts(&self) -> usize {
        self.mounts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bytes of blob `digest` in `file` (`len` bytes), memory-mapped
    /// once and kept mapped for the client's lifetime (retries reuse it).
    fn mapped(&self, digest: &str, file: &std::fs::File, len: u64) -> std::io::Result<&'static [u8]> {
        let mut maps = self.mappings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = maps.get(digest) {
            return Ok(m.bytes());
        }
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        let m = Mapping::new(file, len)?;
        let bytes = m.bytes();
        maps.insert(digest.to_string(), m);
        Ok(bytes)
    }

    fn client_for(&self, r: &Reference) -> &Client {
        self.client(is_loopback(r.resolve_registry()), false)
    }


    /// The client for plain HTTP (`http`) or HTTPS, uploading in chunks or not.
    fn client(&self, http: bool, chunked: bool) -> &Client {
        let i = usize::from(http) * 2 + usize::from(chunked);
        self.clients[i].get_or_init(|| {
            let protocol = if http { ClientProtocol::Http } else { ClientProtocol::Https };
            make_client(protocol, !chunked)
        })
    }

    /// Whether `r`'s registry takes requests without credentials: we have
    /// none for it, and its `/v2/` ping (sent once per registry) answered
    /// 200 without a challenge. oci-client keeps no token for such a
    /// registry and pings it again before every request; a client holding
    /// no credentials sends the same requests without the pings. A ping that
    /// fails or gets another answer (5xx) is not remembered: the request
    /// then goes the usual way, and reports the failure if it persists.
    fn is_open(&self, r: &Reference) -> bool {
        let registry = r.resolve_registry();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = open.get(registry) {
            return *known;
        }
        if !matches!(self.auth(r), RegistryAuth::Anonymous) {
            open.insert(registry.to_string(), false);
            return false;
        }
        let http = is_loopback(registry);
        let Some(pinger) = self.pinger(http) else { return false };
        let url = format!("{}://{registry}/v2/", if http { "http" } else { "https" });
        // Made inside the runtime: the request's timeout is a tokio timer.
        let Ok(answer) = self.runtime.block_on(async { pinger.get(&url).send().await }) else { return false };
        let known = match answer.status().as_u16() {
            200..=299 => !answer.headers().contains_key(reqwest::header::WWW_AUTHENTICATE),
            401 | 403 => false,
            _ => return false,
        };
        open.insert(registry.to_string(), known);
        known
    }

    /// The client pinging registries over plain HTTP (`http`) or HTTPS. It
    /// follows no redirects; over plain HTTP it has no TLS roots to load.
    fn pinger(&self, http: bool) -> Option<&reqwest::Client> {
        self.pingers[usize::from(http)]
            .get_or_init(|| {
                // reqwest sets up its connector's timers in a runtime.
                let _in_runtime = self.runtime.enter();
                let builder = reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(30))
                    .timeout(std::time::Duration::from_secs(60))
                    .redirect(reqwest::redirect::Policy::none());
                let builder = if http { builder.tls_certs_only(Vec::<reqwest::Certificate>::new()) } else { builder };
                builder.build().ok()
            })
            .as_ref()
    }

    /// The client for a request to `r`'s registry, uploading in chunks or
    /// not: one without credentials for an open registry ([`Self::is_open`]),
    /// else the usual one, holding the registry's credentials.
    fn request_client(&self, r: &Reference, chunked: bool) -> &Client {
        let http = is_loopback(r.resolve_registry());
        if self.is_open(r) {
            let i = usize::from(http) * 2 + usize::from(chunked);
            return self.open_clients[i].get_or_init(|| {
                let protocol = if http { ClientProtocol::Http } else { ClientProtocol::Https };
                make_client(protocol, !chunked)
            });
        }
        let client = self.client(http, chunked);
        self.runtime.block_on(client.store_auth_if_needed(r.resolve_registry(), &self.auth(r)));
        client
    }

    fn pull_raw(&self, reference: &str, r: &Reference) -> Result<RawManifest, RegistryError> {
        let client = self.client_for(r);
        let (bytes, _digest) = self
            .runtime
            .block_on(client.pull_manifest_raw(r, &self.auth(r), ACCEPTED))
            .map_err(|e| map_err(reference, "manifest", e))?;
        let bytes = bytes.to_vec();
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| MANIFEST_V1.to_string());
        let digest = digest_of(&bytes);
        if let Some(want) = r.digest() {
            if want != digest {
                return Err(RegistryError::Transport {
                    reference: reference.to_string(),
                    message: format!("manifest digest mismatch: want {want}, got {digest}"),
                });
            }
        }
        Ok(RawManifest { bytes, media_type, digest, index_digest: None })
    }
}

/// Pick the index entry matching `platform` (`os/arch[/variant]`).
fn pick_platform(bytes: &[u8], platform: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut parts = platform.split('/');
    let os = parts.next()?;
    let arch = parts.next()?;
    let variant = parts.next();
    let manifests = v.get("manifests")?.as_array()?;
    let matches = |m: &serde_json::Value, strict_variant: bool| {
        let p = match m.get("platform") {
            Some(p) => p,
            None => return false,
        };
        let s = |k: &str| p.get(k).and_then(|x| x.as_str());
        s("os") == Some(os)
            && s("architecture") == Some(arch)
            && (!strict_variant || variant.is_none() || s("variant") == variant)
    };
    manifests
        .iter()
        .find(|m| matches(m, true))
        .or_else(|| manifests.iter().find(|m| matches(m, false)))
        .and_then(|m| m.get("digest")?.as_str().map(str::to_string))
}

impl Registry for OciRegistry {
    fn manifest(&self, reference: &str, platform: &str) -> Result<RawManifest, RegistryError> {
        let r = parse_reference(reference)?;
        let raw = self.pull_raw(reference, &r)?;
        if !INDEX_TYPES.contains(&raw.media_type.as_str()) {
            return Ok(raw);
        }
        let digest = pick_platform(&raw.bytes, platform)
            .ok_or_else(|| RegistryError::NotFound { what: format!("platform {platform}"), reference: reference.to_string() })?;
        let child = r.clone_with_digest(digest);
        let picked = self.pull_raw(reference, &child)?;
        Ok(RawManifest { index_digest: Some(raw.digest), ..picked })
    }

    fn manifest_raw(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        let r = parse_reference(reference)?;
        self.pull_raw(reference, &r)
    }

    fn fetch_blob(&self, reference: &str, digest: &str, dest: &Path) -> Result<(), RegistryError> {
        let r = parse_reference(reference)?;
        let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)?;
        let file = tokio::fs::File::from_std(tmp.reopen()?);
        let client = self.request_client(&r, false);
        self.runtime.block_on(async {
            let mut file = file;
            client.pull_blob(&r, digest, &mut file).await?;
            tokio::io::AsyncWriteExt::flush(&mut file).await?;
            Ok::<(), OciDistributionError>(())
        })
        .map_err(|e| map_err(reference, &format!("blob {digest}"), e))?;
        // Verify independently of the client.
        let got = super::pull::file_digest(tmp.path())?;
        if got != digest {
            return Err(RegistryError::Transport {
                reference: reference.to_string(),
                message: format!("blob digest mismatch: want {digest}, got {got}"),
            });
        }
        tmp.persist(dest).map_err(|e| RegistryError::Io(e.error))?;
        Ok(())
    }

    fn blob_exists(&self, reference: &str, digest: &str) -> Result<bool, RegistryError> {
        let r = parse_reference(reference)?;
        let client = self.request_client(&r, false);
        self.runtime.block_on(client.blob_exists(&r, digest)).map_err(|e| map_err(reference, &format!("blob {digest}"), e))
    }

    fn push_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        if self.blob_exists(reference, digest)? {
            return Ok(());
        }
        self.upload_blob(reference, digest, path)
    }

    fn upload_blob(&self, reference: &str, digest: &str, path: &Path) -> Result<(), RegistryError> {
        let r = parse_reference(reference)?;
        let at = |e: std::io::Error| std::io::Error::new(e.kind(), format!("reading blob {digest} from {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(at)?;
        let len = file.metadata().map_err(at)?.len();
        if len == 0 {
            // Registries take an empty blob only as a PUT with no body,
            // which oci-client refuses to send; no image needs one.
            return Err(RegistryError::Transport {
                reference: reference.to_string(),
                message: format!("blob {digest} at {} is empty; cannot upload an empty blob", path.display()),
            });
        }
        let pushed = if len > self.chunked_above.load(std::sync::atomic::Ordering::Relaxed) {
            let data = self.mapped(digest, &file, len).map_err(at)?;
            let client = self.request_client(&r, true);
            self.runtime.block_on(client.push_blob(&r, data, digest))
        } else if len > MAP_ABOVE {
            // One PUT straight from the mapped file: on a fast link the
            // round trips of 4 MiB chunks cost more than they save.
            let data = self.mapped(digest, &file, len).map_err(at)?;
            let client = self.request_client(&r, false);
            self.runtime.block_on(client.push_blob(&r, data, digest))
        } else {
            let data = std::fs::read(path).map_err(at)?;
            let client = self.request_client(&r, false);
            self.runtime.block_on(client.push_blob(&r, data, digest))
        };
        pushed.map_err(|e| map_err(reference, &format!("blob {digest}"), e))?;
        self.uploads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn mount_blob(&self, reference: &str, from: &str, digest: &str) -> Result<bool, RegistryError> {
        let r = parse_reference(reference)?;
        let source = parse_reference(from)?;
        if source.resolve_registry() != r.resolve_registry() || source.repository() == r.repository() {
            return Ok(false);
        }
        let client = self.request_client(&r, false);
        // A registry that does not have the blob (or does not mount) answers
        // 202 and opens an upload instead; the caller then uploads.
        let mounted = self.runtime.block_on(client.mount_blob(&r, &source, digest));
        match mounted {
            Ok(()) => {
                self.mounts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => match map_err(reference, &format!("mounting blob {digest} from {from}"), e) {
                e @ (RegistryError::Unavailable { .. } | RegistryError::Auth { .. }) => Err(e),
                _ => Ok(false),
            },
        }
    }

    fn push_manifest(&self, reference: &str, bytes: &[u8], media_type: &str) -> Result<String, RegistryError> {
        let r = parse_reference(reference)?;
        let content_type = media_type.parse().map_err(|e| RegistryError::Transport {
            reference: reference.to_string(),
            message: format!("bad media type {media_type}: {e}"),
        })?;
        let client = self.request_client(&r, false);
        self.runtime
            .block_on(client.push_manifest_raw(&r, bytes.to_vec(), content_type))
            .map_err(|e| map_err(reference, "manifest", e))?;
        Ok(digest_of(bytes))
    }
}

/// Where distributions keep the system's CA bundle, one PEM file.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Make TLS trust the system's CA bundle file alone: set `SSL_CERT_FILE` to
/// it when neither `SSL_CERT_FILE` nor `SSL_CERT_DIR` is set. The roots
/// every oci-client client loads (also the default client it builds and
/// drops in passing) then come from that one file, instead of from it and
/// every file of the certificate directory (hundreds of files). Call it
/// first in `main`, before any thread starts: it changes the environment.
pub fn trust_system_bundle() {
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        return;
    }
    if let Some(p) = CA_BUNDLES.iter().find(|p| Path::new(p).is_file()) {
        std::env::set_var("SSL_CERT_FILE", p);
    }
}

/// A client for `protocol`.
fn make_client(protocol: ClientProtocol, monolithic: bool) -> Client {
    Client::new(ClientConfig {
        protocol,
        use_monolithic_push: monolithic,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.2.1"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("docker.io"));
        assert!(!is_loopback("index.docker.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn docker_hub_shorthand_is_https() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(r.repository(), "library/busybox");
        assert!(!is_loopback(r.resolve_registry()));
        let r = parse_reference("127.0.0.1:5000/test/img:v1").unwrap();
        assert!(is_loopback(r.resolve_registry()));
        assert_eq!(r.repository(), "test/img");
    }

    #[test]
    fn credential_keys_follow_docker() {
        assert_eq!(credential_keys("docker.io")[0], "https://index.docker.io/v1/");
        assert_eq!(credential_keys("127.0.0.1:5000"), ["127.0.0.1:5000", "https://127.0.0.1:5000", "http://127.0.0.1:5000"]);
    }

    #[test]
    fn platform_pick() {
        let idx = br#"{"manifests":[
            {"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:b","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(pick_platform(idx, "linux/amd64").as_deref(), Some("sha256:b"));
        assert_eq!(pick_platform(idx, "linux/arm64/v8").as_deref(), Some("sha256:a"));
        assert_eq!(pick_platform(idx, "linux/arm64").as_deref(), Some("sha256:a"));
        assert_eq!(pick_platform(idx, "linux/s390x"), None);
    }
}
