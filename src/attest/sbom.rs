//! The SBOM: an SPDX 2.3 JSON document listing what the image's own package
//! databases say is installed, plus the base images it was built on.
//!
//! Read from the final filesystem (never by running anything in it):
//! - dpkg: `var/lib/dpkg/status` (and distroless `var/lib/dpkg/status.d/*`),
//!   packages whose status is installed; licences from the machine-readable
//!   `usr/share/doc/PKG/copyright` (`License:` fields) when present;
//! - apk: `lib/apk/db/installed` (`P:` name, `V:` version, `L:` licence,
//!   `o:` origin, `m:` maintainer, `A:` arch).
//!
//! - rpm: the SQLite database (`var/lib/rpm/rpmdb.sqlite`), see [`super::rpm`];
//!   a database that cannot be read (Berkeley DB, no `sqlite3` tool) is
//!   named in the document's comment and its packages are not listed.
//!
//! BuildKit runs a scanner image (`docker/buildkit-syft-scanner`) for this;
//! stromatekt reads the databases itself, so `generator=` is accepted and
//! ignored. The shape follows what Syft writes (a package per entry with a
//! `pkg:deb|apk/...` purl, `DESCRIBES`/`CONTAINS` relationships).

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// SPDX predicate type of in-toto statements.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// `deb`, `apk` or `rpm`.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture, if recorded.
    pub arch: Option<String>,
    /// The source package (deb `Source:`) or origin (apk `o:`), when it differs from the name.
    pub origin: Option<String>,
    /// Maintainer, if recorded.
    pub maintainer: Option<String>,
    /// Licences as recorded (deb copyright `License:`, apk `L:`).
    pub licenses: Vec<String>,
    /// The database it was read from (path in the image).
    pub db: String,
}

/// The image's OS, from `etc/os-release` (`ID`, `VERSION_ID`).
fn os_release(root: &Path) -> (Option<String>, Option<String>) {
    let text = fs::read_to_string(root.join("etc/os-release")).or_else(|_| fs::read_to_string(root.join("usr/lib/os-release"))).unwrap_or_default();
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => id = Some(v),
                "VERSION_ID" => version = Some(v),
                _ => {}
            }
        }
    }
    (id, version)
}

