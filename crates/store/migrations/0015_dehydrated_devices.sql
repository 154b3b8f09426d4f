-- Dehydrated devices (MSC3814): at most one per user, a device without an access token that a
-- later login of the user rehydrates. The device itself is a row of `devices` (its keys and
-- to-device inbox are a device's); this table says which device it is and keeps the client's
-- opaque `device_data` (the encrypted Olm account) as JSON text.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL
);
