//! The hostile-bundle corpus: every bundle here is built in the test as real zip bytes,
//! fed through the same pipeline an installer runs (checksum → read → verify → check →
//! upgrade check → extract), and must be refused with its specific error, with nothing
//! written anywhere but the test's own temporary folder (and there, nothing at all).
//! Then the round trips that must work: pack → sign → verify → extract, and key rotation.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use aisa_miniapp::bundle::BundleError;
use aisa_miniapp::check::Problem;
use aisa_miniapp::extract::{ExtractError, extract};
use aisa_miniapp::upgrade::{UpgradeError, check_upgrade};
use aisa_miniapp::wasm::WasmProblem;
use aisa_miniapp::{
    Bundle, CheckError, SecretKey, TrustedKeys, VerifyError, check, checksum, sign, verify,
};
use semver::Version;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

// ---------------------------------------------------------------------------------------
// Building bundles

fn manifest(id: &str, version: &str, entry: &str) -> Vec<u8> {
    serde_json::json!({
        "id": id, "name": "Test App", "version": version, "description": "A test app.",
        "category": "writing", "author": {"name": "Tester"}, "entry": entry,
        "runtime": ">=0.1.0, <0.2.0"
    })
    .to_string()
    .into_bytes()
}

fn common(entry: &str, permissions: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("manifest.json".into(), manifest("test-app", "1.2.0", entry));
    files.insert(
        "action-schema.json".into(),
        br#"{"write": {"type": "object", "title": "Write", "required": ["topic"],
             "properties": {"topic": {"type": "string", "minLength": 1}}}}"#
            .to_vec(),
    );
    files.insert(
        "ui-schema.json".into(),
        br#"{"write": {"topic": {"ui:autofocus": true}}}"#.to_vec(),
    );
    files.insert("permissions.json".into(), permissions.as_bytes().to_vec());
    files
}

const BOT_LOGIC: &str = r#"import { shout } from './tools.js';
export async function write(payload, context) {
  for await (const chunk of context.ai.generateText({ prompt: payload.topic })) {
    context.emit(shout(chunk));
  }
}
"#;

