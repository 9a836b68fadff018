//! Behaviour of a whole rule set: loading, evaluation, rendering, errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};

use super::*;
use crate::alert::{Alert, Status, label_fingerprint};

/// A firing alert with `labels`, a summary annotation and severity critical.
pub(crate) fn alert(labels: &[(&str, &str)]) -> Alert {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
    Alert {
        source: "alertmanager".into(),
        fingerprint: label_fingerprint(&labels),
        status: Status::Firing,
        labels,
        annotations: [("summary".to_string(), "checkout is down".to_string())].into(),
        severity: Some("critical".into()),
        starts_at: Some(t),
        ends_at: None,
        generator_url: None,
        received_at: t,
    }
}

fn rules(yaml: &str) -> RuleSet {
    RuleSet::from_sources(&[("r.yaml".into(), yaml.to_string())]).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(files: &[(&str, &str)]) -> Vec<RuleError> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (p.into(), t.to_string()))
        .collect();
    match RuleSet::from_sources(&files) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0,
    }
}

fn fired(rs: &RuleSet, labels: &[(&str, &str)]) -> Vec<String> {
    rs.evaluate(&alert(labels))
        .iter()
        .map(|d| d.rule.to_string())
        .collect()
}

fn spec(rs: &RuleSet, labels: &[(&str, &str)]) -> Arc<IncidentSpec> {
    match &rs.evaluate(&alert(labels))[0].action {
        Action::Incident(s) => s.clone(),
        other => panic!("not an incident: {other:?}"),
    }
}

const INCIDENT: &str = "  incident: {title: t, impact: low, urgency: low}\n";

#[test]
fn first_matching_rule_wins_unless_it_continues() {
    let rs = rules(&format!(
        "rules:\n\
         - name: a\n  match: [alertname=\"X\"]\n  continue: true\n{INCIDENT}\
         - name: b\n  match: [alertname=~\"X|Y\"]\n{INCIDENT}\
         - name: c\n{INCIDENT}"
    ));
    assert_eq!(fired(&rs, &[("alertname", "X")]), ["a", "b"]);
    assert_eq!(fired(&rs, &[("alertname", "Y")]), ["b"]);
    assert_eq!(fired(&rs, &[("alertname", "Z")]), ["c"]);
    assert_eq!(rs.len(), 3);
}

#[test]
fn no_matching_rule_gives_no_decision() {
    let rs = rules(&format!(
        "rules:\n- name: a\n  match: [alertname=\"X\"]\n{INCIDENT}"
    ));
    assert!(rs.evaluate(&alert(&[("alertname", "Y")])).is_empty());
    assert!(RuleSet::empty().evaluate(&alert(&[])).is_empty());
    assert!(RuleSet::empty().is_empty());
}

#[test]
fn drop_and_suppress_rules_carry_their_action() {
    let rs = rules(
        "rules:\n- name: wd\n  match: [alertname=\"Watchdog\"]\n  action: drop\n\
         - name: info\n  match: [severity=\"info\"]\n  action: suppress\n",
    );
    let d = rs.evaluate(&alert(&[("alertname", "Watchdog")]));
    assert!(matches!(d[0].action, Action::Drop) && &*d[0].rule == "wd");
    let d = rs.evaluate(&alert(&[("severity", "info")]));
    assert!(matches!(d[0].action, Action::Suppress));
}

#[test]
fn expression_must_hold_besides_the_matchers() {
    let rs = rules(&format!(
        "rules:\n\
         - name: prod\n  expr: 'labels.env == \"prod\" && annotations.summary.contains(\"down\")'\n{INCIDENT}\
         - name: rest\n{INCIDENT}"
    ));
    assert_eq!(fired(&rs, &[("env", "prod")]), ["prod"]);
    assert_eq!(fired(&rs, &[("env", "dev")]), ["rest"]);
    // `labels.env` is missing: an evaluation error, which is no match.
    assert_eq!(fired(&rs, &[]), ["rest"]);
}

