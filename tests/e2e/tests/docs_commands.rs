//! Every command the docs give users is run, verbatim, by this end-to-end suite.

#[test]
fn every_documented_command_is_exercised_by_the_e2e_suite() {
    let root = test_harness::root();
    let mut sources = std::fs::read_to_string(root.join("tests/e2e/src/lib.rs")).unwrap();
    for entry in std::fs::read_dir(root.join("tests/e2e/tests")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(entry.path()).unwrap());
        }
    }
    let commands = e2e::doc_commands();
    assert!(commands.len() > 30, "the docs give commands: {commands:?}");
    let missing: Vec<String> = commands
        .into_iter()
        // `make ...` targets are exercised by CI itself (make test) and the demo test.
        .filter(|(_, command)| !command.starts_with("make "))
        .filter(|(_, command)| !sources.contains(command.as_str()))
        .map(|(file, command)| format!("{file}: {command}"))
        .collect();
    assert!(
        missing.is_empty(),
        "documented commands no e2e test runs:\n{}",
        missing.join("\n")
    );
}
