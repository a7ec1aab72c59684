//! HTTP(S) downloads: ADD of a URL, a build context or `-f` given as a URL.
//! One blocking GET through reqwest (redirects followed, rustls for https),
//! the body kept with the response's `Last-Modified`, which BuildKit gives
//! the downloaded file as its mtime. What the body becomes (a one-file tree,
//! an unpacked context, a Dockerfile) is the caller's business.

use anyhow::{anyhow, bail, Context as _, Result};
use std::io::Read;
use std::time::Duration;

/// A downloaded body and what BuildKit keeps of its headers.
#[derive(Debug)]
pub struct Download {
    /// The bytes.
    pub body: Vec<u8>,
    /// `Last-Modified`, seconds since the epoch.
    pub mtime: Option<i64>,
}

/// How long a download may stall before it fails.
const TIMEOUT: Duration = Duration::from_secs(300);

/// GET `url` (following up to 10 redirects); a response that is not 2xx is
/// an error naming the URL and the status. `limit` caps the body size.
pub fn download(url: &str, limit: Option<u64>) -> Result<Download> {
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("stromatekt/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .context("setting up the HTTP client")?;
    let resp = client.get(url).send().map_err(|e| anyhow!("GET {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    let mtime = resp.headers().get(reqwest::header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).and_then(parse_http_date);
    let mut body = Vec::new();
    let mut reader: Box<dyn Read> = match limit {
        Some(n) => Box::new(resp.take(n + 1)),
        None => Box::new(resp),
    };
    reader.read_to_end(&mut body).map_err(|e| anyhow!("GET {url}: reading the body: {e}"))?;
    if let Some(n) = limit {
        if body.len() as u64 > n {
            bail!("GET {url}: the body is bigger than the allowed {n} bytes");
        }
    }
    Ok(Download { body, mtime })
}

/// An error with its causes (reqwest's own message is terse: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) -> epoch seconds.
pub fn parse_http_date(v: &str) -> Option<i64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, _] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].iter().position(|m| m == mon)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else { return None };
    // Days from civil (Howard Hinnant).
    let y2 = if month <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// Answers each connection with `responses[i]` in turn.
    fn serve(responses: Vec<String>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (conn, resp) in listener.incoming().zip(responses) {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                let _ = s.write_all(resp.as_bytes());
            }
        });
        port
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn redirects_chunks_and_errors() {
        let port = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789".into(),
        ]);
        let d = download(&format!("http://127.0.0.1:{port}/a"), None).unwrap();
        assert_eq!((d.body.as_slice(), d.mtime), (&b"hello"[..], Some(784111777)));
        let url = format!("http://127.0.0.1:{port}/missing");
        let e = download(&url, None).unwrap_err().to_string();
        assert!(e.contains(&url) && e.contains("404"), "{e}");
        let e = download(&format!("http://127.0.0.1:{port}/big"), Some(4)).unwrap_err().to_string();
        assert!(e.contains("bigger"), "{e}");
    }
}