const RENDERED: &str = "rules:\n- name: down\n  incident:\n    title: \"{{ labels.service }} is down ({{ alert_count }} targets)\"\n    description: \"{{ annotations.summary }} [{{ rule }}, {{ status }}, {{ severity }}, {{ source }}, {{ starts_at }}]\"\n    assignment_group: \"{{ labels.team }}\"\n    service: \"{{ labels.service }}\"\n    configuration_item: \"{{ labels.instance.host }}\"\n    impact: high\n    urgency: medium\n";

#[test]
fn templates_render_alert_fields_and_alert_count() {
    let rs = rules(RENDERED);
    let a = alert(&[("service", "checkout-api"), ("team", "payments")]);
    let f = spec(&rs, &[("service", "checkout-api")]).render(&a, 3);
    assert_eq!(f.title, "checkout-api is down (3 targets)");
    assert_eq!(
        f.description,
        "checkout is down [down, firing, critical, alertmanager, 2026-11-26T10:00:00+00:00]"
    );
    assert_eq!(f.assignment_group.as_deref(), Some("payments"));
    assert_eq!(f.service.as_deref(), Some("checkout-api"));
}

#[test]
fn missing_labels_render_empty_and_empty_optional_fields_are_none() {
    let rs = rules(RENDERED);
    let f = spec(&rs, &[]).render(&alert(&[]), 1);
    assert_eq!(f.title, " is down (1 targets)");
    assert_eq!(f.assignment_group, None);
    assert_eq!(f.service, None);
}

#[test]
fn render_error_becomes_visible_text_instead_of_failing() {
    let rs = rules(RENDERED);
    // `labels.instance.host`: an attribute of a missing label is an error.
    let f = spec(&rs, &[]).render(&alert(&[]), 1);
    let ci = f.configuration_item.unwrap();
    assert!(ci.starts_with("<template error: "), "{ci}");
}

#[test]
fn priority_comes_from_the_default_matrix_or_the_one_in_a_file() {
    let yaml = "rules:\n- name: a\n  incident: {title: t, impact: high, urgency: medium}\n";
    assert_eq!(spec(&rules(yaml), &[]).priority, 2);
    let rs = rules(&format!(
        "{yaml}priority_matrix:\n  high: {{high: 1, medium: 1, low: 2}}\n  medium: {{high: 2, medium: 2, low: 3}}\n  low: {{high: 3, medium: 4, low: 5}}\n"
    ));
    assert_eq!(spec(&rs, &[]).priority, 1);
    assert_eq!(rs.priority(Level::Medium, Level::Medium), 2);
    assert_eq!(RuleSet::empty().priority(Level::Medium, Level::Medium), 3);
}

#[test]
fn correlation_key_is_rule_plus_group_by_values_in_order() {
    let rs = rules(
        "rules:\n- name: target-down\n  incident:\n    {title: t, impact: high, urgency: high, group_by: [alertname, cluster, service]}\n",
    );
    let s = spec(&rs, &[]);
    let key = |labels: &[(&str, &str)]| s.correlation_key("target-down", &alert(labels));
    let base = [
        ("alertname", "TargetDown"),
        ("cluster", "eu1"),
        ("service", "checkout-api"),
    ];
    let one = key(&[base[0], base[1], base[2], ("instance", "127.0.0.1:19201")]);
    assert_eq!(
        one,
        "target-down|alertname=TargetDown|cluster=eu1|service=checkout-api"
    );
    assert_eq!(
        one,
        key(&[base[0], base[1], base[2], ("instance", "127.0.0.1:19202")])
    );
    assert_eq!(
        key(&[base[0]]),
        "target-down|alertname=TargetDown|cluster=|service="
    );
    // `|` in a value cannot forge another label set's key.
    assert_ne!(
        key(&[("alertname", "A|cluster=B")]),
        key(&[("alertname", "A"), ("cluster", "B")])
    );
}

