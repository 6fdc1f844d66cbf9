//! The folder source's tests.

use super::*;
use model::{Kind, ObjectKey};

const SVC: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

#[test]
fn reads_nested_folders_and_keeps_last_good() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/a.yaml"), SVC).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let mut src = FolderSource::new(vec![dir.path().to_path_buf()]).unwrap();
    let first = src.load();
    assert_eq!(first.snapshot.services.len(), 1);
    assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);

    std::fs::write(dir.path().join("sub/a.yaml"), "kind: [broken").unwrap();
    let second = src.load();
    assert_eq!(second.snapshot, first.snapshot, "last good objects stay");
    assert!(second
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error && d.object().ends_with("a.yaml")));

    std::fs::remove_file(dir.path().join("sub/a.yaml")).unwrap();
    assert!(
        src.load().snapshot.is_empty(),
        "a deleted file's objects go"
    );
}

#[test]
fn refresh_reads_only_named_files_and_rescans_for_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::write(root.join("a.yaml"), SVC).unwrap();
    std::fs::write(root.join("b.yaml"), SVC.replace("name: a", "name: b")).unwrap();
    let mut src = FolderSource::new(vec![root.clone()]).unwrap();
    assert_eq!(src.load().snapshot.services.len(), 2);

    // A changed file named by an event is re-read; an unnamed change waits for its event.
    std::fs::write(root.join("a.yaml"), SVC.replace("port: 80", "port: 81")).unwrap();
    std::fs::write(root.join("c.yaml"), SVC.replace("name: a", "name: c")).unwrap();
    let load = src.refresh(&[root.join("a.yaml"), root.join(".a.yaml.swp")]);
    assert_eq!(load.snapshot.services.len(), 2);
    let a = &load.snapshot.services[&model::ObjectKey::new("default", "a")];
    assert_eq!(a.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 81);

    // A deleted file named by an event goes.
    std::fs::remove_file(root.join("b.yaml")).unwrap();
    let load = src.refresh(&[root.join("b.yaml")]);
    assert!(!load
        .snapshot
        .services
        .contains_key(&model::ObjectKey::new("default", "b")));

    // A new folder makes the whole tree be read again (and so c.yaml is found).
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/d.yaml"), SVC.replace("name: a", "name: d")).unwrap();
    let load = src.refresh(&[root.join("sub")]);
    assert_eq!(load.snapshot.services.len(), 3, "a, c and d");
    // Paths outside the roots are ignored.
    assert_eq!(src.refresh(&["/elsewhere/x.yaml".into()]), load);
}

#[test]
fn missing_root_is_an_error() {
    assert!(FolderSource::new(vec!["/nonexistent/portcullis".into()]).is_err());
}

#[test]
fn hidden_folders_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("..2024_01_01")).unwrap();
    std::fs::write(dir.path().join("..2024_01_01/a.yaml"), SVC).unwrap();
    let mut src = FolderSource::new(vec![dir.path().to_path_buf()]).unwrap();
    assert!(src.load().snapshot.is_empty());
    // Also when an event names the file inside the hidden folder.
    let inside = dir.path().join("..2024_01_01/a.yaml");
    assert!(!src.reads(&inside));
    assert!(src.refresh(&[inside]).snapshot.is_empty());
    assert!(src.reads(&dir.path().join("b.yaml")));
}

fn port_of(load: &Load, name: &str) -> i32 {
    let svc = &load.snapshot.services[&model::ObjectKey::new("default", name)];
    svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
}

fn svc(name: &str, port: u16) -> String {
    SVC.replace("name: a", &format!("name: {name}"))
        .replace("port: 80", &format!("port: {port}"))
}

#[test]
fn later_file_wins_and_the_earlier_definition_returns_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::write(root.join("a.yaml"), svc("x", 80)).unwrap();
    std::fs::write(root.join("b.yaml"), svc("x", 81)).unwrap();
    let mut src = FolderSource::new(vec![root.clone()]).unwrap();
    let load = src.load();
    assert_eq!(port_of(&load, "x"), 81);
    assert_eq!(load.diagnostics.len(), 1, "{:?}", load.diagnostics);
    assert!(load.diagnostics[0].object().ends_with("b.yaml"));
    assert!(load.diagnostics[0].message.contains("a.yaml"));

    std::fs::remove_file(root.join("b.yaml")).unwrap();
    let load = src.refresh(&[root.join("b.yaml")]);
    assert_eq!(port_of(&load, "x"), 80);
    assert!(load.diagnostics.is_empty(), "{:?}", load.diagnostics);

    // Twice in one file: the second document wins, with a warning on the same file.
    std::fs::write(
        root.join("a.yaml"),
        format!("{}---\n{}", svc("x", 82), svc("x", 83)),
    )
    .unwrap();
    let load = src.refresh(&[root.join("a.yaml")]);
    assert_eq!(port_of(&load, "x"), 83);
    assert_eq!(load.diagnostics.len(), 1, "{:?}", load.diagnostics);
}

