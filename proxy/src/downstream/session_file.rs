//! TLS sessions handed from the old edge to the new one at a reload (see `handover.rs`), so
//! that clients coming back after a reload resume their sessions instead of all making full
//! handshakes (a certificate signature each) at once.
//!
//! Sessions hold resumption secrets: the file is created readable by the edge's user only,
//! beside the upgrade socket, and the new process deletes it as soon as it has read it (a
//! plain start deletes a leftover one).
//!
//! Format, integers little-endian: `MAGIC`, the writer's pid (u32), the listener count (u32);
//! per listener its configured address (u16 length + UTF-8) and session count (u32); per
//! session the key (u16 length + bytes) and value (u32 length + bytes), oldest first.

use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use super::sessions::SessionStore;
use crate::wire::Fields;

const MAGIC: &[u8; 8] = b"RVTLSS\0\x01";

/// Longest session key and value accepted when reading (rustls's are 32 bytes and a few
/// hundred): anything longer is a damaged file.
const MAX_KEY: usize = 1 << 10;
const MAX_VALUE: usize = 64 << 10;

/// Each HTTPS listener's session store, by its configured address.
pub type Stores = Vec<(SocketAddr, Arc<SessionStore>)>;

/// A session's key and value, as rustls stores them.
pub type Session = (Vec<u8>, Vec<u8>);

/// Sessions read from a file: the writer's pid, then each listener's (by address), oldest
/// first.
pub struct Handed {
    pub writer_pid: u32,
    pub listeners: Vec<(String, Vec<Session>)>,
}

/// Writes every listener's sessions to `path` (through a temporary file renamed at the end,
/// so a reader never sees half of one). Returns how many sessions were written.
pub fn write(path: &Path, stores: &Stores) -> io::Result<usize> {
    let tmp = path.with_file_name(format!(
        "{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    // A new file, so the mode below is the one it gets (an existing file keeps its own).
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = write_to(file, stores).and_then(|n| {
        std::fs::rename(&tmp, path)?;
        Ok(n)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_to(file: std::fs::File, stores: &Stores) -> io::Result<usize> {
    let mut out = BufWriter::new(file);
    out.write_all(MAGIC)?;
    out.write_all(&std::process::id().to_le_bytes())?;
    out.write_all(&len_u32(stores.len())?.to_le_bytes())?;
    let mut written = 0;
    for (address, store) in stores {
        let address = address.to_string();
        let sessions = store.export();
        out.write_all(&(address.len() as u16).to_le_bytes())?;
        out.write_all(address.as_bytes())?;
        out.write_all(&len_u32(sessions.len())?.to_le_bytes())?;
        for (key, value) in &sessions {
            // Keys and values come from rustls, far below these bounds; a longer one is
            // left out rather than written into a file the reader would refuse.
            if key.len() > MAX_KEY || value.len() > MAX_VALUE {
                continue;
            }
            out.write_all(&(key.len() as u16).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(value)?;
            written += 1;
        }
    }
    // No fsync: the new process reads the file moments later, and after a crash it is
    // worthless anyway.
    out.flush()?;
    Ok(written)
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other("too many sessions"))
}

/// Reads a file [`write`] made. A damaged or foreign file is an error, never a panic.
pub fn read(path: &Path) -> io::Result<Handed> {
    let bytes = std::fs::read(path)?;
    parse(&bytes).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a session file"))
}

fn parse(bytes: &[u8]) -> Option<Handed> {
    let mut r = Fields::new(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let writer_pid = r.u32()?;
    let listeners = r.u32()?;
    let mut handed = Handed {
        writer_pid,
        listeners: Vec::new(),
    };
    for _ in 0..listeners {
        let len = r.u16()? as usize;
        let address = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        let count = r.u32()?;
        // Never trust a count for an allocation: each session takes at least 6 bytes.
        let mut sessions = Vec::with_capacity((count as usize).min(r.remaining() / 6));
        for _ in 0..count {
            let key_len = r.u16()? as usize;
            let key = r.take(key_len)?.to_vec();
            let value = r.bytes()?;
            if key_len > MAX_KEY || value.len() > MAX_VALUE {
                return None;
            }
            sessions.push((key, value.to_vec()));
        }
        handed.listeners.push((address, sessions));
    }
    (r.remaining() == 0).then_some(handed)
}

/// Puts each listener's handed sessions into the store of the listener with the same
/// configured address; sessions of listeners the new config no longer has are dropped.
/// Returns how many were stored.
pub fn import(handed: Handed, stores: &Stores) -> usize {
    let mut stored = 0;
    for (address, sessions) in handed.listeners {
        if let Some((_, store)) = stores.iter().find(|(a, _)| a.to_string() == address) {
            stored += sessions.len();
            store.import(sessions);
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> Stores {
        vec![
            (
                "127.0.0.1:8443".parse().unwrap(),
                Arc::new(SessionStore::new(16)),
            ),
            (
                "[::]:9443".parse().unwrap(),
                Arc::new(SessionStore::new(16)),
            ),
        ]
    }

    fn session(i: u8) -> (Vec<u8>, Vec<u8>) {
        (vec![i; 32], vec![i; 200])
    }

    #[test]
    fn sessions_written_are_read_back_into_the_listener_of_the_same_address() {
        use rustls::server::StoresServerSessions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.sock.tls");
        let old = stores();
        for i in 0..3 {
            let (k, v) = session(i);
            old[0].1.put(k, v);
        }
        let (k, v) = session(9);
        old[1].1.put(k, v);
        // A leftover temporary file readable by all does not lend the new file its mode.
        let tmp = dir.path().join("edge.sock.tls.tmp");
        std::fs::write(&tmp, b"left over").unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert_eq!(write(&path, &old).unwrap(), 4);
        assert!(!tmp.exists());
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let handed = read(&path).unwrap();
        assert_eq!(handed.writer_pid, std::process::id());
        // The new config keeps the second listener only.
        let new: Stores = vec![(old[1].0, Arc::new(SessionStore::new(16)))];
        assert_eq!(import(handed, &new), 1);
        assert_eq!(new[0].1.export(), vec![session(9)]);
    }

    #[test]
    fn a_damaged_file_is_an_error() {
        use rustls::server::StoresServerSessions;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.sock.tls");
        let old = stores();
        let (k, v) = session(1);
        old[0].1.put(k, v);
        write(&path, &old).unwrap();
        let whole = std::fs::read(&path).unwrap();
        // Every truncation, a byte too many, and a foreign file.
        for cut in 0..whole.len() {
            assert!(parse(&whole[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(parse(&longer).is_none());
        assert!(parse(b"RVTLSS\0\x02 something else").is_none());
        // A count far beyond the file's bytes allocates nothing and fails.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&0u16.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_none());
        assert!(parse(&whole).is_some());
    }
}