fn js_app() -> BTreeMap<String, Vec<u8>> {
    let mut files = common("js", r#"{"ai": true}"#);
    files.insert("bot-logic.js".into(), BOT_LOGIC.as_bytes().to_vec());
    files.insert(
        "tools.js".into(),
        b"export function shout(s) { return s.toUpperCase(); }\n".to_vec(),
    );
    files
}

/// A wasm app whose module imports these `(module, name)` functions, each with the
/// contract's signature (`aisa_abi::IMPORTS`; `(i32, i32) -> i32` for names outside it).
fn wasm_app(imports: &[(&str, &str)], permissions: &str) -> BTreeMap<String, Vec<u8>> {
    let imports: String = imports
        .iter()
        .map(|(m, n)| {
            let (params, results) =
                aisa_abi::import(n).map_or((2, 1), |i| (i.params.len(), i.results.len()));
            format!(
                "(import \"{m}\" \"{n}\" (func (param{}) (result{})))\n",
                " i32".repeat(params),
                " i32".repeat(results)
            )
        })
        .collect();
    let wat = format!(
        "(module {imports}
           (memory (export \"memory\") 1)
           (func (export \"aisapp_alloc\") (param i32) (result i32) i32.const 0)
           (func (export \"aisapp_run\") (param i32 i32) (result i32) i32.const 0))"
    );
    let mut files = common("wasm", permissions);
    files.insert("logic.wasm".into(), wat::parse_str(&wat).unwrap());
    files
}

fn author_key() -> SecretKey {
    SecretKey::from_bytes(&[7; 32])
}

fn trusted() -> TrustedKeys {
    TrustedKeys::from_keys([author_key().public_key()])
}

fn signed_zip(files: BTreeMap<String, Vec<u8>>, key: &SecretKey) -> Vec<u8> {
    let mut bundle = Bundle::from_files(files).unwrap();
    sign(&mut bundle, key).unwrap();
    bundle.to_zip_bytes()
}

/// One raw zip entry: name, bytes, unix mode.
struct Raw<'a> {
    name: &'a str,
    data: &'a [u8],
    mode: u32,
}

fn raw<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        data,
        mode: 0o644,
    }
}

/// A zip written without any of the crate's checks.
fn raw_zip(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(e.mode);
        zip.start_file(e.name, options).unwrap();
        zip.write_all(e.data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// One entry of a zip written byte by byte: nothing checked, everything as given.
struct Hand<'a> {
    name: &'a [u8],
    /// 0 = stored, 8 = deflated (then `data` is a raw deflate stream).
    method: u16,
    data: &'a [u8],
    crc: u32,
    size: u32,
    /// The central directory's external attributes (unix mode << 16).
    external: u32,
}

fn stored<'a>(name: &'a str, data: &'a [u8], mode: u32) -> Hand<'a> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    Hand {
        name: name.as_bytes(),
        method: 0,
        data,
        crc: crc.sum(),
        size: data.len() as u32,
        external: mode << 16,
    }
}

/// A zip file assembled by hand (local headers, data, central directory, end record).
fn handmade_zip(entries: &[Hand<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&e.method.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // time
            v.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
            v.extend_from_slice(&e.crc.to_le_bytes());
            v.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            v.extend_from_slice(&e.size.to_le_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(e.name);
        out.extend_from_slice(e.data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&0x031eu16.to_le_bytes()); // made by: unix
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&e.external.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(e.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// The signed JS app's entries as raw entries, plus `extra`.
fn signed_js_entries_plus(extra: Raw<'_>) -> Vec<u8> {
    let zip = signed_zip(js_app(), &author_key());
    let bundle = Bundle::from_zip_bytes(&zip).unwrap();
    let mut entries: Vec<Raw<'_>> = bundle
        .files()
        .iter()
        .map(|(n, d)| Raw {
            name: n,
            data: d,
            mode: 0o644,
        })
        .collect();
    entries.push(extra);
    raw_zip(&entries)
}

// ---------------------------------------------------------------------------------------
// The installer's pipeline, as the desktop node runs it

#[derive(Debug)]
enum Refused {
    Checksum,
    Bundle(BundleError),
    Verify(VerifyError),
    Check(CheckError),
    Upgrade(UpgradeError),
    Extract(ExtractError),
}

/// Installs `zip` as `<root>/apps/<id>/<version>`, as an installer would.
fn install(
    root: &Path,
    zip: &[u8],
    expected_sha256: &str,
    keys: &TrustedKeys,
    expected_id: &str,
    installed: Option<&Version>,
) -> Result<PathBuf, Refused> {
    if !checksum::matches(zip, expected_sha256) {
        return Err(Refused::Checksum);
    }
    let bundle = Bundle::from_zip_bytes(zip).map_err(Refused::Bundle)?;
    let verified = verify(&bundle, keys).map_err(Refused::Verify)?;
    let app = check(verified.bundle()).map_err(Refused::Check)?;
    check_upgrade(installed, &app.manifest, expected_id).map_err(Refused::Upgrade)?;
    let dest = root
        .join("apps")
        .join(&app.manifest.id)
        .join(app.manifest.version.to_string());
    extract(&verified, &dest).map_err(Refused::Extract)
}

/// A fresh folder `<tmp>/root` to install into; the returned `TempDir` holds it.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    (tmp, root)
}

/// Every path under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs the install of a hostile bundle; asserts that nothing at all was written (not in
/// the install root, not next to it), and returns the refusal.
fn refuse(zip: &[u8], installed: Option<&Version>) -> Refused {
    let (tmp, root) = sandbox();
    let result = install(
        &root,
        zip,
        &checksum::sha256_hex(zip),
        &trusted(),
        "test-app",
        installed,
    );
    let err = result.expect_err("a hostile bundle was installed");
    assert_eq!(tree(tmp.path()), ["root"], "something was written: {err:?}");
    err
}

fn message(r: &Refused) -> String {
    match r {
        Refused::Checksum => "checksum".into(),
        Refused::Bundle(e) => e.to_string(),
        Refused::Verify(e) => e.to_string(),
        Refused::Check(e) => e.to_string(),
        Refused::Upgrade(e) => e.to_string(),
        Refused::Extract(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Hostile entries

#[test]
fn zip_slip_is_refused() {
    let zip = signed_js_entries_plus(raw("../x", b"escaped"));
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::ParentDir(n)) if n == "../x"),
        "{err:?}"
    );
    assert_eq!(
        message(&err),
        "entry \"../x\" climbs out of the bundle with '..'"
    );
    let zip = raw_zip(&[raw("a/../../manifest.json", b"{}")]);
    assert!(matches!(
        refuse(&zip, None),
        Refused::Bundle(BundleError::ParentDir(_))
    ));
}

#[test]
fn absolute_paths_and_backslashes_are_refused() {
    let zip = signed_js_entries_plus(raw("/tmp/aisapp-evil", b"x"));
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::AbsolutePath(n)) if n == "/tmp/aisapp-evil"),
        "{err:?}"
    );
    let zip = signed_js_entries_plus(raw("..\\x", b"x"));
    assert!(matches!(
        refuse(&zip, None),
        Refused::Bundle(BundleError::Backslash(_))
    ));
}

#[test]
fn symlink_entries_are_refused() {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.add_symlink("tools.js", "/etc/passwd", SimpleFileOptions::default())
        .unwrap();
    let zip = zip.finish().unwrap().into_inner();
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::Symlink(n)) if n == "tools.js"),
        "{err:?}"
    );
    // An entry whose unix mode says "symlink" is a symlink, whatever its name.
    let zip = handmade_zip(&[stored("README.md", b"/etc/shadow", 0o120_777)]);
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::Symlink(n)) if n == "README.md"),
        "{err:?}"
    );
    // So is a device or FIFO.
    let zip = handmade_zip(&[stored("README.md", b"", 0o010_644)]);
    assert!(matches!(
        refuse(&zip, None),
        Refused::Bundle(BundleError::Symlink(_))
    ));
    // A plain 0o100644 file passes the reader (and then fails the signature check).
    let zip = handmade_zip(&[stored("README.md", b"hi", 0o100_644)]);
    assert!(matches!(
        refuse(&zip, None),
        Refused::Verify(VerifyError::Unsigned)
    ));
}