#[test]
fn default_group_by_is_alertname_and_defaults_are_filled_in() {
    let s = spec(&rules(&format!("rules:\n- name: a\n{INCIDENT}")), &[]);
    assert_eq!(s.group_by, ["alertname"]);
    assert_eq!(s.window.as_secs(), 300);
    assert_eq!(s.resolve, ResolveMode::Auto);
    assert_eq!(s.reopen_within.as_secs(), 3600);
    assert_eq!(s.close_after.as_secs(), 86_400);
}

#[test]
fn three_mistakes_in_one_file_give_three_errors_in_line_order() {
    let errs = errors(&[(
        "bad.yaml",
        "rules:\n\
         - name: a\n  match:\n    - alertname=~\"(Target\"\n  incident:\n    title: \"{{ labels.x \"\n    impact: huge\n    urgency: low\n",
    )]);
    let got: Vec<_> = errs.iter().map(|e| (e.line, e.column, e.code)).collect();
    assert_eq!(
        got,
        [(4, 7, "E005"), (6, 12, "E007"), (7, 13, "E008")],
        "{}",
        RuleErrors(errs)
    );
}

#[test]
fn errors_from_every_file_are_reported_sorted_by_file() {
    let errs = errors(&[
        (
            "b.yaml",
            "rules:\n- name: x\n  expr: 'labels.'\n  action: drop\n",
        ),
        (
            "a.yaml",
            "rules:\n- name: y\n  match: [alertname]\n  action: drop\n",
        ),
        ("c.yaml", "rules: [\n"),
    ]);
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.file.to_str().unwrap(), e.line, e.code))
        .collect();
    assert_eq!(
        got,
        [
            ("a.yaml", 3, "E004"),
            ("b.yaml", 3, "E006"),
            ("c.yaml", 2, "E001")
        ]
    );
    let text = RuleErrors(errs).to_string();
    assert!(text.starts_with("a.yaml:3:11: E004 bad matcher"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn duplicate_rule_name_across_files_points_at_both() {
    let errs = errors(&[
        ("a.yaml", "rules:\n- name: dup\n  action: drop\n"),
        ("b.yaml", "\nrules:\n- name: dup\n  action: drop\n"),
    ]);
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(
        (e.file.as_path(), e.line, e.code),
        (Path::new("b.yaml"), 3, "E003")
    );
    assert!(
        e.message.contains("first defined at a.yaml:2"),
        "{}",
        e.message
    );
}

#[test]
fn rule_needs_a_consistent_action() {
    let errs = errors(&[(
        "r.yaml",
        &format!(
            "rules:\n- name: a\n- name: b\n  action: incident\n- name: c\n  action: drop\n{INCIDENT}- name: bad name\n  action: drop\n"
        ),
    )]);
    let got: Vec<_> = errs.iter().map(|e| (e.line, e.code)).collect();
    assert_eq!(got, [(2, "E012"), (4, "E012"), (7, "E012"), (8, "E011")]);
}

#[test]
fn maintenance_and_matrix_problems_have_their_own_codes() {
    let errs = errors(&[
        (
            "a.yaml",
            "maintenance:\n\
             - name: m\n  timezone: Mars/Olympus\n  start: \"2026-01-01T00:00:00\"\n  end: \"2026-01-01T01:00:00\"\n\
             - name: n\n  timezone: UTC\n  recurring: {weekdays: [caturday], start: \"25:00\", end: \"01:00\"}\n\
             - name: o\n  timezone: UTC\n\
             priority_matrix:\n  high: {high: 1, medium: 2, low: 3}\n  medium: {high: 2, medium: 3, low: 4}\n  low: {high: 3, medium: 4, low: 6}\n",
        ),
        (
            "b.yaml",
            "priority_matrix:\n  high: {high: 1, medium: 2, low: 3}\n  medium: {high: 2, medium: 3, low: 4}\n  low: {high: 3, medium: 4, low: 5}\n",
        ),
    ]);
    let got: Vec<_> = errs
        .iter()
        .map(|e| (e.file.to_str().unwrap(), e.line, e.code))
        .collect();
    assert_eq!(
        got,
        [
            ("a.yaml", 3, "E009"),
            ("a.yaml", 8, "E010"),
            ("a.yaml", 8, "E010"),
            ("a.yaml", 9, "E010"),
            ("a.yaml", 11, "E013"),
            ("b.yaml", 1, "E013"),
        ],
        "{}",
        RuleErrors(errs.clone())
    );
}

#[test]
fn load_dir_reads_yaml_files_in_name_order_and_skips_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("20-b.yml", "rules:\n- name: b\n  action: suppress\n");
    write(
        "10-a.yaml",
        "rules:\n- name: a\n  action: drop\n  continue: true\n",
    );
    write("notes.txt", "not: [yaml");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    write("tests/x.yaml", "not: [yaml");
    let rs = RuleSet::load_dir(dir.path()).unwrap();
    assert_eq!(fired(&rs, &[]), ["a", "b"]);

    let err = RuleSet::load_dir(&dir.path().join("missing")).unwrap_err();
    assert_eq!(err.0[0].code, "E014");
    assert!(
        err.to_string().contains("missing: E014 cannot read"),
        "{err}"
    );
}

#[test]
fn rule_set_and_decisions_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<RuleSet>();
    shareable::<Decision>();
    shareable::<IncidentSpec>();
}

