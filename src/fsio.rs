//! Atomic file writes: a temporary file in the same folder, synced, then renamed over the
//! target, so a reader (or a crash) never sees half a file and nothing is lost on failure.

use std::io::Write;
use std::path::{Path, PathBuf};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile_in(dir, path)?;
    let result = (|| {
        temp.1.write_all(bytes)?;
        temp.1.sync_all()?;
        std::fs::rename(&temp.0, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp.0);
    }
    result
}

/// A path as text for JSON, reports and one-line messages: as it is where it is UTF-8 and
/// printable, else each byte that is not UTF-8 written `\xNN` and each control character
/// escaped (`\n`), so that no path makes a write fail or splits a line.
pub fn path_text(path: &Path) -> String {
    let mut text = String::new();
    let push_valid = |text: &mut String, valid: &str| {
        for c in valid.chars() {
            if c.is_control() {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        for chunk in path.as_os_str().as_bytes().utf8_chunks() {
            push_valid(&mut text, chunk.valid());
            for byte in chunk.invalid() {
                text.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    #[cfg(not(unix))]
    push_valid(&mut text, &path.to_string_lossy());
    text
}

/// Serialises a path as [`path_text`] writes it, for `#[serde(serialize_with)]`: a
/// non-UTF-8 path would otherwise fail the whole record.
pub fn serialize_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path_text(path))
}

/// Whether `name` is a temporary file [`write_atomic`] makes (or a crash left) for one of
/// the entries `own`: `.NAME.tmpPID-N`.
fn is_own_temp_file(name: &str, own: &[&str]) -> bool {
    let Some((target, suffix)) = name
        .strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp"))
    else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    own.contains(&target)
        && suffix
            .split_once('-')
            .is_some_and(|(pid, attempt)| digits(pid) && digits(attempt))
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    for attempt in 0..100u32 {
        let candidate = dir.join(format!(".{name}.tmp{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a temporary file"))
}

/// The file in a run or study folder that the one process working in it holds locked.
pub const LOCK: &str = ".mmix-lock";

/// A run's or study's folder, held by this process until the value is dropped (or the
/// process ends, however it ends: the lock is the operating system's advisory lock).
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{} is in use by another mmix process{}: one process works in a run or study folder at a time, so wait for it to end (or stop it) and try again", path_text(dir), holder.map(|pid| format!(" (PID {pid})")).unwrap_or_default())]
    Busy {
        /// The folder.
        dir: PathBuf,
        /// The holder's process ID, as it wrote it.
        holder: Option<u32>,
    },
    /// The lock file could not be made or locked.
    #[error("cannot lock {}: {reason}", path_text(path))]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
}

/// Locks the existing folder `dir` for this process through its [`LOCK`] file (made if
/// missing), which then names this process's ID for the message another one gets.
pub fn lock_folder(dir: &Path) -> Result<FolderLock, LockError> {
    use std::io::{Read, Seek};
    let path = dir.join(LOCK);
    let io = |reason| LockError::Io {
        path: path.clone(),
        reason,
    };
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Err(io(std::io::Error::other(
            "it is not a regular file (mmix's lock file is), so it is left alone",
        )));
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.take(32).read_to_string(&mut text);
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(FolderLock { _file: file })
}

/// Why mmix will not write into an output path: something there is not its own.
// Each variant says what it means in its `#[error]` message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "{} holds {name}, which mmix did not write; choose another folder or move it away",
        dir.display()
    )]
    Foreign { dir: PathBuf, name: String },
    #[error(
        "{} is a symbolic link; mmix writes only its own files and does not follow links among them",
        path.display()
    )]
    Link { path: PathBuf },
    #[error("{} is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("{} exists and is not a PNG image mmix wrote; choose another name", path.display())]
    NotOurImage { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
}

