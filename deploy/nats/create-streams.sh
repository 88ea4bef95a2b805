#!/usr/bin/env sh
# Creates notifyd's JetStream streams and key-value buckets with 3 replicas on a NATS cluster,
# BEFORE notifyd first starts. Optional: with `replicas = 3` under [nats] in notifyd.toml, notifyd
# creates them so itself, and scales existing ones at start-up. Use this script when notifyd may
# not create streams (no $JS.API.STREAM.CREATE/UPDATE permission), or to scale ahead of a deploy.
# Without [nats] replicas, notifyd creates what is missing with 1 replica and keeps the replicas
# of existing streams, so these are kept.
#
#   NATS_URL=nats://nats-1.example.internal:4222 NATS_USER=admin NATS_PASSWORD=... ./create-streams.sh
#   ./create-streams.sh scale      # streams that already exist (created by notifyd): edit to 3 replicas
#
# Needs the `nats` CLI. The names and subjects are notifyd's defaults; set the variables below if
# your [nats] subject_prefix or [intake] names differ. The consumers (notifyd, notifyd_urgent,
# notifyd_normal, notifyd_bulk, notifyd_tracking) are created by notifyd and inherit the stream's
# replicas.
set -eu

PREFIX=${PREFIX:-notify}                        # [nats] subject_prefix
STREAM=${STREAM:-NOTIFY_SMS}                    # [intake] stream
STATUS_STREAM=${STATUS_STREAM:-NOTIFY_SMS_STATUS}        # [intake] status_stream
TRACKING_STREAM=${TRACKING_STREAM:-NOTIFY_SMS_TRACKING}  # [intake] tracking_stream
DEAD_STREAM=${DEAD_STREAM:-NOTIFY_SMS_DEAD}     # [intake] dead_letter_stream
HELD_STREAM=${HELD_STREAM:-NOTIFY_SMS_HELD}     # [intake] held_stream (core mode only)
QUEUE_STREAM=${QUEUE_STREAM:-NOTIFY_SMS_QUEUE}  # [intake] queue_stream
MAX_QUEUED=${MAX_QUEUED:-1000000}               # the largest [[providers]] max_queued
LEDGER=${LEDGER:-notifyd_ledger}                # [intake] ledger_bucket

CALLBACK_TTL=${CALLBACK_TTL:-49h}               # [tracking] window + 1h
MAX_UNMATCHED=${MAX_UNMATCHED:-100000}          # [callbacks] max_unmatched
REPLICAS=${REPLICAS:-3}
INTAKE_MAX_BYTES=${INTAKE_MAX_BYTES:-}          # [intake] max_bytes, in bytes (e.g. 4294967296); empty: none

case "${1:-create}" in
create)
    # Requests: work queue, kept until acknowledged; the plain subject and one per traffic class.
    # With INTAKE_MAX_BYTES, a publish beyond it is refused (discard new), as [intake] max_bytes does.
    if [ -n "$INTAKE_MAX_BYTES" ]; then
        intake_limit="--max-bytes $INTAKE_MAX_BYTES --discard new"
    else
        intake_limit="--discard old"
    fi
    # shellcheck disable=SC2086 # intake_limit is two flags, split on purpose
    nats stream add "$STREAM" \
        --subjects "$PREFIX.sms.send,$PREFIX.sms.send.urgent,$PREFIX.sms.send.normal,$PREFIX.sms.send.bulk" \
        --storage file --retention work \
        $intake_limit --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Status events: kept 7 days for replay.
    nats stream add "$STATUS_STREAM" --subjects "$PREFIX.sms.status.>" --storage file --retention limits \
        --discard old --max-age 168h --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Delivery tracking entries: work queue.
    nats stream add "$TRACKING_STREAM" --subjects "$PREFIX.sms.track" --storage file --retention work \
        --discard old --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Dead letters: payloads that are not requests, the newest 10000 (64 MiB, 7 days).
    nats stream add "$DEAD_STREAM" --subjects "$PREFIX.sms.dead" --storage file --retention limits \
        --discard old --max-msgs 10000 --max-bytes 64MiB --max-age 168h --dupe-window 2m \
        --replicas "$REPLICAS" --defaults
    # The providers' queues (docs/scheduling.md): tickets per provider, class and tenant lane, and
    # their expiry twins; at most MAX_QUEUED per subject, a ticket beyond it refused.
    nats stream add "$QUEUE_STREAM" --subjects "$PREFIX.sms.queue.>,$PREFIX.sms.expire.>" --storage file \
        --retention work --max-msgs-per-subject "$MAX_QUEUED" --discard new --discard-per-subject \
        --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Core mode only: requests whose send_at lies ahead wait here (work queue).
    nats stream add "$HELD_STREAM" --subjects "$PREFIX.sms.held" --storage file --retention work \
        --discard old --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Idempotency ledger: one record per request, kept 7 days.
    nats kv add "$LEDGER" --history 1 --ttl 168h --storage file --replicas "$REPLICAS" \
        --description "notifyd idempotency ledger: one record per request"
    # Live replicas: one key per notifyd process, rewritten every second and expiring 3 s after
    # its last write (the provider rate limits are shared among the keys present).
    nats kv add "${LEDGER}_replicas" --history 1 --ttl 3s --storage file --replicas "$REPLICAS" \
        --description "notifyd live replicas: one key per process, rewritten every second"
    # Delivery-report index, used when [callbacks] listen is set: a record per sent message id, no
    # byte limit (notifyd removes one). Kept an hour past the tracking window, as notifyd creates
    # it: tracking checks it when the window closes.
    nats kv add "${LEDGER}_callbacks" --history 1 --ttl "$CALLBACK_TTL" --storage file \
        --replicas "$REPLICAS" \
        --description "notifyd delivery-report index: provider message id -> recipients"
    # Delivery reports that arrived before their send was recorded: the newest
    # [callbacks] max_unmatched (default 100000), the oldest dropped first.
    nats stream add "${LEDGER}_callbacks_unmatched" --subjects "$PREFIX.sms.callbacks.unmatched.>" \
        --storage file --retention limits --discard old --max-msgs "$MAX_UNMATCHED" \
        --max-age "$CALLBACK_TTL" --dupe-window 2m --allow-direct --replicas "$REPLICAS" --defaults
    ;;
scale)
    for s in "$STREAM" "$STATUS_STREAM" "$TRACKING_STREAM" "$DEAD_STREAM" "$HELD_STREAM" "$QUEUE_STREAM" "KV_$LEDGER" "KV_${LEDGER}_replicas" "KV_${LEDGER}_callbacks" \
        "${LEDGER}_callbacks_unmatched"; do
        if nats stream info "$s" >/dev/null 2>&1; then
            nats stream edit "$s" --replicas "$REPLICAS" --force
        else
            echo "stream $s does not exist; skipped" >&2
        fi
    done
    ;;
*)
    echo "usage: $0 [create|scale]" >&2
    exit 64
    ;;
esac

nats stream report