/// The `rules/` directory shipped with the crate, against the captured fixtures' labels.
mod shipped {
    use super::*;

    fn shipped() -> RuleSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        RuleSet::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn checkout_down(instance: &str) -> Alert {
        alert(&[
            ("alertname", "TargetDown"),
            ("cluster", "eu1"),
            ("instance", instance),
            ("job", "api"),
            ("service", "checkout-api"),
            ("severity", "critical"),
            ("team", "payments"),
        ])
    }

    fn only_incident(rs: &RuleSet, a: &Alert) -> (String, Arc<IncidentSpec>) {
        let d = rs.evaluate(a);
        assert_eq!(d.len(), 1, "{d:?}");
        match &d[0].action {
            Action::Incident(s) => (d[0].rule.to_string(), s.clone()),
            other => panic!("not an incident: {other:?}"),
        }
    }

    #[test]
    fn checkout_targets_down_share_one_incident_key() {
        let rs = shipped();
        let keys: Vec<String> = ["127.0.0.1:19201", "127.0.0.1:19202", "127.0.0.1:19203"]
            .iter()
            .map(|i| {
                let a = checkout_down(i);
                let (rule, s) = only_incident(&rs, &a);
                assert_eq!(rule, "target-down");
                assert_eq!(s.priority, 1);
                s.correlation_key(&rule, &a)
            })
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        let (rule, s) = only_incident(&rs, &checkout_down("127.0.0.1:19201"));
        assert_eq!(
            s.render(&checkout_down("127.0.0.1:19201"), 3).title,
            "checkout-api is down in eu1 (3 targets)"
        );
        assert_eq!(rule, "target-down");
    }

    #[test]
    fn disk_filling_on_logging_is_its_own_rule_and_key() {
        let rs = shipped();
        let disk = alert(&[
            ("alertname", "DiskFilling"),
            ("cluster", "eu1"),
            ("instance", "127.0.0.1:19231"),
            ("job", "node"),
            ("service", "logging"),
            ("severity", "warning"),
            ("team", "sre"),
        ]);
        let (rule, s) = only_incident(&rs, &disk);
        assert_eq!(rule, "disk-filling");
        let down = checkout_down("127.0.0.1:19201");
        let (down_rule, down_spec) = only_incident(&rs, &down);
        assert_ne!(
            s.correlation_key(&rule, &disk),
            down_spec.correlation_key(&down_rule, &down)
        );
    }