/// Debian copyright files (DEP-5) list `License:` fields; older free-form ones have none.
fn deb_licenses(root: &Path, name: &str) -> Vec<String> {
    let Ok(text) = fs::read_to_string(root.join("usr/share/doc").join(name).join("copyright")) else { return vec![] };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("License:") {
            let v = v.trim();
            if !v.is_empty() {
                out.insert(v.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// Parse dpkg status paragraphs.
fn dpkg_paragraphs(text: &str, root: &Path, db: &str, out: &mut Vec<Package>) {
    for para in text.split("\n\n") {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut last = String::new();
        for line in para.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                continue; // continuation of a multi-line field (Description, Conffiles)
            }
            if let Some((k, v)) = line.split_once(':') {
                last = k.to_string();
                fields.insert(last.clone(), v.trim().to_string());
            }
        }
        let _ = last;
        let (Some(name), Some(version)) = (fields.get("Package"), fields.get("Version")) else { continue };
        // dpkg-query -W lists every package it knows but those "not-installed"
        // (config-files ones too, which have a version); Syft and we keep
        // the installed ones, which is the same set on an image.
        let status = fields.get("Status").map(String::as_str).unwrap_or("install ok installed");
        if !status.ends_with(" installed") {
            continue;
        }
        let origin = fields.get("Source").map(|s| s.split_whitespace().next().unwrap_or(s).to_string()).filter(|s| s != name);
        out.push(Package {
            kind: "deb",
            name: name.clone(),
            version: version.clone(),
            arch: fields.get("Architecture").cloned(),
            origin,
            maintainer: fields.get("Maintainer").cloned(),
            licenses: deb_licenses(root, name),
            db: db.to_string(),
        });
    }
}

/// Parse the apk installed database.
fn apk_db(text: &str, db: &str, out: &mut Vec<Package>) {
    for para in text.split("\n\n") {
        let mut f: BTreeMap<char, String> = BTreeMap::new();
        for line in para.lines() {
            let mut c = line.chars();
            if let (Some(k), Some(':')) = (c.next(), c.next()) {
                f.entry(k).or_insert_with(|| c.as_str().to_string());
            }
        }
        let (Some(name), Some(version)) = (f.get(&'P'), f.get(&'V')) else { continue };
        out.push(Package {
            kind: "apk",
            name: name.clone(),
            version: version.clone(),
            arch: f.get(&'A').cloned(),
            origin: f.get(&'o').cloned().filter(|o| o != name),
            maintainer: f.get(&'m').cloned(),
            licenses: f.get(&'L').map(|l| vec![l.clone()]).unwrap_or_default(),
            db: db.to_string(),
        });
    }
}

/// Every package the image's databases list, sorted; and, when an RPM
/// database was seen but not read, why.
pub fn scan(root: &Path) -> (Vec<Package>, Option<String>) {
    let mut out = vec![];
    if let Ok(text) = fs::read_to_string(root.join("var/lib/dpkg/status")) {
        dpkg_paragraphs(&text, root, "/var/lib/dpkg/status", &mut out);
    }
    if let Ok(dir) = fs::read_dir(root.join("var/lib/dpkg/status.d")) {
        let mut names: Vec<_> = dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_none_or(|e| e != "md5sums")).collect();
        names.sort();
        for p in names {
            if let Ok(text) = fs::read_to_string(&p) {
                let db = format!("/var/lib/dpkg/status.d/{}", p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
                dpkg_paragraphs(&text, root, &db, &mut out);
            }
        }
    }
    if let Ok(text) = fs::read_to_string(root.join("lib/apk/db/installed")) {
        apk_db(&text, "/lib/apk/db/installed", &mut out);
    }
    let unread = match super::rpm::scan(root) {
        super::rpm::Found::None => None,
        super::rpm::Found::Packages(p) => {
            out.extend(p);
            None
        }
        super::rpm::Found::Unread(why) => Some(why),
    };
    out.sort();
    out.dedup();
    (out, unread)
}

/// Debian short licence names -> SPDX identifiers; anything else becomes a
/// `LicenseRef-` so the expression stays valid SPDX.
fn spdx_license(l: &str) -> String {
    let known = [
        ("GPL-2", "GPL-2.0-only"),
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("GPL-3+", "GPL-3.0-or-later"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("LGPL-2+", "LGPL-2.0-or-later"),
        ("LGPL-2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPL-3", "LGPL-3.0-only"),
        ("LGPL-3+", "LGPL-3.0-or-later"),
        ("Expat", "MIT"),
        ("BSD-2-clause", "BSD-2-Clause"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("BSD-4-clause", "BSD-4-Clause"),
        ("Artistic", "Artistic-1.0"),
        ("public-domain", "LicenseRef-public-domain"),
    ];
    if let Some((_, s)) = known.iter().find(|(d, _)| d.eq_ignore_ascii_case(l)) {
        return s.to_string();
    }
    let simple = l.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    let spdx_like = ["MIT", "Apache-2.0", "ISC", "Zlib", "MPL-2.0", "BSD-3-Clause", "BSD-2-Clause", "0BSD", "CC0-1.0", "OpenSSL", "curl", "GPL-2.0-only", "GPL-2.0-or-later"];
    if spdx_like.contains(&l) {
        return l.to_string();
    }
    let clean: String = l.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    if simple {
        format!("LicenseRef-{clean}")
    } else {
        format!("LicenseRef-{}", clean.trim_matches('-'))
    }
}

fn purl(p: &Package, distro: &(Option<String>, Option<String>)) -> String {
    let ns = distro.0.clone().unwrap_or_else(|| match p.kind {
        "deb" => "debian".into(),
        "rpm" => "redhat".into(),
        _ => "alpine".into(),
    });
    let enc = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-._~".contains(c) { c.to_string() } else { format!("%{:02X}", c as u32) })
            .collect()
    };
    let mut q = vec![];
    if let Some(a) = &p.arch {
        q.push(format!("arch={}", enc(a)));
    }
    if let (Some(id), Some(v)) = distro {
        q.push(format!("distro={}", enc(&format!("{id}-{v}"))));
    }
    if let Some(o) = &p.origin {
        q.push(format!("upstream={}", enc(o)));
    }
    let mut s = format!("pkg:{}/{}/{}@{}", p.kind, enc(&ns), enc(&p.name), enc(&p.version));
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q.join("&"));
    }
    s
}

fn spdx_id(prefix: &str, s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    format!("SPDXRef-{prefix}-{clean}")
}

/// A base image the result was built on, for the SBOM.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference as written in FROM.
    pub reference: String,
    /// Its package URL (with platform).
    pub purl: String,
    /// Digest of its manifest.
    pub digest: String,
}

/// An SPDX package for an image (the one described, or a base image): no
/// licence or download information is asserted.
fn container_package(name: &str, id: &str, version: &str) -> Value {
    json!({
        "name": name,
        "SPDXID": id,
        "versionInfo": version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })
}