#[test]
fn directories_unknown_and_duplicate_entries_are_refused() {
    let zip = signed_js_entries_plus(raw("assets/", b""));
    assert!(matches!(
        refuse(&zip, None),
        Refused::Bundle(BundleError::Directory(_))
    ));
    let zip = signed_js_entries_plus(raw("run.sh", b"#!/bin/sh"));
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::UnknownEntry(n)) if n == "run.sh"),
        "{err:?}"
    );
    // Two entries with one name.
    let zip = handmade_zip(&[
        stored("README.md", b"first", 0o100_644),
        stored("README.md", b"second", 0o100_644),
    ]);
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::DuplicateInDirectory)),
        "{err:?}"
    );
}

#[test]
fn too_many_entries_are_refused() {
    let names: Vec<String> = (0..33).map(|i| format!("f{i}.txt")).collect();
    let entries: Vec<Raw<'_>> = names.iter().map(|n| raw(n, b"x")).collect();
    let err = refuse(&raw_zip(&entries), None);
    assert!(
        matches!(
            err,
            Refused::Bundle(BundleError::TooManyEntries {
                count: 33,
                limit: 32
            })
        ),
        "{err:?}"
    );
}

/// The process's peak resident memory, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A raw deflate stream of `mib` MiB of zeros, about 1 KiB per MiB: one compressed MiB,
/// then the (byte-aligned, window-independent) segment for the next MiB repeated, then a
/// final empty block.
fn deflated_zeros(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut c = Compress::new(Compression::best(), false);
    let mut first = Vec::with_capacity(64 << 10);
    c.compress_vec(&zeros, &mut first, FlushCompress::Sync)
        .unwrap();
    assert_eq!(c.total_in(), 1 << 20);
    let mut second = Vec::with_capacity(64 << 10);
    c.compress_vec(&zeros, &mut second, FlushCompress::Sync)
        .unwrap();
    assert_eq!(c.total_in(), 2 << 20);
    let mut out = first;
    for _ in 1..mib {
        out.extend_from_slice(&second);
    }
    out.extend_from_slice(&[0x03, 0x00]); // BFINAL, fixed Huffman, end of block
    out
}

