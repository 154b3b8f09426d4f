-- Shared-secret registration nonces are kept in memory (service::registration_nonces).
DROP TABLE registration_nonces;
