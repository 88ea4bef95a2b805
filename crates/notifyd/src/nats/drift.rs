//! Streams and buckets as the configuration asks for them: created with `[nats] replicas` and
//! `placement_tags`, and an existing one compared with what notifyd would create ("drift").
//!
//! What JetStream can change in place without losing anything is updated at start-up, each
//! difference logged at WARN with the value found and the value wanted: replicas, placement
//! tags, missing subjects, the limits notifyd sets when they are lower than its own (max age, max
//! messages, max bytes, max messages per subject: a limit is only ever raised; a larger one, or
//! none, is kept and logged, since lowering it would make JetStream delete stored messages), the
//! duplicate window, the discard policy where notifyd sets the limits it applies to, and direct
//! gets. What it cannot change (retention,
//! storage) is logged at ERROR, naming the object, the setting, both values and how to fix it,
//! and the object is used as it is: refusing to start would stop sending over a setting that
//! has worked so far. An update JetStream refuses (too few servers for the replicas, say) is
//! logged the same way, with the `nats` command that makes the change.
//!
//! Only the settings notifyd sets are compared: a limit notifyd leaves unset (the status
//! stream's byte limit, say) may be set by hand and is kept.

use super::objects::{ObjectKind, SetupError, SetupErrorKind};
use crate::config::NatsConfig;
use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// `[nats] replicas` and `placement_tags`: how the objects notifyd creates are replicated and
/// placed, and whether existing ones are brought to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// The replica count asked for; `None`: create with 1, leave existing ones as they are.
    pub replicas: Option<usize>,
    /// The placement tags asked for; empty: any server, existing placements left as they are.
    pub tags: Vec<String>,
}

impl Replication {
    /// The replication `[nats]` asks for.
    pub fn of(cfg: &NatsConfig) -> Self {
        Replication { replicas: cfg.replicas, tags: cfg.placement_tags.clone() }
    }

    /// The replica count objects are created with.
    fn count(&self) -> usize {
        self.replicas.unwrap_or(1)
    }

    fn placement(&self) -> Option<stream::Placement> {
        (!self.tags.is_empty()).then(|| stream::Placement { cluster: None, tags: self.tags.clone() })
    }

    /// `config` with the replica count and placement to create it with.
    pub fn stream(&self, config: stream::Config) -> stream::Config {
        stream::Config { num_replicas: self.count(), placement: self.placement(), ..config }
    }

    /// `config` with the replica count and placement to create it with.
    pub fn bucket(&self, config: kv::Config) -> kv::Config {
        kv::Config { num_replicas: self.count(), placement: self.placement(), ..config }
    }

    /// Why creating an object may have failed, when more than one replica is asked for.
    fn hint(&self) -> String {
        match self.replicas {
            Some(n) if n > 1 => format!(
                " ([nats] replicas = {n} needs a JetStream cluster of at least {n} servers{} up; \
                 on a single server set replicas = 1)",
                if self.tags.is_empty() {
                    String::new()
                } else {
                    format!(" tagged {}", self.tags.join(", "))
                }
            ),
            _ => String::new(),
        }
    }
}

/// One setting of an existing stream or bucket that differs from what notifyd asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The setting, as `nats stream info` names it (`replicas`, `retention`, `max_age`...).
    pub setting: &'static str,
    /// Its value in the stream found.
    pub found: String,
    /// Its value in the configuration.
    pub wanted: String,
    /// The `nats` command that makes the change, or how to make it when JetStream cannot change
    /// it in place.
    pub fix: String,
    /// Whether JetStream changes it with a stream update.
    pub updatable: bool,
    /// A limit found larger than notifyd's (or none where notifyd sets one): kept, never lowered,
    /// since lowering a limit makes JetStream delete the stored messages beyond it.
    pub kept: bool,
}

/// Which settings of a stream notifyd compares: those of a stream it defines in full, or those
/// of a key-value bucket (whose other settings the client library sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Stream,
    Bucket,
}

