//! The re-audit diff report: a replay run's decisions joined with the original live decisions by
//! `event_id`; what would change if the candidate policy or model went live.
//!
//! [`diff`] is pure (decisions in, report out); [`read_decisions`] reads a topic to its end;
//! [`write`] writes `report.json`, `transitions.csv`, `flips.csv` and `transitions.svg`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use lg_events::{Action, ModerationDecision};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

/// How many flipped listings the report lists.
pub const SAMPLE_SIZE: usize = 20;

const ACTIONS: [Action; 4] = [Action::Allow, Action::Label, Action::Review, Action::Block];

/// Totals for one marketplace or category.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events compared.
    pub compared: u64,
    /// Events whose action changed.
    pub flipped: u64,
}

/// One cell of the transition matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Original action.
    pub from: Action,
    /// Replayed action.
    pub to: Action,
    /// Events.
    pub count: u64,
}

/// One flipped listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flip {
    /// Event.
    pub event_id: String,
    /// Listing.
    pub listing_id: String,
    /// Marketplace.
    pub marketplace: String,
    /// Category.
    pub category: String,
    /// Original action.
    pub from: Action,
    /// Replayed action.
    pub to: Action,
    /// Original reason codes.
    pub reasons_before: Vec<String>,
    /// Replayed reason codes.
    pub reasons_after: Vec<String>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    /// The replay run.
    pub run_id: String,
    /// Replay records of the run read (duplicates from resumed runs included).
    pub replayed_records: u64,
    /// Distinct events in the run.
    pub replayed_events: u64,
    /// Events with an original decision.
    pub compared: u64,
    /// Events without one (never decided live, or outside the decisions topic's retention).
    pub unmatched: u64,
    /// Compared events whose action changed.
    pub flipped: u64,
    /// Every (from, to) pair with its count, zeros included, in action order.
    pub transitions: Vec<Transition>,
    /// Per marketplace.
    pub by_marketplace: BTreeMap<String, Counts>,
    /// Per category.
    pub by_category: BTreeMap<String, Counts>,
    /// Reason codes of the replayed decisions of flipped events: what drives the flips.
    pub flip_reasons: BTreeMap<String, u64>,
    /// Up to [`SAMPLE_SIZE`] flipped events, by event id.
    pub sample: Vec<Flip>,
    /// Policy versions of the originals and of the replay.
    pub policies_before: BTreeSet<String>,
    /// Policy versions of the replay.
    pub policies_after: BTreeSet<String>,
}

fn codes(d: &ModerationDecision) -> Vec<String> {
    d.reasons.iter().map(|r| r.code.clone()).collect()
}

/// Latest decision per event id (by `decided_at`; duplicates of at-least-once delivery and
/// resumed runs collapse).
fn latest(
    decisions: impl IntoIterator<Item = ModerationDecision>,
) -> HashMap<String, ModerationDecision> {
    let mut out: HashMap<String, ModerationDecision> = HashMap::new();
    for d in decisions {
        match out.get(&d.event_id) {
            Some(old) if old.decided_at >= d.decided_at => {}
            _ => {
                out.insert(d.event_id.clone(), d);
            }
        }
    }
    out
}

