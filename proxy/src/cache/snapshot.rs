//! The cache on disk: written when the edge stops (`cache.snapshot_path`) or hands over to a
//! new process (a zero-downtime reload), read before the edge takes its listeners, so a
//! restart or an upgrade does not start cold.
//!
//! Format (little-endian): `RVWSNAP1`, the writer's pid (u32) and the time of writing (u64 ms
//! since the epoch), then one record per entry — `1`, the payload's length (u32), the payload,
//! its CRC-32 — and an end mark: `0` and the entry count (u64). An entry keeps its key,
//! status, headers, identity body, the compressed forms made so far, tags, weight, and its age
//! and lifetime, so it comes back with the freshness it had left; entries past their stale
//! windows are not written, and those expired by the time of loading are dropped.
//!
//! Writing goes to a temporary file renamed over the snapshot at the end (never a half-written
//! snapshot under the real name) and stops at a deadline (the rest of the entries are left
//! out, the end mark still written). Reading checks every record and the end mark before
//! anything is loaded: a truncated or corrupt file is ignored whole, with a warning.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora_http::ResponseHeader;

use super::policy::Lifetime;
use super::{Cache, Entry};
use crate::wire::Fields;

const MAGIC: &[u8; 8] = b"RVWSNAP1";
const RECORD: u8 = 1;
const END: u8 = 0;
/// Largest record accepted when reading (an entry is at most `max_object_size` ×3 plus its
/// headers): a corrupt length must not make the reader allocate gigabytes.
const MAX_RECORD: u32 = 1 << 30;

/// What a write or a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub entries: u64,
    pub bytes: u64,
    /// The write's deadline passed before every entry was written.
    pub cut_short: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a cache snapshot, or is damaged: {reason}")]
    Corrupt { path: String, reason: String },
}

/// A snapshot's header: who wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub writer_pid: u32,
    /// When it was written, in milliseconds since the epoch.
    pub written_unix_ms: u64,
}

