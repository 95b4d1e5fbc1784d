//! Encrypted datastores end to end: backup/restore/dedup, nothing in
//! plain text on disk, wrong or missing keys refused cleanly, key
//! rotation, tampering detected, gc and check.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

const PW: &str = "correct horse battery staple";
/// In the content of a file and in a directory name of the source tree.
const CONTENT_CANARY: &[u8] = b"LIFEBOAT-PLAINTEXT-CANARY-7d3f0c";
const NAME_CANARY: &str = "canary-dirname-91ab5e";

/// Every file under `dir` (recursively) whose raw bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let data = fs::read(&p).unwrap();
                if data.windows(needle.len()).any(|w| w == needle) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// (path, size, mtime) of every file under `dir`: to see that a refused
/// command changed nothing.
fn state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (m.len(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

/// A source tree with a distinctive file content (in incompressible
/// bytes, so an unencrypted datastore keeps it verbatim) and a
/// distinctive directory name.
fn build(src: &Path) {
    gen_tree(src, 21, TreeSpec { dirs: 4, files: 60, max_file: 64 << 10, big_files: 1, big_size: 3 << 20 });
    let mut data = Rng::new(5).bytes(200 << 10);
    data[100_000..100_000 + CONTENT_CANARY.len()].copy_from_slice(CONTENT_CANARY);
    write_file(&src.join(NAME_CANARY).join("secret.bin"), &data);
}

fn sum(v: &serde_json::Value, k: &str) -> u64 {
    v["summary"][k].as_u64().or_else(|| v[k].as_u64()).unwrap_or_else(|| panic!("no {k} in {v:#}"))
}

#[test]
fn encrypted_backup_restore_dedup_gc_and_no_plaintext_on_disk() {
    let t = scratch("enc-roundtrip");
    let src = t.path().join("src");
    build(&src);

    // Control: an unencrypted datastore does hold the content verbatim.
    let plain = Ds::init(t.path().join("plain"));
    plain.backup(&src, &[]);
    assert!(!files_containing(&plain.path, CONTENT_CANARY).is_empty(), "control: the canary should be visible unencrypted");

    let ds = Ds::init_encrypted(t.path().join("ds"), PW);
    let cfg = ds.config();
    assert!(cfg["features"].as_array().unwrap().contains(&serde_json::json!("encryption")), "{cfg:#}");
    assert_eq!(cfg["encryption"]["cipher"], "xchacha20poly1305");
    let b1 = ds.backup(&src, &[]);
    let id1 = b1["snapshot_id"].as_str().unwrap().to_string();
    ds.assert_restores(&id1, &src, t.path());

    // Nothing readable on disk: not the content, not the path name, not
    // the source path (in the snapshot document), not the plain BLAKE3 id
    // of the content.
    let src_str = src.to_str().unwrap().as_bytes().to_vec();
    let secret = fs::read(src.join(NAME_CANARY).join("secret.bin")).unwrap();
    let plain_id = lifeboat_store::BlobId::of(&secret).0;
    for (what, needle) in [("file content", CONTENT_CANARY.to_vec()), ("directory name", NAME_CANARY.as_bytes().to_vec()), ("source path", src_str), ("plain content hash", plain_id.to_vec())] {
        let hits = files_containing(&ds.path, &needle);
        assert!(hits.is_empty(), "{what} in plain text under the encrypted datastore: {hits:?}");
    }

    // A second backup of the same tree adds only its snapshot document.
    let b2 = ds.backup(&src, &[]);
    assert_eq!(b2["parent"], id1.as_str(), "{b2:#}");
    assert!(sum(&b2, "bytes_added") < 4096, "{b2:#}");
    assert!(sum(&b2, "blobs_added") <= 1, "{b2:#}");
    // Forced re-read: every chunk deduplicates against the first run.
    let b3 = ds.backup(&src, &["--force"]);
    assert!(sum(&b3, "bytes_read") > 3 << 20, "{b3:#}");
    assert!(sum(&b3, "bytes_added") < 4096, "{b3:#}");

    let o = ds.run("snapshots", ["--json"]);
    o.expect_ok();
    assert_eq!(ds.snapshots().len(), 3);
    ds.run("ls", [id1.as_str(), "/"]).expect_ok();
    ds.assert_check_clean();

    // gc on an encrypted datastore: a backup that died after sealing its
    // pack, before the index commit, leaves a pack that gc removes.
    let extra = t.path().join("extra");
    fs::create_dir_all(&extra).unwrap();
    write_random(&extra.join("x.bin"), 2 << 20, 77);
    let pack_before = ds.pack_bytes();
    let mut c = ds.cmd("backup");
    c.env("LIFEBOAT_FAILPOINTS", "pack-sealed=abort").arg(&extra);
    let o = run_cmd(c);
    assert!(!o.ok(), "{o}");
    assert!(ds.pack_bytes() > pack_before, "the failed backup left no pack to collect");
    let o = ds.run("gc", Vec::<&str>::new());
    o.expect_ok();
    assert_eq!(ds.pack_bytes(), pack_before, "gc did not reclaim the dead pack\n{o}");
    ds.assert_check_clean();
    ds.assert_restores(&id1, &src, t.path());
}

#[test]
fn wrong_or_missing_key_is_refused_and_changes_nothing() {
    let t = scratch("enc-wrongkey");
    let src = t.path().join("src");
    gen_tree(&src, 22, TreeSpec::small());
    let ds = Ds::init_encrypted(t.path().join("ds"), PW);
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    let before = state(&ds.path);

    let bad = Ds { path: ds.path.clone(), password: Some("Tr0ub4dor&3".into()) };
    let none = Ds::at(&ds.path);
    let dst = t.path().join("dst");
    for (who, d) in [("wrong passphrase", &bad), ("no key", &none)] {
        let outs = [d.backup_raw(&src, &[]), d.run("snapshots", ["--json"]), d.restore(&id, &dst, &[]), d.check(true), d.run("gc", Vec::<&str>::new()), d.run("ls", [id.as_str(), "/"])];
        for o in &outs {
            assert_eq!(o.code(), Some(1), "{who}\n{o}");
            assert!(o.stdout.is_empty(), "{who}: output on stdout\n{o}");
            let want = if d.password.is_some() {
                format!("the passphrase or key file does not unlock datastore {}", ds.path.display())
            } else {
                format!("datastore {} is encrypted: give --password-file, --key-file or LIFEBOAT_PASSWORD", ds.path.display())
            };
            assert!(o.stderr.contains(&want), "{who}: stderr lacks {want:?}\n{o}");
            assert_eq!(o.stderr.lines().count(), 1, "{who}: one clear line\n{o}");
        }
    }
    assert!(!dst.exists(), "a refused restore created its target");
    assert_eq!(state(&ds.path), before, "a refused command changed the datastore");

    // --password-file with the right passphrase (first line; the line end
    // is not part of it), and with a wrong one.
    let pwf = t.path().join("pw");
    fs::write(&pwf, format!("{PW}\n")).unwrap();
    none.run("snapshots", [&*format!("--password-file={}", pwf.display())]).expect_ok();
    fs::write(&pwf, "nope\n").unwrap();
    let o = none.run("snapshots", [&*format!("--password-file={}", pwf.display())]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("does not unlock"), "{o}");
    // A key file does not open a passphrase slot.
    let kf = t.path().join("key");
    fs::write(&kf, "0123456789abcdef0123456789abcdef\n").unwrap();
    let o = none.run("snapshots", [&*format!("--key-file={}", kf.display())]);
    assert!(o.code() == Some(1) && o.stderr.contains("does not unlock"), "{o}");

    // An unencrypted datastore ignores a key given in the environment.
    let plain = Ds::init(t.path().join("plain"));
    let plain_pw = Ds { path: plain.path.clone(), password: Some("whatever".into()) };
    plain_pw.backup(&src, &[]);

    // Unknown features in config.json are refused by name.
    ds.set_config("features", serde_json::json!(["encryption", "quantum-dedup"]));
    let o = ds.run("snapshots", Vec::<&str>::new());
    assert!(o.code() == Some(1) && o.stderr.contains("quantum-dedup") && o.stderr.contains("not support"), "{o}");
}

#[test]
fn key_files_and_key_rotation() {
    let t = scratch("enc-keys");
    let src = t.path().join("src");
    gen_tree(&src, 23, TreeSpec::small());
    let dsp = t.path().join("ds");
    let kf = t.path().join("ds.key");

    // init with a key file that does not exist yet: it is created.
    let o = lb(args!["datastore", "init", "--encrypt", "--key-file", &kf, &dsp]);
    o.expect_ok();
    assert!(kf.is_file(), "{o}");
    assert_eq!(fs::metadata(&kf).unwrap().mode() & 0o777, 0o600);
    let kfa = format!("--key-file={}", kf.display());
    let keyed = |sub: &str, extra: &[&str]| {
        let mut c = lb_cmd();
        c.arg(sub).arg("--datastore").arg(&dsp).arg(&kfa).args(extra);
        c
    };
    let mut c = keyed("backup", &["--json"]);
    c.arg(&src);
    let o = run_cmd(c);
    o.expect_ok();
    let id = o.json()["snapshot_id"].as_str().unwrap().to_string();

    let list = |extra: &[&str]| {
        let mut c = lb_cmd();
        c.args(args!["datastore", "key", "list", "--json", "--datastore", &dsp]).args(extra);
        let o = run_cmd(c);
        o.expect_ok();
        o.json()["slots"].as_array().unwrap().clone()
    };
    let slots = list(&[]);
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0]["kind"], "keyfile");
    let kf_slot = slots[0]["id"].as_str().unwrap().to_string();

    // Add a passphrase, unlocking with the key file.
    let pw1 = t.path().join("pw1");
    fs::write(&pw1, "first passphrase\n").unwrap();
    let mut c = lb_cmd();
    c.args(args!["datastore", "key", "add", "--datastore", &dsp, &kfa, "--new-password-file", &pw1]);
    run_cmd(c).expect_ok();
    assert_eq!(list(&[]).len(), 2);
    let pw_ds = Ds { path: dsp.clone(), password: Some("first passphrase".into()) };
    pw_ds.run("snapshots", Vec::<&str>::new()).expect_ok();

    // Remove the key file's slot (unlocking with the passphrase): the key
    // file no longer opens the datastore; the passphrase does.
    let mut c = lb_cmd();
    c.args(args!["datastore", "key", "remove", "--datastore", &dsp, &kf_slot]).env("LIFEBOAT_PASSWORD", "first passphrase");
    run_cmd(c).expect_ok();
    let o = run_cmd(keyed("snapshots", &[]));
    assert!(o.code() == Some(1) && o.stderr.contains("does not unlock"), "old key still works\n{o}");
    pw_ds.assert_restores(&id, &src, t.path());

    // The last slot is never removed.
    let last = list(&[])[0]["id"].as_str().unwrap().to_string();
    let mut c = lb_cmd();
    c.args(args!["datastore", "key", "remove", "--datastore", &dsp, &last]).env("LIFEBOAT_PASSWORD", "first passphrase");
    let o = run_cmd(c);
    assert!(o.code() == Some(1) && o.stderr.contains("last one"), "{o}");
    // Removing needs a key that unlocks it.
    let mut c = lb_cmd();
    c.args(args!["datastore", "key", "remove", "--datastore", &dsp, &last]).env("LIFEBOAT_PASSWORD", "wrong");
    let o = run_cmd(c);
    assert!(o.code() == Some(1) && o.stderr.contains("does not unlock"), "{o}");

    // passwd: replace the passphrase by another one, in one step.
    let mut c = lb_cmd();
    c.args(args!["datastore", "key", "passwd", "--datastore", &dsp]).env("LIFEBOAT_PASSWORD", "first passphrase").env("LIFEBOAT_NEW_PASSWORD", "second passphrase");
    run_cmd(c).expect_ok();
    let slots = list(&[]);
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_ne!(slots[0]["id"].as_str().unwrap(), last);
    let o = pw_ds.run("snapshots", Vec::<&str>::new());
    assert!(o.code() == Some(1) && o.stderr.contains("does not unlock"), "{o}");
    let pw2 = Ds { path: dsp.clone(), password: Some("second passphrase".into()) };
    pw2.assert_restores(&id, &src, t.path());
    // New backups still deduplicate against data written under the old key.
    let b = pw2.backup(&src, &["--force"]);
    assert!(sum(&b, "bytes_added") < 4096, "{b:#}");
    pw2.assert_check_clean();

    // Concurrent key changes do not lose one another's slot.
    let kids: Vec<ChildGuard> = (0..3)
        .map(|i| {
            let mut c = lb_cmd();
            c.args(args!["datastore", "key", "add", "--datastore", &dsp, "--new-key-file", t.path().join(format!("k{i}"))]).env("LIFEBOAT_PASSWORD", "second passphrase");
            ChildGuard::spawn(c)
        })
        .collect();
    for k in kids {
        k.wait().expect_ok();
    }
    assert_eq!(list(&[]).len(), 4);
    for i in 0..3 {
        let mut c = lb_cmd();
        c.args(args!["snapshots", "--datastore", &dsp, "--key-file", t.path().join(format!("k{i}"))]);
        run_cmd(c).expect_ok();
    }

    // Without --encrypt a key option is an error, not silently ignored.
    let o = lb(args!["datastore", "init", "--key-file", &kf, t.path().join("ds2")]);
    assert!(matches!(o.code(), Some(1) | Some(2)) && o.stderr.contains("--encrypt"), "{o}");
    assert!(!t.path().join("ds2").join("config.json").exists());
    // Without any key and no terminal, init --encrypt says what to give.
    let o = lb(args!["datastore", "init", "--encrypt", t.path().join("ds3")]);
    assert!(o.code() == Some(1) && o.stderr.contains("--password-file"), "{o}");
    assert!(!t.path().join("ds3").exists());
}