/// Joins the replay run `run_id` (decisions from the re-audit topic; other runs are ignored)
/// with the original live decisions.
pub fn diff(
    run_id: &str,
    originals: impl IntoIterator<Item = ModerationDecision>,
    replayed: impl IntoIterator<Item = ModerationDecision>,
) -> DiffReport {
    let mut replayed_records = 0;
    let run = latest(
        replayed
            .into_iter()
            .filter(|d| d.run_id.as_deref() == Some(run_id))
            .inspect(|_| replayed_records += 1),
    );
    let originals = latest(originals.into_iter().filter(|d| d.run_id.is_none()));
    let mut matrix: BTreeMap<(Action, Action), u64> = BTreeMap::new();
    let mut by_marketplace: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_category: BTreeMap<String, Counts> = BTreeMap::new();
    let mut flip_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut flips = Vec::new();
    let (mut compared, mut unmatched) = (0, 0);
    let mut policies_before = BTreeSet::new();
    let mut policies_after = BTreeSet::new();
    for (event_id, new) in &run {
        policies_after.insert(new.versions.policy.clone());
        let Some(old) = originals.get(event_id) else {
            unmatched += 1;
            continue;
        };
        policies_before.insert(old.versions.policy.clone());
        compared += 1;
        *matrix.entry((old.action, new.action)).or_default() += 1;
        let flipped = old.action != new.action;
        for (map, key) in [
            (&mut by_marketplace, &new.marketplace),
            (&mut by_category, &new.category),
        ] {
            let c = map.entry(key.clone()).or_default();
            c.compared += 1;
            c.flipped += u64::from(flipped);
        }
        if flipped {
            for code in codes(new) {
                *flip_reasons.entry(code).or_default() += 1;
            }
            flips.push(Flip {
                event_id: event_id.clone(),
                listing_id: new.listing_id.clone(),
                marketplace: new.marketplace.clone(),
                category: new.category.clone(),
                from: old.action,
                to: new.action,
                reasons_before: codes(old),
                reasons_after: codes(new),
            });
        }
    }
    let flipped = flips.len() as u64;
    flips.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    flips.truncate(SAMPLE_SIZE);
    let transitions = ACTIONS
        .iter()
        .flat_map(|&from| ACTIONS.iter().map(move |&to| (from, to)))
        .map(|(from, to)| Transition {
            from,
            to,
            count: matrix.get(&(from, to)).copied().unwrap_or(0),
        })
        .collect();
    DiffReport {
        run_id: run_id.to_owned(),
        replayed_records,
        replayed_events: run.len() as u64,
        compared,
        unmatched,
        flipped,
        transitions,
        by_marketplace,
        by_category,
        flip_reasons,
        sample: flips,
        policies_before,
        policies_after,
    }
}

/// Every decision on `topic`, from the beginning to the high-water marks taken at start.
/// Records that are not decisions are skipped with a warning.
pub async fn read_decisions(brokers: &str, topic: &str) -> anyhow::Result<Vec<ModerationDecision>> {
    let timeout = Duration::from_secs(10);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "listing-guard-reaudit-report")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let parts = lg_ingest::consumer::partitions(&consumer, topic, timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            open.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    let mut out = Vec::new();
    if open.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    {
        while !open.is_empty() {
            let msg = match tokio::time::timeout(timeout, consumer.recv()).await {
                Err(_) => anyhow::bail!("no progress reading {topic} for {timeout:?}"),
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                    continue;
                }
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(m)) => m,
            };
            let Some(&high) = open.get(&msg.partition()) else {
                continue;
            };
            if msg.offset() + 1 >= high {
                open.remove(&msg.partition());
            }
            match serde_json::from_slice::<ModerationDecision>(msg.payload().unwrap_or_default()) {
                Ok(d) => out.push(d),
                Err(e) => {
                    tracing::warn!(%topic, offset = msg.offset(), error = %e, "not a decision; skipped")
                }
            }
        }
    }
    Ok(out)
}

