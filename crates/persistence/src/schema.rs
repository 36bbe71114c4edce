//! The one portable diesel schema, written by hand so that only types both backends share
//! appear (UUIDs and JSON as `Text`, UTC times as `Timestamp`).

diesel::table! {
    /// SQLite only: the last key handed out (PostgreSQL uses the `exception_keys` sequence).
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    exceptions (id) {
        id -> Text,
        key_num -> BigInt,
        title -> Text,
        category -> Text,
        policy_id -> Text,
        control_ids -> Text,
        assets -> Text,
        business_unit -> Text,
        justification -> Text,
        business_impact -> Nullable<Text>,
        requester -> Text,
        on_behalf_of -> Nullable<Text>,
        risk_owner -> Text,
        priority -> Text,
        starts_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        remediation_plan -> Nullable<Text>,
        remediation_due -> Nullable<Date>,
        external_refs -> Text,
        tags -> Text,
        status -> Text,
        status_reason -> Nullable<Text>,
        round -> Integer,
        version -> BigInt,
        chronic -> Bool,
        emergency -> Bool,
        at_risk -> Bool,
        residual_level -> Nullable<Text>,
        search_text -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        submitted_at -> Nullable<Timestamp>,
        approved_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
        next_review_at -> Nullable<Timestamp>,
        next_due_at -> Nullable<Timestamp>,
        escalated_at -> Nullable<Timestamp>,
        review_notified_at -> Nullable<Timestamp>,
        reminders_sent -> Text,
        at_risk_since -> Nullable<Timestamp>,
        pending_expires_at -> Nullable<Timestamp>,
        renewal_justification -> Nullable<Text>,
        approved_level -> Nullable<Text>,
        controls -> Text,
        assessments -> Text,
        approvals -> Text,
        reviews -> Text,
        control_checks -> Text,
        audit_head -> Text,
    }
}

diesel::table! {
    exception_assets (asset, exception_id) {
        asset -> Text,
        exception_id -> Text,
    }
}

diesel::table! {
    exception_control_ids (control_id, exception_id) {
        control_id -> Text,
        exception_id -> Text,
    }
}

diesel::table! {
    exception_pairs (asset, control_id, key_num) {
        asset -> Text,
        control_id -> Text,
        key_num -> BigInt,
        exception_id -> Text,
    }
}

diesel::table! {
    external_refs (system, ext_id) {
        system -> Text,
        ext_id -> Text,
        exception_id -> Text,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        exception_id -> Text,
        action -> Text,
        actor_subject -> Text,
        actor_roles -> Text,
        on_behalf_of -> Nullable<Text>,
        at -> Timestamp,
        from_status -> Nullable<Text>,
        to_status -> Text,
        changes -> Text,
        request_id -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
        event_type -> Nullable<Text>,
        event_id -> Nullable<Text>,
        feed_seq -> Nullable<BigInt>,
        snapshot -> Nullable<Text>,
    }
}

diesel::table! {
    /// The feed sequencer's one row: the last position handed out.
    feed_state (id) {
        id -> Integer,
        numbered -> BigInt,
    }
}

diesel::table! {
    /// Every approval policy a server ran with, by fingerprint.
    policies (fingerprint) {
        fingerprint -> Text,
        document -> Text,
        first_seen -> Timestamp,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        url -> Text,
        event_types -> Nullable<Text>,
        description -> Nullable<Text>,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        webhook_id -> Text,
        event_seq -> BigInt,
        audit_seq -> BigInt,
        event_id -> Text,
        event_type -> Text,
        exception_id -> Text,
        status -> Text,
        tries -> Integer,
        attempts -> Text,
        next_attempt_at -> Timestamp,
        lease_until -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    coverage_periods (id) {
        id -> BigInt,
        asset -> Text,
        control_id -> Text,
        exception_id -> Text,
        key_num -> BigInt,
        status -> Text,
        residual_level -> Nullable<Text>,
        starts_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        held_from -> Timestamp,
        held_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    idempotency_keys (subject, idem_key) {
        subject -> Text,
        idem_key -> Text,
        request_hash -> Text,
        status -> Integer,
        body -> Text,
        location -> Nullable<Text>,
        etag -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    exceptions,
    exception_assets,
    exception_control_ids,
    external_refs,
    audit_events,
    webhooks,
    webhook_deliveries,
    coverage_periods
);
