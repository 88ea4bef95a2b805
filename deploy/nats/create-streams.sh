#!/usr/bin/env sh
# Creates notifyd's JetStream streams and key-value buckets with 3 replicas on a NATS cluster,
# BEFORE notifyd first starts. notifyd creates whatever is missing with 1 replica and uses
# existing streams unchanged, so pre-created replicated ones are kept.
#
#   NATS_URL=nats://nats-1.example.internal:4222 NATS_USER=admin NATS_PASSWORD=... ./create-streams.sh
#   ./create-streams.sh scale      # streams that already exist (created by notifyd): edit to 3 replicas
#
# Needs the `nats` CLI. The names and subjects are notifyd's defaults; set the variables below if
# your [nats] subject_prefix or [intake] names differ. The consumers (notifyd, notifyd_tracking)
# are created by notifyd and inherit the stream's replicas.
set -eu

PREFIX=${PREFIX:-notify}                        # [nats] subject_prefix
STREAM=${STREAM:-NOTIFY_SMS}                    # [intake] stream
STATUS_STREAM=${STATUS_STREAM:-NOTIFY_SMS_STATUS}        # [intake] status_stream
TRACKING_STREAM=${TRACKING_STREAM:-NOTIFY_SMS_TRACKING}  # [intake] tracking_stream
LEDGER=${LEDGER:-notifyd_ledger}                # [intake] ledger_bucket

CALLBACK_TTL=${CALLBACK_TTL:-49h}               # [tracking] window + 1h
REPLICAS=${REPLICAS:-3}

case "${1:-create}" in
create)
    # Requests: work queue, kept until acknowledged.
    nats stream add "$STREAM" --subjects "$PREFIX.sms.send" --storage file --retention work \
        --discard old --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Status events: kept 7 days for replay.
    nats stream add "$STATUS_STREAM" --subjects "$PREFIX.sms.status.>" --storage file --retention limits \
        --discard old --max-age 168h --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Delivery tracking entries: work queue.
    nats stream add "$TRACKING_STREAM" --subjects "$PREFIX.sms.track" --storage file --retention work \
        --discard old --dupe-window 2m --replicas "$REPLICAS" --defaults
    # Idempotency ledger: one record per request, kept 7 days.
    nats kv add "$LEDGER" --history 1 --ttl 168h --storage file --replicas "$REPLICAS" \
        --description "notifyd idempotency ledger: one record per request"
    # Delivery-report index, used when [callbacks] listen is set; about 1 KiB per stored report
    # ([callbacks] max_unmatched, default 100000). Kept an hour past the tracking window, as
    # notifyd creates it: tracking checks it when the window closes.
    nats kv add "${LEDGER}_callbacks" --history 1 --ttl "$CALLBACK_TTL" --storage file \
        --replicas "$REPLICAS" --max-bucket-size 102400000 \
        --description "notifyd delivery-report index: provider message id -> recipients"
    ;;
scale)
    for s in "$STREAM" "$STATUS_STREAM" "$TRACKING_STREAM" "KV_$LEDGER" "KV_${LEDGER}_callbacks"; do
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