#[test]
fn revision_moves_only_when_objects_or_diagnostics_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::write(root.join("a.yaml"), svc("x", 80)).unwrap();
    let mut src = FolderSource::new(vec![root.clone()]).unwrap();
    let first = src.load();
    let again = src.refresh(&[root.join("a.yaml")]);
    assert_eq!(again.revision, first.revision, "same text");
    std::fs::write(
        root.join("a.yaml"),
        format!("# a comment\n{}", svc("x", 80)),
    )
    .unwrap();
    let commented = src.refresh(&[root.join("a.yaml")]);
    assert_eq!(commented.revision, first.revision, "same objects");
    std::fs::write(root.join("a.yaml"), svc("x", 81)).unwrap();
    let changed = src.refresh(&[root.join("a.yaml")]);
    assert!(changed.revision > first.revision);
    std::fs::write(root.join("a.yaml"), "kind: [broken").unwrap();
    let broken = src.refresh(&[root.join("a.yaml")]);
    assert!(broken.revision > changed.revision, "a new diagnostic");
    assert_eq!(broken.snapshot, changed.snapshot);
}

/// The Services that differ between two loads (by allocation), in key order.
fn services_changed(before: &Load, after: &Load) -> Vec<(Kind, ObjectKey)> {
    let (a, b) = (&before.snapshot.services, &after.snapshot.services);
    let keys: std::collections::BTreeSet<&ObjectKey> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| match (a.get(*k), b.get(*k)) {
            (Some(x), Some(y)) => !Arc::ptr_eq(x, y),
            (None, None) => false,
            _ => true,
        })
        .map(|k| (Kind::Service, k.clone()))
        .collect()
}

#[test]
fn loads_say_which_objects_changed_since_the_load_before() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let slice = |port: u16| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: a-1, labels: {{kubernetes.io/service-name: a}}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [10.0.0.1]}}]\n"
        )
    };
    std::fs::write(
        root.join("a.yaml"),
        format!("{}{}", svc("a", 80), slice(8080)),
    )
    .unwrap();
    std::fs::write(root.join("b.yaml"), svc("b", 80)).unwrap();
    let mut src = FolderSource::new(vec![root.clone()]).unwrap();
    let first = src.load();
    assert_eq!(
        first.changes.since,
        u64::MAX,
        "nothing came before the first read"
    );
    assert!(first.changes.objects.is_empty());

    // Only the slice of a.yaml changes; its Service stays the same object.
    std::fs::write(
        root.join("a.yaml"),
        format!("{}{}", svc("a", 80), slice(8081)),
    )
    .unwrap();
    let second = src.refresh(&[root.join("a.yaml")]);
    assert_eq!(second.changes.since, first.revision);
    let slice_key = (Kind::EndpointSlice, ObjectKey::new("default", "a-1"));
    assert_eq!(*second.changes.objects, [slice_key]);
    assert!(Arc::ptr_eq(
        &first.snapshot.services[&ObjectKey::new("default", "a")],
        &second.snapshot.services[&ObjectKey::new("default", "a")]
    ));

    // Nothing new: the same revision and the same account of it.
    let again = src.refresh(&[root.join("a.yaml")]);
    assert_eq!(again.revision, second.revision);
    assert_eq!(again.changes, second.changes);

    // A later file overriding an object, then going away.
    std::fs::write(root.join("c.yaml"), svc("a", 81)).unwrap();
    let third = src.refresh(&[root.join("c.yaml")]);
    assert_eq!(third.changes.since, second.revision);
    assert_eq!(
        *third.changes.objects,
        [(Kind::Service, ObjectKey::new("default", "a"))]
    );
    std::fs::remove_file(root.join("c.yaml")).unwrap();
    std::fs::remove_file(root.join("b.yaml")).unwrap();
    let fourth = src.refresh(&[root.join("c.yaml"), root.join("b.yaml")]);
    assert_eq!(fourth.changes.since, third.revision);
    assert_eq!(
        *fourth.changes.objects,
        [
            (Kind::Service, ObjectKey::new("default", "a")),
            (Kind::Service, ObjectKey::new("default", "b"))
        ]
    );
}

/// Applies a pseudo-random sequence of edits to a few files defining overlapping objects, and
/// checks after each that the updated source holds what a fresh read of the folder holds.
#[test]
fn incremental_reads_match_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let names = ["a.yaml", "b.yaml", "c.yaml", "d.yaml"];
    let mut src = FolderSource::new(vec![root.clone()]).unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut before = src.load();
    for step in 0..200 {
        let file = root.join(names[next(4) as usize]);
        if next(5) == 0 {
            let _ = std::fs::remove_file(&file);
        } else {
            let docs: Vec<String> = (0..next(4))
                .map(|_| svc(["x", "y", "z"][next(3) as usize], 80 + next(3) as u16))
                .collect();
            std::fs::write(&file, docs.join("---\n")).unwrap();
        }
        let load = if step % 10 == 9 {
            src.load()
        } else {
            src.refresh(std::slice::from_ref(&file))
        };
        let fresh = FolderSource::new(vec![root.clone()]).unwrap().load();
        assert_eq!(load.snapshot, fresh.snapshot, "step {step}");
        assert_eq!(load.diagnostics, fresh.diagnostics, "step {step}");
        assert_eq!(load.files, fresh.files, "step {step}");
        if load.revision != before.revision {
            assert_eq!(load.changes.since, before.revision, "step {step}");
            let told: Vec<_> = load.changes.objects.iter().cloned().collect();
            assert_eq!(told, services_changed(&before, &load), "step {step}");
        } else {
            assert!(services_changed(&before, &load).is_empty(), "step {step}");
        }
        before = load;
    }
}
