//! The one portable diesel schema, written by hand so that only types both backends share
//! appear (UUIDs and JSON as `Text`, UTC times as `Timestamp`).

diesel::table! {
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
    external_refs (system, ext_id) {
        system -> Text,
        ext_id -> Text,
        exception_id -> Text,
    }
}

diesel::table! {
    controls (id) {
        id -> Text,
        exception_id -> Text,
        position -> Integer,
        description -> Text,
        kind -> Text,
        effectiveness -> Text,
        status -> Text,
        evidence -> Nullable<Text>,
        verified_by -> Nullable<Text>,
        verified_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        check_every_days -> Nullable<Integer>,
        last_checked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    reviews (id) {
        id -> Text,
        exception_id -> Text,
        round -> Integer,
        reviewer -> Text,
        reviewed_at -> Timestamp,
        controls_effective -> Bool,
        justification_valid -> Bool,
        better_option_available -> Bool,
        outcome -> Text,
        comment -> Nullable<Text>,
    }
}

diesel::table! {
    control_checks (id) {
        id -> Text,
        exception_id -> Text,
        control_id -> Text,
        result -> Text,
        evidence -> Text,
        checker -> Text,
        checked_at -> Timestamp,
    }
}

diesel::table! {
    assessments (id) {
        id -> Text,
        exception_id -> Text,
        round -> Integer,
        method -> Text,
        likelihood -> Nullable<Integer>,
        impact -> Nullable<Integer>,
        vector -> Nullable<Text>,
        inherent_score -> Integer,
        residual_score -> Integer,
        rationale -> Text,
        threat_vectors -> Text,
        assessed_by -> Text,
        assessed_at -> Timestamp,
    }
}

diesel::table! {
    approvals (id) {
        id -> Text,
        exception_id -> Text,
        round -> Integer,
        role -> Text,
        approver -> Text,
        comment -> Nullable<Text>,
        approved_at -> Timestamp,
        assessment_id -> Text,
        method -> Text,
        inherent_score -> Integer,
        inherent_level -> Text,
        residual_score -> Integer,
        residual_level -> Text,
        superseded -> Bool,
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
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        id -> Text,
        event_type -> Text,
        exception_id -> Text,
        audit_seq -> BigInt,
        payload -> Text,
        created_at -> Timestamp,
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
    controls,
    assessments,
    approvals,
    audit_events,
    outbox,
    reviews,
    control_checks,
);
