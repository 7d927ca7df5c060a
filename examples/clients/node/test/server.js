'use strict';
// Starts the real `agentstream` binary for the tests. Builds nothing: the
// binary comes from AGENTSTREAM_BIN, or else $CARGO_TARGET_DIR/debug/agentstream
// (CARGO_TARGET_DIR defaulting to the repository's target/).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');

function serverBinary() {
  if (process.env.AGENTSTREAM_BIN) return process.env.AGENTSTREAM_BIN;
  const target = path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target');
  return path.join(target, 'debug', 'agentstream');
}

// The log message that carries the HTTP port's bound address.
const HTTP_LISTENING = 'http listening';

/**
 * Resolves to { addr, httpAddr, metricsAddr, metrics(), waitForMetrics(), stop() }.
 * `tokenDelay` paces the built-in models (default 5ms).
 */
async function startServer({ tokenDelay = '5ms' } = {}) {
  const binary = serverBinary();
  if (!fs.existsSync(binary)) {
    throw new Error(`no server binary at ${binary}: run \`cargo build\` or set AGENTSTREAM_BIN`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentstream-node-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AGENTSTREAM_')));
  env.RUST_LOG = 'info';
  const child = spawn(
    binary,
    ['serve', '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0',
      '--log-format', 'json', '--mock-token-delay', tokenDelay, '--shutdown-grace', '2s', '--data-dir', dataDir],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const log = [];
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const addresses = await new Promise((resolve, reject) => {
    const found = {};
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log.join('\n')}`)), 20_000);
    exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`server exited at start:\n${log.join('\n')}`));
    });
    // Read stderr for the server's whole life, so it never blocks on a full pipe.
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      log.push(line);
      let fields;
      try {
        fields = JSON.parse(line).fields || {};
      } catch {
        return;
      }
      if (fields.message === 'agentstream listening') found.addr = fields.addr;
      if (fields.message === 'metrics listening') found.metricsAddr = fields.addr;
      if (fields.message === HTTP_LISTENING) found.httpAddr = fields.addr;
      if (found.addr && found.metricsAddr && found.httpAddr) {
        clearTimeout(timer);
        resolve(found);
      }
    });
  });

  async function metrics() {
    const response = await fetch(`http://${addresses.metricsAddr}/metrics`);
    const samples = {};
    for (const line of (await response.text()).split('\n')) {
      if (line && !line.startsWith('#')) {
        const [name, value] = line.split(' ');
        samples[name] = Number(value);
      }
    }
    return samples;
  }

  /** Polls the metrics endpoint until `condition` holds, for at most `timeoutMs`. */
  async function waitForMetrics(condition, what, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const samples = await metrics();
      if (condition(samples)) return samples;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(samples)}`);
      await new Promise((r) => setTimeout(r, 10)); // polling interval
    }
  }

  /** SIGTERM; resolves to the exit code (killing the server if it hangs). */
  async function stop() {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const { code } = await exited;
    clearTimeout(timer);
    fs.rmSync(dataDir, { recursive: true, force: true });
    return code;
  }

  return { ...addresses, log, metrics, waitForMetrics, stop };
}

module.exports = { startServer };
