// Peer of bench.ratelimit: rate-limiter-flexible's RateLimiterRedis (ioredis, the client it
// uses by default), called in-process by `--clients` concurrent loops for `--seconds` after a
// 0.5 s warm-up, one key per call drawn from `--keys` buckets, with a limit high enough that
// calls are admitted. Prints one JSON object on stdout:
// {"decisions_per_second", "p50_ms", "p99_ms", "p999_ms", "errors", "versions"}.
"use strict";

const { parseArgs } = require("node:util");
const { performance } = require("node:perf_hooks");
const Redis = require("ioredis");
const { RateLimiterRedis } = require("rate-limiter-flexible");

const { values } = parseArgs({
  options: {
    "redis-url": { type: "string", default: "redis://127.0.0.1:6379/0" },
    clients: { type: "string", default: "64" },
    seconds: { type: "string", default: "5" },
    keys: { type: "string", default: "10000" },
    prefix: { type: "string", default: "rl:bench:node" },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const keys = Number(values.keys);

function percentile(sorted, fraction) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(Math.floor(fraction * sorted.length), sorted.length - 1)];
}

// The same key shape as bench.ratelimit's calls: an IPv4 address per bucket.
function bucket(n) {
  const k = n % keys;
  return `10.${Math.floor(k / 65536)}.${Math.floor(k / 256) % 256}.${n % 256}`;
}

async function main() {
  const redis = new Redis(values["redis-url"]);
  const limiter = new RateLimiterRedis({
    storeClient: redis,
    keyPrefix: values.prefix,
    points: 100000,
    duration: 60,
  });
  const latencies = [];
  let errors = 0;
  const warmUntil = performance.now() + 500;
  const stop = warmUntil + seconds * 1000;

  async function worker(index) {
    for (let n = index; performance.now() < stop; n += clients) {
      const began = performance.now();
      try {
        await limiter.consume(bucket(n));
      } catch {
        errors += 1; // a refusal (the limit is set so that none happens) or a Redis error
        continue;
      }
      if (began >= warmUntil) latencies.push(performance.now() - began);
    }
  }

  await Promise.all(Array.from({ length: clients }, (_, i) => worker(i)));
  redis.disconnect();
  latencies.sort((a, b) => a - b);
  const version = (name) => require(`${name}/package.json`).version;
  process.stdout.write(
    JSON.stringify({
      decisions_per_second: latencies.length / seconds,
      p50_ms: percentile(latencies, 0.5),
      p99_ms: percentile(latencies, 0.99),
      p999_ms: percentile(latencies, 0.999),
      errors,
      versions: {
        node: process.version,
        "rate-limiter-flexible": version("rate-limiter-flexible"),
        ioredis: version("ioredis"),
      },
    }) + "\n",
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