/// The settings of `have` (an existing stream's) that differ from `want` (what notifyd would
/// create, with [`Replication::stream`] applied), and `have` with the updatable ones changed to
/// `want`'s. `stream` is the stream's name, for the fixes.
fn compare(
    stream: &str,
    have: &stream::Config,
    want: &stream::Config,
    replication: &Replication,
    shape: Shape,
) -> (Vec<Drift>, stream::Config) {
    let mut drifts = Vec::new();
    let mut updated = have.clone();
    let edit = |flags: &str| format!("nats stream edit {stream} {flags} --force");
    let mut note = |setting, found: String, wanted: String, fix: String, updatable| {
        drifts.push(Drift { setting, found, wanted, fix, updatable, kept: false });
    };
    let recreate = format!(
        "JetStream cannot change it in place: when the stream is empty (or its messages may go), \
         `nats stream rm {stream}` and restart notifyd, which creates it as configured"
    );

    if let Some(n) = replication.replicas
        && have.num_replicas.max(1) != n
    {
        note(
            "replicas",
            have.num_replicas.max(1).to_string(),
            n.to_string(),
            edit(&format!("--replicas {n}")),
            true,
        );
        updated.num_replicas = n;
    }
    if !replication.tags.is_empty() {
        let found = have.placement.as_ref().map(|p| p.tags.clone()).unwrap_or_default();
        if sorted(&found) != sorted(&replication.tags) {
            let flags: Vec<String> = replication.tags.iter().map(|t| format!("--tag {t}")).collect();
            note("placement_tags", found.join(","), replication.tags.join(","), edit(&flags.join(" ")), true);
            let cluster = have.placement.as_ref().and_then(|p| p.cluster.clone());
            updated.placement = Some(stream::Placement { cluster, tags: replication.tags.clone() });
        }
    }
    if have.storage != want.storage {
        note(
            "storage",
            format!("{:?}", have.storage),
            format!("{:?}", want.storage),
            recreate.clone(),
            false,
        );
    }
    if shape == Shape::Stream {
        if have.retention != want.retention {
            note(
                "retention",
                format!("{:?}", have.retention),
                format!("{:?}", want.retention),
                recreate,
                false,
            );
        }
        let missing: Vec<&String> = want
            .subjects
            .iter()
            .filter(|s| !have.subjects.iter().any(|h| super::objects::subject_covers(h, s)))
            .collect();
        if !missing.is_empty() {
            let mut all = have.subjects.clone();
            all.extend(missing.iter().map(|s| (*s).clone()));
            note(
                "subjects",
                have.subjects.join(","),
                format!(
                    "{} (adding {})",
                    all.join(","),
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
                ),
                edit(&format!("--subjects {}", all.join(","))),
                true,
            );
            updated.subjects = all;
        }
        // The discard policy matters where notifyd sets the limits it applies to (the queue
        // stream refuses new tickets; the dead-letter and unmatched streams drop the oldest); on
        // the others an operator's limit comes with the operator's policy, kept.
        let limited = want.max_messages > 0 || want.max_bytes > 0 || want.max_messages_per_subject > 0;
        if (limited || want.discard == stream::DiscardPolicy::New) && have.discard != want.discard {
            let flag = format!("--discard {}", discard_flag(want.discard));
            note(
                "discard",
                discard_flag(have.discard).into(),
                discard_flag(want.discard).into(),
                edit(&flag),
                true,
            );
            updated.discard = want.discard;
        }
        if want.discard_new_per_subject && !have.discard_new_per_subject {
            note(
                "discard_new_per_subject",
                "false".into(),
                "true".into(),
                edit("--discard-per-subject"),
                true,
            );
            updated.discard_new_per_subject = true;
        }
        if want.allow_direct && !have.allow_direct {
            note("allow_direct", "false".into(), "true".into(), edit("--allow-direct"), true);
            updated.allow_direct = true;
        }
        if !want.duplicate_window.is_zero() && have.duplicate_window != want.duplicate_window {
            let wanted = duration(want.duplicate_window);
            note(
                "duplicate_window",
                duration(have.duplicate_window),
                wanted.clone(),
                edit(&format!("--dupe-window {wanted}")),
                true,
            );
            updated.duplicate_window = want.duplicate_window;
        }
    }
    // Limits only ever go up here: a lower one would make JetStream delete what it holds beyond
    // it at once (events, dead letters, tickets, ledger records). A larger limit found, or none,
    // is kept and said so, with the command that lowers it for an operator who means it.
    if !want.max_age.is_zero() && have.max_age != want.max_age {
        let wanted = duration(want.max_age);
        let lower = have.max_age.is_zero() || have.max_age > want.max_age;
        drifts.push(Drift {
            setting: "max_age",
            found: if have.max_age.is_zero() { "none".into() } else { duration(have.max_age) },
            wanted: wanted.clone(),
            fix: edit(&format!("--max-age {wanted}")),
            updatable: !lower,
            kept: lower,
        });
        if !lower {
            updated.max_age = want.max_age;
        }
    }
    // Limits notifyd sets (0 in `want`: left to the operator); -1 in `want`: no limit.
    for (setting, flag, have_n, want_n, slot) in [
        ("max_msgs", "--max-msgs", have.max_messages, want.max_messages, &mut updated.max_messages),
        ("max_bytes", "--max-bytes", have.max_bytes, want.max_bytes, &mut updated.max_bytes),
        (
            "max_msgs_per_subject",
            "--max-msgs-per-subject",
            have.max_messages_per_subject,
            want.max_messages_per_subject,
            &mut updated.max_messages_per_subject,
        ),
    ] {
        if want_n != 0 && limit(have_n) != limit(want_n) {
            let (found, wanted) = (limit(have_n).to_string(), limit(want_n).to_string());
            let found = if found == "-1" { "none".to_owned() } else { found };
            let lower = limit(want_n) != -1 && (limit(have_n) == -1 || limit(have_n) > limit(want_n));
            drifts.push(Drift {
                setting,
                found,
                fix: edit(&format!("{flag}={wanted}")),
                wanted,
                updatable: !lower,
                kept: lower,
            });
            if !lower {
                *slot = want_n;
            }
        }
    }
    (drifts, updated)
}

