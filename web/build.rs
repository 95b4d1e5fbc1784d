//! Builds the web console (app/, TypeScript + Vite) with npm into
//! OUT_DIR and writes the table of its files for `include_bytes!`: the
//! appliance has no Node at run time, so the page is part of the binary.
//!
//! `LIFEBOAT_WEB_DIST=<dir>` embeds an already built app instead (a
//! packager's cache). A source tree without app/ builds a binary whose
//! `/` says so, with a warning here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let app = here.join("app");
    println!("cargo:rerun-if-env-changed=LIFEBOAT_WEB_DIST");
    // Only paths that exist: a missing one counts as changed, every build.
    // (The generated API types go to app/types/, which is not watched:
    // they are written during this very build.)
    for p in ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json", "public"] {
        if app.join(p).exists() {
            println!("cargo:rerun-if-changed={}", app.join(p).display());
        }
    }
    // The page's API types are generated from the OpenAPI document.
    println!("cargo:rerun-if-changed={}", here.join("../docs/openapi.json").display());

    let dist = if let Ok(d) = std::env::var("LIFEBOAT_WEB_DIST") {
        Some(PathBuf::from(d))
    } else if app.join("package.json").exists() {
        Some(build_app(&app, &out))
    } else {
        println!("cargo:warning=web/app is missing: this binary serves no web console");
        None
    };
    let mut files = Vec::new();
    if let Some(d) = &dist {
        collect(d, d, &mut files);
        assert!(files.iter().any(|(rel, _)| rel == "index.html"), "the web console build in {} has no index.html", d.display());
    }
    files.sort();
    let mut table = String::from("/// The web console's files: (path under `/`, bytes).\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        table.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", abs.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out.join("files.rs"), table).unwrap();
}

fn build_app(app: &Path, out: &Path) -> PathBuf {
    let npm = |args: &[&str]| {
        let status = Command::new("npm").args(args).current_dir(app).env("LIFEBOAT_WEB_OUT", out.join("dist")).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm {}` in {} failed ({s}); run it there to see why", args.join(" "), app.display()),
            Err(e) => panic!("the web console needs Node.js and npm to build ({e}): run scripts/setup.sh, or `apt-get install nodejs npm`"),
        }
    };
    // setup.sh installs the packages beforehand; a fresh clone built by
    // hand gets them here (the lockfile pins every one).
    if !app.join("node_modules").exists() {
        npm(&["ci", "--no-audit", "--no-fund"]);
    }
    npm(&["run", "build"]);
    out.join("dist")
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, files);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            files.push((rel, p));
        }
    }
}