struct Out<W: Write> {
    w: W,
    bytes: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn put_form(buf: &mut Vec<u8>, form: &OnceLock<Option<Bytes>>) {
    match form.get() {
        None => buf.push(0),
        Some(None) => buf.push(1),
        Some(Some(b)) => {
            buf.push(2);
            put_bytes(buf, b);
        }
    }
}

fn millis(d: Duration) -> [u8; 8] {
    (d.as_millis() as u64).to_le_bytes()
}

/// One entry as a record payload.
fn encode(key: &str, e: &Entry, now: Instant, buf: &mut Vec<u8>) {
    buf.clear();
    put_bytes(buf, key.as_bytes());
    buf.extend_from_slice(&e.header.status.as_u16().to_le_bytes());
    buf.extend_from_slice(&(e.header.headers.len() as u32).to_le_bytes());
    for (name, value) in e.header.headers.iter() {
        put_bytes(buf, name.as_str().as_bytes());
        put_bytes(buf, value.as_bytes());
    }
    put_bytes(buf, &e.identity);
    put_form(buf, &e.gzip);
    put_form(buf, &e.br);
    buf.push(u8::from(e.compressible));
    buf.extend_from_slice(&(e.tags.len() as u32).to_le_bytes());
    for t in e.tags.iter() {
        put_bytes(buf, t.as_bytes());
    }
    buf.extend_from_slice(&e.weight.to_le_bytes());
    buf.extend_from_slice(&millis(e.age(now)));
    buf.extend_from_slice(&millis(e.lifetime.fresh));
    buf.extend_from_slice(&millis(e.lifetime.stale_while_revalidate));
    buf.extend_from_slice(&millis(e.lifetime.stale_if_error));
}

/// Writes `cache` to `path` (through a temporary file beside it), stopping at `deadline`.
pub fn write(cache: &Cache, path: &Path, deadline: Duration) -> io::Result<Outcome> {
    let started = Instant::now();
    // Taken before the entries: purges read after it are replayed by the loading edge.
    let position = cache.invalidation.position();
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut out = Out {
            w: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
            bytes: 0,
        };
        out.put(MAGIC)?;
        out.put(&std::process::id().to_le_bytes())?;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        out.put(&unix_ms.to_le_bytes())?;
        let now = Instant::now();
        let mut buf = Vec::with_capacity(8192);
        let (mut entries, mut cut_short) = (0u64, false);
        for (key, entry) in cache.store.iter() {
            if entries % 256 == 0 && started.elapsed() >= deadline {
                cut_short = true;
                break;
            }
            // Purged, or past every window: nothing to keep.
            if !cache.purges.is_valid(entry.seq, &entry.tags, &key)
                || entry.age(now) >= entry.keep_for()
            {
                continue;
            }
            encode(&key, &entry, now, &mut buf);
            out.put(&[RECORD])?;
            out.put(&(buf.len() as u32).to_le_bytes())?;
            out.put(&buf)?;
            out.put(&crc32fast::hash(&buf).to_le_bytes())?;
            entries += 1;
        }
        out.put(&[END])?;
        out.put(&entries.to_le_bytes())?;
        let bytes = out.bytes;
        let file = out.w.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok::<_, io::Error>(Outcome {
            entries,
            bytes,
            cut_short,
        })
    })();
    match written {
        Ok(outcome) => {
            // Before the rename: a loader that sees the snapshot sees its position too.
            let stream_file = position_path(path);
            match &position {
                Some(id) => std::fs::write(&stream_file, id)?,
                None => {
                    let _ = std::fs::remove_file(&stream_file);
                }
            }
            std::fs::rename(&tmp, path)?;
            Ok(outcome)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Beside a snapshot: the id of the last entry of the shared purge stream (`[invalidation]`)
/// its writer had read, from which the loading edge resumes reading.
pub fn position_path(snapshot: &Path) -> std::path::PathBuf {
    let mut p = snapshot.as_os_str().to_owned();
    p.push(".stream");
    p.into()
}

/// Where the subscriber of an edge that loaded `loaded` entries from `snapshot` resumes:
/// after the writer's position, or, without one, nowhere it can trust.
fn resume_after_load(cache: &Cache, snapshot: &Path, loaded: u64) {
    use crate::invalidation::Resume;
    if !cache.invalidation.is_enabled() || loaded == 0 {
        return;
    }
    let resume = match std::fs::read_to_string(position_path(snapshot)) {
        Ok(id) if !id.trim().is_empty() => Resume::After(id.trim().to_owned()),
        _ => Resume::Unknown,
    };
    cache.invalidation.resume_from(resume);
}

/// A compressed form: absent (never made), known not to help, or its bytes.
fn form(f: &mut Fields<'_>) -> Option<OnceLock<Option<Bytes>>> {
    let cell = OnceLock::new();
    match f.u8()? {
        0 => {}
        1 => {
            let _ = cell.set(None);
        }
        2 => {
            let _ = cell.set(Some(Bytes::copy_from_slice(f.bytes()?)));
        }
        _ => return None,
    }
    Some(cell)
}

fn duration(f: &mut Fields<'_>) -> Option<Duration> {
    f.u64().map(Duration::from_millis)
}

/// An entry back from its payload, aged as it was when written plus `since`, the time the
/// snapshot spent on disk; `None` if malformed.
fn decode(payload: &[u8], now: Instant, since: Duration, seq: u64) -> Option<(Arc<str>, Entry)> {
    let mut f = Fields::new(payload);
    let key: Arc<str> = std::str::from_utf8(f.bytes()?).ok()?.into();
    let status = f.u16()?;
    let count = f.u32()? as usize;
    let mut header = ResponseHeader::build_no_case(status, Some(count)).ok()?;
    for _ in 0..count {
        let name = http::HeaderName::from_bytes(f.bytes()?).ok()?;
        let value = http::HeaderValue::from_bytes(f.bytes()?).ok()?;
        header.append_header(name, value).ok()?;
    }
    let identity = Bytes::copy_from_slice(f.bytes()?);
    let gzip = form(&mut f)?;
    let br = form(&mut f)?;
    let compressible = f.u8()? == 1;
    let tags = (0..f.u32()?)
        .map(|_| Some(Box::<str>::from(std::str::from_utf8(f.bytes()?).ok()?)))
        .collect::<Option<Box<[Box<str>]>>>()?;
    let weight = f.u32()?;
    let age = duration(&mut f)? + since;
    let lifetime = Lifetime {
        fresh: duration(&mut f)?,
        stale_while_revalidate: duration(&mut f)?,
        stale_if_error: duration(&mut f)?,
    };
    if f.remaining() != 0 {
        return None;
    }
    let entry = Entry {
        header,
        identity,
        gzip,
        br,
        compressible,
        tags,
        seq,
        // An entry older than this process's clock can say is too old to keep anyway.
        stored_at: now.checked_sub(age)?,
        lifetime,
        weight,
    };
    Some((key, entry))
}

/// The header of the snapshot at `path`, without reading its entries.
pub fn header(path: &Path) -> Result<Header, SnapshotError> {
    let mut head = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if &head[..8] != MAGIC {
        return Err(SnapshotError::Corrupt {
            path: path.display().to_string(),
            reason: "wrong magic number".into(),
        });
    }
    Ok(Header::from_bytes(&head))
}

impl Header {
    /// The pid and time from the 20 header bytes (magic already checked).
    fn from_bytes(head: &[u8; 20]) -> Self {
        Header {
            writer_pid: u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")),
            written_unix_ms: u64::from_le_bytes(head[12..20].try_into().expect("8 bytes")),
        }
    }
}

/// Reads the records of the file at `path`, calling `each` with every payload once all of
/// them are known to be intact.
fn records(path: &Path, mut each: impl FnMut(&Header, &[u8])) -> Result<Header, SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let open = || {
        File::open(path)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|source| SnapshotError::Io {
                path: path.display().to_string(),
                source,
            })
    };
    let read_exact = |r: &mut BufReader<File>, buf: &mut [u8], what: &str| {
        r.read_exact(buf).map_err(|_| corrupt(what))
    };
    // Pass 1 checks everything; pass 2 hands out the payloads.
    let mut header = None;
    for pass in 0..2 {
        let mut r = open()?;
        let mut head = [0u8; 20];
        read_exact(&mut r, &mut head, "too short for a header")?;
        if &head[..8] != MAGIC {
            return Err(corrupt("wrong magic number"));
        }
        let h = Header::from_bytes(&head);
        header = Some(h);
        let mut count = 0u64;
        let mut payload = Vec::new();
        loop {
            let mut tag = [0u8; 1];
            read_exact(&mut r, &mut tag, "truncated (no end mark)")?;
            match tag[0] {
                END => {
                    let mut n = [0u8; 8];
                    read_exact(&mut r, &mut n, "truncated end mark")?;
                    if u64::from_le_bytes(n) != count {
                        return Err(corrupt("entry count does not match"));
                    }
                    break;
                }
                RECORD => {
                    let mut len = [0u8; 4];
                    read_exact(&mut r, &mut len, "truncated record")?;
                    let len = u32::from_le_bytes(len);
                    if len > MAX_RECORD {
                        return Err(corrupt("record length out of range"));
                    }
                    payload.resize(len as usize, 0);
                    read_exact(&mut r, &mut payload, "truncated record")?;
                    let mut crc = [0u8; 4];
                    read_exact(&mut r, &mut crc, "truncated record")?;
                    if crc32fast::hash(&payload) != u32::from_le_bytes(crc) {
                        return Err(corrupt("a record fails its checksum"));
                    }
                    if pass == 1 {
                        each(&h, &payload);
                    }
                    count += 1;
                }
                _ => return Err(corrupt("unknown record type")),
            }
        }
    }
    Ok(header.expect("set in the first pass"))
}