fn sorted(tags: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = tags.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// Whether JetStream answered that the stream does not exist (not a timeout or another error).
fn missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(err)
        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// A limit as JetStream reports it: -1 for none.
fn limit(n: i64) -> i64 {
    if n <= 0 { -1 } else { n }
}

fn discard_flag(d: stream::DiscardPolicy) -> &'static str {
    match d {
        stream::DiscardPolicy::Old => "old",
        stream::DiscardPolicy::New => "new",
    }
}

/// A duration as the `nats` CLI takes it: `604800s`, `1500ms`, `0s` (none).
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// Logs the differences of `what` (`stream NOTIFY_SMS`, `key-value bucket notifyd_ledger`),
/// updates it with `updated` when some can be changed, and returns those changed.
async fn reconcile(
    js: &jetstream::Context,
    what: &str,
    drifts: Vec<Drift>,
    have: &stream::Config,
    updated: stream::Config,
) -> Vec<Drift> {
    for d in drifts.iter().filter(|d| d.kept) {
        tracing::warn!(
            object = what, setting = d.setting, found = %d.found, wanted = %d.wanted, fix = %d.fix,
            "the JetStream {what} has {} {}, more than the configuration's {}; kept (lowering it \
             would delete what it holds beyond the new limit). To lower it: `{}`",
            d.setting, d.found, d.wanted, d.fix
        );
    }
    for d in drifts.iter().filter(|d| !d.updatable && !d.kept) {
        tracing::error!(
            object = what, setting = d.setting, found = %d.found, wanted = %d.wanted, fix = %d.fix,
            "the JetStream {what} has {} {}, the configuration asks for {}; {}. notifyd uses it as it is",
            d.setting, d.found, d.wanted, d.fix
        );
    }
    let (change, _): (Vec<Drift>, Vec<Drift>) = drifts.into_iter().partition(|d| d.updatable);
    if change.is_empty() {
        return change;
    }
    for d in &change {
        tracing::warn!(
            object = what, setting = d.setting, found = %d.found, wanted = %d.wanted,
            "the JetStream {what} has {} {}, the configuration asks for {}; updating it",
            d.setting, d.found, d.wanted
        );
    }
    // Replicas and placement need servers that may be missing; the rest (new subjects above all)
    // must not wait for them: when the whole update is refused, the rest goes alone.
    let placed = |d: &Drift| matches!(d.setting, "replicas" | "placement_tags");
    let result = match js.update_stream(&updated).await {
        Err(e) if change.iter().any(placed) && !change.iter().all(placed) => {
            let rest = stream::Config {
                num_replicas: have.num_replicas,
                placement: have.placement.clone(),
                ..updated
            };
            match js.update_stream(&rest).await {
                Ok(_) => {
                    let (failed, done): (Vec<Drift>, Vec<Drift>) = change.into_iter().partition(placed);
                    report_refused(what, &failed, &e);
                    return done;
                }
                Err(_) => Err(e),
            }
        }
        other => other.map(|_| ()),
    };
    match result {
        Ok(()) => change,
        Err(e) => {
            report_refused(what, &change, &e);
            Vec::new()
        }
    }
}

