//! No module import circle in any workspace crate. For every crate root (`src/lib.rs`, each
//! `src/bin/<name>/`), the module graph is built from the non-test code: a module's edges are
//! the `crate::…` and `super::…` paths it names (the longest prefix that is a module of the
//! crate); a strongly connected component of more than one module fails the test. Run with
//! `cargo test -p csi --test module_graph -- --nocapture` to print every crate's graph.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A crate root: the directory its module tree starts in and its root file.
struct Root {
    name: String,
    dir: PathBuf,
    file: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every crate root of the workspace members (and of `fuzz/`).
fn roots() -> Vec<Root> {
    let ws = workspace();
    let manifest = fs::read_to_string(ws.join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let mut dirs: Vec<String> = members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    dirs.push("fuzz".into());
    let mut out = Vec::new();
    for d in dirs {
        let src = ws.join(&d).join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                out.push(Root {
                    name: format!("{d}/src/{root}"),
                    dir: src.clone(),
                    file: src.join(root),
                });
            }
        }
        if let Ok(bins) = fs::read_dir(src.join("bin")) {
            for b in bins.flatten() {
                let p = b.path();
                if p.join("main.rs").exists() {
                    out.push(Root {
                        name: format!("{d}/src/bin/{}", b.file_name().to_string_lossy()),
                        dir: p.clone(),
                        file: p.join("main.rs"),
                    });
                }
            }
        }
    }
    out
}

/// The code of a file without comments and without `#[cfg(test)]` items.
fn code(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_mods = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].split("//").next().unwrap_or("");
        if line.trim() == "#[cfg(test)]" {
            // The next item is test-only: a `mod x;` (its file is skipped) or a block.
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            if let Some(name) = next
                .strip_prefix("mod ")
                .or_else(|| next.strip_prefix("pub mod "))
                .or_else(|| next.strip_prefix("pub(crate) mod "))
                .and_then(|r| r.strip_suffix(';'))
            {
                test_mods.push(name.trim().to_owned());
                i += 2;
                continue;
            }
            let mut depth = 0i32;
            let mut opened = false;
            i += 1;
            while i < lines.len() {
                for c in lines[i].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                i += 1;
                if (opened && depth <= 0) || (!opened && lines[i - 1].trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    (out, test_mods)
}

/// The modules of a crate (path → file), following `mod x;` declarations from the root.
fn modules(root: &Root) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), root.file.clone(), root.dir.clone())];
    while let Some((path, file, dir)) = todo.pop() {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let (code, test_mods) = code(&text);
        for line in code.lines() {
            let l = line.trim();
            let Some(decl) = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
                .or_else(|| l.strip_prefix("pub(crate) mod "))
                .and_then(|r| r.strip_suffix(';'))
            else {
                continue;
            };
            let name = decl.trim().to_owned();
            if test_mods.contains(&name) {
                continue;
            }
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}::{name}")
            };
            let (f1, f2) = (
                dir.join(format!("{name}.rs")),
                dir.join(&name).join("mod.rs"),
            );
            if f1.exists() {
                todo.push((child, f1, dir.join(&name)));
            } else if f2.exists() {
                todo.push((child, f2, dir.join(&name)));
            }
        }
        out.insert(
            if path.is_empty() {
                "crate".into()
            } else {
                path
            },
            code,
        );
    }
    out
}