/// The SPDX 2.3 document for an image (`name`: its first name, or `image`).
pub fn document(name: &str, packages: &[Package], bases: &[BaseImage], rpm_unread: Option<&str>, distro: (Option<String>, Option<String>), created: &str) -> Value {
    let root_id = "SPDXRef-image".to_string();
    let mut pkgs = vec![container_package(name, &root_id, "")];
    let mut rels = vec![json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": root_id })];
    let mut seen = BTreeSet::new();
    for b in bases {
        let hex = b.digest.trim_start_matches("sha256:");
        let id = spdx_id("base", &format!("{}-{}", b.reference, &hex[..hex.len().min(12)]));
        if !seen.insert(id.clone()) {
            continue;
        }
        let mut pkg = container_package(&b.reference, &id, &b.digest);
        pkg["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": b.digest.trim_start_matches("sha256:") }]);
        pkg["externalRefs"] = json!([{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": b.purl }]);
        pkgs.push(pkg);
        rels.push(json!({ "spdxElementId": root_id, "relationshipType": "DESCENDANT_OF", "relatedSpdxElement": id }));
    }
    for p in packages {
        let id = spdx_id(p.kind, &format!("{}-{}", p.name, p.version));
        if !seen.insert(id.clone()) {
            continue;
        }
        let declared = if p.licenses.is_empty() {
            "NOASSERTION".to_string()
        } else {
            p.licenses.iter().map(|l| spdx_license(l)).collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(" AND ")
        };
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "supplier": p.maintainer.as_ref().map(|m| format!("Person: {m}")).unwrap_or_else(|| "NOASSERTION".into()),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("acquired package info from {} DB: {}", db_kind(p.kind), p.db),
            "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl(p, &distro) }],
            "primaryPackagePurpose": "LIBRARY",
        });
        if let Some(o) = &p.origin {
            pkg["sourceInfo"] = json!(format!("acquired package info from {} DB: {} (origin: {o})", db_kind(p.kind), p.db));
        }
        pkgs.push(pkg);
        rels.push(json!({ "spdxElementId": root_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id }));
    }
    let mut comment = "Packages from the image's dpkg, apk and rpm databases, and its base images; written by stromatekt.".to_string();
    if let Some(why) = rpm_unread {
        comment.push_str(&format!(" The image's RPM packages are not listed: {why}."));
    }
    // The namespace is made from the content, so equal images get equal documents.
    let ns_hash = crate::image::manifest::digest_of(serde_json::to_vec(&(&pkgs, &rels)).unwrap_or_default().as_slice());
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://stromatekt.invalid/spdx/{}", ns_hash.trim_start_matches("sha256:")),
        "comment": comment,
        "creationInfo": {
            "created": created,
            "creators": [format!("Tool: stromatekt-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": pkgs,
        "relationships": rels,
    })
}

fn db_kind(kind: &str) -> &'static str {
    match kind {
        "deb" => "DPKG",
        "rpm" => "RPM",
        _ => "APK",
    }
}

/// The OS of the tree at `root`.
pub fn distro(root: &Path) -> (Option<String>, Option<String>) {
    os_release(root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_dpkg_and_apk_databases() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        fs::write(
            r.join("var/lib/dpkg/status"),
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9\nMaintainer: GNU <a@b>\nDescription: x\n more\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
             Package: bash\nStatus: install ok installed\nVersion: 5.2-2\n",
        )
        .unwrap();
        fs::create_dir_all(r.join("usr/share/doc/bash")).unwrap();
        fs::write(r.join("usr/share/doc/bash/copyright"), "Format: x\n\nFiles: *\nLicense: GPL-3+\n\nFiles: y\nLicense: Expat\n").unwrap();
        fs::create_dir_all(r.join("lib/apk/db")).unwrap();
        fs::write(r.join("lib/apk/db/installed"), "C:Q1\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nm:Someone <s@x>\n\n").unwrap();
        fs::write(r.join("etc-os"), "").unwrap();
        let (pkgs, rpm) = scan(r);
        assert!(rpm.is_none());
        let names: Vec<(&str, &str)> = pkgs.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, vec![("musl", "1.2.4-r2"), ("bash", "5.2-2"), ("libc6", "2.36-9")]);
        let libc = pkgs.iter().find(|p| p.name == "libc6").unwrap();
        assert_eq!(libc.origin.as_deref(), Some("glibc"));
        let doc = document("img", &pkgs, &[], None, (Some("debian".into()), Some("12".into())), "1970-01-01T00:00:00Z");
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let bash = doc["packages"].as_array().unwrap().iter().find(|p| p["name"] == "bash").unwrap();
        assert_eq!(bash["licenseDeclared"], "GPL-3.0-or-later AND MIT");
        let libc = doc["packages"].as_array().unwrap().iter().find(|p| p["name"] == "libc6").unwrap();
        assert_eq!(libc["externalRefs"][0]["referenceLocator"], "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12&upstream=glibc");
        assert_eq!(doc, document("img", &pkgs, &[], None, (Some("debian".into()), Some("12".into())), "1970-01-01T00:00:00Z"), "deterministic");
    }
}
