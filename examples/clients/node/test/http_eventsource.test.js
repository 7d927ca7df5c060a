'use strict';
// A browser-style EventSource client (the `eventsource` package, which
// follows the WHATWG EventSource rules) on a task's /v1/tasks/{id}/events
// stream. The connection goes through a small TCP relay that the test cuts
// mid-stream: the client reconnects by itself with Last-Event-ID and must
// receive every event exactly once, then the server's `end` event.

const assert = require('node:assert/strict');
const net = require('node:net');
const { after, before, test } = require('node:test');

const { EventSource } = require('eventsource');
const { startServer } = require('./server');

const STATES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, `server exit code; log:\n${server.log.slice(-20).join('\n')}`);
});

/** A TCP relay to `target` (HOST:PORT) whose connections can all be cut at once. */
async function startRelay(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const sockets = new Set();
  let connections = 0;
  const relay = net.createServer((client) => {
    connections += 1;
    const upstream = net.connect(port, host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    addr: `127.0.0.1:${relay.address().port}`,
    connections: () => connections,
    cut: () => sockets.forEach((socket) => socket.destroy()),
    close: () => new Promise((resolve) => relay.close(resolve)),
  };
}

async function post(path, body) {
  const response = await fetch(`http://${server.httpAddr}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return response.json();
}

test('EventSource resumes a task stream after a cut connection without missing or repeating an event', async () => {
  const { task } = await post('/v1/tasks', { demo: { steps: 30, step_delay_ms: 40 } });
  const relay = await startRelay(server.httpAddr);
  const lastEventIds = []; // the Last-Event-ID of each (re)connection
  const recordingFetch = (url, init) => {
    lastEventIds.push(new Headers(init.headers).get('last-event-id'));
    return fetch(url, init);
  };
  const source = new EventSource(`http://${relay.addr}/v1/tasks/${task.taskId}/events`, { fetch: recordingFetch });
  const seen = [];
  let lastIdAtCut = null;
  try {
    await new Promise((resolve, reject) => {
      for (const state of STATES) {
        source.addEventListener(state, (e) => {
          const { event } = JSON.parse(e.data);
          seen.push({ sequence: Number(event.sequence), id: e.lastEventId, state, event });
          if (seen.length === 4) relay.cut(); // mid-task: 30 steps are far from done
        });
      }
      source.addEventListener('error', () => {
        if (lastIdAtCut === null) lastIdAtCut = seen.at(-1).id;
        if (source.readyState === source.CLOSED) reject(new Error('EventSource gave up'));
      });
      source.addEventListener('end', (e) => {
        assert.deepEqual(JSON.parse(e.data), {});
        source.close();
        resolve();
      });
    });
  } finally {
    source.close();
    await relay.close();
  }

  assert.equal(relay.connections(), 2, 'one cut, one reconnection');
  assert.deepEqual(lastEventIds, [null, lastIdAtCut]);
  const sequences = seen.map((s) => s.sequence);
  assert.deepEqual(sequences, Array.from({ length: sequences.length }, (_, i) => i + 1), 'every event once, in order');
  assert.ok(seen.every((s) => s.id === String(s.sequence)), 'id: is the sequence');
  assert.ok(seen.every((s) => s.state === s.event.state.replace('TASK_STATE_', '').toLowerCase()), 'event: is the state');
  const last = seen.at(-1);
  // Leaving the stream did not cancel the task: it ran to its end.
  assert.equal(last.state, 'succeeded');
  assert.equal(last.event.percent, 100);
  assert.equal(last.event.step, 30);
});

test('?after_sequence= resumes too, and a finished task ends with `end` after its remaining events', async () => {
  const { task } = await post('/v1/tasks', { demo: { steps: 3, step_delay_ms: 1 } });
  const response = await fetch(`http://${server.httpAddr}/v1/tasks/${task.taskId}/events?after_sequence=2`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type'), /^text\/event-stream/);
  // Reading to the end proves the server closes the stream after `end`.
  const blocks = (await response.text()).split(/\n\n/).filter((b) => b.trim() && !b.startsWith(':'));
  const events = blocks.map((block) => Object.fromEntries(block.split('\n').map((line) => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon), line.slice(colon + 1).trimStart()];
  })));
  assert.equal(events.at(-1).event, 'end');
  assert.deepEqual(JSON.parse(events.at(-1).data), {});
  const taskEvents = events.slice(0, -1);
  assert.ok(taskEvents.length >= 1);
  assert.equal(taskEvents[0].id, '3');
  assert.deepEqual(taskEvents.map((e) => Number(JSON.parse(e.data).event.sequence)), taskEvents.map((e) => Number(e.id)));
  assert.equal(taskEvents.at(-1).event, 'succeeded');
});