/// `crate::a::b::Item` and `super::…` paths of `code` in module `module`, as modules.
fn edges(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parts: Vec<&str> = if module == "crate" {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(off) = code[at..].find(start) {
            let i = at + off;
            at = i + start.len();
            // Only a path that starts here (not `foo_crate::`).
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let rest: String = code[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segs: Vec<&str> = rest.split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<String> = Vec::new();
            if segs.first() == Some(&"crate") {
                segs.remove(0);
            } else {
                base = parts.iter().map(|s| (*s).to_owned()).collect();
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    base.pop();
                }
            }
            let mut best = if base.is_empty() {
                "crate".to_owned()
            } else {
                base.join("::")
            };
            let mut cur = base.clone();
            for s in segs {
                cur.push(s.to_owned());
                let p = cur.join("::");
                if known.contains(&p) {
                    best = p;
                } else {
                    break;
                }
            }
            // Not an edge: the module itself, its descendants (it contains them: that edge is
            // added by [`contained`]) and its ancestors (they contain it; a child may use its
            // parent's private helpers).
            let ancestor = best == "crate" || module.starts_with(&format!("{best}::"));
            if best != module && !best.starts_with(&format!("{module}::")) && !ancestor {
                out.insert(best);
            }
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn sccs(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            t.out.push(comp);
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The use edges plus an edge from every module to the modules it declares (a circle through a
/// parent and its child is a circle too).
fn contained(uses: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g = uses.clone();
    for m in uses.keys() {
        if let Some((parent, _)) = m.rsplit_once("::") {
            g.entry(parent.to_owned()).or_default().insert(m.clone());
        }
    }
    g
}

fn graph_of(root: &Root) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(root);
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, code)| (m.clone(), edges(m, code, &known)))
        .collect()
}

/// Circles that predate this check, in crates whose owners remove them (`luks2`, `dm`): each
/// entry must stay exactly as it is until it is gone, and then leave this list. Anything else
/// (every circle in `csi`, any new one) fails.
const KNOWN: &[(&str, &str)] = &[
    ("luks2/src/lib.rs", "backup, format, header, keyslot"),
    ("dm/src/lib.rs", "error, types"),
    ("dm/src/lib.rs", "policy, segment"),
];

#[test]
fn no_crate_has_a_module_import_circle() {
    let mut circles = Vec::new();
    let mut found = Vec::new();
    let roots = roots();
    assert!(
        roots.iter().any(|r| r.name == "csi/src/lib.rs"),
        "found csi"
    );
    for root in &roots {
        let graph = graph_of(root);
        println!(
            "== {} ({} modules; `a -> b`: a names crate::b or super::b)",
            root.name,
            graph.len()
        );
        for (m, deps) in &graph {
            if !deps.is_empty() {
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                println!("{m} -> {}", deps.join(", "));
            }
        }
        for mut comp in sccs(&contained(&graph)) {
            if comp.len() > 1 {
                comp.sort();
                let members = comp.join(", ");
                let known = KNOWN.contains(&(root.name.as_str(), members.as_str()));
                println!(
                    "CIRCLE{}: {members}",
                    if known {
                        " (known, listed in KNOWN)"
                    } else {
                        ""
                    }
                );
                found.push((root.name.clone(), members.clone()));
                if !known {
                    circles.push(format!("{}: {members}", root.name));
                }
            }
        }
    }
    assert!(circles.is_empty(), "module import circles: {circles:#?}");
    for (krate, members) in KNOWN {
        assert!(
            found.iter().any(|(k, m)| k == krate && m == members),
            "{krate}: the circle {members} is gone: remove it from KNOWN"
        );
    }
}

#[test]
fn the_checker_finds_a_circle_and_ignores_tests_and_comments() {
    let code_a = "use crate::b::x;\n// crate::c::y in a comment\n#[cfg(test)]\nmod tests {\n    use crate::c::z;\n}\n";
    let code_b = "pub fn x() { super::a::f() }\n";
    let known: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let (a, _) = code(code_a);
    let (b, _) = code(code_b);
    let graph = BTreeMap::from([
        ("a".to_owned(), edges("a", &a, &known)),
        ("b".to_owned(), edges("b", &b, &known)),
        ("c".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
    assert_eq!(graph["b"], BTreeSet::from(["a".to_owned()]));
    let big: Vec<_> = sccs(&graph).into_iter().filter(|c| c.len() > 1).collect();
    assert_eq!(big.len(), 1);
    assert_eq!(big[0].len(), 2);

    // A child using its parent is nesting, not a circle; a parent's child that uses a module
    // which uses the parent is one.
    let known: BTreeSet<String> = ["p", "p::c", "q"].iter().map(|s| (*s).to_owned()).collect();
    let uses = BTreeMap::from([
        ("p".to_owned(), BTreeSet::new()),
        (
            "p::c".to_owned(),
            edges("p::c", "super::f(); crate::q::g();", &known),
        ),
        ("q".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(uses["p::c"], BTreeSet::from(["q".to_owned()]));
    assert!(sccs(&contained(&uses)).iter().all(|c| c.len() == 1));
    let mut circle = uses.clone();
    circle.insert("q".to_owned(), edges("q", "use crate::p::f;", &known));
    assert!(sccs(&contained(&circle)).iter().any(|c| c.len() == 3));
}