/// Loads the snapshot at `path` into `cache`: all of it, or nothing when the file is
/// damaged. Entries age by the time the snapshot spent on disk, and those past their stale
/// windows are dropped; purges the cache records from now on apply to the loaded entries as
/// to its own.
pub fn load(cache: &Cache, path: &Path) -> Result<(Header, Outcome), SnapshotError> {
    let now = Instant::now();
    let seq = cache.fill_started();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut malformed = false;
    let mut outcome = Outcome {
        entries: 0,
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        cut_short: false,
    };
    let mut loaded = Vec::new();
    let header = records(path, |header, payload| {
        // A clock set back since the write counts as no time on disk.
        let on_disk = Duration::from_millis(unix_now.saturating_sub(header.written_unix_ms));
        match decode(payload, now, on_disk, seq) {
            Some(kv) => loaded.push(kv),
            None => malformed = true,
        }
    })?;
    if malformed {
        return Err(SnapshotError::Corrupt {
            path: path.display().to_string(),
            reason: "a record does not decode".into(),
        });
    }
    for (key, entry) in loaded {
        if entry.age(now) >= entry.keep_for() {
            continue;
        }
        if cache.store(key, entry) {
            outcome.entries += 1;
        }
    }
    resume_after_load(cache, path, outcome.entries);
    Ok((header, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::build_entry;
    use crate::config::{CacheConfig, CompressionConfig};

    fn cache() -> Cache {
        Cache::new(CacheConfig::default(), CompressionConfig::default())
    }

    fn fill(c: &Cache, key: &str, tag: &str, fresh: Duration, body: &str) {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("content-type", "application/json").unwrap();
        h.append_header("surrogate-key", tag).unwrap();
        let e = build_entry(
            key.len(),
            &h,
            Bytes::from(body.to_owned()),
            Lifetime {
                fresh,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
            },
            crate::cache::surrogate_keys(&h),
            c.fill_started(),
            &CompressionConfig::default(),
        );
        assert!(c.store(key.into(), e));
    }

    /// A cache holding `n` small fresh pages.
    fn filled(n: usize) -> Cache {
        let c = cache();
        for i in 0..n {
            let key = format!("GET /{i}");
            fill(&c, &key, "t", Duration::from_secs(60), "body");
        }
        c
    }

    #[test]
    fn entries_come_back_with_their_headers_bodies_tags_and_remaining_life() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snapshot");
        let a = cache();
        fill(
            &a,
            "GET /a",
            "product-1",
            Duration::from_secs(60),
            &"x".repeat(2000),
        );
        fill(&a, "GET /b", "product-2", Duration::from_secs(60), "b");
        // Compressed form made before the snapshot: kept.
        let gz = a.store.get("GET /a").unwrap().compressed(
            crate::cache::encoding::Encoding::Gzip,
            &CompressionConfig::default(),
        );
        assert!(gz.is_some());
        let written = write(&a, &path, Duration::from_secs(5)).unwrap();
        assert_eq!((written.entries, written.cut_short), (2, false));

        let b = cache();
        let (header, loaded) = load(&b, &path).unwrap();
        assert_eq!(header.writer_pid, std::process::id());
        assert_eq!(loaded.entries, 2);
        let Some(e) = b.store.get("GET /a") else {
            panic!("loaded")
        };
        assert_eq!(e.identity.len(), 2000);
        assert_eq!(&*e.tags, &["product-1".into()] as &[Box<str>]);
        assert_eq!(e.header.headers["content-type"], "application/json");
        assert_eq!(e.gzip.get(), Some(&gz));
        assert!(
            e.lifetime.fresh == Duration::from_secs(60)
                && e.age(Instant::now()) < Duration::from_secs(5)
        );
        // Purges after the load apply to loaded entries.
        futures::executor::block_on(b.purge_tags(&["product-2"]));
        assert!(matches!(b.lookup("GET /b"), crate::cache::Lookup::Miss));
    }

    #[test]
    fn expired_and_purged_entries_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snapshot");
        let a = cache();
        fill(&a, "GET /gone", "product-1", Duration::from_millis(1), "x");
        fill(&a, "GET /purged", "product-2", Duration::from_secs(60), "x");
        fill(&a, "GET /kept", "product-3", Duration::from_secs(60), "x");
        futures::executor::block_on(a.purge_tags(&["product-2"]));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(write(&a, &path, Duration::from_secs(5)).unwrap().entries, 1);
        let b = cache();
        assert_eq!(load(&b, &path).unwrap().1.entries, 1);
        assert!(b.store.get("GET /kept").is_some());
    }

    #[test]
    fn entries_age_by_the_time_the_snapshot_spent_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snapshot");
        let a = cache();
        fill(&a, "GET /minute", "t", Duration::from_secs(60), "x");
        fill(&a, "GET /hour", "t", Duration::from_secs(3600), "x");
        write(&a, &path, Duration::from_secs(5)).unwrap();
        // As if written two minutes ago.
        let mut bytes = std::fs::read(&path).unwrap();
        let then = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) - 120_000;
        bytes[12..20].copy_from_slice(&then.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let b = cache();
        assert_eq!(load(&b, &path).unwrap().1.entries, 1);
        let Some(e) = b.store.get("GET /hour") else {
            panic!("kept")
        };
        assert!(e.age(Instant::now()) >= Duration::from_secs(120));
    }

    #[test]
    fn a_truncated_or_damaged_snapshot_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snapshot");
        let a = filled(20);
        write(&a, &path, Duration::from_secs(5)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("no end mark", good[..good.len() - 9].to_vec()),
            ("a flipped byte", {
                let mut b = good.clone();
                b[40] ^= 0xff;
                b
            }),
            ("empty", Vec::new()),
            ("not a snapshot", b"hello world, this is text".to_vec()),
            ("a huge length", {
                let mut b = good[..21].to_vec();
                b.extend_from_slice(&u32::MAX.to_le_bytes());
                b
            }),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
            let b = cache();
            let e = load(&b, &path);
            assert!(
                matches!(e, Err(SnapshotError::Corrupt { .. })),
                "{what}: {e:?}"
            );
            b.sync();
            assert_eq!(b.entry_count(), 0, "{what}: nothing loaded");
        }
    }

    #[test]
    fn a_write_past_its_deadline_is_cut_short_but_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snapshot");
        let a = filled(1000);
        let w = write(&a, &path, Duration::ZERO).unwrap();
        assert!(w.cut_short && w.entries < 1000);
        assert!(load(&cache(), &path).is_ok());
        assert!(
            !dir.path().read_dir().unwrap().any(|f| f
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("tmp"))
        );
    }
}
