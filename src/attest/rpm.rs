//! Installed RPM packages, for the SBOM: the `Packages` table of an image's
//! SQLite rpm database (`var/lib/rpm/rpmdb.sqlite`, or
//! `usr/lib/sysimage/rpm/rpmdb.sqlite`), read with the `sqlite3` tool
//! (opened read-only and immutable), each row an RPM header blob parsed
//! here: name, [epoch:]version-release, arch, licence, source RPM, packager
//! or vendor. Older Berkeley DB (`Packages`) and ndb databases are not read.

use super::sbom::Package;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const VENDOR: u32 = 1011;
const LICENSE: u32 = 1014;
const PACKAGER: u32 = 1015;
const ARCH: u32 = 1022;
const SOURCERPM: u32 = 1044;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The string and int32 tags of an RPM header blob (as stored in the
/// database: no lead, no magic; index count, data length, index, data).
pub fn parse_header(b: &[u8]) -> Option<BTreeMap<u32, String>> {
    let il = be32(b, 0)? as usize;
    let dl = be32(b, 4)? as usize;
    let data_at = 8usize.checked_add(il.checked_mul(16)?)?;
    let data = b.get(data_at..data_at.checked_add(dl)?)?;
    let mut out = BTreeMap::new();
    for i in 0..il {
        let e = 8 + 16 * i;
        let (tag, kind, off, count) = (be32(b, e)?, be32(b, e + 4)?, be32(b, e + 8)? as usize, be32(b, e + 12)?);
        let value = match kind {
            // STRING, STRING_ARRAY, I18NSTRING: the first NUL-terminated string.
            6 | 8 | 9 => {
                let rest = data.get(off..)?;
                let end = rest.iter().position(|c| *c == 0)?;
                String::from_utf8_lossy(&rest[..end]).into_owned()
            }
            // INT32.
            4 if count >= 1 => be32(data, off)?.to_string(),
            _ => continue,
        };
        out.insert(tag, value);
    }
    Some(out)
}

/// A package from a parsed header (None without a name or version).
pub fn package(tags: &BTreeMap<u32, String>, db: &str) -> Option<Package> {
    let name = tags.get(&NAME)?.clone();
    let mut version = tags.get(&VERSION)?.clone();
    if let Some(r) = tags.get(&RELEASE) {
        version = format!("{version}-{r}");
    }
    if let Some(e) = tags.get(&EPOCH).filter(|e| e.as_str() != "0") {
        version = format!("{e}:{version}");
    }
    Some(Package {
        kind: "rpm",
        name,
        version,
        arch: tags.get(&ARCH).cloned(),
        origin: tags.get(&SOURCERPM).cloned(),
        maintainer: tags.get(&PACKAGER).or_else(|| tags.get(&VENDOR)).cloned(),
        licenses: tags.get(&LICENSE).map(|l| vec![l.clone()]).unwrap_or_default(),
        db: db.to_string(),
    })
}

/// What reading the rpm database of the tree at `root` gave.
pub enum Found {
    /// No rpm database.
    None,
    /// The packages.
    Packages(Vec<Package>),
    /// A database that could not be read, and why.
    Unread(String),
}

/// Read the rpm database of the tree at `root`.
pub fn scan(root: &Path) -> Found {
    let Some(rel) = ["var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"].into_iter().find(|p| root.join(p).is_file()) else {
        if root.join("var/lib/rpm/Packages").exists() || root.join("var/lib/rpm/Packages.db").exists() {
            return Found::Unread("its rpm database is Berkeley DB or ndb, which stromatekt does not read".into());
        }
        return Found::None;
    };
    let uri = format!("file:{}?immutable=1", root.join(rel).display());
    let out = Command::new("sqlite3")
        .args(["-readonly", "-batch", "-noheader", &uri, "SELECT hex(blob) FROM Packages ORDER BY hnum"])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => return Found::Unread(format!("sqlite3 could not read /{rel}: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => return Found::Unread(format!("/{rel} needs the sqlite3 tool to be read ({e})")),
    };
    let mut pkgs = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(blob) = hex::decode(line.trim()) else { continue };
        if let Some(p) = parse_header(&blob).and_then(|t| package(&t, &format!("/{rel}"))) {
            pkgs.push(p);
        }
    }
    Found::Packages(pkgs)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An RPM header blob with string tags and an int32 epoch.
    pub(crate) fn header(strings: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
        let mut index = vec![];
        let mut data = vec![];
        if let Some(e) = epoch {
            index.push((EPOCH, 4u32, data.len() as u32, 1u32));
            data.extend_from_slice(&e.to_be_bytes());
        }
        for (tag, s) in strings {
            index.push((*tag, 6, data.len() as u32, 1));
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        let mut b = vec![];
        b.extend_from_slice(&(index.len() as u32).to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for (t, k, o, c) in index {
            for v in [t, k, o, c] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn headers_become_packages() {
        let h = header(&[(NAME, "bash"), (VERSION, "5.2.26"), (RELEASE, "3.fc40"), (ARCH, "x86_64"), (LICENSE, "GPL-3.0-or-later"), (SOURCERPM, "bash-5.2.26-3.fc40.src.rpm")], Some(1));
        let p = package(&parse_header(&h).unwrap(), "/var/lib/rpm/rpmdb.sqlite").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str(), p.arch.as_deref()), ("bash", "1:5.2.26-3.fc40", Some("x86_64")));
        assert_eq!(p.licenses, vec!["GPL-3.0-or-later"]);
        assert!(parse_header(&h[..20]).is_none(), "a truncated header is refused");
    }

    #[test]
    fn reads_an_sqlite_database_when_sqlite3_is_there() {
        if Command::new("sqlite3").arg("-version").output().is_err() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "sqlite3 is missing (scripts/install-deps.sh installs it)");
            eprintln!("skipped: sqlite3 is not installed (scripts/install-deps.sh)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        let h = hex::encode(header(&[(NAME, "zlib"), (VERSION, "1.3"), (RELEASE, "1")], None));
        let sql = format!("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); INSERT INTO Packages (blob) VALUES (X'{h}');");
        let o = Command::new("sqlite3").arg(dir.join("rpmdb.sqlite")).arg(sql).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        match scan(t.path()) {
            Found::Packages(p) => assert_eq!(p.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect::<Vec<_>>(), vec![("zlib", "1.3-1")]),
            Found::Unread(e) => panic!("{e}"),
            Found::None => panic!("no database found"),
        }
    }
}