/// Logs the changes JetStream refused (`e`): the object keeps them as found.
fn report_refused(what: &str, refused: &[Drift], e: &dyn std::fmt::Display) {
    for d in refused {
        tracing::error!(
            object = what, setting = d.setting, found = %d.found, wanted = %d.wanted, fix = %d.fix, error = %e,
            "cannot update the JetStream {what} ({e}): it keeps {} {} where the configuration asks for {}; \
             fix it with `{}`. notifyd uses it as it is",
            d.setting, d.found, d.wanted, d.fix
        );
    }
}

/// The stream `want.name`: created as `want` with `replication` when missing, else brought to
/// it as far as JetStream allows (see the module doc). Returns the stream and the settings
/// changed.
pub async fn stream(
    js: &jetstream::Context,
    want: stream::Config,
    replication: &Replication,
) -> Result<(stream::Stream, Vec<Drift>), SetupError> {
    let name = want.name.clone();
    let want = replication.stream(want);
    let error = |kind, e: &dyn std::fmt::Display| SetupError::new(kind, ObjectKind::Stream, &name, e);
    let mut found = match js.get_stream(&name).await {
        Ok(found) => found,
        // Only a stream that is not there is created: another error (a timeout during a leader
        // election) is returned, and start-up tries again.
        Err(e) if !missing(&e) => return Err(error(SetupErrorKind::Read, &e)),
        Err(_) => {
            let created = js
                .get_or_create_stream(want)
                .await
                .map_err(|e| error(SetupErrorKind::Create, &format!("{e}{}", replication.hint())))?;
            return Ok((created, Vec::new()));
        }
    };
    let have = found.info().await.map_err(|e| error(SetupErrorKind::Read, &e))?.config.clone();
    let (drifts, updated) = compare(&name, &have, &want, replication, Shape::Stream);
    let changed = reconcile(js, &format!("stream {name}"), drifts, &have, updated).await;
    if changed.is_empty() {
        return Ok((found, changed));
    }
    let stream = settled(js, &name, &changed).await.map_err(|e| error(SetupErrorKind::Read, &e))?;
    Ok((stream, changed))
}