/// (offset, kind, stored_len) of every record in a pack file.
/// The pack's records (common::pack_records), each asserted to carry the
/// encrypted flag (header byte 2).
fn encrypted_pack_records(path: &Path) -> Vec<(u64, u8, u64)> {
    let data = fs::read(path).unwrap();
    let recs = pack_records(path);
    for (off, _, _) in &recs {
        assert_eq!(data[*off as usize + 2], 1, "record at {off} is not flagged encrypted");
    }
    recs
}

#[test]
fn tampered_pack_is_detected_and_never_restored_as_garbage() {
    let t = scratch("enc-tamper");
    let src = t.path().join("src");
    gen_tree(&src, 24, TreeSpec { dirs: 2, files: 10, max_file: 16 << 10, big_files: 0, big_size: 0 });
    write_random(&src.join("big.bin"), 4 << 20, 9);
    let ds = Ds::init_encrypted(t.path().join("ds"), PW);
    let id = ds.backup(&src, &[])["snapshot_id"].as_str().unwrap().to_string();
    ds.assert_check_clean();

    // One flipped bit in the sealed bytes of a file chunk (only big.bin
    // has chunks).
    let pack = ds.largest_pack().0;
    let rec = encrypted_pack_records(&pack).into_iter().find(|r| r.1 == 1).expect("a file chunk record");
    let at = rec.0 + 48 + rec.2 / 2;
    let f = fs::OpenOptions::new().read(true).write(true).open(&pack).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
    drop(f);

    let o = ds.check(true);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stdout.contains("authentication failed"), "{o}");
    let damaged: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("damaged:")).collect();
    assert!(!damaged.is_empty() && damaged.iter().all(|l| l.contains("/big.bin")), "{o}");

    // Restore salvages the rest (exit 3) and names the file; the damaged
    // file is a true prefix followed by zeros, never garbage.
    let dst = t.path().join("dst");
    let o = ds.restore(&id, &dst, &[]);
    assert_eq!(o.code(), Some(3), "{o}");
    assert!(o.stderr.contains("big.bin") && o.stderr.contains("authentication failed") && o.stderr.contains("corrupt"), "{o}");
    let orig = fs::read(src.join("big.bin")).unwrap();
    let got = fs::read(dst.join("big.bin")).unwrap();
    assert_eq!(got.len(), orig.len());
    let good = got.iter().zip(&orig).take_while(|(a, b)| a == b).count();
    assert!(good < orig.len() && got[good..].iter().all(|b| *b == 0), "restored big.bin holds garbage");

    // A changed key slot (wrapped master key) is a wrong key, not garbage.
    let mut cfg = ds.config();
    let w = cfg["encryption"]["slots"][0]["wrapped_master"].as_str().unwrap().to_string();
    let flipped = format!("{}{}", if w.starts_with('0') { "1" } else { "0" }, &w[1..]);
    cfg["encryption"]["slots"][0]["wrapped_master"] = flipped.into();
    fs::write(ds.path.join("config.json"), serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let o = ds.run("snapshots", Vec::<&str>::new());
    assert!(o.code() == Some(1) && o.stderr.contains("does not unlock"), "{o}");
}
