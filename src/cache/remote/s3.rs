//! `type=s3`: the build cache in an S3 bucket (AWS, or any S3-compatible
//! server through `endpoint_url`), laid out as BuildKit's S3 cache:
//! - each blob at `<prefix><blobs_prefix><digest>` (default
//!   `blobs/sha256:…`); a blob already there is not uploaded again, only
//!   "touched" (copied onto itself through a temporary key) when it is older
//!   than `touch_refresh`, so a bucket expiry rule keeps what builds use;
//! - the cache manifest at `<prefix><manifests_prefix><name>` for each
//!   `name` (default `manifests/buildkit`), rewritten on every export.
//!
//! The manifest object is our [`CacheConfig`] JSON (BuildKit writes its own
//! cache config there; the two formats are not interchangeable). Import
//! reads the first name's manifest; the blobs are downloaded later, only
//! those a missing step needs. Credentials: [`super::aws_config`].

use super::aws_config;
use super::spec::S3Spec;
use super::{CacheConfig, CacheExport};
use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt as _;

/// Blobs uploaded at the same time (BuildKit's `upload_parallelism` default).
const PARALLEL_UPLOADS: usize = 4;

/// Largest object S3 copies in one request; a bigger blob due a touch is
/// uploaded again instead.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// A connection to the bucket of one `type=s3` cache option.
pub struct S3Cache {
    spec: S3Spec,
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Cache").field("bucket", &self.spec.bucket).finish()
    }
}

/// Whether `bucket` can be a host name label (else the bucket goes in the
/// path, as the AWS SDKs do).
fn dns_compatible(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !bucket.starts_with('-')
        && !bucket.ends_with('-')
}

/// `http://host:port/p` -> `http://BUCKET.host:port/p`, or `None` when the
/// host is an IP address or `localhost` (the SDKs use the path style there).
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Option<String> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    if host.parse::<std::net::Ipv4Addr>().is_ok() || host.starts_with('[') || host == "localhost" || !dns_compatible(bucket) {
        return None;
    }
    Some(format!("{scheme}://{bucket}.{rest}"))
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl S3Cache {
    /// Connect to the bucket `spec` names (no request is made yet).
    pub fn connect(spec: &S3Spec) -> Result<S3Cache> {
        aws_config::check_files()?;
        let region = aws_config::region(spec)?;
        let creds = aws_config::credentials(spec)?;
        let options = ClientOptions::new().with_connect_timeout(Duration::from_secs(10)).with_timeout(Duration::from_secs(30 * 60));
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(options)
            .with_bucket_name(&spec.bucket)
            .with_region(&region)
            .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(60), ..RetryConfig::default() });
        match &spec.endpoint_url {
            Some(ep) => {
                let virt = if spec.use_path_style { None } else { virtual_hosted_endpoint(ep, &spec.bucket) };
                b = b
                    .with_allow_http(ep.starts_with("http://"))
                    .with_virtual_hosted_style_request(virt.is_some())
                    .with_endpoint(virt.unwrap_or_else(|| ep.trim_end_matches('/').to_string()));
            }
            None => b = b.with_virtual_hosted_style_request(dns_compatible(&spec.bucket)),
        }
        if let Some(c) = creds {
            b = b.with_access_key_id(c.key_id).with_secret_access_key(c.secret);
            if let Some(t) = c.token {
                b = b.with_token(t);
            }
        }
        let store = b.build().with_context(|| format!("setting up the S3 client for bucket {}", spec.bucket))?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the S3 client")?;
        Ok(S3Cache { spec: spec.clone(), store: Arc::new(store), runtime })
    }

    /// `s3://BUCKET/KEY`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.spec.bucket)
    }

    /// Where the cache is (`s3://BUCKET/<prefix><manifests_prefix><name>`).
    pub fn origin(&self) -> String {
        self.url(&self.spec.manifest_key(&self.spec.names[0]))
    }

    fn key(&self, key: &str) -> Result<Key> {
        Key::parse(key).map_err(|e| {
            anyhow!("S3 key {key:?} (from prefix, blobs_prefix, manifests_prefix and name): {e}; use plain path segments without '//' or special characters")
        })
    }

    /// An error for a failed request: "bucket does not exist" when the
    /// server said so (or answered 404 to a listing).
    fn explain(&self, e: object_store::Error, what: &str) -> anyhow::Error {
        let mut text = format!("{e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        if text.contains("NoSuchBucket") || (what == "listing" && matches!(e, object_store::Error::NotFound { .. })) {
            return anyhow!(
                "S3 bucket {:?} does not exist{} (create it, or fix bucket= in the cache option)",
                self.spec.bucket,
                self.spec.endpoint_url.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
            );
        }
        anyhow!(e).context(format!("S3 {what} in bucket {}", self.spec.bucket))
    }

    /// Fail with a clear message unless the bucket exists and can be listed.
    pub fn check_bucket(&self) -> Result<()> {
        let prefix = self.spec.prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { None } else { Some(self.key(prefix)?) };
        self.runtime.block_on(self.store.list_with_delimiter(prefix.as_ref())).map_err(|e| self.explain(e, "listing"))?;
        Ok(())
    }

    /// The cache manifest of the first name, `None` when there is none.
    pub fn read_manifest(&self) -> Result<Option<Vec<u8>>> {
        let key = self.key(&self.spec.manifest_key(&self.spec.names[0]))?;
        let got = self.runtime.block_on(async { self.store.get(&key).await?.bytes().await });
        match got {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => {
                self.check_bucket()?;
                Ok(None)
            }
            Err(e) => Err(self.explain(e, &format!("reading {}", self.url(key.as_ref())))),
        }
    }

    /// Download blob `digest` into `dest` (the caller checks the digest).
    pub fn fetch_blob(&self, digest: &str, dest: &Path) -> Result<()> {
        let key = self.key(&self.spec.blob_key(digest))?;
        let url = self.url(key.as_ref());
        self.runtime
            .block_on(async {
                let mut file = tokio::fs::File::create(dest).await.map_err(|e| anyhow!(e).context(format!("creating {}", dest.display())))?;
                let got = self.store.get(&key).await.map_err(|e| self.explain(e, &format!("reading {url}")))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.explain(e, &format!("reading {url}")))?;
                    file.write_all(&chunk).await.with_context(|| format!("writing {}", dest.display()))?;
                }
                file.flush().await.with_context(|| format!("writing {}", dest.display()))?;
                Ok::<(), anyhow::Error>(())
            })
            .with_context(|| format!("downloading {url}"))
    }

    /// `--cache-to`: upload the blobs of `exp` the bucket lacks (touching
    /// the old ones it has), then write `manifest` under every name.
    /// Returns how many blobs were uploaded.
    pub fn export(&self, exp: &CacheExport, manifest: &[u8]) -> Result<usize> {
        self.check_bucket()?;
        let names: Vec<Key> = self.spec.names.iter().map(|n| self.key(&self.spec.manifest_key(n))).collect::<Result<_>>()?;
        let uploaded = self.runtime.block_on(async {
            let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL_UPLOADS));
            let mut tasks = tokio::task::JoinSet::new();
            for (d, path) in &exp.blobs {
                let key = self.key(&self.spec.blob_key(&d.digest))?;
                let (store, path, gate) = (self.store.clone(), path.clone(), gate.clone());
                let (refresh, size, url) = (self.spec.touch_refresh, d.size, self.url(key.as_ref()));
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    upload_blob(&store, &key, &path, size, refresh).await.with_context(|| format!("uploading {} to {url}", path.display()))
                });
            }
            let mut uploaded = 0;
            while let Some(r) = tasks.join_next().await {
                if r.map_err(|e| anyhow!("upload task failed: {e}"))?? {
                    uploaded += 1;
                }
            }
            Ok::<usize, anyhow::Error>(uploaded)
        });
        let uploaded = uploaded.with_context(|| format!("exporting the build cache to s3://{}", self.spec.bucket))?;
        for key in &names {
            self.runtime
                .block_on(self.store.put(key, manifest.to_vec().into()))
                .map_err(|e| self.explain(e, &format!("writing the cache manifest {}", self.url(key.as_ref()))))?;
        }
        Ok(uploaded)
    }
}

