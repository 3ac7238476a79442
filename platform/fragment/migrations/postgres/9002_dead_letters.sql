-- Events a consumer received from a broker and could not apply within the allowed deliveries
-- (tessera_kit::broker): kept here, shown on /admin/events and replayed from there. (Over HTTP the
-- producer keeps its undeliverable events instead, in outbox_deliveries.)
CREATE TABLE dead_letters (
    event_id      TEXT PRIMARY KEY,
    producer      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    aggregate_id  TEXT NOT NULL,
    sequence      BIGINT NOT NULL,
    envelope      TEXT NOT NULL,
    attempts      BIGINT NOT NULL,
    last_error    TEXT NOT NULL,
    failed_at_ms  BIGINT NOT NULL
);
