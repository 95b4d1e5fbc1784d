//! Compression settings: `datastore init --compression` and `datastore
//! config --compression`, the `lz4` feature that keeps older readers from
//! misreading LZ4 records, a datastore whose records were written under
//! every setting, and bad values refused with a message that names them.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// Text (compresses well) and random bytes (does not), small and chunked.
fn build(src: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..40 {
        write_file(&src.join(format!("logs/app{i:02}.log")), &rng.text(20_000 + 3_000 * i));
    }
    write_file(&src.join("logs/huge.log"), &rng.text(6 << 20));
    for i in 0..10 {
        write_file(&src.join(format!("media/clip{i}.bin")), &rng.bytes(50_000));
    }
    write_random(&src.join("media/big.bin"), 5 << 20, seed + 1);
}

fn features(ds: &Ds) -> Vec<String> {
    ds.config()["features"].as_array().map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

/// `lifeboat datastore config --datastore DS FLAGS...`
fn configure(ds: &Ds, flags: &[&str]) -> Out {
    let mut c = lb_cmd();
    c.args(["datastore", "config", "--datastore"]).arg(&ds.path).args(flags);
    run_cmd(c)
}

fn init_with(path: &Path, flags: &[&str]) -> Ds {
    let mut args: Vec<&std::ffi::OsStr> = vec!["datastore".as_ref(), "init".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    args.push(path.as_os_str());
    lb(args).expect_ok();
    Ds::at(path)
}

#[test]
fn every_setting_backs_up_and_restores_and_compresses_as_asked() {
    let t = scratch("compression");
    let src = t.path().join("src");
    build(&src, 1);
    let text_bytes: u64 = (0..40u64).map(|i| 20_000 + 3_000 * i).sum::<u64>() + (6 << 20);

    let mut stored = std::collections::HashMap::new();
    for (name, flags, want) in [
        ("default", &[][..], "auto"),
        ("lz4", &["--compression", "lz4"][..], "lz4"),
        ("zstd3", &["--compression", "zstd", "--zstd-level", "3"][..], "zstd"),
        ("none", &["--compression", "none"][..], "none"),
    ] {
        let ds = init_with(&t.path().join(name), flags);
        let cfg = ds.config();
        assert_eq!(cfg["compression"], want, "{name}: {cfg:#}");
        // Settings that may write LZ4 records say so to older readers.
        assert_eq!(features(&ds).contains(&"lz4".to_string()), want == "auto" || want == "lz4", "{name}: {cfg:#}");
        let b = ds.backup(&src, &[]);
        let id = b["snapshot_id"].as_str().unwrap().to_string();
        ds.assert_check_clean();
        ds.assert_restores(&id, &src, t.path());
        stored.insert(name, sum(&b, "bytes_stored"));
    }
    let total = tree_bytes(&src);
    eprintln!("compression: {total} bytes of files ({text_bytes} of text); stored {stored:?}");
    // Nothing compressed: at least every byte.
    assert!(stored["none"] >= total, "{stored:?}");
    // Compressed: the text shrinks by more than half, the random bytes not at all.
    for name in ["default", "lz4", "zstd3"] {
        assert!(stored[name] < total - text_bytes / 2, "{name}: {stored:?}");
    }
    // zstd at level 3 stores less than lz4.
    assert!(stored["zstd3"] < stored["lz4"], "{stored:?}");
}

#[test]
fn switching_compression_keeps_old_records_readable() {
    let t = scratch("compression-switch");
    let ds = init_with(&t.path().join("ds"), &["--compression", "lz4"]);
    let mut snaps: Vec<(String, std::path::PathBuf)> = Vec::new();
    for (k, setting) in [&["--compression", "zstd"][..], &["--compression", "none"][..], &["--zstd-level", "-3"][..], &["--compression", "auto"][..]].iter().enumerate() {
        let src = t.path().join(format!("src{k}"));
        build(&src, 10 + k as u64);
        let b = ds.backup(&src, &[]);
        snaps.push((b["snapshot_id"].as_str().unwrap().to_string(), src));
        configure(&ds, setting).expect_ok();
    }
    let cfg = ds.config();
    assert_eq!(cfg["compression"], "auto", "{cfg:#}");
    assert_eq!(cfg["zstd_level"], -3, "{cfg:#}");
    // Once listed, the feature stays: lz4 records are still in the packs.
    assert!(features(&ds).contains(&"lz4".to_string()), "{cfg:#}");
    // `datastore config` without flags shows the settings and changes nothing.
    let o = configure(&ds, &[]);
    o.expect_ok();
    let shown: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(shown["compression"], "auto");
    ds.assert_check_clean();
    for (id, src) in &snaps {
        ds.assert_restores(id, src, t.path());
    }
}

#[test]
fn bad_settings_are_refused_and_change_nothing() {
    let t = scratch("compression-bad");
    let p = t.path().join("ds");
    let o = lb(args!["datastore", "init", "--compression", "brotli", &p]);
    assert_eq!(o.code(), Some(2), "{o}");
    assert!(o.stderr.contains("brotli") && o.stderr.contains("lz4"), "the error names the value and the choices\n{o}");
    assert!(!p.join("config.json").exists());

    let o = lb(args!["datastore", "init", "--compression", "lz4", "--zstd-level", "3", &p]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("--zstd-level"), "{o}");
    assert!(!p.join("config.json").exists());

    let ds = init_with(&p, &["--compression", "zstd"]);
    let before = ds.config();
    let o = configure(&ds, &["--zstd-level", "99"]);
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("99") && o.stderr.contains("out of range"), "{o}");
    assert_eq!(ds.config(), before, "a refused setting must not be saved");

    // A config that asks for LZ4 without listing the feature is damaged:
    // refused by name, not half-read.
    ds.set_config("compression", Value::from("lz4"));
    let o = ds.run("snapshots", Vec::<&str>::new());
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("lz4") && o.stderr.contains("feature"), "{o}");
    // An unknown compression name in the file is refused too, naming it.
    ds.set_config("compression", Value::from("brotli"));
    let o = ds.run("snapshots", Vec::<&str>::new());
    assert_eq!(o.code(), Some(1), "{o}");
    assert!(o.stderr.contains("brotli"), "{o}");
}