/// Upload `path` as `key` unless the bucket has it; a copy there older than
/// `refresh` is touched. `Ok(true)` when uploaded.
async fn upload_blob(store: &AmazonS3, key: &Key, path: &Path, size: u64, refresh: Duration) -> Result<bool> {
    match store.head(key).await {
        Ok(meta) if meta.size == size => {
            let age = now_secs().saturating_sub(meta.last_modified.timestamp());
            if refresh.is_zero() || age >= i64::try_from(refresh.as_secs()).unwrap_or(i64::MAX) {
                if size < MAX_COPY {
                    let tmp = Key::parse(format!("{key}.touch-{}", std::process::id())).map_err(|e| anyhow!("{e}"))?;
                    store.copy(key, &tmp).await?;
                    let back = store.copy(&tmp, key).await;
                    let _ = store.delete(&tmp).await;
                    back?;
                } else {
                    put_file(store, key, path).await?;
                }
            }
            Ok(false)
        }
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {
            put_file(store, key, path).await?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stream file `path` to `key` (one PUT when small, a multipart upload when large).
async fn put_file(store: &AmazonS3, key: &Key, path: &Path) -> Result<()> {
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let mut w = BufWriter::new(Arc::new(store.clone()) as Arc<dyn ObjectStore>, key.clone());
    tokio::io::copy(&mut file, &mut w).await.with_context(|| format!("uploading {}", path.display()))?;
    w.shutdown().await.with_context(|| format!("finishing the upload of {}", path.display()))?;
    Ok(())
}

/// Parse the manifest object of an S3 cache.
pub fn parse_manifest(bytes: &[u8], origin: &str) -> Result<CacheConfig> {
    let c: CacheConfig = serde_json::from_slice(bytes).with_context(|| {
        format!("{origin}: not a stromatekt build cache manifest (a cache BuildKit exported has another format; export one with stromatekt --cache-to type=s3)")
    })?;
    if c.version == 0 {
        bail!("{origin}: not a stromatekt build cache manifest (no version)");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::progress::Outcome;
    use crate::cache::remote::tests::{build, digests, fake, machine};
    use crate::cache::remote::{export_cache, parse_cache_spec, ImportedCache};
    use std::process::{Child, Command, Stdio};

    /// moto's S3 server (scripts/install-deps.sh) on a free loopback port,
    /// killed by PID when dropped; `None` (after `test_skip::skip`, a
    /// failure unless skips are allowed) when it is not installed.
    struct Moto(Child, u16);

    impl Moto {
        fn start() -> Option<Moto> {
            let venv = std::env::var_os("MOTO_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| "/opt/stromatekt/moto".into());
            if !venv.join("bin/moto_server").is_file() {
                crate::test_skip::skip(&format!("moto is not installed at {} (scripts/install-deps.sh)", venv.display()));
                return None;
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(venv.join("bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let m = Moto(child, port);
            let t = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(60), "moto did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            let py = format!(
                "import boto3\nboto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', \
                 aws_access_key_id='t', aws_secret_access_key='t').create_bucket(Bucket='cache')"
            );
            assert!(Command::new(venv.join("bin/python")).arg("-c").arg(py).status().unwrap().success());
            Some(m)
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Export (mode=max) from one store, import on a fresh one: every step
    /// cached, no container, same layers, each blob downloaded once; a
    /// second export uploads nothing; a missing bucket is named.
    #[test]
    fn round_trip_through_an_s3_server() {
        let Some(moto) = Moto::start() else { return };
        let opt = |rest: &str| {
            format!(
                "type=s3,region=us-east-1,endpoint_url=http://127.0.0.1:{},access_key_id=t,secret_access_key=t{rest}",
                moto.1
            )
        };
        let a = machine();
        let exec_a = fake();
        let (st_a, _, rec) = build(&a, &exec_a, None);
        let to = parse_cache_spec(&opt(",bucket=cache,mode=max,prefix=p/,name=one;two")).unwrap();
        let sum = export_cache(&a.store, &rec, &[&st_a], &to, None).unwrap();
        assert!(sum.blobs > 0);
        assert_eq!(sum.uploaded, Some(sum.blobs));
        assert_eq!(export_cache(&a.store, &rec, &[&st_a], &to, None).unwrap().uploaded, Some(0));
        let touch = parse_cache_spec(&opt(",bucket=cache,mode=max,prefix=p/,name=one,touch_refresh=0s")).unwrap();
        assert_eq!(export_cache(&a.store, &rec, &[&st_a], &touch, None).unwrap().uploaded, Some(0));

        let b = machine();
        let exec_b = fake();
        let imported = Arc::new(ImportedCache::import(&parse_cache_spec(&opt(",bucket=cache,prefix=p/,name=two")).unwrap(), None, "linux/amd64").unwrap());
        assert_eq!(imported.origin(), "s3://cache/p/manifests/two");
        let (st_b, records, _) = build(&b, &exec_b, Some(imported.clone()));
        assert!(exec_b.requests().is_empty());
        assert!(records.iter().all(|r| r.outcome == Outcome::Cached), "{records:?}");
        assert_eq!(digests(&b.store, &st_b), digests(&a.store, &st_a));
        let distinct: std::collections::BTreeSet<&str> =
            imported.config().recipes.values().flat_map(|r| r.layers.iter().map(|l| l.digest.as_str())).collect();
        assert_eq!(imported.downloaded(), distinct.len());

        let missing = parse_cache_spec(&opt(",bucket=nope,mode=max")).unwrap();
        let e = format!("{:#}", export_cache(&a.store, &rec, &[&st_a], &missing, None).unwrap_err());
        assert!(e.contains("S3 bucket \"nope\" does not exist"), "{e}");
        let e = format!("{:#}", ImportedCache::import(&missing, None, "linux/amd64").unwrap_err());
        assert!(e.contains("S3 bucket \"nope\" does not exist"), "{e}");
        let e = format!("{:#}", ImportedCache::import(&parse_cache_spec(&opt(",bucket=cache,name=absent")).unwrap(), None, "x").unwrap_err());
        assert!(e.contains("no build cache at s3://cache/manifests/absent"), "{e}");
    }

    #[test]
    fn bucket_in_host_only_where_the_sdks_put_it() {
        assert_eq!(virtual_hosted_endpoint("https://s3.example.com", "cache"), Some("https://cache.s3.example.com".into()));
        assert_eq!(virtual_hosted_endpoint("http://127.0.0.1:9000", "cache"), None);
        assert_eq!(virtual_hosted_endpoint("http://localhost:9000", "cache"), None);
        assert_eq!(virtual_hosted_endpoint("https://s3.example.com", "My_Bucket"), None);
        assert!(dns_compatible("ci-cache-01"));
        assert!(!dns_compatible("a.b.c"));
    }
}