#[test]
fn a_zip_bomb_is_refused_without_expanding() {
    // 1 GiB of zeros in about 1 MiB; the reader must stop at 8 MiB + 1 byte. The CRC is
    // left 0: a reader that got to the end would have expanded the whole GiB.
    let stream = deflated_zeros(1024);
    assert!(stream.len() < 4 << 20, "the bomb is {} bytes", stream.len());
    let zip = handmade_zip(&[Hand {
        name: b"logic.wasm",
        method: 8,
        data: &stream,
        crc: 0,
        size: 1 << 30,
        external: 0o100_644 << 16,
    }]);
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::FileTooLarge { name, limit }) if name == "logic.wasm" && *limit == 8 << 20),
        "{err:?}"
    );
    // Had the reader expanded it, the process would have touched over 1 GiB.
    let peak = peak_rss();
    assert!(peak < 512 << 20, "peak memory {} MiB", peak >> 20);
    // The stream is a real one: a plain decoder keeps producing zeros well past the limit
    // (the whole GiB takes ~10 s in a debug build, so 64 MiB of it is checked).
    let decoder = flate2::read::DeflateDecoder::new(stream.as_slice());
    let mut zeros = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut limited = std::io::Read::take(decoder, 64 << 20);
    loop {
        let n = std::io::Read::read(&mut limited, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0));
        zeros += n as u64;
    }
    assert_eq!(zeros, 64 << 20);
}

#[test]
fn a_bomb_whose_header_claims_a_small_size_is_refused() {
    let stream = deflated_zeros(64);
    let zip = handmade_zip(&[Hand {
        name: b"logic.wasm",
        method: 8,
        data: &stream,
        crc: 0,
        size: 100,
        external: 0o100_644 << 16,
    }]);
    let err = refuse(&zip, None);
    assert!(
        matches!(
            &err,
            Refused::Bundle(BundleError::FileTooLarge { .. } | BundleError::Corrupt { .. })
        ),
        "{err:?}"
    );
}