/// Caps the stream at `max_bytes` with `discard = new`: JetStream then refuses a publish that
/// would take it past that size (the publisher gets error 10077 `maximum bytes exceeded`) and
/// drops nothing it holds. Unlike the limits notifyd sets for itself (only ever raised, see
/// [`compare`]), this one is the operator's, so a larger limit, or none, is lowered to it, but
/// only when what the stream holds fits under it: lowering it further would make JetStream
/// delete waiting requests, so it is then kept and logged with the command that sets it.
pub async fn cap_bytes(
    js: &jetstream::Context,
    mut found: stream::Stream,
    max_bytes: u64,
) -> Result<stream::Stream, SetupError> {
    let name = found.cached_info().config.name.clone();
    let error = |kind, e: &dyn std::fmt::Display| SetupError::new(kind, ObjectKind::Stream, &name, e);
    let info = found.info().await.map_err(|e| error(SetupErrorKind::Read, &e))?.clone();
    let want = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    let have = &info.config;
    if have.max_bytes == want && have.discard == stream::DiscardPolicy::New {
        return Ok(found);
    }
    let was = if limit(have.max_bytes) == -1 { "none".to_owned() } else { have.max_bytes.to_string() };
    let fix = format!("nats stream edit {name} --max-bytes={want} --discard new --force");
    if limit(have.max_bytes) != want && info.state.bytes > max_bytes {
        tracing::warn!(
            stream = %name, found = %was, wanted = want, holds = info.state.bytes, fix = %fix,
            "the intake stream holds {} bytes, more than [intake] max_bytes = {want}; its limit ({was}) \
             is kept (lowering it now would delete waiting requests). Run `{fix}` once it holds less",
            info.state.bytes
        );
        return Ok(found);
    }
    let updated = stream::Config { max_bytes: want, discard: stream::DiscardPolicy::New, ..have.clone() };
    match js.update_stream(&updated).await {
        Ok(_) => {
            tracing::info!(stream = %name, found = %was, wanted = want, "the intake stream is capped at [intake] max_bytes");
            js.get_stream(&name).await.map_err(|e| error(SetupErrorKind::Read, &e))
        }
        Err(e) => {
            tracing::error!(
                stream = %name, error = %e, fix = %fix,
                "JetStream refused to cap the intake stream at [intake] max_bytes = {want}; notifyd uses \
                 it as it is. To set the limit: `{fix}`"
            );
            Ok(found)
        }
    }
}

/// How long start-up waits for a stream whose replicas were changed to have them (its new peers
/// assigned and a leader), before it goes on (creating a consumer on a stream still being
/// scaled fails with "insufficient resources").
const SCALE_PATIENCE: Duration = Duration::from_secs(15);

