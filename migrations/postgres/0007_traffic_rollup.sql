-- The overview's traffic rollup: requests and 5xx errors per UTC minute and per UTC hour and
-- latency bin, so its last hour and last day read a few thousand rows however many requests
-- they held. Usage batches add to it in the same transaction as the records themselves (like
-- usage_daily) and delete buckets older than two days (TRAFFIC_KEPT in src/store/traffic.rs).
--
-- bucket: whole minutes (minutely) or hours (hourly) since the Unix epoch.
-- series: 0 total latency, 1 gateway overhead (latency − upstream time; requests with one).
-- bin:    microseconds rounded down to two significant digits, as digits * 100 + the leading
--         two digits (0 below 1 µs): latency_bin() in src/store/traffic.rs.
CREATE TABLE traffic_minutely (
    bucket    BIGINT NOT NULL,
    series    BIGINT NOT NULL,
    bin       BIGINT NOT NULL,
    requests  BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    PRIMARY KEY (bucket, series, bin)
);

CREATE TABLE traffic_hourly (
    bucket    BIGINT NOT NULL,
    series    BIGINT NOT NULL,
    bin       BIGINT NOT NULL,
    requests  BIGINT NOT NULL,
    errors    BIGINT NOT NULL,
    PRIMARY KEY (bucket, series, bin)
);

-- Records of the last two days written before this migration.
INSERT INTO traffic_minutely (bucket, series, bin, requests, errors)
SELECT CAST(floor(extract(epoch FROM at) / 60) AS BIGINT), 0,
       CASE WHEN latency_us < 1 THEN 0
            ELSE length(CAST(latency_us AS TEXT)) * 100 + CAST(substr(CAST(latency_us AS TEXT), 1, 2) AS BIGINT) END,
       COUNT(*), SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END)
FROM usage_records WHERE at >= now() - INTERVAL '2 days' GROUP BY 1, 2, 3
UNION ALL
SELECT CAST(floor(extract(epoch FROM at) / 60) AS BIGINT), 1,
       CASE WHEN latency_us - upstream_us < 1 THEN 0
            ELSE length(CAST(latency_us - upstream_us AS TEXT)) * 100
                 + CAST(substr(CAST(latency_us - upstream_us AS TEXT), 1, 2) AS BIGINT) END,
       COUNT(*), 0
FROM usage_records WHERE at >= now() - INTERVAL '2 days' AND upstream_us IS NOT NULL GROUP BY 1, 2, 3;

INSERT INTO traffic_hourly (bucket, series, bin, requests, errors)
SELECT bucket / 60, series, bin, SUM(requests), SUM(errors) FROM traffic_minutely GROUP BY 1, 2, 3;

ALTER TABLE traffic_minutely ENABLE ROW LEVEL SECURITY;
ALTER TABLE traffic_hourly ENABLE ROW LEVEL SECURITY;