    #[test]
    fn postgres_target_down_is_a_database_incident() {
        let rs = shipped();
        let a = alert(&[
            ("alertname", "TargetDown"),
            ("service", "postgres"),
            ("cluster", "eu1"),
        ]);
        assert_eq!(only_incident(&rs, &a).0, "database-down");
    }

    #[test]
    fn unknown_alerts_fall_to_the_low_priority_catch_all() {
        let rs = shipped();
        let a = alert(&[
            ("alertname", "HighScrapeDuration"),
            ("service", "checkout-api"),
        ]);
        let (rule, s) = only_incident(&rs, &a);
        assert_eq!(rule, "catch-all");
        assert_eq!(
            (s.impact, s.urgency, s.priority),
            (Level::Low, Level::Low, 5)
        );
        assert_eq!(s.group_by, ["alertname", "service"]);
    }

    #[test]
    fn certificate_expiring_within_three_days_is_urgent() {
        let rs = shipped();
        let mut cert = alert(&[
            ("alertname", "SSLCertExpiringSoon"),
            ("instance", "shop.example.com"),
        ]);
        assert_eq!(only_incident(&rs, &cert).0, "certificate-expiring");
        cert.annotations.insert("days_left".into(), "2".into());
        let (rule, s) = only_incident(&rs, &cert);
        assert_eq!(
            (rule.as_str(), s.priority),
            ("certificate-expiring-soon", 1)
        );
        cert.annotations.insert("days_left".into(), "12".into());
        assert_eq!(only_incident(&rs, &cert).0, "certificate-expiring");
    }

    #[test]
    fn watchdog_is_dropped() {
        let d = shipped().evaluate(&alert(&[("alertname", "Watchdog")]));
        assert!(
            matches!(
                d[..],
                [Decision {
                    action: Action::Drop,
                    ..
                }]
            ),
            "{d:?}"
        );
    }
}

#[test]
fn bad_inhibit_blocks_and_major_conditions_have_their_own_codes() {
    let errs = errors(&[(
        "r.yaml",
        "rules:\n  - name: a\n    match: [severity=critical]\n    inhibits:\n      - equal: [service, \"bad label\"]\n    incident: {title: t, impact: high, urgency: high, major: {priority: 9}}\n  - name: b\n    action: drop\n    inhibits:\n      - target_match: [severity=warning]\n  - name: c\n    inhibits:\n      - target_match: ['x=~\"(\"']\n",
    )]);
    let got: Vec<(&str, usize)> = errs.iter().map(|e| (e.code, e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("E015", 5),
            ("E015", 5),
            ("E017", 6),
            ("E016", 9),
            ("E005", 13)
        ],
        "{errs:#?}"
    );
}

#[test]
fn an_inhibit_only_rule_takes_no_alerts_but_names_sources_of_any_rule() {
    let rs = rules(
        "rules:\n  - name: crit\n    match: [severity=critical]\n    inhibits:\n      - target_match: [severity=warning]\n        equal: [service]\n  - name: all\n    incident: {title: t, impact: low, urgency: low}\n",
    );
    assert_eq!(rs.len(), 1);
    assert_eq!(fired(&rs, &[("severity", "critical")]), vec!["all"]);
    let inh = &rs.inhibits()[0];
    let crit = alert(&[("severity", "critical"), ("service", "api")]).labels;
    let warn = alert(&[("severity", "warning"), ("service", "api")]).labels;
    let other = alert(&[("severity", "warning"), ("service", "db")]).labels;
    assert!(inh.is_source_of("all", &crit) && !inh.is_source_of("all", &warn));
    assert!(inh.is_target(&warn) && !inh.is_target(&crit));
    assert!(inh.same_equal(&crit, &warn) && !inh.same_equal(&crit, &other));
    assert_eq!(inh.slot("src", &crit), inh.slot("src", &warn));
}
