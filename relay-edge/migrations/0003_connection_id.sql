-- Which connection (on relay_node) a device is online through.
ALTER TABLE devices ADD COLUMN connection_id BIGINT;
