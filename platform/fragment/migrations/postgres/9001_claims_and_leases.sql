-- Several instances of one fragment share its database. A relay claims a delivery before it sends it, for
-- a while (a lease): the other instances' relays leave it alone until it is delivered or the lease runs
-- out (its relay died), so each event goes out once per subscriber and in order per aggregate.
ALTER TABLE outbox_deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox_deliveries ADD COLUMN claimed_until_ms BIGINT;

-- Named leases (tessera_kit::lease): one instance at a time does a job (a sweeper's pass) or changes one
-- thing (a cart). Released when done; a holder that died loses it when `until_ms` passes.
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    holder   TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