/// The report as a readable table.
pub fn table(r: &DiffReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "re-audit {}: {} events ({} records), {} compared, {} without an original, {} flipped",
        r.run_id, r.replayed_events, r.replayed_records, r.compared, r.unmatched, r.flipped
    );
    let _ = writeln!(s, "\noriginal -> replayed (rows: original action)");
    let _ = write!(s, "{:>10}", "");
    for a in ACTIONS {
        let _ = write!(s, "{:>10}", a.as_str());
    }
    for from in ACTIONS {
        let _ = write!(s, "\n{:>10}", from.as_str());
        for to in ACTIONS {
            let n = r
                .transitions
                .iter()
                .find(|t| t.from == from && t.to == to)
                .map_or(0, |t| t.count);
            let _ = write!(s, "{n:>10}");
        }
    }
    for (title, map) in [
        ("marketplace", &r.by_marketplace),
        ("category", &r.by_category),
    ] {
        let _ = writeln!(s, "\n\n{title:<24}{:>10}{:>10}", "compared", "flipped");
        for (k, c) in map {
            let _ = writeln!(s, "{k:<24}{:>10}{:>10}", c.compared, c.flipped);
        }
    }
    let _ = writeln!(s, "\nreason codes behind the flips");
    for (code, n) in &r.flip_reasons {
        let _ = writeln!(s, "  {code:<28}{n:>8}");
    }
    let _ = writeln!(s, "\nsample of flipped listings");
    for f in &r.sample {
        let _ = writeln!(
            s,
            "  {} {} {}/{}: {} -> {} [{}]",
            f.event_id,
            f.listing_id,
            f.marketplace,
            f.category,
            f.from.as_str(),
            f.to.as_str(),
            f.reasons_after.join(",")
        );
    }
    s
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// The transition matrix as an SVG heat map (counts in the cells, flips outlined).
pub fn svg(r: &DiffReport) -> String {
    let (cell, left, top) = (110, 120, 90);
    let max = r
        .transitions
        .iter()
        .map(|t| t.count)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="14">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="28" font-size="18">Re-audit {run}: original (rows) → replayed (columns)</text>
<text x="{left}" y="52" fill="#555">{c} compared, {f} flipped</text>
"##,
        w = left + 4 * cell + 20,
        h = top + 4 * cell + 20,
        run = r.run_id,
        c = r.compared,
        f = r.flipped,
    );
    for (i, a) in ACTIONS.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{y}" text-anchor="middle">{n}</text><text x="{lx}" y="{ly}" text-anchor="end">{n}</text>"#,
            x = left + i * cell + cell / 2,
            y = top - 10,
            lx = left - 10,
            ly = top + i * cell + cell / 2 + 5,
            n = a.as_str()
        );
    }
    for t in &r.transitions {
        let (row, col) = (t.from as usize, t.to as usize);
        let shade = 255 - (200 * t.count / max) as u8;
        let stroke = if t.from != t.to && t.count > 0 {
            "#c00"
        } else {
            "#999"
        };
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({shade},{shade},255)" stroke="{stroke}" stroke-width="2"/><text x="{tx}" y="{ty}" text-anchor="middle" font-size="20">{n}</text>"##,
            x = left + col * cell,
            y = top + row * cell,
            tx = left + col * cell + cell / 2,
            ty = top + row * cell + cell / 2 + 7,
            n = t.count
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `report.json`, `transitions.csv`, `flips.csv` (the sample) and `transitions.svg`.
pub fn write(r: &DiffReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(r)?)?;
    let mut t = String::from("from,to,count\n");
    for x in &r.transitions {
        let _ = writeln!(t, "{},{},{}", x.from.as_str(), x.to.as_str(), x.count);
    }
    std::fs::write(dir.join("transitions.csv"), t)?;
    let mut f = String::from(
        "event_id,listing_id,marketplace,category,from,to,reasons_before,reasons_after\n",
    );
    for x in &r.sample {
        let row = [
            x.event_id.as_str(),
            &x.listing_id,
            &x.marketplace,
            &x.category,
            x.from.as_str(),
            x.to.as_str(),
            &x.reasons_before.join(" "),
            &x.reasons_after.join(" "),
        ]
        .map(csv_field);
        let _ = writeln!(f, "{}", row.join(","));
    }
    std::fs::write(dir.join("flips.csv"), f)?;
    std::fs::write(dir.join("transitions.svg"), svg(r))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lg_events::*;

    fn decision(event: &str, action: Action, run: Option<&str>, at: i64) -> ModerationDecision {
        ModerationDecision {
            schema_version: 1,
            decision_id: format!("dec_{event}"),
            mode: if run.is_some() {
                DecisionMode::Replay
            } else {
                DecisionMode::Live
            },
            run_id: run.map(str::to_owned),
            event_id: event.into(),
            event_type: ListingEventType::Created,
            listing_id: format!("l-{event}"),
            merchant_id: "m1".into(),
            marketplace: if event.ends_with('x') {
                "xianyu"
            } else {
                "taobao"
            }
            .into(),
            category: "apparel".into(),
            action,
            reasons: vec![Reason {
                code: format!("R_{}", action.as_str().to_uppercase()),
                message: String::new(),
            }],
            images: vec![],
            versions: Versions {
                policy: if run.is_some() {
                    "strict@2"
                } else {
                    "default@1"
                }
                .into(),
                provenance_detector: "d".into(),
                model: None,
                pipeline: "0".into(),
            },
            source: SourceCoordinates {
                topic: "t".into(),
                partition: 0,
                offset: 1,
            },
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            decided_at: chrono::DateTime::from_timestamp(at, 0).unwrap(),
            processing_latency_ms: 1,
        }
    }

    #[test]
    fn joins_by_event_and_counts_transitions() {
        use Action::*;
        let originals = vec![
            decision("e1", Allow, None, 1),
            decision("e1", Allow, None, 2), // at-least-once duplicate
            decision("e2x", Label, None, 1),
            decision("e3", Label, None, 1),
            decision("e4", Review, None, 1),
            decision("e5", Block, None, 1), // not replayed
        ];
        let replayed = vec![
            decision("e1", Allow, Some("r1"), 5),
            decision("e2x", Block, Some("r1"), 5),
            decision("e2x", Block, Some("r1"), 6), // resumed run
            decision("e3", Block, Some("r1"), 5),
            decision("e4", Allow, Some("r1"), 5),
            decision("e6", Label, Some("r1"), 5), // no original
            decision("e1", Block, Some("other-run"), 5),
        ];
        let r = diff("r1", originals, replayed);
        assert_eq!(
            (
                r.replayed_records,
                r.replayed_events,
                r.compared,
                r.unmatched,
                r.flipped
            ),
            (6, 5, 4, 1, 3)
        );
        let count = |from, to| {
            r.transitions
                .iter()
                .find(|t| t.from == from && t.to == to)
                .unwrap()
                .count
        };
        assert_eq!(r.transitions.len(), 16);
        assert_eq!(count(Allow, Allow), 1);
        assert_eq!(count(Label, Block), 2);
        assert_eq!(count(Review, Allow), 1);
        assert_eq!(r.transitions.iter().map(|t| t.count).sum::<u64>(), 4);
        assert_eq!(
            r.by_marketplace["xianyu"],
            Counts {
                compared: 1,
                flipped: 1
            }
        );
        assert_eq!(
            r.by_marketplace["taobao"],
            Counts {
                compared: 3,
                flipped: 2
            }
        );
        assert_eq!(r.flip_reasons["R_BLOCK"], 2);
        assert_eq!(r.flip_reasons["R_ALLOW"], 1);
        let sample: Vec<(&str, Action, Action)> = r
            .sample
            .iter()
            .map(|f| (f.event_id.as_str(), f.from, f.to))
            .collect();
        assert_eq!(
            sample,
            vec![
                ("e2x", Label, Block),
                ("e3", Label, Block),
                ("e4", Review, Allow)
            ]
        );
        assert_eq!(r.policies_before, BTreeSet::from(["default@1".to_owned()]));
        assert_eq!(r.policies_after, BTreeSet::from(["strict@2".to_owned()]));

        let t = table(&r);
        assert!(t.contains("4 compared") && t.contains("3 flipped"), "{t}");
        let svg = svg(&r);
        assert_eq!(svg.matches("<rect x=").count(), 16);
        assert!(
            svg.contains(">2</text>"),
            "the label→block cell shows its count"
        );

        let dir = std::env::temp_dir().join(format!("lg-reaudit-{}", std::process::id()));
        write(&r, &dir).unwrap();
        let csv = std::fs::read_to_string(dir.join("transitions.csv")).unwrap();
        assert!(csv.lines().any(|l| l == "label,block,2"), "{csv}");
        assert_eq!(
            std::fs::read_to_string(dir.join("flips.csv"))
                .unwrap()
                .lines()
                .count(),
            4
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["flipped"], 3);
        std::fs::remove_dir_all(&dir).ok();
    }
}