/// The stream `name` after an update that made `changed`: when its replicas changed, once it has
/// them and a leader (at most [`SCALE_PATIENCE`]; then as it is, logged).
async fn settled(
    js: &jetstream::Context,
    name: &str,
    changed: &[Drift],
) -> Result<stream::Stream, jetstream::context::GetStreamError> {
    let Some(wanted) =
        changed.iter().find(|d| d.setting == "replicas").and_then(|d| d.wanted.parse::<usize>().ok())
    else {
        return js.get_stream(name).await;
    };
    let deadline = tokio::time::Instant::now() + SCALE_PATIENCE;
    loop {
        let mut stream = js.get_stream(name).await?;
        let placed = match stream.info().await {
            Ok(info) => info.cluster.as_ref().is_some_and(|c| {
                c.leader.as_deref().is_some_and(|l| !l.is_empty()) && c.replicas.len() + 1 >= wanted
            }),
            Err(_) => false,
        };
        if placed {
            return Ok(stream);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(stream = name, wanted, "the stream has not got its new replicas yet; going on");
            return Ok(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The key-value bucket `want.bucket`: created as `want` with `replication` when missing, else
/// brought to it as far as JetStream allows (its replicas, placement, max age, history, byte
/// limit when `want` sets one, storage). Returns the bucket and the settings changed.
pub async fn bucket(
    js: &jetstream::Context,
    want: kv::Config,
    replication: &Replication,
) -> Result<(kv::Store, Vec<Drift>), SetupError> {
    let name = want.bucket.clone();
    let error = |kind, e: &dyn std::fmt::Display| SetupError::new(kind, ObjectKind::Bucket, &name, e);
    match js.get_stream(format!("KV_{name}")).await {
        Ok(_) => {}
        Err(e) if !missing(&e) => return Err(error(SetupErrorKind::Read, &e)),
        Err(_) => {
            let created = js
                .create_key_value(replication.bucket(want))
                .await
                .map_err(|e| error(SetupErrorKind::Create, &format!("{e}{}", replication.hint())))?;
            return Ok((created, Vec::new()));
        }
    }
    let found = js.get_key_value(&name).await.map_err(|e| error(SetupErrorKind::Read, &e))?;
    let stream_name = format!("KV_{name}");
    let have = found.stream.cached_info().config.clone();
    let wanted = stream::Config {
        name: stream_name.clone(),
        storage: want.storage,
        max_age: want.max_age,
        max_messages_per_subject: want.history,
        max_bytes: want.max_bytes,
        ..Default::default()
    };
    let (drifts, updated) = compare(&stream_name, &have, &wanted, replication, Shape::Bucket);
    let changed =
        reconcile(js, &format!("key-value bucket {name} (stream {stream_name})"), drifts, &have, updated)
            .await;
    if changed.is_empty() {
        return Ok((found, changed));
    }
    settled(js, &stream_name, &changed).await.map_err(|e| error(SetupErrorKind::Read, &e))?;
    let store = js.get_key_value(&name).await.map_err(|e| error(SetupErrorKind::Read, &e))?;
    Ok((store, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work_queue(name: &str) -> stream::Config {
        stream::Config {
            name: name.into(),
            subjects: vec!["notify.sms.track".into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    fn three() -> Replication {
        Replication { replicas: Some(3), tags: Vec::new() }
    }

    #[test]
    fn the_same_stream_does_not_drift() {
        let want = three().stream(work_queue("T"));
        let (drifts, updated) = compare("T", &want, &want, &three(), Shape::Stream);
        assert_eq!(drifts, []);
        assert_eq!(updated, want);
    }

    #[test]
    fn replicas_are_left_alone_unless_configured() {
        let have = stream::Config { num_replicas: 3, ..work_queue("T") };
        let unset = Replication::default();
        let (drifts, _) = compare("T", &have, &unset.stream(work_queue("T")), &unset, Shape::Stream);
        assert_eq!(drifts, []);
    }

    #[test]
    fn fewer_replicas_are_updated_with_the_command_that_would_do_it() {
        let have = stream::Config { num_replicas: 1, ..work_queue("NOTIFY_SMS_TRACKING") };
        let want = three().stream(work_queue("NOTIFY_SMS_TRACKING"));
        let (drifts, updated) = compare("NOTIFY_SMS_TRACKING", &have, &want, &three(), Shape::Stream);
        assert_eq!(
            drifts,
            [Drift {
                setting: "replicas",
                found: "1".into(),
                wanted: "3".into(),
                fix: "nats stream edit NOTIFY_SMS_TRACKING --replicas 3 --force".into(),
                updatable: true,
                kept: false,
            }]
        );
        assert_eq!(updated.num_replicas, 3);
    }

    #[test]
    fn retention_and_storage_are_reported_not_changed() {
        let have = stream::Config {
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::Memory,
            num_replicas: 3,
            ..work_queue("T")
        };
        let want = three().stream(work_queue("T"));
        let (drifts, updated) = compare("T", &have, &want, &three(), Shape::Stream);
        let settings: Vec<(&str, &str, &str, bool)> =
            drifts.iter().map(|d| (d.setting, d.found.as_str(), d.wanted.as_str(), d.updatable)).collect();
        assert_eq!(
            settings,
            [("storage", "Memory", "File", false), ("retention", "Limits", "WorkQueue", false)]
        );
        assert!(drifts[1].fix.contains("`nats stream rm T`"), "{}", drifts[1].fix);
        assert_eq!(updated, have, "nothing JetStream would refuse is sent");
    }

    #[test]
    fn limits_notifyd_sets_are_raised_and_others_kept() {
        let want = stream::Config {
            max_messages: 10_000,
            max_bytes: -1,
            max_age: Duration::from_secs(3600),
            ..work_queue("T")
        };
        let have = stream::Config {
            max_messages: 500,
            max_bytes: 1024,
            max_age: Duration::from_secs(60),
            max_messages_per_subject: 7,
            num_replicas: 1,
            ..work_queue("T")
        };
        let (drifts, updated) = compare("T", &have, &want, &Replication::default(), Shape::Stream);
        let fixes: Vec<&str> = drifts.iter().map(|d| d.fix.as_str()).collect();
        assert_eq!(
            fixes,
            [
                "nats stream edit T --max-age 3600s --force",
                "nats stream edit T --max-msgs=10000 --force",
                "nats stream edit T --max-bytes=-1 --force",
            ]
        );
        assert_eq!(
            (updated.max_messages, updated.max_bytes, updated.max_age),
            (10_000, -1, Duration::from_secs(3600))
        );
        assert_eq!(updated.max_messages_per_subject, 7, "a limit notifyd does not set is kept");
    }

    #[test]
    fn a_limit_is_never_lowered_since_that_deletes_stored_messages() {
        let want = stream::Config {
            max_messages: 10_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(7 * 86_400),
            max_messages_per_subject: 1000,
            ..work_queue("D")
        };
        // Set by an operator: more, or no limit at all.
        let have = stream::Config {
            max_messages: 1_000_000,
            max_bytes: -1,
            max_age: Duration::from_secs(30 * 86_400),
            max_messages_per_subject: 0,
            ..work_queue("D")
        };
        let (drifts, updated) = compare("D", &have, &want, &Replication::default(), Shape::Stream);
        assert_eq!(drifts.len(), 4, "{drifts:?}");
        assert!(drifts.iter().all(|d| d.kept && !d.updatable), "{drifts:?}");
        assert_eq!(
            (updated.max_messages, updated.max_bytes, updated.max_age, updated.max_messages_per_subject),
            (1_000_000, -1, Duration::from_secs(30 * 86_400), 0),
            "every larger limit is kept"
        );
    }

    #[test]
    fn the_discard_policy_of_a_stream_whose_limits_notifyd_leaves_alone_is_kept() {
        // An intake stream an operator bounded, refusing new requests when full.
        let want = work_queue("I");
        let have = stream::Config {
            max_messages: 1_000_000,
            discard: stream::DiscardPolicy::New,
            ..work_queue("I")
        };
        let (drifts, updated) = compare("I", &have, &want, &Replication::default(), Shape::Stream);
        assert!(drifts.iter().all(|d| d.setting != "discard"), "{drifts:?}");
        assert_eq!(updated.discard, stream::DiscardPolicy::New);
        assert_eq!(updated.max_messages, 1_000_000);
    }

    #[test]
    fn missing_subjects_and_tags_are_added() {
        let have = stream::Config {
            subjects: vec!["notify.sms.send".into()],
            placement: Some(stream::Placement { cluster: Some("c".into()), tags: vec!["ssd".into()] }),
            ..work_queue("S")
        };
        let want = stream::Config {
            subjects: vec!["notify.sms.send".into(), "notify.sms.send.urgent".into()],
            ..work_queue("S")
        };
        let tagged = Replication { replicas: None, tags: vec!["ssd".into(), "eu".into()] };
        let (drifts, updated) = compare("S", &have, &tagged.stream(want), &tagged, Shape::Stream);
        let settings: Vec<&str> = drifts.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["placement_tags", "subjects"]);
        assert_eq!(drifts[0].fix, "nats stream edit S --tag ssd --tag eu --force");
        assert_eq!(updated.subjects, ["notify.sms.send", "notify.sms.send.urgent"]);
        assert_eq!(
            updated.placement,
            Some(stream::Placement { cluster: Some("c".into()), tags: vec!["ssd".into(), "eu".into()] })
        );
    }

    #[test]
    fn a_bucket_compares_only_what_notifyd_sets() {
        let have = stream::Config {
            name: "KV_b".into(),
            subjects: vec!["$KV.b.>".into()],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(3),
            allow_rollup: true,
            num_replicas: 1,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let want = stream::Config {
            name: "KV_b".into(),
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(3),
            max_messages_per_subject: 1,
            ..Default::default()
        };
        let (drifts, _) = compare("KV_b", &have, &want, &Replication::default(), Shape::Bucket);
        assert_eq!(drifts, []);
        let (drifts, updated) = compare("KV_b", &have, &want, &three(), Shape::Bucket);
        assert_eq!(drifts.len(), 1);
        assert_eq!(updated, stream::Config { num_replicas: 3, ..have });
    }
}