/// Checks that `dir` is absent, or a folder whose entries all bear names in `own` (what an
/// earlier run of the same command wrote), none of them a link.
pub fn check_own_folder(dir: &Path, own: &[&str]) -> Result<(), OwnershipError> {
    let io = |reason| OwnershipError::Io {
        path: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(OwnershipError::NotAFolder {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    names.sort();
    for name in names {
        let text = name.to_string_lossy();
        if !(own.contains(&text.as_ref()) || is_own_temp_file(&text, own)) {
            return Err(OwnershipError::Foreign {
                dir: dir.to_path_buf(),
                name: text.into_owned(),
            });
        }
        let path = dir.join(&name);
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            return Err(OwnershipError::Link { path });
        }
    }
    Ok(())
}

/// Checks that an image about to be written to `path` replaces nothing but a PNG: the path
/// is absent, or a regular file (not a link) that starts as a PNG does.
pub fn check_replaceable_png(path: &Path) -> Result<(), OwnershipError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(reason) => {
            return Err(OwnershipError::Io {
                path: path.to_path_buf(),
                reason,
            });
        }
        Ok(metadata) => metadata,
    };
    if metadata.file_type().is_symlink() {
        return Err(OwnershipError::Link {
            path: path.to_path_buf(),
        });
    }
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut start = [0u8; 8];
    let is_png = metadata.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut start))
            .is_ok()
        && start == SIGNATURE;
    if !is_png {
        return Err(OwnershipError::NotOurImage {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The most a configuration or study file may hold.
pub const TEXT_FILE_BYTES: u64 = 16 << 20;
/// The most any data, checkpoint or report file may hold: the machine's memory.
pub fn data_file_bytes() -> u64 {
    crate::machine::memory_bytes()
}

/// [`read_regular`] of a UTF-8 text file of at most [`TEXT_FILE_BYTES`].
pub fn read_regular_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, TEXT_FILE_BYTES)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads a file that must be a regular file of at most `max_bytes`: a FIFO, a device or a link
/// to one is refused by name instead of blocking or reading without end.
pub fn read_regular(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO with no writer returns at once.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, device or folder), so it is not read",
        ));
    }
    if metadata.len() > max_bytes {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max_bytes} read from one file",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::other(format!(
            "it grew past the {max_bytes} bytes read from one file"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failure_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        let missing = dir.path().join("no-such-folder").join("a.json");
        assert!(write_atomic(&missing, b"two").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;

    #[test]
    fn a_folder_is_ours_only_when_every_entry_bears_one_of_our_names() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("study");
        check_own_folder(&dir, &["report.md"]).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("report.md"), b"#").unwrap();
        check_own_folder(&dir, &["report.md"]).unwrap();
        // A write of another mmix process under way (or left by a crash) is mmix's own.
        std::fs::write(dir.join(".report.md.tmp4242-0"), b"#").unwrap();
        check_own_folder(&dir, &["report.md"]).unwrap();
        std::fs::write(dir.join(".thesis.tex.tmp4242-0"), b"#").unwrap();
        assert!(check_own_folder(&dir, &["report.md"]).is_err());
        std::fs::remove_file(dir.join(".thesis.tex.tmp4242-0")).unwrap();
        std::fs::write(dir.join("thesis.tex"), b"mine").unwrap();
        let error = check_own_folder(&dir, &["report.md"]).unwrap_err();
        assert!(error.to_string().contains("thesis.tex"), "{error}");
        std::fs::remove_file(dir.join("thesis.tex")).unwrap();
        std::os::unix::fs::symlink(root.path(), dir.join("runs")).unwrap();
        assert!(matches!(
            check_own_folder(&dir, &["report.md", "runs"]),
            Err(OwnershipError::Link { .. })
        ));
    }

    #[test]
    fn only_a_png_is_replaced() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("compare.png");
        check_replaceable_png(&path).unwrap();
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nrest").unwrap();
        check_replaceable_png(&path).unwrap();
        std::fs::write(&path, b"my notes").unwrap();
        assert!(matches!(
            check_replaceable_png(&path),
            Err(OwnershipError::NotOurImage { .. })
        ));
    }

    #[test]
    fn fifos_devices_and_oversized_files_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("x.png");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(read_regular(&fifo, 1 << 20).is_err());
        let zero = root.path().join("zero.png");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_regular(&zero, 1 << 20).is_err());
        let big = root.path().join("big.png");
        std::fs::write(&big, vec![0u8; 100]).unwrap();
        assert!(read_regular(&big, 99).is_err());
        assert_eq!(read_regular(&big, 100).unwrap().len(), 100);
    }
}

#[cfg(test)]
mod path_text_tests {
    use super::*;

    #[test]
    fn a_path_as_text_keeps_utf8_and_escapes_the_rest() {
        assert_eq!(path_text(Path::new("runs/é x")), "runs/é x");
        assert_eq!(path_text(Path::new("a\nb.png")), "a\\nb.png");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = Path::new(std::ffi::OsStr::from_bytes(b"runs/r\xff\xfe"));
            assert_eq!(path_text(path), "runs/r\\xff\\xfe");
            // It goes into JSON, which a path of these bytes itself cannot.
            assert!(serde_json::to_string(path).is_err());
            assert!(serde_json::to_string(&path_text(path)).is_ok());
        }
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_locked_folder_refuses_a_second_holder_until_the_first_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let first = lock_folder(root.path()).unwrap();
        match lock_folder(root.path()) {
            Err(LockError::Busy { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("a second lock: {other:?}"),
        }
        drop(first);
        let again = lock_folder(root.path()).unwrap();
        drop(again);
        // A link in the lock file's place is refused, not followed.
        let other = tempfile::tempdir().unwrap();
        std::fs::remove_file(root.path().join(LOCK)).unwrap();
        std::os::unix::fs::symlink(other.path().join("target"), root.path().join(LOCK)).unwrap();
        assert!(matches!(
            lock_folder(root.path()),
            Err(LockError::Io { .. })
        ));
        assert!(!other.path().join("target").exists());
    }
}
