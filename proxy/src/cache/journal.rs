//! Purges shared by the two processes of a zero-downtime upgrade. From the moment the old
//! process is asked for its snapshot until it exits, both serve, each from its own cache: a
//! write through one must purge the other's copies too, or the new process would serve a page
//! from the snapshot that a write through the old one has just changed.
//!
//! While a handover is in progress each process appends every purge it makes to one journal
//! file (`<pid>\t<kind>\t<value>` per line, one `write` per line in append mode) *before* it
//! applies it and answers the client, and reads the lines of the other process before every
//! cache lookup (and every 100 ms). A purge made by either is therefore seen by the other's
//! next lookup: the journal carries the generation rule of `cache/mod.rs` across processes.
//! Outside a handover the journal costs one atomic load per lookup.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// One purge, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    Tag(Box<str>),
    Key(Box<str>),
    All,
}

#[derive(Default)]
pub struct Journal {
    active: AtomicBool,
    open: Mutex<Option<Open>>,
}

struct Open {
    path: PathBuf,
    append: File,
    read: File,
    /// Bytes of a line not complete yet.
    partial: Vec<u8>,
    me: String,
}

/// `%`, tab and line breaks escaped, so a value is one field of one line.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(v: &str) -> String {
    v.replace("%09", "\t")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

fn parse(line: &str, me: &str) -> Option<Purge> {
    let mut f = line.splitn(3, '\t');
    let (pid, kind, value) = (f.next()?, f.next()?, f.next().unwrap_or(""));
    if pid == me {
        return None;
    }
    match kind {
        "tag" => Some(Purge::Tag(unescape(value).into())),
        "key" => Some(Purge::Key(unescape(value).into())),
        "all" => Some(Purge::All),
        _ => None,
    }
}

impl Journal {
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Starts journaling to `path`: `fresh` truncates it (the old process, when asked for its
    /// snapshot); otherwise the lines already there are read too (the new process, which must
    /// apply what the old one purged since the snapshot).
    pub fn start(&self, path: &Path, fresh: bool) -> io::Result<()> {
        let append = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)?;
        if fresh {
            append.set_len(0)?;
        }
        let mut read = File::open(path)?;
        read.seek(SeekFrom::Start(0))?;
        *self.open.lock() = Some(Open {
            path: path.to_owned(),
            append,
            read,
            partial: Vec::new(),
            me: std::process::id().to_string(),
        });
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops journaling; `remove` deletes the file (the last of the two processes does).
    pub fn stop(&self, remove: bool) {
        self.active.store(false, Ordering::Release);
        if let Some(open) = self.open.lock().take()
            && remove
        {
            let _ = std::fs::remove_file(&open.path);
        }
    }

    /// Appends a purge this process makes, before it is applied.
    pub fn record(&self, purge: &Purge) {
        if !self.is_active() {
            return;
        }
        let mut guard = self.open.lock();
        let Some(open) = guard.as_mut() else { return };
        let line = match purge {
            Purge::Tag(t) => format!("{}\ttag\t{}\n", open.me, escape(t)),
            Purge::Key(k) => format!("{}\tkey\t{}\n", open.me, escape(k)),
            Purge::All => format!("{}\tall\t\n", open.me),
        };
        if let Err(e) = open.append.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot journal a purge for the other edge process");
        }
    }

    /// The other process's purges journaled since the last call.
    pub fn peer_purges(&self) -> Vec<Purge> {
        if !self.is_active() {
            return Vec::new();
        }
        let mut guard = self.open.lock();
        let Some(open) = guard.as_mut() else {
            return Vec::new();
        };
        let mut chunk = [0u8; 8192];
        loop {
            match open.read.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => open.partial.extend_from_slice(&chunk[..n]),
            }
        }
        let Some(end) = open.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = open.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter_map(|l| parse(l, &open.me))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_journaled_by_one_process_is_read_by_the_other_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("purges");
        let ours = Journal::default();
        ours.start(&path, true).unwrap();
        ours.record(&Purge::Tag("mine".into()));
        // Another process's lines, as it would append them (the last one seen half written).
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"1\ttag\tproduct-2\n1\tkey\tGET /a?x=1%09y\n1\tall\t\n1\ttag\tpart")
            .unwrap();
        assert_eq!(
            ours.peer_purges(),
            vec![
                Purge::Tag("product-2".into()),
                Purge::Key("GET /a?x=1\ty".into()),
                Purge::All
            ]
        );
        assert_eq!(
            ours.peer_purges(),
            vec![],
            "each line once; a partial one waits"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"ial\n")
            .unwrap();
        assert_eq!(ours.peer_purges(), vec![Purge::Tag("partial".into())]);
        ours.stop(true);
        assert!(!path.exists());
        assert_eq!(ours.peer_purges(), vec![]);
    }

    #[test]
    fn values_with_tabs_and_newlines_survive() {
        let v = "a\tb\nc%d\r";
        assert_eq!(unescape(&escape(v)), v);
        assert!(!escape(v).contains(['\t', '\n', '\r']));
    }
}