#[test]
fn oversized_files_and_totals_are_refused() {
    let big: &'static [u8] = Box::leak(vec![b'a'; (8 << 20) + 1].into_boxed_slice());
    let zip = signed_js_entries_plus(raw("README.md", big));
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Bundle(BundleError::FileTooLarge { name, .. }) if name == "README.md"),
        "{err:?}"
    );
    // Three files of 6 MiB: each fits, together they pass 16 MiB.
    let six: &'static [u8] = Box::leak(vec![b'b'; 6 << 20].into_boxed_slice());
    let zip = raw_zip(&[
        raw("README.md", six),
        raw("icon.png", six),
        raw("tools.js", six),
    ]);
    let err = refuse(&zip, None);
    assert!(
        matches!(err, Refused::Bundle(BundleError::TotalTooLarge { limit }) if limit == 16 << 20),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Signatures

fn rezip_with(zip: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let mut bundle = Bundle::from_zip_bytes(zip).unwrap();
    bundle.insert(name, data.to_vec()).unwrap();
    bundle.to_zip_bytes()
}

#[test]
fn a_file_changed_after_signing_is_named() {
    let zip = signed_zip(js_app(), &author_key());
    let changed = rezip_with(
        &zip,
        "bot-logic.js",
        b"export function write() { return 'pwned'; }",
    );
    let err = refuse(&changed, None);
    assert!(
        matches!(&err, Refused::Verify(VerifyError::FileChanged(n)) if n == "bot-logic.js"),
        "{err:?}"
    );
    assert_eq!(
        message(&err),
        "bot-logic.js was changed after the bundle was signed"
    );

    let added = rezip_with(&zip, "README.md", b"hi");
    assert!(
        matches!(refuse(&added, None), Refused::Verify(VerifyError::FileAdded(n)) if n == "README.md")
    );

    let mut bundle = Bundle::from_zip_bytes(&zip).unwrap();
    bundle.remove("tools.js");
    let removed = bundle.to_zip_bytes();
    assert!(
        matches!(refuse(&removed, None), Refused::Verify(VerifyError::FileRemoved(n)) if n == "tools.js")
    );

    // A new version number in the manifest changes the signed header itself.
    let bumped = rezip_with(&zip, "manifest.json", &manifest("test-app", "9.0.0", "js"));
    assert!(matches!(
        refuse(&bumped, None),
        Refused::Verify(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn a_signature_by_an_unknown_key_is_refused() {
    let stranger = SecretKey::from_bytes(&[9; 32]);
    let zip = signed_zip(js_app(), &stranger);
    let err = refuse(&zip, None);
    let Refused::Verify(VerifyError::UnknownKey { key_id, trusted: t }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*key_id, stranger.public_key().key_id());
    assert_eq!(*t, author_key().public_key().key_id());
}

#[test]
fn a_tampered_or_missing_signature_is_refused() {
    let zip = signed_zip(js_app(), &author_key());
    let mut bundle = Bundle::from_zip_bytes(&zip).unwrap();
    let mut sig: serde_json::Value =
        serde_json::from_slice(bundle.file("signature.sig").unwrap()).unwrap();
    let other = SecretKey::from_bytes(&[8; 32]).sign(b"something else");
    sig["signature"] = base64_encode(&other).into();
    bundle
        .insert("signature.sig", sig.to_string().into_bytes())
        .unwrap();
    let err = refuse(&bundle.to_zip_bytes(), None);
    assert!(
        matches!(err, Refused::Verify(VerifyError::BadSignature { .. })),
        "{err:?}"
    );

    // The digest list edited to match a changed file: the signature no longer covers it.
    let changed = rezip_with(&zip, "tools.js", b"export const x = 1;");
    let mut bundle = Bundle::from_zip_bytes(&changed).unwrap();
    sig = serde_json::from_slice(bundle.file("signature.sig").unwrap()).unwrap();
    sig["files"]["tools.js"] = checksum::sha256_hex(b"export const x = 1;").into();
    bundle
        .insert("signature.sig", sig.to_string().into_bytes())
        .unwrap();
    assert!(matches!(
        refuse(&bundle.to_zip_bytes(), None),
        Refused::Verify(VerifyError::BadSignature { .. })
    ));

    let unsigned = Bundle::from_files(js_app()).unwrap().to_zip_bytes();
    assert!(matches!(
        refuse(&unsigned, None),
        Refused::Verify(VerifyError::Unsigned)
    ));

    let garbage = rezip_with(&zip, "signature.sig", b"{\"alg\": \"rsa\"}");
    assert!(matches!(
        refuse(&garbage, None),
        Refused::Verify(VerifyError::Malformed(_))
    ));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_wrong_checksum_is_refused() {
    let zip = signed_zip(js_app(), &author_key());
    let (tmp, root) = sandbox();
    let err = install(&root, &zip, &"0".repeat(64), &trusted(), "test-app", None).unwrap_err();
    assert!(matches!(err, Refused::Checksum));
    assert_eq!(tree(tmp.path()), ["root"]);
}

// ---------------------------------------------------------------------------------------
// Versions and ids

#[test]
fn a_downgrade_is_refused() {
    let zip = signed_zip(js_app(), &author_key()); // 1.2.0
    let err = refuse(&zip, Some(&Version::new(1, 3, 0)));
    assert!(
        matches!(&err, Refused::Upgrade(UpgradeError::Downgrade { .. })),
        "{err:?}"
    );
    assert_eq!(
        message(&err),
        "test-app 1.2.0 is older than the installed 1.3.0; refusing to downgrade"
    );
    let err = refuse(&zip, Some(&Version::new(1, 2, 0)));
    assert!(
        matches!(err, Refused::Upgrade(UpgradeError::SameVersion { .. })),
        "{err:?}"
    );
}

#[test]
fn a_manifest_id_that_does_not_match_is_refused() {
    let mut files = js_app();
    files.insert("manifest.json".into(), manifest("other-app", "1.2.0", "js"));
    let zip = signed_zip(files, &author_key());
    let err = refuse(&zip, None);
    assert!(
        matches!(&err, Refused::Upgrade(UpgradeError::IdMismatch { expected, found }) if expected == "test-app" && found == "other-app"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Code that reaches for what it did not declare

fn problems(err: &Refused) -> &[Problem] {
    match err {
        Refused::Check(e) => &e.problems,
        other => panic!("expected a check failure, got {other:?}"),
    }
}

#[test]
fn wasm_importing_http_without_network_permission_is_refused() {
    let files = wasm_app(
        &[("aisapp_v1", "emit"), ("aisapp_v1", "http")],
        r#"{"ai": true}"#,
    );
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert_eq!(
        problems(&err),
        [Problem::Wasm(WasmProblem::NotPermitted {
            import: "http".into(),
            permission: "network"
        })]
    );
    assert_eq!(
        message(&err),
        "logic.wasm imports aisapp_v1::http, which needs the \"network\" permission; permissions.json does not ask for it"
    );
    // With the permission it passes.
    let files = wasm_app(
        &[("aisapp_v1", "http")],
        r#"{"network": ["api.example.com"]}"#,
    );
    let (_tmp, root) = sandbox();
    let zip = signed_zip(files, &author_key());
    install(
        &root,
        &zip,
        &checksum::sha256_hex(&zip),
        &trusted(),
        "test-app",
        None,
    )
    .unwrap();
}

#[test]
fn wasm_importing_a_host_function_with_another_signature_is_refused() {
    let mut files = wasm_app(&[], "{}");
    let wat = r#"(module
        (import "aisapp_v1" "emit" (func (param i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0)
        (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#;
    files.insert("logic.wasm".into(), wat::parse_str(wat).unwrap());
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert_eq!(
        problems(&err),
        [Problem::Wasm(WasmProblem::WrongSignature {
            import: "emit".into(),
            expected: "(i32, i32) -> ()".into(),
            found: "(i32, i32) -> (i32)".into(),
        })]
    );
}

#[test]
fn wasm_importing_wasi_or_undeclared_capabilities_is_refused() {
    let files = wasm_app(
        &[
            ("wasi_snapshot_preview1", "fd_write"),
            ("aisapp_v1", "ai_generate"),
            ("aisapp_v1", "fs"),
            ("aisapp_v1", "clipboard"),
            ("aisapp_v1", "spawn"),
        ],
        "{}",
    );
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert_eq!(
        problems(&err),
        [
            Problem::Wasm(WasmProblem::ForeignImport {
                module: "wasi_snapshot_preview1".into(),
                name: "fd_write".into()
            }),
            Problem::Wasm(WasmProblem::NotPermitted {
                import: "ai_generate".into(),
                permission: "ai"
            }),
            Problem::Wasm(WasmProblem::NotPermitted {
                import: "fs".into(),
                permission: "filesystem"
            }),
            Problem::Wasm(WasmProblem::NotPermitted {
                import: "clipboard".into(),
                permission: "clipboard"
            }),
            Problem::Wasm(WasmProblem::UnknownHostImport("spawn".into())),
        ]
    );
    // A module without the entry points, and bytes that are not wasm.
    let mut files = common("wasm", "{}");
    files.insert("logic.wasm".into(), wat::parse_str("(module)").unwrap());
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert_eq!(problems(&err).len(), 3, "{err:?}");
    let mut files = common("wasm", "{}");
    files.insert("logic.wasm".into(), b"\0asm garbage".to_vec());
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert!(
        matches!(problems(&err), [Problem::Wasm(WasmProblem::Invalid(_))]),
        "{err:?}"
    );
}

#[test]
fn js_using_require_process_or_eval_is_refused_with_lines() {
    let mut files = js_app();
    files.insert(
        "bot-logic.js".into(),
        b"const fs = require('fs');\nexport async function write(payload, context) {\n  context.emit(process.env.OPENAI_API_KEY);\n  return eval(payload.topic);\n}\n"
            .to_vec(),
    );
    let err = refuse(&signed_zip(files, &author_key()), None);
    let found: Vec<(usize, String)> = problems(&err)
        .iter()
        .map(|p| match p {
            Problem::Js(f) => (f.line, f.api.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        found,
        [
            (1, "require(".to_owned()),
            (3, "process.".to_owned()),
            (4, "eval(".to_owned())
        ]
    );
    assert!(
        message(&err).starts_with("3 problems:\n  - bot-logic.js:1: `require(`"),
        "{}",
        message(&err)
    );
}

#[test]
fn bad_schemas_and_mismatched_entries_are_refused() {
    let mut files = js_app();
    files.insert(
        "action-schema.json".into(),
        br#"{"write": {"type": "object", "properties": {"n": {"type": "integer", "minimum": "zero"}}}}"#.to_vec(),
    );
    files.insert("ui-schema.json".into(), br#"{"nope": {}}"#.to_vec());
    files.insert("logic.wasm".into(), wat::parse_str("(module)").unwrap());
    let err = refuse(&signed_zip(files, &author_key()), None);
    let p = problems(&err);
    assert!(
        matches!(&p[0], Problem::ActionSchema { action, .. } if action == "write"),
        "{p:?}"
    );
    assert_eq!(p[1], Problem::UiSchemaAction("nope".into()));
    assert!(
        matches!(
            p[2],
            Problem::WrongEntryFile {
                file: "logic.wasm",
                ..
            }
        ),
        "{p:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Extraction

#[test]
fn extraction_never_overwrites_or_follows_a_symlink() {
    let zip = signed_zip(js_app(), &author_key());
    let bundle = Bundle::from_zip_bytes(&zip).unwrap();
    let keys = trusted();
    let verified = verify(&bundle, &keys).unwrap();
    let (tmp, root) = sandbox();
    // An existing version folder.
    let dest = root.join("v1");
    std::fs::create_dir(&dest).unwrap();
    let err = extract(&verified, &dest).unwrap_err();
    assert!(matches!(err, ExtractError::Exists(_)), "{err}");
    assert!(tree(&dest).is_empty());
    // A symlink planted where the version folder goes, pointing outside.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let planted = root.join("v2");
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    let err = extract(&verified, &planted).unwrap_err();
    assert!(matches!(err, ExtractError::Exists(_)), "{err}");
    assert!(tree(&outside).is_empty());
    assert_eq!(tree(tmp.path()), ["outside", "root", "root/v1", "root/v2"]);
}

// ---------------------------------------------------------------------------------------
// What must work

#[test]
fn pack_sign_verify_extract_gives_the_same_bytes() {
    let (tmp, root) = sandbox();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (name, data) in js_app() {
        std::fs::write(src.join(name), data).unwrap();
    }
    std::fs::write(src.join("notes.txt"), "not part of the bundle").unwrap();
    let mut bundle = Bundle::from_dir(&src).unwrap();
    check(&bundle).unwrap();
    sign(&mut bundle, &author_key()).unwrap();
    let zip = bundle.to_zip_bytes();
    assert_eq!(zip, bundle.to_zip_bytes(), "packing is deterministic");
    let dest = install(
        &root,
        &zip,
        &checksum::sha256_hex(&zip),
        &trusted(),
        "test-app",
        None,
    )
    .unwrap();
    assert_eq!(dest, root.join("apps/test-app/1.2.0"));
    let mut expected: Vec<String> = js_app().into_keys().collect();
    expected.push("signature.sig".into());
    expected.sort();
    assert_eq!(tree(&dest), expected);
    for (name, data) in js_app() {
        assert_eq!(std::fs::read(dest.join(&name)).unwrap(), data, "{name}");
    }
    // Upgrading to 1.3.0 goes next to it.
    let mut files = js_app();
    files.insert("manifest.json".into(), manifest("test-app", "1.3.0", "js"));
    let zip = signed_zip(files, &author_key());
    let v2 = install(
        &root,
        &zip,
        &checksum::sha256_hex(&zip),
        &trusted(),
        "test-app",
        Some(&Version::new(1, 2, 0)),
    )
    .unwrap();
    assert_eq!(v2, root.join("apps/test-app/1.3.0"));
    assert_eq!(
        tree(&root.join("apps/test-app")).len(),
        2 + 2 * expected.len()
    );
}

#[test]
fn key_rotation_keeps_old_bundles_valid() {
    let old = SecretKey::from_bytes(&[1; 32]);
    let new = SecretKey::from_bytes(&[2; 32]);
    let by_old = Bundle::from_zip_bytes(&signed_zip(js_app(), &old)).unwrap();
    let by_new = Bundle::from_zip_bytes(&signed_zip(js_app(), &new)).unwrap();
    let both = TrustedKeys::from_keys([new.public_key(), old.public_key()]);
    assert_eq!(
        verify(&by_old, &both).unwrap().key_id(),
        old.public_key().key_id()
    );
    assert_eq!(
        verify(&by_new, &both).unwrap().key_id(),
        new.public_key().key_id()
    );
    // Once the old key is retired, what it signed is no longer accepted.
    let only_new = TrustedKeys::from_base64([new.public_key().to_base64().as_str()]).unwrap();
    assert!(matches!(
        verify(&by_old, &only_new),
        Err(VerifyError::UnknownKey { .. })
    ));
    assert!(verify(&by_new, &only_new).is_ok());
}

#[test]
fn key_files_round_trip_and_the_secret_one_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("author.key");
    let key = SecretKey::generate().unwrap();
    key.write_file(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = SecretKey::read_file(&path).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    assert!(
        key.write_file(&path).is_err(),
        "an existing key file is never overwritten"
    );
    assert_eq!(key.public_key().key_id().len(), 16);
    assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
}

#[test]
fn a_js_action_without_its_exported_function_is_refused() {
    let mut files = js_app();
    files.insert(
        "bot-logic.js".into(),
        b"export async function wirte(payload, context) {}\n".to_vec(),
    );
    let err = refuse(&signed_zip(files, &author_key()), None);
    assert_eq!(problems(&err), [Problem::MissingExport("write".into())]);
    assert!(message(&err).contains("does not export a function for action \"write\""));
}
